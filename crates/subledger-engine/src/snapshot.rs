//! Snapshot encoding: the whole state at a record boundary, checksummed. Layout, integers
//! little-endian (see `docs/event-format.md`):
//!
//! ```text
//! offset size field
//!      0    4 magic "SLSN"
//!      4    2 format version (1–8)
//!      6    8 seq: the last event included
//!     14    8 at: its commit instant (ms since the Unix epoch)
//!     22   32 head_hash: hash of the log record ending at `seq`
//!     54    8 payload length in bytes
//!     62    n payload: bincode 2 (standard config) of the views *with* the idempotency index
//!   62+n   32 BLAKE3 of bytes 0 .. 62+n (formats 7 and 8: of the sections' hashes, below)
//! ```
//!
//! Payload versions: 1 = state, details, transfer histories; 2 = version 1 followed by the
//! low-balance settings; 3 = the whole views, including per-account histories and payments;
//! 4 = two sections decoded on two threads:
//!
//! ```text
//!      0    8 length v of the views section
//!      8    v the views in the version-3 layout with an empty idempotency index
//!    8+v    . the idempotency index: count, then (command id, record) in log order
//! ```
//!
//! Rebuilding the index (a hash-table insert per command, each a cache miss) was a third of
//! decoding; it now runs beside the views. 5 = format 4, where a secret's hash kept in the log
//! is written as an empty text and the sequence number of the event that holds it
//! (`subledger_views::StoredHash`); formats up to 4 always wrote the hash itself, which still
//! decodes. 6 = format 5 with the views in two sections, so that three decode
//! side by side (the views' one section took half as long again as the index's at 10M
//! transfers):
//!
//! ```text
//!      0    8 length h of the head section
//!      8    8 length r of the histories section
//!     16    h the views' head (`subledger_views::ViewsHead`): state with an empty index,
//!             details, transfer lists, low-balance settings
//!   16+h    r the views' histories (`subledger_views::ViewsHistories`): per-account
//!             histories, then payments
//! 16+h+r    . the idempotency index, as in format 4
//! ```
//!
//! The head and histories sections together are byte for byte format 5's views section.
//!
//! 7 = format 6 with two changes that let a snapshot be read in one pass, each
//! section on its own thread:
//!
//! - the histories section stores each account's entries at a fixed width: the entry count,
//!   then 40 bytes per entry (`subledger_views::Entry::to_raw`: seq, at and the three packed
//!   words, little-endian), then the account's names as before; the payments follow as in
//!   format 6 (`subledger_views::ViewsHistoriesV7`). Varints made the entries most of the
//!   longest section's decoding at 10M transfers. The idempotency index section likewise:
//!   the count, then per record its fixed 57 bytes (`subledger_core::RECORD_RAW_BYTES`: id,
//!   seq, at, amount as i128, source, target, kind) and its reference as a string, in
//!   strictly increasing sequence order. And the families' transfer, charge and top-up lists:
//!   per entry its fixed 56 bytes (id, seq, at, from, to, amount as i128) and its reference
//!   as a string (`subledger_views::ViewsHeadV7`).
//! - the trailer is the BLAKE3 of bytes 0 .. 78 (the header and the two section lengths)
//!   followed by the BLAKE3 of each of the three sections, in order. Each decoding thread
//!   hashes its section as it reads it; format 6's checksum over the whole body needed one
//!   more pass over the file before the index could be decoded.
//!
//! 8 = format 7 with each section's hash an XXH3-128 (16 bytes, little-endian)
//! instead of a BLAKE3: the trailer is the BLAKE3 of bytes 0 .. 78 followed by the three
//! XXH3-128 digests. Hashing 2 GB of sections at 10M transfers took ~0.4 s of CPU with BLAKE3
//! in every snapshot written and opened, ~0.1 s with XXH3; the section hashes detect damage,
//! and trust comes from the log's hash chain (see `piecewise::SectionHash`).
//!
//! 9 = format 8 with the families' money lists stored as their shapes only, rebuilt from the
//! index's records at open (`docs/adr/0007-one-copy-of-the-transfers.md`).
//!
//! 10 (written now) = format 9 with the index's table tags stored: the index section starts
//! with the tags' hash key and each record carries its tag, so that an open enters the table
//! without hashing every command id again (`subledger_core::CommandIndexV10Unentered`).
//! `docs/event-format.md` has the byte layouts.
//!
//! Versions 1 and 2 still decode (the golden fixture proves it) into views marked incomplete,
//! which recovery does not start from: it replays instead. The checksum is checked on the
//! index's thread beside the decoding (see `decode_payload_v4`).
//!
//! One payload restores both sides: the writer's state (with the idempotency index) and the
//! read views (without it). `head_hash` ties the snapshot to the exact log it was taken from.

