//! subledger-log: the seam between the engine and durable storage.
//!
//! The engine's writer owns one [`EventLog`]: it appends each committed [`Batch`] and then calls
//! [`EventLog::sync`], acknowledging nobody before `sync` returns. Readers (recovery, change
//! feeds, audits) use a [`LogReader`], which can be cloned and used from any thread while the
//! writer appends. This crate deliberately knows no storage engine: `MemoryLog` lives here for
//! tests and embedding without persistence; the sled implementation lives in its own crate, and
//! another backend (e.g. NATS JetStream) is one more crate implementing these two traits.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use subledger_core::{Batch, Sequence};

pub mod archive;
pub mod record;

pub use record::{ChainHash, Record, RecordError};

/// Why the log failed. Every variant is fail-stop for the writer: it stops accepting commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The storage failed (I/O, flush). Nothing after the last successful `sync` is durable.
    #[error("storage failure: {0}")]
    Storage(String),
    /// A record is corrupt, missing or out of place; `seq` is the first sequence number
    /// affected.
    #[error("corrupt log at sequence {seq}: {detail}")]
    Corrupt { seq: Sequence, detail: String },
    /// A batch does not continue the log (its first sequence is not the head + 1).
    #[error("batch starting at {first} does not follow the head {head}")]
    Gap { head: Sequence, first: Sequence },
    /// A record could not be encoded (e.g. larger than the record limit).
    #[error("cannot encode a record: {0}")]
    Encode(String),
    /// An injected failure (tests only).
    #[error("injected failure")]
    Injected,
}

/// Verified records in sequence order; the first error ends the iteration (a corrupt record is
/// never skipped).
pub type RecordIter<'a> = Box<dyn Iterator<Item = Result<Record, LogError>> + Send + 'a>;

/// Batches (one per record) in sequence order.
pub type BatchIter<'a> = Box<dyn Iterator<Item = Result<Batch, LogError>> + Send + 'a>;

/// Read access to a log, shareable across threads while the writer appends.
pub trait LogReader: Send + Sync {
    /// Records from the one containing `from` up to the durable head, each verified: checksum,
    /// and link to the previous record (sequence and hash). The first record may start before
    /// `from`; callers skip the events they do not need.
    fn records_from(&self, from: Sequence) -> Result<RecordIter<'_>, LogError>;

    /// The last durable sequence number (0 for an empty log).
    fn head(&self) -> Sequence;

    /// The hash of the record that ends exactly at `seq`, if one does (snapshots are taken at
    /// record ends and name the hash they continue from).
    fn hash_at(&self, seq: Sequence) -> Result<Option<ChainHash>, LogError>;

    /// Like [`LogReader::records_from`], as batches.
    fn read_from(&self, from: Sequence) -> Result<BatchIter<'_>, LogError> {
        Ok(Box::new(
            self.records_from(from)?
                .map(|record| record.map(Record::into_batch)),
        ))
    }
}

/// Bytes that can be read at any offset by several threads at once: a snapshot in memory or
/// in a file.
pub trait ReadAt: Send + Sync {
    /// The number of bytes.
    fn size(&self) -> u64;

    /// Fills `buf` with the bytes from `offset`; an error if fewer remain.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;

    /// All the bytes, when they are in memory already (read without a copy).
    fn as_slice(&self) -> Option<&[u8]> {
        None
    }
}

impl ReadAt for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let source = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(source);
        Ok(())
    }

    fn as_slice(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }

    fn as_slice(&self) -> Option<&[u8]> {
        (**self).as_slice()
    }
}

/// A file, with its length taken once when opened.
struct FileBytes {
    file: std::fs::File,
    size: u64,
}

impl ReadAt for FileBytes {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }
}

/// In-memory bytes lent by the store.
struct MemoryBytes(Box<dyn AsRef<[u8]> + Send + Sync>);

impl ReadAt for MemoryBytes {
    fn size(&self) -> u64 {
        (*self.0).as_ref().size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        (*self.0).as_ref().read_exact_at(buf, offset)
    }

    fn as_slice(&self) -> Option<&[u8]> {
        Some((*self.0).as_ref())
    }
}

/// A stored snapshot's bytes: lent by the store without a copy where they are in memory, or
/// an open file that the decoder reads piecewise. A snapshot of a large ledger is gigabytes:
/// reading one whole into a fresh buffer took a fifth of its recovery, most of it the kernel
/// faulting in the buffer's pages, before any decoding could start.
pub struct SnapshotBytes(Box<dyn ReadAt>);

