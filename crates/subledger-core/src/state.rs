//! The write-side state and `apply`: folding one committed event into it. `apply` is total:
//! it checks the event against the structure and the SPEC §4 invariants *before* changing
//! anything, so a hostile or corrupt log is refused with a typed error instead of a panic or a
//! half-applied event. The state holds only what deciding needs (no names, no secret hashes,
//! no history); the read views hold the rest.

use bincode::{Decode, Encode};
use rustc_hash::FxHashMap;

use crate::command::Command;
use crate::commands::CommandIndex;
use crate::event::{Batch, Event, SecretRecord};
use crate::ids::{AccountId, ApiKey, CommandId, Currency, SecretId, Sequence, Timestamp};
use crate::keys::KeyIndex;
use crate::money::Amount;

/// Most active secrets an account may have.
pub const SECRETS_PER_ACCOUNT_MAX: usize = 2;
/// Default for [`Policy::subaccounts_per_primary_max`].
pub const SUBACCOUNTS_PER_PRIMARY_MAX_DEFAULT: u32 = 1_000;
/// Commands whose accounts [`State::warm`] reads ahead of deciding them: enough to overlap
/// many cache misses, few enough that their lines are still cached when decided.
pub const WARM_COMMANDS_MAX: usize = 32;

/// Configuration the rules consult when deciding. Not part of the state hash: it limits what
/// new commands may do, never how recorded events apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Most open subaccounts one primary may have (closed ones do not count).
    pub subaccounts_per_primary_max: u32,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            subaccounts_per_primary_max: SUBACCOUNTS_PER_PRIMARY_MAX_DEFAULT,
        }
    }
}

/// A low-balance threshold and whether it is armed (an alert fires when available funds fall
/// below the threshold while armed; it re-arms when they are back at or above it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct LowBalance {
    pub threshold: Amount,
    pub armed: bool,
}

impl LowBalance {
    /// Settings held by account, in account id order (how snapshots store them and state
    /// hashes cover them).
    pub fn by_account(settings: &FxHashMap<AccountId, LowBalance>) -> Vec<(AccountId, LowBalance)> {
        let mut sorted: Vec<_> = settings
            .iter()
            .map(|(id, setting)| (*id, *setting))
            .collect();
        sorted.sort_unstable_by_key(|(id, _)| *id);
        sorted
    }
}

/// Where an account's money lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum Funding {
    /// Its own balance and credit limit (`credit_limit ≤ 0 ≤ balance - credit_limit`).
    Own {
        balance: Amount,
        credit_limit: Amount,
    },
    /// A subaccount spending its primary's balance.
    Shared,
}

impl Funding {
    /// `balance - credit_limit`: the most the account can spend; `None` when shared.
    pub fn available(self) -> Option<Amount> {
        match self {
            // Both are bounded by 10²⁰ minor units, so the difference fits; the fallback is
            // unreachable but keeps this panic-free.
            Funding::Own {
                balance,
                credit_limit,
            } => Some(balance.checked_sub(credit_limit).unwrap_or(Amount::MAX)),
            Funding::Shared => None,
        }
    }
}

/// An account's active secret ids, at most [`SECRETS_PER_ACCOUNT_MAX`], oldest first: a value
/// read from a state ([`State::secret_ids`]), which keeps the first in the account and a
/// rotation's second apart. Reads as a slice; encodes exactly as a `Vec<SecretId>` did.
#[derive(Clone, Copy)]
pub struct SecretIds {
    ids: [SecretId; SECRETS_PER_ACCOUNT_MAX],
    len: u8,
}

/// What fills the unused slots of [`SecretIds`] and an `Account`'s first secret while it has
/// none (never read as an id; compared, so that equal accounts compare equal).
const NO_SECRET: SecretId = SecretId::from_bytes([0; 16]);

impl SecretIds {
    pub fn one(id: SecretId) -> SecretIds {
        SecretIds {
            ids: [id, NO_SECRET],
            len: 1,
        }
    }

    /// No id (only after every id was revoked, which the rules never do).
    pub fn none() -> SecretIds {
        SecretIds {
            ids: [NO_SECRET; SECRETS_PER_ACCOUNT_MAX],
            len: 0,
        }
    }

    /// Adds `id`; `false` (and nothing changes) when full.
    pub fn push(&mut self, id: SecretId) -> bool {
        match self.ids.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = id;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Keeps the ids for which `keep` holds, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&SecretId) -> bool) {
        let mut kept = SecretIds::none();
        for id in self.iter().filter(|id| keep(id)) {
            kept.push(*id);
        }
        *self = kept;
    }
}

/// Equal when the active ids are.
impl PartialEq for SecretIds {
    fn eq(&self, other: &SecretIds) -> bool {
        self[..] == other[..]
    }
}

impl Eq for SecretIds {}

impl std::ops::Deref for SecretIds {
    type Target = [SecretId];

    fn deref(&self) -> &[SecretId] {
        self.ids.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl std::fmt::Debug for SecretIds {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_list().entries(self.iter()).finish()
    }
}

impl Encode for SecretIds {
    /// As the slice it reads as, which is how a `Vec` encodes.
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self[..].encode(encoder)
    }
}

impl<Context> Decode<Context> for SecretIds {
    /// Refuses more than [`SECRETS_PER_ACCOUNT_MAX`] (and, as the structure check does, none).
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let count = u64::decode(decoder)?;
        if count == 0 || count > SECRETS_PER_ACCOUNT_MAX as u64 {
            return Err(bincode::error::DecodeError::Other(
                "an account has no secret or too many",
            ));
        }
        let mut ids = SecretIds::one(SecretId::decode(decoder)?);
        for _ in 1..count {
            ids.push(SecretId::decode(decoder)?);
        }
        Ok(ids)
    }
}
bincode::impl_borrow_decode!(SecretIds);

/// One account as the rules need it: 56 bytes, one per account in the writer's state. Its
/// facts encode as its fields did when they were plain (key, primary, currency, funding,
/// suspended, closed, secrets: [`AccountFacts`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub key: ApiKey,
    /// The owning primary's id, or [`NO_PRIMARY`] for a primary (an `Option<AccountId>` takes
    /// 8 bytes): read with [`Account::primary`].
    primary: u32,
    pub currency: Currency,
    /// The funding and the suspended and closed flags: read with [`Account::funding`],
    /// [`Account::suspended`] and [`Account::closed`].
    pub(crate) funding: PackedFunding,
    /// The oldest active secret's id (unused while `secret_count` is 0).
    first_secret: SecretId,
    /// Active secrets: 1 or 2 (0 only after every one was revoked, which the rules never
    /// do). A second's id is kept by the state ([`State::secret_ids`]): rotations are rare,
    /// and a second slot or a pointer to one took 8–16 more bytes in every account.
    secret_count: u8,
    // A primary's subaccounts are kept beside the accounts ([`State::subaccounts`]): about 1 %
    // of accounts are primaries, and a pointer in each account was 8 bytes in every one.
}

/// [`Funding`] in 24 bytes instead of 40 (two 16-byte amounts and the variant's tag, padded):
/// both amounts at [`Amount::BITS`] bits in `low` and the bottom of `high`, then a flag for
/// [`Funding::Shared`] (whose bits are otherwise zero, so equal funding packs equally). Every
/// account holds one, in the writer's state (and in views that keep a whole state: the snapshot
/// thread's replica): 16 MB less per copy at a million accounts. Encodes as the [`Funding`] it
/// packs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackedFunding {
    low: [u64; 2],
    high: u64,
}

/// Bits of the credit limit in `low`; the rest are the bottom of `high`.
const CREDIT_LOW_BITS: u32 = 128 - Amount::BITS;
/// Where [`PackedFunding`]'s flag for shared funding is: just above the credit limit's bits.
const SHARED_SHIFT: u32 = Amount::BITS - CREDIT_LOW_BITS;
/// The account's suspended and closed flags, above the funding's bits.
const SUSPENDED_BIT: u64 = 1 << (SHARED_SHIFT + 1);
const CLOSED_BIT: u64 = 1 << (SHARED_SHIFT + 2);
/// The funding's bits in `high`: the credit limit's top and the shared flag.
const FUNDING_HIGH_MASK: u64 = (1 << (SHARED_SHIFT + 1)) - 1;

/// [`Account`]'s primary for a primary. Account ids are dense from 0, and `State` never
/// assigns this one.
pub const NO_PRIMARY: u32 = u32::MAX;

impl PackedFunding {
    #[inline]
    #[allow(clippy::cast_possible_truncation)] // bit packing: each cast keeps the bits meant
    pub(crate) fn new(funding: Funding) -> PackedFunding {
        match funding {
            Funding::Own {
                balance,
                credit_limit,
            } => {
                let credit = credit_limit.to_bits();
                let low = balance.to_bits() | (credit << Amount::BITS);
                PackedFunding {
                    low: [low as u64, (low >> 64) as u64],
                    high: (credit >> CREDIT_LOW_BITS) as u64,
                }
            }
            Funding::Shared => PackedFunding {
                low: [0, 0],
                high: 1 << SHARED_SHIFT,
            },
        }
    }

    #[inline]
    fn get(self) -> Funding {
        let high = self.high & FUNDING_HIGH_MASK;
        if high >> SHARED_SHIFT != 0 {
            return Funding::Shared;
        }
        let low = u128::from(self.low[0]) | (u128::from(self.low[1]) << 64);
        let credit = (low >> Amount::BITS) | (u128::from(high) << CREDIT_LOW_BITS);
        // Only ever packed from amounts, so neither falls back.
        Funding::Own {
            balance: Amount::from_bits(low).unwrap_or(Amount::ZERO),
            credit_limit: Amount::from_bits(credit).unwrap_or(Amount::ZERO),
        }
    }
}

