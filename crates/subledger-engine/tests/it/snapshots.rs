//! Snapshots: taken from the durable log, restored on open, skipped when damaged, and always
//! equal to a full replay.

use proptest::prelude::*;
use subledger_core::*;
use subledger_engine::*;
use subledger_log::{EventLog, MemoryLog};

use crate::support::*;

fn no_auto_snapshots() -> Config {
    Config {
        snapshot_every_events: 0,
        ..Config::default()
    }
}

fn family_commands() -> Vec<Command> {
    vec![
        open_primary("snap0001"),
        create_subaccount("snap0001", "snas0001", false),
        create_subaccount("snap0001", "snas0002", true),
        top_up("snap0001", "100"),
        transfer_balance("snap0001", "snap0001", "snas0001", "40"),
        charge("snas0002", "3"),
    ]
}

/// The money entries `ledger`'s views share with its index, and those they hold copies of.
fn shared_and_copied(ledger: &Ledger) -> (usize, usize) {
    ledger.read(subledger_views::Views::money_entries_shared_and_copied)
}

/// A ledger opened on a copy of `log` without its snapshots: a full replay.
fn fully_replayed(log: &MemoryLog) -> Ledger {
    let bare = MemoryLog::new();
    let mut writer = bare.clone();
    for batch in log.batches() {
        writer.append(&batch).unwrap();
    }
    Ledger::open(no_auto_snapshots(), bare, ManualClock::default()).unwrap()
}

/// Hash of the views and of the writer state after closing.
fn fingerprint(ledger: Ledger) -> ([u8; 32], [u8; 32]) {
    let views = ledger.read(|views| views.views_hash());
    let (state, _) = ledger.close_into_parts().unwrap();
    (views, state.state_hash())
}

#[test]
fn a_snapshot_plus_the_tail_equals_a_full_replay() {
    let log = MemoryLog::new();
    let ledger = Ledger::open(no_auto_snapshots(), log.clone(), ManualClock::default()).unwrap();
    for command in family_commands() {
        ledger.submit(command).unwrap().unwrap();
    }
    assert_eq!(ledger.snapshot_now().unwrap(), Sequence(6));
    assert!(ledger.metrics().snapshot_replica_held, "kept by default");
    ledger.submit(charge("snas0001", "1.25")).unwrap().unwrap();
    ledger.submit(top_up("snap0001", "7")).unwrap().unwrap();
    // The tail adds to lists the snapshot already holds (the family's transfers).
    ledger
        .submit(transfer_balance("snap0001", "snas0001", "snap0001", "5"))
        .unwrap()
        .unwrap();
    let live = fingerprint(ledger);

    let reopened = Ledger::open(no_auto_snapshots(), log.clone(), ManualClock::default()).unwrap();
    assert_eq!(reopened.recovery().snapshot, Some(Sequence(6)));
    assert_eq!(reopened.recovery().events_replayed, 3);
    assert!(reopened.recovery().warnings.is_empty());
    // The retry index came back with the snapshot: a retry of a pre-snapshot command is known.
    assert_eq!(fingerprint(reopened), live);

    // Without snapshots, a full replay gives the same.
    let full = fully_replayed(&log);
    assert_eq!(full.recovery().snapshot, None);
    assert_eq!(full.recovery().events_replayed, 9);
    assert_eq!(fingerprint(full), live);
}

/// An open shares the money records it loaded between the writer's idempotency index and the
/// read views' lists (ADR 0007): the views copy only what is applied after it. Retries of
/// loaded commands are still answered from the index, with their original receipt, and a
/// ledger reopened twice, with a snapshot written from shared records in between, still
/// equals its live self and a full replay.
#[test]
fn an_open_shares_the_loaded_records_between_the_index_and_the_views() {
    let log = MemoryLog::new();
    let ledger = Ledger::open(no_auto_snapshots(), log.clone(), ManualClock::default()).unwrap();
    let commands = family_commands();
    for command in commands.clone() {
        ledger.submit(command).unwrap().unwrap();
    }
    // Three money commands so far (a top-up, a transfer, a charge), all copied by the views.
    assert_eq!(shared_and_copied(&ledger), (0, 3));
    assert_eq!(ledger.snapshot_now().unwrap(), Sequence(6));
    let tail_charge = charge("snas0001", "1.25");
    let original = ledger.submit(tail_charge.clone()).unwrap().unwrap();
    drop(ledger);

    // The snapshot's three and the replayed charge, shared.
    let reopened = Ledger::open(no_auto_snapshots(), log.clone(), ManualClock::default()).unwrap();
    assert_eq!(reopened.recovery().events_replayed, 1);
    assert_eq!(shared_and_copied(&reopened), (4, 0));
    let retry = reopened.submit(tail_charge).unwrap().unwrap();
    assert!(retry.replayed);
    assert_eq!((retry.first, retry.at), (original.first, original.at));
    let first_top_up = commands[3].clone();
    assert!(reopened.submit(first_top_up).unwrap().unwrap().replayed);
    reopened
        .submit(transfer_balance("snap0001", "snas0001", "snap0001", "5"))
        .unwrap()
        .unwrap();
    assert_eq!(shared_and_copied(&reopened), (4, 1));
    // Written from shared records and a copied one.
    assert_eq!(reopened.snapshot_now().unwrap(), Sequence(8));
    reopened.submit(top_up("snap0001", "7")).unwrap().unwrap();
    let live = fingerprint(reopened);

    let again = Ledger::open(no_auto_snapshots(), log.clone(), ManualClock::default()).unwrap();
    assert_eq!(again.recovery().snapshot, Some(Sequence(8)));
    assert_eq!(shared_and_copied(&again), (6, 0));
    assert_eq!(fingerprint(again), live);
    let full = fully_replayed(&log);
    assert_eq!(shared_and_copied(&full), (6, 0));
    assert_eq!(fingerprint(full), live);
}