impl SnapshotBytes {
    /// Bytes in memory.
    pub fn new(bytes: impl AsRef<[u8]> + Send + Sync + 'static) -> SnapshotBytes {
        SnapshotBytes(Box::new(MemoryBytes(Box::new(bytes))))
    }

    /// An open file, read where and when the decoder asks (the file must not change while
    /// this is held: snapshot files are written under another name and renamed into place).
    pub fn file(file: std::fs::File) -> std::io::Result<SnapshotBytes> {
        let size = file.metadata()?.len();
        Ok(SnapshotBytes(Box::new(FileBytes { file, size })))
    }

    /// All the bytes, copied into memory.
    pub fn to_vec(&self) -> std::io::Result<Vec<u8>> {
        if let Some(bytes) = self.0.as_slice() {
            return Ok(bytes.to_vec());
        }
        let size = usize::try_from(self.0.size())
            .map_err(|_| std::io::Error::other("the snapshot is larger than memory can address"))?;
        let mut bytes = vec![0; size];
        self.0.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    }
}

impl ReadAt for SnapshotBytes {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn as_slice(&self) -> Option<&[u8]> {
        self.0.as_slice()
    }
}

impl std::fmt::Debug for SnapshotBytes {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "SnapshotBytes({} bytes)", self.size())
    }
}

/// Where snapshots are kept, beside the log. Bytes are opaque here: the engine encodes them.
pub trait SnapshotStore: Send + Sync {
    /// Stores a snapshot taken at `seq`; durable when this returns.
    fn save(&self, seq: Sequence, bytes: &[u8]) -> Result<(), LogError>;
    /// Sequence numbers of stored snapshots, ascending.
    fn list(&self) -> Result<Vec<Sequence>, LogError>;
    fn load(&self, seq: Sequence) -> Result<Option<SnapshotBytes>, LogError>;
    fn remove(&self, seq: Sequence) -> Result<(), LogError>;
}

/// The writer's handle on a log.
pub trait EventLog: Send + 'static {
    /// Adds a batch after the head. Not durable until [`EventLog::sync`] returns `Ok`.
    fn append(&mut self, batch: &Batch) -> Result<(), LogError>;

    /// Makes every appended batch durable.
    fn sync(&mut self) -> Result<(), LogError>;

    /// A reader over the same log.
    fn reader(&self) -> Arc<dyn LogReader>;

    /// The snapshot store that belongs to this log.
    fn snapshots(&self) -> Arc<dyn SnapshotStore>;
}

impl std::fmt::Debug for dyn LogReader {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "LogReader(head {})", self.head())
    }
}

impl std::fmt::Debug for dyn EventLog {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("EventLog")
    }
}

impl std::fmt::Debug for dyn SnapshotStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SnapshotStore")
    }
}

/// Decodes and verifies stored records one after another: each must pass its checksum, start
/// right after the previous one and name its hash. Shared by every backend so the rules are
/// written once. `previous` is the sequence and hash the first record must continue from.
pub fn verify_records<'a>(
    stored: impl Iterator<Item = Result<(Sequence, Vec<u8>), LogError>> + Send + 'a,
    previous: (Sequence, ChainHash),
) -> RecordIter<'a> {
    let mut previous = Some(previous);
    Box::new(stored.map_while(move |item| {
        let (last, hash) = previous?;
        let verified = item.and_then(|(key, bytes)| {
            let corrupt = |detail: String| LogError::Corrupt { seq: key, detail };
            let record =
                record::decode_record(&bytes).map_err(|error| corrupt(error.to_string()))?;
            if record.first != key {
                return Err(corrupt(format!(
                    "record stored under {key} starts at {}",
                    record.first
                )));
            }
            record::check_link(&record, last, hash).map_err(|detail| LogError::Corrupt {
                seq: last.next(),
                detail,
            })?;
            Ok(record)
        });
        previous = verified
            .as_ref()
            .ok()
            .map(|record| (record.last(), record.hash));
        Some(verified)
    }))
}

/// A log kept in memory, in the same encoded, hash-chained records as the durable backends:
/// complete and fast, durable only as long as the process lives.
#[derive(Debug, Clone, Default)]
pub struct MemoryLog {
    shared: Arc<MemoryShared>,
}

