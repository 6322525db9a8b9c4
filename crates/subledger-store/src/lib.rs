//! subledger-store: the durable event log and snapshot store on sled 0.34.7.
//!
//! Layout on disk (one sled database in the data directory):
//! - tree `log`: one value per log record (up to `events_per_record` events of one commit
//!   batch and at most 64 KiB, encoded by `subledger_log::record`), keyed by the big-endian
//!   sequence number of the record's first event;
//! - directory `ledger-snapshots/` beside sled's files: one file per snapshot,
//!   `snapshot-<seq, 20 digits>.bin`, written to a temporary name, synced, renamed and the
//!   directory synced, so a crash leaves either the whole file or none. Kept out of sled
//!   because sled reads every value it holds back into memory when it opens (and again when a
//!   tree of them is listed): a snapshot of a 3M-transfer ledger (500 MB) added 0.8 s to
//!   every open, with or without a snapshot, and 0.7 s to listing the snapshots;
//! - tree `snapshots`: where versions before that kept them (still read and removed);
//! - tree `meta`: the store format version;
//! - in tree `log` under the empty key: the head marker (last sequence number and hash),
//!   written atomically with each batch's records; under the nine-byte keys `00…00 00` to
//!   `00…00 0f`, between it and the first record, 16 empty values that keep the marker's
//!   leaf free of records (see `marker_neighbour_key`).
//!
//! A commit batch is written with one atomic `sled::Batch` and made durable by
//! `Inner::make_durable`; readers see records only up to the last durable head. sled's own
//! `Db::flush` is not enough for a power cut: it writes with `sync_file_range`, which neither
//! records the file's new length nor empties the disk's write cache, and it never syncs the
//! files it keeps pages bigger than a quarter segment in (`blobs/`). So the store syncs sled's
//! data file itself after every flush, creates stores with segments large enough that its
//! pages stay in that file (see [`SEGMENT_BYTES_NEW`]), and syncs any blob file that appears
//! anyway (an older store's, see `BlobFiles`). sled has public reports
//! of corruption after abrupt stops, so nothing here trusts it blindly: every record carries a
//! BLAKE3 checksum and the previous record's hash, records name the last sequence number of
//! their commit batch so a torn batch is recognised and dropped at open (it was never
//! acknowledged), and the crash tests kill a writing process hundreds of times.
//! This is the only crate in the workspace that names sled.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use subledger_core::{Batch, Sequence};
use subledger_log::record::{decode_record, encode_batch, RecordLimits, RECORD_EVENTS_MAX};
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
/// sled's segment size for a store this version creates (an existing store keeps the size it
/// was created with: sled refuses to open it with another). sled 0.34.7 writes a page bigger
/// than a quarter segment to a file of its own under `blobs/`, and never syncs those files.
/// At sled's default of 512 KiB a leaf page of the `log` tree, up to ~20 records, is usually
/// bigger than that; with 8 MiB segments and records of at most [`RECORD_BYTES_MAX_STORED`],
/// every page stays in sled's data file, which `Inner::make_durable` syncs.
pub const SEGMENT_BYTES_NEW: usize = 8 << 20;
/// Most bytes of one stored record (a record with a single larger event is stored whole). A
/// leaf page holds at most ~20 records (sled splits one of more than 16 and merges one of
/// fewer than 4 into its neighbour): 20 × 64 KiB stays under a quarter of [`SEGMENT_BYTES_NEW`].
/// A record of the default 1,024 transfer events is ~40 KiB, so this rarely cuts one.
pub const RECORD_BYTES_MAX_STORED: usize = 64 << 10;
/// sled's default segment size, which every store created before [`SEGMENT_BYTES_NEW`] has.
const SEGMENT_BYTES_LEGACY: usize = 512 << 10;
/// sled reads a settings file of at most this many bytes as no settings file.
const SLED_CONF_ABSENT_BYTES_MAX: usize = 8;
/// sled's own name for its settings file in the data directory.
const SLED_CONF_FILE: &str = "conf";
/// sled's own name for its data file.
const SLED_DATA_FILE: &str = "db";
/// sled's own name for its directory of pages too big for a segment.
const SLED_BLOB_DIR: &str = "blobs";
/// How old the blob directory's modification time must be before a later file added to it is
/// sure to change it: file systems stamp times from a coarse clock (a few milliseconds on
/// ext4, a second or two on some).
const BLOB_DIR_SETTLED_MILLIS: u64 = 3_000;

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
/// How many empty values keep the head marker's leaf free of records (see
/// [`marker_neighbour_key`]).
const MARKER_NEIGHBOURS: u8 = 16;

