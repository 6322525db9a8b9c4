//! The log record: the unit every backend stores, with its checksum and hash chain.
//!
//! A record holds up to [`RECORD_EVENTS_MAX`] consecutive events of one commit batch (a batch
//! larger than that spans several records). Layout, all integers little-endian (see
//! `docs/event-format.md`):
//!
//! ```text
//! offset size field
//!      0    4 magic "SLRC"
//!      4    2 format version (1)
//!      6    8 first: sequence number of the first event
//!     14    4 count: number of events (≥ 1)
//!     18    8 at: commit instant, ms since the Unix epoch (i64)
//!     26    8 batch_last: sequence number of the last event of the commit batch
//!     34   32 prev_hash: `hash` of the previous record (zeros before the first)
//!     66    4 payload length in bytes
//!     70    n payload: bincode 2 (standard config) of the events, `Vec<Event>`
//!   70+n   32 hash: BLAKE3 of bytes 0 .. 70+n
//! ```
//!
//! `hash` is both the checksum (any flipped bit changes it) and the chain link (the next record
//! stores it as `prev_hash`), so a change anywhere is detected and located by sequence number.
//! `batch_last` lets recovery recognise a commit batch torn by a crash: records of a batch
//! whose last record is missing were never acknowledged and are discarded.

use subledger_core::fields::Fields;
use subledger_core::{Batch, Event, Sequence, Timestamp};

/// Magic bytes opening every record.
pub const RECORD_MAGIC: [u8; 4] = *b"SLRC";
/// The record format this code writes. Older versions stay readable (see `decode_record`).
pub const RECORD_FORMAT_VERSION: u16 = 1;
/// Most events one record holds.
pub const RECORD_EVENTS_MAX: usize = 4_096;
/// Largest record accepted when decoding, in bytes (a guard against hostile lengths).
pub const RECORD_BYTES_MAX: usize = 16 << 20;
/// Bytes before the payload.
pub const RECORD_HEADER_BYTES: usize = 70;
/// Bytes after the payload.
pub const RECORD_TRAILER_BYTES: usize = 32;

/// A BLAKE3 hash linking records into a chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The `prev_hash` of the first record.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    pub fn to_hex(self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

impl std::fmt::Debug for ChainHash {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "ChainHash({})", self.to_hex())
    }
}

/// A decoded, checksum-verified record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub first: Sequence,
    pub at: Timestamp,
    pub batch_last: Sequence,
    pub prev_hash: ChainHash,
    pub events: Vec<Event>,
    pub hash: ChainHash,
}

impl Record {
    /// The sequence number of the record's last event.
    pub fn last(&self) -> Sequence {
        let count = u64::try_from(self.events.len()).unwrap_or(u64::MAX);
        Sequence((self.first.0 + count).saturating_sub(1))
    }

    /// `true` when this record ends its commit batch.
    pub fn ends_batch(&self) -> bool {
        self.last() == self.batch_last
    }

    /// The events as a batch (one record's share of its commit batch).
    pub fn into_batch(self) -> Batch {
        Batch {
            first: self.first,
            at: self.at,
            events: self.events,
        }
    }

    /// The record's bytes as a log stores them, encoded again from its fields: `Corrupt`
    /// unless they give the hash it carries. A record read from a log always does; copying
    /// one elsewhere (an archive, a restored store) this way keeps the copy's chain whole.
    pub fn to_bytes(&self) -> Result<Vec<u8>, crate::LogError> {
        let (bytes, hash) = encode_record(
            self.first,
            self.at,
            self.batch_last,
            self.prev_hash,
            &self.events,
        )
        .map_err(|error| crate::LogError::Encode(error.to_string()))?;
        if hash != self.hash {
            return Err(crate::LogError::Corrupt {
                seq: self.first,
                detail: "the record's contents do not give its hash".into(),
            });
        }
        Ok(bytes)
    }
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("record too short ({0} bytes)")]
    TooShort(usize),
    #[error("record too long ({0} bytes)")]
    TooLong(usize),
    #[error("bad magic bytes")]
    BadMagic,
    #[error("record format version {0} is newer than this program understands")]
    UnsupportedVersion(u16),
    #[error("checksum mismatch: the record was altered or damaged")]
    Checksum,
    #[error("payload length does not match the record size")]
    Length,
    #[error("payload does not decode: {0}")]
    Payload(String),
    #[error("header says {header} events, payload holds {payload}")]
    Count { header: u32, payload: usize },
    #[error("sequence numbers out of range")]
    Range,
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<RECORD_BYTES_MAX>()
}

