//! `decide`: a command against the current state becomes events or a rejection. Pure: no
//! clock, no RNG, no I/O; every non-deterministic input is already inside the command.
//!
//! Order of checks, so every caller (and the reference model in the tests) agrees on which
//! rejection wins when several rules are broken:
//! 1. idempotency: a known command id returns the original result (same content) or a conflict;
//! 2. field validation (amounts, names, references, secret hashes);
//! 3. the acting account: unknown or not the caller's → `UnknownAccount`;
//! 4. account kind and state (closed, suspended, pairing, balance mode — so the one-way
//!    `use_primary_account_balance` rule, though reported as a field error, comes here, as does
//!    `SameAccount`, which needs no lookup);
//! 5. limits and funds (subaccount limit, secrets count, available balance, unused credit),
//!    then key collisions of newly generated keys (`KeyTaken`).
//!
//! The idempotency check comes first on purpose: a retry must get the original result even if
//! the state has changed since (funds spent, subaccount switched or closed).

use crate::command::{
    Charge, CloseSubaccount, Command, CreateSecret, CreateSubaccount, NewSecret, OpenPrimary,
    RevokeSecret, SetCreditLine, SetLowBalanceThreshold, SetSuspended, TopUp, Transfer,
    UpdateSubaccount,
};
use crate::event::{Event, SecretRecord};
use crate::ids::{AccountId, ApiKey, CommandId, Sequence, Timestamp};
use crate::money::Amount;
use crate::rejection::{Field, Invalid, Rejection, TransferRule};
use crate::state::{Account, CommandContent, Funding, MoneyKind, State, SECRETS_PER_ACCOUNT_MAX};

/// Longest account name, in characters.
pub const NAME_CHARS_MAX: usize = 80;
/// Longest transfer, charge or top-up reference, in characters.
pub const REFERENCE_CHARS_MAX: usize = 255;

/// What deciding a command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Apply these events (possibly none: e.g. suspending an already suspended account).
    Apply(Vec<Event>),
    /// The money command with this id was applied before with the same content; nothing changes
    /// and the caller gets the original result.
    AlreadyApplied { seq: Sequence, at: Timestamp },
}

/// Decides `command` against `state`. See the module docs for the order of checks.
pub fn decide(state: &State, command: &Command) -> Result<Decision, Rejection> {
    match command {
        Command::OpenPrimary(open) => open_primary(state, open).map(one),
        Command::CreateSubaccount(create) => create_subaccount(state, create).map(one),
        Command::UpdateSubaccount(update) => update_subaccount(state, update).map(Decision::Apply),
        Command::CloseSubaccount(close) => close_subaccount(state, close).map(one),
        Command::SetSuspended(set) => set_suspended(state, set).map(Decision::Apply),
        Command::TransferBalance(transfer) => {
            transfer_money(state, transfer, MoneyKind::BalanceTransfer)
        }
        Command::TransferCredit(transfer) => {
            transfer_money(state, transfer, MoneyKind::CreditTransfer)
        }
        Command::Charge(charge) => charge_usage(state, charge),
        Command::TopUp(top_up) => top_up_primary(state, top_up),
        Command::SetCreditLine(set) => set_credit_line(state, set).map(one),
        Command::CreateSecret(create) => create_secret(state, create).map(one),
        Command::RevokeSecret(revoke) => revoke_secret(state, revoke).map(one),
        Command::SetLowBalanceThreshold(set) => {
            set_low_balance_threshold(state, set).map(Decision::Apply)
        }
    }
}

/// What executing a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executed {
    /// These events were applied, from sequence number `first` (possibly none).
    Applied { first: Sequence, events: Vec<Event> },
    /// A retry of a money command applied before; nothing changed.
    AlreadyApplied { seq: Sequence, at: Timestamp },
}

/// Decides `command`, applies its events at `at`, then the low-balance alerts the new state
/// calls for — the writer's whole step for one command. The outer `Result` is an `apply`
/// failure (a bug or a corrupt state: fail-stop); the inner one the rules' verdict.
pub fn execute(
    state: &mut State,
    at: Timestamp,
    command: &Command,
) -> Result<Result<Executed, Rejection>, crate::state::ApplyError> {
    let events = match decide(state, command) {
        Err(rejection) => return Ok(Err(rejection)),
        Ok(Decision::AlreadyApplied { seq, at }) => {
            return Ok(Ok(Executed::AlreadyApplied { seq, at }))
        }
        Ok(Decision::Apply(events)) => events,
    };
    let first = state.last_seq().next();
    for event in &events {
        state.apply(state.last_seq().next(), at, event)?;
    }
    let touched = events
        .iter()
        .flat_map(|event| event.accounts().into_iter().flatten());
    let alerts = state.low_balance_alerts(touched);
    for alert in &alerts {
        state.apply(state.last_seq().next(), at, alert)?;
    }
    let mut events = events;
    events.extend(alerts);
    Ok(Ok(Executed::Applied { first, events }))
}