use subledger_core::{
    CommandIndex, CommandIndexV10Of, CommandIndexV10Unentered, CommandIndexV7,
    CommandIndexV7Unentered, Sequence, Timestamp,
};
use subledger_log::{ChainHash, ReadAt};

use crate::piecewise::{hash_range, Digest, SectionHash, SectionReader, SECTION_BUFFER_BYTES};
use subledger_views::{
    LegacyViews, Views, ViewsHead, ViewsHeadV7, ViewsHeadV9, ViewsHeadV9Of, ViewsHistories,
    ViewsHistoriesV7,
};

pub const SNAPSHOT_MAGIC: [u8; 4] = *b"SLSN";
pub const SNAPSHOT_FORMAT_VERSION: u16 = 10;
/// The oldest version still read.
const SNAPSHOT_FORMAT_VERSION_MIN: u16 = 1;
const HEADER_BYTES: usize = 62;
const TRAILER_BYTES: usize = 32;
/// Decoding limits: the containers of a snapshot together may claim at most this much memory.
/// A damaged file reaches the decoder (formats 4 and later check the checksum beside the
/// decoding, and a forger can write a valid one anyway), and it must not make recovery abort
/// by asking for more memory than the machine has (the fuzzer found a 50 GB string). A legitimate snapshot
/// decodes to a few times its size, so the limit is the smallest of these tiers that is at
/// least [`SNAPSHOT_EXPANSION_MAX`] times the payload: a forged file can claim at most 16–256
/// times its own size, and a small one at most 256 MiB — per section: format 4's two sections
/// are decoded with a limit each, so twice that in all (format 6's three: three times).
const SNAPSHOT_DECODE_TIERS_BYTES: [usize; 4] = [1 << 28, 1 << 32, 1 << 36, 1 << 40];
/// How many times its encoded size a snapshot may take in memory (measured: about 3).
const SNAPSHOT_EXPANSION_MAX: usize = 16;

/// Why a snapshot cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("snapshot too short ({0} bytes)")]
    TooShort(usize),
    #[error("bad snapshot magic bytes")]
    BadMagic,
    #[error("snapshot format version {0} is newer than this program understands")]
    UnsupportedVersion(u16),
    #[error("snapshot checksum mismatch")]
    Checksum,
    #[error("snapshot payload does not decode: {0}")]
    Payload(String),
    #[error("snapshot header and payload disagree")]
    Mismatch,
    #[error("reading the snapshot: {0}")]
    Read(String),
}

/// A decoded, verified snapshot.
#[derive(Debug)]
pub struct DecodedSnapshot {
    pub seq: Sequence,
    pub at: Timestamp,
    pub head_hash: ChainHash,
    pub views: Views,
}

fn array<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    let mut array = [0u8; N];
    if let Some(slice) = bytes.get(offset..offset + N) {
        array.copy_from_slice(slice);
    }
    array
}

/// Encodes `views` (which must keep the idempotency index) as taken after the record whose
/// hash is `head_hash`.
pub fn encode_snapshot(views: &Views, head_hash: ChainHash) -> Result<Vec<u8>, SnapshotError> {
    let config = bincode::config::standard();
    let encode_error =
        |error: bincode::error::EncodeError| SnapshotError::Payload(error.to_string());
    let index = views
        .command_index()
        .ok_or_else(|| SnapshotError::Payload("the views keep no idempotency index".into()))?;
    let mut bytes = Vec::with_capacity(HEADER_BYTES);
    bytes.extend_from_slice(&SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&views.last_seq().0.to_le_bytes());
    bytes.extend_from_slice(&views.last_at().0.to_le_bytes());
    bytes.extend_from_slice(&head_hash.0);
    // Lengths are patched in once known (the sections are encoded in place, not copied).
    bytes.extend_from_slice(&0_u64.to_le_bytes());
    let payload_start = bytes.len();
    bytes.extend_from_slice(&[0; 16]);
    let head_start = bytes.len();
    // Format 9 stores the families' money lists as shapes only: checked here against the
    // records they will be rebuilt from.
    let shapes = views
        .money_list_shapes(index.records())
        .map_err(SnapshotError::Payload)?;
    bincode::encode_into_std_write(ViewsHeadV9Of(views, &shapes), &mut bytes, config)
        .map_err(encode_error)?;
    let histories_start = bytes.len();
    bincode::encode_into_std_write(ViewsHistories::of_v9(views), &mut bytes, config)
        .map_err(encode_error)?;
    let index_start = bytes.len();
    bincode::encode_into_std_write(CommandIndexV10Of(index), &mut bytes, config)
        .map_err(encode_error)?;
    let payload_len = (bytes.len() - payload_start) as u64;
    bytes[payload_start - 8..payload_start].copy_from_slice(&payload_len.to_le_bytes());
    let head_len = (histories_start - head_start) as u64;
    let histories_len = (index_start - histories_start) as u64;
    bytes[payload_start..payload_start + 8].copy_from_slice(&head_len.to_le_bytes());
    bytes[payload_start + 8..head_start].copy_from_slice(&histories_len.to_le_bytes());
    let hashes = [
        SectionHash::Xxh3.of(&bytes[head_start..histories_start]),
        SectionHash::Xxh3.of(&bytes[histories_start..index_start]),
        SectionHash::Xxh3.of(&bytes[index_start..]),
    ];
    let checksum = sections_checksum(&bytes[..head_start], &hashes);
    bytes.extend_from_slice(checksum.as_bytes());
    Ok(bytes)
}

