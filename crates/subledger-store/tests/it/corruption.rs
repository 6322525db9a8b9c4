//! Damage on disk is detected and located: a flipped byte in a record, a truncated record,
//! records missing from the end, a damaged snapshot.

use std::path::Path;

use subledger_core::Sequence;
use subledger_engine::OpenError;
use subledger_log::{EventLog, LogError};
use subledger_store::{SledLog, StoreError};

use crate::support::*;

/// Writes the 8-event family: eight one-command batches, so one record each, keys 1 to 8.
fn written(dir: &Path) -> ([u8; 32], [u8; 32]) {
    let ledger = open_ledger(dir, small_records(), no_auto_snapshots()).unwrap();
    populate(&ledger);
    fingerprint(ledger)
}

/// Edits the raw sled tree (the store must be closed).
fn edit_raw(dir: &Path, tree: &str, edit: impl FnOnce(&sled::Tree)) {
    // sled releases its lock shortly after the last handle of a closed database drops.
    let mut attempts = 0;
    let db = loop {
        let opened = sled::Config::new()
            .path(dir)
            .segment_size(subledger_store::SEGMENT_BYTES_NEW)
            .open();
        match opened {
            Ok(db) => break db,
            Err(_) if attempts < 100 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("cannot open the store to edit it: {error}"),
        }
    };
    let tree = db.open_tree(tree).unwrap();
    edit(&tree);
    db.flush().unwrap();
}

fn corrupt_seq(result: Result<subledger_engine::Ledger, OpenError>) -> Sequence {
    match result {
        Err(OpenError::Log(LogError::Corrupt { seq, .. })) => seq,
        Err(other) => panic!("expected a corruption error, got {other}"),
        Ok(_) => panic!("expected a corruption error, the ledger opened"),
    }
}

#[test]
fn a_flipped_byte_in_a_record_stops_recovery_naming_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    edit_raw(dir.path(), "log", |tree| {
        let mut bytes = tree.get(3_u64.to_be_bytes()).unwrap().unwrap().to_vec();
        bytes[80] ^= 0x01;
        tree.insert(3_u64.to_be_bytes(), bytes).unwrap();
    });
    let result = open_ledger(dir.path(), small_records(), no_auto_snapshots());
    assert_eq!(corrupt_seq(result), Sequence(3));
}

#[test]
fn a_damaged_last_record_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    edit_raw(dir.path(), "log", |tree| {
        let mut bytes = tree.get(8_u64.to_be_bytes()).unwrap().unwrap().to_vec();
        bytes.truncate(bytes.len() - 5);
        tree.insert(8_u64.to_be_bytes(), bytes).unwrap();
    });
    match SledLog::open(dir.path(), small_records()) {
        Err(StoreError::Log(LogError::Corrupt { seq, .. })) => assert_eq!(seq, Sequence(8)),
        other => panic!("expected corruption at 8, got {other:?}"),
    }
}

#[test]
fn records_missing_from_the_end_are_reported_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    edit_raw(dir.path(), "log", |tree| {
        tree.remove(8_u64.to_be_bytes()).unwrap();
        tree.remove(7_u64.to_be_bytes()).unwrap();
    });
    match SledLog::open(dir.path(), small_records()) {
        Err(StoreError::Log(LogError::Corrupt { seq, .. })) => assert_eq!(seq, Sequence(7)),
        other => panic!("expected missing records from 7, got {other:?}"),
    }
}

#[test]
fn a_record_missing_from_the_middle_breaks_the_chain_at_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    written(dir.path());
    edit_raw(dir.path(), "log", |tree| {
        tree.remove(3_u64.to_be_bytes()).unwrap();
    });
    let result = open_ledger(dir.path(), small_records(), no_auto_snapshots());
    assert_eq!(corrupt_seq(result), Sequence(3));
}

/// A populated ledger in `dir` with a snapshot at its head (8), closed: its fingerprint and
/// the snapshot's file.
fn closed_with_a_snapshot(dir: &Path) -> (([u8; 32], [u8; 32]), std::path::PathBuf) {
    let ledger = open_ledger(dir, small_records(), no_auto_snapshots()).unwrap();
    populate(&ledger);
    assert_eq!(ledger.snapshot_now().unwrap(), Sequence(8));
    let live = fingerprint(ledger);
    let file = dir.join("ledger-snapshots/snapshot-00000000000000000008.bin");
    (live, file)
}

#[test]
fn a_damaged_snapshot_falls_back_to_a_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (live, file) = closed_with_a_snapshot(dir.path());
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&file, bytes).unwrap();
    let reopened = open_ledger(dir.path(), small_records(), no_auto_snapshots()).unwrap();
    let recovery = reopened.recovery().clone();
    assert_eq!(recovery.snapshot, None);
    assert_eq!(recovery.events_replayed, 8);
    assert_eq!(recovery.warnings.len(), 1);
    assert!(
        recovery.warnings[0].contains("checksum"),
        "{:?}",
        recovery.warnings
    );
    assert_eq!(fingerprint(reopened), live);
}

#[test]
fn snapshots_kept_in_sled_by_earlier_versions_are_still_used_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (live, file) = closed_with_a_snapshot(dir.path());
    // Move the snapshot where versions before the snapshot files kept it.
    let bytes = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    edit_raw(dir.path(), "snapshots", |tree| {
        tree.insert(8_u64.to_be_bytes(), bytes).unwrap();
    });
    let (log, _) = SledLog::open(dir.path(), small_records()).unwrap();
    let snapshots = log.snapshots();
    assert_eq!(snapshots.list().unwrap(), vec![Sequence(8)]);
    drop((log, snapshots));
    let reopened = open_ledger(dir.path(), small_records(), no_auto_snapshots()).unwrap();
    assert_eq!(reopened.recovery().snapshot, Some(Sequence(8)));
    assert_eq!(reopened.recovery().events_replayed, 0);
    drop(reopened);
    let (log, _) = SledLog::open(dir.path(), small_records()).unwrap();
    let snapshots = log.snapshots();
    snapshots.remove(Sequence(8)).unwrap();
    assert!(snapshots.list().unwrap().is_empty());
    assert!(snapshots.load(Sequence(8)).unwrap().is_none());
    drop((log, snapshots));
    let reopened = open_ledger(dir.path(), small_records(), no_auto_snapshots()).unwrap();
    assert_eq!(reopened.recovery().snapshot, None);
    assert_eq!(fingerprint(reopened), live);
}
