//! The writer thread: the only code that decides commands and appends to the log.
//!
//! One loop iteration is one group commit: take a batch of queued commands, decide each against
//! the state (applying accepted events at once, so later commands in the batch see them),
//! append the batch, sync, update the read views, publish to subscribers, and answer every
//! caller. Nothing is acknowledged — not to callers, views or subscribers — before the sync
//! returns. Any failure of the log or of `apply` stops the writer for good (fail-stop): the
//! in-memory state may then be ahead of the log, so only reopening from the log is safe.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use subledger_core::{execute, Batch, Event, Executed, State};
use subledger_log::EventLog;

use crate::{Clock, Config, EngineError, Outcome, Receipt, Reply, Request, Shared};

/// Commands of one request and where their outcomes go.
type Pending = (Vec<subledger_core::Command>, Reply);

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
        loop {
            // Block for the first request, then take whatever else is queued — waiting up to
            // `batch_wait` for more — until the batch holds `batch_commands_max` commands (a
            // batch submission is never split).
            let Ok(first) = receiver.recv() else { return };
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
            if let Err(reason) = self.commit(&mut pending) {
                self.fail_stop(reason, &mut pending, &receiver);
                return;
            }
            if let Some(reply) = close {
                self.close(&receiver, reply);
                return;
            }
        }
    }

    /// Decides, appends, syncs and acknowledges one batch. `Err` is fail-stop.
    fn commit(&mut self, pending: &mut Vec<Pending>) -> Result<(), String> {
        if pending.is_empty() {
            return Ok(());
        }
        // One instant per batch, never earlier than the last: recorded, so replay needs no clock.
        let at = self.clock.now().max(self.state.last_at());
        let first = self.state.last_seq().next();
        let mut events: Vec<Event> = Vec::new();
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(pending.len());
        for command in pending.iter().flat_map(|(commands, _)| commands) {
            // decide + apply (+ the alerts the new state calls for). An apply failure means a
            // rule is broken: the batch must not reach the log.
            let executed = execute(&mut self.state, at, command)
                .map_err(|error| format!("invariant check failed, batch not committed: {error}"))?;
            let outcome = match executed {
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
            };
            outcomes.push(outcome);
        }
        let counters = &self.shared.counters;
        let rejected = outcomes.iter().filter(|outcome| outcome.is_err()).count();
        counters
            .commands
            .fetch_add(outcomes.len() as u64, Ordering::Relaxed);
        counters
            .rejected
            .fetch_add(rejected as u64, Ordering::Relaxed);
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
            self.apply_to_views(&batch)?;
            crate::subscription::publish(&self.shared, &batch);
            counters.batches.fetch_add(1, Ordering::Relaxed);
            counters.events.fetch_add(event_count, Ordering::Relaxed);
        }
        let mut outcomes = outcomes.into_iter();
        for (commands, reply) in pending.drain(..) {
            reply.send(Ok(outcomes.by_ref().take(commands.len()).collect()));
        }
        Ok(())
    }

    fn apply_to_views(&self, batch: &Batch) -> Result<(), String> {
        let mut views = self
            .shared
            .views
            .write()
            .map_err(|_| "the read views lock is poisoned".to_string())?;
        views
            .apply_batch(batch)
            .map_err(|error| format!("read views refused a committed batch: {error}"))
    }

    /// Records the failure, answers the failed batch and everything still queued, and stops.
    fn fail_stop(
        &mut self,
        reason: String,
        pending: &mut Vec<Pending>,
        receiver: &Receiver<Request>,
    ) {
        tracing::error!(target: "subledger::writer", "fail-stop: {reason}");
        if let Ok(mut failure) = self.shared.failure.lock() {
            failure.get_or_insert(reason.clone());
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