/// Decodes a version-4 payload: the index section on a second thread while this one decodes
/// the views, each with at most `LIMIT` bytes claimed. The second thread first runs
/// `verified`, the whole file's checksum: decoding never trusts the bytes (a forged file
/// cannot make it panic or over-allocate), so the two can overlap, and a result from bytes
/// that fail the checksum is thrown away.
fn decode_payload_v4<const LIMIT: usize>(
    payload: &[u8],
    verified: &(dyn Fn() -> bool + Sync),
) -> Result<Views, SnapshotError> {
    let (length, sections) = payload.split_at_checked(8).ok_or(SnapshotError::Mismatch)?;
    let (views_bytes, index_bytes) = sections
        .split_at_checked(length_at(length, 0)?)
        .ok_or(SnapshotError::Mismatch)?;
    let decode_index = move || -> Result<CommandIndex, SnapshotError> {
        if !verified() {
            return Err(SnapshotError::Checksum);
        }
        decode_section::<CommandIndex, LIMIT>(index_bytes)
    };
    let decode_views = move || decode_section::<Views, LIMIT>(views_bytes);
    // `Copy` closures (references only): the fallback runs the same one here.
    let (views, index) = std::thread::scope(|scope| {
        let index = started(scope, "subledger-snapshot-index", decode_index);
        let views = decode_views();
        let index = match index {
            Some(handle) => handle
                .join()
                .map_err(|_| SnapshotError::Payload("decoding the index panicked".into()))
                .and_then(|result| result),
            None => decode_index(),
        };
        (views, index)
    });
    // A bad checksum outranks whatever the decoding of those bytes found.
    if let Err(SnapshotError::Checksum) = index {
        return Err(SnapshotError::Checksum);
    }
    with_index(views?, index?)
}

/// Decodes all of `bytes` as one `T`, with at most `LIMIT` bytes claimed.
fn decode_section<T: bincode::Decode<()>, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<T, SnapshotError> {
    let config = bincode::config::standard().with_limit::<LIMIT>();
    let (value, used): (T, usize) = bincode::decode_from_slice(bytes, config)
        .map_err(|error| SnapshotError::Payload(error.to_string()))?;
    if used != bytes.len() {
        return Err(SnapshotError::Mismatch);
    }
    Ok(value)
}

/// The `index`-th little-endian u64 of `bytes`, as a length.
fn length_at(bytes: &[u8], index: usize) -> Result<usize, SnapshotError> {
    usize::try_from(u64::from_le_bytes(array(bytes, index * 8)))
        .map_err(|_| SnapshotError::Mismatch)
}

/// Puts the decoded `index` into `views` (decoded with an empty one), checking its records.
fn with_index(views: Views, index: CommandIndex) -> Result<Views, SnapshotError> {
    with_index_as(views, index, Views::attach_command_index)
}

/// [`with_index`], attaching with `attach`.
fn with_index_as(
    mut views: Views,
    index: CommandIndex,
    attach: fn(&mut Views, CommandIndex) -> Result<(), String>,
) -> Result<Views, SnapshotError> {
    match views.detach_command_index() {
        Some(empty) if empty.is_empty() => {}
        _ => return Err(SnapshotError::Mismatch),
    }
    attach(&mut views, index).map_err(SnapshotError::Payload)?;
    Ok(views)
}

/// A version-6 or 7 snapshot's sections, as (offset, length) in its source.
#[derive(Debug, Clone, Copy)]
struct Sections {
    head: (u64, u64),
    histories: (u64, u64),
    index: (u64, u64),
}