/// Live, the writer freezes its idempotency records every `SHARED_SEGMENT_RECORDS_MIN` and
/// the read views drop their copies of them once applied, sharing the writer's; the snapshot
/// thread's replica does the same with its own index (exercised here, its sharing checked
/// only through the snapshot it writes). Reads, retries, snapshots and a reopen are
/// unchanged.
#[test]
fn live_views_share_the_records_the_writer_froze() {
    let log = MemoryLog::new();
    let ledger = Ledger::open(no_auto_snapshots(), log.clone(), ManualClock::default()).unwrap();
    let commands = family_commands();
    for command in commands.clone() {
        ledger.submit(command).unwrap().unwrap();
    }
    // The replica is built now, so that it catches up through the charges below (freezing
    // and sharing its own records on the way).
    assert_eq!(ledger.snapshot_now().unwrap(), Sequence(6));
    let segment = SHARED_SEGMENT_RECORDS_MIN;
    let charges: Vec<Command> = (0..segment + 100)
        .map(|_| charge("snas0002", "0.00000001"))
        .collect();
    for chunk in charges.chunks(4_096) {
        for outcome in ledger.submit_batch(chunk.to_vec()).unwrap() {
            outcome.unwrap();
        }
    }
    let (shared, copied) = shared_and_copied(&ledger);
    let total = 3 + segment + 100;
    assert_eq!(shared + copied, total);
    assert!(shared >= segment && copied < segment, "{shared} / {copied}");
    // A shared subaccount's charge (paid by the primary) and an early command, retried.
    let retry = ledger.submit(charges[10].clone()).unwrap().unwrap();
    assert!(retry.replayed);
    assert!(
        ledger
            .submit(commands[4].clone())
            .unwrap()
            .unwrap()
            .replayed
    );
    let payer = ledger.read(|views| {
        let page = views
            .payments(
                &"snap0001".parse().unwrap(),
                subledger_views::PaymentKind::Charges,
                &subledger_views::TransferQuery::default(),
            )
            .unwrap();
        page.items
            .iter()
            .map(|item| item.payer.to_string())
            .collect::<Vec<_>>()
    });
    assert!(!payer.is_empty() && payer.iter().all(|payer| payer == "snap0001"));
    // A snapshot written from the replica (whose lists share its index's records by now),
    // then reopened, equals the live ledger.
    assert!(ledger.snapshot_now().is_ok());
    let live = fingerprint(ledger);
    let reopened = Ledger::open(no_auto_snapshots(), log.clone(), ManualClock::default()).unwrap();
    assert_eq!(shared_and_copied(&reopened), (total, 0));
    assert_eq!(fingerprint(reopened), live);
}

/// Asked for, a snapshot is written even where one already is (an older format's, loaded at
/// open, is rewritten in today's: `subledger snapshot` upgrades a ledger's newest snapshot);
/// periodic snapshots never rewrite one.
#[test]
fn a_requested_snapshot_is_written_again_at_the_same_position() {
    let log = MemoryLog::new();
    let saves = log.fault_switch();
    let ledger = Ledger::open(no_auto_snapshots(), log.clone(), ManualClock::default()).unwrap();
    for command in family_commands() {
        ledger.submit(command).unwrap().unwrap();
    }
    assert_eq!(ledger.snapshot_now().unwrap(), Sequence(6));
    assert_eq!(ledger.snapshot_now().unwrap(), Sequence(6));
    assert_eq!(ledger.metrics().snapshots_written, 2);
    assert_eq!(saves.snapshot_save_attempts(), 2);
    drop(ledger);
    let reopened = Ledger::open(no_auto_snapshots(), log.clone(), ManualClock::default()).unwrap();
    assert_eq!(reopened.recovery().snapshot, Some(Sequence(6)));
    assert_eq!(reopened.snapshot_now().unwrap(), Sequence(6));
    assert_eq!(saves.snapshot_save_attempts(), 3);
}

