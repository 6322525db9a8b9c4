//! Per-account history: every event that changed an account, with its balance, credit limit
//! and status *after* it. This one index answers statements (the entries that moved money or
//! credit, with running values) and point-in-time queries (the last entry at or before a
//! point: a binary search, never a replay). Cost: one 40-byte entry per account an event
//! touches (two per transfer), plus each rename.

use bincode::{Decode, Encode};
use std::num::NonZeroU64;

use smol_str::SmolStr;
use subledger_core::{AccountId, Amount, Event, Funding, SecretId, Sequence, State, Timestamp};

use crate::{SecretView, StoredHash};

/// What happened to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub enum EntryKind {
    Opened,
    TopUp,
    Charge,
    TransferIn,
    TransferOut,
    CreditIn,
    CreditOut,
    CreditLine,
    SwitchedToOwnBalance,
    Suspended,
    Reactivated,
    Closed,
    ThresholdSet,
    LowBalanceAlert,
}

impl EntryKind {
    /// The name reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Opened => "opened",
            EntryKind::TopUp => "top_up",
            EntryKind::Charge => "charge",
            EntryKind::TransferIn => "transfer_in",
            EntryKind::TransferOut => "transfer_out",
            EntryKind::CreditIn => "credit_in",
            EntryKind::CreditOut => "credit_out",
            EntryKind::CreditLine => "credit_line",
            EntryKind::SwitchedToOwnBalance => "own_balance",
            EntryKind::Suspended => "suspended",
            EntryKind::Reactivated => "reactivated",
            EntryKind::Closed => "closed",
            EntryKind::ThresholdSet => "low_balance_threshold",
            EntryKind::LowBalanceAlert => "low_balance_alert",
        }
    }

    /// Entries that can change the balance or the credit limit (statement lines).
    pub fn moves_money(self) -> bool {
        matches!(
            self,
            EntryKind::TopUp
                | EntryKind::Charge
                | EntryKind::TransferIn
                | EntryKind::TransferOut
                | EntryKind::CreditIn
                | EntryKind::CreditOut
                | EntryKind::CreditLine
                | EntryKind::SwitchedToOwnBalance
        )
    }
}

/// One change to an account, with the values after it.
///
/// Packed: a ledger holds two of these per transfer, so their size is most of the read side's
/// memory and of a snapshot's decoding work — and, since fresh memory costs about half a
/// second per GB on the project's machine kind, of recovery's time. With `Option<Amount>`
/// fields (an `i128` is 16-byte aligned and has no spare value for `None`) an entry took 96
/// bytes; as two 8-byte halves per amount and the options and flags as bits, 56. Now the two
/// amounts, the counterparty, the kind and the flags share 24 bytes (`Packed`), for 40: an
/// amount's magnitude is at most 10²⁰ minor units, under 2⁶⁷, so 68 bits hold it with its sign.
/// Snapshot formats up to 6 encode the fields in their original order and types; format 7
/// stores the packed words themselves ([`Entry::to_raw`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub seq: Sequence,
    pub at: Timestamp,
    packed: Packed,
}

/// An entry's other fields in 192 bits, low to high: balance (68 bits, two's complement),
/// credit limit (68), counterparty (32), kind (4), flags (5); the remaining 15 bits are zero.
/// `low` holds the first 128 bits as two words (an `u128` field would align the entry to 16
/// bytes and pad it to 48). In memory the top bit of `high` is always set ([`PACKED_MARK`],
/// never stored): `high` is then never zero, which gives `Entry` a value it never takes, and
/// an account's one stored entry can share its place with a list ([`Stored`]) at no cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    low: [u64; 2],
    high: NonZeroU64,
}

/// The bit set in every `Packed::high` in memory, outside the fields.
const PACKED_MARK: NonZeroU64 = NonZeroU64::MIN.saturating_add((1 << 63) - 1);

const AMOUNT_BITS: u32 = Amount::BITS;
const AMOUNT_MASK: u128 = (1 << AMOUNT_BITS) - 1;
/// Bits of the credit limit in `low`; the rest are the bottom of `high`.
const CREDIT_LOW_BITS: u32 = 128 - AMOUNT_BITS;
const CREDIT_HIGH_BITS: u32 = AMOUNT_BITS - CREDIT_LOW_BITS;
const COUNTERPARTY_SHIFT: u32 = CREDIT_HIGH_BITS;
const KIND_SHIFT: u32 = COUNTERPARTY_SHIFT + 32;
const KIND_MASK: u64 = 0xF;
const FLAGS_SHIFT: u32 = KIND_SHIFT + 4;

const HAS_BALANCE: u64 = 1;
const HAS_CREDIT_LIMIT: u64 = 1 << 1;
const SUSPENDED: u64 = 1 << 2;
const CLOSED: u64 = 1 << 3;
const HAS_COUNTERPARTY: u64 = 1 << 4;
/// Flag bits: the five above.
const FLAGS_COUNT: u32 = 5;

/// An amount's units as 68-bit two's complement (0 for none).
fn amount_bits(amount: Option<Amount>) -> u128 {
    amount.map_or(0, Amount::to_bits)
}

fn amount_from_bits(bits: u128, present: bool) -> Option<Amount> {
    // Only ever packed from a valid `Amount`, so a present one is always read back; a decoded
    // one out of range is refused by `Entry::from_raw`.
    present.then(|| Amount::from_bits(bits).ok()).flatten()
}

impl Packed {
    /// `high` being the fields' top word (its unused bits zero).
    fn new(low: [u64; 2], high: u64) -> Packed {
        Packed {
            low,
            high: PACKED_MARK | high,
        }
    }

    fn low(&self) -> u128 {
        u128::from(self.low[0]) | (u128::from(self.low[1]) << 64)
    }

    /// The fields' top word, as stored.
    fn high(&self) -> u64 {
        self.high.get() & !PACKED_MARK.get()
    }

    fn flags(&self) -> u64 {
        self.high() >> FLAGS_SHIFT
    }
}

impl Entry {
    #[allow(clippy::too_many_arguments)]
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_possible_wrap
    )] // bit packing: every cast keeps exactly the bits meant
    pub fn new(
        seq: Sequence,
        at: Timestamp,
        kind: EntryKind,
        balance: Option<Amount>,
        credit_limit: Option<Amount>,
        suspended: bool,
        closed: bool,
        counterparty: Option<AccountId>,
    ) -> Entry {
        let flag = |set: bool, bit: u64| if set { bit } else { 0 };
        let flags = flag(balance.is_some(), HAS_BALANCE)
            | flag(credit_limit.is_some(), HAS_CREDIT_LIMIT)
            | flag(suspended, SUSPENDED)
            | flag(closed, CLOSED)
            | flag(counterparty.is_some(), HAS_COUNTERPARTY);
        let credit = amount_bits(credit_limit);
        let low = amount_bits(balance) | (credit << AMOUNT_BITS);
        // The credit limit's top 8 bits, beyond `low`: the cast keeps them.
        let high = (credit >> CREDIT_LOW_BITS) as u64
            | u64::from(counterparty.map_or(0, |id| id.0)) << COUNTERPARTY_SHIFT
            | u64::from(kind.index()) << KIND_SHIFT
            | flags << FLAGS_SHIFT;
        Entry {
            seq,
            at,
            // Splitting a `u128` into its two words: the casts keep the bits meant.
            packed: Packed::new([low as u64, (low >> 64) as u64], high),
        }
    }

    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_possible_wrap
    )] // bit packing: every cast keeps exactly the bits meant
    pub fn kind(&self) -> EntryKind {
        // Only ever packed from an `EntryKind`, so the fallback is unreachable.
        EntryKind::from_index(((self.packed.high() >> KIND_SHIFT) & KIND_MASK) as u32)
            .unwrap_or(EntryKind::Opened)
    }

    /// `None` while the account uses its primary's balance.
    pub fn balance(&self) -> Option<Amount> {
        amount_from_bits(self.packed.low(), self.packed.flags() & HAS_BALANCE != 0)
    }

    /// `None` while the account uses its primary's balance.
    pub fn credit_limit(&self) -> Option<Amount> {
        let bits = (self.packed.low() >> AMOUNT_BITS)
            | (u128::from(self.packed.high() & ((1 << CREDIT_HIGH_BITS) - 1)) << CREDIT_LOW_BITS);
        amount_from_bits(bits, self.packed.flags() & HAS_CREDIT_LIMIT != 0)
    }

    pub fn suspended(&self) -> bool {
        self.packed.flags() & SUSPENDED != 0
    }

    pub fn closed(&self) -> bool {
        self.packed.flags() & CLOSED != 0
    }

    /// The other account of a transfer, or the other side of a charge made for a shared
    /// subaccount.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_possible_wrap
    )] // bit packing: every cast keeps exactly the bits meant
    pub fn counterparty(&self) -> Option<AccountId> {
        (self.packed.flags() & HAS_COUNTERPARTY != 0)
            .then_some(AccountId((self.packed.high() >> COUNTERPARTY_SHIFT) as u32))
    }
}

/// An entry's size in snapshot format 7: its in-memory fields as five little-endian words.
pub const ENTRY_RAW_BYTES: usize = 40;

impl Entry {
    /// The entry as snapshot format 7 stores it: seq, at, then the packed words, each
    /// little-endian. Fixed width, so a snapshot's ten million entries decode without
    /// varints (reading them field by field was most of a 10M snapshot's longest section).
    pub fn to_raw(&self) -> [u8; ENTRY_RAW_BYTES] {
        let mut raw = [0u8; ENTRY_RAW_BYTES];
        let words = [
            self.seq.0,
            u64::from_le_bytes(self.at.0.to_le_bytes()),
            self.packed.low[0],
            self.packed.low[1],
            self.packed.high(),
        ];
        for (slot, word) in raw.chunks_exact_mut(8).zip(words) {
            slot.copy_from_slice(&word.to_le_bytes());
        }
        raw
    }