/// How a piecewise-read snapshot's bytes are checked.
#[derive(Clone, Copy)]
enum Check<'a> {
    /// Format 6: the BLAKE3 of the whole body, computed on the index's thread (one more pass
    /// over the file) before it decodes the index.
    Whole(&'a (dyn Fn() -> Result<bool, SnapshotError> + Sync)),
    /// Formats 7 and 8: each section hashed with `hash` as its thread reads it; then the BLAKE3
    /// of `prefix` (the header and the section lengths) and the three section hashes must be
    /// `expected`.
    Sections {
        prefix: &'a [u8],
        expected: [u8; TRAILER_BYTES],
        hash: SectionHash,
    },
}

/// The checksum of formats 7 and 8: the BLAKE3 of the header and section lengths (`prefix`)
/// followed by each section's hash in order (BLAKE3 in format 7, XXH3-128 in format 8).
fn sections_checksum(prefix: &[u8], hashes: &[Digest]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(prefix);
    for hash in hashes {
        hasher.update(hash.as_bytes());
    }
    hasher.finalize()
}

/// A section's decoded value and, for formats 7 and 8, the hash of all its bytes.
type Decoded<T> = (
    Result<T, SnapshotError>,
    Option<Result<Digest, SnapshotError>>,
);

/// Decodes a format-6 or 7 payload from its source, each section read piecewise (see
/// [`crate::piecewise`]): the views' head (state, details, transfer lists) on this thread, their
/// per-account histories and payments on a second, the idempotency index on a third, each
/// section with at most `LIMIT` bytes claimed. In format 4/5 the views were one section, half
/// as long again as the index's at 10M transfers; split, the two cores share the work. `seq` is
/// the header's: the histories are checked against it on their own thread. A bad checksum
/// outranks whatever the decoding found; a read error outranks a decoding error.
fn decode_sections<const LIMIT: usize>(
    source: &dyn ReadAt,
    sections: Sections,
    check: Check<'_>,
    seq: Sequence,
) -> Result<Views, SnapshotError> {
    let hashed = match check {
        Check::Sections { hash, .. } => Some(hash),
        Check::Whole(_) => None,
    };
    let decode_index = move || -> Decoded<CommandIndex> {
        if let Check::Whole(verified) = check {
            match verified() {
                Ok(true) => {}
                Ok(false) => return (Err(SnapshotError::Checksum), None),
                Err(error) => return (Err(error), None),
            }
        }
        if hashed.is_some() {
            let (index, hash) =
                decode_section_from::<CommandIndexV7, LIMIT>(source, sections.index, hashed);
            (index.map(|CommandIndexV7(index)| index), hash)
        } else {
            decode_section_from::<CommandIndex, LIMIT>(source, sections.index, None)
        }
    };
    let decode_histories = move || -> Decoded<ViewsHistories> {
        let (histories, hash) = if hashed.is_some() {
            let (decoded, hash) =
                decode_section_from::<ViewsHistoriesV7, LIMIT>(source, sections.histories, hashed);
            (decoded.map(|ViewsHistoriesV7(histories)| histories), hash)
        } else {
            decode_section_from::<ViewsHistories, LIMIT>(source, sections.histories, None)
        };
        let histories = histories.and_then(|histories| in_order(histories, seq));
        (histories, hash)
    };
    let decode_head = move || -> Decoded<Views> {
        if hashed.is_some() {
            let (head, hash) =
                decode_section_from::<ViewsHeadV7<Views>, LIMIT>(source, sections.head, hashed);
            return (head.map(|ViewsHeadV7(views)| views), hash);
        }
        let (head, hash) =
            decode_section_from::<ViewsHead<Views>, LIMIT>(source, sections.head, None);
        (head.map(|ViewsHead(views)| views), hash)
    };
    // The closures hold only references and numbers, so they are `Copy`: the fallback for a
    // thread that cannot be started runs the same one here.
    let ((head, head_hash), (histories, histories_hash), (index, index_hash)) =
        std::thread::scope(|scope| {
            let index = started(scope, "subledger-snapshot-index", decode_index);
            let histories = started(scope, "subledger-snapshot-histories", decode_histories);
            let head = decode_head();
            let histories = joined(histories, decode_histories);
            let index = joined(index, decode_index);
            (head, histories, index)
        });
    verify_sections(
        source,
        sections,
        check,
        [head_hash, histories_hash, index_hash],
    )?;
    outranking(&head, &histories, &index)?;
    let mut views = head?;
    views
        .attach_histories(histories?)
        .map_err(|detail| SnapshotError::Payload(detail.into()))?;
    with_index(views, index?)
}

/// Formats 6–8 ([`decode_sections`]) or 9 ([`decode_sections_v9`]).
fn decode_sections_as<const LIMIT: usize>(
    version: u16,
    source: &dyn ReadAt,
    sections: Sections,
    check: Check<'_>,
    seq: Sequence,
) -> Result<Views, SnapshotError> {
    if version >= 9 {
        decode_sections_v9::<LIMIT>(version, source, sections, check, seq)
    } else {
        decode_sections::<LIMIT>(source, sections, check, seq)
    }
}