/// The key of one of the empty values placed between the head marker and the first record.
/// sled rewrites a whole leaf every ~10 changes to it, and the marker changes with every
/// batch; sled splits a leaf of more than 16 entries at its middle, so with these in place the
/// marker's leaf holds only them, never ~8 records rewritten with it. That rewriting had
/// nearly doubled what a 256-client load wrote (`docs/benchmarks.md`, thirteenth session).
/// Nine bytes: after the empty key, before every eight-byte record key.
fn marker_neighbour_key(index: u8) -> [u8; 9] {
    let mut key = [0; 9];
    key[8] = index;
    key
}

/// Puts the head marker's neighbours in place, once: in a store created before them, the
/// split they cause moves the records out of the marker's leaf.
fn place_marker_neighbours(inner: &Inner) -> Result<(), LogError> {
    if inner
        .log
        .contains_key(marker_neighbour_key(0))
        .map_err(storage)?
    {
        return Ok(());
    }
    let mut writes = sled::Batch::default();
    for index in 0..MARKER_NEIGHBOURS {
        writes.insert(&marker_neighbour_key(index)[..], &[][..]);
    }
    inner.log.apply_batch(writes).map_err(storage)?;
    inner.make_durable()
}

/// How to open a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most events per stored record; a larger commit batch spans several records.
    pub events_per_record: usize,
    /// sled's page cache size.
    pub cache_bytes: u64,
    /// Create the directory and an empty store when missing (else: an error).
    pub create: bool,
    /// What a durable commit survives.
    pub durability: Durability,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            events_per_record: EVENTS_PER_RECORD_DEFAULT,
            cache_bytes: CACHE_BYTES_DEFAULT,
            create: true,
            durability: Durability::PowerCut,
        }
    }
}

/// What a commit survives once [`EventLog::sync`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// A power cut or a crash of the machine: sled's files are synced after every flush.
    #[default]
    PowerCut,
    /// Only the end of the process, kill -9 included: sled's flush alone, which leaves the
    /// writes in the operating system's page cache. For a throw-away copy, such as the audit
    /// tools' working copy of a ledger, where syncing would only write the copy out.
    Process,
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
    /// Readers never see past this: what the last successful `make_durable` covered.
    durable_head: AtomicU64,
    /// sled's data file, opened again to sync it (see the module comment).
    data_file: std::fs::File,
    /// sled's blob files already synced.
    blobs: Mutex<BlobFiles>,
    durability: Durability,
    /// How many times the data file was synced: the tests' proof that `sync` reaches it.
    #[cfg(test)]
    data_file_syncs: AtomicU64,
}