impl PackedFunding {
    /// The same funding with `flag` (one of the account's flag bits) set or cleared.
    #[inline]
    fn with_flag(self, flag: u64, set: bool) -> PackedFunding {
        PackedFunding {
            high: if set {
                self.high | flag
            } else {
                self.high & !flag
            },
            ..self
        }
    }

    #[inline]
    fn flag(self, flag: u64) -> bool {
        self.high & flag != 0
    }

    /// `funding` with this one's flags.
    #[inline]
    fn replaced(self, funding: Funding) -> PackedFunding {
        let flags = self.high & !FUNDING_HIGH_MASK;
        let mut packed = PackedFunding::new(funding);
        packed.high |= flags;
        packed
    }
}

impl std::fmt::Debug for PackedFunding {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PackedFunding")
            .field("funding", &self.get())
            .field("suspended", &self.flag(SUSPENDED_BIT))
            .field("closed", &self.flag(CLOSED_BIT))
            .finish()
    }
}

impl Encode for PackedFunding {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.get().encode(encoder)
    }
}

impl std::fmt::Debug for Account {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Account")
            .field("key", &self.key)
            .field("primary", &self.primary())
            .field("currency", &self.currency)
            .field("funding", &self.funding())
            .field("suspended", &self.suspended())
            .field("closed", &self.closed())
            .field("first_secret", &self.first_secret)
            .field("secret_count", &self.secret_count)
            .finish()
    }
}

/// An account as [`AccountFacts::encode_fields`] writes it, with its secret ids (the state
/// keeps a second apart from the account).
fn decode_account<D: bincode::de::Decoder>(
    decoder: &mut D,
) -> Result<(Account, SecretIds), bincode::error::DecodeError> {
    let key = ApiKey::decode(decoder)?;
    let primary = Option::<AccountId>::decode(decoder)?;
    if primary.is_some_and(|id| id.0 == NO_PRIMARY) {
        return Err(bincode::error::DecodeError::Other(
            "an account's primary id is out of range",
        ));
    }
    let currency = Currency::decode(decoder)?;
    let funding = Funding::decode(decoder)?;
    let suspended = bool::decode(decoder)?;
    let closed = bool::decode(decoder)?;
    let secrets = SecretIds::decode(decoder)?;
    let mut account = Account::new(key, primary, currency, funding, NO_SECRET);
    account.set_secrets(&secrets);
    account.set_suspended(suspended);
    account.set_closed(closed);
    Ok((account, secrets))
}

impl<Context> Decode<Context> for PackedFunding {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        // Decoded amounts are within the bound, so they fit.
        Ok(PackedFunding::new(Funding::decode(decoder)?))
    }
}
bincode::impl_borrow_decode!(PackedFunding);

impl Account {
    /// A new account: open, not suspended. `primary` must not be [`NO_PRIMARY`]'s id.
    pub(crate) fn new(
        key: ApiKey,
        primary: Option<AccountId>,
        currency: Currency,
        funding: Funding,
        secret: SecretId,
    ) -> Account {
        debug_assert!(primary.is_none_or(|id| id.0 != NO_PRIMARY));
        Account {
            key,
            primary: primary.map_or(NO_PRIMARY, |id| id.0),
            currency,
            funding: PackedFunding::new(funding),
            first_secret: secret,
            secret_count: 1,
        }
    }

    /// Takes the first of `secrets` and their count; the state keeps a second.
    fn set_secrets(&mut self, secrets: &SecretIds) {
        self.first_secret = secrets.first().copied().unwrap_or(NO_SECRET);
        self.secret_count = secrets.len;
    }

    /// The owning primary; `None` for a primary.
    #[inline]
    pub fn primary(&self) -> Option<AccountId> {
        (self.primary != NO_PRIMARY).then_some(AccountId(self.primary))
    }

    pub fn is_primary(&self) -> bool {
        self.primary == NO_PRIMARY
    }

    /// Where the account's money lives.
    #[inline]
    pub fn funding(&self) -> Funding {
        self.funding.get()
    }

    #[inline]
    pub fn set_funding(&mut self, funding: Funding) {
        self.funding = self.funding.replaced(funding);
    }

    #[inline]
    pub fn suspended(&self) -> bool {
        self.funding.flag(SUSPENDED_BIT)
    }

    #[inline]
    pub fn closed(&self) -> bool {
        self.funding.flag(CLOSED_BIT)
    }

    pub(crate) fn set_suspended(&mut self, suspended: bool) {
        self.funding = self.funding.with_flag(SUSPENDED_BIT, suspended);
    }

    pub(crate) fn set_closed(&mut self, closed: bool) {
        self.funding = self.funding.with_flag(CLOSED_BIT, closed);
    }

    /// `balance - credit_limit`: the most the account can spend; `None` when shared.
    pub fn available(&self) -> Option<Amount> {
        self.funding().available()
    }

    /// `|credit_limit| - max(0, -balance)`: credit granted but not drawn; `None` when shared.
    pub fn unused_credit(&self) -> Option<Amount> {
        match self.funding() {
            Funding::Own {
                balance,
                credit_limit,
            } => {
                let drawn = if balance.is_negative() {
                    balance.negate()
                } else {
                    Amount::ZERO
                };
                Some(
                    credit_limit
                        .magnitude()
                        .checked_sub(drawn)
                        .unwrap_or(Amount::ZERO),
                )
            }
            Funding::Shared => None,
        }
    }
}

/// What the ledger remembers of an applied money command, so a retry with the same id gets the
/// original result and a retry with other content is told apart.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct CommandRecord {
    pub content: CommandContent,
    pub seq: Sequence,
    pub at: Timestamp,
}

/// The exact content of a money command (accounts resolved to ids), compared on retries.
/// Exact rather than hashed: no collision can turn a conflict into a false duplicate.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct CommandContent {
    pub kind: MoneyKind,
    pub source: AccountId,
    pub target: AccountId,
    pub amount: Amount,
    pub reference: Box<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum MoneyKind {
    BalanceTransfer,
    CreditTransfer,
    Charge,
    TopUp,
}

impl MoneyKind {
    /// The variant's index, as bincode encodes it (declaration order).
    pub(crate) fn index(self) -> u32 {
        u32::from(self.index_byte())
    }

    pub(crate) fn index_byte(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_index_byte(index: u8) -> Option<MoneyKind> {
        [
            MoneyKind::BalanceTransfer,
            MoneyKind::CreditTransfer,
            MoneyKind::Charge,
            MoneyKind::TopUp,
        ]
        .get(usize::from(index))
        .copied()
    }
}

/// Why an event cannot be applied: the log is corrupt or was not written by `decide`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {seq} cannot be applied: {fault}")]
pub struct ApplyError {
    pub seq: Sequence,
    pub fault: ApplyFault,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyFault {
    #[error("sequence out of order (expected {expected})")]
    OutOfOrder { expected: Sequence },
    #[error("timestamp goes backwards")]
    TimeGoesBackwards,
    #[error("unknown account {0:?}")]
    UnknownAccount(AccountId),
    #[error("account id {0:?} is not the next one")]
    UnexpectedAccountId(AccountId),
    #[error("api key {0} already exists")]
    DuplicateKey(ApiKey),
    #[error("account {0:?} is not of the kind the event needs")]
    WrongAccountKind(AccountId),
    #[error("account {0:?} is closed")]
    Closed(AccountId),
    #[error("the accounts are not a primary and its own subaccount")]
    NotPaired,
    #[error("account {0:?} has no own balance")]
    Shared(AccountId),
    #[error(
        "invariant broken for account {0:?}: balance ≥ credit_limit, credit_limit ≤ 0 and bounds"
    )]
    Invariant(AccountId),
    #[error("command id {0} already applied")]
    DuplicateCommand(CommandId),
    #[error("secret rule broken for account {0:?}")]
    Secrets(AccountId),
    #[error("non-positive amount")]
    NotPositive,
    /// An event of a kind the applier does not know (a newer build's log).
    #[error("an event of an unknown kind")]
    UnknownEvent,
    /// More money commands than a `u32` position can address (4 billion): the read views
    /// keep each at one.
    #[error("too many money commands to keep")]
    Full,
}

/// The whole write-side state.
#[derive(Debug, Clone, Default)]
pub struct State {
    policy: Policy,
    accounts: Vec<Account>,
    by_key: KeyIndex,
    commands: CommandIndex,
    /// Read-side copies skip the idempotency index: only the writer decides, so only it needs
    /// to recognise retries, and the index is the largest part of the state.
    without_command_index: bool,
    /// Low-balance thresholds (few accounts have one). Kept outside `Account` so the version-1
    /// snapshot layout of accounts stays as it was; snapshots carry it in an extension.
    low_balance: FxHashMap<AccountId, LowBalance>,
    /// Each primary's subaccounts, oldest first; only primaries with subaccounts have an entry.
    subaccounts: FxHashMap<AccountId, Vec<AccountId>>,
    /// The second active secret of the accounts that have two (during a rotation).
    second_secrets: FxHashMap<AccountId, SecretId>,
    last_seq: Sequence,
    last_at: Timestamp,
}

impl PartialEq for State {
    /// Equal when the recorded facts are equal; the policy is configuration, not state.
    fn eq(&self, other: &State) -> bool {
        self.accounts == other.accounts
            && self.subaccounts == other.subaccounts
            && self.second_secrets == other.second_secrets
            && self.commands == other.commands
            && self.low_balance == other.low_balance
            && self.last_seq == other.last_seq
            && self.last_at == other.last_at
    }
}

impl State {
    pub fn new(policy: Policy) -> State {
        State {
            policy,
            ..State::default()
        }
    }

