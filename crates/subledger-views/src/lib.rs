//! subledger-views: read-side projections built only from committed events.
//!
//! [`Views`] folds committed [`Batch`]es into what queries need: every account with its name,
//! creation time and secrets (hashes, for authentication), each primary family with its totals,
//! and the balance- and credit-transfer history of each family. Views in snapshot form (recovery,
//! audits) keep a [`State`] applied with the same `apply` as the writer's. Live read views and
//! the snapshot thread's replica keep a directory of the accounts instead and read their values
//! from their histories (`directory`, ADR 0008): their apply computes each new value from the
//! previous one for events a `State` accepted, and a property test holds it to `State::apply`.
//!
//! This crate knows nothing of threads, locks, storage or HTTP: the engine decides when a batch
//! is committed and guards the views; servers turn the snapshots into JSON.

pub mod accounts;
mod directory;
pub mod json;
mod money;
mod shapes;
pub mod time;

use bincode::{Decode, Encode};

use smol_str::SmolStr;

use crate::directory::Directory;

pub use accounts::{AccountHistory, AsOf, Entry, EntryKind, Named, Names, NamesRef};
pub use money::MoneyListsBuilder;
use money::{EntryRef, MoneyLists};
pub use shapes::{MoneyListShapes, RebuiltMoneyLists};
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

/// A family in brief: its primary, how many subaccounts it has, its totals and how many of its
/// accounts are below their low-balance threshold — computed without copying the subaccounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilySummary {
    pub primary: AccountSnapshot,
    pub subaccounts: usize,
    pub total_balance: Total,
    pub total_credit_limit: Total,
    pub low_balance_alerts: usize,
}

/// One active secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretView {
    pub id: SecretId,
    pub created_at: Timestamp,
    /// Where its argon2id hash is.
    pub hash: StoredHash,
}

/// Where a secret's hash is kept. The views keep the sequence number of the event that
/// recorded it, not the hash: a PHC string is ~100 bytes per secret, one or two per account,
/// needed only when an authentication misses the server's cache of verified credentials (and
/// then next to an argon2 verification of ~20 ms, reading one log record costs nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredHash {
    /// In the event at this sequence number (`PrimaryOpened`, `SubaccountCreated` or
    /// `SecretCreated`); see `Ledger::secret_hashes`.
    InLog(Sequence),
    /// Held here: views decoded from snapshots of formats 1–4, which carried the hash itself.
    /// Boxed so that the common case, `InLog`, keeps a secret's view at 40 bytes (48 with the
    /// hash inline: one per secret, a million or more).
    Here(Box<SecretHash>),
}

impl Encode for SecretView {
    /// The id, the creation instant, then the hash as text — or, for a hash kept in the log,
    /// an empty text (no real hash is empty) followed by the sequence number. Formats 1–4
    /// always wrote the text, so one decoder reads them all.
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.id.encode(encoder)?;
        self.created_at.encode(encoder)?;
        match &self.hash {
            StoredHash::Here(hash) => hash.encode(encoder),
            StoredHash::InLog(seq) => {
                "".encode(encoder)?;
                seq.encode(encoder)
            }
        }
    }
}

impl<Context> Decode<Context> for SecretView {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let id = SecretId::decode(decoder)?;
        let created_at = Timestamp::decode(decoder)?;
        let text = String::decode(decoder)?;
        let hash = if text.is_empty() {
            StoredHash::InLog(Sequence::decode(decoder)?)
        } else {
            StoredHash::Here(Box::new(SecretHash::new(text).map_err(|error| {
                bincode::error::DecodeError::OtherString(error.to_string())
            })?))
        };
        Ok(SecretView {
            id,
            created_at,
            hash,
        })
    }
}
bincode::impl_borrow_decode!(SecretView);

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

/// An account as a snapshot's head holds it (where formats 1–3 put it): the current name, the
/// creation instant, the secrets. Decoded into a history without entries
/// ([`AccountHistory::from_head`]).
struct NamedDetails(AccountHistory);

impl<Context> Decode<Context> for NamedDetails {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let name = String::decode(decoder)?;
        let created_at = Timestamp::decode(decoder)?;
        let secrets = Vec::<SecretView>::decode(decoder)?;
        Ok(NamedDetails(AccountHistory::from_head(
            SmolStr::from(name),
            created_at,
            secrets,
        )))
    }
}
bincode::impl_borrow_decode!(NamedDetails);

#[derive(Debug, Clone, PartialEq, Eq)]
struct TransferEntry {
    id: CommandId,
    seq: Sequence,
    at: Timestamp,
    from: AccountId,
    to: AccountId,
    /// 8-byte aligned (an `Amount` is stored as two halves), so the entry is 64 bytes, not 80.
    amount: Amount,
    reference: Reference,
}

/// A money command's reference, usually empty, behind one thin pointer: a `Box<str>` took 16
/// bytes of every transfer entry (ten million of them at 10M transfers) to say "none".
/// Encodes as the text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
// The box is the point: 8 bytes where the `String` itself takes 24.
#[allow(clippy::box_collection)]
struct Reference(Option<Box<String>>);

impl Reference {
    fn new(text: &str) -> Reference {
        Reference::from(text.to_owned())
    }

    fn as_str(&self) -> &str {
        self.0.as_deref().map_or("", String::as_str)
    }

    fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl From<String> for Reference {
    fn from(text: String) -> Reference {
        Reference((!text.is_empty()).then(|| Box::new(text)))
    }
}

impl Encode for Reference {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.as_str().encode(encoder)
    }
}

impl<Context> Decode<Context> for Reference {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        String::decode(decoder).map(Reference::from)
    }
}
bincode::impl_borrow_decode!(Reference);

/// The most bytes an encoded transfer entry without a reference takes: id (16), seq and
/// instant (9 each), two account ids (5 each), amount (17), the empty reference's length (1).
const TRANSFER_ENTRY_ENCODED_BYTES_MAX: usize = 62;

/// A transfer entry without a reference (most have none), read from one borrowed slice (see
/// `subledger_core::fields`); `None` for anything the ordinary decoding must handle.
fn parse_transfer_entry(fields: &mut subledger_core::fields::Fields<'_>) -> Option<TransferEntry> {
    let id = CommandId::from_bytes(fields.bytes16()?);
    let seq = Sequence(fields.u64()?);
    let at = Timestamp(fields.i64()?);
    let from = AccountId(fields.u32()?);
    let to = AccountId(fields.u32()?);
    let amount = Amount::from_units(fields.i128()?).ok()?;
    if fields.u64()? != 0 {
        return None;
    }
    Some(TransferEntry {
        id,
        seq,
        at,
        from,
        to,
        amount,
        reference: Reference::default(),
    })
}

/// A transfer entry's fixed part in snapshot format 7: the command id (16 bytes), seq (u64
/// LE), at (i64 LE), from and to (u32 LE) and the amount (i128 LE); the reference follows as
/// a bincode string (one byte, 0, when empty).
const TRANSFER_ENTRY_RAW_BYTES: usize = 56;

impl TransferEntry {
    fn encode_raw<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        use bincode::enc::write::Writer;
        let mut raw = [0u8; TRANSFER_ENTRY_RAW_BYTES + 1];
        raw[..16].copy_from_slice(&self.id.to_bytes());
        raw[16..24].copy_from_slice(&self.seq.0.to_le_bytes());
        raw[24..32].copy_from_slice(&self.at.0.to_le_bytes());
        raw[32..36].copy_from_slice(&self.from.0.to_le_bytes());
        raw[36..40].copy_from_slice(&self.to.0.to_le_bytes());
        raw[40..56].copy_from_slice(&self.amount.units().to_le_bytes());
        if self.reference.is_empty() {
            // The empty reference's length, 0, completes the entry in one write.
            return encoder.writer().write(&raw);
        }
        encoder.writer().write(&raw[..TRANSFER_ENTRY_RAW_BYTES])?;
        self.reference.encode(encoder)
    }

    fn decode_raw<D: bincode::de::Decoder>(
        decoder: &mut D,
    ) -> Result<TransferEntry, bincode::error::DecodeError> {
        use bincode::de::read::Reader;
        let mut raw = [0u8; TRANSFER_ENTRY_RAW_BYTES];
        decoder.reader().read(&mut raw)?;
        let units = i128::from_le_bytes(raw[40..56].try_into().unwrap_or_default());
        let amount = Amount::from_units(units).map_err(|_| {
            bincode::error::DecodeError::Other("views: a transfer amount out of range")
        })?;
        let empty = matches!(decoder.reader().peek_read(1), Some([0]));
        let reference = if empty {
            decoder.reader().consume(1);
            Reference::default()
        } else {
            Reference::decode(decoder)?
        };
        // Fixed ranges of a fixed-size array: the conversions cannot fail.
        Ok(TransferEntry {
            id: CommandId::from_bytes(raw[..16].try_into().unwrap_or_default()),
            seq: Sequence(u64::from_le_bytes(
                raw[16..24].try_into().unwrap_or_default(),
            )),
            at: Timestamp(i64::from_le_bytes(
                raw[24..32].try_into().unwrap_or_default(),
            )),
            from: AccountId(u32::from_le_bytes(
                raw[32..36].try_into().unwrap_or_default(),
            )),
            to: AccountId(u32::from_le_bytes(
                raw[36..40].try_into().unwrap_or_default(),
            )),
            amount,
            reference,
        })
    }
}

/// A list of transfer entries in snapshot format 7: the count, then each entry's fixed part
/// and reference.
fn encode_list_v7<E: bincode::enc::Encoder>(
    list: &[TransferEntry],
    encoder: &mut E,
) -> Result<(), bincode::error::EncodeError> {
    (list.len() as u64).encode(encoder)?;
    list.iter().try_for_each(|entry| entry.encode_raw(encoder))
}

fn decode_list_v7<D: bincode::de::Decoder>(
    decoder: &mut D,
) -> Result<Vec<TransferEntry>, bincode::error::DecodeError> {
    let len = usize::try_from(u64::decode(decoder)?)
        .map_err(|_| bincode::error::DecodeError::Other("views: a length beyond memory"))?;
    // Claimed against the decoding limit before anything is allocated for them.
    decoder.claim_container_read::<TransferEntry>(len)?;
    let mut list = Vec::with_capacity(len);
    for _ in 0..len {
        list.push(TransferEntry::decode_raw(decoder)?);
    }
    Ok(list)
}

/// Two lists in format 7 (a family's balance and credit transfers, or its charges and
/// top-ups), one after the other.
fn encode_lists_v7<E: bincode::enc::Encoder>(
    lists: [&[TransferEntry]; 2],
    encoder: &mut E,
) -> Result<(), bincode::error::EncodeError> {
    lists
        .into_iter()
        .try_for_each(|list| encode_list_v7(list, encoder))
}

type TwoLists = (Vec<TransferEntry>, Vec<TransferEntry>);

fn decode_lists_v7<D: bincode::de::Decoder>(
    decoder: &mut D,
) -> Result<TwoLists, bincode::error::DecodeError> {
    Ok((decode_list_v7(decoder)?, decode_list_v7(decoder)?))
}

impl HistoryEntries {
    fn encode_v7<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        encode_lists_v7([&self.balance, &self.credit], encoder)
    }

    fn decode_v7<D: bincode::de::Decoder>(
        decoder: &mut D,
    ) -> Result<HistoryEntries, bincode::error::DecodeError> {
        let (balance, credit) = decode_lists_v7(decoder)?;
        Ok(HistoryEntries { balance, credit })
    }
}

