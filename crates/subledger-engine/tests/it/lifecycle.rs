//! One ledger at a time: outcomes, idempotent retries, back-pressure, fail-stop, recovery,
//! subscriptions and report queries.

use std::sync::Arc;
use std::time::Duration;

use subledger_core::*;
use subledger_engine::*;
use subledger_log::{EventLog, MemoryLog};
use subledger_views::{TransferKind, TransferQuery};

use crate::support::*;

fn ledger_on(log: MemoryLog, clock: ManualClock, config: Config) -> Ledger {
    Ledger::open(config, log, clock).unwrap()
}

#[test]
fn commands_commit_and_views_show_them() {
    let ledger = Ledger::in_memory(Config::default()).unwrap();
    let receipt = ledger.submit(open_primary("prim0001")).unwrap().unwrap();
    assert_eq!(
        (receipt.first, receipt.events, receipt.replayed),
        (Sequence(1), 1, false)
    );
    ledger
        .submit(create_subaccount("prim0001", "sub00001", false))
        .unwrap()
        .unwrap();
    ledger.submit(top_up("prim0001", "100")).unwrap().unwrap();
    ledger
        .submit(transfer_balance("prim0001", "prim0001", "sub00001", "30.5"))
        .unwrap()
        .unwrap();
    let family = ledger.read(|views| views.family(&key("prim0001"))).unwrap();
    assert_eq!(family.primary.balance, Some(amount("69.5")));
    assert_eq!(family.subaccounts[0].balance, Some(amount("30.5")));
    assert_eq!(family.total_balance.to_string(), "100");
    let rejected = ledger
        .submit(transfer_balance("prim0001", "sub00001", "prim0001", "31"))
        .unwrap();
    assert_eq!(
        rejected,
        Err(Rejection::InsufficientFunds {
            available: amount("30.5"),
            requested: amount("31")
        })
    );
    let metrics = ledger.metrics();
    assert_eq!(
        (metrics.commands, metrics.rejected, metrics.events),
        (5, 1, 4)
    );
    // One batch per submission; the rejected one had nothing to append.
    assert_eq!((metrics.batches, metrics.commands_appended), (4, 4));
    assert_eq!(metrics.last_seq, Sequence(4));
}

#[test]
fn a_retried_command_returns_the_original_receipt_and_changes_nothing() {
    let clock = ManualClock::new(Timestamp(1_000));
    let ledger = ledger_on(MemoryLog::new(), clock.clone(), Config::default());
    ledger.submit(open_primary("prim0002")).unwrap().unwrap();
    let command = top_up("prim0002", "10");
    let original = ledger.submit(command.clone()).unwrap().unwrap();
    clock.advance(5_000);
    let retry = ledger.submit(command.clone()).unwrap().unwrap();
    assert!(retry.replayed);
    assert_eq!((retry.first, retry.at), (original.first, original.at));
    let balance = ledger.read(|views| views.account(&key("prim0002")).unwrap().balance);
    assert_eq!(balance, Some(amount("10")));
    let Command::TopUp(mut changed) = command else {
        unreachable!()
    };
    changed.amount = amount("11");
    let conflict = ledger.submit(Command::TopUp(changed.clone())).unwrap();
    assert_eq!(
        conflict,
        Err(Rejection::IdempotencyConflict { id: changed.id })
    );
}

