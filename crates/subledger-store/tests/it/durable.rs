//! What was committed is there after reopening, through snapshots and across records.

use std::sync::Arc;

use subledger_core::*;
use subledger_engine::Config;
use subledger_log::{EventLog, ReadAt};
use subledger_store::{SledLog, StoreError, StoreOptions};

use crate::support::*;

#[test]
fn committed_commands_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open_ledger(dir.path(), small_records(), no_auto_snapshots()).unwrap();
    populate(&ledger);
    let live = fingerprint(ledger);
    let reopened = open_ledger(dir.path(), small_records(), no_auto_snapshots()).unwrap();
    assert_eq!(reopened.recovery().events_replayed, 8);
    let balance = reopened.read(|views| views.account(&key("disks001")).unwrap().balance);
    assert_eq!(balance, Some(amount("27.5")));
    assert_eq!(fingerprint(reopened), live);
}

#[test]
fn a_snapshot_is_stored_and_used_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open_ledger(dir.path(), small_records(), no_auto_snapshots()).unwrap();
    populate(&ledger);
    assert_eq!(ledger.snapshot_now().unwrap(), Sequence(8));
    ledger.submit(charge("disks002", "0.5")).unwrap().unwrap();
    let live = fingerprint(ledger);
    let reopened = open_ledger(dir.path(), small_records(), no_auto_snapshots()).unwrap();
    assert_eq!(reopened.recovery().snapshot, Some(Sequence(8)));
    assert_eq!(reopened.recovery().events_replayed, 1);
    assert_eq!(fingerprint(reopened), live);
}

#[test]
fn snapshots_are_files_written_whole_and_leftovers_of_a_crash_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = SledLog::open(dir.path(), small_records()).unwrap();
    let snapshots = log.snapshots();
    assert!(snapshots.list().unwrap().is_empty());
    snapshots.save(Sequence(12), b"twelve").unwrap();
    snapshots.save(Sequence(7), b"seven").unwrap();
    assert_eq!(snapshots.list().unwrap(), vec![Sequence(7), Sequence(12)]);
    let snapshot_dir = dir.path().join("ledger-snapshots");
    assert_eq!(
        std::fs::read(snapshot_dir.join("snapshot-00000000000000000012.bin")).unwrap(),
        b"twelve"
    );
    let loaded = snapshots.load(Sequence(7)).unwrap().unwrap();
    assert_eq!(loaded.to_vec().unwrap(), b"seven");
    // Read piecewise from the file, as the snapshot decoder reads it.
    assert_eq!(loaded.size(), 5);
    let mut middle = [0u8; 3];
    loaded.read_exact_at(&mut middle, 1).unwrap();
    assert_eq!(&middle, b"eve");
    assert!(loaded.read_exact_at(&mut middle, 3).is_err());
    assert!(snapshots.load(Sequence(8)).unwrap().is_none());
    snapshots.remove(Sequence(7)).unwrap();
    snapshots.remove(Sequence(7)).unwrap(); // removing what is gone is not an error
    assert_eq!(snapshots.list().unwrap(), vec![Sequence(12)]);
    drop((log, snapshots));
    // A crash mid-write leaves a temporary file; stray names are not snapshots either.
    std::fs::write(snapshot_dir.join("unfinished-20"), b"torn").unwrap();
    std::fs::write(snapshot_dir.join("snapshot-21.bin"), b"short name").unwrap();
    std::fs::write(snapshot_dir.join("notes.txt"), b"operator notes").unwrap();
    let (log, _) = SledLog::open(dir.path(), small_records()).unwrap();
    assert_eq!(log.snapshots().list().unwrap(), vec![Sequence(12)]);
    assert!(!snapshot_dir.join("unfinished-20").exists());
    assert!(snapshot_dir.join("notes.txt").exists());
}

#[test]
fn large_batches_span_several_records_and_read_back_verified() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        batch_commands_max: 512,
        ..no_auto_snapshots()
    };
    let ledger = Arc::new(open_ledger(dir.path(), small_records(), config).unwrap());
    populate(&ledger);
    let runtime = tokio_free_concurrency(&ledger);
    assert_eq!(runtime, 400);
    let reader = ledger.log_reader();
    let mut events = 0;
    let mut records = 0;
    for record in reader.records_from(Sequence(1)).unwrap() {
        let record = record.unwrap();
        assert!(record.events.len() <= 2);
        events += record.events.len();
        records += 1;
    }
    assert_eq!(events, 408);
    assert!(records >= 204);
    // Readers keep the database open; release it before reopening.
    drop(reader);
    let live = fingerprint(Arc::into_inner(ledger).unwrap());
    let reopened = open_ledger(dir.path(), small_records(), no_auto_snapshots()).unwrap();
    assert_eq!(fingerprint(reopened), live);
}

/// Submits 400 top-ups from 8 threads at once so the writer forms multi-command batches.
fn tokio_free_concurrency(ledger: &Arc<subledger_engine::Ledger>) -> usize {
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let ledger = Arc::clone(ledger);
            std::thread::spawn(move || {
                (0..50)
                    .filter(|_| matches!(ledger.submit(top_up("disk0001", "0.01")), Ok(Ok(_))))
                    .count()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .sum()
}

#[test]
fn opening_refuses_what_is_not_a_ledger() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    assert!(matches!(
        SledLog::open(dir.path(), StoreOptions::default()),
        Err(StoreError::NotALedger(_))
    ));
    let missing = dir.path().join("missing");
    let options = StoreOptions {
        create: false,
        ..StoreOptions::default()
    };
    assert!(matches!(
        SledLog::open(&missing, options),
        Err(StoreError::Missing(_))
    ));
}

#[test]
fn a_second_opener_is_told_the_directory_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let (_first, _) = SledLog::open(dir.path(), StoreOptions::default()).unwrap();
    let second = SledLog::open(dir.path(), StoreOptions::default());
    assert!(matches!(second, Err(StoreError::Locked(_))), "{second:?}");
}