/// Formats 9 and 10: as [`decode_sections`], but the head holds only the shapes of the families'
/// money lists, which are rebuilt from the index's records: as soon as the index's records
/// are decoded, this thread rebuilds the lists while another enters the records in the
/// index's table (the histories may still be decoding on a third).
fn decode_sections_v9<const LIMIT: usize>(
    version: u16,
    source: &dyn ReadAt,
    sections: Sections,
    check: Check<'_>,
    seq: Sequence,
) -> Result<Views, SnapshotError> {
    let Check::Sections { hash: kind, .. } = check else {
        return Err(SnapshotError::Mismatch);
    };
    let hashed = Some(kind);
    // Format 10 adds the table's tags (and their key) to the index's records.
    let decode_index = move || -> Decoded<CommandIndex> {
        if version >= 10 {
            let (index, hash) = decode_section_from::<CommandIndexV10Unentered, LIMIT>(
                source,
                sections.index,
                hashed,
            );
            return (index.map(|CommandIndexV10Unentered(index)| index), hash);
        }
        let (index, hash) =
            decode_section_from::<CommandIndexV7Unentered, LIMIT>(source, sections.index, hashed);
        (index.map(|CommandIndexV7Unentered(index)| index), hash)
    };
    let decode_histories = move || -> Decoded<ViewsHistories> {
        let (decoded, hash) =
            decode_section_from::<ViewsHistoriesV7, LIMIT>(source, sections.histories, hashed);
        let histories = decoded.and_then(|ViewsHistoriesV7(histories)| {
            if histories.has_payments() {
                Err(SnapshotError::Payload(
                    "views: payments listed beside their shapes".into(),
                ))
            } else {
                in_order(histories, seq)
            }
        });
        (histories, hash)
    };
    let decode_head = move || -> Decoded<ViewsHeadV9> {
        decode_section_from::<ViewsHeadV9, LIMIT>(source, sections.head, hashed)
    };
    let (head, (histories, histories_hash), (index, index_hash), rebuilt) =
        std::thread::scope(|scope| {
            let index = started(scope, "subledger-snapshot-index", decode_index);
            let histories = started(scope, "subledger-snapshot-histories", decode_histories);
            let (head, head_hash) = decode_head();
            let (mut index, index_hash) = joined(index, decode_index);
            // The lists are rebuilt beside the table's entry; a repeated id is reported as
            // format 7 reports it.
            let rebuilt = match (&head, &mut index) {
                (Ok(head), Ok(index)) => {
                    // The records are frozen first: the lists hold their positions, and the
                    // records are shared by the index and the views, not copied (ADR 0007).
                    let records = index.freeze();
                    let (_, pending) = index.split_for_entry();
                    // The rebuild on a thread of its own: should none be had, its closure is
                    // lost with nothing in it that cannot be had again (the records are a
                    // shared borrow), unlike the entry's, which owns the appended tags.
                    let records = &records;
                    let rebuild = move || head.views.rebuild_money_lists(&head.shapes, records);
                    let (entered, rebuilt) = std::thread::scope(|inner| {
                        let rebuilding = started(inner, "subledger-snapshot-lists", rebuild);
                        let entered = pending.enter();
                        let rebuilt = match rebuilding {
                            Some(handle) => {
                                handle.join().unwrap_or(Err("a decoding thread panicked"))
                            }
                            None => rebuild(),
                        };
                        (entered, rebuilt)
                    });
                    let entered =
                        entered.map_err(|_| SnapshotError::Payload("duplicate command id".into()));
                    Some((entered, rebuilt))
                }
                _ => None,
            };
            let histories = joined(histories, decode_histories);
            ((head, head_hash), histories, (index, index_hash), rebuilt)
        });
    let (head, head_hash) = head;
    verify_sections(
        source,
        sections,
        check,
        [head_hash, histories_hash, index_hash],
    )?;
    outranking(&head, &histories, &index)?;
    let ViewsHeadV9 { mut views, .. } = head?;
    let index = index?;
    let (entered, rebuilt) = rebuilt.ok_or(SnapshotError::Mismatch)?;
    entered?;
    views
        .attach_histories(histories?)
        .map_err(|detail| SnapshotError::Payload(detail.into()))?;
    views.attach_money_lists(rebuilt.map_err(|detail| SnapshotError::Payload(detail.into()))?);
    // The rebuild checked every record against the state, beside the table's entry.
    with_index_as(views, index, Views::attach_checked_command_index)
}

