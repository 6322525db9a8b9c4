//! subledger-engine: the single-writer ledger and its embedding API.
//!
//! Layout: [`Ledger`] is the handle callers hold. Commands go through a bounded
//! `crossbeam-channel` queue to one writer thread (module `writer`), which owns the decide-side
//! [`State`] and the [`EventLog`]. The writer drains up to
//! `batch_commands_max` queued commands (from single or batch submissions), decides them in order, appends their events as one
//! batch, syncs the log, and only then answers every caller (group commit), updates the read
//! views and notifies subscribers (module `subscription`). A batch is announced at a read gate
//! before its callers are answered, and a read first waits there until the views hold every
//! announced batch, so a read after an answer sees it. Reads take a brief read lock on the
//! views and never wait for a sync.
//!
//! ```
//! use subledger_core::*;
//! use subledger_engine::{Config, Ledger};
//!
//! let ledger = Ledger::in_memory(Config::default()).unwrap();
//! let hash = SecretHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()).unwrap();
//! let primary: ApiKey = "acme0001".parse().unwrap();
//! ledger.submit(Command::OpenPrimary(OpenPrimary {
//!     key: primary,
//!     name: "Acme".into(),
//!     currency: Currency::EUR,
//!     credit_line: Amount::ZERO,
//!     secret: NewSecret { id: ledger.new_secret_id(), hash },
//! })).unwrap().unwrap();
//! let receipt = ledger.submit(Command::TopUp(TopUp {
//!     id: ledger.new_command_id(),
//!     primary,
//!     amount: "100.10".parse().unwrap(),
//!     reference: "invoice 7".into(),
//! })).unwrap().unwrap();
//! assert!(!receipt.replayed);
//! let balance = ledger.read(|views| views.account(&primary).unwrap().balance);
//! assert_eq!(balance, Some("100.1".parse().unwrap()));
//! ledger.close().unwrap();
//! ```

mod clock;
mod piecewise;
mod recovery;
mod slot;
pub mod snapshot;
mod snapshotter;
mod subscription;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use subledger_core::{
    ApiKey, ApplyError, Command, CommandId, Event, Policy, Rejection, SecretHash, SecretId,
    Sequence, State, Timestamp,
};
use subledger_log::{EventLog, LogError, LogReader, MemoryLog, SnapshotStore};
use subledger_views::{StoredHash, Views};

pub use clock::{Clock, ManualClock, SystemClock};
pub use recovery::Recovery;
pub use subscription::{Feed, FeedError, Filter, Notice, Subscription, SubscriptionError};

/// Default for [`Config::queue_requests_max`].
pub const QUEUE_REQUESTS_MAX_DEFAULT: usize = 16_384;
/// Most commands in one batch submission ([`Ledger::submit_batch`]).
pub const REQUEST_COMMANDS_MAX: usize = 8_192;
/// Default for [`Config::batch_commands_max`].
pub const BATCH_COMMANDS_MAX_DEFAULT: usize = 8_192;
/// Default for [`Config::log_handoff_commands_min`]. Overlapping a sync with the next
/// decision pays for batches of thousands of commands (tigerbeetle 10M, 4 × 4,096: about a
/// fifth more); with 256 single-command clients the whole closed loop sits in one batch of a
/// few hundred, and handing those over let the stragglers behind them take a sync of their
/// own that the next round then waited for (p99 +0.6 ms, no throughput gained).
pub const LOG_HANDOFF_COMMANDS_MIN_DEFAULT: usize = 1_024;
/// Default for [`Config::subscriber_batches_max`].
pub const SUBSCRIBER_BATCHES_MAX_DEFAULT: usize = 4_096;
/// Default for [`Config::snapshot_every_events`].
pub const SNAPSHOT_EVERY_EVENTS_DEFAULT: u64 = 1_000_000;
/// Default for [`Config::snapshot_growth_percent`].
pub const SNAPSHOT_GROWTH_PERCENT_DEFAULT: u32 = 25;
/// Largest [`Config::snapshot_growth_percent`]: beyond it, recovery would replay more of the
/// log than its snapshot saves.
pub const SNAPSHOT_GROWTH_PERCENT_MAX: u32 = 1_000;
/// Default for [`Config::snapshot_niceness`]: about a tenth of a core's share against the
/// writer, log and views threads when all want the cores (CFS weights 110 against 1,024), so
/// snapshots still progress under sustained load.
pub const SNAPSHOT_NICENESS_DEFAULT: u8 = 10;
/// Largest [`Config::snapshot_niceness`] (Linux's nice values end at 19).
pub const SNAPSHOT_NICENESS_MAX: u8 = 19;
/// Default for [`Config::snapshots_keep`].
pub const SNAPSHOTS_KEEP_DEFAULT: usize = 3;
/// Most live subscriptions at once.
pub const SUBSCRIBERS_MAX: usize = 1_024;

