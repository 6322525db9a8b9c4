//! `subledger restore`: a new data directory from a portable log archive (`export --what log`).
//!
//! The archive's records are written as they are, so the restored log has the archived one's
//! hash chain and head hash; a full replay then checks every event against the rules, and
//! its views are written as a snapshot (`subledger_engine::snapshot_stopped`), so that the
//! first open does not replay it all again. The directory is
//! built under a temporary name beside the target and renamed into place only once complete:
//! a failed or interrupted restore never leaves a shorter ledger where the whole one was
//! expected.
//!
//! It is also how a store made by an older version takes this version's layout (8 MiB
//! segments, records of at most 64 KiB from then on): export its log, restore it elsewhere.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use subledger_core::Sequence;
use subledger_engine::{Config, Ledger, OpenError, StoppedSnapshotError, SystemClock};
use subledger_log::archive::ArchiveReader;
use subledger_log::{ChainHash, EventLog, LogError, LogReader, Record};
use subledger_store::{SledLog, StoreOptions};

use crate::audit::Bar;

/// Events appended between two syncs of the new store: a sync per commit batch, as the live
/// ledger made, would take a 10M-event restore minutes; this bounds what a crash (before the
/// rename, which makes the work moot anyway) and the store's unsynced memory hold.
pub const RESTORE_SYNC_EVENTS: u64 = 262_144;
/// Most events in one commit batch of the archive, held in memory until the batch ends. The
/// engine's default batches hold at most 8,192 commands of a few events each (a ledger run
/// with a larger `batch_commands_max` held its batches in memory the same way); a longer
/// "batch" (records that never end their batch) is refused. At worst, with every name and
/// reference at its longest, a million events are about a gigabyte.
pub const RESTORE_BATCH_EVENTS_MAX: usize = 1 << 20;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The portable log archive (`subledger export --what log`).
    #[arg(long)]
    log: PathBuf,
    /// The data directory to create: it must not exist, or be empty.
    #[arg(long)]
    data: PathBuf,
    /// Write no snapshot: the first open then replays the whole log.
    #[arg(long)]
    no_snapshot: bool,
    /// Print what was restored as one JSON object (events, records, head_hash, snapshot).
    #[arg(long)]
    json: bool,
}

/// What a restore wrote.
#[derive(Debug)]
struct Restored {
    events: u64,
    records: u64,
    head_hash: String,
    /// Where the snapshot was written (`None` with `--no-snapshot`).
    snapshot: Option<u64>,
}

/// Why a restore failed: the archive (exit 1, as a check that found a problem) or anything
/// else (exit 2).
#[derive(Debug)]
enum RestoreError {
    Archive(LogError),
    /// The archive's chain is whole but its events break the rules.
    Rules(String),
    /// The ledger was renamed into place, but a later step failed.
    Placed(String),
    Other(String),
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::Archive(error) => write!(formatter, "the archive is damaged: {error}"),
            RestoreError::Rules(message) => {
                write!(formatter, "the archive's events break the rules: {message}")
            }
            RestoreError::Placed(message) | RestoreError::Other(message) => {
                formatter.write_str(message)
            }
        }
    }
}

impl RestoreError {
    fn exit_code(&self) -> u8 {
        match self {
            RestoreError::Archive(_) | RestoreError::Rules(_) => 1,
            RestoreError::Placed(_) | RestoreError::Other(_) => 2,
        }
    }
}

fn other(what: &str, error: impl std::fmt::Display) -> RestoreError {
    RestoreError::Other(format!("{what}: {error}"))
}

/// A log error from reading or writing records: the archive's fault when it names a record.
fn log_error(error: LogError) -> RestoreError {
    match error {
        LogError::Corrupt { .. } | LogError::Gap { .. } => RestoreError::Archive(error),
        error => other("reading the archive or writing the new store", error),
    }
}