/// `histories`, if every account's entries are in order and none is after `seq`.
fn in_order(histories: ViewsHistories, seq: Sequence) -> Result<ViewsHistories, SnapshotError> {
    if histories.in_order(seq) {
        Ok(histories)
    } else {
        Err(SnapshotError::Payload(
            "views: an account history is out of order".into(),
        ))
    }
}

/// `decode` started on a thread of its own named `name`, if one can be had.
fn started<'scope, R: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    decode: impl FnOnce() -> R + Send + 'scope,
) -> Option<std::thread::ScopedJoinHandle<'scope, R>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn_scoped(scope, decode)
        .ok()
}

/// What the thread `started` gives back, or, without a thread, `decode` run here.
fn joined<T>(
    thread: Option<std::thread::ScopedJoinHandle<'_, Decoded<T>>>,
    decode: impl FnOnce() -> Decoded<T>,
) -> Decoded<T> {
    match thread {
        Some(handle) => handle.join().unwrap_or_else(|_| panicked()),
        None => decode(),
    }
}

/// What a decoding thread that panicked leaves: an error, and no hash (its section is hashed
/// again by [`verify_sections`]).
fn panicked<T>() -> Decoded<T> {
    (
        Err(SnapshotError::Payload("a decoding thread panicked".into())),
        None,
    )
}

/// After the checksum: the index's checksum or read error, then the head's or histories' read
/// error, outrank whatever else the decoding found (a read error outranks a decoding error).
fn outranking<A, B, C>(
    head: &Result<A, SnapshotError>,
    histories: &Result<B, SnapshotError>,
    index: &Result<C, SnapshotError>,
) -> Result<(), SnapshotError> {
    if let Err(error @ (SnapshotError::Checksum | SnapshotError::Read(_))) = index {
        return Err(error.clone());
    }
    for result in [head.as_ref().err(), histories.as_ref().err()] {
        if let Some(error @ SnapshotError::Read(_)) = result {
            return Err(error.clone());
        }
    }
    Ok(())
}

/// Formats 7–9: every section's hash (computed by its thread, or here for a thread that
/// panicked), then the trailer over the prefix and the hashes; format 6 checked the whole
/// file on the index's thread instead.
fn verify_sections(
    source: &dyn ReadAt,
    sections: Sections,
    check: Check<'_>,
    found: [Option<Result<Digest, SnapshotError>>; 3],
) -> Result<(), SnapshotError> {
    let Check::Sections {
        prefix,
        expected,
        hash: kind,
    } = check
    else {
        return Ok(());
    };
    let mut hashes = Vec::with_capacity(3);
    let ranges = [sections.head, sections.histories, sections.index];
    for (hash, (offset, len)) in found.into_iter().zip(ranges) {
        let hash = match hash {
            Some(hash) => hash,
            // Only a panicked thread returns no hash: hash its section here, so that a
            // damaged file is still reported as such.
            None => hash_range(source, offset, len, SECTION_BUFFER_BYTES, kind)
                .map_err(|error| SnapshotError::Read(error.to_string())),
        };
        hashes.push(hash?);
    }
    if sections_checksum(prefix, &hashes).as_bytes() != &expected {
        return Err(SnapshotError::Checksum);
    }
    Ok(())
}

/// Decodes the section `(offset, len)` of `source` as one `T`, with at most `LIMIT` bytes
/// claimed, reading it piecewise; with `hashed`, also that hash of all the section's bytes
/// (read to its end even when decoding stopped early, so that a bad checksum can outrank the
/// decoding's error).
fn decode_section_from<T: bincode::Decode<()>, const LIMIT: usize>(
    source: &dyn ReadAt,
    (offset, len): (u64, u64),
    hashed: Option<SectionHash>,
) -> Decoded<T> {
    let config = bincode::config::standard().with_limit::<LIMIT>();
    let mut reader = SectionReader::new(source, offset, len, SECTION_BUFFER_BYTES);
    if let Some(hash) = hashed {
        reader = reader.hashed(hash);
    }
    let decoded: Result<T, _> = bincode::decode_from_reader(&mut reader, config);
    let finished = reader.finished();
    let hash = reader.finish_hash();
    let read_error = reader
        .take_error()
        .map(|error| SnapshotError::Read(error.to_string()));
    let value = match (&read_error, decoded) {
        (Some(error), _) => Err(error.clone()),
        (None, Err(error)) => Err(SnapshotError::Payload(error.to_string())),
        (None, Ok(_)) if !finished => Err(SnapshotError::Mismatch),
        (None, Ok(value)) => Ok(value),
    };
    let hash = hash.map(|hash| {
        hash.ok_or_else(|| {
            read_error.unwrap_or_else(|| SnapshotError::Read("a read failed".into()))
        })
    });
    (value, hash)
}

