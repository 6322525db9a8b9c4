//! The log thread: answers wait for the sync of every batch they were decided on, small batches
//! stay with the writer, and the failure paths — a failed sync, a batch decided while the log
//! thread fails, a close that drains a failing sync, a log thread that panics. Each test holds
//! the threads where it wants them with a log whose syncs wait for a gate (and may fail or
//! panic) and, where needed, a clock that holds the writer between its failure check and its
//! decision.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use subledger_core::*;
use subledger_engine::*;
use subledger_log::MemoryLog;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);

/// A clock that holds the caller of its `countdown`-th reading (counting from when it is set)
/// until the test lets it go. The writer reads the clock once per batch, after it has checked
/// for a failure and before it decides.
#[derive(Clone)]
struct HeldClock {
    countdown: Arc<AtomicI64>,
    entered: Sender<()>,
    gate: Receiver<()>,
}

impl Clock for HeldClock {
    fn now(&self) -> Timestamp {
        if self.countdown.fetch_sub(1, Ordering::SeqCst) == 1 {
            let _ = self.entered.send(());
            let _ = self.gate.recv();
        }
        Timestamp(1_000)
    }
}

struct Rig {
    faults: subledger_log::FaultSwitch,
    inner: MemoryLog,
    synced: Receiver<()>,
    open_sync: Sender<()>,
    panic_next: Arc<AtomicBool>,
    countdown: Arc<AtomicI64>,
    clock_entered: Receiver<()>,
    open_clock: Sender<()>,
}

/// A ledger on a held log and clock, every batch one command (handed to the log thread when
/// another request waits and it holds at least `log_handoff_commands_min` commands), with a
/// primary holding 10.
fn rig_with(log_handoff_commands_min: usize) -> (Ledger, Rig) {
    let inner = MemoryLog::new();
    let faults = inner.fault_switch();
    let (entered, synced) = crossbeam_channel::unbounded();
    let (open_sync, gate) = crossbeam_channel::unbounded();
    let panic_next = Arc::new(AtomicBool::new(false));
    let log = HeldLog {
        inner: inner.clone(),
        entered,
        gate,
        panic_next: Arc::clone(&panic_next),
    };
    let (clock_sender, clock_entered) = crossbeam_channel::unbounded();
    let (open_clock, clock_gate) = crossbeam_channel::unbounded();
    let countdown = Arc::new(AtomicI64::new(i64::MAX));
    let clock = HeldClock {
        countdown: Arc::clone(&countdown),
        entered: clock_sender,
        gate: clock_gate,
    };
    let config = Config {
        batch_commands_max: 1,
        log_handoff_commands_min,
        ..Config::default()
    };
    let ledger = Ledger::open(config, log, clock).unwrap();
    for command in [open_primary("prim0050"), top_up("prim0050", "10")] {
        open_sync.send(()).unwrap();
        ledger.submit(command).unwrap().unwrap();
        synced.recv_timeout(WAIT).unwrap();
    }
    let rig = Rig {
        faults,
        inner,
        synced,
        open_sync,
        panic_next,
        countdown,
        clock_entered,
        open_clock,
    };
    (ledger, rig)
}

/// [`rig_with`] handing over every batch with a request behind it.
fn rig() -> (Ledger, Rig) {
    rig_with(1)
}

/// Enqueues `command` without waiting for its answer (the answer is dropped unread).
fn enqueue(ledger: &Ledger, command: Command) {
    let mut future = std::pin::pin!(ledger.submit_async(command));
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(future.as_mut().poll(&mut context).is_pending());
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Holds the writer in the sync of a top-up (it syncs that batch itself: nothing waits),
/// queues `first` and `second`, then lets the sync go: the writer decides `first`, sees
/// `second` waiting and hands `first` to the log thread, whose sync the gate now holds.
/// `submit` turns each command into whatever waits for its answer.
fn first_in_the_log_thread<T>(
    ledger: &Ledger,
    rig: &Rig,
    [first, second]: [Command; 2],
    mut submit: impl FnMut(Command) -> T,
    before_release: impl FnOnce(),
) -> (T, T) {
    enqueue(ledger, top_up("prim0050", "0.5"));
    rig.synced.recv_timeout(WAIT).unwrap();
    let first = submit(first);
    wait_until("the first command never queued", || {
        ledger.metrics().queue_depth >= 1
    });
    let second = submit(second);
    wait_until("the second command never queued", || {
        ledger.metrics().queue_depth >= 2
    });
    before_release();
    rig.open_sync.send(()).unwrap();
    rig.synced.recv_timeout(WAIT).unwrap();
    (first, second)
}

/// Spawns a thread that submits `command` and waits for its answer.
/// A command submitted on a thread of its own.
type Submitted = std::thread::JoinHandle<Result<Outcome, EngineError>>;

fn submitter(ledger: &Arc<Ledger>) -> impl FnMut(Command) -> Submitted + '_ {
    move |command| {
        let ledger = Arc::clone(ledger);
        std::thread::spawn(move || ledger.submit(command))
    }
}

