//! The writer thread: the only code that decides commands and appends to the log.
//!
//! One loop iteration is one batch: take the queued commands and decide each against the state
//! (applying accepted events at once, so later commands in the batch see them). The batch is
//! then made durable — by the log thread, which appends it with any other batches waiting and
//! syncs once for all of them, when it is large and more requests wait; otherwise by the writer
//! itself (see [`Pipeline`]) — and the thread that made it durable announces it to the read
//! gate ([`Gate`]), hands it to the views thread (which updates the read views and publishes
//! to subscribers) and answers every caller. The three threads form a pipeline: while the log
//! thread makes batch N durable, the writer already decides batch N+1 on top of it, and the
//! views thread applies batch N-1. Nothing is acknowledged — not to callers, views or
//! subscribers — before the sync that covers its batch returns, and batches are answered
//! strictly in log order, so an answer decided on top of a batch that never became durable (a
//! rejection for want of funds it spent, say) is never given: that batch's failure stops
//! everything after it. No caller is answered before its batch is announced, and no read
//! starts before the views hold every announced batch (read-your-writes). Any failure of the
//! log, of `apply` or of the views stops the writer for good (fail-stop): the in-memory state
//! may then be ahead of the log, so only reopening from the log is safe.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crossbeam_channel::{Receiver, Sender};
use subledger_core::state::WARM_COMMANDS_MAX;
use subledger_core::{execute, Batch, Command, Event, Executed, Sequence, State, Timestamp};
use subledger_log::EventLog;

use crate::{Clock, Config, EngineError, Outcome, Receipt, Reply, Request, Shared};

/// Commands of one request and where their outcomes go.
type Pending = (Vec<subledger_core::Command>, Reply);

/// Most synced batches waiting for the views thread: bounds how far the writer runs ahead
/// (and the memory that takes) while keeping both threads busy. Readers may not yet see up to
/// this many batches, plus the one being applied and the one the writer is handing over —
/// none of which is acknowledged yet.
pub(crate) const VIEWS_QUEUE_BATCHES_MAX: usize = 2;

/// Most decided batches waiting for the log thread: bounds how far the writer decides ahead of
/// the durable log (and the memory that takes). The log thread appends every waiting batch and
/// covers them with one sync, so under load the batches that queue during a sync are made
/// durable together by the next.
pub(crate) const LOG_QUEUE_BATCHES_MAX: usize = 4;

/// How long an idle writer waits for a request before it looks for a failure recorded by the
/// log or views thread. A thread that panics leaves the batches queued for it (and their
/// callers' replies) in its channel until the writer drops the channel's other end.
const IDLE_FAILURE_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// A decided batch on its way through the log thread (which makes it durable) to the views
/// thread, with the answers it releases.
struct Decided {
    /// `None` when every command of the group commit was rejected (nothing to apply).
    batch: Option<Arc<Batch>>,
    /// Each request's reply and how many outcomes it takes, in order.
    replies: Vec<(usize, Reply)>,
    outcomes: Vec<Outcome>,
    /// The writer's idempotency records, frozen once this batch was decided
    /// ([`crate::Config::shared_segment_records_min`]): the views, once they have applied
    /// the batch, drop their own copies of them and share these (ADR 0007).
    records: Option<subledger_core::SharedRecords>,
}