#[test]
fn a_full_queue_answers_busy_and_nothing_is_acknowledged_before_sync() {
    let (entered_sender, entered) = crossbeam_channel::unbounded();
    let (open_gate, gate) = crossbeam_channel::unbounded();
    let log = HeldLog {
        inner: MemoryLog::new(),
        entered: entered_sender,
        gate,
        panic_next: Arc::default(),
    };
    let config = Config {
        queue_requests_max: 2,
        batch_commands_max: 1,
        ..Config::default()
    };
    let ledger = Arc::new(Ledger::open(config, log, SystemClock).unwrap());
    let submitter = |command: Command| {
        let ledger = Arc::clone(&ledger);
        std::thread::spawn(move || ledger.submit(command))
    };
    let first = submitter(open_primary("prim0003"));
    entered.recv_timeout(Duration::from_secs(10)).unwrap();
    // The writer holds the first command inside sync: it is neither acknowledged nor visible.
    assert!(!first.is_finished());
    assert!(ledger
        .read(|views| views.account(&key("prim0003")))
        .is_none());
    let queued: Vec<_> = (0..2).map(|_| submitter(top_up("prim0003", "1"))).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ledger.metrics().queue_depth < 2 {
        assert!(std::time::Instant::now() < deadline, "queue never filled");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        ledger.submit(top_up("prim0003", "1")),
        Err(EngineError::Busy)
    );
    for _ in 0..3 {
        open_gate.send(()).unwrap();
    }
    assert!(first.join().unwrap().unwrap().is_ok());
    for handle in queued {
        assert!(handle.join().unwrap().unwrap().is_ok());
    }
    let balance = ledger.read(|views| views.account(&key("prim0003")).unwrap().balance);
    assert_eq!(balance, Some(amount("2")));
}

#[test]
fn a_failed_sync_stops_the_writer_and_the_log_recovers_it() {
    let log = MemoryLog::new();
    let faults = log.fault_switch();
    let ledger = ledger_on(log.clone(), ManualClock::default(), Config::default());
    ledger.submit(open_primary("prim0004")).unwrap().unwrap();
    faults.fail_next_sync();
    let unknown = top_up("prim0004", "5");
    let failed = ledger.submit(unknown.clone());
    assert!(
        matches!(failed, Err(EngineError::Stopped { .. })),
        "{failed:?}"
    );
    let later = ledger.submit(top_up("prim0004", "1"));
    assert!(
        matches!(later, Err(EngineError::Stopped { .. })),
        "{later:?}"
    );
    assert!(ledger.failure().is_some());
    // The views never saw the unacknowledged batch.
    let balance = ledger.read(|views| views.account(&key("prim0004")).unwrap().balance);
    assert_eq!(balance, Some(Amount::ZERO));
    drop(ledger);
    // The append reached this log before the sync failed, so reopening finds the command;
    // resubmitting the same id tells the caller so without applying it twice.
    let reopened = ledger_on(log, ManualClock::default(), Config::default());
    let retry = reopened.submit(unknown).unwrap().unwrap();
    assert!(retry.replayed);
    let balance = reopened.read(|views| views.account(&key("prim0004")).unwrap().balance);
    assert_eq!(balance, Some(amount("5")));
}

#[test]
fn reopening_rebuilds_the_same_state_and_views() {
    let log = MemoryLog::new();
    let ledger = ledger_on(
        log.clone(),
        ManualClock::new(Timestamp(7)),
        Config::default(),
    );
    for command in [
        open_primary("prim0005"),
        create_subaccount("prim0005", "sub00005", false),
        create_subaccount("prim0005", "sub00006", true),
        top_up("prim0005", "50"),
        transfer_balance("prim0005", "prim0005", "sub00005", "20"),
        charge("sub00006", "5"),
        charge("sub00005", "2.25"),
    ] {
        ledger.submit(command).unwrap().unwrap();
    }
    // The live read views keep no copy of the writer's state (ADR 0008): their hash, from
    // their directory and histories, equals that of views rebuilt by replaying the log.
    assert!(ledger.read(|views| views.is_lean() && views.state().is_none()));
    let views_hash = ledger.read(|views| views.views_hash());
    let (state, _log) = ledger.close_into_parts().unwrap();
    let reopened = ledger_on(log, ManualClock::default(), Config::default());
    assert_eq!(reopened.read(|views| views.views_hash()), views_hash);
    let (reopened_state, _) = reopened.close_into_parts().unwrap();
    assert_eq!(reopened_state.state_hash(), state.state_hash());
}