    /// A state that applies events exactly like [`State::new`] but keeps no idempotency index
    /// (for read-side projections, which never decide).
    pub fn without_command_index(policy: Policy) -> State {
        State {
            policy,
            without_command_index: true,
            ..State::default()
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// The sequence number of the last applied event (0 before any).
    pub fn last_seq(&self) -> Sequence {
        self.last_seq
    }

    /// The instant of the last applied event.
    pub fn last_at(&self) -> Timestamp {
        self.last_at
    }

    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.accounts.get(id.index())
    }

    /// Reads what deciding the money commands among `commands` will look at — each named
    /// account (and its primary) and the command id's place in the idempotency index — and
    /// changes nothing. Deciding commands one after another takes their cache misses one at a
    /// time; these loads do not depend on each other, so the processor overlaps them and the
    /// decisions that follow find the lines in cache. Meant for a few dozen commands at a time
    /// ([`WARM_COMMANDS_MAX`]), so that the lines are still cached when they are decided.
    pub fn warm<'a>(&self, commands: impl IntoIterator<Item = &'a Command>) {
        let touch = |key: &ApiKey| {
            let account = self.account_by_key(key).map(|(_, account)| account);
            let owner = account
                .and_then(|account| account.primary())
                .and_then(|primary| self.account(primary));
            account
                .into_iter()
                .chain(owner)
                .map(|account| u64::from(account.suspended()))
                .sum::<u64>()
        };
        let mut touched = 0_u64;
        for command in commands {
            let accounts = match command {
                Command::TransferBalance(transfer) | Command::TransferCredit(transfer) => {
                    touch(&transfer.from).wrapping_add(touch(&transfer.to))
                }
                Command::Charge(charge) => touch(&charge.account),
                Command::TopUp(top_up) => touch(&top_up.primary),
                _ => continue,
            };
            touched = touched.wrapping_add(accounts);
            if let Some(id) = command.command_id() {
                touched = touched.wrapping_add(u64::from(self.commands.contains(&id)));
            }
        }
        // Keeps the loads: their values are otherwise unused.
        std::hint::black_box(touched);
    }

    /// The key index (account ids by key, the keys read from the accounts): a holder of the
    /// same accounts' keys in the same order can use a copy of it.
    pub fn key_index(&self) -> &KeyIndex {
        &self.by_key
    }

    pub fn account_id(&self, key: &ApiKey) -> Option<AccountId> {
        self.by_key.get(key, key_in(&self.accounts))
    }

    pub fn account_by_key(&self, key: &ApiKey) -> Option<(AccountId, &Account)> {
        let id = self.account_id(key)?;
        Some((id, self.account(id)?))
    }

