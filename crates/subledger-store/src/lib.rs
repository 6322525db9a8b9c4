//! subledger-store: the durable event log and snapshot store on sled 0.34.7.
//!
//! Layout on disk (one sled database in the data directory):
//! - tree `log`: one value per log record (up to `events_per_record` events of one commit
//!   batch, encoded by `subledger_log::record`), keyed by the big-endian sequence number of the
//!   record's first event;
//! - directory `ledger-snapshots/` beside sled's files: one file per snapshot,
//!   `snapshot-<seq, 20 digits>.bin`, written to a temporary name, synced, renamed and the
//!   directory synced, so a crash leaves either the whole file or none. Kept out of sled
//!   because sled reads every value it holds back into memory when it opens (and again when a
//!   tree of them is listed): a snapshot of a 3M-transfer ledger (500 MB) added 0.8 s to
//!   every open, with or without a snapshot, and 0.7 s to listing the snapshots;
//! - tree `snapshots`: where versions before that kept them (still read and removed);
//! - tree `meta`: the store format version;
//! - in tree `log` under the empty key: the head marker (last sequence number and hash),
//!   written atomically with each batch's records.
//!
//! A commit batch is written with one atomic `sled::Batch` and made durable with
//! `Db::flush`; readers see records only up to the last flushed head. sled has public reports
//! of corruption after abrupt stops, so nothing here trusts it blindly: every record carries a
//! BLAKE3 checksum and the previous record's hash, records name the last sequence number of
//! their commit batch so a torn batch is recognised and dropped at open (it was never
//! acknowledged), and the crash tests kill a writing process hundreds of times.
//! This is the only crate in the workspace that names sled.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use subledger_core::{Batch, Sequence};
use subledger_log::record::{decode_record, encode_batch, RECORD_EVENTS_MAX};
use subledger_log::{
    verify_records, ChainHash, EventLog, LogError, LogReader, Record, RecordIter, SnapshotBytes,
    SnapshotStore,
};

/// The on-disk layout version this code writes and reads.
pub const STORE_FORMAT_VERSION: u16 = 1;
/// Default for [`StoreOptions::events_per_record`] (see `docs/adr/0003-sled-log-layout.md`).
pub const EVENTS_PER_RECORD_DEFAULT: usize = 1_024;
/// Default for [`StoreOptions::cache_bytes`].
pub const CACHE_BYTES_DEFAULT: u64 = 256 << 20;

const META_FORMAT_KEY: &[u8] = b"format";
/// Where snapshot files live, inside the data directory (not `snap.*`: sled's own names).
const SNAPSHOT_DIR: &str = "ledger-snapshots";
const SNAPSHOT_FILE_PREFIX: &str = "snapshot-";
const SNAPSHOT_FILE_SUFFIX: &str = ".bin";
const SNAPSHOT_TEMPORARY_PREFIX: &str = "unfinished-";
/// Key of the head marker inside the `log` tree: the empty key sorts before every record key.
/// It holds the last sequence number and hash, written in the same atomic sled batch as the
/// records, so records missing from the end of the log are detected, not mistaken for a
/// shorter log.
const HEAD_MARKER_KEY: &[u8] = b"";
/// The first possible record key.
const FIRST_RECORD_KEY: [u8; 8] = 1_u64.to_be_bytes();

/// How to open a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most events per stored record; a larger commit batch spans several records.
    pub events_per_record: usize,
    /// sled's page cache size.
    pub cache_bytes: u64,
    /// Create the directory and an empty store when missing (else: an error).
    pub create: bool,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            events_per_record: EVENTS_PER_RECORD_DEFAULT,
            cache_bytes: CACHE_BYTES_DEFAULT,
            create: true,
        }
    }
}

/// Why a store cannot be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("no ledger at {0} (the directory does not exist)")]
    Missing(PathBuf),
    #[error("{0} is not a subledger data directory")]
    NotALedger(PathBuf),
    #[error("{0} is in use by another process (is a server running on it?)")]
    Locked(PathBuf),
    #[error(
        "the store format version {found} is newer than this program ({STORE_FORMAT_VERSION})"
    )]
    NewerFormat { found: u16 },
    #[error("storage error: {0}")]
    Storage(String),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// What opening the store found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The durable head after opening.
    pub head: Sequence,
    /// Records of a commit batch torn by a crash, removed (never acknowledged).
    pub torn_records_discarded: usize,
    /// Events in those records.
    pub torn_events_discarded: u64,
}

