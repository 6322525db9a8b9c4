//! The idempotency index: every applied money command with its exact content, in log order.
//!
//! It is the largest part of the writer's state (one record per money command ever applied),
//! so its layout is about bytes per command:
//!
//! - records are packed 56-byte structs in a `Vec`, in the order they were applied (sequence
//!   order), so iteration (hashing, snapshots) needs no sorting and growth is an append. The
//!   amount is held as its 68 bits (a word and a byte) and the reference,
//!   usually empty, as an index into a side list of the non-empty ones.
//!   `(CommandId, CommandRecord)` pairs took 80 bytes.
//! - the lookup table holds 8-byte slots: half of the id's hash (a tag) and the record's
//!   position, both `u32` (a map of id → position held 24-byte entries, (hash, position)
//!   pairs 16). The tag is kept so that growing the table never reads the records back: with
//!   positions alone, each resize made one cache-missing read per record (a 10M-transfer run
//!   lost a quarter of its throughput to that). The table hashes the tag spread over 64 bits
//!   ([`spread`]); two ids with one tag are told apart by the records, as equal hashes were.
//!   Positions in a `u32` cap the index at 4 billion commands (refused beyond, not wrapped).
//! - the hash is keyed (SipHash-1-3 with a random 128-bit key, [`TagKey`]): command ids come
//!   from clients, and with an unkeyed hash (FxHash) one could craft ids that all collide and
//!   turn every insert into a scan of them. The key only decides where a position sits in the
//!   table, never an answer, so the state machine stays deterministic. Snapshot format 10
//!   stores the key and every record's tag, so that an open enters the table without hashing
//!   ten million ids again (16 % of the thread that decodes them).
//! - bulk loading (recovery, snapshots) appends records without entering them, then enters
//!   them all at once grouped by the part of the table they land in
//!   ([`CommandIndex::enter_appended`]): entered one by one, each insert was a cache miss or
//!   two into a table of every command (at 3M commands, most of the replay reader's time).

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;

use crate::event::Event;
use crate::ids::{AccountId, CommandId, Sequence, Timestamp};
use crate::money::Amount;
use crate::state::{
    ApplyFault, CommandContent, CommandRecord, MoneyKind, COMMAND_RECORD_ENCODED_BYTES_MAX,
};

/// What a money event leaves in the index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MoneyCommand<'a> {
    pub id: CommandId,
    pub kind: MoneyKind,
    pub source: AccountId,
    pub target: AccountId,
    pub amount: Amount,
    pub reference: &'a str,
}

/// The one mapping from events to idempotency records (`None` for events that are not money
/// commands), used by `State::apply` ([`CommandIndex::record_event`]) and by bulk loading
/// ([`CommandIndex::append_event`]) alike.
pub(crate) fn money_command(event: &Event) -> Option<MoneyCommand<'_>> {
    let (id, kind, source, target, amount, reference) = match event {
        Event::BalanceTransferred {
            command,
            source,
            target,
            amount,
            reference,
        } => (
            command,
            MoneyKind::BalanceTransfer,
            source,
            target,
            amount,
            reference,
        ),
        Event::CreditTransferred {
            command,
            source,
            target,
            amount,
            reference,
        } => (
            command,
            MoneyKind::CreditTransfer,
            source,
            target,
            amount,
            reference,
        ),
        Event::Charged {
            command,
            account,
            amount,
            reference,
            ..
        } => (
            command,
            MoneyKind::Charge,
            account,
            account,
            amount,
            reference,
        ),
        Event::ToppedUp {
            command,
            account,
            amount,
            reference,
        } => (
            command,
            MoneyKind::TopUp,
            account,
            account,
            amount,
            reference,
        ),
        _ => return None,
    };
    Some(MoneyCommand {
        id: *id,
        kind,
        source: *source,
        target: *target,
        amount: *amount,
        reference,
    })
}

/// Whether `event` is a money command's (one the idempotency index records).
pub fn is_money_event(event: &Event) -> bool {
    money_command(event).is_some()
}

/// The fixed part of an idempotency record in snapshot format 7: the id (16 bytes), seq (u64
/// LE), at (i64 LE), amount (i128 LE), source and target (u32 LE) and kind (one byte); the
/// reference follows as a bincode string. Read with varints, these records were most of the
/// index section's decoding at 10M transfers.
pub const RECORD_RAW_BYTES: usize = 57;

/// The fields of a record's fixed part; `None` for an unknown kind or an amount out of range.
#[allow(clippy::type_complexity)]
fn parse_raw(
    raw: &[u8; RECORD_RAW_BYTES],
) -> Option<(
    CommandId,
    Sequence,
    Timestamp,
    Amount,
    AccountId,
    AccountId,
    MoneyKind,
)> {
    let id = CommandId::from_bytes(raw[..16].try_into().ok()?);
    let seq = Sequence(u64::from_le_bytes(raw[16..24].try_into().ok()?));
    let at = Timestamp(i64::from_le_bytes(raw[24..32].try_into().ok()?));
    let amount = Amount::from_units(i128::from_le_bytes(raw[32..48].try_into().ok()?)).ok()?;
    let source = AccountId(u32::from_le_bytes(raw[48..52].try_into().ok()?));
    let target = AccountId(u32::from_le_bytes(raw[52..56].try_into().ok()?));
    let kind = MoneyKind::from_index_byte(raw[56])?;
    Some((id, seq, at, amount, source, target, kind))
}

/// A record's fixed part in format 7's layout ([`RECORD_RAW_BYTES`]) at the start of `raw`.
fn fill_raw(raw: &mut [u8], packed: &Packed) {
    raw[..16].copy_from_slice(&packed.id.to_bytes());
    raw[16..24].copy_from_slice(&packed.seq.0.to_le_bytes());
    raw[24..32].copy_from_slice(&packed.at.0.to_le_bytes());
    raw[32..48].copy_from_slice(&packed.amount().units().to_le_bytes());
    raw[48..52].copy_from_slice(&packed.source.0.to_le_bytes());
    raw[52..56].copy_from_slice(&packed.target.0.to_le_bytes());
    raw[56] = packed.kind.index_byte();
}

/// A tag stored after a record's fixed part (format 10), `None` where none is (format 7).
fn stored_tag(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// [`CommandIndex`] in the layout of snapshot format 7 ([`RECORD_RAW_BYTES`]), for decoding.
#[derive(Debug)]
pub struct CommandIndexV7(pub CommandIndex);

impl<Context> bincode::Decode<Context> for CommandIndexV7 {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        CommandIndex::decode_v7(decoder, true, false).map(CommandIndexV7)
    }
}

/// [`CommandIndexV7`] with the records appended but not entered in the table: the caller
/// enters them ([`CommandIndex::enter_appended`] or [`CommandIndex::split_for_entry`]) before
/// any lookup, and a repeated id is found then.
#[derive(Debug)]
pub struct CommandIndexV7Unentered(pub CommandIndex);

impl<Context> bincode::Decode<Context> for CommandIndexV7Unentered {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        CommandIndex::decode_v7(decoder, false, false).map(CommandIndexV7Unentered)
    }
}
bincode::impl_borrow_decode!(CommandIndexV7Unentered);
bincode::impl_borrow_decode!(CommandIndexV7);

/// [`CommandIndexV7Unentered`] in the layout of snapshot format 10: the hash key
/// ([`TagKey`]: two little-endian u64), then format 7's records, each with its tag (u32
/// little-endian) between its fixed part and its reference. The decoded index keeps the key,
/// and its table is entered with the stored tags: no id is hashed at open.
#[derive(Debug)]
pub struct CommandIndexV10Unentered(pub CommandIndex);

impl<Context> bincode::Decode<Context> for CommandIndexV10Unentered {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        CommandIndex::decode_v7(decoder, false, true).map(CommandIndexV10Unentered)
    }
}
bincode::impl_borrow_decode!(CommandIndexV10Unentered);

/// A [`CommandIndex`] to encode in the layout of snapshot format 10
/// ([`CommandIndexV10Unentered`]).
#[derive(Debug, Clone, Copy)]
pub struct CommandIndexV10Of<'a>(pub &'a CommandIndex);