    pub fn accounts(&self) -> impl ExactSizeIterator<Item = (AccountId, &Account)> + '_ {
        self.accounts
            .iter()
            .enumerate()
            .map(|(index, account)| (AccountId(u32::try_from(index).unwrap_or(u32::MAX)), account))
    }

    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// The id the next created account gets.
    pub fn next_account_id(&self) -> Option<AccountId> {
        // `NO_PRIMARY` marks a primary in `Account`, so it is never an account's id.
        u32::try_from(self.accounts.len())
            .ok()
            .filter(|id| *id != NO_PRIMARY)
            .map(AccountId)
    }

    pub fn command(&self, id: &CommandId) -> Option<CommandRecord> {
        self.commands.get(id)
    }

    pub fn command_count(&self) -> usize {
        self.commands.len()
    }

    /// Makes room for `additional` more money commands in the idempotency index, so a known
    /// volume does not pay for the index growing step by step.
    pub fn reserve_commands(&mut self, additional: usize) {
        if !self.without_command_index {
            self.commands.reserve(additional);
        }
    }

    /// Applies every event of a committed batch, stopping at the first that cannot apply.
    pub fn apply_batch(&mut self, batch: &Batch) -> Result<(), ApplyError> {
        for (seq, event) in batch.iter() {
            self.apply(seq, batch.at, event)?;
        }
        Ok(())
    }

    /// Folds one committed event into the state, or refuses it and changes nothing.
    pub fn apply(&mut self, seq: Sequence, at: Timestamp, event: &Event) -> Result<(), ApplyError> {
        let fail = |fault| ApplyError { seq, fault };
        let expected = self.last_seq.next();
        if seq != expected {
            return Err(fail(ApplyFault::OutOfOrder { expected }));
        }
        if at < self.last_at {
            return Err(fail(ApplyFault::TimeGoesBackwards));
        }
        self.apply_checked(seq, at, event).map_err(fail)?;
        if !matches!(
            event,
            Event::LowBalanceAlert { .. } | Event::LowBalanceThresholdSet { .. }
        ) {
            self.rearm(event.accounts());
        }
        self.last_seq = seq;
        self.last_at = at;
        Ok(())
    }

    fn apply_checked(
        &mut self,
        seq: Sequence,
        at: Timestamp,
        event: &Event,
    ) -> Result<(), ApplyFault> {
        match event {
            Event::PrimaryOpened {
                account,
                key,
                currency,
                credit_limit,
                secret,
                ..
            } => {
                let funding = Funding::Own {
                    balance: Amount::ZERO,
                    credit_limit: *credit_limit,
                };
                check_funding(*account, funding)?;
                self.insert_account(*account, *key, None, *currency, funding, secret)
            }
            Event::SubaccountCreated {
                account,
                primary,
                key,
                use_primary_account_balance,
                secret,
                ..
            } => {
                let owner = self.open_account(*primary)?;
                if !owner.is_primary() {
                    return Err(ApplyFault::WrongAccountKind(*primary));
                }
                let currency = owner.currency;
                let funding = if *use_primary_account_balance {
                    Funding::Shared
                } else {
                    Funding::Own {
                        balance: Amount::ZERO,
                        credit_limit: Amount::ZERO,
                    }
                };
                self.insert_account(*account, *key, Some(*primary), currency, funding, secret)?;
                self.subaccounts.entry(*primary).or_default().push(*account);
                Ok(())
            }
            Event::SubaccountRenamed { account, .. } => {
                self.open_subaccount(*account)?;
                Ok(())
            }
            Event::AccountSuspended { account } => {
                self.open_account(*account)?;
                self.account_mut(*account)?.set_suspended(true);
                Ok(())
            }
            Event::AccountReactivated { account } => {
                self.open_account(*account)?;
                self.account_mut(*account)?.set_suspended(false);
                Ok(())
            }
            Event::SubaccountSwitchedToOwnBalance { account } => {
                if self.open_subaccount(*account)?.funding() != Funding::Shared {
                    return Err(ApplyFault::WrongAccountKind(*account));
                }
                self.account_mut(*account)?.set_funding(Funding::Own {
                    balance: Amount::ZERO,
                    credit_limit: Amount::ZERO,
                });
                Ok(())
            }
            Event::SubaccountClosed { account } => {
                let subaccount = self.open_subaccount(*account)?;
                let settled = match subaccount.funding() {
                    Funding::Own {
                        balance,
                        credit_limit,
                    } => balance.is_zero() && credit_limit.is_zero(),
                    Funding::Shared => true,
                };
                if !settled {
                    return Err(ApplyFault::Invariant(*account));
                }
                self.account_mut(*account)?.set_closed(true);
                Ok(())
            }
            Event::BalanceTransferred {
                source,
                target,
                amount,
                ..
            } => {
                self.check_pair(*source, *target)?;
                let (source_funding, target_funding) =
                    self.moved(*source, *target, *amount, MoneyKind::BalanceTransfer)?;
                self.record_money(seq, at, event)?;
                self.set_funding(*source, source_funding)?;
                self.set_funding(*target, target_funding)
            }
            Event::CreditTransferred {
                source,
                target,
                amount,
                ..
            } => {
                self.check_pair(*source, *target)?;
                let (source_funding, target_funding) =
                    self.moved(*source, *target, *amount, MoneyKind::CreditTransfer)?;
                self.record_money(seq, at, event)?;
                self.set_funding(*source, source_funding)?;
                self.set_funding(*target, target_funding)
            }
            Event::Charged {
                account,
                payer,
                amount,
                ..
            } => {
                let charged = self.open_account(*account)?;
                let expected_payer = match charged.funding() {
                    Funding::Shared => charged
                        .primary()
                        .ok_or(ApplyFault::WrongAccountKind(*account))?,
                    Funding::Own { .. } => *account,
                };
                if *payer != expected_payer {
                    return Err(ApplyFault::WrongAccountKind(*payer));
                }
                let funding = self.shifted_balance(*payer, amount.negate(), *amount)?;
                self.record_money(seq, at, event)?;
                self.set_funding(*payer, funding)
            }
            Event::ToppedUp {
                account, amount, ..
            } => {
                if !self.open_account(*account)?.is_primary() {
                    return Err(ApplyFault::WrongAccountKind(*account));
                }
                let funding = self.shifted_balance(*account, *amount, *amount)?;
                self.record_money(seq, at, event)?;
                self.set_funding(*account, funding)
            }
            Event::CreditLineSet {
                account,
                credit_line,
                credit_limit,
            } => {
                let primary = self.open_account(*account)?;
                if !primary.is_primary() {
                    return Err(ApplyFault::WrongAccountKind(*account));
                }
                let Funding::Own { balance, .. } = primary.funding() else {
                    return Err(ApplyFault::Shared(*account));
                };
                // The recorded limit must be the line minus what is lent (credit conservation).
                let lent = self.lent_credit(*account);
                if credit_line.checked_add(lent) != Some(*credit_limit) {
                    return Err(ApplyFault::Invariant(*account));
                }
                let funding = Funding::Own {
                    balance,
                    credit_limit: *credit_limit,
                };
                check_funding(*account, funding)?;
                self.set_funding(*account, funding)
            }
            Event::SecretCreated { account, secret } => {
                self.open_account(*account)?;
                let mut secrets = self.secret_ids(*account);
                if secrets.contains(&secret.id) || !secrets.push(secret.id) {
                    return Err(ApplyFault::Secrets(*account));
                }
                self.set_secret_ids(*account, &secrets)
            }
            Event::SecretRevoked { account, secret } => {
                self.open_account(*account)?;
                let mut secrets = self.secret_ids(*account);
                if secrets.len() <= 1 || !secrets.contains(secret) {
                    return Err(ApplyFault::Secrets(*account));
                }
                secrets.retain(|id| id != secret);
                self.set_secret_ids(*account, &secrets)
            }
            Event::LowBalanceThresholdSet { account, threshold } => {
                self.own(*account)?;
                match threshold {
                    Some(threshold) if !threshold.is_negative() => {
                        self.low_balance.insert(
                            *account,
                            LowBalance {
                                threshold: *threshold,
                                armed: true,
                            },
                        );
                    }
                    Some(_) => return Err(ApplyFault::NotPositive),
                    None => {
                        self.low_balance.remove(account);
                    }
                }
                Ok(())
            }
            Event::LowBalanceAlert {
                account,
                available,
                threshold,
            } => {
                let current = self.account(*account).and_then(Account::available);
                match self.low_balance.get_mut(account) {
                    Some(setting)
                        if setting.armed
                            && setting.threshold == *threshold
                            && current == Some(*available)
                            && *available < *threshold =>
                    {
                        setting.armed = false;
                        Ok(())
                    }
                    _ => Err(ApplyFault::Invariant(*account)),
                }
            }
        }
    }

    /// Re-arms the thresholds of `accounts` whose available funds are back at or above them.
    fn rearm(&mut self, accounts: [Option<AccountId>; 2]) {
        if self.low_balance.is_empty() {
            return;
        }
        for id in accounts.into_iter().flatten() {
            let available = self.account(id).and_then(Account::available);
            if let (Some(setting), Some(available)) = (self.low_balance.get_mut(&id), available) {
                if !setting.armed && available >= setting.threshold {
                    setting.armed = true;
                }
            }
        }
    }

    /// The alerts that the current state calls for among `accounts`: armed thresholds with
    /// available funds below them. Part of the state machine (pure, deterministic); the events
    /// are recorded, so replay never re-evaluates them.
    pub fn low_balance_alerts(&self, accounts: impl IntoIterator<Item = AccountId>) -> Vec<Event> {
        if self.low_balance.is_empty() {
            return Vec::new();
        }
        let mut alerts = Vec::new();
        for id in accounts {
            let (Some(setting), Some(available)) = (
                self.low_balance.get(&id),
                self.account(id).and_then(Account::available),
            ) else {
                continue;
            };
            let already = alerts.iter().any(
                |alert| matches!(alert, Event::LowBalanceAlert { account, .. } if *account == id),
            );
            if setting.armed && available < setting.threshold && !already {
                alerts.push(Event::LowBalanceAlert {
                    account: id,
                    available,
                    threshold: setting.threshold,
                });
            }
        }
        alerts
    }

    /// The low-balance setting of an account.
    pub fn low_balance(&self, id: AccountId) -> Option<LowBalance> {
        self.low_balance.get(&id).copied()
    }

    /// Every low-balance setting, by account id.
    pub fn low_balances(&self) -> Vec<(AccountId, LowBalance)> {
        LowBalance::by_account(&self.low_balance)
    }

    /// Restores low-balance settings (from a snapshot extension), checking that each belongs
    /// to an own-balance account.
    pub fn restore_low_balances(
        &mut self,
        settings: Vec<(AccountId, LowBalance)>,
    ) -> Result<(), String> {
        for (id, setting) in settings {
            match self.account(id).map(|account| account.funding()) {
                Some(Funding::Own { .. }) if !setting.threshold.is_negative() => {
                    self.low_balance.insert(id, setting);
                }
                _ => return Err(format!("low-balance setting for an invalid account {id:?}")),
            }
        }
        Ok(())
    }

    fn insert_account(
        &mut self,
        id: AccountId,
        key: ApiKey,
        primary: Option<AccountId>,
        currency: Currency,
        funding: Funding,
        secret: &SecretRecord,
    ) -> Result<(), ApplyFault> {
        if Some(id) != self.next_account_id() {
            return Err(ApplyFault::UnexpectedAccountId(id));
        }
        self.accounts
            .push(Account::new(key, primary, currency, funding, secret.id));
        // The key index reads keys from the accounts, hence after the push; a key already
        // taken leaves the index as it was, and the account goes again.
        if !self.by_key.insert(id, key_in(&self.accounts)) {
            self.accounts.pop();
            return Err(ApplyFault::DuplicateKey(key));
        }
        Ok(())
    }

    fn account_mut(&mut self, id: AccountId) -> Result<&mut Account, ApplyFault> {
        self.accounts
            .get_mut(id.index())
            .ok_or(ApplyFault::UnknownAccount(id))
    }

    fn open_account(&self, id: AccountId) -> Result<&Account, ApplyFault> {
        let account = self.account(id).ok_or(ApplyFault::UnknownAccount(id))?;
        if account.closed() {
            return Err(ApplyFault::Closed(id));
        }
        Ok(account)
    }

    fn open_subaccount(&self, id: AccountId) -> Result<&Account, ApplyFault> {
        let account = self.open_account(id)?;
        if account.is_primary() {
            return Err(ApplyFault::WrongAccountKind(id));
        }
        Ok(account)
    }

    /// A primary's subaccounts, oldest first (none for a subaccount or an unknown id).
    pub fn subaccounts(&self, primary: AccountId) -> &[AccountId] {
        self.subaccounts.get(&primary).map_or(&[], Vec::as_slice)
    }

    /// An account's active secret ids, oldest first (none for an unknown id).
    pub fn secret_ids(&self, id: AccountId) -> SecretIds {
        let Some(account) = self.account(id) else {
            return SecretIds::none();
        };
        let mut ids = SecretIds::none();
        if account.secret_count >= 1 {
            ids.push(account.first_secret);
        }
        if account.secret_count >= 2 {
            if let Some(second) = self.second_secrets.get(&id) {
                ids.push(*second);
            }
        }
        ids
    }

    /// Sets an account's active secret ids: the first in the account, a second apart.
    fn set_secret_ids(&mut self, id: AccountId, secrets: &SecretIds) -> Result<(), ApplyFault> {
        self.account_mut(id)?.set_secrets(secrets);
        match secrets.get(1) {
            Some(second) => self.second_secrets.insert(id, *second),
            None => self.second_secrets.remove(&id),
        };
        Ok(())
    }

    /// Every account's facts, in id order (what the state hash and the snapshot form cover).
    pub fn account_facts(&self) -> impl ExactSizeIterator<Item = AccountFacts<'_>> {
        self.accounts.iter().enumerate().map(|(index, account)| {
            let id = AccountId(u32::try_from(index).unwrap_or(u32::MAX));
            account.facts(self.subaccounts(id), self.secret_ids(id))
        })
    }

    /// Credit a primary has lent to its own-balance subaccounts: Σ |credit_limit|.
    pub fn lent_credit(&self, primary: AccountId) -> Amount {
        self.subaccounts(primary)
            .iter()
            .filter_map(|id| match self.account(*id)?.funding() {
                Funding::Own { credit_limit, .. } => Some(credit_limit.magnitude()),
                Funding::Shared => None,
            })
            .fold(Amount::ZERO, |sum, lent| {
                sum.checked_add(lent).unwrap_or(Amount::MAX)
            })
    }

    /// Transfers run between a primary and one of its own open subaccounts, either direction.
    fn check_pair(&self, source: AccountId, target: AccountId) -> Result<(), ApplyFault> {
        let from = self.open_account(source)?;
        let to = self.open_account(target)?;
        let paired = (from.primary() == Some(target) && to.is_primary())
            || (to.primary() == Some(source) && from.is_primary());
        if paired {
            Ok(())
        } else {
            Err(ApplyFault::NotPaired)
        }
    }

    /// The fundings of both ends after moving `amount` of balance or credit.
    fn moved(
        &self,
        source: AccountId,
        target: AccountId,
        amount: Amount,
        kind: MoneyKind,
    ) -> Result<(Funding, Funding), ApplyFault> {
        if !amount.is_positive() {
            return Err(ApplyFault::NotPositive);
        }
        let (source_balance, source_limit) = self.own(source)?;
        let (target_balance, target_limit) = self.own(target)?;
        let invariant = |id| move || ApplyFault::Invariant(id);
        let (source_after, target_after) = if kind == MoneyKind::CreditTransfer {
            (
                Funding::Own {
                    balance: source_balance,
                    credit_limit: source_limit
                        .checked_add(amount)
                        .ok_or_else(invariant(source))?,
                },
                Funding::Own {
                    balance: target_balance,
                    credit_limit: target_limit
                        .checked_sub(amount)
                        .ok_or_else(invariant(target))?,
                },
            )
        } else {
            (
                Funding::Own {
                    balance: source_balance
                        .checked_sub(amount)
                        .ok_or_else(invariant(source))?,
                    credit_limit: source_limit,
                },
                Funding::Own {
                    balance: target_balance
                        .checked_add(amount)
                        .ok_or_else(invariant(target))?,
                    credit_limit: target_limit,
                },
            )
        };
        check_funding(source, source_after)?;
        check_funding(target, target_after)?;
        Ok((source_after, target_after))
    }

    /// The funding of `id` after its balance changes by `delta` (`amount` must be positive).
    fn shifted_balance(
        &self,
        id: AccountId,
        delta: Amount,
        amount: Amount,
    ) -> Result<Funding, ApplyFault> {
        if !amount.is_positive() {
            return Err(ApplyFault::NotPositive);
        }
        let (balance, credit_limit) = self.own(id)?;
        let funding = Funding::Own {
            balance: balance
                .checked_add(delta)
                .ok_or(ApplyFault::Invariant(id))?,
            credit_limit,
        };
        check_funding(id, funding)?;
        Ok(funding)
    }

    fn own(&self, id: AccountId) -> Result<(Amount, Amount), ApplyFault> {
        match self.open_account(id)?.funding() {
            Funding::Own {
                balance,
                credit_limit,
            } => Ok((balance, credit_limit)),
            Funding::Shared => Err(ApplyFault::Shared(id)),
        }
    }

    fn set_funding(&mut self, id: AccountId, funding: Funding) -> Result<(), ApplyFault> {
        self.account_mut(id)?.set_funding(funding);
        Ok(())
    }

    fn record_money(
        &mut self,
        seq: Sequence,
        at: Timestamp,
        event: &Event,
    ) -> Result<(), ApplyFault> {
        if self.without_command_index {
            return Ok(());
        }
        self.commands.record_event(seq, at, event)
    }

    /// Checks invariant 1 of SPEC §4 for every account (`balance ≥ credit_limit ≤ 0`).
    /// `apply` already refuses any event that would break it; this is for tests and audits.
    pub fn check_invariants(&self) -> Result<(), AccountId> {
        for (id, account) in self.accounts() {
            check_funding(id, account.funding()).map_err(|_| id)?;
            if account.is_primary() && account.funding() == Funding::Shared {
                return Err(id);
            }
        }
        Ok(())
    }

    /// A deterministic hash of everything the state records (accounts in id order, applied
    /// commands in id order, position in the log). Equal states have equal hashes, so replay
    /// equality can be checked by comparing 32 bytes.
    pub fn state_hash(&self) -> [u8; 32] {
        state_hash_of(
            self.last_seq,
            self.last_at,
            self.account_facts(),
            &self.low_balances(),
            &self.commands,
        )
    }
}