impl Inner {
    /// Makes everything written so far survive a power cut: sled's flush writes its buffers
    /// out; syncing its data file then records the file's new length and empties the disk's
    /// write cache; blob files are synced too.
    ///
    /// sled writes a blob file while it holds the reservation for the page that points at it,
    /// and its flush waits for every reservation made before the flush began. So a blob file
    /// seen before the flush is complete once the flush returns: synced then, it is done. One
    /// that appears during the flush may still be being written (another thread's page): it is
    /// synced now, in case what the flush wrote points at it, and again next time.
    fn make_durable(&self) -> Result<(), LogError> {
        if self.durability == Durability::Process {
            return self.db.flush().map(drop).map_err(storage);
        }
        let blob_error = |error: std::io::Error| {
            LogError::Storage(format!("syncing sled's blob files: {error}"))
        };
        let mut blobs = self.blobs.lock().unwrap_or_else(PoisonError::into_inner);
        let complete = blobs.unsynced().map_err(blob_error)?;
        self.db.flush().map_err(storage)?;
        let mut synced = blobs.sync(&complete, true).map_err(blob_error)?;
        let recent = blobs.unsynced().map_err(blob_error)?;
        synced += blobs.sync(&recent, false).map_err(blob_error)?;
        if synced > 0 {
            sync_dir(&blobs.dir).map_err(blob_error)?;
        }
        drop(blobs);
        self.data_file
            .sync_data()
            .map_err(|error| LogError::Storage(format!("syncing sled's data file: {error}")))?;
        #[cfg(test)]
        self.data_file_syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// sled's `blobs/` directory, and what of it is synced. sled never syncs a blob file; a store
/// created by this version has none (see [`SEGMENT_BYTES_NEW`]), an older one gains some as
/// sled rewrites its big pages.
struct BlobFiles {
    dir: PathBuf,
    /// The directory's modification time when it was last listed, once that time is settled
    /// (see [`BLOB_DIR_SETTLED_MILLIS`]): while it is unchanged, no file was added since.
    listed: Option<SystemTime>,
    /// Files synced once they were complete: never synced again.
    synced: HashSet<OsString>,
    /// Files synced when they may not have been complete: synced again next time.
    pending: HashSet<OsString>,
}

impl BlobFiles {
    fn new(dir: PathBuf) -> BlobFiles {
        BlobFiles {
            dir,
            listed: None,
            synced: HashSet::new(),
            pending: HashSet::new(),
        }
    }

    /// The files not synced for good yet: the pending ones and, if the directory may have
    /// changed since it was last listed, the new ones it lists.
    fn unsynced(&mut self) -> std::io::Result<Vec<OsString>> {
        let mut found: Vec<OsString> = self.pending.iter().cloned().collect();
        let modified = match std::fs::metadata(&self.dir) {
            Ok(metadata) => metadata.modified()?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(error) => return Err(error),
        };
        if self.listed == Some(modified) {
            return Ok(found);
        }
        let listed_at = SystemTime::now();
        let mut present = HashSet::with_capacity(self.synced.len());
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if !self.synced.contains(&name) && !self.pending.contains(&name) {
                found.push(name.clone());
            }
            present.insert(name);
        }
        // Forget the files sled removed.
        self.synced.retain(|name| present.contains(name));
        let settled = listed_at
            .duration_since(modified)
            .is_ok_and(|age| age >= Duration::from_millis(BLOB_DIR_SETTLED_MILLIS));
        self.listed = settled.then_some(modified);
        Ok(found)
    }

    /// Syncs `names`; `complete`: they were complete before the sync began, so they are done
    /// (else pending). Returns how many files it synced.
    fn sync(&mut self, names: &[OsString], complete: bool) -> std::io::Result<usize> {
        let mut synced = 0;
        for name in names {
            match std::fs::File::open(self.dir.join(name)) {
                Ok(file) => file.sync_all()?,
                // sled removed it meanwhile: nothing points at it any more.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    self.pending.remove(name);
                    continue;
                }
                Err(error) => return Err(error),
            }
            synced += 1;
            if complete {
                self.pending.remove(name);
                self.synced.insert(name.clone());
            } else {
                self.pending.insert(name.clone());
            }
        }
        Ok(synced)
    }
}