impl bincode::Encode for CommandIndexV10Of<'_> {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.0.encode_tagged(encoder, true)
    }
}

/// A [`CommandIndex`] to encode in the layout of snapshot format 7.
#[derive(Debug, Clone, Copy)]
pub struct CommandIndexV7Of<'a>(pub &'a CommandIndex);

impl bincode::Encode for CommandIndexV7Of<'_> {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.0.encode_tagged(encoder, false)
    }
}

/// One applied money command, packed (see the module comment): 56 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    id: CommandId,
    seq: Sequence,
    at: Timestamp,
    /// The amount's [`Amount::BITS`] bits: the low 64 here, the top 4 in `amount_high`. As an
    /// `Amount` (two words) the record took 64 bytes; half a million setup transfers' records
    /// are ~5 % of a million accounts' memory.
    amount_low: u64,
    source: AccountId,
    target: AccountId,
    /// 0: no reference; n: the n-th non-empty reference stored (shared ones first).
    reference: u32,
    kind: MoneyKind,
    amount_high: u8,
}

impl Packed {
    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::cast_possible_truncation)] // splitting the amount's bits: each cast keeps the bits meant
    fn new(
        id: CommandId,
        seq: Sequence,
        at: Timestamp,
        amount: Amount,
        source: AccountId,
        target: AccountId,
        reference: u32,
        kind: MoneyKind,
    ) -> Packed {
        let bits = amount.to_bits();
        Packed {
            id,
            seq,
            at,
            amount_low: bits as u64,
            source,
            target,
            reference,
            kind,
            amount_high: (bits >> 64) as u8,
        }
    }

    fn amount(&self) -> Amount {
        let bits = u128::from(self.amount_low) | (u128::from(self.amount_high) << 64);
        // Only ever packed from an `Amount`, whose bits always read back: the fallback is
        // unreachable.
        let amount = Amount::from_bits(bits);
        debug_assert!(amount.is_ok(), "a record's amount bits read back");
        amount.unwrap_or(Amount::ZERO)
    }
}

/// The idempotency index of a [`State`](crate::State). Normally inside the state, updated by
/// its `apply`; recovery detaches it so it can be rebuilt on another thread from the same
/// events ([`CommandIndex::append_event`], then [`CommandIndex::enter_appended`]) while the
/// state applies them, then attaches it back.
#[derive(Debug, Clone, Default)]
pub struct CommandIndex {
    /// (tag of the id, position in `store`): see the module comment.
    positions: Slots,
    store: Store,
    hasher: TagKey,
    /// Tags of the records at the end of `store` that are not in `positions` yet (bulk
    /// loading; see [`CommandIndex::enter_appended`]).
    appended: Vec<u32>,
    /// No table at all: see [`CommandIndex::keep_records_only`].
    records_only: bool,
}

/// Records frozen by [`CommandIndex::freeze`]: never changed again, held through an `Arc` by
/// every index and views that share them.
#[derive(Debug)]
struct Segment {
    /// The position of its first record.
    first: usize,
    /// References stored before its own: its records' reference fields count from there.
    references_before: usize,
    records: Vec<Packed>,
    references: Vec<Box<str>>,
}

/// Records a live index holds before the writer freezes them into a shared segment and hands
/// them to the views, which then drop their own copies (see [`SharedRecords`]). Big enough
/// that a segment's hand-over (an `Arc`, then the views dropping that many copies) is rare,
/// small enough that the two copies of the newest records stay a few megabytes.
pub const SHARED_SEGMENT_RECORDS_MIN: usize = 65_536;

/// An index's first records, frozen and shared: what an open loaded, held once in memory by
/// the writer's index and by the views' money lists, which address them by position (see
/// `docs/adr/0007-one-copy-of-the-transfers.md`). Cloning shares them; nothing can change
/// them, so sharing never changes what a clone means.
#[derive(Debug, Clone, Default)]
pub struct SharedRecords {
    segments: Vec<Arc<Segment>>,
}

impl SharedRecords {
    /// Records held.
    pub fn len(&self) -> usize {
        self.segments
            .last()
            .map_or(0, |segment| segment.first + segment.records.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn references_len(&self) -> usize {
        self.segments.last().map_or(0, |segment| {
            segment.references_before + segment.references.len()
        })
    }

    fn packed(&self, position: usize) -> Option<&Packed> {
        let after = self
            .segments
            .partition_point(|segment| segment.first <= position);
        let segment = self.segments.get(after.checked_sub(1)?)?;
        segment.records.get(position - segment.first)
    }

    /// The reference with 1-based number `slot` among the shared ones.
    fn reference(&self, slot: usize) -> Option<&str> {
        let after = self
            .segments
            .partition_point(|segment| segment.references_before < slot);
        let segment = self.segments.get(after.checked_sub(1)?)?;
        segment
            .references
            .get(slot - 1 - segment.references_before)
            .map(|text| &**text)
    }

    /// The record at `position` (log order: the n-th money command applied is at n - 1).
    pub fn get(&self, position: usize) -> Option<MoneyRecord<'_>> {
        let packed = self.packed(position)?;
        Some(money_record(packed, self.reference_of(packed)))
    }

    fn reference_of(&self, packed: &Packed) -> &str {
        usize::try_from(packed.reference)
            .ok()
            .filter(|slot| *slot > 0)
            .and_then(|slot| self.reference(slot))
            .unwrap_or("")
    }

    /// Every record, in log order.
    pub fn records(&self) -> impl Iterator<Item = MoneyRecord<'_>> + '_ {
        self.records_from(0)
    }

    /// The records from `position` on, in log order (a walk through memory, not a lookup per
    /// record).
    pub fn records_from(&self, position: usize) -> impl Iterator<Item = MoneyRecord<'_>> + '_ {
        let after = self
            .segments
            .partition_point(|segment| segment.first <= position);
        let start = after.saturating_sub(1);
        self.segments
            .get(start..)
            .unwrap_or_default()
            .iter()
            .flat_map(move |segment| {
                let skip = position.saturating_sub(segment.first);
                segment.records.get(skip..).unwrap_or_default().iter()
            })
            .map(|packed| money_record(packed, self.reference_of(packed)))
    }

    /// Whether these are the first segments of `other` (the same memory, not equal copies).
    pub fn is_prefix_of(&self, other: &SharedRecords) -> bool {
        self.segments.len() <= other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(mine, theirs)| Arc::ptr_eq(mine, theirs))
    }

    fn iter(&self) -> impl Iterator<Item = &Packed> + '_ {
        self.segments
            .iter()
            .flat_map(|segment| segment.records.iter())
    }
}

/// An index's records: the shared ones, then those appended since (see [`SharedRecords`]).
/// Positions and reference numbers run on across the two.
#[derive(Debug, Clone, Default)]
struct Store {
    shared: SharedRecords,
    records: Vec<Packed>,
    /// The non-empty references after the shared ones, in the order their commands were
    /// applied.
    references: Vec<Box<str>>,
}

impl Store {
    fn len(&self) -> usize {
        self.shared.len() + self.records.len()
    }

    fn get(&self, position: u32) -> Option<&Packed> {
        let position = usize::try_from(position).ok()?;
        match position.checked_sub(self.shared.len()) {
            Some(own) => self.records.get(own),
            None => self.shared.packed(position),
        }
    }

    fn last(&self) -> Option<&Packed> {
        self.records
            .last()
            .or_else(|| self.shared.packed(self.shared.len().checked_sub(1)?))
    }

    fn references_len(&self) -> usize {
        self.shared.references_len() + self.references.len()
    }

    fn reference_of(&self, packed: &Packed) -> &str {
        let Some(slot) = usize::try_from(packed.reference)
            .ok()
            .filter(|slot| *slot > 0)
        else {
            return "";
        };
        let shared = self.shared.references_len();
        let text = match slot.checked_sub(shared + 1) {
            Some(own) => self.references.get(own).map(|text| &**text),
            None => self.shared.reference(slot),
        };
        text.unwrap_or("")
    }