fn one(event: Event) -> Decision {
    Decision::Apply(vec![event])
}

fn invalid(field: Field, reason: Invalid) -> Rejection {
    Rejection::Validation { field, reason }
}

/// Names: at most 80 characters, no control characters; `required` forbids the empty name.
pub fn validate_name(name: &str, required: bool) -> Result<(), Rejection> {
    if required && name.is_empty() {
        return Err(invalid(Field::Name, Invalid::Empty));
    }
    validate_text(Field::Name, name, NAME_CHARS_MAX)
}

/// References: at most 255 characters, no control characters; may be empty.
pub fn validate_reference(reference: &str) -> Result<(), Rejection> {
    validate_text(Field::Reference, reference, REFERENCE_CHARS_MAX)
}

fn validate_text(field: Field, text: &str, chars_max: usize) -> Result<(), Rejection> {
    // Bytes bound chars from above: a cheap early exit before counting.
    if text.len() > chars_max * 4 || text.chars().count() > chars_max {
        return Err(invalid(field, Invalid::TooLong { chars_max }));
    }
    if text.chars().any(char::is_control) {
        return Err(invalid(field, Invalid::ControlCharacters));
    }
    Ok(())
}

fn validate_amount(amount: Amount) -> Result<(), Rejection> {
    if amount.is_positive() {
        Ok(())
    } else {
        Err(invalid(Field::Amount, Invalid::NotPositive))
    }
}

fn secret_record(secret: &NewSecret) -> SecretRecord {
    SecretRecord {
        id: secret.id,
        hash: secret.hash.clone(),
    }
}

fn new_account_id(state: &State) -> Result<AccountId, Rejection> {
    state.next_account_id().ok_or(Rejection::Validation {
        field: Field::Key,
        reason: Invalid::OutOfRange,
    })
}

fn ensure_key_free(state: &State, key: ApiKey) -> Result<(), Rejection> {
    match state.account_id(&key) {
        Some(_) => Err(Rejection::KeyTaken { key }),
        None => Ok(()),
    }
}

fn open_primary(state: &State, open: &OpenPrimary) -> Result<Event, Rejection> {
    validate_name(&open.name, false)?;
    if open.credit_line.is_positive() {
        return Err(invalid(Field::CreditLimit, Invalid::Positive));
    }
    ensure_key_free(state, open.key)?;
    Ok(Event::PrimaryOpened {
        account: new_account_id(state)?,
        key: open.key,
        name: open.name.clone(),
        currency: open.currency,
        credit_limit: open.credit_line,
        secret: secret_record(&open.secret),
    })
}

/// The primary named by the caller: known, a primary, else `UnknownAccount`.
fn acting_primary<'a>(
    state: &'a State,
    key: &ApiKey,
) -> Result<(AccountId, &'a Account), Rejection> {
    match state.account_by_key(key) {
        Some((id, account)) if account.is_primary() => Ok((id, account)),
        _ => Err(Rejection::UnknownAccount { key: *key }),
    }
}

/// A subaccount of `primary`, else `UnknownAccount` (unknown and "not yours" look the same).
fn own_subaccount<'a>(
    state: &'a State,
    primary: AccountId,
    key: &ApiKey,
) -> Result<(AccountId, &'a Account), Rejection> {
    match state.account_by_key(key) {
        Some((id, account)) if account.primary() == Some(primary) => Ok((id, account)),
        _ => Err(Rejection::UnknownAccount { key: *key }),
    }
}

fn create_subaccount(state: &State, create: &CreateSubaccount) -> Result<Event, Rejection> {
    validate_name(&create.name, true)?;
    let (primary_id, primary) = acting_primary(state, &create.primary)?;
    if primary.suspended() {
        return Err(Rejection::Suspended {
            key: create.primary,
        });
    }
    let open_subaccounts = state
        .subaccounts(primary_id)
        .iter()
        .filter(|id| state.account(**id).is_some_and(|sub| !sub.closed()))
        .count();
    let limit = state.policy().subaccounts_per_primary_max;
    if open_subaccounts >= usize::try_from(limit).unwrap_or(usize::MAX) {
        return Err(Rejection::SubaccountLimitReached { limit });
    }
    ensure_key_free(state, create.key)?;
    Ok(Event::SubaccountCreated {
        account: new_account_id(state)?,
        primary: primary_id,
        key: create.key,
        name: create.name.clone(),
        use_primary_account_balance: create.use_primary_account_balance,
        secret: secret_record(&create.secret),
    })
}