impl PaymentEntries {
    fn encode_v7<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        encode_lists_v7([&self.charges, &self.top_ups], encoder)
    }

    fn decode_v7<D: bincode::de::Decoder>(
        decoder: &mut D,
    ) -> Result<PaymentEntries, bincode::error::DecodeError> {
        let (charges, top_ups) = decode_lists_v7(decoder)?;
        Ok(PaymentEntries { charges, top_ups })
    }
}

impl Encode for TransferEntry {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        // One write per entry without a reference (see `subledger_core::fields::Out`); the
        // same bytes as the fields one by one below.
        let fast = subledger_core::fields::encode_fast::<_, TRANSFER_ENTRY_ENCODED_BYTES_MAX>(
            encoder,
            |out| {
                if !self.reference.is_empty() {
                    return None;
                }
                out.bytes16(&self.id.to_bytes())?;
                out.u64(self.seq.0)?;
                out.i64(self.at.0)?;
                out.u32(self.from.0)?;
                out.u32(self.to.0)?;
                out.i128(self.amount.units())?;
                out.u64(0)
            },
        );
        if let Some(result) = fast {
            return result;
        }
        self.id.encode(encoder)?;
        self.seq.encode(encoder)?;
        self.at.encode(encoder)?;
        self.from.encode(encoder)?;
        self.to.encode(encoder)?;
        self.amount.encode(encoder)?;
        self.reference.encode(encoder)
    }
}

impl<Context> Decode<Context> for TransferEntry {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        if let Some(entry) = subledger_core::fields::decode_fast(
            decoder,
            TRANSFER_ENTRY_ENCODED_BYTES_MAX,
            parse_transfer_entry,
        ) {
            return Ok(entry);
        }
        Ok(TransferEntry {
            id: CommandId::decode(decoder)?,
            seq: Sequence::decode(decoder)?,
            at: Timestamp::decode(decoder)?,
            from: AccountId::decode(decoder)?,
            to: AccountId::decode(decoder)?,
            amount: Amount::decode(decoder)?,
            reference: Reference::decode(decoder)?,
        })
    }
}
bincode::impl_borrow_decode!(TransferEntry);

/// A family's balance and credit transfers as snapshots before format 9 store them: the
/// entries themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
struct HistoryEntries {
    balance: Vec<TransferEntry>,
    credit: Vec<TransferEntry>,
}

/// Events whose accounts [`Views::warm`] reads ahead of applying them: enough for the
/// processor to overlap many cache misses, few enough (about 6 KiB of lines each time) that
/// the lines are still cached when the events are applied.
pub const WARM_EVENTS_MAX: usize = 32;

/// What the views keep of the accounts.
#[derive(Debug, Clone)]
enum Form {
    Full(State),
    Lean(Directory),
}

impl Form {
    /// The family of a known account: its primary's id (a primary's is its own).
    fn family_of_known(&self, id: AccountId) -> Option<AccountId> {
        match self {
            Form::Full(state) => family_of_in(state, id),
            Form::Lean(directory) => directory
                .fixed(id)
                .map(|fixed| fixed.primary().unwrap_or(id)),
        }
    }

    /// The family of an account: its primary's id (a primary's is its own; an unknown id's
    /// is itself). The fixed facts only.
    fn family(&self, id: AccountId) -> AccountId {
        match self {
            Form::Full(state) => family_in(state, id),
            Form::Lean(directory) => directory
                .fixed(id)
                .and_then(directory::Fixed::primary)
                .unwrap_or(id),
        }
    }
}

/// An account as queries read it, from either form.
#[derive(Debug, Clone, Copy)]
struct Facts {
    key: ApiKey,
    primary: Option<AccountId>,
    currency: Currency,
    funding: Funding,
    suspended: bool,
    closed: bool,
}

impl Facts {
    fn is_primary(&self) -> bool {
        self.primary.is_none()
    }

    fn funding(&self) -> Funding {
        self.funding
    }

    fn available(&self) -> Option<Amount> {
        self.funding.available()
    }
}

/// The read-side projections. Apply committed batches in order; query at will.
#[derive(Debug, Clone)]
pub struct Views {
    /// A whole state (snapshot form, recovery, audits) or, for live read views and the
    /// snapshot thread's replica, a directory of the accounts whose values are their
    /// histories' last entries (`directory`, ADR 0008).
    form: Form,
    /// Per account: every change with the values after it (statements, point in time), the
    /// names, the creation instant and the secrets.
    accounts: Vec<AccountHistory>,
    /// Per family: transfers, charges and top-ups.
    money: MoneyLists,
    /// `false` when decoded from a version-1/2 snapshot, which lacks `accounts` and
    /// `payments`: such views answer the version-1 queries only and are not used to recover.
    complete: bool,
}

/// A family's charges (`from` = payer, `to` = the charged account) and top-ups (`from` = `to`
/// = the primary) as snapshots before format 9 store them: the entries themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
struct PaymentEntries {
    charges: Vec<TransferEntry>,
    top_ups: Vec<TransferEntry>,
}

impl MoneyListsBuilder {
    /// A builder for the events after `views`' last, whose records the idempotency index will
    /// hold from position `first` on (its length before them).
    pub fn after(views: &Views, first: usize) -> MoneyListsBuilder {
        MoneyListsBuilder::new(
            (0..views.account_count())
                .filter_map(|index| u32::try_from(index).ok().map(AccountId))
                .map(|id| views.family_of(id))
                .collect(),
            first,
        )
    }
}

/// Which payments a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentKind {
    Charges,
    TopUps,
}

/// A charge or a top-up as reports show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentSnapshot {
    pub id: CommandId,
    pub seq: Sequence,
    pub at: Timestamp,
    /// The charged account (for a top-up: the primary).
    pub account: ApiKey,
    /// Whose balance moved (a shared subaccount's charges are paid by its primary).
    pub payer: ApiKey,
    pub amount: Amount,
    pub reference: String,
    pub primary: ApiKey,
}

/// Filters for a statement: commit instants in `[start, end)`, entries after the cursor,
/// oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementQuery {
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    /// Cursor: only entries with a sequence number above this one (oldest first), or below it
    /// (newest first).
    pub after: Option<Sequence>,
    /// Most lines to return; capped at [`PAGE_ITEMS_MAX`].
    pub limit: Option<usize>,
    /// Newest first: the latest changes of a long history come first, and `after` is read as
    /// "before".
    pub newest_first: bool,
}

/// One statement line: a change to the balance or credit limit, with the values after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    pub seq: Sequence,
    pub at: Timestamp,
    pub kind: EntryKind,
    pub balance_change: Amount,
    pub credit_limit_change: Amount,
    pub balance_after: Amount,
    pub credit_limit_after: Amount,
    pub counterparty: Option<ApiKey>,
    /// The money command's id and reference, when the line comes from one.
    pub command: Option<CommandId>,
    pub reference: String,
}

impl Default for Views {
    fn default() -> Views {
        Views::new()
    }
}

impl PartialEq for Views {
    /// Equal when they answer alike: a lean form equals a full one whose accounts it directs
    /// (the values are in the histories, compared next).
    fn eq(&self, other: &Views) -> bool {
        let same_accounts = match (&self.form, &other.form) {
            (Form::Full(mine), Form::Full(theirs)) => mine == theirs,
            (Form::Lean(mine), Form::Lean(theirs)) => {
                mine == theirs && mine.commands() == theirs.commands()
            }
            (Form::Full(full), Form::Lean(lean)) | (Form::Lean(lean), Form::Full(full)) => {
                Directory::of(full) == *lean && full.command_index() == lean.commands()
            }
        };
        same_accounts && self.accounts == other.accounts && self.money.same_entries(&other.money)
    }
}

impl Views {
    pub fn new() -> Views {
        Views::with_form(Form::Full(State::without_command_index(Policy::default())))
    }

    /// Views whose state also keeps the idempotency index: the form snapshots are taken in,
    /// so that one snapshot restores both the writer's state and the read views.
    pub fn with_command_index() -> Views {
        Views::with_form(Form::Full(State::new(Policy::default())))
    }

    fn with_form(form: Form) -> Views {
        Views {
            form,
            accounts: Vec::new(),
            money: MoneyLists::default(),
            complete: true,
        }
    }

    /// Splits snapshot-form views into the writer's state (keeping the idempotency index, moved
    /// not copied) and live read views, which keep a directory of the accounts rather than a
    /// copy of that state (see [`Views::into_lean`]). Lean views have no state to hand over:
    /// they are given back as the error.
    pub fn into_writer_and_views(self) -> Result<(State, Views), Box<Views>> {
        let Views {
            form,
            accounts,
            money,
            complete,
        } = self;
        let state = match form {
            Form::Full(state) => state,
            Form::Lean(directory) => {
                return Err(Box::new(Views {
                    form: Form::Lean(directory),
                    accounts,
                    money,
                    complete,
                }))
            }
        };
        // Views whose histories do not carry the state (decoded from formats 1 and 2, or not
        // agreeing with it) keep a copy of it instead.
        let read = if complete && histories_agree(&state, &accounts) {
            Form::Lean(Directory::of(&state))
        } else {
            Form::Full(state.clone_without_command_index())
        };
        let views = Views {
            form: read,
            accounts,
            money,
            complete,
        };
        Ok((state, views))
    }

    /// The same views without a copy of the accounts' state: a directory of the accounts
    /// (key, primary, currency, subaccounts, low-balance settings), their values read from
    /// their histories' last entries (ADR 0008). What the live read views keep: the writer
    /// holds the state. Views whose histories do not carry the state (decoded from snapshot
    /// formats 1 and 2, or not agreeing with it) stay as they are. Lean views keep no
    /// idempotency index, and apply only events a `State` has accepted: they do not check the
    /// rules again (the writer did), only what keeps them consistent.
    pub fn into_lean(self) -> Views {
        match self.form {
            Form::Full(state) if self.complete && histories_agree(&state, &self.accounts) => {
                Views {
                    form: Form::Lean(Directory::of(&state)),
                    ..self
                }
            }
            form => Views { form, ..self },
        }
    }

    /// [`Views::into_lean`] for views that keep the idempotency index (snapshot form), keeping
    /// it: the snapshot thread's replica, which writes snapshots from a directory of the
    /// accounts, its histories and the index ([`Views::command_index`]). Views that cannot go
    /// lean, or keep no index, stay as they are.
    pub fn into_lean_keeping_index(self) -> Views {
        match self.form {
            Form::Full(mut state)
                if self.complete
                    && state.keeps_command_index()
                    && histories_agree(&state, &self.accounts) =>
            {
                let index = state.detach_command_index().unwrap_or_default();
                Views {
                    form: Form::Lean(Directory::of_with_index(&state, index)),
                    ..self
                }
            }
            form => Views { form, ..self },
        }
    }

    /// The idempotency index, for views that keep one (snapshot form, the replica).
    pub fn command_index(&self) -> Option<&subledger_core::CommandIndex> {
        match &self.form {
            Form::Full(state) => state.command_index(),
            Form::Lean(directory) => directory.commands(),
        }
    }

    /// `true` for live read views that keep no copy of the accounts' state.
    pub fn is_lean(&self) -> bool {
        matches!(self.form, Form::Lean(_))
    }