/// Encodes one record. `events` must be non-empty and at most [`RECORD_EVENTS_MAX`] long.
pub fn encode_record(
    first: Sequence,
    at: Timestamp,
    batch_last: Sequence,
    prev_hash: ChainHash,
    events: &[Event],
) -> Result<(Vec<u8>, ChainHash), RecordError> {
    let payload = bincode::encode_to_vec(events, bincode_config())
        .map_err(|error| RecordError::Payload(error.to_string()))?;
    let count = u32::try_from(events.len()).map_err(|_| RecordError::Range)?;
    let payload_len =
        u32::try_from(payload.len()).map_err(|_| RecordError::TooLong(payload.len()))?;
    let mut bytes = Vec::with_capacity(RECORD_HEADER_BYTES + payload.len() + RECORD_TRAILER_BYTES);
    bytes.extend_from_slice(&RECORD_MAGIC);
    bytes.extend_from_slice(&RECORD_FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&first.0.to_le_bytes());
    bytes.extend_from_slice(&count.to_le_bytes());
    bytes.extend_from_slice(&at.0.to_le_bytes());
    bytes.extend_from_slice(&batch_last.0.to_le_bytes());
    bytes.extend_from_slice(&prev_hash.0);
    bytes.extend_from_slice(&payload_len.to_le_bytes());
    bytes.extend_from_slice(&payload);
    let hash = ChainHash(*blake3::hash(&bytes).as_bytes());
    bytes.extend_from_slice(&hash.0);
    if bytes.len() > RECORD_BYTES_MAX {
        return Err(RecordError::TooLong(bytes.len()));
    }
    Ok((bytes, hash))
}

/// An encoded record and the sequence number of its first event (its storage key).
pub type EncodedRecord = (Sequence, Vec<u8>);

/// How a commit batch is cut into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordLimits {
    /// Most events per record (clamped to 1 ..= [`RECORD_EVENTS_MAX`]).
    pub events: usize,
    /// Most bytes per encoded record. A record over it is cut shorter, down to one event: a
    /// single event larger than this still makes a record of its own.
    pub bytes: usize,
}

impl RecordLimits {
    /// At most `events` events and `bytes` bytes per record.
    pub const fn new(events: usize, bytes: usize) -> RecordLimits {
        RecordLimits { events, bytes }
    }

    /// At most `events` events per record, with no limit on bytes below [`RECORD_BYTES_MAX`].
    pub const fn events(events: usize) -> RecordLimits {
        RecordLimits::new(events, RECORD_BYTES_MAX)
    }
}

/// Splits a commit batch into records chained from `prev_hash`, each within `limits`. Returns
/// the encoded records (with their first sequence number) and the hash of the last one.
pub fn encode_batch(
    batch: &Batch,
    prev_hash: ChainHash,
    limits: RecordLimits,
) -> Result<(Vec<EncodedRecord>, ChainHash), RecordError> {
    let per_record = limits.events.clamp(1, RECORD_EVENTS_MAX);
    let mut records = Vec::with_capacity(batch.events.len().div_ceil(per_record));
    let mut hash = prev_hash;
    let mut first = batch.first;
    let mut rest = &batch.events[..];
    // Once a record had to be cut, the next ones start from its size: trying the whole rest
    // of a large batch for each record would encode it again and again.
    let mut fitted = per_record;
    while !rest.is_empty() {
        let mut take = rest.len().min(fitted);
        let (bytes, chunk_hash) = loop {
            let encoded = encode_record(first, batch.at, batch.last(), hash, &rest[..take])?;
            if encoded.0.len() <= limits.bytes || take == 1 {
                break encoded;
            }
            // Over the byte limit: retry with the share of events that fits at this chunk's
            // mean size (events vary little in size, so this rarely takes a third try).
            take = (take.saturating_mul(limits.bytes) / encoded.0.len()).clamp(1, take - 1);
            fitted = take;
        };
        records.push((first, bytes));
        hash = chunk_hash;
        let count = u64::try_from(take).map_err(|_| RecordError::Range)?;
        first = Sequence(first.0 + count);
        rest = &rest[take..];
    }
    Ok((records, hash))
}

fn read_array<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    let mut array = [0u8; N];
    if let Some(slice) = bytes.get(offset..offset + N) {
        array.copy_from_slice(slice);
    }
    array
}

/// Decodes and verifies one record: magic, version, checksum, lengths, event count. Never
/// panics, whatever the bytes.
pub fn decode_record(bytes: &[u8]) -> Result<Record, RecordError> {
    if bytes.len() < RECORD_HEADER_BYTES + RECORD_TRAILER_BYTES {
        return Err(RecordError::TooShort(bytes.len()));
    }
    if bytes.len() > RECORD_BYTES_MAX {
        return Err(RecordError::TooLong(bytes.len()));
    }
    if bytes[..4] != RECORD_MAGIC {
        return Err(RecordError::BadMagic);
    }
    let version = u16::from_le_bytes(read_array(bytes, 4));
    // Version 1 is the only one so far. A future version adds a branch here that decodes the
    // old layout into today's types (upcasting); versions newer than the code are refused.
    if version != RECORD_FORMAT_VERSION {
        return Err(RecordError::UnsupportedVersion(version));
    }
    let body_len = bytes.len() - RECORD_TRAILER_BYTES;
    let stored = ChainHash(read_array(bytes, body_len));
    if ChainHash(*blake3::hash(&bytes[..body_len]).as_bytes()) != stored {
        return Err(RecordError::Checksum);
    }
    let first = Sequence(u64::from_le_bytes(read_array(bytes, 6)));
    let count = u32::from_le_bytes(read_array(bytes, 14));
    let at = Timestamp(i64::from_le_bytes(read_array(bytes, 18)));
    let batch_last = Sequence(u64::from_le_bytes(read_array(bytes, 26)));
    let prev_hash = ChainHash(read_array(bytes, 34));
    let payload_len = u32::from_le_bytes(read_array(bytes, 66));
    if usize::try_from(payload_len).ok() != Some(body_len - RECORD_HEADER_BYTES) {
        return Err(RecordError::Length);
    }
    let payload = &bytes[RECORD_HEADER_BYTES..body_len];
    let (events, used) =
        decode_events(payload).map_err(|error| RecordError::Payload(error.to_string()))?;
    if used != payload.len() {
        return Err(RecordError::Length);
    }
    if usize::try_from(count).ok() != Some(events.len()) || events.is_empty() {
        return Err(RecordError::Count {
            header: count,
            payload: events.len(),
        });
    }
    let record = Record {
        first,
        at,
        batch_last,
        prev_hash,
        events,
        hash: stored,
    };
    // first ≥ 1, no overflow, and the batch cannot end before this record does.
    if first.0 == 0 || first.0.checked_add(u64::from(count)).is_none() || record.last() > batch_last
    {
        return Err(RecordError::Range);
    }
    Ok(record)
}

