//! Live read views without a copy of the writer's state (ADR 0008, step 1).
//!
//! The read views used to keep a whole [`State`] (88 bytes an account, a key index, the
//! primaries' subaccount lists) beside the writer's, applying every event to it a second time.
//! Live views keep a [`Directory`] instead: per account what never changes after it is opened
//! (its key, and its primary or, for a primary, its currency), the key index, the primaries'
//! subaccount lists and the low-balance settings. An account's balance, credit limit and flags are those of its last history entry,
//! which every event that changes them appends.
//!
//! [`apply`] folds a committed event into the directory and the histories, computing each new
//! entry from the previous one exactly as [`State::apply`] changes an account. The events come
//! from the writer, which has applied them to its own state and so checked every rule: what
//! this checks is only what it needs to stay consistent (order, time, accounts that exist, a
//! key not taken), and for events a [`State`] accepted it never disagrees with
//! [`State::apply`] on what an event does — a property test applies random command streams to
//! both forms and compares every answer. Events a `State` would refuse for breaking a rule may
//! be applied here all the same: only the writer's events reach these views.

use rustc_hash::FxHashMap;
use subledger_core::{
    AccountId, Amount, ApiKey, ApplyError, ApplyFault, CommandIndex, Currency, Event, Funding,
    KeyIndex, LowBalance, Sequence, State, Timestamp, NO_PRIMARY,
};

use crate::accounts::{self, AccountHistory, Entry};

/// What never changes about an account after it is opened: its key and its primary. 12 bytes
/// per account (16 with a primary's currency beside it, 20 with an `Option<AccountId>`): a
/// subaccount's currency is its primary's, and the primaries' (about 1 % of accounts) are
/// kept apart ([`Directory::currency`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fixed {
    pub(crate) key: ApiKey,
    /// The owning primary's id, or `NO_PRIMARY` (an id the writer never assigns) for a
    /// primary.
    primary: u32,
}

impl Fixed {
    pub(crate) fn new(key: ApiKey, primary: Option<AccountId>) -> Fixed {
        Fixed {
            key,
            primary: primary.map_or(NO_PRIMARY, |id| id.0),
        }
    }

    /// The owning primary; `None` for a primary.
    pub(crate) fn primary(&self) -> Option<AccountId> {
        (self.primary != NO_PRIMARY).then_some(AccountId(self.primary))
    }
}

/// An account's values after its last event: those of its last history entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Values {
    pub(crate) funding: Funding,
    pub(crate) suspended: bool,
    pub(crate) closed: bool,
}

impl Values {
    pub(crate) fn of(entry: &Entry) -> Values {
        Values {
            funding: match (entry.balance(), entry.credit_limit()) {
                (Some(balance), Some(credit_limit)) => Funding::Own {
                    balance,
                    credit_limit,
                },
                _ => Funding::Shared,
            },
            suspended: entry.suspended(),
            closed: entry.closed(),
        }
    }

    fn opened(funding: Funding) -> Values {
        Values {
            funding,
            suspended: false,
            closed: false,
        }
    }
}

/// The live read views' accounts, without their values (see the module documentation).
#[derive(Debug, Clone, Default)]
pub(crate) struct Directory {
    fixed: Vec<Fixed>,
    /// The primaries' currencies (a subaccount's is its primary's).
    currencies: FxHashMap<AccountId, Currency>,
    by_key: KeyIndex,
    /// Only primaries with subaccounts (about 1 % of accounts) have an entry.
    subaccounts: FxHashMap<AccountId, Vec<AccountId>>,
    low_balance: FxHashMap<AccountId, LowBalance>,
    last_seq: Sequence,
    last_at: Timestamp,
    /// The idempotency index's records, for the snapshot thread's replica (which writes them
    /// into snapshots); the live read views keep none.
    commands: Option<CommandIndex>,
}

impl PartialEq for Directory {
    /// The accounts alike (the key index follows from them); the idempotency index is compared
    /// by the views, which may compare it with a state's.
    fn eq(&self, other: &Directory) -> bool {
        self.fixed == other.fixed
            && self.currencies == other.currencies
            && self.subaccounts == other.subaccounts
            && self.low_balance == other.low_balance
            && self.last_seq == other.last_seq
            && self.last_at == other.last_at
    }
}

/// The key of the account an id names in `fixed`.
fn key_in(fixed: &[Fixed]) -> impl Fn(AccountId) -> Option<ApiKey> + '_ {
    |id| fixed.get(id.index()).map(|fixed| fixed.key)
}

