//! Many threads and tokio tasks submitting at once give the same final state as deciding the
//! committed commands one by one in their committed order.

use std::sync::Arc;

use proptest::prelude::*;
use subledger_core::*;
use subledger_engine::*;
use subledger_log::MemoryLog;

use crate::support::*;

const PRIMARIES: [&str; 2] = ["conc0001", "conc0002"];
const SUBACCOUNTS: [[&str; 3]; 2] = [
    ["cons0011", "cons0012", "cons0013"],
    ["cons0021", "cons0022", "cons0023"],
];

/// A random money command over the two families (some will be rejected).
fn random_command(rng: &mut proptest::test_runner::TestRng) -> Command {
    let family = rng.random_range(0..2);
    let primary = PRIMARIES[family];
    let sub = SUBACCOUNTS[family][rng.random_range(0..3)];
    let value = format!(
        "{}.{:02}",
        rng.random_range(0..20),
        rng.random_range(0..100)
    );
    match rng.random_range(0..10) {
        0 => top_up(primary, "25"),
        1..=4 => transfer_balance(primary, primary, sub, &value),
        5..=6 => transfer_balance(primary, sub, primary, &value),
        7 => charge(sub, &value),
        8 => charge(primary, &value),
        _ => Command::TransferCredit(Transfer {
            id: command_id(),
            primary: key(primary),
            from: key(primary),
            to: key(sub),
            amount: amount("0.5"),
            reference: String::new(),
        }),
    }
}

#[test]
fn concurrent_submitters_equal_sequential_application_of_the_committed_order() {
    concurrent_submitters_check(LOG_HANDOFF_COMMANDS_MIN_DEFAULT);
}

/// The same with every batch that has requests behind it handed to the log thread (the
/// writer deciding on top of batches not yet durable).
#[test]
fn concurrent_submitters_through_the_log_thread_equal_sequential_application() {
    concurrent_submitters_check(1);
}