#[test]
fn a_family_subscription_follows_new_subaccounts_and_ignores_strangers() {
    let ledger = Ledger::in_memory(Config::default()).unwrap();
    ledger.submit(open_primary("prim0006")).unwrap().unwrap();
    ledger.submit(open_primary("prim0007")).unwrap().unwrap();
    let mut feed = ledger.subscribe(Filter::Family(key("prim0006"))).unwrap();
    assert_eq!(feed.start(), Sequence(2));
    ledger
        .submit(create_subaccount("prim0006", "sub00007", false))
        .unwrap()
        .unwrap();
    ledger.submit(top_up("prim0007", "9")).unwrap().unwrap();
    ledger.submit(top_up("prim0006", "3")).unwrap().unwrap();
    ledger
        .submit(transfer_balance("prim0006", "prim0006", "sub00007", "1"))
        .unwrap()
        .unwrap();
    let kinds: Vec<(u64, &str)> = (0..3)
        .map(|_| {
            let notice = feed.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
            (notice.seq.0, notice.event.kind())
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (3, "subaccount_created"),
            (5, "topped_up"),
            (6, "balance_transferred")
        ]
    );
    assert_eq!(feed.recv_timeout(Duration::from_millis(50)).unwrap(), None);
}

#[test]
fn a_subscriber_that_falls_behind_is_ended_with_its_resume_point() {
    let config = Config {
        subscriber_batches_max: 2,
        ..Config::default()
    };
    let ledger = Ledger::in_memory(config).unwrap();
    let mut feed = ledger.subscribe(Filter::All).unwrap();
    ledger.submit(open_primary("prim0008")).unwrap().unwrap();
    for _ in 0..4 {
        ledger.submit(top_up("prim0008", "1")).unwrap().unwrap();
    }
    assert_eq!(feed.recv().unwrap().seq, Sequence(1));
    assert_eq!(feed.recv().unwrap().seq, Sequence(2));
    assert_eq!(
        feed.recv(),
        Err(SubscriptionError::Ended {
            last_seq: Sequence(2)
        })
    );
    // The rest is in the log, from the resume point on.
    let rest: Vec<u64> = ledger
        .log_reader()
        .read_from(Sequence(3))
        .unwrap()
        .flat_map(|batch| {
            batch
                .unwrap()
                .iter()
                .map(|(seq, _)| seq.0)
                .collect::<Vec<_>>()
        })
        .filter(|seq| *seq >= 3)
        .collect();
    assert_eq!(rest, vec![3, 4, 5]);
}

#[test]
fn subscribing_to_an_unknown_account_is_refused() {
    let ledger = Ledger::in_memory(Config::default()).unwrap();
    assert_eq!(
        ledger
            .subscribe(Filter::Account(key("nobody00")))
            .unwrap_err(),
        SubscriptionError::UnknownAccount(key("nobody00"))
    );
}