/// [`State::state_hash`] of a state given by its parts — the last event, every account's
/// facts in id order, the low-balance settings in id order, the idempotency index (empty for
/// a state that keeps none) — for a holder that keeps them apart from a [`State`] (the read
/// side's directory of the accounts). `State::state_hash` hashes through this.
pub fn state_hash_of<'a>(
    last_seq: Sequence,
    last_at: Timestamp,
    accounts: impl ExactSizeIterator<Item = AccountFacts<'a>>,
    low_balances: &[(AccountId, LowBalance)],
    commands: &CommandIndex,
) -> [u8; 32] {
    let mut hasher = hash_head(last_seq, last_at, accounts, low_balances);
    // In log order: the index keeps records in the order they were applied.
    for (id, record) in commands.iter() {
        hasher.update(&id.to_uuid().into_bytes());
        let content = &record.content;
        hasher.update(&[content.kind as u8]);
        hasher.update(&content.source.0.to_le_bytes());
        hasher.update(&content.target.0.to_le_bytes());
        hasher.update(&content.amount.units().to_le_bytes());
        hasher.update(&(content.reference.len() as u64).to_le_bytes());
        hasher.update(content.reference.as_bytes());
        hasher.update(&record.seq.0.to_le_bytes());
        hasher.update(&record.at.0.to_le_bytes());
    }
    *hasher.finalize().as_bytes()
}

/// The key of the account an id names in `accounts`.
fn key_in(accounts: &[Account]) -> impl Fn(AccountId) -> Option<ApiKey> + '_ {
    |id| accounts.get(id.index()).map(|account| account.key)
}

/// An account's facts as [`State::state_hash`] covers them, borrowed: for a read side that
/// keeps them apart from a [`State`] and must hash alike ([`state_hash_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFacts<'a> {
    pub key: ApiKey,
    pub primary: Option<AccountId>,
    pub currency: Currency,
    pub funding: Funding,
    pub suspended: bool,
    pub closed: bool,
    pub secrets: SecretIds,
    pub subaccounts: &'a [AccountId],
}

impl Account {
    /// The facts the state hash covers, with the account's subaccounts (a primary's:
    /// [`State::subaccounts`]) and secret ids ([`State::secret_ids`]).
    pub fn facts<'a>(
        &'a self,
        subaccounts: &'a [AccountId],
        secrets: SecretIds,
    ) -> AccountFacts<'a> {
        AccountFacts {
            key: self.key,
            primary: self.primary(),
            currency: self.currency,
            funding: self.funding(),
            suspended: self.suspended(),
            closed: self.closed(),
            secrets,
            subaccounts,
        }
    }
}

impl AccountFacts<'_> {
    /// An [`Account`]'s fields in the order they were declared when plain: key, primary,
    /// currency, funding, suspended, closed, secrets.
    fn encode_fields<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.key.encode(encoder)?;
        self.primary.encode(encoder)?;
        self.currency.encode(encoder)?;
        self.funding.encode(encoder)?;
        self.suspended.encode(encoder)?;
        self.closed.encode(encoder)?;
        self.secrets.encode(encoder)
    }
}

impl Encode for AccountFacts<'_> {
    /// As a state's snapshot form holds an account: its fields, then its subaccounts (as when
    /// they were its last field).
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.encode_fields(encoder)?;
        self.subaccounts.encode(encoder)
    }
}

/// The hasher after everything but the idempotency records.
fn hash_head<'a>(
    last_seq: Sequence,
    last_at: Timestamp,
    accounts: impl ExactSizeIterator<Item = AccountFacts<'a>>,
    low_balances: &[(AccountId, LowBalance)],
) -> crate::digest::StreamHasher {
    let mut hasher = crate::digest::StreamHasher::new();
    hasher.update(&last_seq.0.to_le_bytes());
    hasher.update(&last_at.0.to_le_bytes());
    hasher.update(&(accounts.len() as u64).to_le_bytes());
    for account in accounts {
        hash_account(&mut hasher, &account);
    }
    for (id, setting) in low_balances {
        hasher.update(&id.0.to_le_bytes());
        hasher.update(&setting.threshold.units().to_le_bytes());
        hasher.update(&[u8::from(setting.armed)]);
    }
    hasher
}

fn hash_account(hasher: &mut crate::digest::StreamHasher, account: &AccountFacts<'_>) {
    hasher.update(&account.key.as_bytes());
    hasher.update(
        &account
            .primary
            .map_or(u64::MAX, |id| u64::from(id.0))
            .to_le_bytes(),
    );
    hasher.update(account.currency.as_str().as_bytes());
    match account.funding {
        Funding::Own {
            balance,
            credit_limit,
        } => {
            hasher.update(&[1]);
            hasher.update(&balance.units().to_le_bytes());
            hasher.update(&credit_limit.units().to_le_bytes());
        }
        Funding::Shared => {
            hasher.update(&[0]);
        }
    }
    hasher.update(&[u8::from(account.suspended), u8::from(account.closed)]);
    hasher.update(&(account.secrets.len() as u64).to_le_bytes());
    for secret in account.secrets.iter() {
        hasher.update(&secret.to_uuid().into_bytes());
    }
    hasher.update(&(account.subaccounts.len() as u64).to_le_bytes());
    for id in account.subaccounts {
        hasher.update(&id.0.to_le_bytes());
    }
}

/// Invariant 1 of SPEC §4 plus the bound: `credit_limit ≤ 0` and `balance ≥ credit_limit`.
fn check_funding(id: AccountId, funding: Funding) -> Result<(), ApplyFault> {
    match funding {
        Funding::Own {
            balance,
            credit_limit,
        } if credit_limit.is_negative() || credit_limit.is_zero() => {
            if balance >= credit_limit {
                Ok(())
            } else {
                Err(ApplyFault::Invariant(id))
            }
        }
        Funding::Own { .. } => Err(ApplyFault::Invariant(id)),
        Funding::Shared => Ok(()),
    }
}

/// Most idempotency records pre-allocated while decoding a snapshot, whatever its header
/// claims (the map still grows to the real count).
const DECODE_COMMANDS_PREALLOCATED_MAX: usize = 1 << 20;
/// Most accounts pre-allocated while decoding a snapshot.
const DECODE_ACCOUNTS_PREALLOCATED_MAX: usize = 1 << 16;

impl Encode for State {
    /// The snapshot form: accounts in id order, the idempotency index, the log position. The
    /// key index is derived and rebuilt on decode; the policy is configuration, not state.
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        (self.accounts.len() as u64).encode(encoder)?;
        for facts in self.account_facts() {
            facts.encode(encoder)?;
        }
        self.commands.encode(encoder)?;
        self.without_command_index.encode(encoder)?;
        self.last_seq.encode(encoder)?;
        self.last_at.encode(encoder)
    }
}

/// A state's snapshot form with an empty idempotency index, for layouts that store the index
/// apart (snapshot format 4 decodes the two on two threads). Decodes as a [`State`] whose
/// index is empty, to be completed with [`State::attach_command_index`] after
/// [`State::detach_command_index`].
#[derive(Debug, Clone, Copy)]
pub struct StateWithoutCommands<'a>(pub &'a State);

impl Encode for StateWithoutCommands<'_> {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        let state = self.0;
        encode_state_without_commands(
            encoder,
            state.account_facts(),
            state.without_command_index,
            state.last_seq,
            state.last_at,
        )
    }
}

