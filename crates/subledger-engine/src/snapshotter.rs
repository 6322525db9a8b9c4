//! The snapshot thread: a follower of the durable log, never of the writer. It keeps its own
//! replica of the views (with the idempotency index), catches up by reading committed records,
//! and every `snapshot_every_events` events (more as the ledger grows: see [`snapshot_due`]) —
//! or on request — encodes the replica and stores it, then prunes old snapshots. The writer
//! never waits for it; the price is one more copy of the state in memory and the CPU to apply
//! each event once more (see ARCHITECTURE.md) — or, with `SnapshotReplica::Rebuilt`, no copy
//! between snapshots and a recovery's CPU for each. It runs at a raised nice value
//! (`Config::snapshot_niceness`), so that the writer, log and views threads get the cores first.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use subledger_core::Sequence;
use subledger_log::{ChainHash, LogReader, SnapshotStore};
use subledger_views::Views;

use crate::snapshot::encode_snapshot;

/// How often the thread looks for newly committed events when nobody asks it anything.
const SNAPSHOT_POLL_MILLIS: u64 = 100;
/// First wait before retrying a failed periodic snapshot; each failure doubles it.
const SNAPSHOT_RETRY_MILLIS_MIN: u64 = 1_000;
/// Longest wait before retrying a failed periodic snapshot.
const SNAPSHOT_RETRY_MILLIS_MAX: u64 = 60_000;

/// Whether a periodic snapshot at `seq` is due after the one at `last`: at least `every` events
/// (never when `every` is 0) and at least `growth_percent` % of `last` (see
/// [`crate::Config::snapshot_growth_percent`]).
pub(crate) fn snapshot_due(last: Sequence, seq: Sequence, every: u64, growth_percent: u32) -> bool {
    if every == 0 {
        return false;
    }
    let grown = u128::from(last.0) * u128::from(growth_percent) / 100;
    let interval = u128::from(every).max(grown);
    u128::from(seq.0.saturating_sub(last.0)) >= interval
}

/// Adds `niceness` to the calling thread's nice value (on Linux a thread has its own, and the
/// threads it starts inherit it), up to the largest. Raising it needs no privilege.
#[cfg(target_os = "linux")]
fn lower_priority(niceness: u8) -> std::io::Result<()> {
    use rustix::process::{getpriority_process, setpriority_process};
    if niceness == 0 {
        return Ok(());
    }
    let thread = Some(rustix::thread::gettid());
    let current = getpriority_process(thread)?;
    let target = current
        .saturating_add(i32::from(niceness))
        .min(i32::from(crate::SNAPSHOT_NICENESS_MAX));
    if target > current {
        setpriority_process(thread, target)?;
    }
    Ok(())
}

/// Elsewhere a nice value is the process's: left as it is.
#[cfg(not(target_os = "linux"))]
fn lower_priority(_niceness: u8) -> std::io::Result<()> {
    Ok(())
}

/// The snapshots a ledger's snapshot thread wrote, for [`crate::Metrics`].
#[derive(Debug, Default)]
pub(crate) struct Written {
    pub(crate) count: AtomicU64,
    pub(crate) last: AtomicU64,
}

pub(crate) enum SnapshotRequest {
    /// Catch up with the durable log and write a snapshot now; reply with its sequence number.
    Now(Sender<Result<Sequence, String>>),
    Stop,
}