fn assert_stopped<T: std::fmt::Debug>(result: &Result<T, EngineError>) {
    assert!(
        matches!(result, Err(EngineError::Stopped { .. })),
        "{result:?}"
    );
}

/// Two charges that each spend the whole balance (10.5), submitted as
/// [`first_in_the_log_thread`] does: the second, decided after the first, is refused.
fn two_full_charges(ledger: &Arc<Ledger>, rig: &Rig) -> (Submitted, Submitted) {
    first_in_the_log_thread(
        ledger,
        rig,
        [charge("prim0050", "10.5"), charge("prim0050", "10.5")],
        submitter(ledger),
        || {},
    )
}

fn balance(ledger: &Ledger) -> Option<Amount> {
    ledger.read(|views| views.account(&key("prim0050")).unwrap().balance)
}

#[test]
fn an_answer_decided_on_a_batch_being_synced_waits_for_that_sync() {
    let (ledger, rig) = rig();
    let ledger = Arc::new(ledger);
    // Two charges that each spend the whole balance: the second, decided on top of the
    // first while the log thread holds its sync, is a rejection for want of funds.
    let (first, second) = two_full_charges(&ledger, &rig);
    wait_until("the second charge was never decided", || {
        ledger.metrics().commands >= 5
    });
    // Neither is answered, and readers see neither.
    std::thread::sleep(Duration::from_millis(50));
    assert!(!first.is_finished() && !second.is_finished());
    assert_eq!(balance(&ledger), Some(amount("10.5")));
    rig.open_sync.send(()).unwrap();
    assert!(first.join().unwrap().unwrap().is_ok());
    let refused = second.join().unwrap().unwrap();
    assert!(
        matches!(refused, Err(Rejection::InsufficientFunds { .. })),
        "{refused:?}"
    );
    assert_eq!(balance(&ledger), Some(Amount::ZERO));
    // The rejection needed no sync of its own.
    assert!(rig.synced.try_recv().is_err());
    assert!(ledger.failure().is_none());
}

#[test]
fn a_small_batch_is_synced_by_the_writer_before_the_next_is_decided() {
    // The default hand-over threshold: one-command batches stay with the writer.
    let (ledger, rig) = rig_with(LOG_HANDOFF_COMMANDS_MIN_DEFAULT);
    let ledger = Arc::new(ledger);
    // The writer syncs the first charge itself (the gate holds that sync): the second waits
    // in the queue, undecided.
    let (first, second) = two_full_charges(&ledger, &rig);
    std::thread::sleep(Duration::from_millis(50));
    let metrics = ledger.metrics();
    assert_eq!((metrics.commands, metrics.queue_depth), (4, 1));
    rig.open_sync.send(()).unwrap();
    assert!(first.join().unwrap().unwrap().is_ok());
    let refused = second.join().unwrap().unwrap();
    assert!(
        matches!(refused, Err(Rejection::InsufficientFunds { .. })),
        "{refused:?}"
    );
    // Four syncs, one per batch with events; the rejection needed none.
    assert_eq!(ledger.metrics().syncs, 4);
}