/// [`StateWithoutCommands`] of a state given by its parts — every account's facts in id order,
/// whether it keeps an idempotency index, its last event — for a holder that keeps them apart
/// from a [`State`] (a snapshot replica that keeps a directory of the accounts). The same
/// bytes: `StateWithoutCommands` encodes through this.
pub fn encode_state_without_commands<'a, E: bincode::enc::Encoder>(
    encoder: &mut E,
    accounts: impl ExactSizeIterator<Item = AccountFacts<'a>>,
    without_command_index: bool,
    last_seq: Sequence,
    last_at: Timestamp,
) -> Result<(), bincode::error::EncodeError> {
    (accounts.len() as u64).encode(encoder)?;
    for account in accounts {
        account.encode(encoder)?;
    }
    CommandIndex::default().encode(encoder)?;
    without_command_index.encode(encoder)?;
    last_seq.encode(encoder)?;
    last_at.encode(encoder)
}

impl Encode for CommandIndex {
    /// The count, then each (id, record) in log order.
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        (self.len() as u64).encode(encoder)?;
        self.encode_records(encoder)
    }
}

/// The most bytes an encoded (command id, record) pair without a reference takes: id (16),
/// kind (5), two account ids (5 each), amount (17), the empty reference's length (1), seq and
/// instant (9 each).
pub(crate) const COMMAND_RECORD_ENCODED_BYTES_MAX: usize = 67;

/// An idempotency record without a reference (most have none), read from one borrowed slice
/// (see [`crate::fields`]); `None` for anything the ordinary decoding must handle.
fn parse_command_record(
    fields: &mut crate::fields::Fields<'_>,
) -> Option<(CommandId, CommandRecord)> {
    let id = CommandId::from_bytes(fields.bytes16()?);
    let kind = match fields.u32()? {
        0 => MoneyKind::BalanceTransfer,
        1 => MoneyKind::CreditTransfer,
        2 => MoneyKind::Charge,
        3 => MoneyKind::TopUp,
        _ => return None,
    };
    let source = AccountId(fields.u32()?);
    let target = AccountId(fields.u32()?);
    let amount = Amount::from_units(fields.i128()?).ok()?;
    if fields.u64()? != 0 {
        return None;
    }
    let seq = Sequence(fields.u64()?);
    let at = Timestamp(fields.i64()?);
    Some((
        id,
        CommandRecord {
            content: CommandContent {
                kind,
                source,
                target,
                amount,
                reference: Box::default(),
            },
            seq,
            at,
        },
    ))
}

impl<Context> Decode<Context> for CommandIndex {
    /// Refuses a repeated command id.
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let duplicate = |_| bincode::error::DecodeError::Other("duplicate command id");
        // A forged count cannot demand gigabytes up front: real items grow the index.
        let count = u64::decode(decoder)?;
        let preallocated = usize::try_from(count)
            .unwrap_or(usize::MAX)
            .min(DECODE_COMMANDS_PREALLOCATED_MAX);
        let mut index = CommandIndex::default();
        // Records are written in log order, so they are appended as they come and the table
        // is built once at the end, sized for all of them (entering them one by one grew and
        // rehashed it); should one be out of order, the rest are collected and the whole
        // sorted (`from_records`).
        let mut last = Sequence::ZERO;
        let mut unsorted: Option<Vec<(CommandId, CommandRecord)>> = None;
        for _ in 0..count {
            let (id, record) = match crate::fields::decode_fast(
                decoder,
                COMMAND_RECORD_ENCODED_BYTES_MAX,
                parse_command_record,
            ) {
                Some(pair) => pair,
                None => (CommandId::decode(decoder)?, CommandRecord::decode(decoder)?),
            };
            match &mut unsorted {
                None if record.seq >= last => {
                    last = record.seq;
                    if !index.push_unindexed(id, record) {
                        return Err(bincode::error::DecodeError::Other("too many commands"));
                    }
                }
                None => {
                    let mut all: Vec<_> = Vec::with_capacity(preallocated);
                    all.extend(index.iter());
                    all.push((id, record));
                    unsorted = Some(all);
                }
                Some(all) => all.push((id, record)),
            }
        }
        match unsorted {
            None => index
                .enter_appended()
                .map(|()| index)
                .map_err(|_| duplicate(())),
            Some(all) => CommandIndex::from_records(all).map_err(|_| duplicate(())),
        }
    }
}
bincode::impl_borrow_decode!(CommandIndex);

impl<Context> Decode<Context> for State {
    /// Decodes and then validates the whole structure, so a damaged or forged snapshot is an
    /// error here rather than a broken invariant later.
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        // Counts come from the input: pre-allocate at most a bounded amount and let real
        // items grow the containers, so a forged count cannot demand gigabytes up front.
        let account_count = u64::decode(decoder)?;
        let mut accounts = Vec::with_capacity(
            usize::try_from(account_count)
                .unwrap_or(usize::MAX)
                .min(DECODE_ACCOUNTS_PREALLOCATED_MAX),
        );
        let mut subaccounts: FxHashMap<AccountId, Vec<AccountId>> = FxHashMap::default();
        let mut second_secrets = FxHashMap::default();
        for index in 0..account_count {
            let id = u32::try_from(index)
                .map(AccountId)
                .map_err(|_| bincode::error::DecodeError::Other("too many accounts"))?;
            let (account, secrets) = decode_account(decoder)?;
            accounts.push(account);
            if let Some(second) = secrets.get(1) {
                second_secrets.insert(id, *second);
            }
            let listed = Vec::<AccountId>::decode(decoder)?;
            if !listed.is_empty() {
                subaccounts.insert(id, listed);
            }
        }
        let commands = CommandIndex::decode(decoder)?;
        let mut state = State {
            policy: Policy::default(),
            accounts,
            subaccounts,
            second_secrets,
            by_key: KeyIndex::default(),
            commands,
            without_command_index: bool::decode(decoder)?,
            low_balance: FxHashMap::default(),
            last_seq: Sequence::decode(decoder)?,
            last_at: Timestamp::decode(decoder)?,
        };
        state
            .rebuild_and_validate()
            .map_err(bincode::error::DecodeError::OtherString)?;
        Ok(state)
    }
}
bincode::impl_borrow_decode!(State);

impl State {
    /// Rebuilds the key index and checks every structural rule `apply` would have enforced.
    fn rebuild_and_validate(&mut self) -> Result<(), String> {
        let count = self.accounts.len();
        let mut by_key = KeyIndex::with_capacity(count);
        let mut expected_subaccounts: Vec<Vec<AccountId>> = vec![Vec::new(); count];
        for (id, account) in self.accounts() {
            if !by_key.insert(id, key_in(&self.accounts)) {
                return Err(format!("duplicate api key {}", account.key));
            }
            match account.primary() {
                Some(owner) => {
                    let primary = self
                        .account(owner)
                        .filter(|primary| primary.is_primary() && owner < id)
                        .ok_or_else(|| format!("account {id:?} has an invalid primary"))?;
                    if primary.currency != account.currency {
                        return Err(format!(
                            "account {id:?} has another currency than its primary"
                        ));
                    }
                    if let Some(list) = expected_subaccounts.get_mut(owner.index()) {
                        list.push(id);
                    }
                }
                None if account.funding() == Funding::Shared => {
                    return Err(format!("primary {id:?} has no own balance"));
                }
                None => {}
            }
            check_funding(id, account.funding()).map_err(|fault| fault.to_string())?;
            let held = self.secret_ids(id);
            let mut secrets = held.to_vec();
            secrets.sort_unstable();
            secrets.dedup();
            if secrets.len() != held.len()
                || !(1..=SECRETS_PER_ACCOUNT_MAX).contains(&secrets.len())
            {
                return Err(format!("account {id:?} breaks the secret rules"));
            }
        }
        for ((id, _), expected) in self.accounts().zip(&expected_subaccounts) {
            if self.subaccounts(id) != expected.as_slice() {
                return Err(format!("primary {id:?} lists the wrong subaccounts"));
            }
        }
        let listing = expected_subaccounts
            .iter()
            .filter(|list| !list.is_empty())
            .count();
        if self.subaccounts.len() != listing {
            return Err("an account that is no primary lists subaccounts".into());
        }
        if self.without_command_index && !self.commands.is_empty() {
            return Err("a state without a command index holds commands".into());
        }
        self.check_command_records(&self.commands)?;
        self.by_key = by_key;
        Ok(())
    }

    /// A copy without the idempotency index (for read-side projections): the accounts are
    /// cloned, the index — the largest part — is not.
    pub fn clone_without_command_index(&self) -> State {
        State {
            policy: self.policy,
            accounts: self.accounts.clone(),
            by_key: self.by_key.clone(),
            commands: CommandIndex::default(),
            without_command_index: true,
            low_balance: self.low_balance.clone(),
            subaccounts: self.subaccounts.clone(),
            second_secrets: self.second_secrets.clone(),
            last_seq: self.last_seq,
            last_at: self.last_at,
        }
    }

    /// The idempotency index, if this state keeps one.
    pub fn command_index(&self) -> Option<&CommandIndex> {
        (!self.without_command_index).then_some(&self.commands)
    }

    /// Whether this state keeps the idempotency index (the writer's does, read copies do not).
    pub fn keeps_command_index(&self) -> bool {
        !self.without_command_index
    }

    /// Takes the idempotency index out (`None` if this state keeps none); until
    /// [`State::attach_command_index`], `apply` records no commands. Recovery rebuilds the
    /// index on another thread meanwhile, from the same events.
    pub fn detach_command_index(&mut self) -> Option<CommandIndex> {
        if self.without_command_index {
            return None;
        }
        self.without_command_index = true;
        Some(std::mem::take(&mut self.commands))
    }

