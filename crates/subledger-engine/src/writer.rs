//! The writer thread: the only code that decides commands and appends to the log.
//!
//! One loop iteration is one group commit: take a batch of queued commands, decide each against
//! the state (applying accepted events at once, so later commands in the batch see them),
//! append the batch, sync, and hand it to the views thread, which takes the views' write lock,
//! answers every caller, updates the read views and publishes to subscribers. The two threads
//! form a pipeline: while the views thread applies batch N, the writer already decides and
//! syncs batch N+1. Nothing is acknowledged — not to callers, views or subscribers — before the
//! sync returns, and no caller is answered before the lock that hides its batch from readers
//! until it is applied is held (read-your-writes). Any failure of the
//! log, of `apply` or of the views stops the writer for good (fail-stop): the in-memory state
//! may then be ahead of the log, so only reopening from the log is safe.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use subledger_core::state::WARM_COMMANDS_MAX;
use subledger_core::{execute, Batch, Command, Event, Executed, State, Timestamp};
use subledger_log::EventLog;

use crate::{Clock, Config, EngineError, Outcome, Receipt, Reply, Request, Shared};

/// Commands of one request and where their outcomes go.
type Pending = (Vec<subledger_core::Command>, Reply);

/// Most synced batches waiting for the views thread: bounds how far the writer runs ahead
/// (and the memory that takes) while keeping both threads busy. Readers may not yet see up to
/// this many batches, plus the one being applied and the one the writer is handing over —
/// none of which is acknowledged yet.
pub(crate) const VIEWS_QUEUE_BATCHES_MAX: usize = 2;

/// A synced batch on its way to the views thread, with the answers it releases.
struct Synced {
    /// `None` when every command of the group commit was rejected (nothing to apply).
    batch: Option<Arc<Batch>>,
    /// Each request's reply and how many outcomes it takes, in order.
    replies: Vec<(usize, Reply)>,
    outcomes: Vec<Outcome>,
}