/// What the snapshot thread keeps between two snapshots ([`Config::snapshot_replica`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotReplica {
    /// Its own copy of the views and the idempotency index, kept up to date with the durable
    /// log: a snapshot costs only the events since the last one, but from the first snapshot
    /// on the copy doubles the ledger's memory.
    #[default]
    Kept,
    /// Nothing: each snapshot rebuilds the copy from the newest snapshot and the log after it
    /// (as opening a ledger does), writes the new snapshot and drops the copy. Memory doubles
    /// only while a snapshot is being written; each snapshot costs about one recovery's CPU.
    Rebuilt,
}

/// Engine configuration. Every queue and batch is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Requests (single commands or batch submissions) waiting for the writer; beyond this,
    /// submitting returns [`EngineError::Busy`]. Queued commands are thus bounded by
    /// `queue_requests_max × REQUEST_COMMANDS_MAX`. Behind the writer, at most four decided
    /// batches wait for the log thread and two durable ones for the views thread, each of at
    /// most `batch_commands_max` commands.
    pub queue_requests_max: usize,
    /// Most commands decided and committed together in one group commit.
    pub batch_commands_max: usize,
    /// Longest the writer waits for more commands once it has one, before committing a batch
    /// that is not full. Zero (the default) commits whatever is queued at once: under load
    /// batches form by themselves while the previous sync runs; a small wait trades latency
    /// for fewer, larger syncs when load is light.
    pub batch_wait: std::time::Duration,
    /// Fewest commands in a batch for the writer to hand it to the log thread (when more
    /// requests wait) and decide the next batch while it is synced; smaller batches the writer
    /// syncs itself. The default, [`LOG_HANDOFF_COMMANDS_MIN_DEFAULT`], overlaps bulk
    /// submissions and leaves a closed loop of single-command clients as it was (handing its
    /// small batches over only added latency). 1 hands over whenever more requests wait.
    pub log_handoff_commands_min: usize,
    /// Committed batches a subscriber may fall behind before it is disconnected.
    pub subscriber_batches_max: usize,
    /// The rules' configuration (e.g. subaccounts per primary).
    pub policy: Policy,
    /// Write a snapshot in the background after this many new events (0: only on request).
    pub snapshot_every_events: u64,
    /// A background snapshot also waits until the new events number at least this percentage
    /// of the last snapshot's sequence number (0: every `snapshot_every_events` events, however
    /// large the ledger; capped at [`SNAPSHOT_GROWTH_PERCENT_MAX`]). Each snapshot rewrites the
    /// whole ledger, so at a fixed interval the bytes written per event grow with the ledger
    /// (at 10M events, 1M apart: ~11 GB for 2 GB of final snapshot) until the snapshots
    /// compete with the log for the disk. An interval that grows with the ledger bounds all
    /// snapshots written to about `(100 + p) / p` times the newest one's size; the price is a
    /// recovery replaying up to `p` % of the log beyond its snapshot.
    pub snapshot_growth_percent: u32,
    /// Added to the nice value of the snapshot thread and of the threads it starts (Linux; 0
    /// leaves it as the process's; capped at [`SNAPSHOT_NICENESS_MAX`]). A background
    /// snapshot is work that can wait: at the default, 10, the writer, log and views threads
    /// get the cores first when all want them (tigerbeetle 10M with snapshots every 1M:
    /// 0.59M–0.73M/s at 0, 0.74M–0.90M/s at 10; see `docs/benchmarks.md`), and snapshots are
    /// fewer while that lasts.
    pub snapshot_niceness: u8,
    /// Snapshots kept; older ones are removed after each new one.
    pub snapshots_keep: usize,
    /// Whether the snapshot thread keeps its copy of the views between snapshots.
    pub snapshot_replica: SnapshotReplica,
    /// Start recovery from the newest usable snapshot (`false`: replay the whole log, e.g. to
    /// audit it or to measure full replay).
    pub recovery_uses_snapshots: bool,
    /// Money records the writer's idempotency index holds of its own before it freezes them
    /// for the read views to share, which then drop their copies (the snapshot thread's
    /// replica does the same with its own index): see
    /// `docs/adr/0007-one-copy-of-the-transfers.md`. Each money command applied live is held
    /// twice until then. 0: never (everything applied since the open stays copied).
    pub shared_segment_records_min: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            queue_requests_max: QUEUE_REQUESTS_MAX_DEFAULT,
            batch_commands_max: BATCH_COMMANDS_MAX_DEFAULT,
            batch_wait: std::time::Duration::ZERO,
            log_handoff_commands_min: LOG_HANDOFF_COMMANDS_MIN_DEFAULT,
            subscriber_batches_max: SUBSCRIBER_BATCHES_MAX_DEFAULT,
            policy: Policy::default(),
            snapshot_every_events: SNAPSHOT_EVERY_EVENTS_DEFAULT,
            snapshot_growth_percent: SNAPSHOT_GROWTH_PERCENT_DEFAULT,
            snapshot_niceness: SNAPSHOT_NICENESS_DEFAULT,
            snapshots_keep: SNAPSHOTS_KEEP_DEFAULT,
            snapshot_replica: SnapshotReplica::Kept,
            recovery_uses_snapshots: true,
            shared_segment_records_min: subledger_core::SHARED_SEGMENT_RECORDS_MIN,
        }
    }
}

