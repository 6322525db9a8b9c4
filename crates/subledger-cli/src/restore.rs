//! `subledger restore`: a new data directory from a portable log archive (`export --what log`).
//!
//! The archive's records are written as they are, so the restored log has the archived one's
//! hash chain and head hash; a full replay then checks every event against the rules, and a
//! snapshot is written so that the first open does not replay it all again. The directory is
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
use subledger_engine::{Config, Ledger, SystemClock};
use subledger_log::archive::ArchiveReader;
use subledger_log::{EventLog, LogError, LogReader, Record};
use subledger_store::{SledLog, StoreOptions};

use crate::audit::Bar;

/// Events appended between two syncs of the new store: a sync per commit batch, as the live
/// ledger made, would take a 10M-event restore minutes; this bounds what a crash (before the
/// rename, which makes the work moot anyway) and the store's unsynced memory hold.
pub const RESTORE_SYNC_EVENTS: u64 = 262_144;
/// Most events in one commit batch of the archive. The engine's batches hold at most 8,192
/// commands of a few events each; a longer "batch" (a record that never ends its batch) is
/// refused rather than held in memory.
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
    Other(String),
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::Archive(error) => write!(formatter, "the archive is damaged: {error}"),
            RestoreError::Other(message) => formatter.write_str(message),
        }
    }
}

impl RestoreError {
    fn exit_code(&self) -> u8 {
        match self {
            RestoreError::Archive(_) => 1,
            RestoreError::Other(_) => 2,
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
        error => other("writing the new store", error),
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
    let empty = match std::fs::read_dir(&args.data) {
        Ok(mut entries) => entries.next().is_none(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => true,
        Err(error) => return Err(other(&args.data.display().to_string(), error)),
    };
    if !empty {
        return Err(RestoreError::Other(format!(
            "{} is not empty: restore creates a new ledger",
            args.data.display()
        )));
    }
    let archive = ArchiveReader::open(&args.log).map_err(|error| match error {
        LogError::Corrupt { .. } => RestoreError::Archive(error),
        error => other(&args.log.display().to_string(), error),
    })?;
    let building = building_dir(&args.data)?;
    let built = build(&archive, &building, args.no_snapshot);
    let placed = built.and_then(|restored| {
        place(&building, &args.data)?;
        Ok(restored)
    });
    if placed.is_err() {
        // Nothing of a failed restore stays behind (the store is closed by now).
        let _ = std::fs::remove_dir_all(&building);
    }
    placed
}

/// The temporary directory the ledger is built in: beside the target, so that the final
/// rename stays on one file system.
fn building_dir(data: &Path) -> Result<PathBuf, RestoreError> {
    let name = data
        .file_name()
        .ok_or_else(|| RestoreError::Other(format!("{} names no directory", data.display())))?
        .to_string_lossy();
    let parent = match data.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .map_err(|error| other(&parent.display().to_string(), error))?;
    let building = parent.join(format!(".{name}.restoring-{}", std::process::id()));
    if building.exists() {
        return Err(RestoreError::Other(format!(
            "{} exists: another restore may be running",
            building.display()
        )));
    }
    Ok(building)
}

fn build(archive: &ArchiveReader, dir: &Path, no_snapshot: bool) -> Result<Restored, RestoreError> {
    let (mut log, _) = SledLog::open(dir, StoreOptions::default())
        .map_err(|error| other("creating the store", error))?;
    let total = archive.head().0;
    let bar = Bar::new("restoring");
    let (mut records, mut unsynced) = (0_u64, 0_u64);
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
    let summary = archive.summary();
    let restored = |snapshot| Restored {
        events: summary.head.0,
        records,
        head_hash: summary.head_hash.to_hex(),
        snapshot,
    };
    if no_snapshot || summary.head == Sequence::ZERO {
        return Ok(restored(None));
    }
    // Opening replays every event through the rules (an archive whose chain is whole but
    // whose events break them is refused here), then the snapshot spares the next open that.
    let ledger = Ledger::open(
        Config {
            snapshot_every_events: 0,
            ..Config::default()
        },
        log,
        SystemClock,
    )
    .map_err(|error| other("replaying the restored log", error))?;
    let taken = ledger.snapshot_now();
    let closed = ledger.close();
    let seq = taken.map_err(|error| other("writing the snapshot", error))?;
    closed.map_err(|error| other("closing the restored ledger", error))?;
    Ok(restored(Some(seq.0)))
}

/// Renames the built directory to `data` (an empty directory there is replaced) and syncs
/// the parent, so the new name survives a power cut.
fn place(building: &Path, data: &Path) -> Result<(), RestoreError> {
    std::fs::rename(building, data).map_err(|error| {
        other(
            &format!("renaming {} to {}", building.display(), data.display()),
            error,
        )
    })?;
    let parent = building.parent().unwrap_or(Path::new("."));
    std::fs::File::open(parent)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| other(&format!("syncing {}", parent.display()), error))
}