    /// The entry [`Entry::to_raw`] wrote; `None` for bytes it cannot have written (an unknown
    /// kind, an amount out of range or flagged absent but not zero, bits set that no field
    /// owns): exactly the bytes that [`Entry::new`] packs (a test holds this against unpacking
    /// and repacking every field, which cost a tenth of a 10M snapshot's open).
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_possible_wrap
    )] // bit packing: every cast keeps exactly the bits meant
    pub fn from_raw(raw: &[u8; ENTRY_RAW_BYTES]) -> Option<Entry> {
        let mut words = [0u64; 5];
        for (word, bytes) in words.iter_mut().zip(raw.chunks_exact(8)) {
            *word = u64::from_le_bytes(bytes.try_into().ok()?);
        }
        let [seq, at, low0, low1, high] = words;
        let read = Entry {
            seq: Sequence(seq),
            at: Timestamp(i64::from_le_bytes(at.to_le_bytes())),
            packed: Packed::new([low0, low1], high),
        };
        let flags = read.packed.flags();
        // No bit beyond the five flags (the stored word's, the mark included); a known kind.
        if high >> FLAGS_SHIFT >> FLAGS_COUNT != 0 {
            return None;
        }
        EntryKind::from_index(((high >> KIND_SHIFT) & KIND_MASK) as u32)?;
        // Each amount: in range when flagged present, all zero when not.
        let low = read.packed.low();
        let credit = (low >> AMOUNT_BITS)
            | (u128::from(high & ((1 << CREDIT_HIGH_BITS) - 1)) << CREDIT_LOW_BITS);
        let amount_fits = |bits: u128, present: bool| {
            if present {
                amount_from_bits(bits, true).is_some()
            } else {
                bits & AMOUNT_MASK == 0
            }
        };
        let counterparty = (high >> COUNTERPARTY_SHIFT) & u64::from(u32::MAX);
        let fits = amount_fits(low, flags & HAS_BALANCE != 0)
            && amount_fits(credit, flags & HAS_CREDIT_LIMIT != 0)
            && (flags & HAS_COUNTERPARTY != 0 || counterparty == 0);
        fits.then_some(read)
    }
}

impl Encode for Entry {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        // One write per entry (see `subledger_core::fields::Out`); the same bytes as below.
        let fast =
            subledger_core::fields::encode_fast::<_, ENTRY_ENCODED_BYTES_MAX>(encoder, |out| {
                out.u64(self.seq.0)?;
                out.i64(self.at.0)?;
                out.u32(self.kind().index())?;
                for amount in [self.balance(), self.credit_limit()] {
                    out.some(amount.is_some())?;
                    if let Some(amount) = amount {
                        out.i128(amount.units())?;
                    }
                }
                out.bool(self.suspended())?;
                out.bool(self.closed())?;
                let counterparty = self.counterparty();
                out.some(counterparty.is_some())?;
                if let Some(AccountId(id)) = counterparty {
                    out.u32(id)?;
                }
                Some(())
            });
        if let Some(result) = fast {
            return result;
        }
        self.seq.encode(encoder)?;
        self.at.encode(encoder)?;
        self.kind().encode(encoder)?;
        self.balance().encode(encoder)?;
        self.credit_limit().encode(encoder)?;
        self.suspended().encode(encoder)?;
        self.closed().encode(encoder)?;
        self.counterparty().encode(encoder)
    }
}

/// The most bytes an encoded entry takes: seq and instant (9 each), kind (5), two optional
/// amounts (1 + 17 each), two flags, an optional account id (1 + 5).
const ENTRY_ENCODED_BYTES_MAX: usize = 67;

impl EntryKind {
    /// The variant's index, as bincode encodes it (declaration order).
    fn index(self) -> u32 {
        u32::from(self as u8)
    }

    fn from_index(index: u32) -> Option<EntryKind> {
        const KINDS: [EntryKind; 14] = [
            EntryKind::Opened,
            EntryKind::TopUp,
            EntryKind::Charge,
            EntryKind::TransferIn,
            EntryKind::TransferOut,
            EntryKind::CreditIn,
            EntryKind::CreditOut,
            EntryKind::CreditLine,
            EntryKind::SwitchedToOwnBalance,
            EntryKind::Suspended,
            EntryKind::Reactivated,
            EntryKind::Closed,
            EntryKind::ThresholdSet,
            EntryKind::LowBalanceAlert,
        ];
        KINDS.get(usize::try_from(index).ok()?).copied()
    }
}

/// An entry read from one borrowed slice (see `subledger_core::fields`); `None` for anything
/// the ordinary decoding must handle.
fn parse_entry(fields: &mut subledger_core::fields::Fields<'_>) -> Option<Entry> {
    let seq = Sequence(fields.u64()?);
    let at = Timestamp(fields.i64()?);
    let kind = EntryKind::from_index(fields.u32()?)?;
    let mut amount = || -> Option<Option<Amount>> {
        if fields.is_some()? {
            Amount::from_units(fields.i128()?).ok().map(Some)
        } else {
            Some(None)
        }
    };
    let balance = amount()?;
    let credit_limit = amount()?;
    let suspended = fields.bool()?;
    let closed = fields.bool()?;
    let counterparty = if fields.is_some()? {
        Some(AccountId(fields.u32()?))
    } else {
        None
    };
    Some(Entry::new(
        seq,
        at,
        kind,
        balance,
        credit_limit,
        suspended,
        closed,
        counterparty,
    ))
}

impl<Context> Decode<Context> for Entry {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Entry, bincode::error::DecodeError> {
        if let Some(entry) =
            subledger_core::fields::decode_fast(decoder, ENTRY_ENCODED_BYTES_MAX, parse_entry)
        {
            return Ok(entry);
        }
        let seq = Sequence::decode(decoder)?;
        let at = Timestamp::decode(decoder)?;
        let kind = EntryKind::decode(decoder)?;
        let balance = Option::<Amount>::decode(decoder)?;
        let credit_limit = Option::<Amount>::decode(decoder)?;
        let suspended = bool::decode(decoder)?;
        let closed = bool::decode(decoder)?;
        let counterparty = Option::<AccountId>::decode(decoder)?;
        Ok(Entry::new(
            seq,
            at,
            kind,
            balance,
            credit_limit,
            suspended,
            closed,
            counterparty,
        ))
    }
}

bincode::impl_borrow_decode!(Entry);

/// One account's history and what else the read side keeps per account: its entries, oldest
/// first, its names, its creation instant and its active secrets.
///
/// An account's first entry is its opening, and for nearly every account it says only "opened,
/// nothing moved yet": balance and credit limit 0 (or the primary's balance used), neither
/// suspended nor closed, at the account's creation instant and the sequence number of its
/// first name. Such an opening is not stored but implied (one byte, kept with the secrets): a
/// million accounts' opening entries took ~77 MB with their allocations, most accounts having
/// one or two entries (ADR 0008). Reads go through [`AccountHistory::entries`], which yields it first as if it
/// were stored; encoding writes it as before, so snapshots are unchanged. The secret an account
/// was created with is kept the same way while it is its only one (by id: see
/// [`AccountHistory::secrets`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountHistory {
    /// Every entry but an implied opening one, one of them inline. (A `thin_vec::ThinVec`,
    /// length and capacity in the allocation, saved 8 bytes per account but cost replay
    /// ~10 %: reading ahead, and appending, then waits for the header's cache line before the
    /// last entry's.)
    stored: Stored,
    /// The name given at creation and the sequence number of the creating event, which is
    /// also the implied opening's and the creation secret's (hence not public). Renames are
    /// kept with the rare things, in `kept`.
    first_name: Option<Named>,
    /// The active secrets, the renames, whether the opening entry is implied, and when the
    /// account was created (its opening entry's instant).
    kept: Kept,
}

/// Whether an account's opening entry is implied, and with which funding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Implied {
    /// Stored, or not known (views decoded from snapshot formats 1 and 2).
    #[default]
    No,
    /// Own balance and credit limit 0.
    Own,
    /// The primary's balance.
    Shared,
}

impl Implied {
    /// How `entry`, an account's first, can be implied: if it opened the account with nothing
    /// moved (balance and credit limit 0, or the primary's balance), neither suspended nor
    /// closed.
    fn of(entry: &Entry) -> Implied {
        if entry.kind() != EntryKind::Opened
            || entry.suspended()
            || entry.closed()
            || entry.counterparty().is_some()
        {
            return Implied::No;
        }
        match (entry.balance(), entry.credit_limit()) {
            (None, None) => Implied::Shared,
            (Some(Amount::ZERO), Some(Amount::ZERO)) => Implied::Own,
            _ => Implied::No,
        }
    }

    fn entry(self, seq: Sequence, at: Timestamp) -> Option<Entry> {
        let zero = match self {
            Implied::No => return None,
            Implied::Own => Some(Amount::ZERO),
            Implied::Shared => None,
        };
        Some(Entry::new(
            seq,
            at,
            EntryKind::Opened,
            zero,
            zero,
            false,
            false,
            None,
        ))
    }
}