/// What a committed command produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Sequence number of the command's first event (for a replayed command: the original's).
    pub first: Sequence,
    /// Number of events the command produced (0 for a command that changed nothing).
    pub events: u32,
    /// Commit instant (for a replayed command: the original's).
    pub at: Timestamp,
    /// `true` when this is a retry of a command already applied with the same id and content.
    pub replayed: bool,
}

/// The business outcome of a command: a receipt, or a rejection (the ledger is unchanged).
pub type Outcome = Result<Receipt, Rejection>;

/// Why the engine could not give a command an outcome. Distinct from [`Rejection`]: these are
/// about the engine, not the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The queue is full; retry later (HTTP 503).
    #[error("the ledger is busy: the command queue is full")]
    Busy,
    /// The writer stopped after a failure (fail-stop). The command's outcome is unknown: its
    /// events are in the log only if the failed write reached the disk. Reopen the ledger from
    /// the log and resubmit with the same command id: idempotency tells the two cases apart.
    #[error("the ledger stopped: {reason}")]
    Stopped { reason: String },
    /// The ledger was closed.
    #[error("the ledger is closed")]
    Closed,
    /// A batch submission holds more than [`REQUEST_COMMANDS_MAX`] commands.
    #[error("a request holds at most {max} commands")]
    TooManyCommands { max: usize },
    /// Reading the log failed (for a read that goes to the log, such as
    /// [`Ledger::secret_hashes`]).
    #[error("cannot read the log: {0}")]
    Log(String),
}

/// The hash of secret `id` as recorded by the event at `seq`, if that event records it.
fn hash_in_log(
    reader: &dyn LogReader,
    seq: Sequence,
    id: SecretId,
) -> Result<Option<SecretHash>, LogError> {
    let Some(record) = reader.records_from(seq)?.next() else {
        return Ok(None);
    };
    let record = record?;
    let event = seq
        .0
        .checked_sub(record.first.0)
        .and_then(|offset| usize::try_from(offset).ok())
        .and_then(|offset| record.events.get(offset));
    Ok(match event {
        Some(
            Event::PrimaryOpened { secret, .. }
            | Event::SubaccountCreated { secret, .. }
            | Event::SecretCreated { secret, .. },
        ) if secret.id == id => Some(secret.hash.clone()),
        _ => None,
    })
}