/// A store that keeps failing is not retried at every poll (100 ms): each failure doubles the
/// wait before the next periodic attempt, from 1 s; once the store works again, the next
/// attempt writes the snapshot.
#[test]
fn failed_background_snapshots_are_retried_after_a_growing_wait() {
    let log = MemoryLog::new();
    let faults = log.fault_switch();
    faults.fail_snapshot_saves(true);
    let config = Config {
        snapshot_every_events: 2,
        ..Config::default()
    };
    let ledger = Ledger::open(config, log.clone(), ManualClock::default()).unwrap();
    for command in family_commands() {
        ledger.submit(command).unwrap().unwrap();
    }
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    wait_for("the first attempt fails", &|| {
        ledger.metrics().snapshot_error.is_some()
    });
    let failed = faults.snapshot_save_attempts();
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let retried = faults.snapshot_save_attempts() - failed;
    assert!(
        retried <= 2,
        "{retried} attempts in 1.5 s: polling every 100 ms would make about 15"
    );
    faults.fail_snapshot_saves(false);
    let store = log.snapshots();
    wait_for("a snapshot once the store works", &|| {
        !store.list().unwrap().is_empty()
    });
    wait_for("the error cleared", &|| {
        ledger.metrics().snapshot_error.is_none()
    });
    let metrics = ledger.metrics();
    assert_eq!(metrics.snapshots_written, 1);
    assert_eq!(store.list().unwrap(), [metrics.last_snapshot]);
    ledger.close().unwrap();
}