fn update_subaccount(state: &State, update: &UpdateSubaccount) -> Result<Vec<Event>, Rejection> {
    if let Some(name) = &update.name {
        validate_name(name, true)?;
    }
    let (primary_id, _) = acting_primary(state, &update.primary)?;
    let (id, subaccount) = own_subaccount(state, primary_id, &update.subaccount)?;
    if subaccount.closed() {
        return Err(Rejection::Closed {
            key: update.subaccount,
        });
    }
    let shared = subaccount.funding() == Funding::Shared;
    let mut events = Vec::new();
    match update.use_primary_account_balance {
        Some(true) if !shared => {
            return Err(invalid(
                Field::UsePrimaryAccountBalance,
                Invalid::Irreversible,
            ));
        }
        Some(false) if shared => events.push(Event::SubaccountSwitchedToOwnBalance { account: id }),
        _ => {}
    }
    if let Some(name) = &update.name {
        events.push(Event::SubaccountRenamed {
            account: id,
            name: name.clone(),
        });
    }
    match update.suspended {
        Some(true) if !subaccount.suspended() => {
            events.push(Event::AccountSuspended { account: id })
        }
        Some(false) if subaccount.suspended() => {
            events.push(Event::AccountReactivated { account: id })
        }
        _ => {}
    }
    Ok(events)
}

fn close_subaccount(state: &State, close: &CloseSubaccount) -> Result<Event, Rejection> {
    let (primary_id, _) = acting_primary(state, &close.primary)?;
    let (id, subaccount) = own_subaccount(state, primary_id, &close.subaccount)?;
    if subaccount.closed() {
        return Err(Rejection::Closed {
            key: close.subaccount,
        });
    }
    if let Funding::Own {
        balance,
        credit_limit,
    } = subaccount.funding()
    {
        if !balance.is_zero() || !credit_limit.is_zero() {
            return Err(Rejection::NotSettled {
                balance,
                credit_limit,
            });
        }
    }
    Ok(Event::SubaccountClosed { account: id })
}

fn set_suspended(state: &State, set: &SetSuspended) -> Result<Vec<Event>, Rejection> {
    let (id, account) = state
        .account_by_key(&set.account)
        .ok_or(Rejection::UnknownAccount { key: set.account })?;
    if account.closed() {
        return Err(Rejection::Closed { key: set.account });
    }
    Ok(match (set.suspended, account.suspended()) {
        (true, false) => vec![Event::AccountSuspended { account: id }],
        (false, true) => vec![Event::AccountReactivated { account: id }],
        _ => Vec::new(),
    })
}

/// The idempotency check shared by every money command: `Some(decision)` ends deciding.
/// `content` is only built when the id is known: the common fresh command pays one lookup.
fn replayed(
    state: &State,
    id: &CommandId,
    content: impl FnOnce() -> Option<CommandContent>,
) -> Option<Result<Decision, Rejection>> {
    let record = state.command(id)?;
    Some(if content().as_ref() == Some(&record.content) {
        Ok(Decision::AlreadyApplied {
            seq: record.seq,
            at: record.at,
        })
    } else {
        Err(Rejection::IdempotencyConflict { id: *id })
    })
}