/// The sled-backed log: the writer's handle. Clone readers with [`EventLog::reader`].
pub struct SledLog {
    inner: Arc<Inner>,
    head: Sequence,
    head_hash: ChainHash,
    record_limits: RecordLimits,
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
        let looks_like_sled =
            dir.join(SLED_CONF_FILE).exists() || dir.join(SLED_DATA_FILE).exists();
        let empty = std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
        if dir.exists() && !empty && !looks_like_sled {
            return Err(StoreError::NotALedger(dir.to_path_buf()));
        }
        let segment_bytes = segment_bytes(dir)?;
        let creating = segment_bytes.is_none();
        let existed = nearest_existing(dir);
        let db = open_sled(dir, options, segment_bytes.unwrap_or(SEGMENT_BYTES_NEW))?;
        let opening = |what: &str, error: std::io::Error| {
            StoreError::Storage(format!("{what} in {}: {error}", dir.display()))
        };
        if creating && options.durability == Durability::PowerCut {
            // Before anything is written: a data file whose settings file was lost would be
            // opened again with the wrong segment size.
            sync_created(dir, &existed).map_err(|error| opening("syncing the new store", error))?;
        }
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
        let data_file = std::fs::File::open(dir.join(SLED_DATA_FILE))
            .map_err(|error| opening("opening sled's data file", error))?;
        let inner = Arc::new(Inner {
            db,
            log,
            legacy_snapshots: snapshots,
            snapshot_dir,
            durable_head: AtomicU64::new(0),
            data_file,
            blobs: Mutex::new(BlobFiles::new(dir.join(SLED_BLOB_DIR))),
            durability: options.durability,
            #[cfg(test)]
            data_file_syncs: AtomicU64::new(0),
        });
        // Whatever sled wrote while opening (and any blob file an earlier run left unsynced).
        inner.make_durable()?;
        let mut report = OpenReport::default();
        let (head, head_hash) = recover_head(&inner, &mut report)?;
        place_marker_neighbours(&inner)?;
        inner.durable_head.store(head.0, Ordering::SeqCst);
        report.head = head;
        let log = SledLog {
            inner,
            head,
            head_hash,
            record_limits: RecordLimits::new(
                options.events_per_record.clamp(1, RECORD_EVENTS_MAX),
                RECORD_BYTES_MAX_STORED,
            ),
        };
        Ok((log, report))
    }

    /// Bytes sled occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, LogError> {
        self.inner.db.size_on_disk().map_err(storage)
    }

    /// Adds records another log already holds — one commit batch's, in order — after the
    /// head, keeping their bytes, and so their hashes: a log restored from an archive has the
    /// same head hash as the one archived, whatever record sizes that log used. Each record
    /// must continue the chain (the next sequence number, the head's hash) and be the one
    /// its hash names, and the last must end its batch; otherwise nothing is written. Not
    /// durable until [`EventLog::sync`] returns `Ok`, as with [`EventLog::append`].
    pub fn append_records(&mut self, records: &[Record]) -> Result<(), LogError> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        let mut writes = sled::Batch::default();
        let (mut head, mut head_hash) = (self.head, self.head_hash);
        // The end of the batch the previous record left open (none at the head: every call
        // ends with a batch).
        let mut open_batch: Option<Sequence> = None;
        for record in records {
            if record.first != head.next() {
                return Err(LogError::Gap {
                    head,
                    first: record.first,
                });
            }
            let corrupt = |detail: &str| LogError::Corrupt {
                seq: record.first,
                detail: detail.into(),
            };
            if record.events.is_empty() {
                return Err(corrupt("the record holds no events"));
            }
            // A batch's records all name its last event, which none of them passes.
            if record.batch_last < record.last()
                || open_batch.is_some_and(|batch_last| record.batch_last != batch_last)
            {
                return Err(corrupt("the record's batch end disagrees with its batch"));
            }
            open_batch = (!record.ends_batch()).then_some(record.batch_last);
            if record.prev_hash != head_hash {
                return Err(corrupt("the record does not continue the log's hash chain"));
            }
            writes.insert(&key(record.first), record.to_bytes()?);
            (head, head_hash) = (record.last(), record.hash);
        }
        if !last.ends_batch() {
            // The head marker names batch ends only: a crash must never leave half a batch.
            return Err(LogError::Corrupt {
                seq: last.first,
                detail: "the records do not end their commit batch".into(),
            });
        }
        writes.insert(HEAD_MARKER_KEY, &head_marker(head, head_hash)[..]);
        self.inner.log.apply_batch(writes).map_err(storage)?;
        self.head = head;
        self.head_hash = head_hash;
        Ok(())
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
        inner.make_durable()?;
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