/// Why opening a ledger failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("cannot read the log: {0}")]
    Log(#[from] LogError),
    #[error("the log cannot be replayed: {0}")]
    Replay(#[from] ApplyError),
    #[error("cannot start a thread: {0}")]
    Thread(String),
    /// Recovery gave read views without the state the writer needs (a bug, never the log's
    /// doing).
    #[error("recovery produced no state for the writer")]
    NoState,
}

/// Why [`snapshot_stopped`] wrote no snapshot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoppedSnapshotError {
    /// The ledger could not be recovered (a damaged log, events that break the rules).
    #[error(transparent)]
    Recover(#[from] OpenError),
    #[error("nothing to snapshot: the log is empty")]
    Empty,
    /// Encoding or storing the snapshot, or removing older ones, failed.
    #[error("snapshot failed: {0}")]
    Failed(String),
}

/// Writes a snapshot of a ledger that is not open: recovers its views from the newest usable
/// snapshot and the log after it — every event applied under the rules, as opening does —
/// encodes them, stores them beside the log (also when a snapshot at the head exists: this
/// rewrites it in the current format), and keeps the newest `keep` snapshots. It gives what
/// opening the ledger and calling [`Ledger::snapshot_now`] gives, with one replay instead of
/// two: an open ledger's snapshot thread builds its own replica by replaying again. Nothing
/// else may write to the log meanwhile.
pub fn snapshot_stopped(
    reader: &dyn LogReader,
    store: &dyn SnapshotStore,
    keep: usize,
) -> Result<Sequence, StoppedSnapshotError> {
    let (views, head_hash, _) = recovery::recover(reader, store, true)?;
    let seq = views.last_seq();
    if seq == Sequence::ZERO {
        return Err(StoppedSnapshotError::Empty);
    }
    let failed = |error: &dyn std::fmt::Display| StoppedSnapshotError::Failed(error.to_string());
    let bytes = snapshot::encode_snapshot(&views, head_hash).map_err(|error| failed(&error))?;
    // The views can be gigabytes: not held while the bytes are stored.
    drop(views);
    store.save(seq, &bytes).map_err(|error| failed(&error))?;
    snapshotter::prune(store, keep).map_err(StoppedSnapshotError::Failed)?;
    Ok(seq)
}

/// Why an on-demand snapshot failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotFailed {
    #[error("the snapshot thread has stopped")]
    Stopped,
    #[error("snapshot failed: {0}")]
    Failed(String),
}

/// Counters for monitoring; read with [`Ledger::metrics`].
#[derive(Debug, Default)]
struct Counters {
    commands: AtomicU64,
    rejected: AtomicU64,
    batches: AtomicU64,
    /// Commands of the batches that were appended (see [`Metrics::commands_appended`]).
    commands_appended: AtomicU64,
    /// Syncs of the log: each covers one or more batches.
    syncs: AtomicU64,
    events: AtomicU64,
    /// Durable-write latency per sync (append + sync), counts per bucket of
    /// [`COMMIT_LATENCY_BUCKETS_MICROS`], plus the overflow bucket.
    commit_latency: [AtomicU64; COMMIT_LATENCY_BUCKETS_MICROS.len() + 1],
    commit_latency_sum_micros: AtomicU64,
}

/// Upper bounds (µs) of the commit-latency histogram buckets.
pub const COMMIT_LATENCY_BUCKETS_MICROS: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

impl Counters {
    fn record_commit(&self, micros: u64) {
        let bucket = COMMIT_LATENCY_BUCKETS_MICROS
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(COMMIT_LATENCY_BUCKETS_MICROS.len());
        if let Some(counter) = self.commit_latency.get(bucket) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.commit_latency_sum_micros
            .fetch_add(micros, Ordering::Relaxed);
    }
}