#[derive(Debug, Default)]
struct MemoryShared {
    records: RwLock<MemoryRecords>,
    snapshots: RwLock<BTreeMap<Sequence, std::sync::Arc<[u8]>>>,
    fail_next_sync: AtomicBool,
    /// While set, `SnapshotStore::save` fails (fault tests).
    fail_snapshot_saves: AtomicBool,
    snapshot_save_attempts: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct MemoryRecords {
    /// (first sequence, encoded record), in order.
    stored: Vec<(Sequence, Vec<u8>)>,
    head: Sequence,
    head_hash: ChainHash,
    /// Hash of the record ending at each record end, for `hash_at`.
    ends: BTreeMap<Sequence, ChainHash>,
}

impl MemoryLog {
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    /// Bytes held by the stored records (their buffers' capacity): what this log costs in
    /// memory, which a memory measurement of the rest of the ledger leaves out.
    pub fn record_bytes(&self) -> u64 {
        self.shared.records.read().map_or(0, |records| {
            records
                .stored
                .iter()
                .map(|(_, bytes)| bytes.capacity() as u64)
                .sum::<u64>()
                + (records.stored.capacity() * std::mem::size_of::<(Sequence, Vec<u8>)>()) as u64
        })
    }

    /// A handle that makes the next `sync` fail, for fail-stop tests.
    pub fn fault_switch(&self) -> FaultSwitch {
        FaultSwitch {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Every batch in the log (one per record), decoded.
    pub fn batches(&self) -> Vec<Batch> {
        self.read_from(Sequence(1))
            .map(|batches| batches.filter_map(Result::ok).collect())
            .unwrap_or_default()
    }

    /// Replaces the stored bytes of the record starting at `first` (corruption tests).
    pub fn tamper(&self, first: Sequence, edit: impl FnOnce(&mut Vec<u8>)) {
        if let Ok(mut records) = self.shared.records.write() {
            if let Some((_, bytes)) = records.stored.iter_mut().find(|(key, _)| *key == first) {
                edit(bytes);
            }
        }
    }
}

/// Makes a [`MemoryLog`]'s next `sync` fail.
#[derive(Debug, Clone)]
pub struct FaultSwitch {
    shared: Arc<MemoryShared>,
}

impl FaultSwitch {
    pub fn fail_next_sync(&self) {
        self.shared.fail_next_sync.store(true, Ordering::SeqCst);
    }

    /// Makes every snapshot save fail (`true`) or succeed again (`false`).
    pub fn fail_snapshot_saves(&self, failing: bool) {
        self.shared
            .fail_snapshot_saves
            .store(failing, Ordering::SeqCst);
    }

    /// Snapshot saves tried so far, failed or not.
    pub fn snapshot_save_attempts(&self) -> u64 {
        self.shared.snapshot_save_attempts.load(Ordering::SeqCst)
    }
}

fn poisoned() -> LogError {
    LogError::Storage("memory log lock poisoned".into())
}

/// Events per record in the memory log: small enough that tests cross record boundaries.
const MEMORY_EVENTS_PER_RECORD: usize = 64;

impl EventLog for MemoryLog {
    fn append(&mut self, batch: &Batch) -> Result<(), LogError> {
        let mut records = self.shared.records.write().map_err(|_| poisoned())?;
        if batch.first != records.head.next() {
            return Err(LogError::Gap {
                head: records.head,
                first: batch.first,
            });
        }
        let (encoded, hash) = record::encode_batch(
            batch,
            records.head_hash,
            record::RecordLimits::events(MEMORY_EVENTS_PER_RECORD),
        )
        .map_err(|error| LogError::Encode(error.to_string()))?;
        let mut end = batch.first;
        for (first, bytes) in encoded {
            let record = record::decode_record(&bytes)
                .map_err(|error| LogError::Encode(error.to_string()))?;
            end = record.last();
            records.ends.insert(end, record.hash);
            records.stored.push((first, bytes));
        }
        records.head = end.max(batch.last());
        records.head_hash = hash;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), LogError> {
        if self.shared.fail_next_sync.swap(false, Ordering::SeqCst) {
            return Err(LogError::Injected);
        }
        Ok(())
    }

    fn reader(&self) -> Arc<dyn LogReader> {
        Arc::new(self.clone())
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        Arc::new(self.clone())
    }
}

impl LogReader for MemoryLog {
    fn records_from(&self, from: Sequence) -> Result<RecordIter<'_>, LogError> {
        let records = self.shared.records.read().map_err(|_| poisoned())?;
        if from > records.head {
            return Ok(Box::new(std::iter::empty()));
        }
        // The record containing `from`: the last one starting at or before it.
        let start = records
            .stored
            .partition_point(|(first, _)| *first <= from)
            .saturating_sub(1);
        let previous = match start.checked_sub(1) {
            Some(index) => {
                let (_, bytes) = &records.stored[index];
                let record = record::decode_record(bytes).map_err(|error| LogError::Corrupt {
                    seq: records.stored[index].0,
                    detail: error.to_string(),
                })?;
                (record.last(), record.hash)
            }
            None => (Sequence::ZERO, ChainHash::GENESIS),
        };
        let selected: Vec<(Sequence, Vec<u8>)> = records.stored[start..].to_vec();
        Ok(verify_records(selected.into_iter().map(Ok), previous))
    }

    fn head(&self) -> Sequence {
        self.shared
            .records
            .read()
            .map(|records| records.head)
            .unwrap_or(Sequence::ZERO)
    }

    fn hash_at(&self, seq: Sequence) -> Result<Option<ChainHash>, LogError> {
        let records = self.shared.records.read().map_err(|_| poisoned())?;
        Ok(records.ends.get(&seq).copied())
    }
}

impl SnapshotStore for MemoryLog {
    fn save(&self, seq: Sequence, bytes: &[u8]) -> Result<(), LogError> {
        self.shared
            .snapshot_save_attempts
            .fetch_add(1, Ordering::SeqCst);
        if self.shared.fail_snapshot_saves.load(Ordering::SeqCst) {
            return Err(LogError::Injected);
        }
        let mut snapshots = self.shared.snapshots.write().map_err(|_| poisoned())?;
        snapshots.insert(seq, std::sync::Arc::from(bytes));
        Ok(())
    }