impl Directory {
    /// The directory of `state`'s accounts.
    pub(crate) fn of(state: &State) -> Directory {
        let mut directory = Directory {
            fixed: Vec::with_capacity(state.account_count()),
            currencies: FxHashMap::default(),
            // The same ids under the same keys: the state's index serves as it is.
            by_key: state.key_index().clone(),
            subaccounts: FxHashMap::default(),
            low_balance: state.low_balances().into_iter().collect(),
            last_seq: state.last_seq(),
            last_at: state.last_at(),
            commands: None,
        };
        for (id, account) in state.accounts() {
            directory
                .fixed
                .push(Fixed::new(account.key, account.primary()));
            if account.is_primary() {
                directory.currencies.insert(id, account.currency);
            }
            let subaccounts = state.subaccounts(id);
            if !subaccounts.is_empty() {
                directory.subaccounts.insert(id, subaccounts.to_vec());
            }
        }
        directory
    }

    /// The directory of `state`'s accounts, keeping `commands`, the state's idempotency index
    /// (taken out of it).
    pub(crate) fn of_with_index(state: &State, commands: CommandIndex) -> Directory {
        Directory {
            commands: Some(commands),
            ..Directory::of(state)
        }
    }

    pub(crate) fn commands(&self) -> Option<&CommandIndex> {
        self.commands.as_ref()
    }

    pub(crate) fn commands_mut(&mut self) -> Option<&mut CommandIndex> {
        self.commands.as_mut()
    }

    pub(crate) fn account_id(&self, key: &ApiKey) -> Option<AccountId> {
        self.by_key.get(key, key_in(&self.fixed))
    }

    pub(crate) fn fixed(&self, id: AccountId) -> Option<&Fixed> {
        self.fixed.get(id.index())
    }

    /// An account's currency: a primary's own, a subaccount's primary's.
    pub(crate) fn currency(&self, id: AccountId) -> Option<Currency> {
        let primary = self.fixed(id)?.primary().unwrap_or(id);
        self.currencies.get(&primary).copied()
    }

    pub(crate) fn account_count(&self) -> usize {
        self.fixed.len()
    }