pub fn run(args: &RestoreArgs) -> ExitCode {
    match restore(args) {
        Ok(restored) => {
            if args.json {
                let json = serde_json::json!({
                    "events": restored.events,
                    "records": restored.records,
                    "head_hash": restored.head_hash,
                    "snapshot": restored.snapshot,
                });
                println!("{json}");
            } else {
                println!(
                    "restored {} events ({} records) into {}; head hash {}",
                    restored.events,
                    restored.records,
                    args.data.display(),
                    restored.head_hash
                );
                match restored.snapshot {
                    Some(seq) => println!("snapshot written at sequence {seq}"),
                    None => println!("no snapshot written: the first open replays the whole log"),
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn restore(args: &RestoreArgs) -> Result<Restored, RestoreError> {
    // `a/b/.` names `a/b`; renaming onto it by the first spelling fails.
    let data: PathBuf = args.data.components().collect();
    let target = Target::check(&data)?;
    let archive = ArchiveReader::open(&args.log).map_err(|error| match error {
        LogError::Corrupt { .. } => RestoreError::Archive(error),
        error => other(&args.log.display().to_string(), error),
    })?;
    let created = target.create_parents()?;
    let claimed = target.claim();
    let ours = claimed.is_ok();
    let built = claimed.and_then(|lock| {
        let built = build(&archive, &target.building, args.no_snapshot)
            .and_then(|restored| target.place(&created).map(|()| restored));
        // Held until the ledger is in place (or given up).
        drop(lock);
        built
    });
    if built.is_err() {
        // Nothing of a failed restore stays behind (the store is closed by now), including
        // the parents it created (deepest first; one that gained other files stays). A
        // building directory that could not be claimed is someone else's.
        if ours {
            let _ = std::fs::remove_dir_all(&target.building);
        }
        for dir in &created {
            let _ = std::fs::remove_dir(dir);
        }
    }
    built
}

/// Removes what restores into the same target left when they were killed: directories
/// `<prefix><pid>` beside it that no restore holds (a restore cleans up after every failure
/// it sees, but not after `kill -9` or a power cut, and a 10M-event build is gigabytes). Two
/// things must agree: the directory's lock (`Target::claim`) can be taken, so no restore of
/// this version holds it in any process namespace, and `/proc` shows no process `pid`, for
/// a restore of an older version, which took no lock. Where there is no `/proc`, or anything
/// is in doubt (a live process, a lock held, a name this code would not have made, a
/// symbolic link), the entry stays and is only reported.
fn remove_leftovers(parent: &Path, prefix: &str) {
    let proc_mounted = Path::new("/proc/self").exists();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(prefix))
            // Only the spelling this code writes: `-0123` or `-0` is somebody else's.
            .and_then(|digits| Some((digits, digits.parse::<u32>().ok()?)))
            .filter(|(digits, pid)| pid.to_string() == *digits)
            .map(|(_, pid)| pid)
        else {
            continue;
        };
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
        let gone = proc_mounted && !Path::new("/proc").join(pid.to_string()).exists();
        // Held while removing, so that nothing can claim it meanwhile.
        let unlocked = (is_dir && gone)
            .then(|| std::fs::File::open(&path).ok())
            .flatten()
            .filter(|directory| directory.try_lock().is_ok());
        if unlocked.is_some() && pid != std::process::id() {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => eprintln!(
                    "removed {}: left by a restore that was stopped (process {pid} is gone)",
                    path.display()
                ),
                Err(error) => eprintln!(
                    "warning: could not remove {}, left by a stopped restore: {error}",
                    path.display()
                ),
            }
        } else {
            eprintln!(
                "warning: {} is left by another restore into the same directory (process \
                 {pid} may still be running, or it holds the lock); not touched",
                path.display()
            );
        }
    }
}

/// Where a restore builds its ledger and where it puts it.
struct Target {
    data: PathBuf,
    parent: PathBuf,
    /// Beside `data`, so that the final rename stays on one file system.
    building: PathBuf,
}

impl Target {
    /// Refuses, before any work, a target the final rename could not take: an occupied
    /// directory, a symbolic link, a mount point, a path naming no directory.
    fn check(data: &Path) -> Result<Target, RestoreError> {
        let refuse = |why: &str| Err(RestoreError::Other(format!("{}: {why}", data.display())));
        let Some(name) = data.file_name() else {
            return refuse("names no directory");
        };
        let parent = match data.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        match std::fs::symlink_metadata(data) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(other(&data.display().to_string(), error)),
            Ok(metadata) if metadata.file_type().is_symlink() => {
                return refuse("is a symbolic link: give the directory it points to");
            }
            Ok(metadata) if !metadata.is_dir() => return refuse("is not a directory"),
            Ok(metadata) => {
                let mut entries = std::fs::read_dir(data)
                    .map_err(|error| other(&data.display().to_string(), error))?;
                if entries.next().is_some() {
                    return refuse("is not empty: restore creates a new ledger");
                }
                let parent_device = std::fs::metadata(&parent)
                    .map_err(|error| other(&parent.display().to_string(), error))?;
                if std::os::unix::fs::MetadataExt::dev(&metadata)
                    != std::os::unix::fs::MetadataExt::dev(&parent_device)
                {
                    return refuse(
                        "is a mount point: restore builds beside the target and renames it \
                         into place; name a directory inside it",
                    );
                }
            }
        }
        let prefix = format!(".{}.restoring-", name.to_string_lossy());
        remove_leftovers(&parent, &prefix);
        let building = parent.join(format!("{prefix}{}", std::process::id()));
        if building.exists() {
            return Err(RestoreError::Other(format!(
                "{} exists: another restore may be running",
                building.display()
            )));
        }
        Ok(Target {
            data: data.to_path_buf(),
            parent,
            building,
        })
    }

    /// Creates the building directory and locks it (`flock`) for as long as the returned
    /// file is held, renames included: another restore into the same target then knows it is
    /// in use, whatever process namespace it runs in (see [`remove_leftovers`]).
    fn claim(&self) -> Result<std::fs::File, RestoreError> {
        let failed = |error: std::io::Error| other(&self.building.display().to_string(), error);
        std::fs::create_dir(&self.building).map_err(failed)?;
        let directory = std::fs::File::open(&self.building).map_err(failed)?;
        directory.try_lock().map_err(|error| {
            RestoreError::Other(format!(
                "{}: cannot lock it ({error}): another restore may be running",
                self.building.display()
            ))
        })?;
        Ok(directory)
    }

    /// Creates the missing parents; returns them, deepest first.
    fn create_parents(&self) -> Result<Vec<PathBuf>, RestoreError> {
        let created: Vec<PathBuf> = self
            .parent
            .ancestors()
            .take_while(|dir| !dir.as_os_str().is_empty() && !dir.exists())
            .map(Path::to_path_buf)
            .collect();
        std::fs::create_dir_all(&self.parent)
            .map_err(|error| other(&self.parent.display().to_string(), error))?;
        Ok(created)
    }

    /// Renames the built directory to `data` (an empty directory there is replaced), then
    /// syncs its parent and every parent this restore created, and the one above them, so that
    /// the new names survive a power cut.
    fn place(&self, created: &[PathBuf]) -> Result<(), RestoreError> {
        std::fs::rename(&self.building, &self.data).map_err(|error| {
            other(
                &format!(
                    "renaming {} to {}",
                    self.building.display(),
                    self.data.display()
                ),
                error,
            )
        })?;
        let above = created
            .last()
            .and_then(|top| top.parent())
            .filter(|dir| !dir.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let mut to_sync = vec![self.parent.clone()];
        to_sync.extend(created.iter().skip(1).cloned());
        if !created.is_empty() {
            to_sync.push(above);
        }
        for dir in to_sync {
            std::fs::File::open(&dir)
                .and_then(|directory| directory.sync_all())
                .map_err(|error| {
                    RestoreError::Placed(format!(
                        "the ledger is in place at {}, but syncing {} failed: {error}",
                        self.data.display(),
                        dir.display()
                    ))
                })?;
        }
        Ok(())
    }
}

fn build(archive: &ArchiveReader, dir: &Path, no_snapshot: bool) -> Result<Restored, RestoreError> {
    let (mut log, _) = SledLog::open(dir, StoreOptions::default())
        .map_err(|error| other("creating the store", error))?;
    let total = archive.head().0;
    let bar = Bar::new("restoring");
    let (mut records, mut unsynced) = (0_u64, 0_u64);
    let (mut head, mut head_hash) = (Sequence::ZERO, ChainHash::GENESIS);
    let mut batch: Vec<Record> = Vec::new();
    let mut batch_events = 0_usize;
    for record in archive.records_from(Sequence(1)).map_err(log_error)? {
        let record = record.map_err(log_error)?;
        batch_events += record.events.len();
        if batch_events > RESTORE_BATCH_EVENTS_MAX {
            return Err(RestoreError::Archive(LogError::Corrupt {
                seq: record.first,
                detail: format!("a commit batch of more than {RESTORE_BATCH_EVENTS_MAX} events"),
            }));
        }
        let ends_batch = record.ends_batch();
        let last = record.last();
        batch.push(record);
        if !ends_batch {
            continue;
        }
        log.append_records(&batch).map_err(log_error)?;
        records += batch.len() as u64;
        if let Some(end) = batch.last() {
            (head, head_hash) = (end.last(), end.hash);
        }
        unsynced += batch_events as u64;
        batch.clear();
        batch_events = 0;
        if unsynced >= RESTORE_SYNC_EVENTS {
            log.sync().map_err(log_error)?;
            unsynced = 0;
            subledger_audit::Progress::advance(&bar, last.0, total);
        }
    }
    if let Some(first) = batch.first() {
        return Err(RestoreError::Archive(LogError::Corrupt {
            seq: first.first,
            detail: "the archive ends inside a commit batch".into(),
        }));
    }
    log.sync().map_err(log_error)?;
    subledger_audit::Progress::advance(&bar, total, total);
    drop(bar);
    // What was written, checked against what the archive says it holds (the reader checks
    // the trailer too; this does not depend on it).
    let summary = archive.summary();
    if (records, head, head_hash) != (summary.records, summary.head, summary.head_hash) {
        return Err(RestoreError::Archive(LogError::Corrupt {
            seq: head.next(),
            detail: format!(
                "{records} records up to {head} were restored; the trailer says {} up to {}",
                summary.records, summary.head
            ),
        }));
    }
    let restored = |snapshot| Restored {
        events: head.0,
        records,
        head_hash: head_hash.to_hex(),
        snapshot,
    };
    if head == Sequence::ZERO {
        return Ok(restored(None));
    }
    // Both ways replay every event through the rules (an archive whose chain is whole but
    // whose events break them is refused here); the snapshot spares the next open that.
    let rules = |error: OpenError| match error {
        OpenError::Replay(error) => RestoreError::Rules(error.to_string()),
        OpenError::Log(error) => log_error(error),
        error => other("replaying the restored log", error),
    };
    if no_snapshot {
        let ledger = Ledger::open(
            Config {
                snapshot_every_events: 0,
                ..Config::default()
            },
            log,
            SystemClock,
        )
        .map_err(rules)?;
        ledger
            .close()
            .map_err(|error| other("closing the restored ledger", error))?;
        return Ok(restored(None));
    }
    let seq = subledger_engine::snapshot_stopped(
        log.reader().as_ref(),
        log.snapshots().as_ref(),
        subledger_engine::SNAPSHOTS_KEEP_DEFAULT,
    )
    .map_err(|error| match error {
        StoppedSnapshotError::Recover(error) => rules(error),
        error => other("writing the snapshot", error),
    })?;
    Ok(restored(Some(seq.0)))
}
