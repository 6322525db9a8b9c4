//! subledger-views: read-side projections built only from committed events.
//!
//! [`Views`] folds committed [`Batch`]es into what queries need: every account with its name,
//! creation time and secrets (hashes, for authentication), each primary family with its totals,
//! and the balance- and credit-transfer history of each family. Balances come from a
//! [`State`] applied with the same `apply` as the writer's (one implementation of the rules),
//! kept without the idempotency index the read side never needs.
//!
//! This crate knows nothing of threads, locks, storage or HTTP: the engine decides when a batch
//! is committed and guards the views; servers turn the snapshots into JSON.

pub mod time;

use bincode::{Decode, Encode};
use rustc_hash::FxHashMap;
use subledger_core::{
    AccountId, Amount, ApiKey, ApplyError, Batch, CommandId, Currency, Event, Funding, Policy,
    SecretHash, SecretId, Sequence, State, Timestamp, Total,
};

/// Most items one page of a report may hold.
pub const PAGE_ITEMS_MAX: usize = 1_000;
/// Most subaccounts one report query may filter on.
pub const QUERY_SUBACCOUNTS_MAX: usize = 100;

/// An account as queries report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSnapshot {
    pub key: ApiKey,
    /// The owner's key; `None` for a primary.
    pub primary: Option<ApiKey>,
    pub name: String,
    pub currency: Currency,
    /// `None` while the subaccount uses its primary's balance.
    pub balance: Option<Amount>,
    /// `None` while the subaccount uses its primary's balance.
    pub credit_limit: Option<Amount>,
    pub suspended: bool,
    pub closed: bool,
    pub created_at: Timestamp,
}

impl AccountSnapshot {
    /// `use_primary_account_balance` of the public API (`false` for primaries).
    pub fn uses_primary_balance(&self) -> bool {
        self.primary.is_some() && self.balance.is_none()
    }
}

/// A primary and its subaccounts (oldest first), with the family's totals over own balances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilySnapshot {
    pub primary: AccountSnapshot,
    pub subaccounts: Vec<AccountSnapshot>,
    pub total_balance: Total,
    pub total_credit_limit: Total,
}

/// One active secret.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SecretView {
    pub id: SecretId,
    pub created_at: Timestamp,
    pub hash: SecretHash,
}

/// Which transfer history a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferKind {
    Balance,
    Credit,
}

/// A transfer as reports show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferSnapshot {
    pub id: CommandId,
    pub seq: Sequence,
    pub at: Timestamp,
    pub from: ApiKey,
    pub to: ApiKey,
    pub amount: Amount,
    pub reference: String,
    /// The family's primary (`masterAccountId` in the public API).
    pub primary: ApiKey,
}

/// Filters for a transfer report. Bounds: `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferQuery {
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    /// Only transfers with one of these accounts at either end (empty: all).
    pub subaccounts: Vec<ApiKey>,
    /// Cursor: only transfers with a sequence number below this one (newest first paging).
    pub before: Option<Sequence>,
    /// Most items to return; capped at [`PAGE_ITEMS_MAX`]; `None` means the cap.
    pub limit: Option<usize>,
}

/// One page of a report, newest first, with the cursor for the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `before` to get the next (older) page; `None` when this is the last.
    pub next: Option<Sequence>,
}

/// Why a query cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    #[error("unknown api key {0}")]
    UnknownAccount(ApiKey),
    #[error("too many subaccounts in the filter (at most {QUERY_SUBACCOUNTS_MAX})")]
    TooManySubaccounts,
    #[error("start is after end")]
    EmptyRange,
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
struct Details {
    name: String,
    created_at: Timestamp,
    secrets: Vec<SecretView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
struct TransferEntry {
    id: CommandId,
    seq: Sequence,
    at: Timestamp,
    from: AccountId,
    to: AccountId,
    amount: Amount,
    reference: Box<str>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
struct History {
    balance: Vec<TransferEntry>,
    credit: Vec<TransferEntry>,
}

/// The read-side projections. Apply committed batches in order; query at will.
#[derive(Debug, Clone)]
pub struct Views {
    state: State,
    details: Vec<Details>,
    history: FxHashMap<AccountId, History>,
}

impl Default for Views {
    fn default() -> Views {
        Views::new()
    }
}

impl PartialEq for Views {
    fn eq(&self, other: &Views) -> bool {
        self.state == other.state && self.details == other.details && self.history == other.history
    }
}

impl Views {
    pub fn new() -> Views {
        Views {
            state: State::without_command_index(Policy::default()),
            details: Vec::new(),
            history: FxHashMap::default(),
        }
    }