fn transfer_money(
    state: &State,
    transfer: &Transfer,
    kind: MoneyKind,
) -> Result<Decision, Rejection> {
    let source = state.account_id(&transfer.from);
    let target = state.account_id(&transfer.to);
    let content = || {
        source.zip(target).map(|(source, target)| CommandContent {
            kind,
            source,
            target,
            amount: transfer.amount,
            reference: transfer.reference.as_str().into(),
        })
    };
    if let Some(decision) = replayed(state, &transfer.id, content) {
        return decision;
    }
    validate_amount(transfer.amount)?;
    validate_reference(&transfer.reference)?;
    // The acting primary is nearly always one of the ends: reuse that lookup.
    let known_primary = if transfer.primary == transfer.from {
        source
    } else if transfer.primary == transfer.to {
        target
    } else {
        state.account_id(&transfer.primary)
    };
    let (primary_id, primary) = match known_primary.and_then(|id| Some((id, state.account(id)?))) {
        Some((id, account)) if account.is_primary() => (id, account),
        _ => {
            return Err(Rejection::UnknownAccount {
                key: transfer.primary,
            })
        }
    };
    let reject = |rule| Err(Rejection::InvalidTransfer { rule });
    if transfer.from == transfer.to {
        return reject(TransferRule::SameAccount);
    }
    let in_family = |id: Option<AccountId>| {
        let id = id?;
        let account = state.account(id)?;
        (id == primary_id || account.primary() == Some(primary_id)).then_some((id, account))
    };
    let (Some((source_id, from)), Some((target_id, to))) = (in_family(source), in_family(target))
    else {
        return reject(TransferRule::NotInFamily);
    };
    if !from.is_primary() && !to.is_primary() {
        return reject(TransferRule::SubaccountToSubaccount);
    }
    if from.closed() || to.closed() {
        return reject(TransferRule::Closed);
    }
    if primary.suspended() {
        return reject(TransferRule::PrimarySuspended);
    }
    if from.funding() == Funding::Shared || to.funding() == Funding::Shared {
        return reject(TransferRule::SharedBalance);
    }
    let Funding::Own {
        balance: target_balance,
        credit_limit: target_limit,
    } = to.funding()
    else {
        return reject(TransferRule::SharedBalance);
    };
    let requested = transfer.amount;
    if kind == MoneyKind::CreditTransfer {
        let unused = from.unused_credit().unwrap_or(Amount::ZERO);
        if requested > unused {
            return Err(Rejection::InsufficientCredit { unused, requested });
        }
        if target_limit.checked_sub(requested).is_none() {
            return reject(TransferRule::OutOfRange);
        }
    } else {
        let available = from.available().unwrap_or(Amount::ZERO);
        if requested > available {
            return Err(Rejection::InsufficientFunds {
                available,
                requested,
            });
        }
        if target_balance.checked_add(requested).is_none() {
            return reject(TransferRule::OutOfRange);
        }
    }
    let (command, amount, reference) = (transfer.id, requested, transfer.reference.clone());
    let (source, target) = (source_id, target_id);
    Ok(one(if kind == MoneyKind::CreditTransfer {
        Event::CreditTransferred {
            command,
            source,
            target,
            amount,
            reference,
        }
    } else {
        Event::BalanceTransferred {
            command,
            source,
            target,
            amount,
            reference,
        }
    }))
}

fn charge_usage(state: &State, charge: &Charge) -> Result<Decision, Rejection> {
    let found = state.account_by_key(&charge.account);
    let payer_of = |(id, account): (AccountId, &Account)| match account.funding() {
        Funding::Shared => account.primary().unwrap_or(id),
        Funding::Own { .. } => id,
    };
    // What the caller sent, not who pays: the payer can change (a shared subaccount switching
    // to its own balance), and a retry must still be recognised.
    let content = || {
        found.map(|(id, _)| CommandContent {
            kind: MoneyKind::Charge,
            source: id,
            target: id,
            amount: charge.amount,
            reference: charge.reference.as_str().into(),
        })
    };
    if let Some(decision) = replayed(state, &charge.id, content) {
        return decision;
    }
    validate_amount(charge.amount)?;
    validate_reference(&charge.reference)?;
    let (id, account) = found.ok_or(Rejection::UnknownAccount {
        key: charge.account,
    })?;
    if account.closed() {
        return Err(Rejection::Closed {
            key: charge.account,
        });
    }
    if account.suspended() {
        return Err(Rejection::Suspended {
            key: charge.account,
        });
    }
    // A suspended primary suspends spending in its whole family, whoever pays.
    if let Some(owner) = account.primary().and_then(|owner| state.account(owner)) {
        if owner.suspended() {
            return Err(Rejection::Suspended { key: owner.key });
        }
    }
    let payer_id = payer_of((id, account));
    let payer = state.account(payer_id).ok_or(Rejection::UnknownAccount {
        key: charge.account,
    })?;
    let available = payer.available().unwrap_or(Amount::ZERO);
    if charge.amount > available {
        return Err(Rejection::InsufficientFunds {
            available,
            requested: charge.amount,
        });
    }
    Ok(one(Event::Charged {
        command: charge.id,
        account: id,
        payer: payer_id,
        amount: charge.amount,
        reference: charge.reference.clone(),
    }))
}