struct Inner {
    db: sled::Db,
    log: sled::Tree,
    /// Snapshots written by earlier versions (see the module comment).
    legacy_snapshots: sled::Tree,
    snapshot_dir: PathBuf,
    /// Readers never see past this: what the last successful flush made durable.
    durable_head: AtomicU64,
}

/// The sled-backed log: the writer's handle. Clone readers with [`EventLog::reader`].
pub struct SledLog {
    inner: Arc<Inner>,
    head: Sequence,
    head_hash: ChainHash,
    events_per_record: usize,
}

impl std::fmt::Debug for SledLog {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "SledLog(head {})", self.head)
    }
}

fn storage(error: sled::Error) -> LogError {
    LogError::Storage(error.to_string())
}

fn key(seq: Sequence) -> [u8; 8] {
    seq.0.to_be_bytes()
}

fn seq_of(bytes: &[u8]) -> Result<Sequence, LogError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| LogError::Corrupt {
        seq: Sequence::ZERO,
        detail: format!("a log key has {} bytes instead of 8", bytes.len()),
    })?;
    Ok(Sequence(u64::from_be_bytes(array)))
}

fn decode_at(seq: Sequence, bytes: &[u8]) -> Result<Record, LogError> {
    decode_record(bytes).map_err(|error| LogError::Corrupt {
        seq,
        detail: error.to_string(),
    })
}

impl SledLog {
    /// Opens (or creates) the store in `dir`, drops a torn tail batch if a crash left one, and
    /// positions the writer after the last complete batch.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<(SledLog, OpenReport), StoreError> {
        if !dir.exists() && !options.create {
            return Err(StoreError::Missing(dir.to_path_buf()));
        }
        let looks_like_sled = dir.join("conf").exists() || dir.join("db").exists();
        let empty = std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
        if dir.exists() && !empty && !looks_like_sled {
            return Err(StoreError::NotALedger(dir.to_path_buf()));
        }
        let db = open_sled(dir, options)?;
        let open_tree = |name: &str| {
            db.open_tree(name)
                .map_err(|error| StoreError::Storage(error.to_string()))
        };
        let meta = open_tree("meta")?;
        let log = open_tree("log")?;
        let snapshots = open_tree("snapshots")?;
        match meta.get(META_FORMAT_KEY).map_err(storage)? {
            Some(version) => {
                let bytes: [u8; 2] = version
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::NotALedger(dir.to_path_buf()))?;
                let found = u16::from_le_bytes(bytes);
                if found > STORE_FORMAT_VERSION {
                    return Err(StoreError::NewerFormat { found });
                }
            }
            None if log.is_empty() => {
                meta.insert(META_FORMAT_KEY, &STORE_FORMAT_VERSION.to_le_bytes())
                    .map_err(storage)?;
                db.flush().map_err(storage)?;
            }
            None => return Err(StoreError::NotALedger(dir.to_path_buf())),
        }
        let snapshot_dir = dir.join(SNAPSHOT_DIR);
        remove_unfinished_snapshots(&snapshot_dir);
        let inner = Arc::new(Inner {
            db,
            log,
            legacy_snapshots: snapshots,
            snapshot_dir,
            durable_head: AtomicU64::new(0),
        });
        let mut report = OpenReport::default();
        let (head, head_hash) = recover_head(&inner, &mut report)?;
        inner.durable_head.store(head.0, Ordering::SeqCst);
        report.head = head;
        let log = SledLog {
            inner,
            head,
            head_hash,
            events_per_record: options.events_per_record.clamp(1, RECORD_EVENTS_MAX),
        };
        Ok((log, report))
    }

    /// Bytes sled occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, LogError> {
        self.inner.db.size_on_disk().map_err(storage)
    }
}

fn head_marker(head: Sequence, hash: ChainHash) -> [u8; 40] {
    let mut marker = [0u8; 40];
    marker[..8].copy_from_slice(&head.0.to_le_bytes());
    marker[8..].copy_from_slice(&hash.0);
    marker
}