/// What [`decode_events`] says of a payload bincode decodes but would not have written: an
/// integer written wider than needed.
pub const NON_CANONICAL: &str = "not bincode's own encoding (an integer written wider than needed)";

/// Decodes a record's payload, a `Vec<Event>`: bincode's decoding, restricted to what bincode
/// itself writes, so that every record re-encodes to the very bytes it was read from (bincode
/// alone also accepts integers written wider than needed, giving two byte strings for one
/// record). Valid payloads give bincode's events and bytes used; a payload bincode refuses is
/// refused too, though not always with the same error (an earlier over-wide integer gives
/// [`NON_CANONICAL`]; an event decoded on its own can run out of bytes where the whole payload
/// would have hit bincode's limit first).
///
/// The money events — almost every event of a busy log — are read from one slice with
/// [`Event::parse_money`], which halved the decoding time of a record; any other event is
/// decoded by bincode and re-encoded once to check its bytes. Element by element, bincode's
/// decoding depends only on the bytes ahead, except its byte limit (it counts what each value
/// would take in memory): where even a generous estimate of that count could reach the limit,
/// the whole payload goes to bincode.
pub fn decode_events(payload: &[u8]) -> Result<(Vec<Event>, usize), bincode::error::DecodeError> {
    let whole = || -> Result<(Vec<Event>, usize), bincode::error::DecodeError> {
        let (events, used): (Vec<Event>, usize) =
            bincode::decode_from_slice(payload, bincode_config())?;
        written_as(&events, payload.get(..used).unwrap_or_default())?;
        Ok((events, used))
    };
    let mut fields = Fields::canonical(payload);
    let Some(len) = fields.u64().and_then(|len| usize::try_from(len).ok()) else {
        return whole();
    };
    // bincode claims `len` events' size up front, then at most 16 bytes (an i128) per byte it
    // reads; staying under the limit with both is staying under it whatever it counts.
    let claimed = len
        .checked_mul(std::mem::size_of::<Event>())
        .and_then(|events| events.checked_add(payload.len().checked_mul(16)?));
    if len > payload.len() || claimed.is_none_or(|claimed| claimed > RECORD_BYTES_MAX) {
        return whole();
    }
    let mut events = Vec::with_capacity(len);
    let mut used = fields.used();
    for _ in 0..len {
        let rest = payload.get(used..).unwrap_or_default();
        let mut fields = Fields::canonical(rest);
        match Event::parse_money(&mut fields) {
            Some(event) => {
                used += fields.used();
                events.push(event);
            }
            None => {
                let (event, read): (Event, usize) =
                    bincode::decode_from_slice(rest, bincode_config())?;
                written_as(&event, rest.get(..read).unwrap_or_default())?;
                used += read;
                events.push(event);
            }
        }
    }
    Ok((events, used))
}

/// `Ok` if bincode writes `value` as exactly `bytes`.
fn written_as<T: bincode::Encode>(
    value: &T,
    bytes: &[u8],
) -> Result<(), bincode::error::DecodeError> {
    match bincode::encode_to_vec(value, bincode_config()) {
        Ok(written) if written == bytes => Ok(()),
        _ => Err(bincode::error::DecodeError::Other(NON_CANONICAL)),
    }
}

/// Checks that `record` continues the chain after a record ending at `previous_last` with hash
/// `previous_hash`. Returns a description of the break, if any.
pub fn check_link(
    record: &Record,
    previous_last: Sequence,
    previous_hash: ChainHash,
) -> Result<(), String> {
    if record.first != previous_last.next() {
        return Err(format!(
            "expected the record to start at {}, it starts at {}",
            previous_last.next(),
            record.first
        ));
    }
    if record.prev_hash != previous_hash {
        return Err("hash chain broken: prev_hash does not match the previous record".into());
    }
    Ok(())
}