pub(crate) struct Snapshotter {
    /// Built on first use from the newest snapshot and the log, off the open path.
    pub(crate) replica: Option<Views>,
    pub(crate) head_hash: ChainHash,
    pub(crate) reader: Arc<dyn LogReader>,
    pub(crate) store: Arc<dyn SnapshotStore>,
    pub(crate) every_events: u64,
    pub(crate) growth_percent: u32,
    /// Added to this thread's nice value when it starts (see [`crate::Config::snapshot_niceness`]).
    pub(crate) niceness: u8,
    pub(crate) keep: usize,
    /// `false` ([`crate::SnapshotReplica::Rebuilt`]): drop the replica after each snapshot.
    pub(crate) replica_kept: bool,
    /// See [`crate::Config::shared_segment_records_min`].
    pub(crate) shared_segment_records_min: usize,
    /// Tells [`crate::Metrics`] whether `replica` is built.
    pub(crate) replica_held: Arc<AtomicBool>,
    /// Tells [`crate::Metrics`] how many snapshots this thread wrote, and the newest one's
    /// position (the recovered one's until then).
    pub(crate) written: Arc<Written>,
    /// No periodic attempt before this instant (set after a failure).
    pub(crate) retry_at: Option<Instant>,
    /// The wait set after the last failure (zero after a success).
    pub(crate) retry_wait: Duration,
    pub(crate) last_snapshot: Sequence,
    pub(crate) last_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl Snapshotter {
    pub(crate) fn run(mut self, requests: Receiver<SnapshotRequest>) {
        if let Err(error) = lower_priority(self.niceness) {
            tracing::warn!(target: "subledger::snapshot", "cannot lower the snapshot thread's priority: {error}");
        }
        loop {
            match requests.recv_timeout(Duration::from_millis(SNAPSHOT_POLL_MILLIS)) {
                Ok(SnapshotRequest::Now(reply)) => {
                    // Asked for: written even at the last snapshot's position, so that
                    // `subledger snapshot` rewrites one of an older format in today's.
                    let result = self.catch_up().and_then(|()| self.write(true));
                    self.remember(&result);
                    // Answer first: freeing a replica of gigabytes takes a while.
                    let _ = reply.send(result);
                    self.release();
                }
                Ok(SnapshotRequest::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    if self.every_events == 0 {
                        continue;
                    }
                    // After a failure, wait before trying again: a store that keeps failing
                    // (a full disk) would otherwise cost a catch-up — with a rebuilt replica, a
                    // whole recovery — every poll.
                    if self.retry_at.is_some_and(|at| Instant::now() < at) {
                        continue;
                    }
                    // Nothing new enough since the last snapshot: no need to build or catch up.
                    let head = self.reader.head();
                    if !self.due(head) {
                        continue;
                    }
                    let mut result = self.catch_up().map(|()| self.last_snapshot);
                    let applied = self
                        .replica
                        .as_ref()
                        .map_or(Sequence::ZERO, Views::last_seq);
                    if result.is_ok() && self.due(applied) {
                        result = self.write(false);
                    }
                    self.remember(&result);
                    self.back_off(result.is_err());
                    self.release();
                }
            }
        }
    }

    fn due(&self, seq: Sequence) -> bool {
        snapshot_due(
            self.last_snapshot,
            seq,
            self.every_events,
            self.growth_percent,
        )
    }

    /// After a failed periodic snapshot, the next attempt waits twice as long as the last
    /// wait (from `SNAPSHOT_RETRY_MILLIS_MIN` up to `SNAPSHOT_RETRY_MILLIS_MAX`); a success
    /// ends the waiting.
    fn back_off(&mut self, failed: bool) {
        if !failed {
            self.retry_at = None;
            self.retry_wait = Duration::ZERO;
            return;
        }
        self.retry_wait = (self.retry_wait * 2).clamp(
            Duration::from_millis(SNAPSHOT_RETRY_MILLIS_MIN),
            Duration::from_millis(SNAPSHOT_RETRY_MILLIS_MAX),
        );
        self.retry_at = Some(Instant::now() + self.retry_wait);
    }

    /// Drops the replica unless it is kept: the next snapshot rebuilds it from this one (or,
    /// after a failure, from the newest one that exists) and the log after it.
    fn release(&mut self) {
        if !self.replica_kept {
            self.replica = None;
        }
        self.replica_held
            .store(self.replica.is_some(), Ordering::Relaxed);
    }

    fn remember(&self, result: &Result<Sequence, String>) {
        if let Err(error) = result {
            tracing::warn!(target: "subledger::snapshot", "snapshot failed: {error}");
        }
        // The error stays visible until an attempt succeeds.
        if let Ok(mut last) = self.last_error.lock() {
            *last = result.as_ref().err().cloned();
        }
    }

    /// Applies every durable record after the replica's position (building the replica first
    /// if this is its first use).
    fn catch_up(&mut self) -> Result<(), String> {
        let replica = match &mut self.replica {
            Some(replica) => replica,
            None => {
                let (mut views, hash, _) =
                    crate::recovery::recover(self.reader.as_ref(), self.store.as_ref(), true)
                        .map_err(|error| error.to_string())?;
                // The replica never decides: its index need not find commands, only list them.
                views.keep_command_records_only();
                // Nor does it need a state: a directory of the accounts, their histories and
                // the index are what a snapshot is written from (ADR 0008).
                let views = views.into_lean_keeping_index();
                self.head_hash = hash;
                self.replica_held.store(true, Ordering::Relaxed);
                self.replica.insert(views)
            }
        };
        let start = replica.last_seq();
        if self.reader.head() <= start {
            return Ok(());
        }
        let records = self
            .reader
            .records_from(start.next())
            .map_err(|error| error.to_string())?;
        for record in records {
            let record = record.map_err(|error| error.to_string())?;
            self.head_hash = record.hash;
            let at = record.at;
            let batch = record.into_batch();
            if batch.first > start {
                // The whole record is new: `apply_batch` reads its accounts ahead.
                replica
                    .apply_batch(&batch)
                    .map_err(|error| error.to_string())?;
            } else {
                for (seq, event) in batch.iter().filter(|(seq, _)| *seq > start) {
                    replica
                        .apply(seq, at, event)
                        .map_err(|error| error.to_string())?;
                }
            }
            // The replica's lists and its index share their records, as the live views and
            // the writer's index do.
            if self.shared_segment_records_min > 0 {
                replica.share_money_records(self.shared_segment_records_min);
            }
        }
        Ok(())
    }

    /// Encodes and stores the replica (unless a snapshot at its position was written or loaded
    /// already and `again` is not set), then keeps only the newest `keep` snapshots.
    fn write(&mut self, again: bool) -> Result<Sequence, String> {
        let Some(replica) = &self.replica else {
            return Err("the snapshot replica is not built".into());
        };
        let seq = replica.last_seq();
        if seq == Sequence::ZERO {
            return Err("nothing to snapshot: the log is empty".into());
        }
        if seq != self.last_snapshot || again {
            let started = Instant::now();
            let bytes =
                encode_snapshot(replica, self.head_hash).map_err(|error| error.to_string())?;
            let encoded = started.elapsed();
            self.store
                .save(seq, &bytes)
                .map_err(|error| error.to_string())?;
            // Operators size the interval and the disk by these.
            tracing::info!(
                target: "subledger::snapshot",
                seq = seq.0,
                bytes = bytes.len(),
                "snapshot written: encoded in {encoded:?}, stored in {:?}",
                started.elapsed().saturating_sub(encoded)
            );
            self.last_snapshot = seq;
            self.written.count.fetch_add(1, Ordering::Relaxed);
            self.written.last.store(seq.0, Ordering::Relaxed);
        }
        prune(self.store.as_ref(), self.keep)?;
        Ok(seq)
    }
}

/// Removes all but the newest `keep` (at least one) snapshots.
pub(crate) fn prune(store: &dyn SnapshotStore, keep: usize) -> Result<(), String> {
    let stored = store.list().map_err(|error| error.to_string())?;
    let surplus = stored.len().saturating_sub(keep.max(1));
    for old in stored.into_iter().take(surplus) {
        store.remove(old).map_err(|error| error.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::snapshot_due;
    use subledger_core::Sequence;

    fn due(last: u64, seq: u64, every: u64, growth_percent: u32) -> bool {
        snapshot_due(Sequence(last), Sequence(seq), every, growth_percent)
    }

    #[test]
    fn a_fixed_interval_without_growth() {
        assert!(!due(0, 999, 1_000, 0));
        assert!(due(0, 1_000, 1_000, 0));
        assert!(!due(9_000_000, 9_000_999, 1_000, 0));
        assert!(due(9_000_000, 9_001_000, 1_000, 0));
    }

    #[test]
    fn the_interval_grows_with_the_last_snapshot() {
        // Below 4M the 1M minimum rules; beyond it, 25 % of the last snapshot's position.
        assert!(due(3_000_000, 4_000_000, 1_000_000, 25));
        assert!(!due(8_000_000, 9_999_999, 1_000_000, 25));
        assert!(due(8_000_000, 10_000_000, 1_000_000, 25));
        // The positions of a 10M run: 1, 2, 3, 4, 5, 6.25, 7.8125 and 9.765625M.
        let mut last = 0;
        let mut taken = Vec::new();
        for seq in (0..=10_000_000u64).step_by(1_000) {
            if due(last, seq, 1_000_000, 25) {
                taken.push(seq);
                last = seq;
            }
        }
        assert_eq!(
            taken,
            [
                1_000_000, 2_000_000, 3_000_000, 4_000_000, 5_000_000, 6_250_000, 7_813_000,
                9_767_000
            ]
        );
    }

    #[test]
    fn never_when_periodic_snapshots_are_off_and_no_overflow_at_the_ends() {
        assert!(!due(0, u64::MAX, 0, 25));
        assert!(!due(u64::MAX - 1, u64::MAX, 1, 1_000));
        assert!(due(0, u64::MAX, u64::MAX, 1_000));
        // A head behind the last snapshot (never expected) is not due.
        assert!(!due(10, 5, 1, 0));
    }
}