    pub(crate) fn subaccounts(&self, id: AccountId) -> &[AccountId] {
        self.subaccounts.get(&id).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn low_balance(&self, id: AccountId) -> Option<LowBalance> {
        self.low_balance.get(&id).copied()
    }

    /// Every low-balance setting, by account id.
    pub(crate) fn low_balances(&self) -> Vec<(AccountId, LowBalance)> {
        LowBalance::by_account(&self.low_balance)
    }

    pub(crate) fn last_seq(&self) -> Sequence {
        self.last_seq
    }

    pub(crate) fn last_at(&self) -> Timestamp {
        self.last_at
    }
}

/// The values of account `id` after its last entry.
pub(crate) fn current(histories: &[AccountHistory], id: AccountId) -> Option<Values> {
    histories
        .get(id.index())
        .and_then(AccountHistory::last)
        .map(|entry| Values::of(&entry))
}

/// `value` moved by `delta`, or the fault an impossible sum is (the writer never commits one).
fn plus(value: Amount, delta: Amount, id: AccountId) -> Result<Amount, ApplyFault> {
    value.checked_add(delta).ok_or(ApplyFault::Invariant(id))
}

/// An own-balance account's funding with the balance and the credit limit moved by the deltas.
fn shifted(
    values: Values,
    id: AccountId,
    balance_delta: Amount,
    credit_delta: Amount,
) -> Result<Values, ApplyFault> {
    let Funding::Own {
        balance,
        credit_limit,
    } = values.funding
    else {
        return Err(ApplyFault::Shared(id));
    };
    Ok(Values {
        funding: Funding::Own {
            balance: plus(balance, balance_delta, id)?,
            credit_limit: plus(credit_limit, credit_delta, id)?,
        },
        ..values
    })
}

/// An account opened by an event: its id, fixed facts, first values, and a primary's currency.
type Opened = (AccountId, Fixed, Values, Option<Currency>);

/// What one event changes, worked out before anything is changed.
struct Change {
    opened: Option<Opened>,
    /// New values of at most two accounts.
    values: [Option<(AccountId, Values)>; 2],
    /// A low-balance setting set (`Some`) or removed (`None`).
    setting: Option<(AccountId, Option<LowBalance>)>,
}

/// Folds one committed event into `directory` and `histories` (the per-account entries and
/// names), or refuses it and changes nothing.
pub(crate) fn apply(
    directory: &mut Directory,
    histories: &mut Vec<AccountHistory>,
    seq: Sequence,
    at: Timestamp,
    event: &Event,
) -> Result<(), ApplyError> {
    let fail = |fault| ApplyError { seq, fault };
    let expected = directory.last_seq.next();
    if seq != expected {
        return Err(fail(ApplyFault::OutOfOrder { expected }));
    }
    if at < directory.last_at {
        return Err(fail(ApplyFault::TimeGoesBackwards));
    }
    let change = change(directory, histories, event).map_err(fail)?;
    // The entries, computed before anything changes: an account's values are the change's or
    // its last entry's.
    let opened = change.opened;
    let values_of = |id: AccountId| {
        change
            .values
            .iter()
            .flatten()
            .find(|(changed, _)| *changed == id)
            .map(|(_, values)| *values)
            .or_else(|| opened.filter(|(new, ..)| *new == id).map(|(_, _, v, _)| v))
            .or_else(|| current(histories, id))
            .ok_or(ApplyFault::UnknownAccount(id))
    };
    let mut entries: [Option<(AccountId, Entry)>; 2] = [None, None];
    for (slot, (id, kind, counterparty)) in entries
        .iter_mut()
        .zip(accounts::touched(event).into_iter().flatten())
    {
        let values = values_of(id).map_err(fail)?;
        let (balance, credit_limit) = match values.funding {
            Funding::Own {
                balance,
                credit_limit,
            } => (Some(balance), Some(credit_limit)),
            Funding::Shared => (None, None),
        };
        *slot = Some((
            id,
            Entry::new(
                seq,
                at,
                kind,
                balance,
                credit_limit,
                values.suspended,
                values.closed,
                counterparty,
            ),
        ));
    }
    // Re-arming (as `State::apply` does after every event but the two about thresholds): the
    // settings whose account's available funds are back at or above the threshold.
    let mut rearmed: [Option<AccountId>; 2] = [None, None];
    if !matches!(
        event,
        Event::LowBalanceAlert { .. } | Event::LowBalanceThresholdSet { .. }
    ) && !directory.low_balance.is_empty()
    {
        for (slot, id) in rearmed
            .iter_mut()
            .zip(event.accounts().into_iter().flatten())
        {
            let available = values_of(id)
                .ok()
                .and_then(|values| values.funding.available());
            if let (Some(setting), Some(available)) = (directory.low_balance.get(&id), available) {
                if !setting.armed && available >= setting.threshold {
                    *slot = Some(id);
                }
            }
        }
    }

    // The last step that can fail, and one that changes nothing when it does: recording a
    // money command in the index, if these views keep one (a retried id is refused).
    if let Some(index) = directory.commands.as_mut() {
        index.record_event(seq, at, event).map_err(fail)?;
    }

    // From here nothing fails.
    if let Some((id, fixed, _, currency)) = opened {
        directory.fixed.push(fixed);
        if let Some(currency) = currency {
            directory.currencies.insert(id, currency);
        }
        let entered = directory.by_key.insert(id, key_in(&directory.fixed));
        debug_assert!(entered, "a key checked free was taken");
        if let Some(primary) = fixed.primary() {
            directory.subaccounts.entry(primary).or_default().push(id);
        }
        if histories.len() < directory.fixed.len() {
            histories.resize_with(directory.fixed.len(), AccountHistory::default);
        }
    }
    match change.setting {
        Some((id, Some(setting))) => {
            directory.low_balance.insert(id, setting);
        }
        Some((id, None)) => {
            directory.low_balance.remove(&id);
        }
        None => {}
    }
    for id in rearmed.into_iter().flatten() {
        if let Some(setting) = directory.low_balance.get_mut(&id) {
            setting.armed = true;
        }
    }
    for (id, entry) in entries.into_iter().flatten() {
        if let Some(history) = histories.get_mut(id.index()) {
            history.push(entry);
        }
    }
    directory.last_seq = seq;
    directory.last_at = at;
    Ok(())
}

/// What `event` changes, or why it cannot apply.
fn change(
    directory: &Directory,
    histories: &[AccountHistory],
    event: &Event,
) -> Result<Change, ApplyFault> {
    let mut change = Change {
        opened: None,
        values: [None, None],
        setting: None,
    };
    let known = |id: AccountId| current(histories, id).ok_or(ApplyFault::UnknownAccount(id));
    let open = |id: AccountId| {
        let values = known(id)?;
        if values.closed {
            return Err(ApplyFault::Closed(id));
        }
        Ok(values)
    };
    let new_account = |id: AccountId, key: ApiKey| {
        // `NO_PRIMARY` marks a primary in `Fixed`: never an account's id (nor in `State`).
        if id.index() != directory.fixed.len() || id.0 == NO_PRIMARY {
            return Err(ApplyFault::UnexpectedAccountId(id));
        }
        if directory.account_id(&key).is_some() {
            return Err(ApplyFault::DuplicateKey(key));
        }
        Ok(())
    };
    match event {
        Event::PrimaryOpened {
            account,
            key,
            currency,
            credit_limit,
            ..
        } => {
            new_account(*account, *key)?;
            let funding = Funding::Own {
                balance: Amount::ZERO,
                credit_limit: *credit_limit,
            };
            change.opened = Some((
                *account,
                Fixed::new(*key, None),
                Values::opened(funding),
                Some(*currency),
            ));
        }
        Event::SubaccountCreated {
            account,
            primary,
            key,
            use_primary_account_balance,
            ..
        } => {
            new_account(*account, *key)?;
            open(*primary)?;
            directory
                .fixed(*primary)
                .filter(|owner| owner.primary().is_none())
                .ok_or(ApplyFault::WrongAccountKind(*primary))?;
            let funding = if *use_primary_account_balance {
                Funding::Shared
            } else {
                Funding::Own {
                    balance: Amount::ZERO,
                    credit_limit: Amount::ZERO,
                }
            };
            change.opened = Some((
                *account,
                Fixed::new(*key, Some(*primary)),
                Values::opened(funding),
                None,
            ));
        }
        Event::SubaccountRenamed { account, .. }
        | Event::SecretCreated { account, .. }
        | Event::SecretRevoked { account, .. } => {
            open(*account)?;
        }
        Event::AccountSuspended { account } | Event::AccountReactivated { account } => {
            let values = open(*account)?;
            let suspended = matches!(event, Event::AccountSuspended { .. });
            change.values[0] = Some((
                *account,
                Values {
                    suspended,
                    ..values
                },
            ));
        }
        Event::SubaccountSwitchedToOwnBalance { account } => {
            let values = open(*account)?;
            let funding = Funding::Own {
                balance: Amount::ZERO,
                credit_limit: Amount::ZERO,
            };
            change.values[0] = Some((*account, Values { funding, ..values }));
        }
        Event::SubaccountClosed { account } => {
            let values = open(*account)?;
            change.values[0] = Some((
                *account,
                Values {
                    closed: true,
                    ..values
                },
            ));
        }
        Event::BalanceTransferred {
            source,
            target,
            amount,
            ..
        }
        | Event::CreditTransferred {
            source,
            target,
            amount,
            ..
        } => {
            // A balance transfer moves the balance; lending credit makes the lender's limit
            // less negative and the borrower's more.
            let (source_delta, target_delta) = if matches!(event, Event::BalanceTransferred { .. })
            {
                ((amount.negate(), Amount::ZERO), (*amount, Amount::ZERO))
            } else {
                ((Amount::ZERO, *amount), (Amount::ZERO, amount.negate()))
            };
            let moved = |id: AccountId, (balance, credit): (Amount, Amount)| {
                shifted(open(id)?, id, balance, credit).map(|values| Some((id, values)))
            };
            change.values = [moved(*source, source_delta)?, moved(*target, target_delta)?];
        }
        Event::Charged {
            account,
            payer,
            amount,
            ..
        } => {
            open(*account)?;
            change.values[0] = Some((
                *payer,
                shifted(open(*payer)?, *payer, amount.negate(), Amount::ZERO)?,
            ));
        }
        Event::ToppedUp {
            account, amount, ..
        } => {
            change.values[0] = Some((
                *account,
                shifted(open(*account)?, *account, *amount, Amount::ZERO)?,
            ));
        }
        Event::CreditLineSet {
            account,
            credit_limit,
            ..
        } => {
            let values = open(*account)?;
            let Funding::Own { balance, .. } = values.funding else {
                return Err(ApplyFault::Shared(*account));
            };
            let funding = Funding::Own {
                balance,
                credit_limit: *credit_limit,
            };
            change.values[0] = Some((*account, Values { funding, ..values }));
        }
        Event::LowBalanceThresholdSet { account, threshold } => {
            open(*account)?;
            let setting = threshold.map(|threshold| LowBalance {
                threshold,
                armed: true,
            });
            change.setting = Some((*account, setting));
        }
        Event::LowBalanceAlert { account, .. } => {
            let setting = directory
                .low_balance(*account)
                .ok_or(ApplyFault::Invariant(*account))?;
            change.setting = Some((
                *account,
                Some(LowBalance {
                    armed: false,
                    ..setting
                }),
            ));
        }
        _ => return Err(ApplyFault::UnknownEvent),
    }
    Ok(change)
}