/// The segment size of the sled database in `dir`, as its settings file states it; `None` when
/// there is no database yet.
fn segment_bytes(dir: &Path) -> Result<Option<usize>, StoreError> {
    let path = dir.join(SLED_CONF_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => {
            return Err(StoreError::Storage(format!(
                "reading {}: {error}",
                path.display()
            )))
        }
    };
    // sled takes a settings file of 8 bytes or fewer for none. A data file without one can
    // only be an older version's store (one created now has its settings synced before
    // anything is written), which sled created with its default segment size.
    if bytes.len() <= SLED_CONF_ABSENT_BYTES_MAX {
        let data = std::fs::metadata(dir.join(SLED_DATA_FILE));
        let written = data.is_ok_and(|metadata| metadata.len() > 0);
        return Ok(written.then_some(SEGMENT_BYTES_LEGACY));
    }
    // sled writes `segment_size: <n>` on a line of its own (then more lines and a checksum).
    String::from_utf8_lossy(&bytes)
        .lines()
        .find_map(|line| line.strip_prefix("segment_size: ")?.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| StoreError::Storage(format!("{} states no segment size", path.display())))
}

/// Makes a store just created survive a power cut: sled does not sync its settings file, nor
/// the directory entries of its files, nor the entries of the directories it created.
/// `existed`: the nearest ancestor of `dir` (or `dir` itself) that existed before.
fn sync_created(dir: &Path, existed: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir.join(SLED_CONF_FILE))?.sync_all()?;
    for directory in dir.ancestors() {
        let directory = if directory.as_os_str().is_empty() {
            Path::new(".")
        } else {
            directory
        };
        sync_dir(directory)?;
        if directory == existed {
            break;
        }
    }
    Ok(())
}

/// The nearest of `dir` and its ancestors that exists ("." for a relative path none of whose
/// components exist).
fn nearest_existing(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|directory| !directory.as_os_str().is_empty() && directory.exists())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