fn top_up_primary(state: &State, top_up: &TopUp) -> Result<Decision, Rejection> {
    let found = state.account_id(&top_up.primary);
    let content = || {
        found.map(|id| CommandContent {
            kind: MoneyKind::TopUp,
            source: id,
            target: id,
            amount: top_up.amount,
            reference: top_up.reference.as_str().into(),
        })
    };
    if let Some(decision) = replayed(state, &top_up.id, content) {
        return decision;
    }
    validate_amount(top_up.amount)?;
    validate_reference(&top_up.reference)?;
    let (id, primary) = acting_primary(state, &top_up.primary)?;
    let Funding::Own { balance, .. } = primary.funding() else {
        return Err(Rejection::WrongAccountKind {
            key: top_up.primary,
        });
    };
    if balance.checked_add(top_up.amount).is_none() {
        return Err(invalid(Field::Amount, Invalid::OutOfRange));
    }
    Ok(one(Event::ToppedUp {
        command: top_up.id,
        account: id,
        amount: top_up.amount,
        reference: top_up.reference.clone(),
    }))
}

fn set_credit_line(state: &State, set: &SetCreditLine) -> Result<Event, Rejection> {
    if set.credit_line.is_positive() {
        return Err(invalid(Field::CreditLimit, Invalid::Positive));
    }
    let (id, primary) = acting_primary(state, &set.primary)?;
    let Funding::Own { balance, .. } = primary.funding() else {
        return Err(Rejection::WrongAccountKind { key: set.primary });
    };
    let lent = state.lent_credit(id);
    let not_allowed = Rejection::CreditLineNotAllowed {
        requested: set.credit_line,
        lent,
        balance,
    };
    // The primary keeps line + lent for itself: that must be ≤ 0 (cannot take back credit
    // already lent) and ≤ its balance (cannot withdraw credit it has already spent).
    let credit_limit = set
        .credit_line
        .checked_add(lent)
        .ok_or(not_allowed.clone())?;
    if credit_limit.is_positive() || balance < credit_limit {
        return Err(not_allowed);
    }
    Ok(Event::CreditLineSet {
        account: id,
        credit_line: set.credit_line,
        credit_limit,
    })
}

/// The account a secret command acts on: known and open.
fn secret_holder<'a>(
    state: &'a State,
    key: &ApiKey,
) -> Result<(AccountId, &'a Account), Rejection> {
    let (id, account) = state
        .account_by_key(key)
        .ok_or(Rejection::UnknownAccount { key: *key })?;
    if account.closed() {
        return Err(Rejection::Closed { key: *key });
    }
    Ok((id, account))
}

fn create_secret(state: &State, create: &CreateSecret) -> Result<Event, Rejection> {
    let (id, _) = secret_holder(state, &create.account)?;
    let secrets = state.secret_ids(id);
    if secrets.len() >= SECRETS_PER_ACCOUNT_MAX {
        return Err(Rejection::ExcessSecret);
    }
    if secrets.contains(&create.secret.id) {
        return Err(Rejection::SecretIdTaken {
            id: create.secret.id,
        });
    }
    Ok(Event::SecretCreated {
        account: id,
        secret: secret_record(&create.secret),
    })
}

fn set_low_balance_threshold(
    state: &State,
    set: &SetLowBalanceThreshold,
) -> Result<Vec<Event>, Rejection> {
    if set.threshold.is_some_and(Amount::is_negative) {
        return Err(invalid(Field::Threshold, Invalid::NotPositive));
    }
    let (id, account) = secret_holder(state, &set.account)?;
    if account.funding() == Funding::Shared {
        return Err(Rejection::WrongAccountKind { key: set.account });
    }
    let current = state.low_balance(id).map(|setting| setting.threshold);
    if current == set.threshold {
        return Ok(Vec::new());
    }
    Ok(vec![Event::LowBalanceThresholdSet {
        account: id,
        threshold: set.threshold,
    }])
}

fn revoke_secret(state: &State, revoke: &RevokeSecret) -> Result<Event, Rejection> {
    let (id, _) = secret_holder(state, &revoke.account)?;
    let secrets = state.secret_ids(id);
    if !secrets.contains(&revoke.secret) {
        return Err(Rejection::UnknownSecret { id: revoke.secret });
    }
    if secrets.len() <= 1 {
        return Err(Rejection::LastSecret);
    }
    Ok(Event::SecretRevoked {
        account: id,
        secret: revoke.secret,
    })
}