    fn full_mut(&mut self, what: &str) -> Result<&mut State, String> {
        match &mut self.form {
            Form::Full(state) => Ok(state),
            Form::Lean(_) => Err(format!(
                "views: {what} needs the full state, which live read views do not keep"
            )),
        }
    }

    /// Restores low-balance settings decoded from a snapshot extension.
    pub fn restore_low_balances(
        &mut self,
        settings: Vec<(AccountId, subledger_core::LowBalance)>,
    ) -> Result<(), String> {
        self.full_mut("restoring low-balance settings")?
            .restore_low_balances(settings)
    }

    /// Keeps the idempotency index's records but not its lookup table: for a replica that is
    /// only ever written out as snapshots (see `State::keep_command_records_only`). Lean views
    /// keep no index: nothing to do.
    pub fn keep_command_records_only(&mut self) {
        match &mut self.form {
            Form::Full(state) => state.keep_command_records_only(),
            Form::Lean(directory) => {
                if let Some(index) = directory.commands_mut() {
                    index.keep_records_only();
                }
            }
        }
    }

    /// Makes room for `additional` more money commands in the idempotency index (if kept).
    pub fn reserve_commands(&mut self, additional: usize) {
        if let Form::Full(state) = &mut self.form {
            state.reserve_commands(additional);
        }
    }

    /// See [`State::detach_command_index`]. `None` for lean views, which keep no index.
    pub fn detach_command_index(&mut self) -> Option<subledger_core::CommandIndex> {
        match &mut self.form {
            Form::Full(state) => state.detach_command_index(),
            Form::Lean(_) => None,
        }
    }

    /// See [`State::reattach_replayed_command_index`].
    pub fn reattach_replayed_command_index(
        &mut self,
        index: subledger_core::CommandIndex,
    ) -> Result<(), String> {
        self.full_mut("an idempotency index")?
            .reattach_replayed_command_index(index)
    }

    /// See [`State::attach_command_index`].
    pub fn attach_command_index(
        &mut self,
        index: subledger_core::CommandIndex,
    ) -> Result<(), String> {
        self.full_mut("an idempotency index")?
            .attach_command_index(index)
    }

    /// See [`State::attach_checked_command_index`].
    pub fn attach_checked_command_index(
        &mut self,
        index: subledger_core::CommandIndex,
    ) -> Result<(), String> {
        self.full_mut("an idempotency index")?
            .attach_checked_command_index(index)
    }

    /// Drops the idempotency index (the live read views never need it).
    pub fn forget_command_index(&mut self) {
        if let Form::Full(state) = &mut self.form {
            state.forget_command_index();
        }
    }

    /// The sequence number of the last applied event.
    pub fn last_seq(&self) -> Sequence {
        match &self.form {
            Form::Full(state) => state.last_seq(),
            Form::Lean(directory) => directory.last_seq(),
        }
    }

    /// The commit instant of the last applied event.
    pub fn last_at(&self) -> Timestamp {
        match &self.form {
            Form::Full(state) => state.last_at(),
            Form::Lean(directory) => directory.last_at(),
        }
    }

    /// The whole state, for views that keep one: snapshot form, recovery, audits and the
    /// snapshot thread's replica. `None` for live read views ([`Views::into_lean`]); their
    /// accounts are read with [`Views::account`], [`Views::account_id`] and [`Views::key_of`].
    pub fn state(&self) -> Option<&State> {
        match &self.form {
            Form::Full(state) => Some(state),
            Form::Lean(_) => None,
        }
    }

    /// The id of the account with this key.
    pub fn account_id(&self, key: &ApiKey) -> Option<AccountId> {
        match &self.form {
            Form::Full(state) => state.account_id(key),
            Form::Lean(directory) => directory.account_id(key),
        }
    }

    /// The key of the account with this id.
    pub fn key_of(&self, id: AccountId) -> Option<ApiKey> {
        match &self.form {
            Form::Full(state) => state.account(id).map(|account| account.key),
            Form::Lean(directory) => directory.fixed(id).map(|fixed| fixed.key),
        }
    }

    /// [`State::state_hash`] of the accounts' state; for lean views, of the state their
    /// directory, histories and index (if they keep one) describe: equal to the hash of full
    /// views brought up to date with the same events, with an index or without alike.
    fn state_hash(&self) -> [u8; 32] {
        let directory = match &self.form {
            Form::Full(state) => return state.state_hash(),
            Form::Lean(directory) => directory,
        };
        // Every account of complete views has its fixed facts, an entry and a secret; were one
        // missing, the hash is one no state has, so any comparison fails.
        let facts = self.lean_account_facts(directory);
        let Some(facts) = facts else {
            return [0xFF; 32];
        };
        let none = subledger_core::CommandIndex::default();
        subledger_core::state_hash_of(
            directory.last_seq(),
            directory.last_at(),
            facts.into_iter(),
            &directory.low_balances(),
            directory.commands().unwrap_or(&none),
        )
    }

    /// Where an account's money lives now.
    pub fn funding_of(&self, id: AccountId) -> Option<Funding> {
        self.facts(id).map(|facts| facts.funding)
    }

    /// Accounts, the next id.
    pub fn account_count(&self) -> usize {
        match &self.form {
            Form::Full(state) => state.account_count(),
            Form::Lean(directory) => directory.account_count(),
        }
    }

    /// An account as queries read it.
    fn facts(&self, id: AccountId) -> Option<Facts> {
        match &self.form {
            Form::Full(state) => state.account(id).map(|account| Facts {
                key: account.key,
                primary: account.primary(),
                currency: account.currency,
                funding: account.funding(),
                suspended: account.suspended(),
                closed: account.closed(),
            }),
            Form::Lean(directory) => {
                let fixed = directory.fixed(id)?;
                let values = directory::current(&self.accounts, id)?;
                Some(Facts {
                    key: fixed.key,
                    primary: fixed.primary(),
                    currency: directory.currency(id)?,
                    funding: values.funding,
                    suspended: values.suspended,
                    closed: values.closed,
                })
            }
        }
    }