/// Reads the head marker; `None` for a store that never committed anything.
fn read_head_marker(inner: &Inner) -> Result<Option<(Sequence, ChainHash)>, StoreError> {
    let Some(bytes) = inner.log.get(HEAD_MARKER_KEY).map_err(storage)? else {
        return Ok(None);
    };
    let corrupt = || LogError::Corrupt {
        seq: Sequence::ZERO,
        detail: "the head marker is damaged".into(),
    };
    let marker: [u8; 40] = bytes.as_ref().try_into().map_err(|_| corrupt())?;
    let mut head = [0u8; 8];
    head.copy_from_slice(&marker[..8]);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&marker[8..]);
    Ok(Some((Sequence(u64::from_le_bytes(head)), ChainHash(hash))))
}

/// Finds the durable head: drops a torn tail batch, then checks the last record against the
/// head marker so that records missing from the end are reported, never silently lost.
fn recover_head(
    inner: &Inner,
    report: &mut OpenReport,
) -> Result<(Sequence, ChainHash), StoreError> {
    let (head, hash, torn_end) = discard_torn_tail(inner, report)?;
    let marker = read_head_marker(inner)?.unwrap_or((Sequence::ZERO, ChainHash::GENESIS));
    if torn_end.is_some_and(|end| marker.0 == end) || (torn_end.is_some() && marker.0 == head) {
        // The torn batch was never acknowledged (acknowledgement follows a complete flush);
        // the marker may or may not have been written with it. Point it at the real head.
        inner
            .log
            .insert(HEAD_MARKER_KEY, &head_marker(head, hash)[..])
            .map_err(storage)?;
        inner.db.flush().map_err(storage)?;
        return Ok((head, hash));
    }
    if marker.0 > head {
        return Err(StoreError::Log(LogError::Corrupt {
            seq: head.next(),
            detail: format!(
                "records are missing: the log should end at {}, it ends at {head}",
                marker.0
            ),
        }));
    }
    if (head, hash) != marker {
        return Err(StoreError::Log(LogError::Corrupt {
            seq: head,
            detail: format!(
                "the head marker says {} but the last record ends at {head}",
                marker.0
            ),
        }));
    }
    Ok((head, hash))
}

/// The last record, skipping the head marker.
fn last_record(inner: &Inner) -> Result<Option<(sled::IVec, sled::IVec)>, LogError> {
    inner
        .log
        .range(FIRST_RECORD_KEY..)
        .next_back()
        .transpose()
        .map_err(storage)
}

/// How long opening waits for a lock held by a database closing in this process (sled's I/O
/// threads release it shortly after the last handle is dropped).
const LOCK_WAIT_MILLIS: u64 = 2_000;
const LOCK_RETRY_MILLIS: u64 = 20;

fn open_sled(dir: &Path, options: StoreOptions) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(None)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io))
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
            {
                if started.elapsed() >= std::time::Duration::from_millis(LOCK_WAIT_MILLIS) {
                    return Err(StoreError::Locked(dir.to_path_buf()));
                }
                std::thread::sleep(std::time::Duration::from_millis(LOCK_RETRY_MILLIS));
            }
            Err(other) => return Err(StoreError::Storage(other.to_string())),
        }
    }
}

/// Removes the records of a commit batch whose last record never made it to disk, and returns
/// the head and head hash after the last complete batch.
fn discard_torn_tail(
    inner: &Inner,
    report: &mut OpenReport,
) -> Result<(Sequence, ChainHash, Option<Sequence>), StoreError> {
    let mut torn_end = None;
    loop {
        let Some((last_key, bytes)) = last_record(inner)? else {
            return Ok((Sequence::ZERO, ChainHash::GENESIS, torn_end));
        };
        let first = seq_of(&last_key)?;
        let record = decode_at(first, &bytes)?;
        if record.ends_batch() {
            return Ok((record.last(), record.hash, torn_end));
        }
        torn_end = Some(record.batch_last);
        // Not acknowledged: the writer answers only after the whole batch is flushed.
        inner.log.remove(last_key).map_err(storage)?;
        report.torn_records_discarded += 1;
        report.torn_events_discarded += u64::try_from(record.events.len()).unwrap_or(u64::MAX);
        inner.db.flush().map_err(storage)?;
    }
}