    fn iter(&self) -> impl Iterator<Item = &Packed> + '_ {
        self.shared.iter().chain(self.records.iter())
    }

    /// Moves the records appended since the last freeze into a shared segment.
    fn freeze(&mut self) -> SharedRecords {
        if !self.records.is_empty() {
            let segment = Segment {
                first: self.shared.len(),
                references_before: self.shared.references_len(),
                records: std::mem::take(&mut self.records),
                references: std::mem::take(&mut self.references),
            };
            self.shared.segments.push(Arc::new(segment));
        }
        self.shared.clone()
    }
}

fn money_record<'a>(packed: &Packed, reference: &'a str) -> MoneyRecord<'a> {
    MoneyRecord {
        id: packed.id,
        seq: packed.seq,
        at: packed.at,
        kind: packed.kind,
        source: packed.source,
        target: packed.target,
        amount: packed.amount(),
        reference,
    }
}

/// Bulk entry groups records into at most 2^this parts of the table, so that each part's
/// slice of it (8 bytes × slots / parts: 256 KiB at 32M slots) stays in cache while its
/// records are entered.
const ENTER_PARTS_BITS_MAX: u32 = 10;

impl PartialEq for CommandIndex {
    fn eq(&self, other: &CommandIndex) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// A table slot: the id's tag and the record's position in the store.
type Slot = (u32, u32);

/// Most percent of [`Slots`] in use before it doubles (so 37.5–75 % full). Linear probing
/// reads on average 1.3–2.5 slots to find an id and 1.8–8.5 to learn it is new: one cache
/// line of 8 slots, sometimes two. Kept half full instead, the table took 256 MB at 10M
/// ids instead of 128 MB, and a 10M-transfer load ran slower for the page faults and the
/// misses of the larger table (`docs/benchmarks.md`, fifteenth session).
const SLOTS_LOAD_PERCENT_MAX: usize = 75;
/// Fewest slots of a table that holds anything.
const SLOTS_MIN: usize = 16;

/// The lookup table: open addressing with linear probing over 8-byte slots, each
/// `tag << 32 | (position + 1)` (0: empty). Made for the writer's one cache miss per new
/// command: `State::warm` looks each id up ahead of the batch, which brings in the cache line
/// where the id's probe starts, and the insert that follows writes its slot in that same line
/// (hashbrown kept control bytes and slots in separate lines, so an insert took a second
/// miss: 93 % of `insert_command`'s samples were that one store). Room: 8 bytes a slot, at
/// most three quarters full, against hashbrown's 9 bytes and seven eighths.
#[derive(Debug, Clone, Default)]
struct Slots {
    /// Empty, or a power of two of slots.
    slots: Vec<u64>,
    len: usize,
}

impl Slots {
    /// The slot where `tag`'s probe starts: the top bits of its spread hash (Fibonacci
    /// hashing), so that neighbouring tags land apart.
    fn start(&self, tag: u32) -> usize {
        let bits = self.slots.len().trailing_zeros();
        if bits == 0 {
            return 0;
        }
        usize::try_from(spread(tag) >> (64 - bits)).unwrap_or(0)
    }

    /// Probes for `tag`: `Ok` with the position of the record for which `is` holds, or `Err`
    /// with the empty slot that ends the probe (where such a record would go). `None` for a
    /// table without slots.
    fn locate(&self, tag: u32, mut is: impl FnMut(u32) -> bool) -> Option<Result<u32, usize>> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut at = self.start(tag);
        // Never full (see `SLOTS_LOAD_PERCENT_MAX`): an empty slot ends every probe.
        loop {
            let slot = *self.slots.get(at)?;
            if slot == 0 {
                return Some(Err(at));
            }
            let (other, position) = unpack_slot(slot);
            if other == tag && is(position) {
                return Some(Ok(position));
            }
            at = (at + 1) & mask;
        }
    }

    /// The position of the record with `tag` for which `is` holds.
    fn find(&self, tag: u32, is: impl FnMut(u32) -> bool) -> Option<u32> {
        self.locate(tag, is)?.ok()
    }

    /// Enters `position` under `tag` unless a record with `tag` for which `is` holds is there
    /// already (`false`, nothing changed). `position` is below `u32::MAX`.
    fn insert(&mut self, tag: u32, position: u32, is: impl FnMut(u32) -> bool) -> bool {
        self.reserve(1);
        match self.locate(tag, is) {
            Some(Err(free)) => match self.slots.get_mut(free) {
                Some(slot) => {
                    *slot = pack_slot(tag, position);
                    self.len += 1;
                    true
                }
                None => false,
            },
            Some(Ok(_)) | None => false,
        }
    }

    /// Makes room for `additional` more entries without growing again.
    fn reserve(&mut self, additional: usize) {
        let wanted = self
            .len
            .saturating_add(additional)
            .saturating_mul(100)
            .div_ceil(SLOTS_LOAD_PERCENT_MAX);
        if wanted <= self.slots.len() && !self.slots.is_empty() {
            return;
        }
        let capacity = wanted.max(SLOTS_MIN).next_power_of_two();
        let old = std::mem::replace(&mut self.slots, vec![0; capacity]);
        // The tags are in the slots: growing never reads a record (no two slots are equal, so
        // each goes to the first free slot of its probe).
        for slot in old.into_iter().filter(|&slot| slot != 0) {
            if let Some(Err(free)) = self.locate(unpack_slot(slot).0, |_| false) {
                if let Some(taken) = self.slots.get_mut(free) {
                    *taken = slot;
                }
            }
        }
    }

    fn capacity(&self) -> usize {
        self.slots.len()
    }
}

fn pack_slot(tag: u32, position: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(position.wrapping_add(1))
}

/// A full slot's tag and position (see [`pack_slot`]).
fn unpack_slot(slot: u64) -> (u32, u32) {
    // Both halves fit a `u32` by construction: the fallbacks are unreachable.
    let tag = u32::try_from(slot >> 32).unwrap_or(u32::MAX);
    let position = u32::try_from(slot & u64::from(u32::MAX)).unwrap_or(0);
    (tag, position.wrapping_sub(1))
}

/// The key of an index's id hash: SipHash-1-3's two words. Random for a new index (drawn
/// from std's per-process random state, the source its `RandomState` uses); taken from the
/// snapshot for a decoded one, whose stored tags were made with it. With the key, the ids in a
/// snapshot's table could be made to collide by whoever reads the file; whoever can read it
/// can read the whole ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagKey {
    k0: u64,
    k1: u64,
}

impl Default for TagKey {
    fn default() -> TagKey {
        let random = RandomState::new();
        TagKey {
            k0: random.hash_one(0_u64),
            k1: random.hash_one(1_u64),
        }
    }
}

impl TagKey {
    /// A key of two given words, for tests and fixtures that need the same bytes on every run
    /// (a snapshot stores its index's key).
    pub fn from_words(k0: u64, k1: u64) -> TagKey {
        TagKey { k0, k1 }
    }

    /// The high half of the id's keyed hash: its tag in the table.
    fn tag(&self, id: &CommandId) -> u32 {
        let mut hasher = siphasher::sip::SipHasher13::new_with_keys(self.k0, self.k1);
        hasher.write(&id.to_bytes());
        let [.., a, b, c, d] = hasher.finish().to_le_bytes();
        u32::from_le_bytes([a, b, c, d])
    }
}