/// A point-in-time reading of the engine's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    pub commands: u64,
    pub rejected: u64,
    /// Batches appended to the log: a batch whose commands were all rejected or changed
    /// nothing has no events, needs no sync and is not counted.
    pub batches: u64,
    /// Commands of the batches counted in `batches`: `commands_appended / batches` is the
    /// size of an appended batch, `commands_appended / syncs` of a group commit (`commands`
    /// also counts the commands of batches that had nothing to append).
    pub commands_appended: u64,
    /// Syncs of the log; each makes one or more batches durable (the log thread covers every
    /// batch waiting for it with one sync).
    pub syncs: u64,
    pub events: u64,
    pub queue_depth: usize,
    pub last_seq: Sequence,
    /// The error of the last snapshot attempt, if it failed (periodic snapshots are retried;
    /// commits go on); `None` again once one succeeds.
    pub snapshot_error: Option<String>,
    /// Whether the snapshot thread holds its copy of the views now (always after the first
    /// snapshot with [`SnapshotReplica::Kept`]; only while writing one with `Rebuilt`).
    pub snapshot_replica_held: bool,
    /// Snapshots written since the ledger opened (periodic and requested).
    pub snapshots_written: u64,
    /// Position of the newest snapshot: the last one written, else the one recovery started
    /// from (zero for none).
    pub last_snapshot: Sequence,
    /// Syncs per latency bucket — the time to append the batches one sync covers, and sync —
    /// (bounds in [`COMMIT_LATENCY_BUCKETS_MICROS`]; the last entry counts the slower ones).
    pub commit_latency_buckets: Vec<u64>,
    pub commit_latency_sum_micros: u64,
}

/// State shared between the handle, the writer and subscriptions.
#[derive(Debug)]
struct Shared {
    views: RwLock<Views>,
    /// What a read must wait for: the batches whose callers have been answered.
    gate: writer::Gate,
    subscribers: Mutex<Vec<subscription::Subscriber>>,
    failure: Mutex<Option<String>>,
    counters: Counters,
    reader: Arc<dyn LogReader>,
    subscriber_batches_max: usize,
}

impl Shared {
    fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|failure| failure.clone())
    }
}

type OneResult = Result<Outcome, EngineError>;
type ManyResult = Result<Vec<Outcome>, EngineError>;

/// A reply channel: the blocking and the async API differ only in how the caller waits, and
/// single and batch submissions only in how many outcomes they expect.
enum Reply {
    Blocking(slot::SlotSender<OneResult>),
    Async(tokio::sync::oneshot::Sender<OneResult>),
    BatchBlocking(slot::SlotSender<ManyResult>),
    BatchAsync(tokio::sync::oneshot::Sender<ManyResult>),
}

impl Reply {
    /// Sends the outcomes of the request's commands (one per command, in order).
    fn send(self, result: ManyResult) {
        let first = |result: ManyResult| {
            result.and_then(|outcomes| outcomes.into_iter().next().ok_or(EngineError::Closed))
        };
        // A caller that stopped waiting is not an error for the writer.
        match self {
            Reply::Blocking(sender) => sender.send(first(result)),
            Reply::Async(sender) => {
                let _ = sender.send(first(result));
            }
            Reply::BatchBlocking(sender) => sender.send(result),
            Reply::BatchAsync(sender) => {
                let _ = sender.send(result);
            }
        }
    }
}

enum Request {
    /// One or more commands (a batch submission) and where their outcomes go.
    Commands(Vec<Command>, Reply),
    /// Finish everything queued before this, then stop and hand back the state and the log.
    Close(crossbeam_channel::Sender<(State, Box<dyn EventLog>)>),
}

/// The ledger: submit commands, read views, subscribe to committed events. Share it between
/// threads and tasks with `Arc<Ledger>`.
#[derive(Debug)]
pub struct Ledger {
    sender: Sender<Request>,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    snapshots: Sender<snapshotter::SnapshotRequest>,
    snapshotter: Mutex<Option<JoinHandle<()>>>,
    snapshot_error: Arc<Mutex<Option<String>>>,
    snapshot_replica_held: Arc<AtomicBool>,
    snapshots_written: Arc<snapshotter::Written>,
    recovery: Recovery,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Commands(commands, _) => write!(formatter, "Commands({})", commands.len()),
            Request::Close(_) => formatter.write_str("Close"),
        }
    }
}

impl Ledger {
    /// A ledger on a fresh in-memory log (nothing survives the process).
    pub fn in_memory(config: Config) -> Result<Ledger, OpenError> {
        Ledger::open(config, MemoryLog::new(), SystemClock)
    }