/// What a read waits for before it starts: the read views holding every batch whose callers
/// have been answered. The thread that made a batch durable announces it here, then answers
/// its callers while the views thread applies it; a read that starts after an answer waits
/// until the views thread has applied that far (read-your-writes). Answering from the views
/// thread, under its write lock, cost every acknowledgement one more thread wake-up (ADR
/// 0005, amendments).
#[derive(Debug)]
pub(crate) struct Gate {
    /// The last sequence number of the batches whose callers may have been answered.
    answered: AtomicU64,
    /// The last sequence number the read views have applied (`u64::MAX` once they stopped:
    /// reads are then best effort, and nobody waits for what will never come).
    applied: AtomicU64,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Gate {
    pub(crate) fn new(applied: Sequence) -> Gate {
        Gate {
            answered: AtomicU64::new(applied.0),
            applied: AtomicU64::new(applied.0),
            lock: Mutex::new(()),
            changed: Condvar::new(),
        }
    }

    /// Before the callers of a batch ending at `last` are answered.
    fn announce(&self, last: Sequence) {
        self.answered.fetch_max(last.0, Ordering::AcqRel);
    }

    /// After the read views applied up to `last` (and released their lock).
    fn applied(&self, last: Sequence) {
        self.advance(last.0);
    }

    /// The views thread stopped: nothing more will be applied.
    fn open(&self) {
        self.advance(u64::MAX);
    }

    fn advance(&self, to: u64) {
        self.applied.fetch_max(to, Ordering::AcqRel);
        // Taken so that a reader between its check and its wait cannot miss the notice.
        let _locked = self.lock.lock();
        self.changed.notify_all();
    }

    /// Waits until the views hold every batch answered so far.
    pub(crate) fn wait_for_answered(&self) {
        let target = self.answered.load(Ordering::Acquire);
        if self.applied.load(Ordering::Acquire) >= target {
            return;
        }
        let Ok(mut locked) = self.lock.lock() else {
            return;
        };
        while self.applied.load(Ordering::Acquire) < target {
            match self.changed.wait(locked) {
                Ok(relocked) => locked = relocked,
                Err(_) => return,
            }
        }
    }
}

/// Opens the gate when the views thread ends, however it ends.
struct GateOpener<'a>(&'a Gate);

impl Drop for GateOpener<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// Passes a durable batch on to the views thread and answers its callers, announcing it first
/// (see [`Gate`]). `Err` when the views thread has stopped: the callers are told `Stopped`.
fn acknowledge(
    shared: &Shared,
    views: &Sender<Decided>,
    mut decided: Decided,
) -> Result<(), String> {
    if let Some(batch) = &decided.batch {
        shared.gate.announce(batch.last());
    }
    let replies = std::mem::take(&mut decided.replies);
    let outcomes = std::mem::take(&mut decided.outcomes);
    match views.send(decided) {
        Ok(()) => {
            answer(replies, outcomes, None);
            Ok(())
        }
        Err(_) => {
            let reason = "the views thread stopped".to_string();
            answer(replies, outcomes, Some(&reason));
            Err(reason)
        }
    }
}

/// The views thread: applies synced batches to the read views in log order and publishes them.
/// Their callers were answered by the thread that made them durable ([`acknowledge`]); reads
/// wait for this thread through the [`Gate`]. A views failure is a fail-stop: it is recorded
/// (the writer stops at its next batch).
fn run_views(shared: &Shared, batches: &Receiver<Decided>) {
    let _guard = PanicGuard(shared, "the views thread panicked");
    let _opener = GateOpener(&shared.gate);
    let mut stopped: Option<String> = None;
    for decided in batches {
        let Decided { batch, records, .. } = decided;
        let batch = batch.filter(|_| stopped.is_none());
        let result = match batch {
            // Everything rejected, or already stopped: nothing to show.
            None => Ok(()),
            Some(batch) => match shared.views.write() {
                Err(_) => Err("the read views lock is poisoned".to_string()),
                Ok(mut views) => {
                    let applied = views
                        .apply_batch(&batch)
                        .map_err(|error| format!("read views refused a committed batch: {error}"));
                    if let (Ok(()), Some(records)) = (&applied, &records) {
                        // Views that number their entries on their own keep them (see
                        // `Views::adopt_money_records`): a memory matter only.
                        views.adopt_money_records(records);
                    }
                    drop(views);
                    if applied.is_ok() {
                        shared.gate.applied(batch.last());
                    }
                    applied.map(|()| crate::subscription::publish(shared, &batch))
                }
            },
        };
        if let Err(reason) = result {
            record_failure(shared, &reason);
            stopped = Some(reason);
            // Reads are best effort from here on; none may wait for what will not come.
            shared.gate.open();
        }
    }
}