fn open_sled(
    dir: &Path,
    options: StoreOptions,
    segment_bytes: usize,
) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(None)
            .segment_size(segment_bytes)
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
        inner.make_durable()?;
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
        let (records, hash) = encode_batch(batch, self.head_hash, self.record_limits)
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
        self.inner.make_durable()?;
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
            self.inner.make_durable()?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use subledger_core::{AccountId, Amount, CommandId, Event, Timestamp};

    use super::*;

    /// `batches` commit batches of 4,096 top-ups with ~170-byte references (~800 KB each),
    /// appended and synced one by one.
    fn append_big_batches(log: &mut SledLog, batches: u64) {
        append_batches(log, batches, 4_096, 170);
    }

    fn append_batches(log: &mut SledLog, batches: u64, events: u32, reference_bytes: usize) {
        for _ in 0..batches {
            let first = log.head.next();
            let events = (0..events)
                .map(|n| Event::ToppedUp {
                    command: CommandId::from_bytes([3; 16]),
                    account: AccountId(n),
                    amount: Amount::from_units(i128::from(n)).unwrap(),
                    reference: format!("{n:0>reference_bytes$}"),
                })
                .collect();
            let batch = Batch {
                first,
                at: Timestamp(1_700_000_000_000),
                events,
            };
            log.append(&batch).unwrap();
            log.sync().unwrap();
        }
    }

    fn blob_names(dir: &Path) -> HashSet<OsString> {
        match std::fs::read_dir(dir.join(SLED_BLOB_DIR)) {
            Ok(entries) => entries.map(|entry| entry.unwrap().file_name()).collect(),
            Err(_) => HashSet::new(),
        }
    }

    fn all_events_read_back(dir: &Path, events: u64) {
        let (log, report) = SledLog::open(dir, StoreOptions::default()).unwrap();
        assert_eq!(report.head, Sequence(events));
        let read: usize = log
            .reader()
            .records_from(Sequence(1))
            .unwrap()
            .map(|record| record.unwrap().events.len())
            .sum();
        assert_eq!(u64::try_from(read).unwrap(), events);
    }

    const WHOLE_BATCH_PER_RECORD: StoreOptions = StoreOptions {
        events_per_record: RECORD_EVENTS_MAX,
        cache_bytes: CACHE_BYTES_DEFAULT,
        create: true,
        durability: Durability::PowerCut,
    };

    #[test]
    fn a_new_store_keeps_every_page_in_the_data_file_it_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SledLog::open(dir.path(), WHOLE_BATCH_PER_RECORD).unwrap();
        assert_eq!(segment_bytes(dir.path()).unwrap(), Some(SEGMENT_BYTES_NEW));
        let synced_at_open = log.inner.data_file_syncs.load(Ordering::Relaxed);
        append_big_batches(&mut log, 12);
        // Every `sync` reached the data file, not only sled's flush.
        let synced = log.inner.data_file_syncs.load(Ordering::Relaxed) - synced_at_open;
        assert_eq!(synced, 12);
        // ~10 MB in records of at most 64 KiB: no page grew past a quarter segment.
        assert_eq!(blob_names(dir.path()), HashSet::new());
        drop(log);
        all_events_read_back(dir.path(), 12 * 4_096);
    }

    #[test]
    fn an_older_store_keeps_its_segment_size_and_every_blob_file_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        // A store as earlier versions created it: sled's default segments of 512 KiB.
        drop(sled::open(dir.path()).unwrap());
        let (mut log, _) = SledLog::open(dir.path(), WHOLE_BATCH_PER_RECORD).unwrap();
        assert_eq!(
            segment_bytes(dir.path()).unwrap(),
            Some(SEGMENT_BYTES_LEGACY)
        );
        append_big_batches(&mut log, 12);
        let present = blob_names(dir.path());
        // The same load as above: here sled wrote pages to blob files, and every one of them
        // has been synced (a file that appeared during the last flush is synced again next
        // time, in case it was incomplete).
        assert!(!present.is_empty());
        let blobs = log.inner.blobs.lock().unwrap();
        let seen: HashSet<OsString> = blobs.synced.union(&blobs.pending).cloned().collect();
        drop(blobs);
        assert!(present.is_subset(&seen), "{present:?} not all in {seen:?}");
        drop(log);
        all_events_read_back(dir.path(), 12 * 4_096);
    }

    fn log_keys(log: &SledLog) -> Vec<Vec<u8>> {
        let keys = log.inner.log.iter().keys();
        keys.map(|key| key.unwrap().to_vec()).collect()
    }

    #[test]
    fn the_marker_s_neighbours_are_placed_once_and_never_read_as_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SledLog::open(dir.path(), StoreOptions::default()).unwrap();
        append_batches(&mut log, 2, 3, 10);
        let neighbours: Vec<Vec<u8>> = (0..MARKER_NEIGHBOURS)
            .map(|index| marker_neighbour_key(index).to_vec())
            .collect();
        let mut expected = vec![HEAD_MARKER_KEY.to_vec()];
        expected.extend(neighbours.iter().cloned());
        expected.extend([key(Sequence(1)).to_vec(), key(Sequence(4)).to_vec()]);
        assert_eq!(log_keys(&log), expected);
        drop(log);
        // A store written before the neighbours existed gets them when it is opened.
        let db = open_sled(dir.path(), StoreOptions::default(), SEGMENT_BYTES_NEW).unwrap();
        let raw = db.open_tree("log").unwrap();
        for neighbour in &neighbours {
            raw.remove(neighbour).unwrap();
        }
        db.flush().unwrap();
        drop((raw, db));
        let (mut log, report) = SledLog::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(report.head, Sequence(6));
        assert_eq!(log_keys(&log), expected);
        append_batches(&mut log, 1, 3, 10);
        expected.push(key(Sequence(7)).to_vec());
        assert_eq!(log_keys(&log), expected);
        drop(log);
        all_events_read_back(dir.path(), 9);
    }

    #[test]
    fn an_older_store_that_lost_its_settings_file_opens_at_its_segment_size() {
        let dir = tempfile::tempdir().unwrap();
        drop(sled::open(dir.path()).unwrap());
        let (mut log, _) = SledLog::open(dir.path(), StoreOptions::default()).unwrap();
        append_batches(&mut log, 3, 100, 10);
        drop(log);
        std::fs::remove_file(dir.path().join(SLED_CONF_FILE)).unwrap();
        assert_eq!(
            segment_bytes(dir.path()).unwrap(),
            Some(SEGMENT_BYTES_LEGACY)
        );
        all_events_read_back(dir.path(), 300);
        assert_eq!(
            segment_bytes(dir.path()).unwrap(),
            Some(SEGMENT_BYTES_LEGACY)
        );
        // An empty directory is a new store.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(segment_bytes(empty.path()).unwrap(), None);
    }

    #[test]
    fn a_store_in_directories_it_creates_opens_and_names_the_nearest_existing_one() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a").join("b").join("ledger");
        assert_eq!(nearest_existing(&dir), root.path());
        let (mut log, _) = SledLog::open(&dir, StoreOptions::default()).unwrap();
        append_batches(&mut log, 1, 3, 10);
        drop(log);
        assert_eq!(nearest_existing(&dir), dir);
        assert_eq!(
            nearest_existing(Path::new("no-such-directory")),
            Path::new(".")
        );
        all_events_read_back(&dir, 3);
    }

    #[test]
    fn a_store_synced_for_the_process_only_still_keeps_its_commits_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            durability: Durability::Process,
            ..StoreOptions::default()
        };
        let (mut log, _) = SledLog::open(dir.path(), options).unwrap();
        append_batches(&mut log, 3, 100, 10);
        assert_eq!(log.reader().head(), Sequence(300));
        assert_eq!(log.inner.data_file_syncs.load(Ordering::Relaxed), 0);
        drop(log);
        all_events_read_back(dir.path(), 300);
    }

    #[test]
    fn blob_files_are_synced_for_good_once_complete_and_new_ones_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut blobs = BlobFiles::new(dir.path().join(SLED_BLOB_DIR));
        let names = |names: &[&str]| names.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(blobs.unsynced().unwrap(), names(&[]), "no directory yet");
        std::fs::create_dir(&blobs.dir).unwrap();
        std::fs::write(blobs.dir.join("1"), b"one").unwrap();
        let found = blobs.unsynced().unwrap();
        assert_eq!(found, names(&["1"]));
        assert_eq!(blobs.sync(&found, true).unwrap(), 1);
        // Within the file system's clock tick: the directory's time may not have moved.
        std::fs::write(blobs.dir.join("2"), b"two").unwrap();
        let found = blobs.unsynced().unwrap();
        assert_eq!(found, names(&["2"]));
        // Seen after a flush began: it may have been incomplete, so it is offered again.
        assert_eq!(blobs.sync(&found, false).unwrap(), 1);
        assert_eq!(blobs.unsynced().unwrap(), names(&["2"]));
        assert_eq!(blobs.sync(&names(&["2"]), true).unwrap(), 1);
        assert_eq!(blobs.unsynced().unwrap(), names(&[]));
        std::fs::remove_file(blobs.dir.join("1")).unwrap();
        assert_eq!(blobs.unsynced().unwrap(), names(&[]));
        assert_eq!(blobs.synced, HashSet::from([OsString::from("2")]));
        // A file sled removed before it was synced is forgotten.
        assert_eq!(blobs.sync(&names(&["gone"]), false).unwrap(), 0);
        assert!(blobs.pending.is_empty());
        // Once the directory's time is settled, an unchanged time spares the listing, and a
        // new file changes the time.
        let settled = SystemTime::now() - Duration::from_millis(2 * BLOB_DIR_SETTLED_MILLIS);
        std::fs::File::open(&blobs.dir)
            .unwrap()
            .set_modified(settled)
            .unwrap();
        assert_eq!(blobs.unsynced().unwrap(), names(&[]));
        assert_eq!(blobs.listed, Some(settled));
        std::fs::write(blobs.dir.join("3"), b"three").unwrap();
        assert_eq!(blobs.unsynced().unwrap(), names(&["3"]));
    }
}