impl EventLog for SledLog {
    fn append(&mut self, batch: &Batch) -> Result<(), LogError> {
        if batch.first != self.head.next() {
            return Err(LogError::Gap {
                head: self.head,
                first: batch.first,
            });
        }
        if batch.events.is_empty() {
            return Ok(());
        }
        let (records, hash) = encode_batch(batch, self.head_hash, self.events_per_record)
            .map_err(|error| LogError::Encode(error.to_string()))?;
        let mut writes = sled::Batch::default();
        for (first, bytes) in records {
            writes.insert(&key(first), bytes);
        }
        writes.insert(HEAD_MARKER_KEY, &head_marker(batch.last(), hash)[..]);
        // One atomic sled batch: all records of the commit batch and the head marker, or none.
        self.inner.log.apply_batch(writes).map_err(storage)?;
        self.head = batch.last();
        self.head_hash = hash;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), LogError> {
        self.inner.db.flush().map_err(storage)?;
        self.inner.durable_head.store(self.head.0, Ordering::SeqCst);
        Ok(())
    }

    fn reader(&self) -> Arc<dyn LogReader> {
        Arc::new(SledReader {
            inner: Arc::clone(&self.inner),
        })
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        Arc::new(SledReader {
            inner: Arc::clone(&self.inner),
        })
    }
}

/// Shared read access to the store (and its snapshots).
struct SledReader {
    inner: Arc<Inner>,
}

impl SledReader {
    fn durable_head(&self) -> Sequence {
        Sequence(self.inner.durable_head.load(Ordering::SeqCst))
    }

    /// The key of the record containing `seq`: the last key at or before it.
    fn record_key_at(&self, seq: Sequence) -> Result<Option<Sequence>, LogError> {
        match self
            .inner
            .log
            .range(FIRST_RECORD_KEY..=key(seq))
            .next_back()
        {
            Some(item) => {
                let (found, _) = item.map_err(storage)?;
                Ok(Some(seq_of(&found)?))
            }
            None => Ok(None),
        }
    }
}

impl LogReader for SledReader {
    fn records_from(&self, from: Sequence) -> Result<RecordIter<'_>, LogError> {
        let head = self.durable_head();
        let from = from.max(Sequence(1));
        if from > head {
            return Ok(Box::new(std::iter::empty()));
        }
        let start = self.record_key_at(from)?.unwrap_or(Sequence(1));
        // The record before the start anchors the hash chain.
        let previous = match self
            .inner
            .log
            .range(FIRST_RECORD_KEY..key(start))
            .next_back()
        {
            Some(item) => {
                let (previous_key, bytes) = item.map_err(storage)?;
                let record = decode_at(seq_of(&previous_key)?, &bytes)?;
                (record.last(), record.hash)
            }
            None if start == Sequence(1) => (Sequence::ZERO, ChainHash::GENESIS),
            None => {
                return Err(LogError::Corrupt {
                    seq: Sequence(1),
                    detail: format!("the log starts at {start}: records are missing"),
                })
            }
        };
        let stored = self
            .inner
            .log
            .range(key(start)..)
            .map(|item| {
                let (found, bytes) = item.map_err(storage)?;
                Ok((seq_of(&found)?, bytes.to_vec()))
            })
            .take_while(move |item: &Result<(Sequence, Vec<u8>), LogError>| {
                item.as_ref().map_or(true, |(first, _)| *first <= head)
            });
        Ok(verify_records(stored, previous))
    }

    fn head(&self) -> Sequence {
        self.durable_head()
    }

    fn hash_at(&self, seq: Sequence) -> Result<Option<subledger_log::ChainHash>, LogError> {
        if seq > self.durable_head() {
            return Ok(None);
        }
        let Some(first) = self.record_key_at(seq)? else {
            return Ok(None);
        };
        let Some(bytes) = self.inner.log.get(key(first)).map_err(storage)? else {
            return Ok(None);
        };
        let record = decode_at(first, &bytes)?;
        Ok((record.last() == seq).then_some(record.hash))
    }
}