    /// Every record of `index` names known accounts and a point no later than the last event.
    fn check_command_records(&self, index: &CommandIndex) -> Result<(), String> {
        let known = |account: AccountId| account.index() < self.accounts.len();
        // Borrowed records: no reference is copied to be looked at.
        for record in index.records().iter() {
            if !known(record.source)
                || !known(record.target)
                || record.seq > self.last_seq
                || record.at > self.last_at
            {
                return Err(format!(
                    "command {} refers to unknown accounts or the future",
                    record.id
                ));
            }
        }
        Ok(())
    }

    /// Freezes the idempotency index's records into shared memory and returns them
    /// ([`CommandIndex::freeze`]); `None` without an index.
    pub fn freeze_command_records(&mut self) -> Option<crate::SharedRecords> {
        (!self.without_command_index).then(|| self.commands.freeze())
    }

    /// Puts back an index detached with [`State::detach_command_index`] and brought up to
    /// date with the events applied since. Refused if a record names an unknown account or a
    /// point past the state's last event.
    pub fn attach_command_index(&mut self, index: CommandIndex) -> Result<(), String> {
        if index.appended_len() != 0 {
            return Err("the idempotency index has records not entered yet".into());
        }
        self.check_command_records(&index)?;
        self.commands = index;
        self.without_command_index = false;
        Ok(())
    }

    /// Puts in an index (this state's own detached one, or a decoded one) whose records the
    /// caller has checked as [`State::attach_command_index`] would: every record's accounts
    /// known, none after this state's last event. A format-9 snapshot's open checks them while
    /// it rebuilds the money lists from them, on another thread, so that this pass is not one
    /// more step after the index's table is built.
    pub fn attach_checked_command_index(&mut self, index: CommandIndex) -> Result<(), String> {
        self.reattach_replayed_command_index(index)
    }

    /// Puts back an index detached with [`State::detach_command_index`] whose records were
    /// all checked when it was attached before, or recorded (by
    /// [`CommandIndex::append_event`]) from events this state has since applied, which
    /// `apply` checked: a replay's. Skips [`State::attach_command_index`]'s pass over every
    /// record (10M at 10M commands), which would find nothing.
    pub fn reattach_replayed_command_index(&mut self, index: CommandIndex) -> Result<(), String> {
        if index.appended_len() != 0 {
            return Err("the idempotency index has records not entered yet".into());
        }
        self.commands = index;
        self.without_command_index = false;
        Ok(())
    }

    /// Keeps the idempotency index's records but not its lookup table: a state that will only
    /// be written out as snapshots, never decide (see [`CommandIndex::keep_records_only`]).
    pub fn keep_command_records_only(&mut self) {
        self.commands.keep_records_only();
    }

    /// Drops the idempotency index (turning a writer-side state into a read-side copy).
    pub fn forget_command_index(&mut self) {
        self.commands = CommandIndex::default();
        self.without_command_index = true;
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use proptest::prelude::*;

    fn any_amount() -> impl Strategy<Value = Amount> {
        (-100_000_000_000_000_000_000_i128..=100_000_000_000_000_000_000)
            .prop_map(|units| Amount::from_units(units).unwrap_or(Amount::ZERO))
    }

    /// `encode_state_without_commands`, fed the facts of a state's accounts, writes exactly
    /// what the derived encoding of its `Account`s writes (with the empty index it stands for).
    #[test]
    fn a_state_encoded_from_its_facts_is_the_state_encoded() {
        let secret = |n: u8| SecretRecord {
            id: SecretId::from_bytes([n; 16]),
            hash: crate::SecretHash::new("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into())
                .unwrap_or_else(|_| unreachable!("a valid hash")),
        };
        let key = |text: &str| {
            text.parse::<ApiKey>()
                .unwrap_or_else(|_| unreachable!("a key"))
        };
        let units = |n: i128| Amount::from_units(n).unwrap_or(Amount::ZERO);
        let events = [
            Event::PrimaryOpened {
                account: AccountId(0),
                key: key("encp0001"),
                name: "p".into(),
                currency: Currency::EUR,
                credit_limit: units(-500),
                secret: secret(1),
            },
            Event::SubaccountCreated {
                account: AccountId(1),
                primary: AccountId(0),
                key: key("encs0001"),
                name: "s".into(),
                use_primary_account_balance: false,
                secret: secret(2),
            },
            Event::SubaccountCreated {
                account: AccountId(2),
                primary: AccountId(0),
                key: key("encs0002"),
                name: "t".into(),
                use_primary_account_balance: true,
                secret: secret(3),
            },
            Event::ToppedUp {
                command: CommandId::from_bytes([4; 16]),
                account: AccountId(0),
                amount: units(900),
                reference: String::new(),
            },
            Event::BalanceTransferred {
                command: CommandId::from_bytes([5; 16]),
                source: AccountId(0),
                target: AccountId(1),
                amount: units(300),
                reference: String::new(),
            },
            Event::SecretCreated {
                account: AccountId(1),
                secret: secret(6),
            },
            Event::AccountSuspended {
                account: AccountId(2),
            },
        ];
        for mut state in [
            State::new(Policy::default()),
            State::without_command_index(Policy::default()),
        ] {
            for (seq, event) in (1..).zip(&events) {
                assert!(state.apply(Sequence(seq), Timestamp(3), event).is_ok());
            }
            let config = bincode::config::standard();
            let from_facts =
                bincode::encode_to_vec(StateWithoutCommands(&state), config).unwrap_or_default();
            state.forget_command_index();
            let mut derived = bincode::encode_to_vec(&state, config).unwrap_or_default();
            // The flag for the index is the one byte that may differ: `forget` set it.
            let flag = derived.len() - 1 - 1 - 1;
            derived[flag] = from_facts[flag];
            assert_eq!(from_facts, derived);
        }
    }

    #[test]
    fn shared_and_extreme_funding_read_back() {
        let extremes = [Amount::MIN, Amount::MAX, Amount::ZERO];
        for balance in extremes {
            for credit_limit in extremes {
                let own = Funding::Own {
                    balance,
                    credit_limit,
                };
                assert_eq!(PackedFunding::new(own).get(), own);
                assert_ne!(PackedFunding::new(own), PackedFunding::new(Funding::Shared));
            }
        }
        assert_eq!(PackedFunding::new(Funding::Shared).get(), Funding::Shared);
    }

    proptest! {
        /// Funding reads back as packed, encodes as the `Funding` it packs, and two fundings
        /// pack equal exactly when they are equal.
        #[test]
        fn packed_funding_reads_back_and_encodes_as_funding(
            balance in any_amount(),
            credit_limit in any_amount(),
            other in any_amount(),
            shared in any::<bool>(),
        ) {
            let funding = if shared {
                Funding::Shared
            } else {
                Funding::Own { balance, credit_limit }
            };
            let packed = PackedFunding::new(funding);
            prop_assert_eq!(packed.get(), funding);
            let config = bincode::config::standard();
            let bytes = bincode::encode_to_vec(packed, config).unwrap_or_default();
            prop_assert_eq!(&bytes, &bincode::encode_to_vec(funding, config).unwrap_or_default());
            let decoded: Option<(PackedFunding, usize)> = bincode::decode_from_slice(&bytes, config).ok();
            prop_assert_eq!(decoded, Some((packed, bytes.len())));
            let changed = Funding::Own { balance: other, credit_limit };
            prop_assert_eq!(PackedFunding::new(changed) == packed, changed == funding);
        }
        /// An idempotency index decodes the same through the fast path (a slice) and through
        /// bincode's own decoding (an I/O reader), damaged or not.
        #[test]
        fn command_records_decode_the_same_both_ways(
            records in proptest::collection::vec(
                (any::<[u8; 16]>(), 0..4u32, any::<u32>(), any::<u32>(),
                 -100_000_000_000_000_000_000_i128..=100_000_000_000_000_000_000, "(|r)", 0..1_000u64),
                0..8,
            ),
            damage in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
        ) {
            let kinds = [MoneyKind::BalanceTransfer, MoneyKind::CreditTransfer, MoneyKind::Charge, MoneyKind::TopUp];
            // Limited, as every real decoding is: damage can turn a reference's length into
            // an exabyte claim, which an unlimited bincode tries to allocate (an abort, seen in
            // CI) before finding the bytes missing.
            let config = bincode::config::standard().with_limit::<{ 1 << 20 }>();
            let mut bytes = bincode::encode_to_vec(records.len() as u64, config).unwrap_or_default();
            let mut seq = 0;
            for (id, kind, source, target, units, reference, step) in &records {
                seq += step + 1;
                let record = CommandRecord {
                    content: CommandContent {
                        kind: kinds[*kind as usize],
                        source: AccountId(*source),
                        target: AccountId(*target),
                        amount: Amount::from_units(*units).unwrap_or(Amount::ZERO),
                        reference: reference.as_str().into(),
                    },
                    seq: Sequence(seq),
                    at: Timestamp(-7),
                };
                bytes.extend(bincode::encode_to_vec((CommandId::from_bytes(*id), record), config).unwrap_or_default());
            }
            if let Some((at, byte)) = damage {
                let index = at.index(bytes.len().max(1));
                if let Some(slot) = bytes.get_mut(index) {
                    *slot = byte;
                }
            }
            bytes.extend([0u8; 80]);
            let fast = bincode::decode_from_slice::<CommandIndex, _>(&bytes, config)
                .ok()
                .map(|(index, _)| index.iter().collect::<Vec<_>>());
            let ordinary = bincode::decode_from_std_read::<CommandIndex, _, _>(&mut &bytes[..], config)
                .ok()
                .map(|index| index.iter().collect::<Vec<_>>());
            prop_assert_eq!(fast, ordinary);
            // Encoding writes what the pairs encoded one by one wrote (the fast way for records
            // without a reference).
            if damage.is_none() {
                let written = bytes.len() - 80;
                let (index, _) = bincode::decode_from_slice::<CommandIndex, _>(&bytes, config).unwrap();
                prop_assert_eq!(bincode::encode_to_vec(&index, config).unwrap(), &bytes[..written]);
            }
        }
    }

    /// The flags share the funding's word: setting either, or the funding, changes nothing
    /// else, and an account encodes and decodes as its plain fields would.
    #[test]
    fn an_account_s_flags_funding_and_primary_are_kept_apart() {
        let amount = |units: i128| Amount::from_units(units).unwrap_or(Amount::ZERO);
        let fundings = [
            Funding::Shared,
            Funding::Own {
                balance: Amount::MAX,
                credit_limit: Amount::MIN,
            },
            Funding::Own {
                balance: amount(-7),
                credit_limit: amount(-9),
            },
        ];
        let key = ApiKey::from_bytes(*b"abcd0123").unwrap();
        let config = bincode::config::standard();
        for primary in [None, Some(AccountId(0)), Some(AccountId(NO_PRIMARY - 1))] {
            for funding in fundings {
                for (suspended, closed) in
                    [(false, false), (true, false), (false, true), (true, true)]
                {
                    let mut account = Account::new(
                        key,
                        primary,
                        Currency::EUR,
                        funding,
                        SecretId::from_bytes([3; 16]),
                    );
                    account.set_suspended(suspended);
                    account.set_closed(closed);
                    assert_eq!((account.suspended(), account.closed()), (suspended, closed));
                    assert_eq!((account.funding(), account.primary()), (funding, primary));
                    assert_eq!(account.is_primary(), primary.is_none());
                    for other in fundings {
                        let mut changed = account.clone();
                        changed.set_funding(other);
                        assert_eq!(changed.funding(), other);
                        assert_eq!((changed.suspended(), changed.closed()), (suspended, closed));
                    }
                    let plain = bincode::encode_to_vec(
                        (
                            key,
                            primary,
                            Currency::EUR,
                            funding,
                            suspended,
                            closed,
                            vec![SecretId::from_bytes([3; 16])],
                        ),
                        config,
                    )
                    .unwrap_or_default();
                    let secrets = SecretIds::one(SecretId::from_bytes([3; 16]));
                    assert_eq!(
                        bincode::encode_to_vec(Fields(account.facts(&[], secrets)), config)
                            .unwrap_or_default(),
                        plain
                    );
                    let decoded: Result<(Decoded, usize), _> =
                        bincode::decode_from_slice(&plain, config);
                    assert_eq!(decoded.ok(), Some((Decoded(account, secrets), plain.len())));
                }
            }
        }
        // The id that marks a primary is refused as a primary's id, not taken for "none".
        let forged = bincode::encode_to_vec(
            (
                key,
                Some(AccountId(NO_PRIMARY)),
                Currency::EUR,
                Funding::Shared,
                false,
                false,
                vec![SecretId::from_bytes([3; 16])],
            ),
            config,
        )
        .unwrap_or_default();
        assert!(bincode::decode_from_slice::<Decoded, _>(&forged, config).is_err());
        // Two secrets: the first kept in the account, both given back.
        let two = bincode::encode_to_vec(
            (
                key,
                Some(AccountId(0)),
                Currency::EUR,
                Funding::Shared,
                false,
                false,
                vec![SecretId::from_bytes([3; 16]), SecretId::from_bytes([4; 16])],
            ),
            config,
        )
        .unwrap_or_default();
        let decoded: Option<(Decoded, usize)> = bincode::decode_from_slice(&two, config).ok();
        let Some((Decoded(account, secrets), _)) = decoded else {
            panic!("two secrets refused");
        };
        assert_eq!(
            &secrets[..],
            [SecretId::from_bytes([3; 16]), SecretId::from_bytes([4; 16])]
        );
        assert_eq!(
            (account.first_secret, account.secret_count),
            (secrets[0], 2)
        );
        assert_eq!(
            bincode::encode_to_vec(Fields(account.facts(&[], secrets)), config).ok(),
            Some(two)
        );
    }

    /// An account's fields as a snapshot writes them (without the subaccounts).
    struct Fields<'a>(AccountFacts<'a>);

    impl Encode for Fields<'_> {
        fn encode<E: bincode::enc::Encoder>(
            &self,
            encoder: &mut E,
        ) -> Result<(), bincode::error::EncodeError> {
            self.0.encode_fields(encoder)
        }
    }