#[test]
fn transfer_reports_filter_by_date_and_subaccount_newest_first_with_cursor() {
    let clock = ManualClock::new(Timestamp(1_000));
    let ledger = ledger_on(MemoryLog::new(), clock.clone(), Config::default());
    for command in [
        open_primary("prim0009"),
        create_subaccount("prim0009", "suba0009", false),
        create_subaccount("prim0009", "subb0009", false),
        top_up("prim0009", "100"),
    ] {
        ledger.submit(command).unwrap().unwrap();
    }
    // Five transfers at instants 2000, 3000, …, 6000, alternating subaccounts.
    for step in 0..5_i64 {
        clock.set(Timestamp(2_000 + step * 1_000));
        let to = if step % 2 == 0 {
            "suba0009"
        } else {
            "subb0009"
        };
        ledger
            .submit(transfer_balance("prim0009", "prim0009", to, "1"))
            .unwrap()
            .unwrap();
    }
    let query = |query: TransferQuery| {
        ledger
            .read(|views| views.transfers(&key("prim0009"), TransferKind::Balance, &query))
            .unwrap()
    };
    let all = query(TransferQuery::default());
    let instants: Vec<i64> = all.items.iter().map(|item| item.at.0).collect();
    assert_eq!(instants, vec![6_000, 5_000, 4_000, 3_000, 2_000]);
    assert_eq!(all.next, None);
    let window = query(TransferQuery {
        start: Some(Timestamp(3_000)),
        end: Some(Timestamp(5_000)),
        ..TransferQuery::default()
    });
    let instants: Vec<i64> = window.items.iter().map(|item| item.at.0).collect();
    assert_eq!(
        instants,
        vec![4_000, 3_000],
        "start inclusive, end exclusive"
    );
    let only_a = query(TransferQuery {
        subaccounts: vec![key("suba0009")],
        ..TransferQuery::default()
    });
    assert!(only_a.items.iter().all(|item| item.to == key("suba0009")));
    assert_eq!(only_a.items.len(), 3);
    let first_page = query(TransferQuery {
        limit: Some(2),
        ..TransferQuery::default()
    });
    assert_eq!(first_page.items.len(), 2);
    // New commits do not shift the cursor's pages.
    clock.set(Timestamp(9_000));
    ledger
        .submit(transfer_balance("prim0009", "prim0009", "suba0009", "1"))
        .unwrap()
        .unwrap();
    let second_page = query(TransferQuery {
        limit: Some(2),
        before: first_page.next,
        ..TransferQuery::default()
    });
    let instants: Vec<i64> = second_page.items.iter().map(|item| item.at.0).collect();
    assert_eq!(instants, vec![4_000, 3_000]);
    assert!(second_page
        .items
        .iter()
        .all(|item| item.primary == key("prim0009")));
    let credit = query_credit(&ledger);
    assert!(credit.is_empty());
}