/// An account's active secrets, oldest first, and its renames, with whether its opening entry
/// is implied. Almost every account has one secret, the one it was created with, and no
/// rename: the secret is kept as its id only (its instant is the account's creation instant
/// and its hash is in the creating event, at the first name's sequence number). Any other set
/// of secrets (after a rotation), and any rename, is kept behind one pointer ([`Rare`]). As a
/// `Vec` the secrets cost each account a 24-byte header and a 40-byte allocation; as one
/// `SecretView` inline, 40 bytes; the renames' own pointer cost every account 8 bytes. The
/// opening's byte rides in each variant, where the secrets leave room: 24 bytes for all (a
/// field of its own took 8, with padding).
///
/// The creation instant rides in the same 24 bytes, in 48 bits ([`ShortInstant`]), where it
/// fits — every instant within ±4,400 years of 1970 — and in full behind the pointer where it
/// does not: a field of its own took 8 bytes in every account.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kept {
    NoSecret(Implied, ShortInstant),
    Initial(SecretId, Implied, ShortInstant),
    // The box is the point: one thin pointer, for the few accounts that rotated a secret or
    // were renamed.
    Rare(Box<Rare>, Implied),
}

/// What few accounts have: a set of secrets other than the creation one alone (listed in
/// full, possibly none), and renames; and the creation instant of any account that has one
/// of them, or whose instant needs more than 48 bits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Rare {
    secrets: Vec<SecretView>,
    /// The names after the first, oldest first.
    renames: Vec<Named>,
    created_at: Timestamp,
}

/// An instant in milliseconds as 48-bit two's complement (±2⁴⁷ ms, about ±4,460 years).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ShortInstant([u8; 6]);

impl ShortInstant {
    /// Bits kept.
    const BITS: u32 = 48;

    /// `at` in 48 bits, if it fits.
    fn new(at: Timestamp) -> Option<ShortInstant> {
        let limit = 1_i64 << (ShortInstant::BITS - 1);
        if !(-limit..limit).contains(&at.0) {
            return None;
        }
        let mut bytes = [0; 6];
        bytes.copy_from_slice(at.0.to_le_bytes().get(..6)?);
        Some(ShortInstant(bytes))
    }

    fn get(self) -> Timestamp {
        let mut bytes = [0; 8];
        if let Some(low) = bytes.get_mut(..6) {
            low.copy_from_slice(&self.0);
        }
        // Sign-extends the 48 bits.
        let shift = 64 - ShortInstant::BITS;
        Timestamp((i64::from_le_bytes(bytes) << shift) >> shift)
    }
}

impl Default for Kept {
    fn default() -> Kept {
        Kept::NoSecret(Implied::No, ShortInstant::default())
    }
}

impl Kept {
    fn opening(&self) -> Implied {
        match self {
            Kept::NoSecret(opening, _) | Kept::Initial(_, opening, _) | Kept::Rare(_, opening) => {
                *opening
            }
        }
    }

    fn set_opening(&mut self, implied: Implied) {
        match self {
            Kept::NoSecret(opening, _) | Kept::Initial(_, opening, _) | Kept::Rare(_, opening) => {
                *opening = implied;
            }
        }
    }

    fn created_at(&self) -> Timestamp {
        match self {
            Kept::NoSecret(_, at) | Kept::Initial(_, _, at) => at.get(),
            Kept::Rare(rare, _) => rare.created_at,
        }
    }

    fn renames(&self) -> &[Named] {
        match self {
            Kept::Rare(rare, _) => &rare.renames,
            Kept::NoSecret(..) | Kept::Initial(..) => &[],
        }
    }
}

/// Below this capacity a history's list grows by a fresh allocation and a copy, above it by
/// `realloc` (which moves large blocks by remapping their pages rather than copying them).
const ENTRIES_MOVED_ON_GROWTH_MAX: usize = 256;

/// An account's stored entries: one inline, more in a list. At a million accounts most keep
/// one entry beside their implied opening (the transfer that funded them), and a list of one
/// took a 48-byte allocation per account; inline it costs the record 16 bytes (an entry is
/// 40, a list 24, and `Entry`'s never-zero word tells the two apart). Never a list of one,
/// so that equal entries are held alike.
#[derive(Debug, Clone)]
enum Stored {
    One(Entry),
    Many(Vec<Entry>),
}

impl Default for Stored {
    fn default() -> Stored {
        Stored::Many(Vec::new())
    }
}

impl PartialEq for Stored {
    fn eq(&self, other: &Stored) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Stored {}

impl Stored {
    fn from_vec(mut entries: Vec<Entry>) -> Stored {
        match entries.as_slice() {
            [only] => Stored::One(*only),
            _ => {
                entries.shrink_to_fit();
                Stored::Many(entries)
            }
        }
    }

    fn into_vec(self) -> Vec<Entry> {
        match self {
            Stored::One(entry) => vec![entry],
            Stored::Many(entries) => entries,
        }
    }

    fn as_slice(&self) -> &[Entry] {
        match self {
            Stored::One(entry) => std::slice::from_ref(entry),
            Stored::Many(entries) => entries,
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Stored::Many(entries) if entries.is_empty())
    }

    fn last(&self) -> Option<&Entry> {
        match self {
            Stored::One(entry) => Some(entry),
            Stored::Many(entries) => entries.last(),
        }
    }

    fn push(&mut self, entry: Entry) {
        match self {
            Stored::Many(entries) if entries.is_empty() => *self = Stored::One(entry),
            Stored::One(first) => {
                // Grown one slot at a time up to four, not by the usual jump to four: most
                // accounts keep only a few entries, and with a million accounts the empty
                // slots were a fifth of the read side's memory. Past four the list doubles.
                *self = Stored::Many(vec![*first, entry]);
            }
            Stored::Many(entries) => {
                if entries.len() == entries.capacity()
                    && entries.capacity() < ENTRIES_MOVED_ON_GROWTH_MAX
                {
                    // A small list grows into a fresh allocation rather than by `realloc`:
                    // glibc's `realloc` skips the per-thread cache and searched the arena's
                    // bins, a fifth of the views thread's time under 256 clients.
                    let capacity = if entries.capacity() < 4 {
                        entries.capacity() + 1
                    } else {
                        entries.capacity() * 2
                    };
                    let mut grown = Vec::with_capacity(capacity);
                    grown.extend_from_slice(entries);
                    *entries = grown;
                }
                entries.push(entry);
            }
        }
    }

    fn insert_first(&mut self, entry: Entry) {
        let mut entries = std::mem::take(self).into_vec();
        entries.insert(0, entry);
        *self = Stored::from_vec(entries);
    }
}

/// An account's entries as stored and implied, read like a slice of entries (by value).
#[derive(Debug, Clone, Copy)]
pub struct Entries<'a> {
    opening: Option<Entry>,
    stored: &'a [Entry],
}

impl<'a> Entries<'a> {
    pub fn len(self) -> usize {
        usize::from(self.opening.is_some()) + self.stored.len()
    }

    pub fn is_empty(self) -> bool {
        self.opening.is_none() && self.stored.is_empty()
    }

    pub fn get(self, index: usize) -> Option<Entry> {
        match self.opening {
            Some(opening) if index == 0 => Some(opening),
            Some(_) => self.stored.get(index - 1).copied(),
            None => self.stored.get(index).copied(),
        }
    }

    pub fn first(self) -> Option<Entry> {
        self.opening.or_else(|| self.stored.first().copied())
    }

    pub fn last(self) -> Option<Entry> {
        self.stored.last().copied().or(self.opening)
    }

    pub fn iter(self) -> impl DoubleEndedIterator<Item = Entry> + 'a {
        self.opening.into_iter().chain(self.stored.iter().copied())
    }

    /// The number of leading entries for which `pred` holds, entries being ordered so that it
    /// holds for a prefix (as [`slice::partition_point`]).
    pub fn partition_point(self, mut pred: impl FnMut(&Entry) -> bool) -> usize {
        match self.opening {
            Some(opening) if !pred(&opening) => 0,
            Some(_) => 1 + self.stored.partition_point(pred),
            None => self.stored.partition_point(pred),
        }
    }

    /// Whether the entries are in sequence order with time never going back.
    pub fn in_order(self) -> bool {
        let mut previous: Option<Entry> = None;
        self.iter().all(|entry| {
            let ordered =
                previous.is_none_or(|before| before.seq < entry.seq && before.at <= entry.at);
            previous = Some(entry);
            ordered
        })
    }
}

impl AccountHistory {
    /// A history from its entries and names as stored in a snapshot's histories: the opening
    /// entry is implied where it can be (see [`AccountHistory`]), so that decoded histories are
    /// held as applied ones are. The creation instant and the secrets come from the snapshot's
    /// head, when the views attach these histories.
    pub fn from_parts(mut entries: Vec<Entry>, names: Names) -> AccountHistory {
        let first = entries
            .first()
            .copied()
            .filter(|first| names.as_ref().first_seq() == Some(first.seq));
        let opening = first.map_or(Implied::No, |first| Implied::of(&first));
        if opening != Implied::No {
            entries.remove(0);
        }
        let mut history = AccountHistory {
            stored: Stored::from_vec(entries),
            first_name: None,
            kept: Kept::NoSecret(opening, ShortInstant::default()),
        };
        if let Some(first) = first.filter(|_| opening != Implied::No) {
            history.set_created_at(first.at);
        }
        history.set_names(names);
        history
    }

    /// Takes `names` as the account's names (its secrets as they are).
    fn set_names(&mut self, names: Names) {
        let Names { first, later } = names;
        self.first_name = first;
        let secrets = self.secrets();
        self.keep(secrets, later);
    }

    /// [`AccountHistory::from_parts`] for a decoder that held the first entry aside when it
    /// could be implied (`opening`) and put the others in `rest`: no entry moves when it is.
    pub(crate) fn from_decoded(
        opening: Option<Entry>,
        mut rest: Vec<Entry>,
        names: Names,
    ) -> AccountHistory {
        let mut history = AccountHistory {
            stored: Stored::default(),
            first_name: None,
            kept: Kept::default(),
        };
        history.set_names(names);
        if let Some(first) = opening {
            if history.names().first_seq() == Some(first.seq) {
                history.kept.set_opening(Implied::of(&first));
                history.set_created_at(first.at);
            } else {
                rest.insert(0, first);
            }
        }
        history.stored = Stored::from_vec(rest);
        history
    }