/// The table's hash of a tag: multiplied by an odd constant (2⁶⁴/φ), so that its top bits,
/// where a probe starts ([`Slots`]), depend on every bit of the tag.
fn spread(tag: u32) -> u64 {
    u64::from(tag).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl CommandIndex {
    fn find(&self, id: &CommandId) -> Option<&Packed> {
        let tag = self.hasher.tag(id);
        let store = &self.store;
        let position = self.positions.find(tag, |position| {
            store.get(position).is_some_and(|record| record.id == *id)
        })?;
        store.get(position)
    }

    fn unpack(&self, packed: &Packed) -> (CommandId, CommandRecord) {
        let reference: Box<str> = self.store.reference_of(packed).into();
        (
            packed.id,
            CommandRecord {
                content: CommandContent {
                    kind: packed.kind,
                    source: packed.source,
                    target: packed.target,
                    amount: packed.amount(),
                    reference,
                },
                seq: packed.seq,
                at: packed.at,
            },
        )
    }

    pub(crate) fn contains(&self, id: &CommandId) -> bool {
        self.find(id).is_some()
    }

    pub(crate) fn get(&self, id: &CommandId) -> Option<CommandRecord> {
        self.find(id).map(|packed| self.unpack(packed).1)
    }

    /// Adds a record; `false` (and nothing changes) if the id is already known, or if the
    /// index is full (4 billion commands, or 4 billion with a reference: not reachable in
    /// practice, and refused rather than wrapped).
    pub(crate) fn insert(&mut self, id: CommandId, record: &CommandRecord) -> bool {
        let content = &record.content;
        let command = MoneyCommand {
            id,
            kind: content.kind,
            source: content.source,
            target: content.target,
            amount: content.amount,
            reference: &content.reference,
        };
        self.insert_command(command, record.seq, record.at)
    }

    /// Records the money command `event` carries, if any, exactly as `State::apply` does.
    pub fn record_event(
        &mut self,
        seq: Sequence,
        at: Timestamp,
        event: &Event,
    ) -> Result<(), ApplyFault> {
        self.add_event(seq, at, event, CommandIndex::insert_command)
    }

    /// Adds the money command `event` carries, if any, with `add`; `add`'s refusal is reported
    /// as the command's id already being there.
    fn add_event(
        &mut self,
        seq: Sequence,
        at: Timestamp,
        event: &Event,
        add: fn(&mut CommandIndex, MoneyCommand<'_>, Sequence, Timestamp) -> bool,
    ) -> Result<(), ApplyFault> {
        match money_command(event) {
            Some(command) if !add(self, command, seq, at) => {
                Err(ApplyFault::DuplicateCommand(command.id))
            }
            _ => Ok(()),
        }
    }

    /// Appends the money command `event` carries, if any, without entering it in the table:
    /// for bulk loading in log order, finished by [`CommandIndex::enter_appended`] (which
    /// finds repeated ids). `Err` only if the index is full.
    pub fn append_event(
        &mut self,
        seq: Sequence,
        at: Timestamp,
        event: &Event,
    ) -> Result<(), ApplyFault> {
        self.add_event(seq, at, event, CommandIndex::append)
    }

    /// Appends a record without entering it in the table (see [`CommandIndex::append_event`]).
    /// `false` if the index is full.
    pub(crate) fn push_unindexed(&mut self, id: CommandId, record: CommandRecord) -> bool {
        let CommandRecord { content, seq, at } = record;
        let command = MoneyCommand {
            id,
            kind: content.kind,
            source: content.source,
            target: content.target,
            amount: content.amount,
            reference: &content.reference,
        };
        self.append(command, seq, at)
    }

    fn append(&mut self, command: MoneyCommand<'_>, seq: Sequence, at: Timestamp) -> bool {
        let Some(reference) = self.reference_slot(command.reference) else {
            return false;
        };
        if self.next_position().is_none() {
            return false;
        }
        self.appended.push(self.hasher.tag(&command.id));
        self.push_record(command, reference, seq, at);
        true
    }

    /// Makes room for `additional` more appended records.
    pub fn reserve_appended(&mut self, additional: usize) {
        self.store.records.reserve(additional);
        self.appended.reserve(additional);
    }

    /// Enters the appended records in the table. `Err` gives the sequence number and id of the
    /// first record, in log order, whose id was already there; the index is then unusable.
    ///
    /// The table is sized once, then the records are entered grouped by the slice of the table
    /// their hash lands in (a counting sort on the bucket's top bits), so the inserts of each
    /// group hit a part of the table that fits in cache instead of missing all over it.
    pub fn enter_appended(&mut self) -> Result<(), (Sequence, CommandId)> {
        let (_, pending) = self.split_for_entry();
        pending.enter()
    }

    /// The records, read-only, and the entry of the appended ones in the table, apart: the two
    /// touch disjoint parts of the index, so another thread can read every record (to rebuild
    /// the views' money lists from them) while this one builds the table.
    pub fn split_for_entry(&mut self) -> (Records<'_>, PendingEntry<'_>) {
        let tags = std::mem::take(&mut self.appended);
        let Self {
            positions, store, ..
        } = self;
        (
            Records { store },
            PendingEntry {
                positions,
                store,
                tags,
            },
        )
    }

    /// The records, read-only, in log order.
    pub fn records(&self) -> Records<'_> {
        Records { store: &self.store }
    }

    /// Freezes every record into shared memory and returns them, to be held by the views as
    /// well (see [`SharedRecords`]): for an open, once its records are loaded. Records
    /// appended later are the index's own again. The table is untouched: positions stay.
    pub fn freeze(&mut self) -> SharedRecords {
        self.store.freeze()
    }

    /// An empty index whose ids are hashed with `key` (see [`TagKey::from_words`]).
    pub fn with_tag_key(key: TagKey) -> CommandIndex {
        CommandIndex {
            hasher: key,
            ..CommandIndex::default()
        }
    }

    /// Records added since the last [`CommandIndex::freeze`] (the index's own, not shared).
    pub fn unfrozen_len(&self) -> usize {
        self.store.records.len()
    }

    /// Records appended and not yet entered (an index with any is not ready for lookups).
    pub fn appended_len(&self) -> usize {
        self.appended.len()
    }

    /// The reference field for `reference`: 0 when empty, else its 1-based place among the
    /// stored references (`None` when that would pass 4 billion).
    fn reference_slot(&self, reference: &str) -> Option<u32> {
        if reference.is_empty() {
            Some(0)
        } else {
            u32::try_from(self.store.references_len() + 1).ok()
        }
    }

    /// Drops the lookup table and keeps only the records, which encode as before. For the
    /// snapshot thread's replica: it never decides, so it never looks a command up, and it
    /// only writes the records out; entering every command in a table of all of them (a
    /// cache miss or two each) was a fifth of that thread's time. From then on commands are
    /// appended without the check for a repeated id: the writer made it when it decided them,
    /// and decoding a snapshot enters every record in a table again, refusing a repeated id.
    /// Such an index finds nothing ([`CommandIndex::is_records_only`]): a state holding one
    /// must never decide.
    pub fn keep_records_only(&mut self) {
        self.positions = Slots::default();
        self.appended = Vec::new();
        self.records_only = true;
    }

    /// Whether [`CommandIndex::keep_records_only`] dropped the lookup table.
    pub fn is_records_only(&self) -> bool {
        self.records_only
    }

    pub(crate) fn insert_command(
        &mut self,
        command: MoneyCommand<'_>,
        seq: Sequence,
        at: Timestamp,
    ) -> bool {
        let id = command.id;
        let Some(reference) = self.reference_slot(command.reference) else {
            return false;
        };
        let Some(position) = self.next_position() else {
            return false;
        };
        if self.records_only {
            // Without a table a repeated id goes unseen (see `keep_records_only`); records out
            // of log order at least are refused, as a snapshot's decoding would refuse them.
            if self.store.last().is_some_and(|last| last.seq >= seq) {
                return false;
            }
            self.push_record(command, reference, seq, at);
            return true;
        }
        let tag = self.hasher.tag(&id);
        let Self {
            positions, store, ..
        } = self;
        // One probe decides and inserts (the fresh id is the common case).
        if !positions.insert(tag, position, |known| {
            store.get(known).is_some_and(|record| record.id == id)
        }) {
            return false;
        }
        self.push_record(command, reference, seq, at);
        true
    }

    fn push_record(
        &mut self,
        command: MoneyCommand<'_>,
        reference: u32,
        seq: Sequence,
        at: Timestamp,
    ) {
        if reference != 0 {
            self.store.references.push(command.reference.into());
        }
        self.store.records.push(Packed::new(
            command.id,
            seq,
            at,
            command.amount,
            command.source,
            command.target,
            reference,
            command.kind,
        ));
    }

    /// Commands recorded.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encodes every (id, record) pair in log order, as `(CommandId, CommandRecord)` encodes:
    /// records without a reference in one write each, straight from the packed form (see
    /// [`crate::fields::Out`]), the others field by field.
    pub(crate) fn encode_records<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        use bincode::Encode;
        for packed in self.store.iter() {
            let fast =
                crate::fields::encode_fast::<_, COMMAND_RECORD_ENCODED_BYTES_MAX>(encoder, |out| {
                    if packed.reference != 0 {
                        return None;
                    }
                    out.bytes16(&packed.id.to_bytes())?;
                    out.u32(packed.kind.index())?;
                    out.u32(packed.source.0)?;
                    out.u32(packed.target.0)?;
                    out.i128(packed.amount().units())?;
                    out.u64(0)?;
                    out.u64(packed.seq.0)?;
                    out.i64(packed.at.0)
                });
            match fast {
                Some(result) => result?,
                None => {
                    let (id, record) = self.unpack(packed);
                    id.encode(encoder)?;
                    record.encode(encoder)?;
                }
            }
        }
        Ok(())
    }

    /// The index in snapshot format 7 ([`CommandIndexV7`]): the count, then each record's
    /// fixed part ([`RECORD_RAW_BYTES`]) and its reference as a string.
    /// With `tags`, in format 10's layout instead ([`CommandIndexV10Unentered`]): each
    /// record's tag is hashed again here (a records-only index keeps none), in the snapshot
    /// thread rather than at every open.
    fn encode_tagged<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
        tags: bool,
    ) -> Result<(), bincode::error::EncodeError> {
        use bincode::enc::write::Writer;
        use bincode::Encode;
        // A records-only index (the snapshot thread's replica) has no table to keep its key
        // for: each snapshot it writes gets a fresh one, so that a key learned from one
        // snapshot file is of no use against the ledger once a later snapshot has been opened.
        let key = if self.records_only {
            TagKey::default()
        } else {
            self.hasher
        };
        if tags {
            encoder.writer().write(&key.k0.to_le_bytes())?;
            encoder.writer().write(&key.k1.to_le_bytes())?;
        }
        (self.len() as u64).encode(encoder)?;
        for packed in self.store.iter() {
            if tags {
                // The fixed part, the tag and (usually) the empty reference in one write.
                let mut raw = [0u8; RECORD_RAW_BYTES + 5];
                fill_raw(&mut raw, packed);
                raw[RECORD_RAW_BYTES..RECORD_RAW_BYTES + 4]
                    .copy_from_slice(&key.tag(&packed.id).to_le_bytes());
                if packed.reference == 0 {
                    encoder.writer().write(&raw)?;
                } else {
                    encoder.writer().write(&raw[..RECORD_RAW_BYTES + 4])?;
                    self.store.reference_of(packed).encode(encoder)?;
                }
                continue;
            }
            let mut raw = [0u8; RECORD_RAW_BYTES + 1];
            fill_raw(&mut raw, packed);
            if packed.reference == 0 {
                // The empty reference's length, 0, completes the record in one write.
                encoder.writer().write(&raw)?;
            } else {
                encoder.writer().write(&raw[..RECORD_RAW_BYTES])?;
                self.store.reference_of(packed).encode(encoder)?;
            }
        }
        Ok(())
    }

    /// Reads what [`CommandIndex::encode_tagged`] wrote (`tagged`: format 10's layout):
    /// records in strictly increasing sequence order, each one bytes that encoding produces;
    /// with `enter`, they are entered in the table and a repeated id is refused. Stored tags
    /// are taken as they are: a wrong one would only hide its record from lookups, and the
    /// section's hash guards them against damage as it guards every balance in the file.
    fn decode_v7<D: bincode::de::Decoder>(
        decoder: &mut D,
        enter: bool,
        tagged: bool,
    ) -> Result<CommandIndex, bincode::error::DecodeError> {
        use bincode::de::read::Reader;
        use bincode::Decode;
        let refused = bincode::error::DecodeError::Other;
        let key = if tagged {
            let mut words = [0u8; 16];
            decoder.reader().read(&mut words)?;
            let (k0, k1) = words.split_at(8);
            Some(TagKey {
                k0: u64::from_le_bytes(k0.try_into().unwrap_or_default()),
                k1: u64::from_le_bytes(k1.try_into().unwrap_or_default()),
            })
        } else {
            None
        };
        let count =
            usize::try_from(u64::decode(decoder)?).map_err(|_| refused("a count beyond memory"))?;
        // Claimed against the decoding limit (a multiple of the file's size) before anything
        // is allocated, then reserved exactly: growing by doubling would leave up to twice the
        // records' memory to fault in.
        decoder.claim_container_read::<(Packed, u32)>(count)?;
        // Every position and reference number fits a `u32` (checked once, not per record as
        // `append` does).
        if u32::try_from(count).is_err() {
            return Err(refused("too many commands"));
        }
        let mut index = CommandIndex::default();
        if let Some(key) = key {
            index.hasher = key;
        }
        index.reserve_appended(count);
        let CommandIndex {
            store,
            hasher,
            appended,
            ..
        } = &mut index;
        // The tag's bytes between a record's fixed part and its reference (format 10).
        let tag_bytes = if tagged { 4 } else { 0 };
        let mut last = Sequence::ZERO;
        let mut raw = [0u8; RECORD_RAW_BYTES];
        for _ in 0..count {
            // Most records have no reference: read in place from the reader's buffer, fixed
            // part and empty reference at once (copying each out first was a tenth of this
            // section's decoding).
            let in_place = decoder
                .reader()
                .peek_read(RECORD_RAW_BYTES + tag_bytes + 1)
                .and_then(|bytes| match bytes.split_last() {
                    Some((0, fixed)) => {
                        let (fixed, tag) = fixed.split_at(RECORD_RAW_BYTES);
                        Some((parse_raw(fixed.try_into().ok()?), stored_tag(tag)))
                    }
                    _ => None,
                });
            let ((parsed, stored), reference) = match in_place {
                Some(parsed) => {
                    decoder.reader().consume(RECORD_RAW_BYTES + tag_bytes + 1);
                    (parsed, String::new())
                }
                None => {
                    decoder.reader().read(&mut raw)?;
                    let parsed = parse_raw(&raw);
                    let mut tag = [0u8; 4];
                    decoder.reader().read(&mut tag[..tag_bytes])?;
                    let stored = stored_tag(&tag[..tag_bytes]);
                    let empty = matches!(decoder.reader().peek_read(1), Some([0]));
                    let reference = if empty {
                        decoder.reader().consume(1);
                        String::new()
                    } else {
                        String::decode(decoder)?
                    };
                    ((parsed, stored), reference)
                }
            };
            let (id, seq, at, amount, source, target, kind) =
                parsed.ok_or(refused("bytes no idempotency record writes"))?;
            if seq <= last {
                return Err(refused("idempotency records out of order"));
            }
            last = seq;
            // What `append` does, without its per-record checks (see above).
            let reference = if reference.is_empty() {
                0
            } else {
                store.references.push(reference.into_boxed_str());
                u32::try_from(store.references.len()).unwrap_or(u32::MAX)
            };
            appended.push(stored.unwrap_or_else(|| hasher.tag(&id)));
            store.records.push(Packed::new(
                id, seq, at, amount, source, target, reference, kind,
            ));
        }
        if enter {
            index
                .enter_appended()
                .map_err(|_| refused("duplicate command id"))?;
        }
        Ok(index)
    }

    /// Records in the order they were applied.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (CommandId, CommandRecord)> + '_ {
        self.store.iter().map(|packed| self.unpack(packed))
    }

    /// Makes room for `additional` more commands (growing step by step rehashes the table).
    pub fn reserve(&mut self, additional: usize) {
        self.positions.reserve(additional);
        self.store.records.reserve(additional);
    }

    /// The position the next record takes, if it fits a table slot (which holds it plus one).
    fn next_position(&self) -> Option<u32> {
        u32::try_from(self.len())
            .ok()
            .filter(|&position| position < u32::MAX)
    }

    /// Builds the index from records, putting them in sequence order; `Err` on a duplicate id.
    pub(crate) fn from_records(
        mut records: Vec<(CommandId, CommandRecord)>,
    ) -> Result<CommandIndex, CommandId> {
        // Stable and linear when already sorted, which is how they are written.
        records.sort_by_key(|(_, record)| record.seq);
        let mut index = CommandIndex::default();
        index.reserve(records.len());
        for (id, record) in records {
            if !index.insert(id, &record) {
                return Err(id);
            }
        }
        Ok(index)
    }
}