#[test]
fn a_failed_sync_in_the_log_thread_answers_nothing_decided_on_top_of_it() {
    let (ledger, rig) = rig();
    let ledger = Arc::new(ledger);
    let (first, second) = two_full_charges(&ledger, &rig);
    wait_until("the second charge was never decided", || {
        ledger.metrics().commands >= 5
    });
    rig.faults.fail_next_sync();
    rig.open_sync.send(()).unwrap();
    let failed = first.join().unwrap();
    assert_stopped(&failed);
    // Decided as a rejection on top of the failed batch: never given.
    let stopped = second.join().unwrap();
    assert_stopped(&stopped);
    assert!(ledger.failure().is_some());
    let later = ledger.submit(top_up("prim0050", "1"));
    assert_stopped(&later);
    assert_eq!(balance(&ledger), Some(amount("10.5")));
}

#[test]
fn a_batch_decided_while_the_log_thread_fails_is_neither_logged_nor_answered() {
    let (ledger, rig) = rig();
    let ledger = Arc::new(ledger);
    // Once the held top-up's sync is let go, the writer decides the charge (one clock
    // reading) and hands it over; the clock then holds it at the next batch's reading: after
    // its failure check, before it decides the later top-up.
    let (charge_thread, later_thread) = first_in_the_log_thread(
        &ledger,
        &rig,
        [charge("prim0050", "1"), top_up("prim0050", "1")],
        submitter(&ledger),
        || rig.countdown.store(2, Ordering::SeqCst),
    );
    rig.clock_entered.recv_timeout(WAIT).unwrap();
    // The charge's sync fails; the log thread answers it and has nothing left in flight.
    rig.faults.fail_next_sync();
    rig.open_sync.send(()).unwrap();
    let failed = charge_thread.join().unwrap();
    assert_stopped(&failed);
    std::thread::sleep(Duration::from_millis(50));
    // Were the writer to sync the later batch itself, let that sync through.
    rig.open_sync.send(()).unwrap();
    rig.open_clock.send(()).unwrap();
    let later = later_thread.join().unwrap();
    assert!(
        matches!(later, Err(EngineError::Stopped { .. })),
        "a batch decided on top of a failed one was answered: {later:?}"
    );
    // Nothing after the failed batch reached the log: the held top-up is 3, the charge 4.
    let last = rig.inner.batches().iter().map(Batch::last).max();
    assert_eq!(last, Some(Sequence(4)));
}

#[test]
fn closing_while_the_log_thread_fails_reports_the_failure() {
    let (ledger, rig) = rig();
    let ((), ()) = first_in_the_log_thread(
        &ledger,
        &rig,
        [charge("prim0050", "1"), top_up("prim0050", "1")],
        |command| enqueue(&ledger, command),
        || {},
    );
    // Both are decided and handed over (the second because the log thread holds the first).
    wait_until("the second command was never decided", || {
        ledger.metrics().commands >= 5
    });
    let Rig {
        faults, open_sync, ..
    } = rig;
    let closer = std::thread::spawn(move || ledger.close_into_parts().map(|_| ()));
    std::thread::sleep(Duration::from_millis(50));
    faults.fail_next_sync();
    // The first token lets the failing sync go; the others are spares, which fail to send
    // once the closed ledger has dropped its log.
    for _ in 0..3 {
        let _ = open_sync.send(());
    }
    let closed = closer.join().unwrap();
    assert!(
        matches!(closed, Err(EngineError::Stopped { .. })),
        "a close that lost batches to a failed sync reported {closed:?}"
    );
}

#[test]
fn a_panic_in_the_log_thread_stops_the_ledger_and_tells_its_callers() {
    let (ledger, rig) = rig();
    let ledger = Arc::new(ledger);
    let (first, second) = first_in_the_log_thread(
        &ledger,
        &rig,
        [charge("prim0050", "1"), top_up("prim0050", "1")],
        submitter(&ledger),
        || {},
    );
    // The log thread is in the charge's sync: make it panic there.
    rig.panic_next.store(true, Ordering::SeqCst);
    rig.open_sync.send(()).unwrap();
    for handle in [first, second] {
        let answer = handle.join().unwrap();
        assert!(
            matches!(&answer, Err(EngineError::Stopped { reason }) if reason.contains("log thread")),
            "{answer:?}"
        );
    }
    let failure = ledger.failure().unwrap();
    assert!(failure.contains("the log thread panicked"), "{failure}");
    let later = ledger.submit(top_up("prim0050", "1"));
    assert_stopped(&later);
}