    /// Opens a ledger on `log`: loads the newest usable snapshot, replays the log after it
    /// (verifying every record), then starts the writer and the snapshot threads.
    pub fn open(
        config: Config,
        log: impl EventLog,
        clock: impl Clock,
    ) -> Result<Ledger, OpenError> {
        let reader = log.reader();
        let store = log.snapshots();
        let (recovered, _, recovery) = recovery::recover(
            reader.as_ref(),
            store.as_ref(),
            config.recovery_uses_snapshots,
        )?;
        // The writer takes the recovered state as is; the read views keep a directory of its
        // accounts (ADR 0008); the snapshot thread builds its own replica in the background.
        let (mut state, views) = recovered
            .into_writer_and_views()
            .map_err(|_| OpenError::NoState)?;
        state.set_policy(config.policy);
        let (sender, receiver) = crossbeam_channel::bounded(config.queue_requests_max.max(1));
        let shared = Arc::new(Shared {
            gate: writer::Gate::new(views.last_seq()),
            views: RwLock::new(views),
            subscribers: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
            counters: Counters::default(),
            reader: Arc::clone(&reader),
            subscriber_batches_max: config.subscriber_batches_max,
        });
        let snapshot_error = Arc::new(Mutex::new(None));
        let snapshot_replica_held = Arc::new(AtomicBool::new(false));
        let snapshots_written = Arc::new(snapshotter::Written::default());
        let recovered_snapshot = recovery.snapshot.unwrap_or(Sequence::ZERO);
        snapshots_written
            .last
            .store(recovered_snapshot.0, Ordering::Relaxed);
        let snapshotter = snapshotter::Snapshotter {
            replica: None,
            head_hash: subledger_log::ChainHash::GENESIS,
            reader,
            store,
            every_events: config.snapshot_every_events,
            growth_percent: config
                .snapshot_growth_percent
                .min(SNAPSHOT_GROWTH_PERCENT_MAX),
            niceness: config.snapshot_niceness.min(SNAPSHOT_NICENESS_MAX),
            keep: config.snapshots_keep,
            replica_kept: config.snapshot_replica == SnapshotReplica::Kept,
            replica_held: Arc::clone(&snapshot_replica_held),
            written: Arc::clone(&snapshots_written),
            retry_at: None,
            retry_wait: std::time::Duration::ZERO,
            last_snapshot: recovered_snapshot,
            last_error: Arc::clone(&snapshot_error),
            shared_segment_records_min: config.shared_segment_records_min,
        };
        let (snapshots, snapshot_requests) = crossbeam_channel::bounded(16);
        let snapshot_handle = std::thread::Builder::new()
            .name("subledger-snapshot".into())
            .spawn(move || snapshotter.run(snapshot_requests))
            .map_err(|error| OpenError::Thread(error.to_string()))?;
        let writer = writer::Writer::new(
            config,
            state,
            Box::new(log),
            Box::new(clock),
            Arc::clone(&shared),
        );
        let handle = match std::thread::Builder::new()
            .name("subledger-writer".into())
            .spawn(move || writer.run(receiver))
        {
            Ok(handle) => handle,
            Err(error) => {
                let _ = snapshots.send(snapshotter::SnapshotRequest::Stop);
                let _ = snapshot_handle.join();
                return Err(OpenError::Thread(error.to_string()));
            }
        };
        Ok(Ledger {
            sender,
            shared,
            writer: Mutex::new(Some(handle)),
            snapshots,
            snapshotter: Mutex::new(Some(snapshot_handle)),
            snapshot_error,
            snapshot_replica_held,
            snapshots_written,
            recovery,
        })
    }