#[test]
fn appends_must_follow_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, report) = SledLog::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(report.head, Sequence::ZERO);
    let batch = Batch {
        first: Sequence(5),
        at: Timestamp(0),
        events: vec![Event::AccountSuspended {
            account: AccountId(0),
        }],
    };
    assert!(matches!(
        log.append(&batch),
        Err(subledger_log::LogError::Gap { .. })
    ));
}

#[test]
fn an_unusable_snapshot_directory_fails_snapshots_but_never_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open_ledger(dir.path(), small_records(), no_auto_snapshots()).unwrap();
    populate(&ledger);
    // Something that is not a directory where the snapshots go.
    std::fs::write(dir.path().join("ledger-snapshots"), b"not a directory").unwrap();
    let refused = ledger.snapshot_now().unwrap_err();
    assert!(refused.to_string().contains("snapshot 8"), "{refused}");
    let live = fingerprint(ledger);
    let reopened = open_ledger(dir.path(), small_records(), no_auto_snapshots()).unwrap();
    let recovery = reopened.recovery().clone();
    assert_eq!(recovery.snapshot, None);
    assert_eq!(recovery.events_replayed, 8);
    assert!(
        recovery
            .warnings
            .iter()
            .any(|warning| warning.contains("cannot list snapshots")),
        "{:?}",
        recovery.warnings
    );
    assert_eq!(fingerprint(reopened), live);
}

/// Records read back from a log, in order.
fn records_of(log: &SledLog) -> Vec<subledger_log::Record> {
    log.reader()
        .records_from(Sequence(1))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn records_copied_from_another_log_keep_their_bytes_and_bad_ones_change_nothing() {
    let suspended = |account| Event::AccountSuspended {
        account: AccountId(account),
    };
    // A source log cut into records of two events: a batch of five (three records), then one.
    let source_dir = tempfile::tempdir().unwrap();
    let (mut source, _) = SledLog::open(source_dir.path(), small_records()).unwrap();
    for (first, count) in [(1_u64, 5_u32), (6, 1)] {
        let batch = Batch {
            first: Sequence(first),
            at: Timestamp(i64::try_from(first).unwrap() * 1_000),
            events: (0..count).map(suspended).collect(),
        };
        source.append(&batch).unwrap();
        source.sync().unwrap();
    }
    let records = records_of(&source);
    assert_eq!(records.len(), 4);
    let (batch, last) = records.split_at(3);

    // The copy takes the default record size, yet keeps the source's records as they are.
    let copy_dir = tempfile::tempdir().unwrap();
    let (mut copy, _) = SledLog::open(copy_dir.path(), StoreOptions::default()).unwrap();
    // Refused, and nothing written: a gap, a broken chain, contents that do not give the
    // stored hash, a batch cut short, and records of one batch naming different ends.
    let mut broken = batch.to_vec();
    broken[0].prev_hash = subledger_log::ChainHash([7; 32]);
    let mut altered = batch.to_vec();
    altered[1].events[0] = suspended(9);
    // Re-hashed so that only its batch end is wrong: it says its batch ends with it.
    let mut split = batch.to_vec();
    split[1].batch_last = split[1].last();
    for index in 1..split.len() {
        let record = &split[index];
        let (_, rehashed) = subledger_log::record::encode_record(
            record.first,
            record.at,
            record.batch_last,
            record.prev_hash,
            &record.events,
        )
        .unwrap();
        split[index].hash = rehashed;
        if let Some(next) = split.get_mut(index + 1) {
            next.prev_hash = rehashed;
        }
    }
    for (records, refusal) in [
        (last, "gap"),
        (&broken[..], "continue"),
        (&altered[..], "give its hash"),
        (&batch[..2], "end their commit batch"),
        (&split[..], "batch end disagrees"),
    ] {
        let error = copy.append_records(records).unwrap_err();
        let text = error.to_string();
        let named = match refusal {
            "gap" => matches!(error, subledger_log::LogError::Gap { .. }),
            _ => text.contains(refusal),
        };
        assert!(named, "{refusal}: {text}");
        copy.sync().unwrap();
        // Reopened, so that records written without moving the head would show too.
        drop(copy);
        let (reopened, report) = SledLog::open(copy_dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(report.head, Sequence::ZERO, "{refusal} moved the head");
        assert_eq!(report.torn_records_discarded, 0, "{refusal} wrote records");
        assert!(
            records_of(&reopened).is_empty(),
            "{refusal} wrote something"
        );
        copy = reopened;
    }
    copy.append_records(batch).unwrap();
    copy.append_records(last).unwrap();
    copy.sync().unwrap();
    assert_eq!(records_of(&copy), records);
    drop((copy, source));
    let (reopened, report) = SledLog::open(copy_dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(report.head, Sequence(6));
    assert_eq!(records_of(&reopened), records);
}