    /// [`AccountHistory::from_decoded`] for a history of one entry beside `opening`: no list.
    pub(crate) fn from_decoded_one(
        opening: Option<Entry>,
        only: Entry,
        names: Names,
    ) -> AccountHistory {
        let mut history = AccountHistory::from_decoded(opening, Vec::new(), names);
        history.stored.push(only);
        history
    }

    /// Whether `entry`, first in a history being decoded, may be implied (if the names agree).
    pub(crate) fn may_imply(entry: &Entry) -> bool {
        Implied::of(entry) != Implied::No
    }

    /// A history as a snapshot's head gives it: the current name, the creation instant and
    /// the secrets, no entries (all that views decoded from formats 1 and 2 have). The name
    /// applies from sequence number 0 — or, where the only secret is the one the account was
    /// created with, from the creating event's, which that secret's hash location gives: a
    /// history attached later must agree ([`AccountHistory::adopt_head`]).
    pub(crate) fn from_head(
        name: SmolStr,
        created_at: Timestamp,
        secrets: Vec<SecretView>,
    ) -> AccountHistory {
        let initial = match secrets.as_slice() {
            [only] if only.created_at == created_at => match only.hash {
                StoredHash::InLog(seq) => Some((only.id, seq)),
                StoredHash::Here(_) => None,
            },
            _ => None,
        };
        let mut history = AccountHistory {
            stored: Stored::default(),
            first_name: Some((initial.map_or(Sequence::ZERO, |(_, seq)| seq), name)),
            kept: Kept::default(),
        };
        history.set_created_at(created_at);
        match (initial, ShortInstant::new(created_at)) {
            (Some((id, _)), Some(short)) => history.kept = Kept::Initial(id, Implied::No, short),
            _ => history.set_secrets(secrets),
        }
        history
    }

    /// Takes the creation instant and the secrets of `head` (the same account as a snapshot's
    /// head gives it, [`AccountHistory::from_head`]). Where they disagree with this history's
    /// opening — never in a snapshot the engine wrote — what is kept is exactly what the two
    /// say: the opening entry stored as the histories give it, the secrets as the head does.
    pub(crate) fn adopt_head(&mut self, head: AccountHistory) {
        if self.kept.opening() != Implied::No && self.created_at() != head.created_at() {
            let opening = self.entries().first();
            if let Some(opening) = opening {
                self.stored.insert_first(opening);
            }
            self.kept.set_opening(Implied::No);
        }
        self.set_created_at(head.created_at());
        let opening = self.kept.opening();
        let renamed = !self.kept.renames().is_empty();
        match head.kept {
            // The common case, without a list made and dropped per account (the head's
            // instant is the one just taken).
            Kept::Initial(id, _, at)
                if !renamed && self.names().first_seq() == head.names().first_seq() =>
            {
                self.kept = Kept::Initial(id, opening, at);
            }
            Kept::NoSecret(_, at) if !renamed => self.kept = Kept::NoSecret(opening, at),
            _ => {
                let secrets = head.secrets();
                self.set_secrets(secrets);
            }
        }
    }

    /// The entries, an implied opening one first.
    pub fn entries(&self) -> Entries<'_> {
        Entries {
            opening: self
                .kept
                .opening()
                .entry(self.creation_seq(), self.created_at()),
            stored: self.stored.as_slice(),
        }
    }

    /// The sequence number of the creating event (the first name's).
    fn creation_seq(&self) -> Sequence {
        self.names().first_seq().unwrap_or(Sequence::ZERO)
    }

    /// The last entry (the account's current values). Read for every event lean views apply:
    /// the opening is made only when no entry is stored.
    pub fn last(&self) -> Option<Entry> {
        match self.stored.last() {
            Some(last) => Some(*last),
            None => self.entries().first(),
        }
    }

    /// Appends an entry. An account's opening entry is implied where it can be: its first
    /// name, given by the same event, is pushed next (and carries its sequence number).
    pub(crate) fn push(&mut self, entry: Entry) {
        if self.kept.opening() == Implied::No && self.stored.is_empty() {
            let implied = Implied::of(&entry);
            if implied != Implied::No {
                self.kept.set_opening(implied);
                self.set_created_at(entry.at);
                return;
            }
        }
        self.stored.push(entry);
    }

    /// The stored entries' memory, for reading it ahead ([`crate::Views::warm`]).
    pub(crate) fn stored_last(&self) -> Option<&Entry> {
        self.stored.last()
    }

    /// Changes the stored entries as a list (tests that tamper with histories).
    #[cfg(test)]
    pub(crate) fn with_stored<R>(&mut self, change: impl FnOnce(&mut Vec<Entry>) -> R) -> R {
        let mut entries = std::mem::take(&mut self.stored).into_vec();
        let result = change(&mut entries);
        self.stored = Stored::from_vec(entries);
        result
    }

    /// The account's names, oldest first, each with the sequence number from which it applies.
    pub fn names(&self) -> NamesRef<'_> {
        NamesRef {
            first: self.first_name.as_ref(),
            later: self.kept.renames(),
        }
    }

    /// Adds a name (the first at creation, then renames).
    pub(crate) fn push_name(&mut self, named: Named) {
        if self.first_name.is_none() {
            self.first_name = Some(named);
            return;
        }
        let secrets = self.secrets();
        let mut renames = self.take_renames();
        renames.push(named);
        self.keep(secrets, renames);
    }

    /// Views decoded from snapshot formats 1 and 2 get no histories: their names apply from
    /// sequence number 0, as those formats always had them, and a lone secret is listed in
    /// full rather than taken for the creation one by its hash location.
    pub(crate) fn settle_head_only(&mut self) {
        if self.names().first_seq() == Some(Sequence::ZERO) {
            return;
        }
        let secrets = self.secrets();
        if let Some((seq, _)) = &mut self.first_name {
            *seq = Sequence::ZERO;
        }
        self.set_secrets(secrets);
    }

    /// When the account was created.
    pub fn created_at(&self) -> Timestamp {
        self.kept.created_at()
    }

    /// Sets the creation instant (the secrets stay as they are kept: a creation secret kept by
    /// id takes the new instant too, as its instant is the account's).
    fn set_created_at(&mut self, at: Timestamp) {
        match (&mut self.kept, ShortInstant::new(at)) {
            (Kept::NoSecret(_, short) | Kept::Initial(_, _, short), Some(fits)) => *short = fits,
            (Kept::Rare(rare, _), _) => {
                rare.created_at = at;
                if rare.renames.is_empty() {
                    // Perhaps rare only for an instant that did not fit: kept as the others.
                    let secrets = std::mem::take(&mut rare.secrets);
                    self.keep(secrets, Vec::new());
                }
            }
            (Kept::NoSecret(..) | Kept::Initial(..), None) => {
                let secrets = self.secrets_iter_at(at).collect();
                let opening = self.kept.opening();
                self.kept = Kept::Rare(
                    Box::new(Rare {
                        secrets,
                        renames: Vec::new(),
                        created_at: at,
                    }),
                    opening,
                );
            }
        }
    }

    /// Records the account's creation: its instant and the secret it was created with, whose
    /// hash is in the creating event at `seq` (pushed with the account's first name).
    pub(crate) fn created(&mut self, seq: Sequence, at: Timestamp, secret: SecretId) {
        self.set_created_at(at);
        let view = SecretView {
            id: secret,
            created_at: at,
            hash: StoredHash::InLog(seq),
        };
        // The usual case without a list made and dropped (once per account opened).
        match ShortInstant::new(at) {
            Some(short) if self.is_creation_secret(&view) && self.kept.renames().is_empty() => {
                self.kept = Kept::Initial(secret, self.kept.opening(), short);
            }
            _ => self.set_secrets(vec![view]),
        }
    }

    /// Whether `secret` is the one the account was created with, as [`Kept::Initial`] keeps it.
    fn is_creation_secret(&self, secret: &SecretView) -> bool {
        self.first_name.is_some()
            && secret.created_at == self.created_at()
            && secret.hash == StoredHash::InLog(self.creation_seq())
    }

    /// The active secrets, oldest first.
    pub fn secrets(&self) -> Vec<SecretView> {
        self.secrets_iter().collect()
    }

    /// The active secrets, oldest first, one at a time (no list made).
    pub fn secrets_iter(&self) -> impl Iterator<Item = SecretView> + '_ {
        self.secrets_iter_at(self.created_at())
    }

    /// The active secrets, a creation secret kept by id read as created at `created_at`.
    fn secrets_iter_at(&self, created_at: Timestamp) -> impl Iterator<Item = SecretView> + '_ {
        let (initial, listed) = match &self.kept {
            Kept::NoSecret(..) => (None, &[][..]),
            Kept::Initial(id, ..) => (
                Some(SecretView {
                    id: *id,
                    created_at,
                    hash: StoredHash::InLog(self.creation_seq()),
                }),
                &[][..],
            ),
            Kept::Rare(rare, _) => (None, rare.secrets.as_slice()),
        };
        initial.into_iter().chain(listed.iter().cloned())
    }

    /// The active secrets' ids, oldest first.
    pub fn secret_ids(&self) -> impl Iterator<Item = SecretId> + '_ {
        let (initial, listed) = match &self.kept {
            Kept::NoSecret(..) => (None, &[][..]),
            Kept::Initial(id, ..) => (Some(*id), &[][..]),
            Kept::Rare(rare, _) => (None, rare.secrets.as_slice()),
        };
        initial
            .into_iter()
            .chain(listed.iter().map(|secret| secret.id))
    }

    /// Sets the active secrets (the renames kept), by id only when they are the one the account
    /// was created with and the account has no renames (see [`Kept`]).
    pub(crate) fn set_secrets(&mut self, secrets: Vec<SecretView>) {
        let renames = self.take_renames();
        self.keep(secrets, renames);
    }

    /// The renames, taken out (the secrets stay as they are kept).
    fn take_renames(&mut self) -> Vec<Named> {
        match &mut self.kept {
            Kept::Rare(rare, _) => std::mem::take(&mut rare.renames),
            Kept::NoSecret(..) | Kept::Initial(..) => Vec::new(),
        }
    }

    /// Keeps `secrets` and `renames` in the smallest form that holds them (see [`Kept`]).
    fn keep(&mut self, mut secrets: Vec<SecretView>, mut renames: Vec<Named>) {
        let opening = self.kept.opening();
        let created_at = self.created_at();
        self.kept = match (ShortInstant::new(created_at), secrets.as_slice()) {
            (Some(short), []) if renames.is_empty() => Kept::NoSecret(opening, short),
            (Some(short), [only]) if renames.is_empty() && self.is_creation_secret(only) => {
                Kept::Initial(only.id, opening, short)
            }
            _ => {
                secrets.shrink_to_fit();
                renames.shrink_to_fit();
                Kept::Rare(
                    Box::new(Rare {
                        secrets,
                        renames,
                        created_at,
                    }),
                    opening,
                )
            }
        };
    }

    /// The active secrets as a `Vec<SecretView>` encodes, without making one (every account's,
    /// in every snapshot).
    pub(crate) fn encode_secrets<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        match &self.kept {
            Kept::NoSecret(..) => 0_u64.encode(encoder),
            Kept::Initial(id, ..) => {
                1_u64.encode(encoder)?;
                SecretView {
                    id: *id,
                    created_at: self.created_at(),
                    hash: StoredHash::InLog(self.creation_seq()),
                }
                .encode(encoder)
            }
            Kept::Rare(rare, _) => rare.secrets.as_slice().encode(encoder),
        }
    }

    pub(crate) fn add_secret(&mut self, secret: SecretView) {
        let mut secrets = self.secrets();
        secrets.push(secret);
        self.set_secrets(secrets);
    }

    pub(crate) fn remove_secret(&mut self, id: SecretId) {
        let mut secrets = self.secrets();
        secrets.retain(|secret| secret.id != id);
        self.set_secrets(secrets);
    }
}