/// One record of the index, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoneyRecord<'a> {
    pub id: CommandId,
    pub seq: Sequence,
    pub at: Timestamp,
    pub kind: MoneyKind,
    pub source: AccountId,
    pub target: AccountId,
    pub amount: Amount,
    pub reference: &'a str,
}

/// An index's records, read-only, in log order ([`CommandIndex::records`],
/// [`CommandIndex::split_for_entry`]).
#[derive(Debug, Clone, Copy)]
pub struct Records<'a> {
    store: &'a Store,
}

impl<'a> Records<'a> {
    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = MoneyRecord<'a>> + 'a {
        let store = self.store;
        store
            .iter()
            .map(move |packed| money_record(packed, store.reference_of(packed)))
    }

    /// The record at `position`.
    pub fn get(&self, position: usize) -> Option<MoneyRecord<'a>> {
        let store = self.store;
        let packed = store.get(u32::try_from(position).ok()?)?;
        Some(money_record(packed, store.reference_of(packed)))
    }
}

/// The entry of an index's appended records in its table, split from the records
/// ([`CommandIndex::split_for_entry`]).
#[derive(Debug)]
pub struct PendingEntry<'a> {
    positions: &'a mut Slots,
    store: &'a Store,
    tags: Vec<u32>,
}

impl PendingEntry<'_> {
    /// Enters the appended records in the table. `Err` gives the sequence number and id of the
    /// first record, in log order, whose id was already there; the index is then unusable.
    ///
    /// The table is sized once, then the records are entered grouped by the slice of the table
    /// their hash lands in (a counting sort on the bucket's top bits), so the inserts of each
    /// group hit a part of the table that fits in cache instead of missing all over it.
    pub fn enter(self) -> Result<(), (Sequence, CommandId)> {
        let PendingEntry {
            positions,
            store,
            tags,
        } = self;
        let first = store.len().saturating_sub(tags.len());
        positions.reserve(tags.len());
        // A probe starts at the top bits of the spread hash (`Slots::start`): the top
        // `parts_bits` of them name the part of the table. Only speed depends on this.
        let bits = positions.capacity().trailing_zeros();
        let parts_bits = bits.min(ENTER_PARTS_BITS_MAX);
        let part = |tag: u32| {
            if parts_bits == 0 {
                0
            } else {
                usize::try_from(spread(tag) >> (64 - parts_bits)).unwrap_or(0)
            }
        };
        let mut starts = vec![0usize; (1usize << parts_bits) + 1];
        for &tag in &tags {
            starts[part(tag) + 1] += 1;
        }
        for index in 1..starts.len() {
            starts[index] += starts[index - 1];
        }
        // Stable: within a part, records stay in log order, so of two with one id the later
        // is the one found repeated. (tag, position) slots, so that entering them reads this
        // list in order and the records only to tell apart two equal tags. Every position
        // fits a `u32`: `append` refused any beyond.
        let mut order: Vec<Slot> = vec![(0, 0); tags.len()];
        for (offset, &tag) in tags.iter().enumerate() {
            let slot = &mut starts[part(tag)];
            order[*slot] = (tag, u32::try_from(first + offset).unwrap_or(u32::MAX));
            *slot += 1;
        }
        drop(tags);
        let mut repeated: Option<usize> = None;
        for (tag, position) in order {
            // The records are read only for two equal tags (rare): each read is a miss.
            let entered = positions.insert(tag, position, |at| {
                store.get(at).map(|known| known.id) == store.get(position).map(|new| new.id)
            });
            if !entered {
                let position = usize::try_from(position).unwrap_or(usize::MAX);
                repeated = Some(repeated.map_or(position, |known| known.min(position)));
            }
        }
        match repeated.and_then(|position| store.get(u32::try_from(position).ok()?)) {
            Some(record) => Err((record.seq, record.id)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Amount;

    #[test]
    fn slots_tell_equal_tags_apart_probe_around_the_end_and_keep_room() {
        let mut slots = Slots::default();
        assert_eq!(
            slots.find(7, |_| true),
            None,
            "an empty table finds nothing"
        );
        // A hundred positions under one tag: only `is` tells them apart.
        for position in 0..100 {
            assert!(slots.insert(7, position, |known| known == position));
        }
        for position in 0..100 {
            assert_eq!(slots.find(7, |known| known == position), Some(position));
        }
        assert!(!slots.insert(7, 5, |known| known == 5), "already there");
        assert_eq!(slots.find(7, |known| known == 1_000), None);
        // Tags whose probe starts in the last slot go on from the first.
        let last = slots.capacity() - 1;
        let tag = (0..u32::MAX)
            .find(|&tag| slots.start(tag) == last)
            .unwrap_or_else(|| panic!("some tag starts in the last slot"));
        for position in 100..104 {
            assert!(slots.insert(tag, position, |known| known == position));
        }
        for position in 100..104 {
            assert_eq!(slots.find(tag, |known| known == position), Some(position));
        }
        assert_eq!(slots.len, 104);
        assert!(slots.len * 100 <= slots.capacity() * SLOTS_LOAD_PERCENT_MAX);
        // The largest position a slot holds reads back.
        let mut big = Slots::default();
        assert!(big.insert(1, u32::MAX - 1, |_| false));
        assert_eq!(big.find(1, |_| true), Some(u32::MAX - 1));
    }

    #[test]
    fn a_record_is_56_bytes_and_keeps_its_amount() {
        assert_eq!(std::mem::size_of::<Packed>(), 56);
        for amount in [
            Amount::ZERO,
            Amount::MIN,
            Amount::MAX,
            Amount::from_units(-1).unwrap_or(Amount::ZERO),
            Amount::from_units(1 << 64).unwrap_or(Amount::ZERO),
            Amount::from_units(-(1 << 64) - 7).unwrap_or(Amount::ZERO),
        ] {
            let packed = Packed::new(
                CommandId::from_bytes([3; 16]),
                Sequence(9),
                Timestamp(-4),
                amount,
                AccountId(1),
                AccountId(u32::MAX),
                7,
                MoneyKind::CreditTransfer,
            );
            assert_eq!(packed.amount(), amount);
            assert_eq!(
                (
                    packed.seq,
                    packed.at,
                    packed.target,
                    packed.reference,
                    packed.kind
                ),
                (
                    Sequence(9),
                    Timestamp(-4),
                    AccountId(u32::MAX),
                    7,
                    MoneyKind::CreditTransfer
                )
            );
        }
    }

    fn record(seq: u64, amount: i128, reference: &str) -> CommandRecord {
        CommandRecord {
            content: CommandContent {
                kind: MoneyKind::Charge,
                source: AccountId(1),
                target: AccountId(2),
                amount: Amount::from_units(amount).unwrap_or(Amount::ZERO),
                reference: reference.into(),
            },
            seq: Sequence(seq),
            at: Timestamp(i64::try_from(seq).unwrap_or(0) * 10),
        }
    }

    fn id(n: u128) -> CommandId {
        CommandId::from_bytes(n.to_le_bytes())
    }

    #[test]
    fn records_come_back_exactly_and_duplicates_are_refused() {
        let mut index = CommandIndex::default();
        let extremes = [Amount::MIN.units(), -1, 1, Amount::MAX.units()];
        for (n, amount) in extremes.into_iter().enumerate() {
            let reference = if n % 2 == 0 { "" } else { "ref ✓" };
            assert!(index.insert(id(n as u128), &record(n as u64 + 1, amount, reference)));
        }
        assert!(!index.insert(id(2), &record(99, 5, "other")));
        assert_eq!(index.len(), 4);
        for (n, amount) in extremes.into_iter().enumerate() {
            let reference = if n % 2 == 0 { "" } else { "ref ✓" };
            assert_eq!(
                index.get(&id(n as u128)),
                Some(record(n as u64 + 1, amount, reference))
            );
        }
        assert_eq!(index.get(&id(77)), None);
        let listed: Vec<_> = index.iter().map(|(id, record)| (id, record.seq)).collect();
        assert_eq!(
            listed,
            (0..4u64)
                .map(|n| (id(n.into()), Sequence(n + 1)))
                .collect::<Vec<_>>()
        );
    }

    /// A records-only index (the snapshot replica's) lists and encodes exactly what a full
    /// one does; it finds nothing and checks no repeats, and decoding what it encodes enters
    /// the records in a table again, refusing a repeat.
    #[test]
    fn a_records_only_index_encodes_as_a_full_one_and_decoding_still_refuses_repeats() {
        let config = bincode::config::standard();
        let mut full = CommandIndex::default();
        let mut records_only = CommandIndex::default();
        assert!(full.insert(id(1), &record(1, 5, "")));
        assert!(records_only.insert(id(1), &record(1, 5, "")));
        records_only.keep_records_only();
        assert_eq!(records_only.get(&id(1)), None);
        for n in 2..=50u64 {
            let reference = if n % 7 == 0 { "r" } else { "" };
            assert!(full.insert(id(n.into()), &record(n, 3, reference)));
            assert!(records_only.insert(id(n.into()), &record(n, 3, reference)));
        }
        assert!(records_only == full);
        let encoded = bincode::encode_to_vec(&records_only, config).unwrap_or_default();
        assert_eq!(
            encoded,
            bincode::encode_to_vec(&full, config).unwrap_or_default()
        );
        let decoded: Option<CommandIndex> = bincode::decode_from_slice(&encoded, config)
            .ok()
            .map(|(index, _)| index);
        assert_eq!(
            decoded.and_then(|index| index.get(&id(50))),
            Some(record(50, 3, ""))
        );
        assert!(records_only.is_records_only() && !full.is_records_only());
        // Out of log order: refused, as decoding would refuse it.
        assert!(!records_only.insert(id(99), &record(50, 3, "")));
        // No repeat check without a table: a repeat is listed, and refused when decoded.
        assert!(records_only.insert(id(3), &record(51, 3, "")));
        let repeated = bincode::encode_to_vec(&records_only, config).unwrap_or_default();
        assert!(bincode::decode_from_slice::<CommandIndex, _>(&repeated, config).is_err());
    }

    /// Format 7's fixed-width records read back exactly; damaged bytes are refused or read
    /// as what they encode; records out of order and repeated ids are refused.
    #[test]
    fn format_7_records_read_back_and_refuse_what_no_index_writes() {
        let config = bincode::config::standard();
        let mut index = CommandIndex::default();
        for n in 1..=40u64 {
            let reference = if n % 9 == 0 { "ref ✓" } else { "" };
            let amount = if n == 7 {
                Amount::MIN.units()
            } else {
                i128::from(n) * 1_000
            };
            assert!(index.insert(id(n.into()), &record(n * 2, amount, reference)));
        }
        let encoded = bincode::encode_to_vec(CommandIndexV7Of(&index), config).unwrap_or_default();
        let decode = |bytes: &[u8]| {
            bincode::decode_from_slice::<CommandIndexV7, _>(bytes, config)
                .map(|(CommandIndexV7(index), _)| index)
        };
        let decoded = decode(&encoded).unwrap_or_default();
        assert!(decoded == index);
        assert_eq!(decoded.get(&id(9)), Some(record(18, 9_000, "ref ✓")));
        // Every single-byte damage is refused or re-encodes to the same bytes.
        for at in 0..encoded.len() {
            let mut damaged = encoded.clone();
            damaged[at] ^= 0x41;
            if let Ok(read) = decode(&damaged) {
                assert_eq!(
                    bincode::encode_to_vec(CommandIndexV7Of(&read), config).unwrap_or_default(),
                    damaged,
                    "damage at {at}"
                );
            }
        }
        // A kind beyond the four, an amount beyond the bound: refused.
        let mut unknown_kind = encoded.clone();
        unknown_kind[1 + 56] = 4;
        assert!(decode(&unknown_kind).is_err());
        let mut too_much = encoded.clone();
        too_much[1 + 32..1 + 48].copy_from_slice(&(Amount::MAX.units() + 1).to_le_bytes());
        assert!(decode(&too_much).is_err());
        // Two records swapped (out of order), and one id twice.
        let record_len = RECORD_RAW_BYTES + 1;
        let mut swapped = encoded.clone();
        let (first, second) = (1..1 + record_len, 1 + record_len..1 + 2 * record_len);
        let original = swapped[first.clone()].to_vec();
        swapped.copy_within(second.clone(), first.start);
        swapped[second].copy_from_slice(&original);
        assert!(decode(&swapped).is_err());
        let mut repeated = encoded.clone();
        repeated.copy_within(1..17, 1 + record_len);
        assert!(decode(&repeated).is_err());
    }

    /// Format 10 stores the index's hash key and each record's tag: the decoded index has the
    /// key, finds every record with the stored tags, goes on taking new ones, refuses repeats,
    /// and encodes to the same bytes. A damaged byte outside the key, the ids and the tags is
    /// refused or reads as what it encodes; those are guarded by the section's hash only.
    #[test]
    fn format_10_keeps_the_hash_key_and_the_tags() {
        let config = bincode::config::standard();
        let mut index = CommandIndex::with_tag_key(TagKey::from_words(7, 9));
        for n in 1..=30u64 {
            let reference = if n % 4 == 0 { "ref ✓" } else { "" };
            assert!(index.insert(id(n.into()), &record(n * 3, i128::from(n), reference)));
        }
        let encoded = bincode::encode_to_vec(CommandIndexV10Of(&index), config).unwrap_or_default();
        let decode = |bytes: &[u8]| {
            bincode::decode_from_slice::<CommandIndexV10Unentered, _>(bytes, config)
                .map(|(CommandIndexV10Unentered(index), _)| index)
        };
        let mut decoded = decode(&encoded).unwrap_or_default();
        assert_eq!(decoded.hasher, TagKey::from_words(7, 9));
        assert_eq!(decoded.enter_appended(), Ok(()));
        assert!(decoded == index);
        for n in 1..=30u64 {
            let reference = if n % 4 == 0 { "ref ✓" } else { "" };
            assert_eq!(
                decoded.get(&id(n.into())),
                Some(record(n * 3, i128::from(n), reference))
            );
        }
        assert!(!decoded.insert(id(5), &record(200, 1, "")));
        assert!(decoded.insert(id(31), &record(200, 1, "")));
        assert_eq!(decoded.get(&id(31)), Some(record(200, 1, "")));
        assert!(index.insert(id(31), &record(200, 1, "")));
        assert_eq!(
            bincode::encode_to_vec(CommandIndexV10Of(&decoded), config).unwrap_or_default(),
            bincode::encode_to_vec(CommandIndexV10Of(&index), config).unwrap_or_default()
        );
        // Single-byte damage: refused or exactly what it encodes, but for the key (bytes
        // 0..16), the ids and the tags, whose agreement is not checked: the tags are hashed
        // from the ids with the key when written, and read as they are (a wrong tag would hide
        // its record from lookups; the section's hash is what detects such damage).
        let mut unchecked: Vec<usize> = (0..16).collect();
        let mut at = 17;
        for n in 1..=30u64 {
            unchecked.extend(at..at + 16);
            unchecked.extend(at + RECORD_RAW_BYTES..at + RECORD_RAW_BYTES + 4);
            at += RECORD_RAW_BYTES + 4 + if n % 4 == 0 { 1 + "ref ✓".len() } else { 1 };
        }
        assert_eq!(at, encoded.len());
        for at in 0..encoded.len() {
            if unchecked.contains(&at) {
                continue;
            }
            let mut damaged = encoded.clone();
            damaged[at] ^= 0x41;
            if let Ok(read) = decode(&damaged) {
                assert_eq!(
                    bincode::encode_to_vec(CommandIndexV10Of(&read), config).unwrap_or_default(),
                    damaged,
                    "damage at {at}"
                );
            }
        }
    }

    /// A records-only index (the snapshot replica's) writes a fresh hash key in each format-10
    /// encoding; the tags follow it, so what decodes finds every record either way.
    #[test]
    fn a_records_only_index_writes_a_fresh_hash_key_each_time() {
        let config = bincode::config::standard();
        let mut index = CommandIndex::with_tag_key(TagKey::from_words(7, 9));
        for n in 1..=20u64 {
            assert!(index.insert(id(n.into()), &record(n, 1, "")));
        }
        index.keep_records_only();
        let encode = |index: &CommandIndex| {
            bincode::encode_to_vec(CommandIndexV10Of(index), config).unwrap_or_default()
        };
        let (first, second) = (encode(&index), encode(&index));
        assert_ne!(first[..16], second[..16]);
        assert_ne!(
            first[..16],
            [7, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]
        );
        for bytes in [first, second] {
            let (CommandIndexV10Unentered(mut decoded), _) =
                bincode::decode_from_slice::<CommandIndexV10Unentered, _>(&bytes, config)
                    .unwrap_or_else(|_| (CommandIndexV10Unentered(CommandIndex::default()), 0));
            assert_eq!(decoded.enter_appended(), Ok(()));
            for n in 1..=20u64 {
                assert_eq!(decoded.get(&id(n.into())), Some(record(n, 1, "")));
            }
        }
    }

    /// Bulk entry reports the first repeat in log order, whether the earlier copy was entered
    /// before (a snapshot's records) or appended in the same bulk, and whatever part of the
    /// table the ids land in.
    #[test]
    fn bulk_entry_finds_the_first_repeated_id_in_log_order() {
        let mut index = CommandIndex::default();
        for n in 1..=1_000u64 {
            assert!(index.insert(id(n.into()), &record(n, 1, "")));
        }
        // Appended: fresh ids 1001..=21000, with repeats at seqs 15000 (of id 7, entered
        // before), 12000 (of id 5000, appended earlier) and 18000 (of id 12, entered).
        let repeats = [(15_000u64, 7u128), (12_000, 5_000), (18_000, 12)];
        for seq in 1_001..=21_000u64 {
            let command = repeats
                .iter()
                .find(|(at, _)| *at == seq)
                .map_or(u128::from(seq), |(_, repeated)| *repeated);
            assert!(index.push_unindexed(id(command), record(seq, 1, "")));
        }
        assert_eq!(index.enter_appended(), Err((Sequence(12_000), id(5_000))));

        // Without repeats every id is found, the earlier and the appended.
        let mut clean = CommandIndex::default();
        for n in 1..=1_000u64 {
            assert!(clean.insert(id(n.into()), &record(n, 1, "")));
        }
        for seq in 1_001..=21_000u64 {
            let reference = if seq % 3 == 0 { "r" } else { "" };
            assert!(clean.push_unindexed(id(seq.into()), record(seq, 1, reference)));
        }
        assert_eq!(clean.enter_appended(), Ok(()));
        for seq in (1..=21_000u64).step_by(97) {
            let reference = if seq > 1_000 && seq % 3 == 0 { "r" } else { "" };
            assert_eq!(clean.get(&id(seq.into())), Some(record(seq, 1, reference)));
        }
        assert!(!clean.insert(id(20_999), &record(21_001, 1, "")));
    }

    /// Freezing moves the records into shared segments without changing anything an index
    /// answers or encodes: positions, references (numbered across the segments and the
    /// records appended after), lookups, repeats refused, the bytes of both formats.
    #[test]
    fn freezing_shares_the_records_and_changes_nothing_an_index_answers() {
        let config = bincode::config::standard();
        let reference = |n: u64| {
            if n.is_multiple_of(5) {
                format!("r{n}")
            } else {
                String::new()
            }
        };
        let mut plain = CommandIndex::default();
        let mut frozen = CommandIndex::default();
        let mut shared = SharedRecords::default();
        for n in 1..=60u64 {
            let record = record(n, i128::from(n), &reference(n));
            assert!(plain.insert(id(n.into()), &record));
            assert!(frozen.insert(id(n.into()), &record));
            // Eight freezes: segments of 7 records, each an addition to the last ones.
            if n % 7 == 0 {
                let before = shared.clone();
                shared = frozen.freeze();
                assert_eq!(shared.len(), frozen.len());
                assert_eq!(frozen.unfrozen_len(), 0);
                assert_eq!(shared.segments.len(), before.segments.len() + 1);
                assert!(before.is_prefix_of(&shared) && !shared.is_prefix_of(&before));
            }
        }
        assert!(frozen == plain);
        assert_eq!(shared.len(), 56);
        let records = frozen.records();
        assert_eq!(records.len(), 60);
        for n in 1..=60u64 {
            let position = usize::try_from(n - 1).unwrap_or(0);
            let expected = (id(n.into()), Sequence(n), reference(n));
            let got = records
                .get(position)
                .map(|record| (record.id, record.seq, record.reference.to_owned()));
            assert_eq!(got, Some(expected.clone()));
            if n <= 56 {
                let got = shared
                    .get(position)
                    .map(|record| (record.id, record.seq, record.reference.to_owned()));
                assert_eq!(got, Some(expected));
            }
            assert_eq!(
                frozen.get(&id(n.into())),
                Some(record(n, i128::from(n), &reference(n)))
            );
        }
        assert_eq!(shared.get(56).map(|record| record.seq), None);
        // Repeats are refused whether the first is shared or not.
        assert!(!frozen.insert(id(3), &record(61, 1, "")));
        assert!(!frozen.insert(id(58), &record(61, 1, "")));
        assert!(frozen.insert(id(61), &record(61, 1, "r61")));
        assert!(plain.insert(id(61), &record(61, 1, "r61")));
        for encode in [
            |index: &CommandIndex| bincode::encode_to_vec(index, bincode::config::standard()),
            |index: &CommandIndex| {
                bincode::encode_to_vec(CommandIndexV7Of(index), bincode::config::standard())
            },
        ] {
            assert_eq!(
                encode(&frozen).unwrap_or_default(),
                encode(&plain).unwrap_or_default()
            );
        }
        // A clone shares the frozen records and owns the rest.
        let clone = frozen.clone();
        assert!(!clone.store.shared.is_empty());
        assert!(clone.store.shared.is_prefix_of(&frozen.store.shared));
        assert!(frozen.store.shared.is_prefix_of(&clone.store.shared));
        assert!(clone == plain);
        let decoded: Option<CommandIndex> = bincode::decode_from_slice(
            &bincode::encode_to_vec(&frozen, config).unwrap_or_default(),
            config,
        )
        .ok()
        .map(|(index, _)| index);
        assert!(decoded.is_some_and(|index| index == plain));
    }

    #[test]
    fn growth_keeps_every_record_findable_and_equality_ignores_the_hash_key() {
        let mut grown = CommandIndex::default();
        for n in 0..50_000u64 {
            let reference = if n % 7 == 0 { "r" } else { "" };
            assert!(grown.insert(id(n.into()), &record(n + 1, n.into(), reference)));
        }
        for n in (0..50_000u64).step_by(997) {
            assert_eq!(
                grown.get(&id(n.into())).map(|record| record.seq),
                Some(Sequence(n + 1))
            );
        }
        // Same records through another path (another random key, pre-sized, shuffled input).
        let mut records: Vec<_> = grown.iter().collect();
        records.reverse();
        let rebuilt = CommandIndex::from_records(records).unwrap_or_default();
        assert!(rebuilt == grown);
        // And appended in bulk, then entered at once (grouped by table part).
        let mut bulk = CommandIndex::default();
        bulk.reserve_appended(50_000);
        for (id, record) in grown.iter() {
            assert!(bulk.push_unindexed(id, record));
        }
        assert_eq!(bulk.appended_len(), 50_000);
        assert_eq!(bulk.enter_appended(), Ok(()));
        assert_eq!(bulk.appended_len(), 0);
        assert!(bulk == grown);
        for n in (0..50_000u64).step_by(499) {
            assert_eq!(
                bulk.get(&id(n.into())).map(|record| record.seq),
                Some(Sequence(n + 1))
            );
        }
        let mut duplicated: Vec<_> = grown.iter().take(3).collect();
        duplicated.push(duplicated[0].clone());
        assert_eq!(CommandIndex::from_records(duplicated).err(), Some(id(0)));
    }
}