    /// An account and its secret ids as a snapshot's state section gives them.
    #[derive(Debug, PartialEq)]
    struct Decoded(Account, SecretIds);

    impl<Context> Decode<Context> for Decoded {
        fn decode<D: bincode::de::Decoder<Context = Context>>(
            decoder: &mut D,
        ) -> Result<Self, bincode::error::DecodeError> {
            let (account, secrets) = decode_account(decoder)?;
            Ok(Decoded(account, secrets))
        }
    }

    /// An account per account in the writer's state: a field that brings back 16-byte
    /// alignment or a 24-byte list should be a conscious choice.
    #[test]
    fn an_account_stays_small() {
        assert_eq!(std::mem::size_of::<Funding>(), 40, "hence held packed");
        assert_eq!(std::mem::size_of::<PackedFunding>(), 24);
        assert_eq!(
            std::mem::size_of::<Account>(),
            56,
            "the first secret inline, a rotation's second in the state"
        );
    }

    fn id(n: u8) -> SecretId {
        SecretId::from_bytes([n; 16])
    }

    #[test]
    fn inline_secret_ids_behave_and_encode_like_the_vec_they_replace() {
        let mut ids = SecretIds::one(id(1));
        assert!(ids.push(id(2)));
        assert!(!ids.push(id(3)), "full at two");
        assert_eq!(&ids[..], &[id(1), id(2)]);
        let config = bincode::config::standard();
        let as_vec = bincode::encode_to_vec(vec![id(1), id(2)], config).unwrap_or_default();
        assert_eq!(
            bincode::encode_to_vec(ids, config).unwrap_or_default(),
            as_vec
        );
        let decoded: Result<(SecretIds, usize), _> = bincode::decode_from_slice(&as_vec, config);
        assert_eq!(decoded.ok(), Some((ids, as_vec.len())));
        ids.retain(|kept| *kept != id(1));
        assert_eq!(&ids[..], &[id(2)]);
        // Equal to the same single id however it got there.
        assert_eq!(ids, SecretIds::one(id(2)));
        ids.retain(|_| false);
        assert!(ids.is_empty());
        assert!(ids.push(id(2)));
        assert!(ids.push(id(4)));
        assert_eq!(&ids[..], &[id(2), id(4)]);
        for count in [0_usize, 3] {
            let bytes = bincode::encode_to_vec(vec![id(9); count], config).unwrap_or_default();
            let refused: Result<(SecretIds, usize), _> = bincode::decode_from_slice(&bytes, config);
            assert!(refused.is_err(), "{count} secrets accepted");
        }
    }
}

#[cfg(test)]
mod command_index_decoding_tests {
    use super::*;

    fn record(seq: u64) -> (CommandId, CommandRecord) {
        let id = CommandId::from_bytes(u128::from(seq).to_le_bytes());
        let content = CommandContent {
            kind: MoneyKind::TopUp,
            source: AccountId(0),
            target: AccountId(0),
            amount: Amount::from_units(i128::from(seq)).unwrap_or(Amount::ZERO),
            reference: if seq.is_multiple_of(2) {
                "r".into()
            } else {
                "".into()
            },
        };
        (
            id,
            CommandRecord {
                content,
                seq: Sequence(seq),
                at: Timestamp(0),
            },
        )
    }

    fn encoded(records: &[(CommandId, CommandRecord)]) -> Vec<u8> {
        let config = bincode::config::standard();
        let mut bytes = bincode::encode_to_vec(records.len() as u64, config).unwrap_or_default();
        for (id, record) in records {
            bytes.extend(bincode::encode_to_vec(id, config).unwrap_or_default());
            bytes.extend(bincode::encode_to_vec(record, config).unwrap_or_default());
        }
        bytes
    }

    fn decoded(bytes: &[u8]) -> Result<CommandIndex, bincode::error::DecodeError> {
        bincode::decode_from_slice(bytes, bincode::config::standard()).map(|(index, _)| index)
    }

    #[test]
    fn records_in_or_out_of_order_decode_to_the_same_index_and_repeats_are_refused() {
        let in_order: Vec<_> = (1..=40).map(record).collect();
        let expected = CommandIndex::from_records(in_order.clone()).unwrap_or_default();
        assert_eq!(expected.len(), 40);
        assert!(decoded(&encoded(&in_order)).ok() == Some(expected.clone()));
        // Out of order from the 21st on: sorted on the way in.
        let mut shuffled = in_order.clone();
        shuffled[20..].reverse();
        shuffled.swap(3, 30);
        let from_shuffled = decoded(&encoded(&shuffled)).ok();
        assert!(from_shuffled == Some(expected));
        let in_log_order: Vec<u64> = from_shuffled
            .map(|index| index.iter().map(|(_, record)| record.seq.0).collect())
            .unwrap_or_default();
        assert_eq!(in_log_order, (1..=40).collect::<Vec<u64>>());
        // A repeated id, in the ordered path and in the sorted one.
        let mut repeated = in_order.clone();
        repeated.push((in_order[5].0, record(41).1));
        assert!(decoded(&encoded(&repeated)).is_err());
        let mut repeated_unsorted = shuffled;
        repeated_unsorted.push((in_order[5].0, record(0).1));
        assert!(decoded(&encoded(&repeated_unsorted)).is_err());
    }
}