    fn list(&self) -> Result<Vec<Sequence>, LogError> {
        let snapshots = self.shared.snapshots.read().map_err(|_| poisoned())?;
        Ok(snapshots.keys().copied().collect())
    }

    fn load(&self, seq: Sequence) -> Result<Option<SnapshotBytes>, LogError> {
        let snapshots = self.shared.snapshots.read().map_err(|_| poisoned())?;
        Ok(snapshots.get(&seq).cloned().map(SnapshotBytes::new))
    }

    fn remove(&self, seq: Sequence) -> Result<(), LogError> {
        let mut snapshots = self.shared.snapshots.write().map_err(|_| poisoned())?;
        snapshots.remove(&seq);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use subledger_core::{Event, Timestamp};

    fn batch(first: u64, count: usize) -> Batch {
        let event = Event::AccountSuspended {
            account: subledger_core::AccountId(0),
        };
        Batch {
            first: Sequence(first),
            at: Timestamp(0),
            events: vec![event; count],
        }
    }

    #[test]
    fn appends_in_order_and_reads_from_any_sequence() {
        let mut log = MemoryLog::new();
        log.append(&batch(1, 3)).unwrap();
        log.append(&batch(4, 2)).unwrap();
        assert_eq!(
            log.append(&batch(7, 1)),
            Err(LogError::Gap {
                head: Sequence(5),
                first: Sequence(7)
            })
        );
        let reader = log.reader();
        assert_eq!(reader.head(), Sequence(5));
        let firsts: Vec<u64> = reader
            .read_from(Sequence(4))
            .unwrap()
            .map(|batch| batch.unwrap().first.0)
            .collect();
        assert_eq!(firsts, vec![4]);
        assert!(reader.hash_at(Sequence(3)).unwrap().is_some());
        assert!(reader.hash_at(Sequence(2)).unwrap().is_none());
        assert_eq!(reader.read_from(Sequence(3)).unwrap().count(), 2);
        assert_eq!(reader.read_from(Sequence(6)).unwrap().count(), 0);
    }

    #[test]
    fn a_tampered_record_is_reported_with_its_sequence() {
        let mut log = MemoryLog::new();
        log.append(&batch(1, 3)).unwrap();
        log.append(&batch(4, 2)).unwrap();
        log.append(&batch(6, 2)).unwrap();
        log.tamper(Sequence(4), |bytes| bytes[RECORD_BYTES_FLIP] ^= 1);
        let results: Vec<_> = log.reader().read_from(Sequence(1)).unwrap().collect();
        assert_eq!(results.len(), 2, "reading stops at the first bad record");
        assert!(results[0].is_ok());
        match &results[1] {
            Err(LogError::Corrupt { seq, .. }) => assert_eq!(*seq, Sequence(4)),
            other => panic!("unexpected {other:?}"),
        }
    }

    const RECORD_BYTES_FLIP: usize = 75;

    #[test]
    fn the_fault_switch_fails_one_sync() {
        let mut log = MemoryLog::new();
        log.fault_switch().fail_next_sync();
        assert_eq!(log.sync(), Err(LogError::Injected));
        assert_eq!(log.sync(), Ok(()));
    }
}