    /// Every account's facts as a [`State`] holds them, in id order, from a lean form's parts:
    /// the directory, the histories' last entries and their secret ids. `None` if one
    /// is missing (never, for views made lean: [`histories_agree`] held then, and the lean
    /// apply keeps it).
    fn lean_account_facts<'a>(
        &'a self,
        directory: &'a Directory,
    ) -> Option<Vec<subledger_core::AccountFacts<'a>>> {
        (0..directory.account_count())
            .filter_map(|index| u32::try_from(index).ok().map(AccountId))
            .map(|id| {
                let facts = self.facts(id)?;
                let mut secrets = self.accounts.get(id.index())?.secret_ids();
                let mut ids = subledger_core::SecretIds::one(secrets.next()?);
                for secret in secrets {
                    if !ids.push(secret) {
                        return None;
                    }
                }
                Some(subledger_core::AccountFacts {
                    key: facts.key,
                    primary: facts.primary,
                    currency: facts.currency,
                    funding: facts.funding,
                    suspended: facts.suspended,
                    closed: facts.closed,
                    secrets: ids,
                    subaccounts: directory.subaccounts(id),
                })
            })
            .collect()
    }

    /// The state as snapshots from format 4 on store it (its index apart): a full form's
    /// state, or the state a lean form's parts describe, the same bytes.
    fn encode_state_without_commands<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        match &self.form {
            Form::Full(state) => subledger_core::StateWithoutCommands(state).encode(encoder),
            Form::Lean(directory) => {
                let facts = self.lean_account_facts(directory).ok_or(
                    bincode::error::EncodeError::Other(
                        "views: an account lacks its entry or secret",
                    ),
                )?;
                subledger_core::encode_state_without_commands(
                    encoder,
                    facts.into_iter(),
                    directory.commands().is_none(),
                    directory.last_seq(),
                    directory.last_at(),
                )
            }
        }
    }

    /// A primary's subaccounts, oldest first (none for a subaccount).
    pub fn subaccounts(&self, id: AccountId) -> &[AccountId] {
        match &self.form {
            Form::Full(state) => state.subaccounts(id),
            Form::Lean(directory) => directory.subaccounts(id),
        }
    }

    fn low_balance_of(&self, id: AccountId) -> Option<subledger_core::LowBalance> {
        match &self.form {
            Form::Full(state) => state.low_balance(id),
            Form::Lean(directory) => directory.low_balance(id),
        }
    }

    /// Every low-balance setting, by account id.
    fn low_balances(&self) -> Vec<(AccountId, subledger_core::LowBalance)> {
        match &self.form {
            Form::Full(state) => state.low_balances(),
            Form::Lean(directory) => directory.low_balances(),
        }
    }

    /// The family of an account: its primary's id (a primary's is its own; an unknown id's is
    /// itself).
    pub fn family_of(&self, id: AccountId) -> AccountId {
        self.form.family(id)
    }

    /// Applies a committed batch. An error means the batch contradicts the views (a corrupt
    /// log or a bug); the events before the failing one stay applied, so the caller must stop.
    pub fn apply_batch(&mut self, batch: &Batch) -> Result<(), ApplyError> {
        let mut seq = batch.first;
        for events in batch.events.chunks(WARM_EVENTS_MAX) {
            self.warm(events);
            for event in events {
                self.apply(seq, batch.at, event)?;
                seq = seq.next();
            }
        }
        Ok(())
    }

    /// Reads the per-account data that `events` will change — each account's state and
    /// history, and the end of its entries — without changing anything. Applying events one
    /// after another takes each account's cache misses one at a time, since every event waits
    /// for its own loads; these loads do not depend on each other, so the processor overlaps
    /// them, and the apply that follows finds the lines in cache. Profiles of the views' apply
    /// showed two misses per touched account taking most of its time. Call it on a few dozen
    /// events at a time ([`WARM_EVENTS_MAX`]): their lines must still be cached when applied.
    pub fn warm(&self, events: &[Event]) {
        let mut touched = 0_u64;
        for event in events {
            for (id, _, _) in accounts::touched(event).into_iter().flatten() {
                // Lean views' values are in the history's last entry, read next; their
                // directory gives the family the money lists file a transfer under.
                match &self.form {
                    Form::Full(state) => {
                        if let Some(account) = state.account(id) {
                            touched = touched.wrapping_add(u64::from(account.suspended()));
                        }
                    }
                    Form::Lean(directory) => {
                        if let Some(primary) =
                            directory.fixed(id).and_then(directory::Fixed::primary)
                        {
                            touched = touched.wrapping_add(u64::from(primary.0));
                        }
                    }
                }
                if let Some(last) = self
                    .accounts
                    .get(id.index())
                    .and_then(AccountHistory::stored_last)
                {
                    touched = touched.wrapping_add(last.seq.0);
                }
            }
        }
        // Keeps the loads: their values are otherwise unused.
        std::hint::black_box(touched);
    }

    /// Applies one committed event, or refuses it and changes nothing.
    pub fn apply(&mut self, seq: Sequence, at: Timestamp, event: &Event) -> Result<(), ApplyError> {
        if !self.money.has_room() && subledger_core::is_money_event(event) {
            return Err(ApplyError {
                seq,
                fault: subledger_core::ApplyFault::Full,
            });
        }
        self.apply_except_money_lists(seq, at, event)?;
        let form = &self.form;
        self.money.record(seq, at, event, |id| form.family(id));
        Ok(())
    }

    /// [`Views::apply`] without the families' money lists (transfers, charges, top-ups): for a
    /// replay that builds those on another thread with a [`MoneyListsBuilder`], from the same
    /// events, and adds them with [`Views::append_money_lists`] at the end.
    pub fn apply_except_money_lists(
        &mut self,
        seq: Sequence,
        at: Timestamp,
        event: &Event,
    ) -> Result<(), ApplyError> {
        match &mut self.form {
            Form::Full(state) => {
                state.apply(seq, at, event)?;
                // From here the event is known to be consistent with the state: ids exist.
                self.record_account_history(seq, at, event);
            }
            Form::Lean(directory) => {
                directory::apply(directory, &mut self.accounts, seq, at, event)?;
            }
        }
        self.record_names(seq, event);
        match event {
            Event::PrimaryOpened {
                account, secret, ..
            }
            | Event::SubaccountCreated {
                account, secret, ..
            } => {
                if let Some(history) = self.accounts.get_mut(account.index()) {
                    history.created(seq, at, secret.id);
                }
            }
            Event::SecretCreated { account, secret } => {
                if let Some(history) = self.accounts.get_mut(account.index()) {
                    history.add_secret(SecretView {
                        id: secret.id,
                        created_at: at,
                        hash: StoredHash::InLog(seq),
                    });
                }
            }
            Event::SecretRevoked { account, secret } => {
                if let Some(history) = self.accounts.get_mut(account.index()) {
                    history.remove_secret(*secret);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Appends the per-account entries an event applied to the full state calls for (lean
    /// views append theirs as they apply it: [`directory::apply`]).
    fn record_account_history(&mut self, seq: Sequence, at: Timestamp, event: &Event) {
        let Form::Full(state) = &self.form else {
            return;
        };
        let count = state.account_count();
        if self.accounts.len() < count {
            self.accounts.resize_with(count, AccountHistory::default);
        }
        for (id, kind, counterparty) in accounts::touched(event).into_iter().flatten() {
            let entry = accounts::entry_after(state, seq, at, id, kind, counterparty);
            if let (Some(entry), Some(history)) = (entry, self.accounts.get_mut(id.index())) {
                history.push(entry);
            }
        }
    }

    /// Appends the name an applied event gives an account.
    fn record_names(&mut self, seq: Sequence, event: &Event) {
        let named = match event {
            Event::PrimaryOpened { account, name, .. }
            | Event::SubaccountCreated { account, name, .. }
            | Event::SubaccountRenamed { account, name } => Some((*account, name)),
            _ => None,
        };
        if let Some((id, name)) = named {
            if let Some(history) = self.accounts.get_mut(id.index()) {
                history.push_name((seq, SmolStr::new(name)));
            }
        }
    }

    /// The account's current name ("" for an unknown id).
    fn current_name(&self, id: AccountId) -> &str {
        self.accounts
            .get(id.index())
            .and_then(|history| history.names().last())
            .map_or("", |(_, name)| name)
    }

    /// `false` for views decoded from an older snapshot without statement history.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// An account's state as of a past point (from its history: a binary search), or `None`
    /// if it did not exist yet.
    pub fn account_at(&self, key: &ApiKey, point: AsOf) -> Option<AccountSnapshot> {
        let id = self.account_id(key)?;
        self.snapshot_at(id, point)
    }

    fn snapshot_at(&self, id: AccountId, point: AsOf) -> Option<AccountSnapshot> {
        let history = self.accounts.get(id.index())?;
        let entry = history.last_at_or_before(point)?;
        let account = self.facts(id)?;
        let primary = match account.primary {
            Some(owner) => Some(self.key_of(owner)?),
            None => None,
        };
        Some(AccountSnapshot {
            key: account.key,
            primary,
            name: history.name_at(entry.seq).unwrap_or_default().to_string(),
            currency: account.currency,
            balance: entry.balance(),
            credit_limit: entry.credit_limit(),
            suspended: entry.suspended(),
            closed: entry.closed(),
            created_at: history.created_at(),
        })
    }

    /// A family as of a past point, with its totals then; `None` if the primary did not exist.
    pub fn family_at(&self, primary: &ApiKey, point: AsOf) -> Option<FamilySnapshot> {
        let id = self.account_id(primary)?;
        let owner = self.facts(id)?;
        if !owner.is_primary() {
            return None;
        }
        let primary = self.snapshot_at(id, point)?;
        let subaccounts: Vec<AccountSnapshot> = self
            .subaccounts(id)
            .iter()
            .filter_map(|sub| self.snapshot_at(*sub, point))
            .collect();
        Some(family_with_totals(primary, subaccounts))
    }

    /// An account's statement: each change to its balance or credit limit with the values after
    /// it, oldest first, within `[start, end)`, after the cursor.
    pub fn statement(
        &self,
        key: &ApiKey,
        query: &StatementQuery,
    ) -> Result<Page<StatementLine>, QueryError> {
        let id = self
            .account_id(key)
            .ok_or(QueryError::UnknownAccount(*key))?;
        if let (Some(start), Some(end)) = (query.start, query.end) {
            if start > end {
                return Err(QueryError::EmptyRange);
            }
        }
        let Some(entries) = self.accounts.get(id.index()).map(AccountHistory::entries) else {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        };
        let low = query
            .start
            .map_or(0, |start| entries.partition_point(|entry| entry.at < start));
        let high = query.end.map_or(entries.len(), |end| {
            entries.partition_point(|entry| entry.at < end)
        });
        let (low, high) = match (query.after, query.newest_first) {
            (Some(after), false) => (
                low.max(entries.partition_point(|entry| entry.seq <= after)),
                high,
            ),
            (Some(before), true) => (
                low,
                high.min(entries.partition_point(|entry| entry.seq < before)),
            ),
            (None, _) => (low, high),
        };
        let limit = query.limit.unwrap_or(PAGE_ITEMS_MAX).min(PAGE_ITEMS_MAX);
        let mut lines = Vec::new();
        let mut next = None;
        let indices = low..high.max(low);
        let indices: Box<dyn Iterator<Item = usize>> = if query.newest_first {
            Box::new(indices.rev())
        } else {
            Box::new(indices)
        };
        for index in indices {
            let Some(entry) = entries.get(index) else {
                break;
            };
            if !entry.kind().moves_money() {
                continue;
            }
            if lines.len() == limit {
                next = lines.last().map(|line: &StatementLine| line.seq);
                break;
            }
            let previous = index.checked_sub(1).and_then(|before| entries.get(before));
            lines.push(self.statement_line(id, &entry, previous.as_ref()));
        }
        Ok(Page { items: lines, next })
    }

    fn statement_line(
        &self,
        id: AccountId,
        entry: &Entry,
        previous: Option<&Entry>,
    ) -> StatementLine {
        let value = |amount: Option<Amount>| amount.unwrap_or(Amount::ZERO);
        let change = |after: Option<Amount>, before: Option<Amount>| {
            value(after)
                .checked_sub(value(before))
                .unwrap_or(Amount::ZERO)
        };
        let (before_balance, before_credit) = previous.map_or((None, None), |entry| {
            (entry.balance(), entry.credit_limit())
        });
        let (command, reference) = self.command_at(id, entry).unwrap_or((None, String::new()));
        StatementLine {
            seq: entry.seq,
            at: entry.at,
            kind: entry.kind(),
            balance_change: change(entry.balance(), before_balance),
            credit_limit_change: change(entry.credit_limit(), before_credit),
            balance_after: value(entry.balance()),
            credit_limit_after: value(entry.credit_limit()),
            counterparty: entry
                .counterparty()
                .and_then(|other| self.facts(other))
                .map(|other| other.key),
            command,
            reference,
        }
    }

    /// The money command behind an entry (from the family lists, by sequence number).
    fn command_at(&self, id: AccountId, entry: &Entry) -> Option<(Option<CommandId>, String)> {
        let family = self.family_of(id);
        let list: &[u32] = match entry.kind() {
            EntryKind::TransferIn | EntryKind::TransferOut => {
                &self.money.history.get(&family)?.balance
            }
            EntryKind::CreditIn | EntryKind::CreditOut => &self.money.history.get(&family)?.credit,
            EntryKind::Charge => &self.money.payments.get(&family)?.charges,
            EntryKind::TopUp => &self.money.payments.get(&family)?.top_ups,
            _ => return None,
        };
        let store = &self.money.store;
        let seq_at = |position: &u32| store.get(family, *position).map(|item| item.seq);
        let index = list.partition_point(|position| seq_at(position) < Some(entry.seq));
        let item = store.get(family, *list.get(index)?)?;
        (item.seq == entry.seq).then(|| (Some(item.id), item.reference.to_owned()))
    }

    /// A family's charges or top-ups, newest first, filtered and paged like transfers (the
    /// `subaccounts` filter matches the charged account or the payer).
    pub fn payments(
        &self,
        primary: &ApiKey,
        kind: PaymentKind,
        query: &TransferQuery,
    ) -> Result<Page<PaymentSnapshot>, QueryError> {
        let family = self.checked_family(primary, query)?;
        let entries = self
            .money
            .payments
            .get(&family)
            .map_or(&[][..], |payments| match kind {
                PaymentKind::Charges => &payments.charges,
                PaymentKind::TopUps => &payments.top_ups,
            });
        let page = self.page(family, entries, query);
        let items = page
            .items
            .iter()
            .filter_map(|entry| {
                Some(PaymentSnapshot {
                    id: entry.id,
                    seq: entry.seq,
                    at: entry.at,
                    account: self.key_of(entry.to)?,
                    payer: self.key_of(entry.from)?,
                    amount: entry.amount,
                    reference: entry.reference.to_owned(),
                    primary: self.key_of(family)?,
                })
            })
            .collect();
        Ok(Page {
            items,
            next: page.next,
        })
    }

    /// Adds lists built by a [`MoneyListsBuilder`] from the events applied since it was made
    /// (with [`Views::apply_except_money_lists`]) after the lists the views already hold. The
    /// views must hold the idempotency index the builder's positions refer to, brought up to
    /// date with the same events (snapshot form): its records are frozen and the lists point
    /// into them, shared, rather than holding copies (see [`subledger_core::SharedRecords`]).
    pub fn append_money_lists(&mut self, built: MoneyListsBuilder) -> Result<(), String> {
        let shared = self
            .full_mut("appending money lists")?
            .freeze_command_records()
            .ok_or("views: money lists to append without the index they refer to")?;
        self.money.append(built, &shared)
    }

    /// Drops the money lists' own copies of the records `shared` holds (the writer's
    /// idempotency index froze them: [`subledger_core::CommandIndex::freeze`]) and points the
    /// lists at the shared records. `false`, and nothing changes, if the views have not
    /// applied them all yet, or number their entries on their own (decoded from a snapshot
    /// format before 9: they then keep their copies until the next open).
    pub fn adopt_money_records(&mut self, shared: &subledger_core::SharedRecords) -> bool {
        let form = &self.form;
        self.money.store.adopt(shared, |id| form.family(id))
    }

    /// For views that hold the idempotency index themselves (the snapshot thread's replica):
    /// once the index has `min_records` records of its own, freezes them and lets the money
    /// lists share them ([`Views::adopt_money_records`]).
    pub fn share_money_records(&mut self, min_records: usize) {
        let due = self
            .command_index()
            .is_some_and(|index| index.unfrozen_len() >= min_records);
        if !due {
            return;
        }
        let shared = match &mut self.form {
            Form::Full(state) => state.freeze_command_records(),
            Form::Lean(directory) => directory.commands_mut().map(|index| index.freeze()),
        };
        if let Some(shared) = shared {
            self.adopt_money_records(&shared);
        }
    }

    /// The money lists' entries held as records shared with the idempotency index (what an
    /// open loaded), and those the views hold copies of (applied since, or decoded from a
    /// snapshot format before 9).
    pub fn money_entries_shared_and_copied(&self) -> (usize, usize) {
        (
            self.money.store.shared.len(),
            self.money.store.entries.len(),
        )
    }

    /// One account by key.
    pub fn account(&self, key: &ApiKey) -> Option<AccountSnapshot> {
        self.snapshot(self.account_id(key)?)
    }

    /// Which family an account belongs to: its primary's id (a primary's is its own).
    pub fn family_id(&self, key: &ApiKey) -> Option<AccountId> {
        Some(self.family_of(self.account_id(key)?))
    }

    fn snapshot(&self, id: AccountId) -> Option<AccountSnapshot> {
        let account = self.facts(id)?;
        let history = self.accounts.get(id.index())?;
        let (balance, credit_limit) = match account.funding() {
            Funding::Own {
                balance,
                credit_limit,
            } => (Some(balance), Some(credit_limit)),
            Funding::Shared => (None, None),
        };
        let primary = match account.primary {
            Some(owner) => Some(self.key_of(owner)?),
            None => None,
        };
        Some(AccountSnapshot {
            key: account.key,
            primary,
            name: self.current_name(id).to_string(),
            currency: account.currency,
            balance,
            credit_limit,
            suspended: account.suspended,
            closed: account.closed,
            created_at: history.created_at(),
        })
    }

    /// A primary with its subaccounts (oldest first) and the family totals, counting the
    /// primary and every subaccount with its own balance.
    pub fn family(&self, primary: &ApiKey) -> Option<FamilySnapshot> {
        let id = self.account_id(primary)?;
        let owner = self.facts(id)?;
        if !owner.is_primary() {
            return None;
        }
        let primary = self.snapshot(id)?;
        let subaccounts: Vec<AccountSnapshot> = self
            .subaccounts(id)
            .iter()
            .filter_map(|sub| self.snapshot(*sub))
            .collect();
        Some(family_with_totals(primary, subaccounts))
    }

    /// One page of primaries in creation order: those created after `after` (a primary's key
    /// from a previous page), at most `limit` (capped at [`PAGE_ITEMS_MAX`]), and the key to
    /// continue after when more may follow. An unknown `after` is an error.
    ///
    /// Scans accounts from the cursor on, so a page costs O(accounts between two primaries);
    /// families are small next to the account table, and this is an operator's query.
    pub fn primaries(
        &self,
        after: Option<&ApiKey>,
        limit: usize,
    ) -> Result<(Vec<FamilySummary>, Option<ApiKey>), QueryError> {
        let start = match after {
            Some(key) => {
                let id = self
                    .account_id(key)
                    .ok_or(QueryError::UnknownAccount(*key))?;
                id.index().saturating_add(1)
            }
            None => 0,
        };
        let limit = limit.clamp(1, PAGE_ITEMS_MAX);
        let mut families = Vec::new();
        let mut next = None;
        let ids = (start..self.account_count())
            .filter_map(|index| u32::try_from(index).ok().map(AccountId));
        for account in ids.filter_map(|id| self.facts(id)) {
            if !account.is_primary() {
                continue;
            }
            if families.len() == limit {
                next = families
                    .last()
                    .map(|family: &FamilySummary| family.primary.key);
                break;
            }
            if let Some(family) = self.family_summary(&account.key) {
                families.push(family);
            }
        }
        Ok((families, next))
    }

    /// A family in brief (see [`FamilySummary`]): what an operator's list needs, at the cost
    /// of reading the subaccounts' balances only — this runs under the views' read lock, which
    /// the views thread waits for before acknowledging anything.
    pub fn family_summary(&self, primary: &ApiKey) -> Option<FamilySummary> {
        let id = self.account_id(primary)?;
        let owner = self.facts(id)?;
        if !owner.is_primary() {
            return None;
        }
        let mut summary = FamilySummary {
            primary: self.snapshot(id)?,
            subaccounts: self.subaccounts(id).len(),
            total_balance: Total::ZERO,
            total_credit_limit: Total::ZERO,
            low_balance_alerts: 0,
        };
        for member in std::iter::once(&id).chain(self.subaccounts(id)) {
            let Some(account) = self.facts(*member) else {
                continue;
            };
            if let Funding::Own {
                balance,
                credit_limit,
            } = account.funding()
            {
                summary.total_balance = summary.total_balance.plus(balance);
                summary.total_credit_limit = summary.total_credit_limit.plus(credit_limit);
            }
            let below = self.low_balance_of(*member).is_some_and(|setting| {
                account
                    .available()
                    .is_some_and(|available| available < setting.threshold)
            });
            summary.low_balance_alerts += usize::from(below);
        }
        Some(summary)
    }

    /// An account's low-balance threshold and whether its available funds are below it now.
    pub fn low_balance(&self, key: &ApiKey) -> Option<(Amount, bool)> {
        let id = self.account_id(key)?;
        let setting = self.low_balance_of(id)?;
        let below = self
            .facts(id)
            .and_then(|account| account.available())
            .is_some_and(|available| available < setting.threshold);
        Some((setting.threshold, below))
    }

    /// The active secrets of an account (oldest first), with their hashes for verification.
    pub fn secrets(&self, key: &ApiKey) -> Option<Vec<SecretView>> {
        let id = self.account_id(key)?;
        Some(self.accounts.get(id.index())?.secrets())
    }

    /// A family's balance or credit transfers, newest first, filtered and paged.
    pub fn transfers(
        &self,
        primary: &ApiKey,
        kind: TransferKind,
        query: &TransferQuery,
    ) -> Result<Page<TransferSnapshot>, QueryError> {
        let family = self.checked_family(primary, query)?;
        let entries = self
            .money
            .history
            .get(&family)
            .map_or(&[][..], |history| match kind {
                TransferKind::Balance => &history.balance,
                TransferKind::Credit => &history.credit,
            });
        let page = self.page(family, entries, query);
        let items = page
            .items
            .iter()
            .filter_map(|entry| self.transfer_snapshot(family, *entry))
            .collect();
        Ok(Page {
            items,
            next: page.next,
        })
    }

    /// The family of a primary named in a report query, with the query's limits checked.
    fn checked_family(
        &self,
        primary: &ApiKey,
        query: &TransferQuery,
    ) -> Result<AccountId, QueryError> {
        let unknown = || QueryError::UnknownAccount(*primary);
        let family = self.account_id(primary).ok_or_else(unknown)?;
        if !self
            .facts(family)
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
        Ok(family)
    }

    /// One page of a family list, newest first: `[start, end)`, before the cursor, entries
    /// touching one of the filtered accounts.
    fn page(
        &self,
        family: AccountId,
        positions: &[u32],
        query: &TransferQuery,
    ) -> Page<EntryRef<'_>> {
        // Unknown or foreign subaccounts in the filter simply match nothing.
        let wanted: Vec<AccountId> = query
            .subaccounts
            .iter()
            .filter_map(|key| self.account_id(key))
            .collect();
        // Entries are in sequence order, and commit instants never decrease with the sequence,
        // so both bounds and the cursor are binary searches (each probe reads one entry).
        let store = &self.money.store;
        let entry = |position: &u32| store.get(family, *position);
        let low = query.start.map_or(0, |start| {
            positions.partition_point(|position| entry(position).is_some_and(|e| e.at < start))
        });
        let mut high = query.end.map_or(positions.len(), |end| {
            positions.partition_point(|position| entry(position).is_some_and(|e| e.at < end))
        });
        if let Some(before) = query.before {
            high = high.min(
                positions
                    .partition_point(|position| entry(position).is_some_and(|e| e.seq < before)),
            );
        }
        let limit = query.limit.unwrap_or(PAGE_ITEMS_MAX).min(PAGE_ITEMS_MAX);
        // A filter names accounts: without one, everything matches; with one, only entries
        // touching a named account (none, if no named account is in this ledger).
        let filtered = !query.subaccounts.is_empty();
        let mut matching = positions[low..high.max(low)]
            .iter()
            .rev()
            .filter_map(entry)
            .filter(|entry| {
                !filtered || wanted.contains(&entry.from) || wanted.contains(&entry.to)
            });
        let items: Vec<EntryRef<'_>> = matching.by_ref().take(limit).collect();
        let next = match (items.last(), matching.next()) {
            (Some(last), Some(_)) => Some(last.seq),
            _ => None,
        };
        Page { items, next }
    }

    fn transfer_snapshot(
        &self,
        family: AccountId,
        entry: EntryRef<'_>,
    ) -> Option<TransferSnapshot> {
        Some(TransferSnapshot {
            id: entry.id,
            seq: entry.seq,
            at: entry.at,
            from: self.key_of(entry.from)?,
            to: self.key_of(entry.to)?,
            amount: entry.amount,
            reference: entry.reference.to_owned(),
            primary: self.key_of(family)?,
        })
    }

    /// A deterministic hash of the projections, for checking that a rebuild equals a replay.
    pub fn views_hash(&self) -> [u8; 32] {
        let mut hasher = subledger_core::digest::StreamHasher::new();
        hasher.update(&self.core_hash());
        self.hash_histories(&mut hasher);
        *hasher.finalize().as_bytes()
    }

    /// The hash of the parts a version-1 snapshot holds (state, details, transfer histories):
    /// what a legacy snapshot can be compared on.
    pub fn core_hash(&self) -> [u8; 32] {
        let mut hasher = subledger_core::digest::StreamHasher::new();
        hasher.update(&self.state_hash());
        for (index, history) in self.accounts.iter().enumerate() {
            let name = self.current_name(AccountId(u32::try_from(index).unwrap_or(u32::MAX)));
            hasher.update(&(name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            hasher.update(&history.created_at().0.to_le_bytes());
            // Not where the hash is kept: a replay keeps it in the log, a snapshot of format
            // 1–4 in the views, and both are the same secret (the log is what holds it).
            for secret in history.secrets_iter() {
                hasher.update(&secret.id.to_uuid().into_bytes());
                hasher.update(&secret.created_at.0.to_le_bytes());
            }
        }
        let mut families: Vec<_> = self.money.history.iter().collect();
        families.sort_unstable_by_key(|(id, _)| **id);
        for (id, history) in families {
            hasher.update(&id.0.to_le_bytes());
            let lists = [&history.balance, &history.credit];
            for entry in lists
                .into_iter()
                .flat_map(|list| self.money.entries(*id, list))
            {
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

    fn hash_histories(&self, hasher: &mut subledger_core::digest::StreamHasher) {
        for (id, history) in self.accounts.iter().enumerate() {
            hasher.update(&(id as u64).to_le_bytes());
            for entry in history.entries().iter() {
                hasher.update(&entry.seq.0.to_le_bytes());
                hasher.update(&entry.at.0.to_le_bytes());
                hasher.update(entry.kind().as_str().as_bytes());
                for amount in [entry.balance(), entry.credit_limit()] {
                    hasher.update(&amount.map_or(i128::MIN, Amount::units).to_le_bytes());
                }
                hasher.update(&[u8::from(entry.suspended()), u8::from(entry.closed())]);
                hasher.update(
                    &entry
                        .counterparty()
                        .map_or(u64::MAX, |other| u64::from(other.0))
                        .to_le_bytes(),
                );
            }
            for (from, name) in history.names().iter() {
                hasher.update(&from.0.to_le_bytes());
                hasher.update(&(name.len() as u64).to_le_bytes());
                hasher.update(name.as_bytes());
            }
        }
        let mut families: Vec<_> = self.money.payments.iter().collect();
        families.sort_unstable_by_key(|(id, _)| **id);
        for (id, payments) in families {
            hasher.update(&id.0.to_le_bytes());
            let lists = [&payments.charges, &payments.top_ups];
            for entry in lists
                .into_iter()
                .flat_map(|list| self.money.entries(*id, list))
            {
                hasher.update(&entry.seq.0.to_le_bytes());
                hasher.update(&entry.id.to_uuid().into_bytes());
                hasher.update(&entry.from.0.to_le_bytes());
                hasher.update(&entry.to.0.to_le_bytes());
                hasher.update(&entry.amount.units().to_le_bytes());
                hasher.update(&(entry.reference.len() as u64).to_le_bytes());
                hasher.update(entry.reference.as_bytes());
            }
        }
    }
}

/// A family with its totals over own balances (shared subaccounts count as 0).
fn family_with_totals(
    primary: AccountSnapshot,
    subaccounts: Vec<AccountSnapshot>,
) -> FamilySnapshot {
    let members = std::iter::once(&primary).chain(subaccounts.iter());
    let (total_balance, total_credit_limit) =
        members.fold((Total::ZERO, Total::ZERO), |(balance, credit), member| {
            (
                balance.plus(member.balance.unwrap_or(Amount::ZERO)),
                credit.plus(member.credit_limit.unwrap_or(Amount::ZERO)),
            )
        });
    FamilySnapshot {
        primary,
        subaccounts,
        total_balance,
        total_credit_limit,
    }
}

impl Encode for Views {
    /// The version-3 snapshot layout: the version-1 parts (state, details, transfer
    /// histories), then the low-balance settings, the per-account histories and the payments.
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.encode_with(self.encodable_state()?, encoder)
    }
}

impl Views {
    /// The state snapshots hold: only views that keep it are encoded (the snapshot thread's
    /// replica, tools), never the live read views.
    fn encodable_state(&self) -> Result<&State, bincode::error::EncodeError> {
        self.state().ok_or(bincode::error::EncodeError::Other(
            "live read views keep no state to encode",
        ))
    }

    fn encode_with<E: bincode::enc::Encoder>(
        &self,
        state: &impl Encode,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.encode_head(state, encoder)?;
        self.encode_histories(encoder)
    }

    /// The state, details, transfer lists and low-balance settings (see [`ViewsHead`]).
    fn encode_head<E: bincode::enc::Encoder>(
        &self,
        state: &impl Encode,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.encode_head_as(state, encoder, false)
    }

    /// The head; with `fixed_width`, its transfer lists as snapshot format 7 stores them.
    fn encode_head_as<E: bincode::enc::Encoder>(
        &self,
        state: &impl Encode,
        encoder: &mut E,
        fixed_width: bool,
    ) -> Result<(), bincode::error::EncodeError> {
        state.encode(encoder)?;
        self.encode_details(encoder)?;
        (self.money.history.len() as u64).encode(encoder)?;
        for (primary, history) in &self.money.history {
            primary.encode(encoder)?;
            let history = HistoryEntries {
                balance: self.entry_list(*primary, &history.balance),
                credit: self.entry_list(*primary, &history.credit),
            };
            if fixed_width {
                history.encode_v7(encoder)?;
            } else {
                history.encode(encoder)?;
            }
        }
        self.low_balances().encode(encoder)
    }

    /// The head in format 9: as format 7's, with the shapes of the money lists in place of
    /// the transfer lists.
    fn encode_head_v9<E: bincode::enc::Encoder>(
        &self,
        shapes: &MoneyListShapes,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.encode_state_without_commands(encoder)?;
        self.encode_details(encoder)?;
        shapes.encode(encoder)?;
        self.low_balances().encode(encoder)
    }

    /// A list's entries as snapshots before format 9 store them (written by tests and tools
    /// only: the engine writes format 9).
    fn entry_list(&self, family: AccountId, list: &[u32]) -> Vec<TransferEntry> {
        self.money
            .entries(family, list)
            .map(EntryRef::to_entry)
            .collect()
    }

    fn encode_details<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        (self.accounts.len() as u64).encode(encoder)?;
        for history in &self.accounts {
            history
                .names()
                .last()
                .map_or("", |(_, name)| name)
                .encode(encoder)?;
            history.created_at().encode(encoder)?;
            history.encode_secrets(encoder)?;
        }
        Ok(())
    }

    /// Every account's history, then the families' payments (see [`ViewsHistories`]).
    fn encode_histories<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.accounts.encode(encoder)?;
        self.encode_payments(encoder, false)
    }

    fn encode_payments<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
        fixed_width: bool,
    ) -> Result<(), bincode::error::EncodeError> {
        (self.money.payments.len() as u64).encode(encoder)?;
        for (primary, payments) in &self.money.payments {
            primary.encode(encoder)?;
            let payments = PaymentEntries {
                charges: self.entry_list(*primary, &payments.charges),
                top_ups: self.entry_list(*primary, &payments.top_ups),
            };
            if fixed_width {
                payments.encode_v7(encoder)?;
            } else {
                payments.encode(encoder)?;
            }
        }
        Ok(())
    }
}

/// Views decoded from the version-1 layout (state, details, transfer histories), as written
/// by snapshot formats 1 and 2: without per-account histories or payments, so marked
/// incomplete.
#[derive(Debug)]
pub struct LegacyViews(pub Views);

impl<Context> Decode<Context> for LegacyViews {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let mut views = decode_version_1(decoder)?;
        // No histories will be attached: names from sequence number 0, secrets as listed.
        for history in &mut views.accounts {
            history.settle_head_only();
        }
        Ok(LegacyViews(views))
    }
}
bincode::impl_borrow_decode!(LegacyViews);

/// Whether every account of `state` has a history whose last entry holds its current values
/// (funding, suspended, closed) and which lists its secrets: what lean views read in place of
/// the state.
fn histories_agree(state: &State, histories: &[AccountHistory]) -> bool {
    histories_agree_with(state, histories, histories)
}

/// [`histories_agree`] with the secrets in `heads` (a snapshot's head, before its histories
/// are attached: [`Views::attach_histories`]).
fn histories_agree_with(
    state: &State,
    histories: &[AccountHistory],
    heads: &[AccountHistory],
) -> bool {
    histories.len() == state.account_count()
        && heads.len() == state.account_count()
        && state.accounts().all(|(id, account)| {
            let values = directory::Values {
                funding: account.funding(),
                suspended: account.suspended(),
                closed: account.closed(),
            };
            directory::current(histories, id) == Some(values)
                && heads.get(id.index()).is_some_and(|history| {
                    history
                        .secret_ids()
                        .eq(state.secret_ids(id).iter().copied())
                })
        })
}

fn family_in(state: &State, id: AccountId) -> AccountId {
    state
        .account(id)
        .and_then(|account| account.primary())
        .unwrap_or(id)
}

fn family_of_in(state: &State, id: AccountId) -> Option<AccountId> {
    let account = state.account(id)?;
    Some(account.primary().unwrap_or(id))
}

/// Entries in sequence order, time never going back, within the family, not in the future.
fn consistent(state: &State, family: AccountId, list: &[TransferEntry]) -> bool {
    list.windows(2)
        .all(|pair| pair[0].seq < pair[1].seq && pair[0].at <= pair[1].at)
        && list.iter().all(|entry| {
            family_of_in(state, entry.from) == Some(family)
                && family_of_in(state, entry.to) == Some(family)
                && entry.seq <= state.last_seq()
        })
}

/// The version-1 parts, validated: one details entry per account, histories only for
/// primaries and only between accounts of their family, in sequence order.
fn decode_version_1<Context, D: bincode::de::Decoder<Context = Context>>(
    decoder: &mut D,
) -> Result<Views, bincode::error::DecodeError> {
    decode_head_parts(decoder, ListsForm::FieldByField).map(|(views, _)| views)
}

/// How a head holds the families' transfer lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListsForm {
    /// Formats 1–6: entry by entry, field by field.
    FieldByField,
    /// Formats 7 and 8: entries at a fixed width.
    FixedWidth,
    /// Format 9: only their shapes ([`MoneyListShapes`]), for all four lists.
    Shapes,
}

/// The version-1 layout, with the transfer lists in `form`; the shapes for format 9.
fn decode_head_parts<Context, D: bincode::de::Decoder<Context = Context>>(
    decoder: &mut D,
    form: ListsForm,
) -> Result<(Views, Option<MoneyListShapes>), bincode::error::DecodeError> {
    let invalid = |detail: &'static str| bincode::error::DecodeError::Other(detail);
    let state = State::decode(decoder)?;
    let named = Vec::<NamedDetails>::decode(decoder)?;
    if named.len() != state.account_count() {
        return Err(invalid("views: one details entry per account"));
    }
    let (families, shapes) = if form == ListsForm::Shapes {
        (0, Some(MoneyListShapes::decode(decoder)?))
    } else {
        (u64::decode(decoder)?, None)
    };
    let fixed_width = form == ListsForm::FixedWidth;
    let mut money = MoneyLists::default();
    for _ in 0..families {
        let primary = AccountId::decode(decoder)?;
        let entries = if fixed_width {
            HistoryEntries::decode_v7(decoder)?
        } else {
            HistoryEntries::decode(decoder)?
        };
        if family_of_in(&state, primary) != Some(primary)
            || !consistent(&state, primary, &entries.balance)
            || !consistent(&state, primary, &entries.credit)
        {
            return Err(invalid("views: a transfer history does not fit its family"));
        }
        if money.history.contains_key(&primary) {
            return Err(invalid("views: duplicate family history"));
        }
        let HistoryEntries { balance, credit } = entries;
        money
            .push_entries(primary, 0, balance)
            .and_then(|()| money.push_entries(primary, 1, credit))
            .ok_or(invalid("views: more transfers than positions"))?;
    }
    // Formats 1 and 2 have no per-account histories: these hold the current names only (from
    // sequence number 0: such views answer no point-in-time query). A version-3 decode
    // replaces them, after checking that the names agree.
    let accounts = named.into_iter().map(|NamedDetails(head)| head).collect();
    let views = Views {
        form: Form::Full(state),
        accounts,
        money,
        complete: false,
    };
    Ok((views, shapes))
}

impl<Context> Decode<Context> for Views {
    /// Decodes the version-3 layout and validates it (see [`Encode`]): the head, then the
    /// histories.
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let ViewsHead(mut views) = ViewsHead::decode(decoder)?;
        let histories = ViewsHistories::decode(decoder)?;
        if !histories.in_order(views.last_seq()) {
            return Err(bincode::error::DecodeError::Other(
                "views: an account history is out of order",
            ));
        }
        views
            .attach_histories(histories)
            .map_err(bincode::error::DecodeError::Other)?;
        Ok(views)
    }
}
bincode::impl_borrow_decode!(Views);

/// The first part of the version-3 layout: the state, details, transfer lists and low-balance
/// settings, read into views that still lack their per-account histories and payments
/// ([`Views::attach_histories`]). Snapshot format 6 keeps it in a section of its own, decoded
/// beside the histories; it is only read now ([`ViewsHeadV7`] is written).
#[derive(Debug)]
pub struct ViewsHead<V>(pub V);

impl<Context> Decode<Context> for ViewsHead<Views> {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let mut views = decode_version_1(decoder)?;
        let settings = Vec::<(AccountId, subledger_core::LowBalance)>::decode(decoder)?;
        views
            .restore_low_balances(settings)
            .map_err(bincode::error::DecodeError::OtherString)?;
        Ok(ViewsHead(views))
    }
}
bincode::impl_borrow_decode!(ViewsHead<Views>);