impl Encode for AccountHistory {
    /// As a `Vec<Entry>` and a [`Names`], an implied opening entry written out.
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        let entries = self.entries();
        (entries.len() as u64).encode(encoder)?;
        for entry in entries.iter() {
            entry.encode(encoder)?;
        }
        self.names().encode(encoder)
    }
}

impl<Context> Decode<Context> for AccountHistory {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let entries = Vec::<Entry>::decode(decoder)?;
        let names = Names::decode(decoder)?;
        Ok(AccountHistory::from_parts(entries, names))
    }
}
bincode::impl_borrow_decode!(AccountHistory);

/// A name and the sequence number from which it applies. Names of up to 23 bytes are held
/// inline ([`SmolStr`]); an `Arc<str>` put a 32-byte allocation behind every account's name
/// (a million accounts: 32 MB, against 8 more bytes in each account's history).
pub type Named = (Sequence, SmolStr);

/// An account's names, oldest first, owned: what a snapshot's histories decode into (a history
/// keeps the first inline and the renames with its rare things: [`AccountHistory::names`]).
/// Encodes exactly as a `Vec<(Sequence, String)>` does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    first: Option<Named>,
    later: Vec<Named>,
}

impl Names {
    pub fn push(&mut self, named: Named) {
        if self.first.is_none() {
            self.first = Some(named);
        } else {
            self.later.push(named);
        }
    }

    /// The names to read.
    pub fn as_ref(&self) -> NamesRef<'_> {
        NamesRef {
            first: self.first.as_ref(),
            later: &self.later,
        }
    }
}

impl Encode for Names {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.as_ref().encode(encoder)
    }
}

/// An account's names to read, oldest first (from [`AccountHistory::names`] or
/// [`Names::as_ref`]). Encodes as [`Names`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamesRef<'a> {
    first: Option<&'a Named>,
    later: &'a [Named],
}

impl<'a> NamesRef<'a> {
    /// The current name and the sequence number from which it applies.
    pub fn last(self) -> Option<&'a Named> {
        self.later.last().or(self.first)
    }

    /// The sequence number from which the first name applies: the account's opening.
    pub fn first_seq(self) -> Option<Sequence> {
        self.first.map(|(seq, _)| *seq)
    }

    pub fn len(self) -> usize {
        usize::from(self.first.is_some()) + self.later.len()
    }

    pub fn is_empty(self) -> bool {
        self.first.is_none()
    }

    /// The name in force at `seq` (names are in sequence order: a binary search).
    pub fn at(self, seq: Sequence) -> Option<&'a str> {
        let first = self.first.filter(|(from, _)| *from <= seq)?;
        let count = self.later.partition_point(|(from, _)| *from <= seq);
        let (_, name) = count
            .checked_sub(1)
            .and_then(|index| self.later.get(index))
            .unwrap_or(first);
        Some(name)
    }

    pub fn iter(self) -> impl Iterator<Item = &'a Named> {
        self.first.into_iter().chain(self.later)
    }

    /// An owned copy.
    pub fn to_names(self) -> Names {
        let mut names = Names::default();
        for named in self.iter() {
            names.push(named.clone());
        }
        names
    }
}

impl Encode for NamesRef<'_> {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        (self.len() as u64).encode(encoder)?;
        for (from, name) in self.iter() {
            from.encode(encoder)?;
            name.as_str().encode(encoder)?;
        }
        Ok(())
    }
}

impl<Context> Decode<Context> for Names {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let mut names = Names::default();
        for (from, name) in Vec::<(Sequence, String)>::decode(decoder)? {
            names.push((from, SmolStr::from(name)));
        }
        Ok(names)
    }
}
bincode::impl_borrow_decode!(Names);

impl AccountHistory {
    /// The last entry at or before a point, if any.
    pub fn last_at_or_before(&self, point: AsOf) -> Option<Entry> {
        let entries = self.entries();
        let count = match point {
            AsOf::Seq(seq) => entries.partition_point(|entry| entry.seq <= seq),
            AsOf::At(at) => entries.partition_point(|entry| entry.at <= at),
        };
        count.checked_sub(1).and_then(|index| entries.get(index))
    }

    /// The name in force at `seq`.
    pub fn name_at(&self, seq: Sequence) -> Option<&str> {
        self.names().at(seq)
    }
}

/// A point in the past: after a sequence number, or after every event committed at or before
/// an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    Seq(Sequence),
    At(Timestamp),
}

/// One entry an event adds: (account, kind, counterparty).
pub(crate) type Touch = (AccountId, EntryKind, Option<AccountId>);

/// The entries one event adds (at most two; no allocation: this runs for every event).
pub(crate) fn touched(event: &Event) -> [Option<Touch>; 2] {
    let one = |touch: Touch| [Some(touch), None];
    match *event {
        Event::PrimaryOpened { account, .. } | Event::SubaccountCreated { account, .. } => {
            one((account, EntryKind::Opened, None))
        }
        Event::AccountSuspended { account } => one((account, EntryKind::Suspended, None)),
        Event::AccountReactivated { account } => one((account, EntryKind::Reactivated, None)),
        Event::SubaccountClosed { account } => one((account, EntryKind::Closed, None)),
        Event::SubaccountSwitchedToOwnBalance { account } => {
            one((account, EntryKind::SwitchedToOwnBalance, None))
        }
        Event::BalanceTransferred { source, target, .. } => [
            Some((source, EntryKind::TransferOut, Some(target))),
            Some((target, EntryKind::TransferIn, Some(source))),
        ],
        Event::CreditTransferred { source, target, .. } => [
            Some((source, EntryKind::CreditOut, Some(target))),
            Some((target, EntryKind::CreditIn, Some(source))),
        ],
        Event::Charged { account, payer, .. } if account == payer => {
            one((account, EntryKind::Charge, None))
        }
        Event::Charged { account, payer, .. } => [
            Some((account, EntryKind::Charge, Some(payer))),
            Some((payer, EntryKind::Charge, Some(account))),
        ],
        Event::ToppedUp { account, .. } => one((account, EntryKind::TopUp, None)),
        Event::CreditLineSet { account, .. } => one((account, EntryKind::CreditLine, None)),
        Event::LowBalanceThresholdSet { account, .. } => {
            one((account, EntryKind::ThresholdSet, None))
        }
        Event::LowBalanceAlert { account, .. } => one((account, EntryKind::LowBalanceAlert, None)),
        _ => [None, None],
    }
}