/// Decodes a payload of `version` with at most `LIMIT` bytes claimed; the views and the bytes
/// used.
fn decode_payload<const LIMIT: usize>(
    payload: &[u8],
    version: u16,
    verified: &(dyn Fn() -> bool + Sync),
) -> Result<(Views, usize), SnapshotError> {
    if version >= 4 {
        // Format 5 differs only inside the secrets, which one decoder reads either way.
        return decode_payload_v4::<LIMIT>(payload, verified).map(|views| (views, payload.len()));
    }
    if !verified() {
        return Err(SnapshotError::Checksum);
    }
    let config = bincode::config::standard().with_limit::<LIMIT>();
    let payload_error =
        |error: bincode::error::DecodeError| SnapshotError::Payload(error.to_string());
    let (mut views, mut used): (Views, usize) = if version >= 3 {
        bincode::decode_from_slice(payload, config).map_err(payload_error)?
    } else {
        let (LegacyViews(views), used) =
            bincode::decode_from_slice(payload, config).map_err(payload_error)?;
        (views, used)
    };
    if version == 2 {
        let rest = payload.get(used..).unwrap_or_default();
        let (settings, extension): (
            Vec<(subledger_core::AccountId, subledger_core::LowBalance)>,
            usize,
        ) = bincode::decode_from_slice(rest, config).map_err(payload_error)?;
        views
            .restore_low_balances(settings)
            .map_err(SnapshotError::Payload)?;
        used += extension;
    }
    Ok((views, used))
}

/// Decodes and verifies a snapshot held in memory.
pub fn decode_snapshot(bytes: &[u8]) -> Result<DecodedSnapshot, SnapshotError> {
    decode_snapshot_from(&bytes)
}

/// Decodes and verifies a snapshot read from `source`. Formats 6 and 7 are read piecewise, section by
/// section on three threads (a file is never read whole: see the private `piecewise` module); older
/// formats are read into memory and decoded as they always were.
pub fn decode_snapshot_from(source: &dyn ReadAt) -> Result<DecodedSnapshot, SnapshotError> {
    let read = |buf: &mut [u8], offset: u64| {
        source
            .read_exact_at(buf, offset)
            .map_err(|error| SnapshotError::Read(error.to_string()))
    };
    let size = source.size();
    if size < (HEADER_BYTES + TRAILER_BYTES) as u64 {
        return Err(SnapshotError::TooShort(
            usize::try_from(size).unwrap_or(usize::MAX),
        ));
    }
    let mut header = [0u8; HEADER_BYTES];
    read(&mut header, 0)?;
    if header[..4] != SNAPSHOT_MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = u16::from_le_bytes(array(&header, 4));
    if !(SNAPSHOT_FORMAT_VERSION_MIN..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
        return Err(SnapshotError::UnsupportedVersion(version));
    }
    if version < 6 {
        return match source.as_slice() {
            Some(bytes) => decode_in_memory(bytes),
            None => {
                let size = usize::try_from(size).map_err(|_| SnapshotError::Mismatch)?;
                let mut bytes = vec![0; size];
                read(&mut bytes, 0)?;
                decode_in_memory(&bytes)
            }
        };
    }
    let body = size - TRAILER_BYTES as u64;
    let mut trailer = [0u8; TRAILER_BYTES];
    read(&mut trailer, body)?;
    // Format 6: checked on the index's thread beside the decoding (see `decode_sections`).
    let verified = || -> Result<bool, SnapshotError> {
        let hash = hash_range(source, 0, body, SECTION_BUFFER_BYTES, SectionHash::Blake3)
            .map_err(|error| SnapshotError::Read(error.to_string()))?;
        Ok(hash.as_bytes() == trailer)
    };
    let seq = Sequence(u64::from_le_bytes(array(&header, 6)));
    let at = Timestamp(i64::from_le_bytes(array(&header, 14)));
    let head_hash = ChainHash(array(&header, 22));
    let payload_len = u64::from_le_bytes(array(&header, 54));
    let payload_start = HEADER_BYTES as u64;
    let mut lengths = [0u8; 16];
    let sections = if payload_len == body - payload_start && payload_len >= 16 {
        read(&mut lengths, payload_start)?;
        let head_len = u64::from_le_bytes(array(&lengths, 0));
        let histories_len = u64::from_le_bytes(array(&lengths, 8));
        let head_start = payload_start + 16;
        head_start
            .checked_add(head_len)
            .and_then(|histories_start| {
                let index_start = histories_start.checked_add(histories_len)?;
                Some(Sections {
                    head: (head_start, head_len),
                    histories: (histories_start, histories_len),
                    index: (index_start, body.checked_sub(index_start)?),
                })
            })
    } else {
        None
    };
    let Some(sections) = sections else {
        // Format 7's checksum covers the lengths, and the encoder never writes lengths that
        // bound nothing: such a file cannot be as it was sealed. (Its checksum cannot even be
        // computed, since it covers the hashes of sections these lengths do not delimit.)
        return Err(if version >= 7 {
            SnapshotError::Checksum
        } else if verified()? {
            SnapshotError::Mismatch
        } else {
            SnapshotError::Checksum
        });
    };
    let mut prefix = header.to_vec();
    prefix.extend_from_slice(&lengths);
    let check = if version >= 7 {
        Check::Sections {
            prefix: &prefix,
            expected: trailer,
            hash: if version >= 8 {
                SectionHash::Xxh3
            } else {
                SectionHash::Blake3
            },
        }
    } else {
        Check::Whole(&verified)
    };
    let wanted = usize::try_from(payload_len)
        .unwrap_or(usize::MAX)
        .saturating_mul(SNAPSHOT_EXPANSION_MAX);
    let decoded = match SNAPSHOT_DECODE_TIERS_BYTES
        .iter()
        .position(|tier| *tier >= wanted)
    {
        Some(0) => decode_sections_as::<{ SNAPSHOT_DECODE_TIERS_BYTES[0] }>(
            version, source, sections, check, seq,
        ),
        Some(1) => decode_sections_as::<{ SNAPSHOT_DECODE_TIERS_BYTES[1] }>(
            version, source, sections, check, seq,
        ),
        Some(2) => decode_sections_as::<{ SNAPSHOT_DECODE_TIERS_BYTES[2] }>(
            version, source, sections, check, seq,
        ),
        _ => decode_sections_as::<{ SNAPSHOT_DECODE_TIERS_BYTES[3] }>(
            version, source, sections, check, seq,
        ),
    };
    checked(decoded?, seq, at, head_hash)
}