/// [`ViewsHead`] in the layout of snapshot format 7: the families' transfer lists at a fixed
/// width per entry (56 bytes and the reference) instead of field by field.
#[derive(Debug)]
pub struct ViewsHeadV7<V>(pub V);

impl Encode for ViewsHeadV7<&Views> {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.0.encode_head_as(
            &subledger_core::StateWithoutCommands(self.0.encodable_state()?),
            encoder,
            true,
        )
    }
}

impl<Context> Decode<Context> for ViewsHeadV7<Views> {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let (mut views, _) = decode_head_parts(decoder, ListsForm::FixedWidth)?;
        let settings = Vec::<(AccountId, subledger_core::LowBalance)>::decode(decoder)?;
        views
            .restore_low_balances(settings)
            .map_err(bincode::error::DecodeError::OtherString)?;
        Ok(ViewsHeadV7(views))
    }
}
bincode::impl_borrow_decode!(ViewsHeadV7<Views>);

/// The head in snapshot format 9: format 7's, with the shapes of the families' money lists
/// (all four kinds) in place of the transfer lists; the lists are rebuilt from the idempotency
/// index's records ([`Views::rebuild_money_lists`]). Decoded views have no money lists yet.
#[derive(Debug)]
pub struct ViewsHeadV9 {
    pub views: Views,
    pub shapes: MoneyListShapes,
}