/// The entry for `id` after an event applied to `state`.
pub(crate) fn entry_after(
    state: &State,
    seq: Sequence,
    at: Timestamp,
    id: AccountId,
    kind: EntryKind,
    counterparty: Option<AccountId>,
) -> Option<Entry> {
    let account = state.account(id)?;
    let (balance, credit_limit) = match account.funding() {
        Funding::Own {
            balance,
            credit_limit,
        } => (Some(balance), Some(credit_limit)),
        Funding::Shared => (None, None),
    };
    Some(Entry::new(
        seq,
        at,
        kind,
        balance,
        credit_limit,
        account.suspended(),
        account.closed(),
        counterparty,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes an entry from `bytes` with a slice reader (the fast path, when enough bytes
    /// follow) and with an I/O reader (bincode's own decoding only).
    /// `Entry::from_raw` as it was first written: every field unpacked and packed again, the
    /// result compared with what was read. The reference for its bit checks.
    fn by_repacking(raw: &[u8; ENTRY_RAW_BYTES]) -> Option<Entry> {
        let mut words = [0u64; 5];
        for (word, bytes) in words.iter_mut().zip(raw.chunks_exact(8)) {
            *word = u64::from_le_bytes(bytes.try_into().ok()?);
        }
        let [seq, at, low0, low1, high] = words;
        if high & PACKED_MARK.get() != 0 {
            return None;
        }
        let read = Entry {
            seq: Sequence(seq),
            at: Timestamp(i64::from_le_bytes(at.to_le_bytes())),
            packed: Packed::new([low0, low1], high),
        };
        let kind = EntryKind::from_index(u32::try_from((high >> KIND_SHIFT) & KIND_MASK).ok()?)?;
        let flags = read.packed.flags();
        let balance = read.balance();
        let credit_limit = read.credit_limit();
        if (flags & HAS_BALANCE != 0) != balance.is_some()
            || (flags & HAS_CREDIT_LIMIT != 0) != credit_limit.is_some()
        {
            return None;
        }
        let rebuilt = Entry::new(
            read.seq,
            read.at,
            kind,
            balance,
            credit_limit,
            read.suspended(),
            read.closed(),
            read.counterparty(),
        );
        (rebuilt == read).then_some(read)
    }

    fn both_ways(bytes: &[u8]) -> (Option<Entry>, Option<Entry>) {
        let config = bincode::config::standard();
        let fast = bincode::decode_from_slice::<Entry, _>(bytes, config)
            .ok()
            .map(|(entry, _)| entry);
        let ordinary = bincode::decode_from_std_read::<Entry, _, _>(&mut &bytes[..], config).ok();
        (fast, ordinary)
    }

    fn any_amount() -> impl Strategy<Value = Option<Amount>> {
        proptest::option::of(
            (-100_000_000_000_000_000_000_i128..=100_000_000_000_000_000_000)
                .prop_map(|units| Amount::from_units(units).unwrap_or(Amount::ZERO)),
        )
    }

    proptest! {
        /// The fast path reads every entry as bincode does, with trailing bytes after it.
        #[test]
        fn entries_decode_the_same_both_ways(
            seq in any::<u64>(),
            at in any::<i64>(),
            kind in 0..14u32,
            balance in any_amount(),
            credit_limit in any_amount(),
            suspended in any::<bool>(),
            closed in any::<bool>(),
            counterparty in proptest::option::of(any::<u32>().prop_map(AccountId)),
        ) {
            let entry = Entry::new(
                Sequence(seq),
                Timestamp(at),
                EntryKind::from_index(kind).unwrap_or(EntryKind::Opened),
                balance,
                credit_limit,
                suspended,
                closed,
                counterparty,
            );
            // Every field reads back as given, whatever its neighbours in the packed bits.
            prop_assert_eq!(entry.kind() as u32, kind);
            prop_assert_eq!(entry.balance(), balance);
            prop_assert_eq!(entry.credit_limit(), credit_limit);
            prop_assert_eq!((entry.suspended(), entry.closed()), (suspended, closed));
            prop_assert_eq!(entry.counterparty(), counterparty);
            prop_assert_eq!((entry.seq, entry.at), (Sequence(seq), Timestamp(at)));
            let mut bytes = bincode::encode_to_vec(entry, bincode::config::standard()).unwrap_or_default();
            // The fast encoding writes what the fields one by one write.
            let fields = (Sequence(seq), Timestamp(at), entry.kind(), balance, credit_limit, suspended, closed, counterparty);
            prop_assert_eq!(&bytes, &bincode::encode_to_vec(fields, bincode::config::standard()).unwrap_or_default());
            bytes.extend([0u8; ENTRY_ENCODED_BYTES_MAX]);
            prop_assert_eq!(both_ways(&bytes), (Some(entry), Some(entry)));
        }

        /// The fixed-width form reads back as the entry, and any other 40 bytes are either
        /// refused or exactly what some entry writes.
        #[test]
        fn raw_entries_read_back_and_nothing_else_passes(raw in any::<[u8; ENTRY_RAW_BYTES]>(), seq in any::<u64>(), balance in any_amount(), credit_limit in any_amount(), kind in 0..14u32, flip in 0..ENTRY_RAW_BYTES * 8) {
            let entry = Entry::new(
                Sequence(seq),
                Timestamp(-5),
                EntryKind::from_index(kind).unwrap_or(EntryKind::Opened),
                balance,
                credit_limit,
                true,
                false,
                Some(AccountId(9)),
            );
            prop_assert_eq!(Entry::from_raw(&entry.to_raw()), Some(entry));
            let mut damaged = entry.to_raw();
            damaged[flip / 8] ^= 1 << (flip % 8);
            for bytes in [raw, damaged] {
                if let Some(read) = Entry::from_raw(&bytes) {
                    prop_assert_eq!(read.to_raw(), bytes);
                }
            }
        }

        /// The bit checks of `from_raw` accept exactly what unpacking every field and packing
        /// it again gives back unchanged (its former implementation), on any 40 bytes and on
        /// entries with one bit flipped.
        #[test]
        fn raw_entries_are_checked_as_repacking_would(raw in any::<[u8; ENTRY_RAW_BYTES]>(), balance in any_amount(), credit_limit in any_amount(), kind in 0..14u32, flip in 0..ENTRY_RAW_BYTES * 8, counterparty in proptest::option::of(any::<u32>())) {
            let entry = Entry::new(
                Sequence(3),
                Timestamp(11),
                EntryKind::from_index(kind).unwrap_or(EntryKind::Opened),
                balance,
                credit_limit,
                false,
                true,
                counterparty.map(AccountId),
            );
            let mut damaged = entry.to_raw();
            damaged[flip / 8] ^= 1 << (flip % 8);
            for bytes in [raw, entry.to_raw(), damaged] {
                prop_assert_eq!(Entry::from_raw(&bytes), by_repacking(&bytes));
            }
        }

        /// A history reads, encodes and answers point-in-time queries exactly as the plain list
        /// of its entries would, whether its opening entry is implied or stored, built by
        /// pushing or from a snapshot's parts; and it implies the opening exactly when it can.
        #[test]
        fn a_history_with_an_implied_opening_reads_as_its_entries(
            opening in (
                0..3u8,
                any::<bool>(),
                any::<bool>(),
                prop_oneof![Just(Some(Amount::ZERO)), any_amount()],
                proptest::option::of(any::<u32>().prop_map(AccountId)),
            ),
            named_at_opening in prop_oneof![4 => Just(true), 1 => Just(false)],
            later in proptest::collection::vec((1..4u64, 0..3i64, 1..14u32, any_amount()), 0..6),
            probes in proptest::collection::vec((0..40u64, -2..30i64), 1..8),
        ) {
            let (form, suspended, closed, credit, counterparty) = opening;
            // Mostly impliable openings (own balance at 0, or the primary's), some not.
            let (balance, credit_limit) = match form {
                0 => (None, None),
                1 => (Some(Amount::ZERO), credit),
                _ => (Some(Amount::ZERO), Some(Amount::ZERO)),
            };
            let plain_opening = !suspended && !closed && counterparty.is_none();
            let first = Entry::new(
                Sequence(5),
                Timestamp(7),
                EntryKind::Opened,
                balance,
                credit_limit,
                suspended && form == 0,
                closed && form == 0,
                counterparty.filter(|_| form == 0),
            );
            let mut entries = vec![first];
            let (mut seq, mut at) = (5, 7);
            for (step, wait, kind, amount) in later {
                seq += step;
                at += wait;
                let kind = EntryKind::from_index(kind).unwrap_or(EntryKind::TopUp);
                entries.push(Entry::new(Sequence(seq), Timestamp(at), kind, amount, amount, false, false, None));
            }
            let mut names = Names::default();
            names.push((Sequence(if named_at_opening { 5 } else { 4 }), SmolStr::new("a")));
            let mut pushed = AccountHistory::default();
            for entry in &entries {
                pushed.push(*entry);
            }
            pushed.set_names(names.clone());
            let decoded = AccountHistory::from_parts(entries.clone(), names.clone());
            let config = bincode::config::standard();
            let plain = bincode::encode_to_vec((&entries, &names), config).unwrap_or_default();
            let impliable = Implied::of(&first) != Implied::No;
            let expected_impliable = match form {
                0 => plain_opening,
                1 => credit == Some(Amount::ZERO),
                _ => true,
            };
            prop_assert_eq!(impliable, expected_impliable);
            prop_assert_eq!(decoded.kept.opening() != Implied::No, impliable && named_at_opening);
            if named_at_opening {
                // Pushed and decoded alike, and the applied form is the decoded one.
                prop_assert_eq!(&pushed, &decoded);
            }
            let read_back: AccountHistory = bincode::decode_from_slice(&plain, config).map(|(history, _)| history).unwrap_or_default();
            prop_assert_eq!(&read_back, &decoded);
            prop_assert_eq!(bincode::encode_to_vec(&decoded, config).unwrap_or_default(), plain);
            let listed = decoded.entries();
            prop_assert_eq!(listed.iter().collect::<Vec<_>>(), entries.clone());
            prop_assert_eq!(listed.iter().rev().collect::<Vec<_>>(), entries.iter().rev().copied().collect::<Vec<_>>());
            prop_assert_eq!((listed.len(), listed.is_empty()), (entries.len(), entries.is_empty()));
            prop_assert_eq!((listed.first(), listed.last()), (entries.first().copied(), entries.last().copied()));
            prop_assert_eq!(decoded.last(), entries.last().copied());
            for index in 0..=entries.len() {
                prop_assert_eq!(listed.get(index), entries.get(index).copied());
            }
            prop_assert!(listed.in_order());
            for (probe_seq, probe_at) in probes {
                let by_seq = |entry: &Entry| entry.seq.0 <= probe_seq;
                let by_at = |entry: &Entry| entry.at.0 <= probe_at;
                prop_assert_eq!(listed.partition_point(by_seq), entries.partition_point(by_seq));
                prop_assert_eq!(listed.partition_point(by_at), entries.partition_point(by_at));
                let expected = |count: usize| count.checked_sub(1).and_then(|index| entries.get(index).copied());
                prop_assert_eq!(decoded.last_at_or_before(AsOf::Seq(Sequence(probe_seq))), expected(entries.partition_point(by_seq)));
                prop_assert_eq!(decoded.last_at_or_before(AsOf::At(Timestamp(probe_at))), expected(entries.partition_point(by_at)));
            }
        }

        /// On damaged bytes the two ways agree: the same entry, or both refuse.
        #[test]
        fn damaged_entries_decode_the_same_both_ways(
            bytes in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let (fast, ordinary) = both_ways(&bytes);
            prop_assert_eq!(fast, ordinary);
        }
    }

    fn secret(n: u8, at: i64, seq: u64) -> SecretView {
        SecretView {
            id: SecretId::from_bytes([n; 16]),
            created_at: Timestamp(at),
            hash: StoredHash::InLog(Sequence(seq)),
        }
    }

    fn encoded_secrets(history: &AccountHistory) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut encoder = bincode::enc::EncoderImpl::new(
            bincode::enc::write::SizeWriter::default(),
            bincode::config::standard(),
        );
        history.encode_secrets(&mut encoder).unwrap();
        let mut writer =
            bincode::enc::EncoderImpl::new(VecWriter(&mut bytes), bincode::config::standard());
        history.encode_secrets(&mut writer).unwrap();
        assert_eq!(encoder.into_writer().bytes_written, bytes.len());
        bytes
    }

    struct VecWriter<'a>(&'a mut Vec<u8>);

    impl bincode::enc::write::Writer for VecWriter<'_> {
        fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
            self.0.extend_from_slice(bytes);
            Ok(())
        }
    }

    /// Instant 30, as a history keeps it beside its secrets.
    fn at30() -> ShortInstant {
        ShortInstant::new(Timestamp(30)).unwrap()
    }

    /// A shared-balance account's opening entry, nothing moved.
    fn opened(seq: u64, at: Timestamp) -> Entry {
        Entry::new(
            Sequence(seq),
            at,
            EntryKind::Opened,
            None,
            None,
            false,
            false,
            None,
        )
    }

    /// 5 units moved in from `from`, credit limit 0.
    fn moved_in(seq: u64, at: Timestamp, from: u32) -> Entry {
        Entry::new(
            Sequence(seq),
            at,
            EntryKind::TransferIn,
            Amount::from_units(5).ok(),
            Some(Amount::ZERO),
            false,
            false,
            Some(AccountId(from)),
        )
    }

    /// An account created at sequence number 3, at instant 30, with secret 1.
    fn created_history() -> AccountHistory {
        let mut history = AccountHistory::default();
        history.push(opened(3, Timestamp(30)));
        history.push_name((Sequence(3), SmolStr::new("sub")));
        history.created(Sequence(3), Timestamp(30), SecretId::from_bytes([1; 16]));
        history
    }

    /// Secrets keep their order through rotations, encode as the list they are, and the one an
    /// account was created with is kept by id only whenever it is the only one.
    #[test]
    fn secrets_keep_their_order_through_rotations_and_encode_as_a_list() {
        let as_list = |secrets: Vec<SecretView>| {
            bincode::encode_to_vec(secrets, bincode::config::standard()).unwrap()
        };
        let mut history = created_history();
        let initial = secret(1, 30, 3);
        assert_eq!(
            history.kept,
            Kept::Initial(initial.id, Implied::Shared, at30())
        );
        assert_eq!(history.secrets(), std::slice::from_ref(&initial));
        assert_eq!(encoded_secrets(&history), as_list(vec![initial.clone()]));
        history.add_secret(secret(2, 40, 4));
        assert_eq!(history.secrets(), [initial.clone(), secret(2, 40, 4)]);
        assert_eq!(
            history.secret_ids().collect::<Vec<_>>(),
            [initial.id, secret(2, 40, 4).id]
        );
        assert_eq!(encoded_secrets(&history), as_list(history.secrets()));
        // Revoking the older of two leaves the newer, listed; an unknown id changes nothing.
        history.remove_secret(initial.id);
        assert_eq!(
            history.kept,
            Kept::Rare(
                Box::new(Rare {
                    secrets: vec![secret(2, 40, 4)],
                    renames: Vec::new(),
                    created_at: Timestamp(30),
                }),
                Implied::Shared
            )
        );
        history.remove_secret(SecretId::from_bytes([9; 16]));
        assert_eq!(history.secrets(), [secret(2, 40, 4)]);
        history.remove_secret(secret(2, 40, 4).id);
        assert_eq!(history.kept, Kept::NoSecret(Implied::Shared, at30()));
        assert_eq!(encoded_secrets(&history), as_list(Vec::new()));
        // Back to the creation secret alone (as a rotation's revoking the newer one leaves it).
        history.set_secrets(vec![initial.clone()]);
        assert_eq!(
            history.kept,
            Kept::Initial(initial.id, Implied::Shared, at30())
        );
        assert_eq!(
            std::mem::size_of::<Kept>(),
            24,
            "the creation secret's id inline, any other list behind a pointer, and the opening"
        );
        // A lone secret that is not the creation one stays listed.
        for other in [secret(1, 31, 3), secret(1, 30, 4)] {
            history.set_secrets(vec![other.clone()]);
            assert_eq!(history.secrets(), [other]);
            assert!(matches!(history.kept, Kept::Rare(_, Implied::Shared)));
        }
    }

    /// A snapshot's head and histories, decoded apart, make the history that applying the
    /// events makes; where they disagree, what each says is kept.
    #[test]
    fn a_history_attached_to_its_head_is_the_applied_one() {
        let applied = created_history();
        let entries: Vec<Entry> = applied.entries().iter().collect();
        let head = || {
            AccountHistory::from_head(SmolStr::new("sub"), Timestamp(30), vec![secret(1, 30, 3)])
        };
        let mut attached = AccountHistory::from_parts(entries.clone(), applied.names().to_names());
        attached.adopt_head(head());
        assert_eq!(attached, applied);
        // A head whose creation instant is not the opening entry's: the entry is stored as the
        // histories give it, the instant is the head's.
        let mut other_instant =
            AccountHistory::from_parts(entries.clone(), applied.names().to_names());
        other_instant.adopt_head(AccountHistory::from_head(
            SmolStr::new("sub"),
            Timestamp(29),
            vec![secret(1, 29, 3)],
        ));
        assert_eq!(other_instant.entries().iter().collect::<Vec<_>>(), entries);
        assert_eq!(other_instant.created_at(), Timestamp(29));
        assert_eq!(other_instant.secrets(), [secret(1, 29, 3)]);
        // A head whose secret was recorded at another sequence number than the first name's.
        let mut other_seq = AccountHistory::from_parts(entries.clone(), applied.names().to_names());
        other_seq.adopt_head(AccountHistory::from_head(
            SmolStr::new("sub"),
            Timestamp(30),
            vec![secret(1, 30, 2)],
        ));
        assert_eq!(other_seq.secrets(), [secret(1, 30, 2)]);
        assert_eq!(other_seq.entries().iter().collect::<Vec<_>>(), entries);
        // A head that gets no histories (formats 1 and 2) names from sequence number 0 and
        // lists its lone secret as given.
        let mut head_only = head();
        assert_eq!(head_only.names().first_seq(), Some(Sequence(3)));
        head_only.settle_head_only();
        assert_eq!(head_only.names().first_seq(), Some(Sequence::ZERO));
        assert_eq!(head_only.secrets(), [secret(1, 30, 3)]);
        assert!(matches!(head_only.kept, Kept::Rare(..)));
        // Secrets held in the snapshot itself (formats 1-4) are listed as they are.
        let held = SecretView {
            hash: StoredHash::Here(Box::new(subledger_core::SecretHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g".to_string()).unwrap())),
            ..secret(1, 30, 3)
        };
        let mut formats_1_to_4 =
            AccountHistory::from_parts(entries.clone(), applied.names().to_names());
        formats_1_to_4.adopt_head(AccountHistory::from_head(
            SmolStr::new("sub"),
            Timestamp(30),
            vec![held.clone()],
        ));
        assert_eq!(formats_1_to_4.secrets(), [held]);
    }

    /// Renames are kept with the rare things, beside whatever secrets the account has, and a
    /// renamed history decoded from a snapshot and attached to its head is the applied one.
    #[test]
    fn renames_are_kept_beside_the_secrets_and_read_back_in_order() {
        let mut history = created_history();
        history.push_name((Sequence(5), SmolStr::new("renamed")));
        history.push_name((Sequence(8), SmolStr::new("again")));
        let names: Vec<(u64, &str)> = history
            .names()
            .iter()
            .map(|(seq, name)| (seq.0, name.as_str()))
            .collect();
        assert_eq!(names, [(3, "sub"), (5, "renamed"), (8, "again")]);
        assert_eq!(history.name_at(Sequence(4)), Some("sub"));
        assert_eq!(history.name_at(Sequence(7)), Some("renamed"));
        assert_eq!(history.name_at(Sequence(2)), None);
        // The creation secret is still the creation secret, now listed beside the renames.
        assert_eq!(history.secrets(), [secret(1, 30, 3)]);
        assert!(
            matches!(&history.kept, Kept::Rare(rare, Implied::Shared) if rare.renames.len() == 2)
        );
        // Rotations keep the renames; so does revoking every secret.
        history.add_secret(secret(2, 40, 9));
        history.remove_secret(secret(1, 30, 3).id);
        assert_eq!(history.secrets(), [secret(2, 40, 9)]);
        history.remove_secret(secret(2, 40, 9).id);
        assert!(history.secrets().is_empty());
        assert_eq!(history.names().len(), 3);
        history.set_secrets(vec![secret(1, 30, 3)]);
        assert_eq!(
            history.names().last().map(|(seq, _)| *seq),
            Some(Sequence(8))
        );
        // Encoded as before: the names as one list.
        let mut plain = Names::default();
        for named in history.names().iter() {
            plain.push(named.clone());
        }
        let config = bincode::config::standard();
        assert_eq!(
            bincode::encode_to_vec(history.names(), config).ok(),
            bincode::encode_to_vec(&plain, config).ok()
        );
        // Decoded apart and attached to the head, the same history.
        let entries: Vec<Entry> = history.entries().iter().collect();
        let mut attached = AccountHistory::from_parts(entries, history.names().to_names());
        attached.adopt_head(AccountHistory::from_head(
            SmolStr::new("again"),
            Timestamp(30),
            vec![secret(1, 30, 3)],
        ));
        assert_eq!(attached, history);
        assert_eq!(attached.secrets(), [secret(1, 30, 3)]);
        // Heads with a rotated pair, and with none: the renames stay, the secrets are the
        // head's.
        for secrets in [vec![secret(1, 30, 3), secret(2, 40, 9)], Vec::new()] {
            let head =
                AccountHistory::from_head(SmolStr::new("again"), Timestamp(30), secrets.clone());
            let entries: Vec<Entry> = history.entries().iter().collect();
            let mut attached = AccountHistory::from_parts(entries, history.names().to_names());
            attached.adopt_head(head);
            assert_eq!(attached.secrets(), secrets);
            assert_eq!(attached.names().len(), 3);
            assert_eq!(attached.created_at(), Timestamp(30));
            let mut applied = history.clone();
            applied.set_secrets(secrets);
            assert_eq!(attached, applied);
        }
    }

    /// The creation instant is held in 48 bits where it fits and in full behind the rare
    /// pointer where it does not; either way it reads back, and a history's form follows from
    /// what it holds, not from how it got there.
    #[test]
    fn creation_instants_read_back_short_or_in_full() {
        assert_eq!(std::mem::size_of::<Kept>(), 24);
        let limit = 1_i64 << 47;
        for millis in [0, 1, -1, 30, 1_764_000_000_000, limit - 1, -limit] {
            let short = ShortInstant::new(Timestamp(millis));
            assert_eq!(
                short.map(ShortInstant::get),
                Some(Timestamp(millis)),
                "{millis}"
            );
        }
        for millis in [limit, -limit - 1, i64::MAX, i64::MIN] {
            assert_eq!(ShortInstant::new(Timestamp(millis)), None, "{millis}");
        }
        // An account created at an instant beyond 48 bits: kept in full, read back, and its
        // creation secret still read as created then.
        let far = Timestamp(i64::MAX - 5);
        let mut history = AccountHistory::default();
        history.push(opened(3, far));
        history.push_name((Sequence(3), SmolStr::new("sub")));
        history.created(Sequence(3), far, SecretId::from_bytes([1; 16]));
        assert!(matches!(history.kept, Kept::Rare(..)));
        assert_eq!(history.created_at(), far);
        assert_eq!(history.secrets(), [secret_at(1, far, 3)]);
        assert_eq!(history.entries().first().map(|entry| entry.at), Some(far));
        // Moved back within 48 bits (a head that says otherwise), it is kept short again and
        // equals the history made there in the first place.
        history.adopt_head(AccountHistory::from_head(
            SmolStr::new("sub"),
            Timestamp(30),
            vec![secret(1, 30, 3)],
        ));
        assert_eq!(history.created_at(), Timestamp(30));
        assert!(matches!(history.kept, Kept::Initial(..)));
        assert_eq!(history.secrets(), [secret(1, 30, 3)]);
        // A renamed account keeps its instant with the renames.
        let mut renamed = created_history();
        renamed.push_name((Sequence(5), SmolStr::new("renamed")));
        assert_eq!(renamed.created_at(), Timestamp(30));
        assert_eq!(renamed.secrets(), [secret(1, 30, 3)]);
    }

    fn secret_at(n: u8, at: Timestamp, seq: u64) -> SecretView {
        SecretView {
            created_at: at,
            ..secret(n, 0, seq)
        }
    }

    /// A decoded history of one entry beside its opening is the one decoded from a list of it,
    /// whether the opening is implied, stored (names that disagree) or absent.
    #[test]
    fn one_decoded_entry_is_the_list_of_one() {
        let opening = opened(3, Timestamp(30));
        let only = moved_in(8, Timestamp(31), 1);
        for (opening, named_at) in [(Some(opening), 3), (Some(opening), 2), (None, 3)] {
            let mut names = Names::default();
            names.push((Sequence(named_at), SmolStr::new("sub")));
            let one = AccountHistory::from_decoded_one(opening, only, names.clone());
            let listed = AccountHistory::from_decoded(opening, vec![only], names);
            assert_eq!(one, listed, "{opening:?} named at {named_at}");
            assert_eq!(one.last(), Some(only));
            assert_eq!(one.entries().len(), 1 + usize::from(opening.is_some()));
        }
    }

    #[test]
    fn one_stored_entry_is_held_inline_and_any_form_compares_by_its_entries() {
        assert_eq!(
            std::mem::size_of::<Stored>(),
            40,
            "an entry, or a list in its place"
        );
        let entry = |seq| moved_in(seq, Timestamp(1), 2);
        let mut stored = Stored::default();
        assert!(stored.is_empty() && stored.last().is_none());
        stored.push(entry(1));
        assert!(matches!(stored, Stored::One(_)));
        assert_eq!(stored.last(), Some(&entry(1)));
        stored.push(entry(2));
        assert!(matches!(&stored, Stored::Many(list) if list.capacity() == 2));
        stored.push(entry(3));
        assert_eq!(stored.as_slice(), [entry(1), entry(2), entry(3)]);
        // One slot at a time up to four, then doubling (a fresh block while small).
        let mut grown = stored.clone();
        let mut capacities = Vec::new();
        for seq in 4..=20 {
            grown.push(entry(seq));
            if let Stored::Many(list) = &grown {
                capacities.push(list.capacity());
            }
        }
        assert_eq!(capacities[..6], [4, 8, 8, 8, 8, 16]);
        assert_eq!(grown.as_slice().len(), 20);
        assert!(grown.as_slice().iter().map(|entry| entry.seq.0).eq(1..=20));
        assert_eq!(stored, Stored::from_vec(vec![entry(1), entry(2), entry(3)]));
        assert_ne!(stored, Stored::from_vec(vec![entry(1), entry(2)]));
        // Never a list of one: decoded, tampered with or pushed, one entry is held inline.
        assert!(matches!(Stored::from_vec(vec![entry(4)]), Stored::One(_)));
        assert_eq!(
            Stored::from_vec(vec![entry(4)]),
            Stored::Many(vec![entry(4)])
        );
        let mut front = Stored::default();
        front.insert_first(entry(9));
        assert!(matches!(front, Stored::One(_)));
        front.insert_first(entry(8));
        assert_eq!(front.as_slice(), [entry(8), entry(9)]);
        assert_eq!(Stored::from_vec(Vec::new()), Stored::default());
        assert!(Stored::from_vec(Vec::new()).is_empty());
    }

    #[test]
    fn an_entry_is_40_bytes_and_keeps_every_value() {
        assert_eq!(std::mem::size_of::<Entry>(), 40);
        let amounts = [
            None,
            Some(Amount::ZERO),
            Some(Amount::MIN),
            Some(Amount::MAX),
            Amount::from_units(-1).ok(),
            Amount::from_units(123_456_789_012_345).ok(),
        ];
        for balance in amounts {
            for credit_limit in amounts {
                for (suspended, closed) in
                    [(false, false), (true, false), (false, true), (true, true)]
                {
                    for (counterparty, kind) in [
                        (None, EntryKind::Opened),
                        (Some(AccountId(0)), EntryKind::TransferIn),
                        (Some(AccountId(u32::MAX)), EntryKind::LowBalanceAlert),
                    ] {
                        let entry = Entry::new(
                            Sequence(7),
                            Timestamp(-3),
                            kind,
                            balance,
                            credit_limit,
                            suspended,
                            closed,
                            counterparty,
                        );
                        assert_eq!(entry.balance(), balance);
                        assert_eq!(entry.credit_limit(), credit_limit);
                        assert_eq!((entry.suspended(), entry.closed()), (suspended, closed));
                        assert_eq!(entry.counterparty(), counterparty);
                        assert_eq!(entry.kind(), kind);
                        assert_eq!(Entry::from_raw(&entry.to_raw()), Some(entry));
                        let bytes = bincode::encode_to_vec(entry, bincode::config::standard())
                            .unwrap_or_default();
                        let decoded: Result<(Entry, usize), _> =
                            bincode::decode_from_slice(&bytes, bincode::config::standard());
                        assert_eq!(decoded.ok(), Some((entry, bytes.len())));
                    }
                }
            }
        }
    }
}