fn concurrent_submitters_check(log_handoff_commands_min: usize) {
    let log = MemoryLog::new();
    let config = Config {
        batch_commands_max: 64,
        log_handoff_commands_min,
        // Tiny shared segments: the views adopt the writer's records every few batches.
        shared_segment_records_min: 16,
        ..Config::default()
    };
    let ledger = Arc::new(Ledger::open(config, log.clone(), SystemClock).unwrap());
    for (family, primary) in PRIMARIES.iter().enumerate() {
        ledger.submit(open_primary(primary)).unwrap().unwrap();
        ledger
            .submit(Command::SetCreditLine(SetCreditLine {
                primary: key(primary),
                credit_line: amount("-100"),
            }))
            .unwrap()
            .unwrap();
        for sub in SUBACCOUNTS[family] {
            ledger
                .submit(create_subaccount(primary, sub, false))
                .unwrap()
                .unwrap();
        }
        ledger.submit(top_up(primary, "200")).unwrap().unwrap();
    }
    let per_submitter = 300;
    let threads: Vec<_> = (0..4_u8)
        .map(|seed| {
            let ledger = Arc::clone(&ledger);
            std::thread::spawn(move || {
                let mut rng = proptest::test_runner::TestRng::from_seed(
                    proptest::test_runner::RngAlgorithm::ChaCha,
                    &[seed; 32],
                );
                (0..per_submitter)
                    .map(|_| {
                        let command = random_command(&mut rng);
                        let outcome = ledger.submit(command.clone()).unwrap();
                        (command, outcome)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let task_results = runtime.block_on(async {
        let tasks: Vec<_> = (10..14_u8)
            .map(|seed| {
                let ledger = Arc::clone(&ledger);
                tokio::spawn(async move {
                    let mut rng = proptest::test_runner::TestRng::from_seed(
                        proptest::test_runner::RngAlgorithm::ChaCha,
                        &[seed; 32],
                    );
                    let mut results = Vec::new();
                    for _ in 0..per_submitter {
                        let command = random_command(&mut rng);
                        let outcome = ledger.submit_async(command.clone()).await.unwrap();
                        results.push((command, outcome));
                    }
                    results
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    });
    let mut results: Vec<(Command, Outcome)> = threads
        .into_iter()
        .flat_map(|handle| handle.join().unwrap())
        .collect();
    results.extend(task_results);
    assert_eq!(results.len(), 8 * per_submitter);
    let accepted = results
        .iter()
        .filter(|(_, outcome)| outcome.is_ok())
        .count();
    assert!(
        accepted > results.len() / 4,
        "the workload should mostly commit: {accepted}"
    );
    assert!(
        accepted < results.len(),
        "the workload should include rejections"
    );

    let views_hash = ledger.read(|views| views.views_hash());
    let ledger = Arc::into_inner(ledger).expect("all submitters finished");
    let (live, _) = ledger.close_into_parts().unwrap();
    live.check_invariants().unwrap();

    // 1. Replaying the log gives the live state.
    let batches = log.batches();
    let mut replayed = State::new(Policy::default());
    let mut views = subledger_views::Views::new();
    for batch in &batches {
        replayed.apply_batch(batch).unwrap();
        views.apply_batch(batch).unwrap();
    }
    assert_eq!(replayed.state_hash(), live.state_hash());
    assert_eq!(views.views_hash(), views_hash);

    // 2. Deciding the committed commands one at a time, in committed order, gives the same
    //    events and the same state: the batching and the interleaving changed nothing.
    let mut committed: Vec<(Sequence, &Command)> = results
        .iter()
        .filter_map(|(command, outcome)| match outcome {
            Ok(receipt) if receipt.events > 0 => Some((receipt.first, command)),
            _ => None,
        })
        .collect();
    committed.sort_by_key(|(seq, _)| *seq);
    let logged: Vec<(Sequence, Timestamp, Event)> = batches
        .iter()
        .flat_map(|batch| {
            batch
                .iter()
                .map(|(seq, event)| (seq, batch.at, event.clone()))
        })
        .collect();
    let setup_events = logged.len() - committed.len();
    let mut sequential = State::new(Policy::default());
    for (seq, at, event) in &logged[..setup_events] {
        sequential.apply(*seq, *at, event).unwrap();
    }
    for ((seq, command), (logged_seq, at, logged_event)) in
        committed.iter().zip(&logged[setup_events..])
    {
        assert_eq!(seq, logged_seq);
        let Ok(Decision::Apply(events)) = decide(&sequential, command) else {
            panic!("command committed at {seq} is refused sequentially")
        };
        assert_eq!(events.as_slice(), std::slice::from_ref(logged_event));
        sequential.apply(*seq, *at, &events[0]).unwrap();
    }
    assert_eq!(sequential.state_hash(), live.state_hash());

    // 3. Money is conserved per family: Σ balances = Σ top-ups − Σ charges.
    for (family, primary) in PRIMARIES.iter().enumerate() {
        let mut expected: i128 = 0;
        for (_, _, event) in &logged {
            match event {
                Event::ToppedUp {
                    account, amount, ..
                } if live.account(*account).unwrap().key == key(primary) => {
                    expected += amount.units();
                }
                Event::Charged { payer, amount, .. } => {
                    let payer = live.account(*payer).unwrap();
                    let owner = payer
                        .primary()
                        .map_or(payer.key, |id| live.account(id).unwrap().key);
                    if owner == key(primary) {
                        expected -= amount.units();
                    }
                }
                _ => {}
            }
        }
        let members = std::iter::once(primary).chain(SUBACCOUNTS[family].iter());
        let total: i128 = members
            .map(
                |member| match live.account_by_key(&key(member)).unwrap().1.funding() {
                    Funding::Own { balance, .. } => balance.units(),
                    Funding::Shared => 0,
                },
            )
            .sum();
        assert_eq!(total, expected, "family {primary}");
    }
}

/// The views are a step behind the writer (a pipeline), but never behind an acknowledgement:
/// once `submit` returns, the caller's own change is visible to every reader.
#[test]
fn every_acknowledged_change_is_already_in_the_read_views() {
    let ledger = Arc::new(Ledger::open(Config::default(), MemoryLog::new(), SystemClock).unwrap());
    let primaries = ["ryow0001", "ryow0002", "ryow0003", "ryow0004"];
    for primary in primaries {
        ledger.submit(open_primary(primary)).unwrap().unwrap();
    }
    let threads: Vec<_> = primaries
        .iter()
        .map(|primary| {
            let ledger = Arc::clone(&ledger);
            let primary = key(primary);
            std::thread::spawn(move || {
                for round in 1..=300_i128 {
                    ledger
                        .submit(top_up(primary.as_str(), "1"))
                        .unwrap()
                        .unwrap();
                    let seen = ledger.read(|views| views.account(&primary).unwrap().balance);
                    assert_eq!(
                        seen,
                        Some(Amount::from_units(round * 100_000_000).unwrap()),
                        "the acknowledged top-up {round} is visible"
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}