/// [`ViewsHeadV9`] of live views and the shapes [`Views::money_list_shapes`] found, for
/// encoding.
#[derive(Debug, Clone, Copy)]
pub struct ViewsHeadV9Of<'a>(pub &'a Views, pub &'a MoneyListShapes);

impl Encode for ViewsHeadV9Of<'_> {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.0.encode_head_v9(self.1, encoder)
    }
}

impl<Context> Decode<Context> for ViewsHeadV9 {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let (mut views, shapes) = decode_head_parts(decoder, ListsForm::Shapes)?;
        let settings = Vec::<(AccountId, subledger_core::LowBalance)>::decode(decoder)?;
        views
            .restore_low_balances(settings)
            .map_err(bincode::error::DecodeError::OtherString)?;
        let shapes = shapes.unwrap_or_default();
        Ok(ViewsHeadV9 { views, shapes })
    }
}
bincode::impl_borrow_decode!(ViewsHeadV9);

/// The second part of the version-3 layout: every account's history, then the families'
/// payments. Decoded on their own, checked against the head by [`Views::attach_histories`].
#[derive(Debug)]
pub struct ViewsHistories {
    accounts: Vec<AccountHistory>,
    payments: Vec<(AccountId, PaymentEntries)>,
    /// What the fixed-width decoding found as it read the entries: whether every account's
    /// were in order, and the last sequence number of any (`None`: not checked yet).
    order: Option<(bool, Sequence)>,
}