/// The views thread: applies synced batches to the read views in log order, publishes them,
/// and answers their callers. A views failure is a fail-stop: it is recorded (the writer stops
/// at its next batch) and every later caller is told so.
///
/// The callers are answered *while this thread holds the views' write lock*, before it applies
/// the batch: every read takes the read lock, so a read that starts after the answer waits for
/// the batch and sees it (read-your-writes holds), and the callers' next commands reach the
/// writer while the batch is still being applied. Answering after the apply kept the writer
/// idle for the whole apply whenever every caller was in the same batch (ADR 0005, amendment).
fn run_views(shared: &Shared, batches: &Receiver<Synced>) {
    /// Records a panic of this thread as a fail-stop, so that `failure()` says so at once and
    /// subscribers are told, rather than callers only seeing their replies dropped.
    struct PanicGuard<'a>(&'a Shared);
    impl Drop for PanicGuard<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                if let Ok(mut failure) = self.0.failure.lock() {
                    failure.get_or_insert_with(|| "the views thread panicked".to_string());
                }
                crate::subscription::disconnect_all(self.0);
            }
        }
    }
    let _guard = PanicGuard(shared);
    let mut stopped: Option<String> = None;
    for synced in batches {
        let Synced {
            batch,
            replies,
            outcomes,
        } = synced;
        let batch = batch.filter(|_| stopped.is_none());
        let result = match batch {
            // Everything rejected, or already stopped: nothing to show, answer at once.
            None => {
                answer(replies, outcomes, stopped.as_ref());
                Ok(())
            }
            Some(batch) => match shared.views.write() {
                Err(_) => {
                    let reason = "the read views lock is poisoned".to_string();
                    answer(replies, outcomes, Some(&reason));
                    Err(reason)
                }
                Ok(mut views) => {
                    answer(replies, outcomes, None);
                    let applied = views
                        .apply_batch(&batch)
                        .map_err(|error| format!("read views refused a committed batch: {error}"));
                    drop(views);
                    applied.map(|()| crate::subscription::publish(shared, &batch))
                }
            },
        };
        if let Err(reason) = result {
            tracing::error!(target: "subledger::writer", "fail-stop: {reason}");
            if let Ok(mut failure) = shared.failure.lock() {
                failure.get_or_insert(reason.clone());
            }
            crate::subscription::disconnect_all(shared);
            stopped = Some(reason);
        }
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

/// The views thread, as the writer holds it.
struct ViewsThread {
    sender: Sender<Synced>,
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
    log: Box<dyn EventLog>,
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
            log,
            clock,
            shared,
        }
    }

    pub(crate) fn run(mut self, receiver: Receiver<Request>) {
        let batch_max = self.config.batch_commands_max.max(1);
        let mut pending: Vec<Pending> = Vec::new();
        let mut views = match ViewsThread::start(&self.shared) {
            Ok(views) => Some(views),
            Err(reason) => {
                self.fail_stop(reason, &mut pending, &receiver, None);
                return;
            }
        };
        loop {
            // Block for the first request, then take whatever else is queued — waiting up to
            // `batch_wait` for more — until the batch holds `batch_commands_max` commands (a
            // batch submission is never split).
            let Ok(first) = receiver.recv() else {
                if let Some(views) = views.take() {
                    views.finish();
                }
                return;
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
            // A views failure is recorded by the views thread; stop before deciding more.
            let result = match self.shared.failure() {
                Some(reason) => Err(reason),
                None => match &views {
                    Some(thread) => self.commit(&mut pending, &thread.sender),
                    None => Err("the views thread is gone".to_string()),
                },
            };
            if let Err(reason) = result {
                self.fail_stop(reason, &mut pending, &receiver, views.take());
                return;
            }
            if let Some(reply) = close {
                if let Some(views) = views.take() {
                    views.finish();
                }
                self.close(&receiver, reply);
                return;
            }
        }
    }

    /// Decides, appends and syncs one batch, then hands it to the views thread to apply and
    /// acknowledge. `Err` is fail-stop.
    fn commit(&mut self, pending: &mut Vec<Pending>, views: &Sender<Synced>) -> Result<(), String> {
        if pending.is_empty() {
            return Ok(());
        }
        // One instant per batch, never earlier than the last: recorded, so replay needs no clock.
        let at = self.clock.now().max(self.state.last_at());
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
        let mut synced = None;
        if !events.is_empty() {
            let event_count = events.len() as u64;
            let batch = Arc::new(Batch { first, at, events });
            let started = std::time::Instant::now();
            self.log
                .append(&batch)
                .map_err(|error| format!("log append failed: {error}"))?;
            self.log
                .sync()
                .map_err(|error| format!("log sync failed: {error}"))?;
            // Durable from here on.
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            counters.record_commit(micros);
            counters.batches.fetch_add(1, Ordering::Relaxed);
            counters.events.fetch_add(event_count, Ordering::Relaxed);
            synced = Some(batch);
        }
        let replies = pending
            .drain(..)
            .map(|(commands, reply)| (commands.len(), reply))
            .collect();
        views
            .send(Synced {
                batch: synced,
                replies,
                outcomes,
            })
            .map_err(|_| "the views thread stopped".to_string())
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
    /// Batches already synced are durable: the views thread applies and answers them first.
    fn fail_stop(
        &mut self,
        reason: String,
        pending: &mut Vec<Pending>,
        receiver: &Receiver<Request>,
        views: Option<ViewsThread>,
    ) {
        tracing::error!(target: "subledger::writer", "fail-stop: {reason}");
        if let Ok(mut failure) = self.shared.failure.lock() {
            failure.get_or_insert(reason.clone());
        }
        if let Some(views) = views {
            views.finish();
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
    /// the closer.
    fn close(
        self,
        receiver: &Receiver<Request>,
        reply: crossbeam_channel::Sender<(State, Box<dyn EventLog>)>,
    ) {
        while let Ok(request) = receiver.try_recv() {
            if let Request::Commands(_, reply) = request {
                reply.send(Err(EngineError::Closed));
            }
        }
        crate::subscription::disconnect_all(&self.shared);
        let _ = reply.send((self.state, self.log));
    }
}