/// Decodes a snapshot of formats 1–5, whole in memory.
fn decode_in_memory(bytes: &[u8]) -> Result<DecodedSnapshot, SnapshotError> {
    if bytes.len() < HEADER_BYTES + TRAILER_BYTES {
        return Err(SnapshotError::TooShort(bytes.len()));
    }
    if bytes[..4] != SNAPSHOT_MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = u16::from_le_bytes(array(bytes, 4));
    if !(SNAPSHOT_FORMAT_VERSION_MIN..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
        return Err(SnapshotError::UnsupportedVersion(version));
    }
    let body = bytes.len() - TRAILER_BYTES;
    // Checked beside the decoding for formats 4 and later (see `decode_payload_v4`).
    let verified = || blake3::hash(&bytes[..body]).as_bytes() == &array::<32>(bytes, body);
    let seq = Sequence(u64::from_le_bytes(array(bytes, 6)));
    let at = Timestamp(i64::from_le_bytes(array(bytes, 14)));
    let head_hash = ChainHash(array(bytes, 22));
    let payload_len = u64::from_le_bytes(array(bytes, 54));
    if usize::try_from(payload_len).ok() != Some(body - HEADER_BYTES) {
        return Err(if verified() {
            SnapshotError::Mismatch
        } else {
            SnapshotError::Checksum
        });
    }
    let payload = &bytes[HEADER_BYTES..body];
    let wanted = payload.len().saturating_mul(SNAPSHOT_EXPANSION_MAX);
    let decoded = match SNAPSHOT_DECODE_TIERS_BYTES
        .iter()
        .position(|tier| *tier >= wanted)
    {
        Some(0) => {
            decode_payload::<{ SNAPSHOT_DECODE_TIERS_BYTES[0] }>(payload, version, &verified)
        }
        Some(1) => {
            decode_payload::<{ SNAPSHOT_DECODE_TIERS_BYTES[1] }>(payload, version, &verified)
        }
        Some(2) => {
            decode_payload::<{ SNAPSHOT_DECODE_TIERS_BYTES[2] }>(payload, version, &verified)
        }
        _ => decode_payload::<{ SNAPSHOT_DECODE_TIERS_BYTES[3] }>(payload, version, &verified),
    };
    let (views, used) = decoded?;
    if used != payload.len() {
        return Err(SnapshotError::Mismatch);
    }
    checked(views, seq, at, head_hash)
}

/// The decoded snapshot, if its views end where its header says.
fn checked(
    views: Views,
    seq: Sequence,
    at: Timestamp,
    head_hash: ChainHash,
) -> Result<DecodedSnapshot, SnapshotError> {
    if views.last_seq() != seq || views.last_at() != at {
        return Err(SnapshotError::Mismatch);
    }
    Ok(DecodedSnapshot {
        seq,
        at,
        head_hash,
        views,
    })
}