fn query_credit(ledger: &Ledger) -> Vec<subledger_views::TransferSnapshot> {
    ledger
        .read(|views| {
            views.transfers(
                &key("prim0009"),
                TransferKind::Credit,
                &TransferQuery::default(),
            )
        })
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_api_does_not_block_the_runtime() {
    let ledger = Arc::new(Ledger::in_memory(Config::default()).unwrap());
    ledger
        .submit_async(open_primary("prim0010"))
        .await
        .unwrap()
        .unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move { ledger.submit_async(top_up("prim0010", "0.01")).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap().unwrap();
    }
    let balance = ledger.read(|views| views.account(&key("prim0010")).unwrap().balance);
    assert_eq!(balance, Some(amount("0.5")));
}

#[test]
fn a_batch_submission_gets_one_outcome_per_command_in_order() {
    let ledger = Ledger::in_memory(Config::default()).unwrap();
    let outcomes = ledger
        .submit_batch(vec![
            open_primary("prim0011"),
            top_up("prim0011", "5"),
            charge("prim0011", "6"),
            charge("prim0011", "4"),
            top_up("nobody00", "1"),
        ])
        .unwrap();
    assert_eq!(outcomes.len(), 5);
    assert_eq!(
        outcomes[0].as_ref().map(|receipt| receipt.first),
        Ok(Sequence(1))
    );
    assert_eq!(
        outcomes[1].as_ref().map(|receipt| receipt.first),
        Ok(Sequence(2))
    );
    assert!(matches!(
        outcomes[2],
        Err(Rejection::InsufficientFunds { .. })
    ));
    assert_eq!(
        outcomes[3].as_ref().map(|receipt| receipt.first),
        Ok(Sequence(3))
    );
    assert_eq!(
        outcomes[4],
        Err(Rejection::UnknownAccount {
            key: key("nobody00")
        })
    );
    let balance = ledger.read(|views| views.account(&key("prim0011")).unwrap().balance);
    assert_eq!(balance, Some(amount("1")));
    let too_many = vec![top_up("prim0011", "1"); REQUEST_COMMANDS_MAX + 1];
    assert_eq!(
        ledger.submit_batch(too_many),
        Err(EngineError::TooManyCommands {
            max: REQUEST_COMMANDS_MAX
        })
    );
    assert_eq!(ledger.submit_batch(Vec::new()), Ok(Vec::new()));
}

#[test]
fn the_writer_waits_up_to_batch_wait_to_fill_a_batch() {
    let config = Config {
        batch_wait: Duration::from_secs(20),
        batch_commands_max: 5,
        ..Config::default()
    };
    let ledger = Arc::new(Ledger::in_memory(config).unwrap());
    // A full batch is committed at once, without waiting.
    let setup = vec![
        open_primary("prim0012"),
        top_up("prim0012", "1"),
        top_up("prim0012", "1"),
        top_up("prim0012", "1"),
        top_up("prim0012", "1"),
    ];
    let started = std::time::Instant::now();
    assert!(ledger
        .submit_batch(setup)
        .unwrap()
        .iter()
        .all(Result::is_ok));
    assert!(started.elapsed() < Duration::from_secs(10));
    // Five single submissions arriving one by one are committed together.
    let submitters: Vec<_> = (0..5)
        .map(|index| {
            let ledger = Arc::clone(&ledger);
            std::thread::sleep(Duration::from_millis(if index == 0 { 0 } else { 20 }));
            std::thread::spawn(move || ledger.submit(top_up("prim0012", "1")))
        })
        .collect();
    for submitter in submitters {
        assert!(submitter.join().unwrap().unwrap().is_ok());
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a full batch does not wait out the deadline"
    );
    assert_eq!(ledger.metrics().batches, 2);
}

/// A log with `transfer`'s event committed twice (a forged or damaged log), the second time
/// in a batch at `at`, after a snapshot at the first one when `snapshot` is set.
fn log_with_a_repeated_command(at: Timestamp, snapshot: bool) -> (MemoryLog, Sequence) {
    let log = MemoryLog::new();
    let ledger = ledger_on(
        log.clone(),
        ManualClock::new(Timestamp(10_000)),
        Config::default(),
    );
    ledger.submit(open_primary("prim0001")).unwrap().unwrap();
    ledger
        .submit(create_subaccount("prim0001", "sub00001", false))
        .unwrap()
        .unwrap();
    ledger.submit(top_up("prim0001", "100")).unwrap().unwrap();
    ledger
        .submit(transfer_balance("prim0001", "prim0001", "sub00001", "1"))
        .unwrap()
        .unwrap();
    if snapshot {
        ledger.snapshot_now().unwrap();
    }
    ledger
        .submit(transfer_balance("prim0001", "prim0001", "sub00001", "2"))
        .unwrap()
        .unwrap();
    ledger.close().unwrap();
    let batches = log.batches();
    let repeated = batches[3].events[0].clone();
    assert!(matches!(repeated, Event::BalanceTransferred { .. }));
    let forged = Batch {
        first: Sequence(6),
        at,
        events: vec![repeated],
    };
    let mut writer = log.clone();
    writer.append(&forged).unwrap();
    writer.sync().unwrap();
    (log, Sequence(6))
}

/// Opens `log` from its snapshot, or by a full replay.
fn reopened(log: MemoryLog, uses_snapshots: bool) -> Result<Ledger, OpenError> {
    let config = Config {
        recovery_uses_snapshots: uses_snapshots,
        ..Config::default()
    };
    Ledger::open(config, log, ManualClock::new(Timestamp(10_000)))
}

/// `opened` failed on a command id applied twice, at `repeated_at`.
fn refused_as_repeated_at(opened: Result<Ledger, OpenError>, repeated_at: Sequence) {
    match opened {
        Err(OpenError::Replay(error)) => {
            assert_eq!(error.seq, repeated_at, "{error}");
            assert!(
                matches!(error.fault, ApplyFault::DuplicateCommand(_)),
                "{error}"
            );
        }
        other => panic!("expected a replay error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_command_id_repeated_in_the_log_stops_recovery_at_its_own_sequence_number() {
    for (snapshot, uses_snapshots) in [(false, false), (true, true), (true, false)] {
        let (log, repeated_at) = log_with_a_repeated_command(Timestamp(99_999), snapshot);
        refused_as_repeated_at(reopened(log, uses_snapshots), repeated_at);
    }
}

#[test]
fn an_event_wrong_in_two_ways_gets_the_error_a_one_thread_replay_gives() {
    // The repeated command's batch also goes back in time: `State::apply` checks time before
    // it records the command, so that is the error, at the same sequence number.
    let (log, repeated_at) = log_with_a_repeated_command(Timestamp(1), false);
    match Ledger::open(Config::default(), log, ManualClock::new(Timestamp(10_000))) {
        Err(OpenError::Replay(error)) => {
            assert_eq!(error.seq, repeated_at);
            assert_eq!(error.fault, ApplyFault::TimeGoesBackwards);
        }
        other => panic!("expected a replay error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_repeated_command_id_comes_before_a_later_bad_event() {
    // Repeated ids are found when the replay's index is entered in bulk, after the applier
    // has failed on a later event: the earlier error must still be the one reported.
    for uses_snapshots in [false, true] {
        let (log, repeated_at) = log_with_a_repeated_command(Timestamp(99_999), true);
        let later = log.batches()[4].events[0].clone();
        let mut writer = log.clone();
        writer
            .append(&Batch {
                first: repeated_at.next(),
                at: Timestamp(1),
                events: vec![later],
            })
            .unwrap();
        writer.sync().unwrap();
        refused_as_repeated_at(reopened(log, uses_snapshots), repeated_at);
    }
}

#[test]
fn secret_hashes_are_read_from_the_log_live_after_a_replay_and_after_a_snapshot() {
    let log = MemoryLog::new();
    let ledger = ledger_on(
        log.clone(),
        ManualClock::new(Timestamp(5_000)),
        Config::default(),
    );
    let Command::OpenPrimary(opened) = open_primary("prim0001") else {
        unreachable!()
    };
    let first = opened.secret.clone();
    ledger
        .submit(Command::OpenPrimary(opened))
        .unwrap()
        .unwrap();
    let second = NewSecret {
        hash: SecretHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2Vjb25k$c2Vjb25kaGFzaA".into())
            .unwrap(),
        ..new_secret()
    };
    ledger
        .submit(Command::CreateSecret(CreateSecret {
            account: key("prim0001"),
            secret: second.clone(),
        }))
        .unwrap()
        .unwrap();
    let both = vec![
        (first.id, first.hash.clone()),
        (second.id, second.hash.clone()),
    ];
    assert_eq!(
        ledger.secret_hashes(&key("prim0001")).unwrap(),
        Some(both.clone())
    );
    assert_eq!(ledger.secret_hashes(&key("nobody01")).unwrap(), None);
    // The views keep where the hashes are, not the hashes.
    ledger.read(|views| {
        let places: Vec<_> = views
            .secrets(&key("prim0001"))
            .unwrap()
            .iter()
            .map(|secret| secret.hash.clone())
            .collect();
        assert_eq!(
            places,
            vec![
                subledger_views::StoredHash::InLog(Sequence(1)),
                subledger_views::StoredHash::InLog(Sequence(2))
            ]
        );
    });
    ledger.snapshot_now().unwrap();
    ledger
        .submit(Command::RevokeSecret(RevokeSecret {
            account: key("prim0001"),
            secret: first.id,
        }))
        .unwrap()
        .unwrap();
    ledger.close().unwrap();
    for uses_snapshots in [true, false] {
        let config = Config {
            recovery_uses_snapshots: uses_snapshots,
            ..Config::default()
        };
        let reopened = ledger_on(log.clone(), ManualClock::new(Timestamp(5_000)), config);
        assert_eq!(
            reopened.secret_hashes(&key("prim0001")).unwrap(),
            Some(vec![(second.id, second.hash.clone())])
        );
        reopened.close().unwrap();
    }
}