    /// What opening found: the snapshot used, events replayed, snapshots skipped and why.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Catches the snapshot thread up with the durable log and writes a snapshot now (unless
    /// one at the same sequence exists). Returns its sequence number.
    pub fn snapshot_now(&self) -> Result<Sequence, SnapshotFailed> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.snapshots
            .send(snapshotter::SnapshotRequest::Now(reply))
            .map_err(|_| SnapshotFailed::Stopped)?;
        answer
            .recv()
            .map_err(|_| SnapshotFailed::Stopped)?
            .map_err(SnapshotFailed::Failed)
    }

    /// Submits a command and waits (blocking the thread) until it is durable or refused.
    /// The outer `Result` is about the engine, the inner [`Outcome`] about the rules.
    pub fn submit(&self, command: Command) -> Result<Outcome, EngineError> {
        let (reply, answer) = slot::slot();
        self.enqueue(Request::Commands(vec![command], Reply::Blocking(reply)))?;
        answer.recv().unwrap_or_else(|| Err(self.stopped()))
    }

    /// Submits a command; the future resolves when it is durable or refused. Never blocks the
    /// async runtime: enqueueing fails fast with `Busy` when the queue is full.
    pub async fn submit_async(&self, command: Command) -> Result<Outcome, EngineError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.enqueue(Request::Commands(vec![command], Reply::Async(reply)))?;
        answer.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    /// Submits up to [`REQUEST_COMMANDS_MAX`] commands as one request and waits for all their
    /// outcomes (in order). They are decided one after another in the same group commit, each
    /// with its own outcome: a rejection of one does not affect the others. One queue slot,
    /// one reply: the way to reach high throughput from few callers.
    pub fn submit_batch(&self, commands: Vec<Command>) -> Result<Vec<Outcome>, EngineError> {
        Ledger::check_request_size(&commands)?;
        let (reply, answer) = slot::slot();
        self.enqueue(Request::Commands(commands, Reply::BatchBlocking(reply)))?;
        answer.recv().unwrap_or_else(|| Err(self.stopped()))
    }

    /// The async form of [`Ledger::submit_batch`].
    pub async fn submit_batch_async(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<Outcome>, EngineError> {
        Ledger::check_request_size(&commands)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.enqueue(Request::Commands(commands, Reply::BatchAsync(reply)))?;
        answer.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    fn check_request_size(commands: &[Command]) -> Result<(), EngineError> {
        if commands.len() > REQUEST_COMMANDS_MAX {
            return Err(EngineError::TooManyCommands {
                max: REQUEST_COMMANDS_MAX,
            });
        }
        Ok(())
    }

    fn enqueue(&self, request: Request) -> Result<(), EngineError> {
        if let Some(reason) = self.shared.failure() {
            return Err(EngineError::Stopped { reason });
        }
        self.sender.try_send(request).map_err(|error| match error {
            TrySendError::Full(_) => EngineError::Busy,
            TrySendError::Disconnected(_) => self.stopped(),
        })
    }

    fn stopped(&self) -> EngineError {
        match self.shared.failure() {
            Some(reason) => EngineError::Stopped { reason },
            None => EngineError::Closed,
        }
    }

    /// Runs `query` against the committed read views (a brief shared lock), once they hold
    /// every batch whose callers have been answered when the read starts (read-your-writes).
    pub fn read<R>(&self, query: impl FnOnce(&Views) -> R) -> R {
        self.shared.gate.wait_for_answered();
        match self.shared.views.read() {
            Ok(views) => query(&views),
            // Only the views thread writes, and a panic there poisons the lock. The engine has
            // then failed (submissions say so), and the views may hold part of the batch being
            // applied, whose callers were already answered (ADR 0005, amendment): after a
            // fail-stop, reads are best effort until the ledger is reopened from the log.
            Err(poisoned) => query(&poisoned.into_inner()),
        }
    }

    /// A reader over the committed log, for change feeds and audits.
    /// The argon2id hashes of `key`'s active secrets (`None`: no such account). The views keep
    /// only where each hash is (the sequence number of the event that recorded it), so this
    /// reads one log record per secret: it blocks, so async callers run it on a blocking
    /// thread. Meant for authentications that miss a cache of verified credentials.
    pub fn secret_hashes(
        &self,
        key: &ApiKey,
    ) -> Result<Option<Vec<(SecretId, SecretHash)>>, EngineError> {
        let stored: Option<Vec<(SecretId, StoredHash)>> = self.read(|views| {
            views.secrets(key).map(|secrets| {
                secrets
                    .iter()
                    .map(|secret| (secret.id, secret.hash.clone()))
                    .collect()
            })
        });
        let Some(stored) = stored else {
            return Ok(None);
        };
        let mut hashes = Vec::with_capacity(stored.len());
        for (id, place) in stored {
            let hash = match place {
                StoredHash::Here(hash) => *hash,
                // The views show only durable events, so the log holds this one.
                StoredHash::InLog(seq) => hash_in_log(self.shared.reader.as_ref(), seq, id)
                    .map_err(|error| EngineError::Log(error.to_string()))?
                    .ok_or_else(|| {
                        EngineError::Log(format!("the event at {seq} does not record secret {id}"))
                    })?,
            };
            hashes.push((id, hash));
        }
        Ok(Some(hashes))
    }

    pub fn log_reader(&self) -> Arc<dyn LogReader> {
        Arc::clone(&self.shared.reader)
    }

    /// A change feed from `from` (inclusive): the log's events first, then live ones, in order
    /// and exactly once, filtered. See [`Feed`].
    pub fn feed(&self, from: Sequence, filter: Filter) -> Result<Feed, FeedError> {
        subscription::feed(&self.shared, from, filter)
    }

    /// Subscribes to events committed from now on, filtered. See [`Subscription`].
    pub fn subscribe(&self, filter: Filter) -> Result<Subscription, SubscriptionError> {
        subscription::subscribe(&self.shared, filter)
    }

    /// The engine's counters and queue depth.
    pub fn metrics(&self) -> Metrics {
        let counters = &self.shared.counters;
        Metrics {
            commands: counters.commands.load(Ordering::Relaxed),
            rejected: counters.rejected.load(Ordering::Relaxed),
            batches: counters.batches.load(Ordering::Relaxed),
            commands_appended: counters.commands_appended.load(Ordering::Relaxed),
            syncs: counters.syncs.load(Ordering::Relaxed),
            events: counters.events.load(Ordering::Relaxed),
            queue_depth: self.sender.len(),
            last_seq: self.read(Views::last_seq),
            snapshot_error: self
                .snapshot_error
                .lock()
                .ok()
                .and_then(|error| error.clone()),
            snapshot_replica_held: self.snapshot_replica_held.load(Ordering::Relaxed),
            snapshots_written: self.snapshots_written.count.load(Ordering::Relaxed),
            last_snapshot: Sequence(self.snapshots_written.last.load(Ordering::Relaxed)),
            commit_latency_buckets: counters
                .commit_latency
                .iter()
                .map(|counter| counter.load(Ordering::Relaxed))
                .collect(),
            commit_latency_sum_micros: counters.commit_latency_sum_micros.load(Ordering::Relaxed),
        }
    }

    /// Why the writer stopped, if it did (fail-stop).
    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    /// A fresh random command id (UUID v4).
    pub fn new_command_id(&self) -> CommandId {
        CommandId::from_uuid(uuid::Uuid::new_v4())
    }

    /// A fresh random secret id (UUID v4).
    pub fn new_secret_id(&self) -> SecretId {
        SecretId::from_uuid(uuid::Uuid::new_v4())
    }

    /// A fresh random api key. Collisions are refused by the rules (`KeyTaken`); retry then.
    pub fn new_api_key(&self) -> ApiKey {
        let random = uuid::Uuid::new_v4().into_bytes();
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&random[..8]);
        ApiKey::from_random(bytes)
    }

    /// Finishes every command queued so far, stops the writer and returns the final decide-side
    /// state and the log (for tests and tools). Commands submitted afterwards get `Closed`.
    pub fn close_into_parts(self) -> Result<(State, Box<dyn EventLog>), EngineError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        // A blocking send: closing must not be refused because the queue is full.
        if self.sender.send(Request::Close(reply)).is_err() {
            return Err(self.stopped());
        }
        let parts = answer.recv().map_err(|_| self.stopped());
        self.join_writer();
        parts
    }

    /// Finishes every queued command and stops the writer.
    pub fn close(self) -> Result<(), EngineError> {
        self.close_into_parts().map(|_| ())
    }

    fn join_writer(&self) {
        let handle = self.writer.lock().ok().and_then(|mut handle| handle.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        let _ = self.snapshots.send(snapshotter::SnapshotRequest::Stop);
        let handle = self
            .snapshotter
            .lock()
            .ok()
            .and_then(|mut handle| handle.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for Ledger {
    /// Dropping drains the queue like `close`: every command already accepted gets its outcome.
    fn drop(&mut self) {
        let running = self
            .writer
            .lock()
            .map(|handle| handle.is_some())
            .unwrap_or(false);
        if running {
            let (reply, _answer) = crossbeam_channel::bounded(1);
            let _ = self.sender.send(Request::Close(reply));
            self.join_writer();
        }
    }
}