impl ViewsHistories {
    /// Of `views`, for encoding in format 7's layout ([`ViewsHistoriesV7`]).
    pub fn of_v7(views: &Views) -> ViewsHistoriesV7Of<'_> {
        ViewsHistoriesV7Of(views, true)
    }

    /// Of `views`, for encoding in format 9's layout: format 7's without the payments, which
    /// format 9 rebuilds from the index ([`ViewsHeadV9`]).
    pub fn of_v9(views: &Views) -> ViewsHistoriesV7Of<'_> {
        ViewsHistoriesV7Of(views, false)
    }

    /// Whether any family's payments came with the histories (none may in format 9).
    pub fn has_payments(&self) -> bool {
        !self.payments.is_empty()
    }

    /// Every account's entries in sequence order, time never going back, none after `last`.
    pub fn in_order(&self, last: Sequence) -> bool {
        if let Some((ordered, latest)) = self.order {
            return ordered && latest <= last;
        }
        self.accounts.iter().all(|history| {
            let entries = history.entries();
            entries.in_order() && entries.last().is_none_or(|entry| entry.seq <= last)
        })
    }
}

impl<Context> Decode<Context> for ViewsHistories {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let accounts = Vec::<AccountHistory>::decode(decoder)?;
        let payments = Vec::<(AccountId, PaymentEntries)>::decode(decoder)?;
        Ok(ViewsHistories {
            accounts,
            payments,
            order: None,
        })
    }
}
bincode::impl_borrow_decode!(ViewsHistories);

/// History entries decoded in place at once at most (160 KiB: well within the 1 MiB buffer a
/// snapshot section is read through, so the run is there after one refill at most).
const HISTORY_RUN_ENTRIES_MAX: usize = 4_096;

/// [`ViewsHistories`] in the layout of snapshot format 7: each account's entries at a fixed
/// width ([`accounts::ENTRY_RAW_BYTES`] each, [`Entry::to_raw`]) instead of field by field,
/// everything else as in format 6. Read with varints, the entries were most of the longest
/// section of a 10M-transfer snapshot (~65 ns each, twenty million of them).
#[derive(Debug)]
pub struct ViewsHistoriesV7(pub ViewsHistories);

impl<Context> Decode<Context> for ViewsHistoriesV7 {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        use bincode::de::read::Reader;
        let length = |decoder: &mut D| {
            usize::try_from(u64::decode(decoder)?)
                .map_err(|_| bincode::error::DecodeError::Other("views: a length beyond memory"))
        };
        let count = length(decoder)?;
        decoder.claim_container_read::<AccountHistory>(count)?;
        let mut accounts = Vec::with_capacity(count);
        // The order check of `ViewsHistories::in_order`, made here while each entry is at
        // hand: a second pass over the entries was ~4 % of an open's histories thread.
        let mut ordered = true;
        let mut latest = Sequence::ZERO;
        for _ in 0..count {
            let len = length(decoder)?;
            // Claimed against the decoding limit before anything is allocated for them.
            decoder.claim_container_read::<Entry>(len)?;
            let mut raw = [0u8; accounts::ENTRY_RAW_BYTES];
            let refused =
                || bincode::error::DecodeError::Other("views: bytes no history entry writes");
            // An opening entry that may be implied is held aside (see `AccountHistory`), so
            // that the others need not move when it is: most accounts have one or two.
            let mut opening = None;
            if len > 0 {
                decoder.reader().read(&mut raw)?;
                let first = Entry::from_raw(&raw).ok_or_else(refused)?;
                if AccountHistory::may_imply(&first) {
                    opening = Some(first);
                }
            }
            let remaining = len - usize::from(opening.is_some());
            let history = if remaining == 1 {
                // One entry beside the opening (half of a million accounts): held inline, with
                // no list made for it and dropped.
                if opening.is_some() {
                    decoder.reader().read(&mut raw)?;
                }
                let only = Entry::from_raw(&raw).ok_or_else(refused)?;
                AccountHistory::from_decoded_one(opening, only, Names::decode(decoder)?)
            } else {
                let mut entries = Vec::with_capacity(remaining);
                if len > 0 && opening.is_none() {
                    entries.push(Entry::from_raw(&raw).ok_or_else(refused)?);
                }
                while entries.len() + usize::from(opening.is_some()) < len {
                    // Read in place from the reader's buffer, a run of entries at a time
                    // (copying each out first was a tenth of this section's decoding); one by
                    // one where the buffer cannot hold a run.
                    let run = (len - entries.len() - usize::from(opening.is_some()))
                        .min(HISTORY_RUN_ENTRIES_MAX);
                    let bytes = run * accounts::ENTRY_RAW_BYTES;
                    if let Some(slice) = decoder.reader().peek_read(bytes) {
                        for chunk in slice.chunks_exact(accounts::ENTRY_RAW_BYTES) {
                            let raw: &[u8; accounts::ENTRY_RAW_BYTES] =
                                chunk.try_into().map_err(|_| refused())?;
                            entries.push(Entry::from_raw(raw).ok_or_else(refused)?);
                        }
                        decoder.reader().consume(bytes);
                    } else {
                        decoder.reader().read(&mut raw)?;
                        entries.push(Entry::from_raw(&raw).ok_or_else(refused)?);
                    }
                }
                AccountHistory::from_decoded(opening, entries, Names::decode(decoder)?)
            };
            let entries = history.entries();
            ordered &= entries.in_order();
            if let Some(last) = entries.last() {
                latest = latest.max(last.seq);
            }
            accounts.push(history);
        }
        let families = length(decoder)?;
        decoder.claim_container_read::<(AccountId, PaymentEntries)>(families)?;
        let mut payments = Vec::with_capacity(families);
        for _ in 0..families {
            payments.push((
                AccountId::decode(decoder)?,
                PaymentEntries::decode_v7(decoder)?,
            ));
        }
        Ok(ViewsHistoriesV7(ViewsHistories {
            accounts,
            payments,
            order: Some((ordered, latest)),
        }))
    }
}
bincode::impl_borrow_decode!(ViewsHistoriesV7);

/// [`ViewsHistoriesV7`] of live views, for encoding.
#[derive(Debug, Clone, Copy)]
pub struct ViewsHistoriesV7Of<'a>(&'a Views, bool);

impl Encode for ViewsHistoriesV7Of<'_> {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        use bincode::enc::write::Writer;
        let views = self.0;
        (views.accounts.len() as u64).encode(encoder)?;
        for history in &views.accounts {
            let entries = history.entries();
            (entries.len() as u64).encode(encoder)?;
            for entry in entries.iter() {
                encoder.writer().write(&entry.to_raw())?;
            }
            history.names().encode(encoder)?;
        }
        if self.1 {
            views.encode_payments(encoder, true)
        } else {
            0_u64.encode(encoder)
        }
    }
}