    /// Views whose state also keeps the idempotency index: the form snapshots are taken in,
    /// so that one snapshot restores both the writer's state and the read views.
    pub fn with_command_index() -> Views {
        Views {
            state: State::new(Policy::default()),
            details: Vec::new(),
            history: FxHashMap::default(),
        }
    }

    /// Splits snapshot-form views into the writer's state (keeping the idempotency index, moved
    /// not copied) and read views without the index.
    pub fn into_writer_and_views(self) -> (State, Views) {
        let views = Views {
            state: self.state.clone_without_command_index(),
            details: self.details,
            history: self.history,
        };
        (self.state, views)
    }

    /// Restores low-balance settings decoded from a snapshot extension.
    pub fn restore_low_balances(
        &mut self,
        settings: Vec<(AccountId, subledger_core::LowBalance)>,
    ) -> Result<(), String> {
        self.state.restore_low_balances(settings)
    }

    /// Makes room for `additional` more money commands in the idempotency index (if kept).
    pub fn reserve_commands(&mut self, additional: usize) {
        self.state.reserve_commands(additional);
    }

    /// Drops the idempotency index (the live read views never need it).
    pub fn forget_command_index(&mut self) {
        self.state.forget_command_index();
    }

    /// The sequence number of the last applied event.
    pub fn last_seq(&self) -> Sequence {
        self.state.last_seq()
    }

    /// The balances and structure as the read side sees them.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Applies a committed batch. An error means the batch contradicts the views (a corrupt
    /// log or a bug); the events before the failing one stay applied, so the caller must stop.
    pub fn apply_batch(&mut self, batch: &Batch) -> Result<(), ApplyError> {
        for (seq, event) in batch.iter() {
            self.apply(seq, batch.at, event)?;
        }
        Ok(())
    }