impl SnapshotStore for SledReader {
    fn save(&self, seq: Sequence, bytes: &[u8]) -> Result<(), LogError> {
        let dir = &self.inner.snapshot_dir;
        let file_error = |what: &str, error: std::io::Error| {
            LogError::Storage(format!(
                "{what} snapshot {seq} in {}: {error}",
                dir.display()
            ))
        };
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .map_err(|error| file_error("creating the directory of", error))?;
            // The new directory's own entry must survive a power cut too.
            if let Some(parent) = dir.parent() {
                sync_dir(parent).map_err(|error| file_error("syncing the parent of", error))?;
            }
        }
        let temporary = Unfinished(Some(
            dir.join(format!("{SNAPSHOT_TEMPORARY_PREFIX}{}", seq.0)),
        ));
        let mut file = std::fs::File::create(temporary.path())
            .map_err(|error| file_error("creating", error))?;
        std::io::Write::write_all(&mut file, bytes)
            .map_err(|error| file_error("writing", error))?;
        file.sync_all()
            .map_err(|error| file_error("syncing", error))?;
        drop(file);
        std::fs::rename(temporary.path(), snapshot_path(dir, seq))
            .map_err(|error| file_error("renaming", error))?;
        temporary.finished();
        sync_dir(dir).map_err(|error| file_error("syncing the directory of", error))
    }

    fn list(&self) -> Result<Vec<Sequence>, LogError> {
        let mut listed = Vec::new();
        let files = std::fs::read_dir(&self.inner.snapshot_dir).and_then(|entries| {
            for entry in entries {
                if let Some(seq) = entry?.file_name().to_str().and_then(snapshot_seq) {
                    listed.push(seq);
                }
            }
            Ok(())
        });
        let unreadable = match files {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Some(error),
            _ => None,
        };
        for found in self.inner.legacy_snapshots.iter().keys() {
            listed.push(seq_of(&found.map_err(storage)?)?);
        }
        // An unreadable directory fails the listing (recovery then warns and replays) unless
        // older snapshots kept in sled remain to start from.
        if let Some(error) = unreadable.filter(|_| listed.is_empty()) {
            return Err(LogError::Storage(format!(
                "reading {}: {error}",
                self.inner.snapshot_dir.display()
            )));
        }
        listed.sort_unstable();
        listed.dedup();
        Ok(listed)
    }

    fn load(&self, seq: Sequence) -> Result<Option<SnapshotBytes>, LogError> {
        // Opened, not read: the decoder reads the file piecewise (see `SnapshotBytes`).
        let opened = std::fs::File::open(snapshot_path(&self.inner.snapshot_dir, seq))
            .and_then(SnapshotBytes::file);
        match opened {
            Ok(bytes) => return Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(LogError::Storage(format!(
                    "reading snapshot {seq}: {error}"
                )))
            }
        }
        // sled's own buffer, lent as is.
        Ok(self
            .inner
            .legacy_snapshots
            .get(key(seq))
            .map_err(storage)?
            .map(SnapshotBytes::new))
    }

    fn remove(&self, seq: Sequence) -> Result<(), LogError> {
        let dir = &self.inner.snapshot_dir;
        match std::fs::remove_file(snapshot_path(dir, seq)) {
            Ok(()) => sync_dir(dir).map_err(|error| LogError::Storage(error.to_string()))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(LogError::Storage(format!(
                    "removing snapshot {seq}: {error}"
                )))
            }
        }
        if self
            .inner
            .legacy_snapshots
            .remove(key(seq))
            .map_err(storage)?
            .is_some()
        {
            self.inner.db.flush().map_err(storage)?;
        }
        Ok(())
    }
}

fn snapshot_path(dir: &Path, seq: Sequence) -> PathBuf {
    dir.join(format!(
        "{SNAPSHOT_FILE_PREFIX}{:020}{SNAPSHOT_FILE_SUFFIX}",
        seq.0
    ))
}

/// The sequence number a snapshot file's name states (`None`: not a snapshot file).
fn snapshot_seq(name: &str) -> Option<Sequence> {
    let digits = name
        .strip_prefix(SNAPSHOT_FILE_PREFIX)?
        .strip_suffix(SNAPSHOT_FILE_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Sequence)
}

/// A snapshot file being written: removed if the write fails part-way (it would otherwise
/// hold its disk space until the next open), forgotten once renamed into place.
struct Unfinished(Option<PathBuf>);

impl Unfinished {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    /// Renamed into place: nothing to clean up.
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // Best effort: a leftover is also removed at the next open.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A crash while writing leaves a temporary file that was never renamed: never a snapshot.
fn remove_unfinished_snapshots(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let unfinished = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(SNAPSHOT_TEMPORARY_PREFIX));
        if unfinished {
            // Best effort: a leftover is ignored by `list` anyway.
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