impl Views {
    /// Completes views decoded from a [`ViewsHead`] with their histories, checked against the
    /// head: one history per account under the same name, payments only within their family
    /// and in order, one list per family. (The entries' order is checked by
    /// [`ViewsHistories::in_order`], which needs no head and can run beside its decoding.)
    pub fn attach_histories(&mut self, histories: ViewsHistories) -> Result<(), &'static str> {
        let ViewsHistories {
            accounts, payments, ..
        } = histories;
        if accounts.len() != self.account_count() {
            return Err("views: one history per account");
        }
        let named_alike = accounts
            .iter()
            .zip(&self.accounts)
            .all(|(history, legacy)| {
                history.names().last().map(|(_, name)| name)
                    == legacy.names().last().map(|(_, name)| name)
            });
        if !named_alike {
            return Err("views: an account's name differs from its history's");
        }
        let state = self
            .state()
            .ok_or("views: histories attach to decoded views, which keep their state")?;
        let last = state.last_seq();
        let mut families = rustc_hash::FxHashSet::default();
        let mut count = self.money.store.len();
        for (primary, payments) in &payments {
            let primary = *primary;
            let charges_fit = payments
                .charges
                .windows(2)
                .all(|pair| pair[0].seq < pair[1].seq)
                && payments.charges.iter().all(|entry| {
                    family_of_in(state, entry.to) == Some(primary) && entry.seq <= last
                });
            if family_of_in(state, primary) != Some(primary)
                || !charges_fit
                || !consistent(state, primary, &payments.top_ups)
            {
                return Err("views: payments do not fit their family");
            }
            if !families.insert(primary) {
                return Err("views: duplicate family payments");
            }
            count += payments.charges.len() + payments.top_ups.len();
        }
        // Checked before anything changes: every entry below gets a position.
        if u32::try_from(count).is_err() {
            return Err("views: more payments than positions");
        }
        // Live read views take accounts' values from the last entries and the secrets from the
        // histories (ADR 0008; here still the head's), so these must be the state's, not only
        // well formed.
        if !histories_agree_with(state, &accounts, &self.accounts) {
            return Err("views: an account's last history entry or secrets differ from its state");
        }
        let mut money = std::mem::take(&mut self.money);
        money.payments.clear();
        for (primary, PaymentEntries { charges, top_ups }) in payments {
            // Room was checked above.
            let _ = money
                .push_entries(primary, 2, charges)
                .and_then(|()| money.push_entries(primary, 3, top_ups));
        }
        // The head holds each account's creation instant and secrets.
        let mut accounts = accounts;
        for (history, head) in accounts.iter_mut().zip(std::mem::take(&mut self.accounts)) {
            history.adopt_head(head);
        }
        self.accounts = accounts;
        self.money = money;
        self.complete = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lean views read values and secrets from the histories, so decoded histories must agree
    /// with the state on both: a last entry with another balance or flag, a missing entry, or
    /// another secret are caught.
    #[test]
    fn histories_that_do_not_carry_the_state_are_caught() {
        let mut views = Views::new();
        let secret = subledger_core::SecretRecord {
            id: SecretId::from_bytes([3; 16]),
            hash: SecretHash::new("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into()).unwrap(),
        };
        let events = [
            Event::PrimaryOpened {
                account: AccountId(0),
                key: "agree001".parse().unwrap(),
                name: "p".into(),
                currency: Currency::EUR,
                credit_limit: Amount::ZERO,
                secret,
            },
            Event::ToppedUp {
                command: CommandId::from_bytes([1; 16]),
                account: AccountId(0),
                amount: Amount::from_units(500).unwrap(),
                reference: String::new(),
            },
        ];
        for (seq, event) in (1..).zip(&events) {
            views.apply(Sequence(seq), Timestamp(9), event).unwrap();
        }
        let state = views.state().unwrap();
        assert!(histories_agree(state, &views.accounts));
        let tampered = |change: &dyn Fn(&mut Vec<AccountHistory>)| {
            let mut histories = views.accounts.clone();
            change(&mut histories);
            histories_agree(state, &histories)
        };
        assert!(!tampered(&|histories| {
            histories[0].with_stored(Vec::pop);
        }));
        assert!(!tampered(&|histories| histories[0].with_stored(Vec::clear)));
        // The first stored entry with another balance, or suspended.
        let first_changed = |histories: &mut Vec<AccountHistory>, balance, suspended| {
            histories[0].with_stored(|stored| {
                let last = stored[0];
                stored[0] = Entry::new(
                    last.seq,
                    last.at,
                    last.kind(),
                    balance,
                    last.credit_limit(),
                    suspended,
                    false,
                    None,
                );
            });
        };
        assert!(!tampered(&|histories| {
            first_changed(histories, Some(Amount::from_units(501).unwrap()), false);
        }));
        assert!(!tampered(&|histories| {
            let balance = histories[0].with_stored(|stored| stored[0].balance());
            first_changed(histories, balance, true);
        }));
        assert!(!tampered(&|histories| {
            histories[0].set_secrets(vec![SecretView {
                id: SecretId::from_bytes([4; 16]),
                created_at: Timestamp(9),
                hash: StoredHash::InLog(Sequence(1)),
            }]);
        }));
        assert!(!tampered(&|histories| {
            histories.push(AccountHistory::default());
        }));
        // Views that agree go lean; views that do not keep their state.
        assert!(views.clone().into_lean().is_lean());
        let mut disagreeing = views.clone();
        disagreeing.accounts[0].with_stored(Vec::pop);
        assert!(!disagreeing.into_lean().is_lean());
    }

    #[test]
    fn per_account_structures_stay_small() {
        assert_eq!(std::mem::size_of::<SecretView>(), 40);
        assert_eq!(std::mem::size_of::<TransferEntry>(), 64);
        assert_eq!(
            std::mem::size_of::<Option<Named>>(),
            32,
            "a name of up to 23 bytes inline"
        );
        assert_eq!(
            std::mem::size_of::<directory::Fixed>(),
            12,
            "a key and a primary (the primaries' currencies apart)"
        );
        assert_eq!(std::mem::size_of::<Entry>(), 40);
        assert_eq!(
            std::mem::size_of::<AccountHistory>(),
            96,
            "entries (one inline: 40), the first name (32), and in 24 bytes the secrets (the \
             creation secret by id), renames, whether the opening entry is implied and the \
             creation instant"
        );
    }

    /// A list of transfer entries in snapshot format 7's layout.
    #[derive(Debug, PartialEq)]
    struct ListV7(Vec<TransferEntry>);

    impl Encode for ListV7 {
        fn encode<E: bincode::enc::Encoder>(
            &self,
            encoder: &mut E,
        ) -> Result<(), bincode::error::EncodeError> {
            encode_list_v7(&self.0, encoder)
        }
    }

    impl<Context> Decode<Context> for ListV7 {
        fn decode<D: bincode::de::Decoder<Context = Context>>(
            decoder: &mut D,
        ) -> Result<Self, bincode::error::DecodeError> {
            decode_list_v7(decoder).map(ListV7)
        }
    }

    proptest::proptest! {
        /// Format 7's fixed-width transfer entries read back exactly, references included; a
        /// damaged byte is refused or reads as what it encodes.
        #[test]
        fn fixed_width_transfer_entries_read_back(
            entries in proptest::collection::vec((
                proptest::prelude::any::<[u8; 16]>(),
                proptest::prelude::any::<u64>(),
                proptest::prelude::any::<i64>(),
                proptest::prelude::any::<(u32, u32)>(),
                -100_000_000_000_000_000_000_i128..=100_000_000_000_000_000_000,
                "(|[a-z]{1,5})",
            ), 0..6),
            flip in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let list = ListV7(entries.iter().map(|(id, seq, at, (from, to), units, reference)| TransferEntry {
                id: CommandId::from_bytes(*id),
                seq: Sequence(*seq),
                at: Timestamp(*at),
                from: AccountId(*from),
                to: AccountId(*to),
                amount: Amount::from_units(*units).unwrap_or(Amount::ZERO),
                reference: Reference::new(reference),
            }).collect());
            let config = bincode::config::standard().with_limit::<{ 1 << 20 }>();
            let bytes = bincode::encode_to_vec(&list, config).unwrap_or_default();
            let decoded = bincode::decode_from_slice::<ListV7, _>(&bytes, config).map(|(list, _)| list);
            proptest::prop_assert_eq!(decoded.ok(), Some(ListV7(list.0.clone())));
            let mut damaged = bytes.clone();
            let at = flip.index(damaged.len());
            damaged[at] ^= 0x5A;
            if let Ok((read, used)) = bincode::decode_from_slice::<ListV7, _>(&damaged, config) {
                proptest::prop_assert_eq!(bincode::encode_to_vec(&read, config).unwrap_or_default(), &damaged[..used]);
            }
        }

        /// Transfer entries decode the same through the fast path (a slice with bytes to spare)
        /// and through bincode's own decoding (an I/O reader), damaged or not.
        #[test]
        fn transfer_entries_decode_the_same_both_ways(
            id in proptest::prelude::any::<[u8; 16]>(),
            seq in proptest::prelude::any::<u64>(),
            at in proptest::prelude::any::<i64>(),
            from in proptest::prelude::any::<u32>(),
            to in proptest::prelude::any::<u32>(),
            units in -100_000_000_000_000_000_000_i128..=100_000_000_000_000_000_000,
            reference in "(|[a-z]{1,5})",
            damage in proptest::option::of((0..62usize, proptest::prelude::any::<u8>())),
        ) {
            let entry = TransferEntry {
                id: CommandId::from_bytes(id),
                seq: Sequence(seq),
                at: Timestamp(at),
                from: AccountId(from),
                to: AccountId(to),
                amount: Amount::from_units(units).unwrap_or(Amount::ZERO),
                reference: Reference::new(&reference),
            };
            // Limited, as every real decoding is: damage can turn the reference's length into
            // an exabyte claim, which an unlimited bincode tries to allocate (an abort).
            let config = bincode::config::standard().with_limit::<{ 1 << 20 }>();
            let mut bytes = bincode::encode_to_vec(&entry, config).unwrap_or_default();
            // The fast encoding writes what the fields one by one write.
            let fields = (id, seq, at, from, to, entry.amount, reference.clone());
            proptest::prop_assert_eq!(&bytes, &bincode::encode_to_vec(fields, config).unwrap_or_default());
            bytes.extend([0u8; TRANSFER_ENTRY_ENCODED_BYTES_MAX]);
            if let Some((at, byte)) = damage {
                if let Some(slot) = bytes.get_mut(at) {
                    *slot = byte;
                }
            }
            let fast = bincode::decode_from_slice::<TransferEntry, _>(&bytes, config)
                .ok()
                .map(|(entry, _)| entry);
            let ordinary =
                bincode::decode_from_std_read::<TransferEntry, _, _>(&mut &bytes[..], config).ok();
            proptest::prop_assert_eq!(&fast, &ordinary);
            if damage.is_none() {
                proptest::prop_assert_eq!(fast, Some(entry));
            }
        }
    }

    #[test]
    fn names_answer_the_name_in_force_and_encode_as_a_list() {
        let mut names = Names::default();
        assert_eq!(names.as_ref().at(Sequence(5)), None);
        // Short names are held inline, longer ones (past 23 bytes) on the heap: both read back.
        let long = "a name of more than twenty-three bytes, é included";
        let edge = "exactly twenty-three by";
        for (seq, name) in [(3, "a"), (7, long), (9, edge), (11, "c")] {
            names.push((Sequence(seq), SmolStr::new(name)));
        }
        let expected = [
            (2, None),
            (3, Some("a")),
            (6, Some("a")),
            (7, Some(long)),
            (8, Some(long)),
            (9, Some(edge)),
            (10, Some(edge)),
            (11, Some("c")),
            (100, Some("c")),
        ];
        for (seq, name) in expected {
            assert_eq!(names.as_ref().at(Sequence(seq)), name, "at {seq}");
        }
        assert_eq!(names.as_ref().len(), 4);
        assert_eq!(names.as_ref().last().map(|(_, name)| &**name), Some("c"));
        let list: Vec<(Sequence, String)> = names
            .as_ref()
            .iter()
            .map(|(from, name)| (*from, name.to_string()))
            .collect();
        let config = bincode::config::standard();
        let as_list = bincode::encode_to_vec(&list, config).unwrap_or_default();
        assert_eq!(
            bincode::encode_to_vec(&names, config).ok(),
            Some(as_list.clone())
        );
        let decoded: Option<(Names, usize)> = bincode::decode_from_slice(&as_list, config).ok();
        assert_eq!(decoded, Some((names, as_list.len())));
    }
}