    /// Applies one committed event, or refuses it and changes nothing.
    pub fn apply(&mut self, seq: Sequence, at: Timestamp, event: &Event) -> Result<(), ApplyError> {
        self.state.apply(seq, at, event)?;
        // From here the event is known to be consistent with the state: ids exist.
        match event {
            Event::PrimaryOpened { name, secret, .. }
            | Event::SubaccountCreated { name, secret, .. } => {
                self.details.push(Details {
                    name: name.clone(),
                    created_at: at,
                    secrets: vec![SecretView {
                        id: secret.id,
                        created_at: at,
                        hash: secret.hash.clone(),
                    }],
                });
            }
            Event::SubaccountRenamed { account, name } => {
                if let Some(details) = self.details.get_mut(account.index()) {
                    details.name.clone_from(name);
                }
            }
            Event::SecretCreated { account, secret } => {
                if let Some(details) = self.details.get_mut(account.index()) {
                    details.secrets.push(SecretView {
                        id: secret.id,
                        created_at: at,
                        hash: secret.hash.clone(),
                    });
                }
            }
            Event::SecretRevoked { account, secret } => {
                if let Some(details) = self.details.get_mut(account.index()) {
                    details.secrets.retain(|view| view.id != *secret);
                }
            }
            Event::BalanceTransferred {
                command,
                source,
                target,
                amount,
                reference,
            }
            | Event::CreditTransferred {
                command,
                source,
                target,
                amount,
                reference,
            } => {
                let primary = self.family_of(*source);
                let entry = TransferEntry {
                    id: *command,
                    seq,
                    at,
                    from: *source,
                    to: *target,
                    amount: *amount,
                    reference: reference.as_str().into(),
                };
                let history = self.history.entry(primary).or_default();
                match event {
                    Event::CreditTransferred { .. } => history.credit.push(entry),
                    _ => history.balance.push(entry),
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn family_of(&self, id: AccountId) -> AccountId {
        self.state
            .account(id)
            .and_then(|account| account.primary)
            .unwrap_or(id)
    }

    /// One account by key.
    pub fn account(&self, key: &ApiKey) -> Option<AccountSnapshot> {
        self.snapshot(self.state.account_id(key)?)
    }

    /// Which family an account belongs to: its primary's id (a primary's is its own).
    pub fn family_id(&self, key: &ApiKey) -> Option<AccountId> {
        Some(self.family_of(self.state.account_id(key)?))
    }

    fn snapshot(&self, id: AccountId) -> Option<AccountSnapshot> {
        let account = self.state.account(id)?;
        let details = self.details.get(id.index())?;
        let (balance, credit_limit) = match account.funding {
            Funding::Own {
                balance,
                credit_limit,
            } => (Some(balance), Some(credit_limit)),
            Funding::Shared => (None, None),
        };
        let primary = match account.primary {
            Some(owner) => Some(self.state.account(owner)?.key),
            None => None,
        };
        Some(AccountSnapshot {
            key: account.key,
            primary,
            name: details.name.clone(),
            currency: account.currency,
            balance,
            credit_limit,
            suspended: account.suspended,
            closed: account.closed,
            created_at: details.created_at,
        })
    }

    /// A primary with its subaccounts (oldest first) and the family totals, counting the
    /// primary and every subaccount with its own balance.
    pub fn family(&self, primary: &ApiKey) -> Option<FamilySnapshot> {
        let id = self.state.account_id(primary)?;
        let owner = self.state.account(id)?;
        if !owner.is_primary() {
            return None;
        }
        let primary = self.snapshot(id)?;
        let subaccounts: Vec<AccountSnapshot> = owner
            .subaccounts
            .iter()
            .filter_map(|sub| self.snapshot(*sub))
            .collect();
        let members = std::iter::once(&primary).chain(subaccounts.iter());
        let (total_balance, total_credit_limit) =
            members.fold((Total::ZERO, Total::ZERO), |(balance, credit), member| {
                (
                    balance.plus(member.balance.unwrap_or(Amount::ZERO)),
                    credit.plus(member.credit_limit.unwrap_or(Amount::ZERO)),
                )
            });
        Some(FamilySnapshot {
            primary,
            subaccounts,
            total_balance,
            total_credit_limit,
        })
    }

    /// The active secrets of an account (oldest first), with their hashes for verification.
    pub fn secrets(&self, key: &ApiKey) -> Option<&[SecretView]> {
        let id = self.state.account_id(key)?;
        Some(&self.details.get(id.index())?.secrets)
    }

    /// A family's balance or credit transfers, newest first, filtered and paged.
    pub fn transfers(
        &self,
        primary: &ApiKey,
        kind: TransferKind,
        query: &TransferQuery,
    ) -> Result<Page<TransferSnapshot>, QueryError> {
        let unknown = || QueryError::UnknownAccount(*primary);
        let family = self.state.account_id(primary).ok_or_else(unknown)?;
        if !self
            .state
            .account(family)
            .is_some_and(|account| account.is_primary())
        {
            return Err(unknown());
        }
        if query.subaccounts.len() > QUERY_SUBACCOUNTS_MAX {
            return Err(QueryError::TooManySubaccounts);
        }
        if let (Some(start), Some(end)) = (query.start, query.end) {
            if start > end {
                return Err(QueryError::EmptyRange);
            }
        }
        // Unknown or foreign subaccounts in the filter simply match nothing.
        let wanted: Vec<AccountId> = query
            .subaccounts
            .iter()
            .filter_map(|key| self.state.account_id(key))
            .collect();
        let entries = self
            .history
            .get(&family)
            .map_or(&[][..], |history| match kind {
                TransferKind::Balance => &history.balance,
                TransferKind::Credit => &history.credit,
            });
        // Entries are in sequence order, and commit instants never decrease with the sequence,
        // so both bounds and the cursor are binary searches.
        let low = query
            .start
            .map_or(0, |start| entries.partition_point(|entry| entry.at < start));
        let mut high = query.end.map_or(entries.len(), |end| {
            entries.partition_point(|entry| entry.at < end)
        });
        if let Some(before) = query.before {
            high = high.min(entries.partition_point(|entry| entry.seq < before));
        }
        let limit = query.limit.unwrap_or(PAGE_ITEMS_MAX).min(PAGE_ITEMS_MAX);
        let mut matching = entries[low..high.max(low)].iter().rev().filter(|entry| {
            wanted.is_empty() || wanted.contains(&entry.from) || wanted.contains(&entry.to)
        });
        let items: Vec<TransferSnapshot> = matching
            .by_ref()
            .take(limit)
            .filter_map(|entry| self.transfer_snapshot(family, entry))
            .collect();
        let next = match (items.last(), matching.next()) {
            (Some(last), Some(_)) => Some(last.seq),
            _ => None,
        };
        Ok(Page { items, next })
    }

    fn transfer_snapshot(
        &self,
        family: AccountId,
        entry: &TransferEntry,
    ) -> Option<TransferSnapshot> {
        Some(TransferSnapshot {
            id: entry.id,
            seq: entry.seq,
            at: entry.at,
            from: self.state.account(entry.from)?.key,
            to: self.state.account(entry.to)?.key,
            amount: entry.amount,
            reference: entry.reference.to_string(),
            primary: self.state.account(family)?.key,
        })
    }

    /// A deterministic hash of the projections, for checking that a rebuild equals a replay.
    pub fn views_hash(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.state.state_hash());
        for details in &self.details {
            hasher.update(&(details.name.len() as u64).to_le_bytes());
            hasher.update(details.name.as_bytes());
            hasher.update(&details.created_at.0.to_le_bytes());
            for secret in &details.secrets {
                hasher.update(&secret.id.to_uuid().into_bytes());
                hasher.update(&secret.created_at.0.to_le_bytes());
                hasher.update(secret.hash.as_str().as_bytes());
            }
        }
        let mut families: Vec<_> = self.history.iter().collect();
        families.sort_unstable_by_key(|(id, _)| **id);
        for (id, history) in families {
            hasher.update(&id.0.to_le_bytes());
            for entry in history.balance.iter().chain(history.credit.iter()) {
                hasher.update(&entry.seq.0.to_le_bytes());
                hasher.update(&entry.id.to_uuid().into_bytes());
                hasher.update(&entry.from.0.to_le_bytes());
                hasher.update(&entry.to.0.to_le_bytes());
                hasher.update(&entry.amount.units().to_le_bytes());
                hasher.update(&(entry.reference.len() as u64).to_le_bytes());
                hasher.update(entry.reference.as_bytes());
            }
        }
        *hasher.finalize().as_bytes()
    }
}

impl Encode for Views {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.state.encode(encoder)?;
        self.details.encode(encoder)?;
        (self.history.len() as u64).encode(encoder)?;
        for (primary, history) in &self.history {
            primary.encode(encoder)?;
            history.encode(encoder)?;
        }
        Ok(())
    }
}

impl<Context> Decode<Context> for Views {
    /// Decodes and validates: one details entry per account, histories only for primaries and
    /// only between accounts of their family, in sequence order.
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let invalid = |detail: &'static str| bincode::error::DecodeError::Other(detail);
        let state = State::decode(decoder)?;
        let details = Vec::<Details>::decode(decoder)?;
        if details.len() != state.account_count() {
            return Err(invalid("views: one details entry per account"));
        }
        let families = u64::decode(decoder)?;
        let mut history = FxHashMap::default();
        for _ in 0..families {
            let primary = AccountId::decode(decoder)?;
            let entries = History::decode(decoder)?;
            let family_of = |id: AccountId| {
                let account = state.account(id)?;
                Some(account.primary.unwrap_or(id))
            };
            let consistent = |list: &[TransferEntry]| {
                list.windows(2)
                    .all(|pair| pair[0].seq < pair[1].seq && pair[0].at <= pair[1].at)
                    && list.iter().all(|entry| {
                        family_of(entry.from) == Some(primary)
                            && family_of(entry.to) == Some(primary)
                            && entry.seq <= state.last_seq()
                    })
            };
            if family_of(primary) != Some(primary)
                || !consistent(&entries.balance)
                || !consistent(&entries.credit)
            {
                return Err(invalid("views: a transfer history does not fit its family"));
            }
            if history.insert(primary, entries).is_some() {
                return Err(invalid("views: duplicate family history"));
            }
        }
        Ok(Views {
            state,
            details,
            history,
        })
    }
}
bincode::impl_borrow_decode!(Views);