/// Waits until the snapshot thread has dropped its replica (it answers first, then frees it).
fn replica_dropped(ledger: &Ledger) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ledger.metrics().snapshot_replica_held {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica is still held"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Without a kept replica, every snapshot is rebuilt from the previous one and the log after
/// it; the chain of such snapshots still equals a full replay.
#[test]
fn snapshots_rebuilt_from_the_previous_one_equal_a_full_replay() {
    let log = MemoryLog::new();
    let config = Config {
        snapshot_replica: SnapshotReplica::Rebuilt,
        ..no_auto_snapshots()
    };
    let ledger = Ledger::open(config, log.clone(), ManualClock::default()).unwrap();
    let commands = family_commands();
    for command in &commands[..4] {
        ledger.submit(command.clone()).unwrap().unwrap();
    }
    assert_eq!(ledger.snapshot_now().unwrap(), Sequence(4));
    replica_dropped(&ledger);
    for command in &commands[4..] {
        ledger.submit(command.clone()).unwrap().unwrap();
    }
    // Rebuilt from the snapshot at 4 and the two events after it.
    assert_eq!(ledger.snapshot_now().unwrap(), Sequence(6));
    ledger.submit(charge("snas0001", "2")).unwrap().unwrap();
    assert_eq!(ledger.snapshot_now().unwrap(), Sequence(7));
    assert_eq!(ledger.metrics().snapshot_error, None);
    replica_dropped(&ledger);
    let live = fingerprint(ledger);

    let reopened = Ledger::open(no_auto_snapshots(), log.clone(), ManualClock::default()).unwrap();
    assert_eq!(reopened.recovery().snapshot, Some(Sequence(7)));
    assert_eq!(reopened.recovery().events_replayed, 0);
    assert_eq!(fingerprint(reopened), live);
    let full = Ledger::open(
        Config {
            recovery_uses_snapshots: false,
            ..no_auto_snapshots()
        },
        log,
        ManualClock::default(),
    )
    .unwrap();
    assert_eq!(full.recovery().events_replayed, 7);
    assert_eq!(fingerprint(full), live);
}

#[test]
fn a_damaged_snapshot_falls_back_to_an_older_one_with_a_warning() {
    let log = MemoryLog::new();
    let ledger = Ledger::open(no_auto_snapshots(), log.clone(), ManualClock::default()).unwrap();
    let commands = family_commands();
    for command in &commands[..4] {
        ledger.submit(command.clone()).unwrap().unwrap();
    }
    assert_eq!(ledger.snapshot_now().unwrap(), Sequence(4));
    for command in &commands[4..] {
        ledger.submit(command.clone()).unwrap().unwrap();
    }
    assert_eq!(ledger.snapshot_now().unwrap(), Sequence(6));
    let live = fingerprint(ledger);
    let store = log.snapshots();
    let mut bytes = store.load(Sequence(6)).unwrap().unwrap().to_vec().unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    store.save(Sequence(6), &bytes).unwrap();
    // And one that claims to be beyond the log.
    store.save(Sequence(99), b"not a snapshot").unwrap();

    let reopened = Ledger::open(no_auto_snapshots(), log, ManualClock::default()).unwrap();
    let recovery = reopened.recovery().clone();
    assert_eq!(recovery.snapshot, Some(Sequence(4)));
    assert_eq!(recovery.events_replayed, 2);
    assert_eq!(recovery.warnings.len(), 2, "{:?}", recovery.warnings);
    assert!(recovery.warnings[0].contains("snapshot at 99"));
    assert!(recovery.warnings[1].contains("checksum"));
    assert_eq!(fingerprint(reopened), live);
}

#[test]
fn background_snapshots_follow_the_log_and_old_ones_are_pruned() {
    let log = MemoryLog::new();
    let config = Config {
        snapshot_every_events: 2,
        snapshots_keep: 2,
        ..Config::default()
    };
    let ledger = Ledger::open(config, log.clone(), ManualClock::default()).unwrap();
    let store = log.snapshots();
    for (index, command) in family_commands().into_iter().enumerate() {
        ledger.submit(command).unwrap().unwrap();
        // Give the follower a chance to see each pair of events.
        if index % 2 == 1 {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while store.list().unwrap().last() != Some(&Sequence(index as u64 + 1)) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no snapshot at {}",
                    index + 1
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    assert_eq!(store.list().unwrap(), vec![Sequence(4), Sequence(6)]);
    assert_eq!(ledger.metrics().snapshot_error, None);
    ledger.close().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Full replay == snapshot + tail replay == live state, with snapshots at random points.
    #[test]
    fn snapshots_at_random_points_restore_the_live_state(
        steps in proptest::collection::vec((0..6_u8, 1..40_u32), 5..40),
        snapshot_points in proptest::collection::vec(any::<bool>(), 40),
    ) {
        let log = MemoryLog::new();
        // Tiny shared segments: snapshots are written from replicas whose lists point into
        // several of them, and the live views adopt the writer's every few commands.
        let config = Config {
            shared_segment_records_min: 3,
            ..no_auto_snapshots()
        };
        let ledger = Ledger::open(config, log.clone(), ManualClock::default()).unwrap();
        for command in family_commands() {
            ledger.submit(command).unwrap().unwrap();
        }
        for (index, (kind, cents)) in steps.iter().enumerate() {
            let value = format!("{}.{:02}", cents / 10, cents % 100);
            let command = match kind {
                0 => top_up("snap0001", &value),
                1 => transfer_balance("snap0001", "snap0001", "snas0001", &value),
                2 => transfer_balance("snap0001", "snas0001", "snap0001", &value),
                3 => charge("snas0001", &value),
                4 => charge("snas0002", &value),
                _ => charge("snap0001", &value),
            };
            // Rejections are fine: they change nothing.
            let _ = ledger.submit(command).unwrap();
            if snapshot_points[index] {
                let _ = ledger.snapshot_now();
            }
        }
        let live = fingerprint(ledger);
        let reopened = Ledger::open(no_auto_snapshots(), log.clone(), ManualClock::default()).unwrap();
        prop_assert_eq!(fingerprint(reopened), live);
        let full = fully_replayed(&log);
        prop_assert_eq!(fingerprint(full), live);
    }
}

#[test]
fn low_balance_settings_survive_a_snapshot() {
    let log = MemoryLog::new();
    let ledger = Ledger::open(no_auto_snapshots(), log.clone(), ManualClock::default()).unwrap();
    for command in family_commands() {
        ledger.submit(command).unwrap().unwrap();
    }
    let threshold = Command::SetLowBalanceThreshold(SetLowBalanceThreshold {
        account: key("snap0001"),
        threshold: Some(amount("40")),
    });
    ledger.submit(threshold).unwrap().unwrap();
    ledger.snapshot_now().unwrap();
    let live = fingerprint(ledger);
    let reopened = Ledger::open(no_auto_snapshots(), log, ManualClock::default()).unwrap();
    assert!(reopened.recovery().snapshot.is_some());
    // 57 available → 37: the restored, armed threshold fires.
    let receipt = reopened.submit(charge("snap0001", "20")).unwrap().unwrap();
    assert_eq!(receipt.events, 2, "the charge and its low-balance alert");
    let reopened_again = fingerprint(reopened);
    assert_ne!(reopened_again, live);
}

/// The nice value in a `/proc/.../stat` line (field 19; the name before it may hold spaces).
#[cfg(target_os = "linux")]
fn nice_in(stat: &str) -> Option<i32> {
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(16)?.parse().ok()
}

/// How many of this process's snapshot threads run at `nice`.
#[cfg(target_os = "linux")]
fn snapshot_threads_at(nice: i32) -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    tasks
        .filter_map(|task| {
            let path = task.ok()?.path();
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            // Thread names are cut to 15 bytes: "subledger-snapshot" reads "subledger-snaps".
            if name.trim_end() != "subledger-snaps" {
                return None;
            }
            nice_in(&std::fs::read_to_string(path.join("stat")).ok()?)
        })
        .filter(|found| *found == nice)
        .count()
}

/// The snapshot thread lowers its own priority by the configured niceness (Linux), so that
/// the writer, log and views threads get the cores first; the other threads keep theirs.
#[cfg(target_os = "linux")]
#[test]
fn the_snapshot_thread_runs_at_its_configured_niceness() {
    let base = nice_in(&std::fs::read_to_string("/proc/thread-self/stat").unwrap()).unwrap();
    assert!(
        base <= 12,
        "the tests run at nice {base}: too high to tell 3 and 7 apart"
    );
    let open = |niceness: u8| {
        let config = Config {
            snapshot_niceness: niceness,
            ..no_auto_snapshots()
        };
        Ledger::open(config, MemoryLog::new(), ManualClock::default()).unwrap()
    };
    // Distinct values, used by no other test, so that concurrent tests' threads do not count.
    let (first, second) = (open(7), open(3));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while snapshot_threads_at(base + 7) != 1 || snapshot_threads_at(base + 3) != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot thread at nice {} and one at {}",
            base + 7,
            base + 3
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // This thread, which opened them, is unchanged.
    let now = nice_in(&std::fs::read_to_string("/proc/thread-self/stat").unwrap()).unwrap();
    assert_eq!(now, base);
    first.close().unwrap();
    assert_eq!(snapshot_threads_at(base + 7), 0, "closing ends the thread");
    second.close().unwrap();
}

/// A stopped ledger's snapshot, written with one replay, is the one an open ledger writes:
/// reopening from it gives the live state; older snapshots beyond `keep` go; an empty log and
/// events that break the rules write nothing.
#[test]
fn a_stopped_ledgers_snapshot_equals_an_open_ledgers() {
    let log = MemoryLog::new();
    let ledger = Ledger::open(no_auto_snapshots(), log.clone(), ManualClock::default()).unwrap();
    for command in family_commands() {
        ledger.submit(command).unwrap().unwrap();
    }
    assert_eq!(ledger.snapshot_now().unwrap(), Sequence(6));
    ledger.submit(charge("snas0001", "1.25")).unwrap().unwrap();
    ledger.submit(top_up("snap0001", "7")).unwrap().unwrap();
    let live = fingerprint(ledger);

    let (reader, store) = (log.reader(), log.snapshots());
    // From the snapshot at 6 and the two events after it; then again at the head.
    for _ in 0..2 {
        assert_eq!(
            snapshot_stopped(reader.as_ref(), store.as_ref(), 1).unwrap(),
            Sequence(8)
        );
        assert_eq!(store.list().unwrap(), [Sequence(8)], "keeps one");
    }
    let reopened = Ledger::open(no_auto_snapshots(), log.clone(), ManualClock::default()).unwrap();
    assert_eq!(reopened.recovery().snapshot, Some(Sequence(8)));
    assert_eq!(reopened.recovery().events_replayed, 0);
    assert_eq!(fingerprint(reopened), live);

    let empty = MemoryLog::new();
    assert!(matches!(
        snapshot_stopped(empty.reader().as_ref(), empty.snapshots().as_ref(), 3),
        Err(StoppedSnapshotError::Empty)
    ));
    // A well-chained log whose only event suspends an account nobody opened.
    let mut forged = MemoryLog::new();
    forged
        .append(&Batch {
            first: Sequence(1),
            at: Timestamp(1_000),
            events: vec![Event::AccountSuspended {
                account: AccountId(3),
            }],
        })
        .unwrap();
    forged.sync().unwrap();
    assert!(matches!(
        snapshot_stopped(forged.reader().as_ref(), forged.snapshots().as_ref(), 3),
        Err(StoppedSnapshotError::Recover(OpenError::Replay(_)))
    ));
    assert!(forged.snapshots().list().unwrap().is_empty());
}