/// Records a panic of a pipeline thread as a fail-stop, so that `failure()` says so at once and
/// subscribers are told, rather than callers only seeing their replies dropped.
struct PanicGuard<'a>(&'a Shared, &'static str);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(mut failure) = self.0.failure.lock() {
                failure.get_or_insert_with(|| self.1.to_string());
            }
            crate::subscription::disconnect_all(self.0);
        }
    }
}

/// Records a fail-stop (the first reason wins) and disconnects the subscribers.
fn record_failure(shared: &Shared, reason: &str) {
    tracing::error!(target: "subledger::writer", "fail-stop: {reason}");
    if let Ok(mut failure) = shared.failure.lock() {
        failure.get_or_insert_with(|| reason.to_string());
    }
    crate::subscription::disconnect_all(shared);
}

/// The log thread: appends decided batches in order and makes them durable — every batch
/// waiting when it starts, covered by one sync — then passes them on to the views thread. A
/// failure to append or sync is a fail-stop: the batches of the failed group and every later
/// one are answered `Stopped`, never acknowledged; the ones passed on before it are durable.
///
/// Appending and syncing on one thread at a time is deliberate: with sled 0.34.7 an append made
/// while another thread flushes stalls behind the flush (`docs/benchmarks.md`, "a sync
/// thread"). The log sits behind a mutex only because the writer, when nothing is in flight
/// here, appends and syncs a batch itself (see [`Pipeline`]).
fn run_log(pipeline: &Pipeline, decided: &Receiver<Decided>, shared: &Shared) {
    let mut stopped: Option<String> = None;
    let mut group: Vec<Decided> = Vec::with_capacity(LOG_QUEUE_BATCHES_MAX + 1);
    // Declared after `group` so that, unwinding, it records the failure before the group's
    // replies are dropped: a caller woken by the drop must be told `Stopped`, not `Closed`.
    let _guard = PanicGuard(shared, "the log thread panicked");
    while let Ok(first) = decided.recv() {
        group.push(first);
        // Everything already waiting joins this sync; the bound keeps a writer that decides
        // faster than the disk syncs from growing one group without end.
        while group.len() <= LOG_QUEUE_BATCHES_MAX {
            match decided.try_recv() {
                Ok(more) => group.push(more),
                Err(_) => break,
            }
        }
        if stopped.is_none() {
            let durable = match pipeline.log.lock() {
                Ok(mut log) => make_durable(log.as_mut(), &group, &shared.counters),
                Err(_) => Err("the log lock is poisoned".to_string()),
            };
            if let Err(reason) = durable {
                record_failure(shared, &reason);
                stopped = Some(reason);
            }
        }
        for batch in group.drain(..) {
            match &stopped {
                None => {
                    if let Err(reason) = acknowledge(shared, &pipeline.views, batch) {
                        record_failure(shared, &reason);
                        stopped = Some(reason);
                    }
                }
                Some(_) => answer(batch.replies, batch.outcomes, stopped.as_ref()),
            }
            // Only now may the writer append a batch itself: this one is in the views' queue.
            pipeline.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Appends the group's batches and syncs once. `Err` is fail-stop.
fn make_durable(
    log: &mut dyn EventLog,
    group: &[Decided],
    counters: &crate::Counters,
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let (mut batches, mut events, mut commands) = (0_u64, 0_u64, 0_u64);
    for decided in group {
        let Some(batch) = decided.batch.as_deref() else {
            continue;
        };
        log.append(batch)
            .map_err(|error| format!("log append failed: {error}"))?;
        batches += 1;
        events += batch.events.len() as u64;
        commands += decided.outcomes.len() as u64;
    }
    if batches == 0 {
        return Ok(());
    }
    log.sync()
        .map_err(|error| format!("log sync failed: {error}"))?;
    // Durable from here on.
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    counters.record_commit(micros);
    counters.syncs.fetch_add(1, Ordering::Relaxed);
    counters.batches.fetch_add(batches, Ordering::Relaxed);
    counters
        .commands_appended
        .fetch_add(commands, Ordering::Relaxed);
    counters.events.fetch_add(events, Ordering::Relaxed);
    Ok(())
}

/// What the writer and the log thread share: the log, the views thread's queue, and how many
/// batches the log thread holds.
///
/// A decided batch takes one of two ways to the views thread. When more requests are waiting
/// for the writer and the batch is large (`Config::log_handoff_commands_min`), it goes to the
/// log thread, and the writer decides the next batch while this one is made durable. Otherwise,
/// when the log thread holds nothing, the writer appends and syncs it itself: with nothing to
/// overlap, a hand-over would only add a thread wake-up to every acknowledgement, and a small
/// batch's stragglers handed over behind it take a sync of their own that the next batch then
/// waits for. Either way batches reach the log, and the
/// views' queue, in decision order: the writer takes its own way only when `in_flight` is 0,
/// that is, when the log thread has passed every batch it was given on to the views.
struct Pipeline {
    log: Mutex<Box<dyn EventLog>>,
    views: Sender<Decided>,
    in_flight: AtomicUsize,
}

/// The log and views threads, as the writer holds them.
struct Threads {
    pipeline: Arc<Pipeline>,
    /// [`crate::Config::log_handoff_commands_min`].
    handoff_commands_min: usize,
    to_log: Sender<Decided>,
    log: std::thread::JoinHandle<()>,
    views: ViewsThread,
}

impl Threads {
    fn start(
        log: Box<dyn EventLog>,
        shared: &Arc<Shared>,
        handoff_commands_min: usize,
    ) -> Result<Threads, String> {
        let views = ViewsThread::start(shared)?;
        let pipeline = Arc::new(Pipeline {
            log: Mutex::new(log),
            views: views.sender.clone(),
            in_flight: AtomicUsize::new(0),
        });
        let (to_log, receiver) = crossbeam_channel::bounded(LOG_QUEUE_BATCHES_MAX);
        let (for_thread, shared) = (Arc::clone(&pipeline), Arc::clone(shared));
        let log = std::thread::Builder::new()
            .name("subledger-log".into())
            .spawn(move || run_log(&for_thread, &receiver, &shared))
            .map_err(|error| format!("cannot start the log thread: {error}"))?;
        Ok(Threads {
            pipeline,
            handoff_commands_min: handoff_commands_min.max(1),
            to_log,
            log,
            views,
        })
    }

    /// Makes `decided` durable — itself or through the log thread — and queues it for the views
    /// thread. `Err` is fail-stop; the batch's callers have been answered `Stopped` then.
    fn commit(&self, decided: Decided, more_waiting: bool, shared: &Shared) -> Result<(), String> {
        let refuse = |batch: Decided, reason: &str| {
            answer(batch.replies, batch.outcomes, Some(&reason.to_string()));
            reason.to_string()
        };
        let large = decided.outcomes.len() >= self.handoff_commands_min;
        if (more_waiting && large) || self.pipeline.in_flight.load(Ordering::Acquire) > 0 {
            self.pipeline.in_flight.fetch_add(1, Ordering::AcqRel);
            return self.to_log.send(decided).map_err(|error| {
                self.pipeline.in_flight.fetch_sub(1, Ordering::AcqRel);
                refuse(error.into_inner(), "the log thread stopped")
            });
        }
        // The log thread may have failed while this batch was decided, on top of one of its
        // batches, and have nothing left in flight: such a batch must not reach the log after
        // the failed one, nor be answered. (The failure is recorded before `in_flight` falls,
        // so the load above makes it visible here.)
        if let Some(reason) = shared.failure() {
            return Err(refuse(decided, &reason));
        }
        let durable = match self.pipeline.log.lock() {
            Ok(mut log) => make_durable(
                log.as_mut(),
                std::slice::from_ref(&decided),
                &shared.counters,
            ),
            Err(_) => Err("the log lock is poisoned".to_string()),
        };
        match durable {
            Ok(()) => acknowledge(shared, &self.pipeline.views, decided),
            Err(reason) => Err(refuse(decided, &reason)),
        }
    }

    /// Waits until every batch handed over is durable (or refused), applied and answered, and
    /// gives the log back (`None` if the log thread panicked).
    fn finish(self) -> Option<Box<dyn EventLog>> {
        drop(self.to_log);
        let log_thread = self.log.join();
        // The views thread ends once every sender is gone: the log thread's went with it.
        let log = Arc::into_inner(self.pipeline).map(|pipeline| {
            drop(pipeline.views);
            pipeline.log.into_inner()
        });
        self.views.finish();
        log_thread.ok()?;
        log?.ok()
    }
}

/// Sends each request its outcomes, or `Stopped` once the views have failed.
fn answer(replies: Vec<(usize, Reply)>, outcomes: Vec<Outcome>, stopped: Option<&String>) {
    let mut outcomes = outcomes.into_iter();
    for (count, reply) in replies {
        match stopped {
            None => reply.send(Ok(outcomes.by_ref().take(count).collect())),
            Some(reason) => reply.send(Err(EngineError::Stopped {
                reason: reason.clone(),
            })),
        }
    }
}

/// The views thread, as the log thread holds it.
struct ViewsThread {
    sender: Sender<Decided>,
    handle: std::thread::JoinHandle<()>,
}

impl ViewsThread {
    fn start(shared: &Arc<Shared>) -> Result<ViewsThread, String> {
        let (sender, receiver) = crossbeam_channel::bounded(VIEWS_QUEUE_BATCHES_MAX);
        let shared = Arc::clone(shared);
        let handle = std::thread::Builder::new()
            .name("subledger-views".into())
            .spawn(move || run_views(&shared, &receiver))
            .map_err(|error| format!("cannot start the views thread: {error}"))?;
        Ok(ViewsThread { sender, handle })
    }

    /// Waits until every batch handed over is applied and answered.
    fn finish(self) {
        drop(self.sender);
        let _ = self.handle.join();
    }
}

pub(crate) struct Writer {
    config: Config,
    state: State,
    /// Handed to the log thread when the writer starts.
    log: Option<Box<dyn EventLog>>,
    clock: Box<dyn Clock>,
    shared: Arc<Shared>,
}

impl Writer {
    pub(crate) fn new(
        config: Config,
        state: State,
        log: Box<dyn EventLog>,
        clock: Box<dyn Clock>,
        shared: Arc<Shared>,
    ) -> Writer {
        Writer {
            config,
            state,
            log: Some(log),
            clock,
            shared,
        }
    }

    pub(crate) fn run(mut self, receiver: Receiver<Request>) {
        let batch_max = self.config.batch_commands_max.max(1);
        let mut pending: Vec<Pending> = Vec::new();
        let started = match self.log.take() {
            Some(log) => Threads::start(log, &self.shared, self.config.log_handoff_commands_min),
            None => Err("the log is gone".to_string()),
        };
        let mut pipeline = match started {
            Ok(pipeline) => Some(pipeline),
            Err(reason) => {
                self.fail_stop(reason, &mut pending, &receiver, None);
                return;
            }
        };
        loop {
            // Block for the first request, then take whatever else is queued — waiting up to
            // `batch_wait` for more — until the batch holds `batch_commands_max` commands (a
            // batch submission is never split).
            let first = match receiver.recv_timeout(IDLE_FAILURE_CHECK) {
                Ok(first) => first,
                // Idle: a failure of the log or views thread is acted on now, not at the
                // next request. Stopping drops the channels to those threads, and with them
                // any batch a thread that panicked left in its queue, whose callers are then
                // told the engine stopped instead of waiting for the next request.
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if let Some(reason) = self.shared.failure() {
                        self.fail_stop(reason, &mut pending, &receiver, pipeline.take());
                        return;
                    }
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    if let Some(pipeline) = pipeline.take() {
                        pipeline.finish();
                    }
                    return;
                }
            };
            let deadline = std::time::Instant::now() + self.config.batch_wait;
            let mut close = None;
            let mut next = Some(first);
            let mut commands = 0;
            while let Some(request) = next.take() {
                match request {
                    Request::Commands(batch, reply) => {
                        commands += batch.len();
                        pending.push((batch, reply));
                    }
                    Request::Close(reply) => {
                        close = Some(reply);
                        break;
                    }
                }
                if commands < batch_max {
                    next = receiver
                        .try_recv()
                        .or_else(|_| receiver.recv_deadline(deadline))
                        .ok();
                }
            }
            // A log or views failure is recorded by its thread; stop before deciding more.
            let result = match self.shared.failure() {
                Some(reason) => Err(reason),
                None => match &pipeline {
                    Some(threads) => self.commit(&mut pending, threads, &receiver),
                    None => Err("the log thread is gone".to_string()),
                },
            };
            if let Err(reason) = result {
                self.fail_stop(reason, &mut pending, &receiver, pipeline.take());
                return;
            }
            if let Some(reply) = close {
                let log = pipeline.take().and_then(Threads::finish);
                // A failure while the last batches were made durable: the closer is told the
                // engine stopped (the state may be ahead of the log), as any caller would be.
                let log = log.filter(|_| self.shared.failure().is_none());
                self.close(&receiver, reply, log);
                return;
            }
        }
    }

    /// Decides one batch and has it made durable and passed on to the views thread to apply
    /// and acknowledge (by the log thread when more requests are waiting, see [`Pipeline`]).
    /// `Err` is fail-stop.
    fn commit(
        &mut self,
        pending: &mut Vec<Pending>,
        threads: &Threads,
        requests: &Receiver<Request>,
    ) -> Result<(), String> {
        if pending.is_empty() {
            return Ok(());
        }
        // One instant per batch, never earlier than the last: recorded, so replay needs no clock.
        let at = self.clock.now().max(self.state.last_at());
        // The state may be ahead of the durable log by the batches the log thread holds: this
        // batch continues them, and is never acknowledged before they are durable.
        let first = self.state.last_seq().next();
        let mut events: Vec<Event> = Vec::new();
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(pending.len());
        let commands: Vec<&Command> = pending.iter().flat_map(|(commands, _)| commands).collect();
        for chunk in commands.chunks(WARM_COMMANDS_MAX) {
            self.state.warm(chunk.iter().copied());
            for command in chunk {
                outcomes.push(self.decide_one(at, command, &mut events)?);
            }
        }
        let counters = &self.shared.counters;
        let rejected = outcomes.iter().filter(|outcome| outcome.is_err()).count();
        counters
            .commands
            .fetch_add(outcomes.len() as u64, Ordering::Relaxed);
        counters
            .rejected
            .fetch_add(rejected as u64, Ordering::Relaxed);
        let batch = (!events.is_empty()).then(|| Arc::new(Batch { first, at, events }));
        let replies = pending
            .drain(..)
            .map(|(commands, reply)| (commands.len(), reply))
            .collect();
        // The records of this batch and the ones before, frozen for the views to share: only
        // with a batch to apply, since the views adopt them after applying it.
        let segment = self.config.shared_segment_records_min;
        let due = segment > 0
            && batch.is_some()
            && self
                .state
                .command_index()
                .is_some_and(|index| index.unfrozen_len() >= segment);
        let records = if due {
            self.state.freeze_command_records()
        } else {
            None
        };
        let decided = Decided {
            batch,
            replies,
            outcomes,
            records,
        };
        // Looked at after deciding: what arrived meanwhile is what a hand-over lets the writer
        // decide while this batch is synced.
        threads.commit(decided, !requests.is_empty(), &self.shared)
    }

    /// Decides one command and applies its events (+ the alerts the new state calls for),
    /// adding them to `events`. `Err` (fail-stop) means a rule is broken: an apply failed, and
    /// the batch must not reach the log.
    fn decide_one(
        &mut self,
        at: Timestamp,
        command: &Command,
        events: &mut Vec<Event>,
    ) -> Result<Outcome, String> {
        let executed = execute(&mut self.state, at, command)
            .map_err(|error| format!("invariant check failed, batch not committed: {error}"))?;
        Ok(match executed {
            Ok(Executed::Applied {
                first,
                events: applied,
            }) => {
                let count = u32::try_from(applied.len()).unwrap_or(u32::MAX);
                events.extend(applied);
                Ok(Receipt {
                    first,
                    events: count,
                    at,
                    replayed: false,
                })
            }
            Ok(Executed::AlreadyApplied { seq, at }) => Ok(Receipt {
                first: seq,
                events: 1,
                at,
                replayed: true,
            }),
            Err(rejection) => Err(rejection),
        })
    }

    /// Records the failure, answers the failed batch and everything still queued, and stops.
    ///
    /// Batches handed to the log thread before the failure are finished first: the ones that
    /// become durable are applied and answered, the others answered `Stopped`.
    fn fail_stop(
        &mut self,
        reason: String,
        pending: &mut Vec<Pending>,
        receiver: &Receiver<Request>,
        pipeline: Option<Threads>,
    ) {
        tracing::error!(target: "subledger::writer", "fail-stop: {reason}");
        if let Ok(mut failure) = self.shared.failure.lock() {
            failure.get_or_insert(reason.clone());
        }
        if let Some(pipeline) = pipeline {
            pipeline.finish();
        }
        let stopped = || EngineError::Stopped {
            reason: reason.clone(),
        };
        for (_, reply) in pending.drain(..) {
            reply.send(Err(stopped()));
        }
        while let Ok(request) = receiver.try_recv() {
            if let Request::Commands(_, reply) = request {
                reply.send(Err(stopped()));
            }
        }
        crate::subscription::disconnect_all(&self.shared);
    }

    /// Stops after a `Close` request: later requests get `Closed`; the state and log go back to
    /// the closer (who is told the engine stopped if the log thread panicked and the log is
    /// lost).
    fn close(
        self,
        receiver: &Receiver<Request>,
        reply: crossbeam_channel::Sender<(State, Box<dyn EventLog>)>,
        log: Option<Box<dyn EventLog>>,
    ) {
        while let Ok(request) = receiver.try_recv() {
            if let Request::Commands(_, reply) = request {
                reply.send(Err(EngineError::Closed));
            }
        }
        crate::subscription::disconnect_all(&self.shared);
        if let Some(log) = log {
            let _ = reply.send((self.state, log));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;

    /// Waits in a thread; `true` once it has returned.
    fn waiter(gate: &Arc<Gate>) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
        let done = Arc::new(AtomicBool::new(false));
        let (gate, flag) = (Arc::clone(gate), Arc::clone(&done));
        let handle = std::thread::spawn(move || {
            gate.wait_for_answered();
            flag.store(true, Ordering::SeqCst);
        });
        (done, handle)
    }

    #[test]
    fn a_read_waits_for_every_answered_batch_and_no_longer() {
        let gate = Arc::new(Gate::new(Sequence(5)));
        // Nothing answered beyond what the views hold: no wait.
        gate.wait_for_answered();
        gate.announce(Sequence(9));
        let (done, handle) = waiter(&gate);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !done.load(Ordering::SeqCst),
            "returned before the views held 9"
        );
        gate.applied(Sequence(7));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!done.load(Ordering::SeqCst), "returned at 7");
        gate.applied(Sequence(9));
        handle.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
        // A read after that starts at once; an older announcement changes nothing.
        gate.announce(Sequence(8));
        gate.wait_for_answered();
    }

    #[test]
    fn a_stopped_views_thread_lets_every_reader_go() {
        let gate = Arc::new(Gate::new(Sequence(0)));
        gate.announce(Sequence(3));
        let (done, handle) = waiter(&gate);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!done.load(Ordering::SeqCst));
        drop(GateOpener(&gate));
        handle.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
        gate.announce(Sequence(100));
        gate.wait_for_answered();
    }
}
