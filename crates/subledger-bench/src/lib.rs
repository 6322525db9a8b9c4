//! subledger-bench: the load harness behind `subledger bench`.
//!
//! Closed-loop clients (one OS thread each) submit commands through the public embedding API
//! (`Ledger::submit` or `Ledger::submit_batch`), each waiting for its outcome before sending
//! the next, against a durable sled ledger in a fresh temporary directory (or `--data`, or in
//! memory). Setup (accounts, initial funds) is not measured. After the load the harness
//! measures recovery twice: from the newest snapshot, and by replaying the whole log.
//!
//! Workloads:
//! - `tigerbeetle`: `accounts` accounts in families of one primary and 99 own-balance
//!   subaccounts; balance transfers between a primary and one of its subaccounts in either
//!   direction, `hot_accounts_pct` % of them on the hottest 1 % of families; ids unique.
//! - `vonage`: `primaries` × `subaccounts_per_primary`, half of the subaccounts with their own
//!   balance; 80 % charges, 15 % balance transfers, 5 % credit transfers, and a trickle of
//!   suspensions, reactivations and secret rotations (a new secret; later, the revocation of
//!   one the client created, or of an unknown id when it has none) — some commands are
//!   rejected by the rules, as in real traffic. Over HTTP a revocation names the id the server
//!   gave the secret when it was created.

// Rates and durations are reported as floating point; money never is.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use subledger_core::{
    Amount, ApiKey, Charge, Command, CommandId, CreateSecret, CreateSubaccount, Currency,
    NewSecret, OpenPrimary, RevokeSecret, SecretHash, SecretId, TopUp, Transfer, UpdateSubaccount,
};
use subledger_engine::{
    Config, EngineError, Ledger, OpenError, Outcome, SnapshotReplica, SystemClock,
    REQUEST_COMMANDS_MAX,
};
use subledger_log::MemoryLog;
use subledger_store::{SledLog, StoreError, StoreOptions};

pub mod cpu;
pub mod http;
pub mod probe;
pub use cpu::{CpuSample, CpuUse};
pub use http::HttpTarget;
pub use probe::{probe, MachineProbe};
pub use subledger_engine::COMMIT_LATENCY_BUCKETS_MICROS;

/// The name of the embedded harness's client threads (and tokio workers), as `cpu` reports
/// them.
pub const CLIENT_THREAD_NAME: &str = "bench-client";
/// Most client threads.
pub const CLIENTS_MAX: usize = 4_096;
/// Most accounts a run may create.
pub const ACCOUNTS_MAX: usize = 10_000_000;
/// Subaccounts per family in the `tigerbeetle` workload.
const TIGERBEETLE_SUBACCOUNTS: usize = 99;
/// How often the throughput timeline is sampled.
const TIMELINE_SAMPLE_MILLIS: u64 = 100;
/// Longest wait, after an on-demand snapshot, for a `rebuilt` snapshot thread to drop its
/// replica before `rss_bytes_after_snapshot` is read (it answers first, then drops it).
const REPLICA_RELEASE_WAIT_MILLIS: u64 = 5_000;

/// Which traffic to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    TigerBeetle,
    Vonage,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    pub workload: Workload,
    /// `tigerbeetle`: total accounts.
    pub accounts: usize,
    /// `vonage`: primaries.
    pub primaries: usize,
    /// `vonage`: subaccounts per primary.
    pub subaccounts_per_primary: usize,
    /// Commands submitted during the measured load.
    pub commands: u64,
    /// Closed-loop clients.
    pub clients: usize,
    /// Commands per submission (1: `submit`; more: `submit_batch`).
    pub batch_size: usize,
    /// Clients are tasks on a tokio runtime with one worker per core, submitting with
    /// `submit_async` / `submit_batch_async` (as an async server embeds the ledger), instead of
    /// one OS thread each blocked in `submit`.
    pub async_clients: bool,
    /// `tigerbeetle`: share of transfers on the hot accounts, in percent.
    pub hot_accounts_pct: u8,
    /// Where the ledger lives; `None` for a fresh temporary directory.
    pub data: Option<PathBuf>,
    /// No durability at all: the in-memory log.
    pub in_memory: bool,
    pub seed: u64,
    /// Store layout: most events per sled value.
    pub events_per_record: usize,
    /// Engine: what the snapshot thread keeps between snapshots, during the load (with
    /// `snapshot_every_events`) and after the snapshot the harness takes (it shows in
    /// `rss_bytes_after_snapshot`).
    pub snapshot_replica: SnapshotReplica,
    /// Engine: background snapshots during the load, every this many events, as `serve` takes
    /// them (0: none, so that they do not compete with the load for the cores).
    pub snapshot_every_events: u64,
    /// Engine: with `snapshot_every_events`, the interval's growth with the ledger
    /// (`Config::snapshot_growth_percent`).
    pub snapshot_growth_percent: u32,
    /// Engine: added to the snapshot thread's nice value (`Config::snapshot_niceness`).
    pub snapshot_niceness: u8,
    /// Engine: most commands per group commit.
    pub batch_commands_max: usize,
    /// Engine: fewest commands in a batch for the writer to hand it to the log thread
    /// (`Config::log_handoff_commands_min`).
    pub log_handoff_commands_min: usize,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions {
            workload: Workload::TigerBeetle,
            accounts: 10_000,
            primaries: 1_000,
            subaccounts_per_primary: 100,
            commands: 1_000_000,
            clients: 16,
            batch_size: 1,
            async_clients: false,
            hot_accounts_pct: 80,
            data: None,
            in_memory: false,
            seed: 42,
            events_per_record: subledger_store::EVENTS_PER_RECORD_DEFAULT,
            snapshot_replica: SnapshotReplica::Kept,
            snapshot_every_events: 0,
            snapshot_growth_percent: subledger_engine::SNAPSHOT_GROWTH_PERCENT_DEFAULT,
            snapshot_niceness: subledger_engine::SNAPSHOT_NICENESS_DEFAULT,
            batch_commands_max: subledger_engine::BATCH_COMMANDS_MAX_DEFAULT,
            log_handoff_commands_min: subledger_engine::LOG_HANDOFF_COMMANDS_MIN_DEFAULT,
        }
    }
}

/// Latency percentiles of one submission round trip, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// Group commits whose append and sync took at most `le_us` µs (and more than the previous
/// bucket's bound); `le_us` is `None` for the last bucket, the slower ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CommitBucket {
    pub le_us: Option<u64>,
    pub syncs: u64,
}

/// The load's group commits by duration: `after` minus `before`, per bucket.
fn commit_buckets(before: &[u64], after: &[u64]) -> Vec<CommitBucket> {
    after
        .iter()
        .enumerate()
        .map(|(index, &count)| CommitBucket {
            le_us: subledger_engine::COMMIT_LATENCY_BUCKETS_MICROS
                .get(index)
                .copied(),
            syncs: count.saturating_sub(before.get(index).copied().unwrap_or(0)),
        })
        .collect()
}

/// What a run measured (the `--json` output).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    pub workload: Workload,
    /// `embedded` (the library in this process) or the `--http` URL.
    pub target: String,
    pub accounts: usize,
    pub clients: usize,
    pub batch_size: usize,
    pub commands: u64,
    pub committed: u64,
    pub rejected: u64,
    pub seconds: f64,
    pub commands_per_sec: f64,
    pub latency_us: Latency,
    /// Commands per batch appended to the log (decided together by the writer). A batch whose
    /// commands were all rejected or changed nothing appends nothing and is not counted.
    pub mean_batch_size: f64,
    /// Commands per sync of the log (of the appended batches): the log thread covers every
    /// batch waiting for it with one sync, so this is the group commit's size.
    pub commands_per_sync: f64,
    /// Mean time of a group commit's durable write (append and sync), in microseconds: the
    /// log thread's time per sync. `None` over HTTP.
    pub commit_us_mean: Option<f64>,
    /// The group commits of the load by duration: how many took at most `le_us` µs (and more
    /// than the bucket before); the last bucket (`le_us` null) counts the slower ones. Shows
    /// whether a latency tail came from the syncs. Empty over HTTP.
    pub commit_us_buckets: Vec<CommitBucket>,
    /// `None` (JSON `null`) for what only a remote server knows (`--http` runs).
    pub durable: Option<bool>,
    /// Background snapshots during the load: every this many events (0: none; `None` for
    /// `--http` runs).
    pub snapshot_every_events: Option<u64>,
    /// With `snapshot_every_events`: the interval's growth and the snapshot thread's
    /// niceness (`None` for `--http` runs).
    pub snapshot_growth_percent: Option<u32>,
    pub snapshot_niceness: Option<u8>,
    /// Background snapshots written during the load, and the position of the newest one
    /// when it ended (0: none); `None` for `--http` runs.
    pub snapshots_during_load: Option<u64>,
    pub last_snapshot_during_load: Option<u64>,
    pub events: u64,
    /// The data directory after the load, with one snapshot of it all.
    pub bytes_on_disk: Option<u64>,
    pub bytes_per_event: Option<f64>,
    /// The data directory with the log alone (before any snapshot).
    pub log_bytes: Option<u64>,
    pub log_bytes_per_event: Option<f64>,
    pub rss_bytes_peak: Option<u64>,
    /// Resident set size right after the load (the peak also counts transient growth, such
    /// as a hash table's old and new arrays side by side while it resizes).
    pub rss_bytes: Option<u64>,
    /// Resident set size once the ledger, closed and reopened by a full replay, has written a
    /// snapshot. It counts the snapshot thread's replica (with `SnapshotReplica::Kept`), but
    /// also what glibc keeps of the closed ledger's and the replay's freed memory, which is
    /// most of the difference from `rss_bytes`: since the replica went lean, `kept` and
    /// `rebuilt` give the same figure (`docs/benchmarks.md`, eleventh session).
    pub rss_bytes_after_snapshot: Option<u64>,
    /// `--in-memory` runs: bytes the in-memory log held after the load (the memory target
    /// leaves the log out: subtract this from `rss_bytes_peak`).
    pub memory_log_bytes: Option<u64>,
    pub recovery_seconds_full: Option<f64>,
    pub recovery_seconds_snapshot: Option<f64>,
    pub replay_events_per_sec: Option<f64>,
    /// (seconds since start, commands answered so far), every 100 ms.
    pub timeline: Vec<(f64, u64)>,
    /// The machine's memory, compute and disk speed, measured right after the run: compare
    /// two runs' figures with these beside them. With `--http`, the load generator's machine
    /// (the server's only when both share one, as in `docs/benchmarks.md`).
    pub machine: MachineProbe,
    /// The CPU time the load used, how busy that kept the cores, and by which threads
    /// (`None` without Linux's `/proc`). With `--http`, the load generator's process only.
    pub cpu: Option<CpuUse>,
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    #[error("invalid options: {0}")]
    Options(String),
    #[error("cannot prepare a data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("the engine failed: {0}")]
    Engine(#[from] EngineError),
    #[error("setup command refused: {0}")]
    Setup(String),
    #[error("HTTP: {0}")]
    Http(String),
}

/// Deterministic, cheap randomness (xorshift64*): the generator must not be what we measure.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        let bound = u64::try_from(bound.max(1)).unwrap_or(u64::MAX);
        usize::try_from(self.next() % bound).unwrap_or(0)
    }

    fn percent(&mut self) -> u64 {
        self.next() % 100
    }
}

fn account_key(index: usize) -> ApiKey {
    // Eight decimal digits are a valid key; indices stay below 10⁸ (ACCOUNTS_MAX). Written
    // digit by digit: the generator makes one or two keys per command, and formatting a
    // string for each was a few percent of a 256-client run's CPU, taken from the ledger.
    debug_assert!(index < 100_000_000, "eight digits");
    let mut digits = [b'0'; 8];
    let mut rest = index;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + u8::try_from(rest % 10).unwrap_or(0);
        rest /= 10;
    }
    ApiKey::from_bytes(digits).unwrap_or_else(|_| ApiKey::from_random([0; 8]))
}

fn units(minor: i128) -> Amount {
    Amount::from_units(minor).unwrap_or(Amount::ZERO)
}

/// A placeholder hash: the harness measures the ledger, not argon2 (the server hashes).
fn bench_secret(id: u128) -> NewSecret {
    let hash = SecretHash::new("$argon2id$v=19$m=19456,t=2,p=1$YmVuY2g$YmVuY2hoYXNo".into());
    NewSecret {
        id: SecretId::from_bytes(id.to_le_bytes()),
        hash: hash.unwrap_or_else(|_| unreachable!("a valid constant")),
    }
}

/// The account layout of a run: families of one primary and its subaccounts.
#[derive(Debug, Clone, Copy)]
struct Layout {
    families: usize,
    subaccounts: usize,
}

impl Layout {
    fn of(options: &BenchOptions) -> Layout {
        match options.workload {
            Workload::TigerBeetle => Layout {
                families: (options.accounts / (TIGERBEETLE_SUBACCOUNTS + 1)).max(1),
                subaccounts: TIGERBEETLE_SUBACCOUNTS,
            },
            Workload::Vonage => Layout {
                families: options.primaries.max(1),
                subaccounts: options.subaccounts_per_primary,
            },
        }
    }

    fn accounts(self) -> usize {
        self.checked_accounts().unwrap_or(usize::MAX)
    }

    /// `None` when the count overflows (`validate` refuses such options before any use).
    fn checked_accounts(self) -> Option<usize> {
        self.families.checked_mul(self.subaccounts.checked_add(1)?)
    }

    fn primary(self, family: usize) -> ApiKey {
        account_key(family * (self.subaccounts + 1))
    }

    fn subaccount(self, family: usize, sub: usize) -> ApiKey {
        account_key(family * (self.subaccounts + 1) + 1 + sub)
    }

    /// The primary owning a benchmark account (itself for a primary); keys are dense indices.
    fn owner(self, account: ApiKey) -> ApiKey {
        account.as_str().parse::<usize>().map_or(account, |index| {
            self.primary(index / (self.subaccounts + 1))
        })
    }

    /// In `vonage`, even subaccounts have their own balance, odd ones share the primary's.
    fn own_balance(self, workload: Workload, sub: usize) -> bool {
        workload == Workload::TigerBeetle || sub.is_multiple_of(2)
    }
}

/// Unique command ids: (client, counter) in the high bits, never colliding with setup ids.
struct Ids {
    client: u128,
    counter: u128,
}

impl Ids {
    fn next(&mut self) -> CommandId {
        self.counter += 1;
        CommandId::from_bytes(((self.client + 1) << 64 | self.counter).to_le_bytes())
    }
}

/// Generates one client's commands.
struct Generator {
    workload: Workload,
    layout: Layout,
    hot_pct: u64,
    rng: Rng,
    ids: Ids,
    /// Secrets this generator created and has not revoked yet, oldest first (at most
    /// [`CREATED_SECRETS_KEPT_MAX`]): a rotation revokes one of them.
    created_secrets: std::collections::VecDeque<(ApiKey, SecretId)>,
}

/// Most created secrets a generator keeps for later revocation.
const CREATED_SECRETS_KEPT_MAX: usize = 64;

impl Generator {
    fn next(&mut self) -> Command {
        match self.workload {
            Workload::TigerBeetle => self.tigerbeetle(),
            Workload::Vonage => self.vonage(),
        }
    }

    fn family(&mut self) -> usize {
        let hot = (self.layout.families / 100).max(1);
        if self.rng.percent() < self.hot_pct {
            self.rng.below(hot)
        } else {
            self.rng.below(self.layout.families)
        }
    }

    fn transfer(&mut self, family: usize, sub: usize, amount: Amount, credit: bool) -> Command {
        let primary = self.layout.primary(family);
        let subaccount = self.layout.subaccount(family, sub);
        let (from, to) = if self.rng.next().is_multiple_of(2) {
            (primary, subaccount)
        } else {
            (subaccount, primary)
        };
        let transfer = Transfer {
            id: self.ids.next(),
            primary,
            from,
            to,
            amount,
            reference: String::new(),
        };
        if credit {
            Command::TransferCredit(transfer)
        } else {
            Command::TransferBalance(transfer)
        }
    }

    fn tigerbeetle(&mut self) -> Command {
        let family = self.family();
        self.tigerbeetle_in(family)
    }

    /// A `tigerbeetle` transfer within one family (HTTP batches are per family).
    fn tigerbeetle_in(&mut self, family: usize) -> Command {
        let sub = self.rng.below(self.layout.subaccounts);
        self.transfer(family, sub, units(1_000_000), false)
    }

    fn vonage(&mut self) -> Command {
        let family = self.rng.below(self.layout.families);
        let sub = self.rng.below(self.layout.subaccounts.max(1));
        let own_sub = sub & !1;
        let roll = self.rng.next() % 10_000;
        match roll {
            0..=7_999 => Command::Charge(Charge {
                id: self.ids.next(),
                account: self.layout.subaccount(family, sub),
                amount: units(100_000 + i128::from(self.rng.percent()) * 10_000),
                reference: String::new(),
            }),
            8_000..=9_499 => self.transfer(family, own_sub, units(5_000_000), false),
            9_500..=9_979 => self.transfer(family, own_sub, units(1_000_000), true),
            9_980..=9_989 => Command::UpdateSubaccount(UpdateSubaccount {
                primary: self.layout.primary(family),
                subaccount: self.layout.subaccount(family, sub),
                name: None,
                suspended: Some(roll.is_multiple_of(2)),
                use_primary_account_balance: None,
            }),
            9_990..=9_994 => {
                let account = self.layout.subaccount(family, sub);
                let secret =
                    bench_secret(u128::from_le_bytes(self.ids.next().to_uuid().into_bytes()));
                if self.created_secrets.len() >= CREATED_SECRETS_KEPT_MAX {
                    self.created_secrets.pop_front();
                }
                self.created_secrets.push_back((account, secret.id));
                Command::CreateSecret(CreateSecret { account, secret })
            }
            // A rotation's second half: the oldest secret this generator created (refused as
            // unknown if the rules refused its creation), or, with none, an id never issued.
            _ => {
                let unknown = bench_secret(u128::from(self.rng.next())).id;
                let (account, secret) = self
                    .created_secrets
                    .pop_front()
                    .unwrap_or((self.layout.subaccount(family, sub), unknown));
                Command::RevokeSecret(RevokeSecret { account, secret })
            }
        }
    }
}

fn validate(options: &BenchOptions) -> Result<(), BenchError> {
    let refuse = |why: &str| Err(BenchError::Options(why.into()));
    if options.clients == 0 || options.clients > CLIENTS_MAX {
        return refuse("--clients must be between 1 and 4096");
    }
    if options.batch_size == 0 || options.batch_size > REQUEST_COMMANDS_MAX {
        return refuse("--batch-size must be between 1 and 8192");
    }
    if options.hot_accounts_pct > 100 {
        return refuse("--hot-accounts is a percentage (0-100)");
    }
    if Layout::of(options)
        .checked_accounts()
        .is_none_or(|accounts| accounts > ACCOUNTS_MAX)
    {
        return refuse("at most 10,000,000 accounts");
    }
    if options.workload == Workload::Vonage && options.subaccounts_per_primary < 2 {
        return refuse("the vonage workload needs at least 2 subaccounts per primary");
    }
    if options.in_memory && options.data.is_some() {
        return refuse("--data and --in-memory exclude each other");
    }
    Ok(())
}

/// Where the ledger lives during a run, and how to reopen it.
enum Storage {
    Memory(MemoryLog),
    Disk {
        dir: PathBuf,
        _temporary: Option<tempfile::TempDir>,
        options: StoreOptions,
    },
}

impl Storage {
    fn prepare(options: &BenchOptions) -> Result<Storage, BenchError> {
        if options.in_memory {
            return Ok(Storage::Memory(MemoryLog::new()));
        }
        let store = StoreOptions {
            events_per_record: options.events_per_record,
            ..StoreOptions::default()
        };
        match &options.data {
            Some(dir) => {
                let empty =
                    std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
                if !empty {
                    return Err(BenchError::Options(format!(
                        "{} is not empty: the benchmark needs a fresh data directory",
                        dir.display()
                    )));
                }
                Ok(Storage::Disk {
                    dir: dir.clone(),
                    _temporary: None,
                    options: store,
                })
            }
            None => {
                let temporary = tempfile::Builder::new()
                    .prefix("subledger-bench-")
                    .tempdir()?;
                Ok(Storage::Disk {
                    dir: temporary.path().to_path_buf(),
                    _temporary: Some(temporary),
                    options: store,
                })
            }
        }
    }

    fn open(&self, config: Config) -> Result<Ledger, BenchError> {
        match self {
            Storage::Memory(log) => Ok(Ledger::open(config, log.clone(), SystemClock)?),
            Storage::Disk { dir, options, .. } => {
                let (log, _) = SledLog::open(dir, *options)?;
                Ok(Ledger::open(config, log, SystemClock)?)
            }
        }
    }

    /// The data directory (`None` in memory).
    fn dir(&self) -> Option<&Path> {
        match self {
            Storage::Memory(_) => None,
            Storage::Disk { dir, .. } => Some(dir),
        }
    }

    fn bytes_on_disk(&self) -> u64 {
        match self {
            Storage::Memory(_) => 0,
            Storage::Disk { dir, .. } => directory_bytes(dir),
        }
    }
}

/// Reads every file under `dir` once (into the page cache); returns the bytes read.
fn read_every_file(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0_u64;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            total += read_every_file(&path)?;
            continue;
        }
        total += std::io::copy(&mut std::fs::File::open(&path)?, &mut std::io::sink())?;
    }
    Ok(total)
}

fn directory_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(metadata) if metadata.is_dir() => directory_bytes(&entry.path()),
            Ok(metadata) => metadata.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Peak resident set size of this process (Linux `VmHWM`), 0 where unknown.
pub fn rss_bytes_peak() -> u64 {
    process_status_bytes("VmHWM:")
}

/// Resident set size of this process now (Linux `VmRSS`), 0 where unknown.
pub fn rss_bytes() -> u64 {
    process_status_bytes("VmRSS:")
}

/// A size in kB from `/proc/self/status`, in bytes.
fn process_status_bytes(field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Setup commands on their way to the ledger, submitted in batches as they are generated:
/// every one must be accepted. Streaming them matters for the memory figure: a list of a
/// million setup commands (names, secret hashes) built up front was still allocated at the
/// end of the load, and counted in the peak RSS as if the ledger held it.
struct SetupSink<'a> {
    ledger: &'a Ledger,
    pending: Vec<Command>,
}

impl SetupSink<'_> {
    fn push(&mut self, command: Command) -> Result<(), BenchError> {
        self.pending.push(command);
        if self.pending.len() >= REQUEST_COMMANDS_MAX {
            self.flush()?;
        }
        Ok(())
    }

    /// Submits what is pending and waits for it: later phases rely on earlier ones.
    fn flush(&mut self) -> Result<(), BenchError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(REQUEST_COMMANDS_MAX));
        for outcome in self.ledger.submit_batch(chunk)? {
            outcome.map_err(|rejection| BenchError::Setup(rejection.to_string()))?;
        }
        Ok(())
    }
}

/// Opens the families and funds them (not measured).
fn setup(ledger: &Ledger, options: &BenchOptions, layout: Layout) -> Result<(), BenchError> {
    let mut secret = 0_u128;
    let mut next_secret = || {
        secret += 1;
        bench_secret(secret)
    };
    let mut setup_id = 0_u128;
    let mut next_id = || {
        setup_id += 1;
        CommandId::from_bytes(setup_id.to_le_bytes())
    };
    let mut sink = SetupSink {
        ledger,
        pending: Vec::with_capacity(REQUEST_COMMANDS_MAX),
    };
    for family in 0..layout.families {
        sink.push(Command::OpenPrimary(OpenPrimary {
            key: layout.primary(family),
            name: format!("bench primary {family}"),
            currency: Currency::EUR,
            credit_line: units(-100_000_000_000_000),
            secret: next_secret(),
        }))?;
    }
    sink.flush()?;
    for family in 0..layout.families {
        for sub in 0..layout.subaccounts {
            sink.push(Command::CreateSubaccount(CreateSubaccount {
                primary: layout.primary(family),
                key: layout.subaccount(family, sub),
                name: format!("bench sub {sub}"),
                use_primary_account_balance: !layout.own_balance(options.workload, sub),
                secret: next_secret(),
            }))?;
        }
        sink.push(Command::TopUp(TopUp {
            id: next_id(),
            primary: layout.primary(family),
            amount: units(1_000_000_000 * 100_000_000),
            reference: String::new(),
        }))?;
    }
    sink.flush()?;
    for family in 0..layout.families {
        let primary = layout.primary(family);
        for sub in (0..layout.subaccounts).filter(|sub| layout.own_balance(options.workload, *sub))
        {
            sink.push(Command::TransferBalance(Transfer {
                id: next_id(),
                primary,
                from: primary,
                to: layout.subaccount(family, sub),
                amount: units(1_000_000 * 100_000_000),
                reference: String::new(),
            }))?;
        }
    }
    sink.flush()
}

/// One client's results.
struct ClientResult {
    committed: u64,
    rejected: u64,
    latency: Histogram<u64>,
    /// Latencies not yet in `latency`. Recorded one at a time, each landed on a cache line of
    /// one of 256 histograms (~5 % of an in-memory 256-client run's CPU); a buffer's worth at
    /// once finds the histogram's few busy lines in cache.
    pending: Vec<u64>,
    /// When the client had its last answer.
    ended: Option<Instant>,
}

/// Latencies a client holds before recording them in its histogram.
const LATENCY_PENDING_MAX: usize = 1024;

impl ClientResult {
    fn new() -> ClientResult {
        ClientResult {
            committed: 0,
            rejected: 0,
            latency: new_histogram(),
            pending: Vec::with_capacity(LATENCY_PENDING_MAX),
            ended: None,
        }
    }

    fn flush(&mut self) {
        for micros in self.pending.drain(..) {
            self.latency.saturating_record(micros);
        }
    }

    /// The results with every latency recorded.
    fn finished(mut self) -> ClientResult {
        self.ended = Some(Instant::now());
        self.flush();
        self
    }
}

/// Client `index`'s share of the commands and its generator (its own random stream and ids).
fn client_plan(options: &BenchOptions, layout: Layout, client: usize) -> (u64, Generator) {
    let clients = u64::try_from(options.clients).unwrap_or(1).max(1);
    let index = u64::try_from(client).unwrap_or(0);
    let share = options.commands / clients + u64::from(index < options.commands % clients);
    let generator = Generator {
        workload: options.workload,
        layout,
        hot_pct: u64::from(options.hot_accounts_pct),
        rng: Rng::new(options.seed ^ index.wrapping_mul(0x51_7CC1_B727_220A)),
        ids: Ids {
            client: u128::from(index),
            counter: 0,
        },
        created_secrets: std::collections::VecDeque::new(),
    };
    (share, generator)
}

/// The percentiles of a latency histogram.
fn latency_of(histogram: &Histogram<u64>) -> Latency {
    Latency {
        p50: histogram.value_at_quantile(0.5),
        p99: histogram.value_at_quantile(0.99),
        p999: histogram.value_at_quantile(0.999),
        max: histogram.max(),
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

/// The next request of a client with `remaining` commands to send.
fn next_request(generator: &mut Generator, remaining: u64, batch_size: usize) -> Vec<Command> {
    (0..request_size(remaining, batch_size))
        .map(|_| generator.next())
        .collect()
}

/// Commands in a client's next request: a full batch, or what remains.
fn request_size(remaining: u64, batch_size: usize) -> usize {
    usize::try_from(remaining)
        .unwrap_or(usize::MAX)
        .min(batch_size)
}

impl ClientResult {
    /// Counts a request's outcomes and its latency; returns how many commands it answered.
    fn record(&mut self, started: Instant, outcomes: &[Outcome], answered: &AtomicU64) -> u64 {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        if self.pending.len() >= LATENCY_PENDING_MAX {
            self.flush();
        }
        self.pending.push(micros.max(1));
        for outcome in outcomes {
            if outcome.is_ok() {
                self.committed += 1;
            } else {
                self.rejected += 1;
            }
        }
        let done = u64::try_from(outcomes.len()).unwrap_or(0);
        answered.fetch_add(done, Ordering::Relaxed);
        done.max(1)
    }
}

fn run_client(
    ledger: &Ledger,
    mut generator: Generator,
    mut remaining: u64,
    batch_size: usize,
    answered: &AtomicU64,
) -> Result<ClientResult, EngineError> {
    let mut result = ClientResult::new();
    while remaining > 0 {
        // Single commands without a list made per request.
        if request_size(remaining, batch_size) == 1 {
            let command = generator.next();
            let started = Instant::now();
            let outcome = ledger.submit(command)?;
            remaining = remaining.saturating_sub(result.record(
                started,
                std::slice::from_ref(&outcome),
                answered,
            ));
            continue;
        }
        let commands = next_request(&mut generator, remaining, batch_size);
        let started = Instant::now();
        let outcomes = ledger.submit_batch(commands)?;
        remaining = remaining.saturating_sub(result.record(started, &outcomes, answered));
    }
    Ok(result.finished())
}

async fn run_client_async(
    ledger: Arc<Ledger>,
    mut generator: Generator,
    mut remaining: u64,
    batch_size: usize,
    answered: Arc<AtomicU64>,
) -> Result<ClientResult, EngineError> {
    let mut result = ClientResult::new();
    while remaining > 0 {
        // Single commands without a list made per request.
        if request_size(remaining, batch_size) == 1 {
            let command = generator.next();
            let started = Instant::now();
            let outcome = ledger.submit_async(command).await?;
            remaining = remaining.saturating_sub(result.record(
                started,
                std::slice::from_ref(&outcome),
                &answered,
            ));
            continue;
        }
        let commands = next_request(&mut generator, remaining, batch_size);
        let started = Instant::now();
        let outcomes = ledger.submit_batch_async(commands).await?;
        remaining = remaining.saturating_sub(result.record(started, &outcomes, &answered));
    }
    Ok(result.finished())
}

/// The clients under way, on OS threads or as tasks.
enum Clients {
    Threads(Vec<std::thread::JoinHandle<Result<ClientResult, EngineError>>>),
    Tasks(
        tokio::runtime::Runtime,
        Vec<tokio::task::JoinHandle<Result<ClientResult, EngineError>>>,
    ),
}

impl Clients {
    fn start(
        options: &BenchOptions,
        layout: Layout,
        ledger: &Arc<Ledger>,
        answered: &Arc<AtomicU64>,
    ) -> Result<Clients, BenchError> {
        let batch_size = options.batch_size;
        if !options.async_clients {
            let threads = (0..options.clients)
                .map(|client| {
                    let ledger = Arc::clone(ledger);
                    let answered = Arc::clone(answered);
                    let (share, generator) = client_plan(options, layout, client);
                    std::thread::Builder::new()
                        .name(CLIENT_THREAD_NAME.into())
                        .spawn(move || run_client(&ledger, generator, share, batch_size, &answered))
                })
                .collect::<Result<_, _>>()?;
            return Ok(Clients::Threads(threads));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(
                std::thread::available_parallelism()
                    .map(usize::from)
                    .unwrap_or(2),
            )
            .thread_name(CLIENT_THREAD_NAME)
            .enable_all()
            .build()?;
        let tasks = (0..options.clients)
            .map(|client| {
                let (share, generator) = client_plan(options, layout, client);
                runtime.spawn(run_client_async(
                    Arc::clone(ledger),
                    generator,
                    share,
                    batch_size,
                    Arc::clone(answered),
                ))
            })
            .collect();
        Ok(Clients::Tasks(runtime, tasks))
    }

    fn running(&self) -> bool {
        match self {
            Clients::Threads(threads) => threads.iter().any(|handle| !handle.is_finished()),
            Clients::Tasks(_, tasks) => tasks.iter().any(|handle| !handle.is_finished()),
        }
    }

    fn finish(self) -> Result<Vec<ClientResult>, BenchError> {
        let panicked = || BenchError::Setup("a client panicked".into());
        match self {
            Clients::Threads(threads) => threads
                .into_iter()
                .map(|handle| Ok(handle.join().map_err(|_| panicked())??))
                .collect(),
            Clients::Tasks(runtime, tasks) => runtime.block_on(async {
                let mut results = Vec::with_capacity(tasks.len());
                for task in tasks {
                    results.push(task.await.map_err(|_| panicked())??);
                }
                Ok(results)
            }),
        }
    }
}

/// Runs the benchmark. `progress` is called about ten times a second with (answered, total).
pub fn run(
    options: &BenchOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<BenchReport, BenchError> {
    validate(options)?;
    let layout = Layout::of(options);
    let storage = Storage::prepare(options)?;
    let config = Config {
        batch_commands_max: options.batch_commands_max,
        log_handoff_commands_min: options.log_handoff_commands_min,
        // By default no background snapshots: they would compete for the 2 cores during the
        // measurement. The harness takes one explicitly after the load to measure snapshot
        // recovery.
        snapshot_every_events: options.snapshot_every_events,
        snapshot_growth_percent: options.snapshot_growth_percent,
        snapshot_niceness: options.snapshot_niceness,
        snapshot_replica: options.snapshot_replica,
        ..Config::default()
    };
    let ledger = Arc::new(storage.open(config)?);
    setup(&ledger, options, layout)?;
    let before = ledger.metrics();
    let answered = Arc::new(AtomicU64::new(0));
    let cpu_before = CpuSample::now();
    let started = Instant::now();
    let clients = Clients::start(options, layout, &ledger, &answered)?;
    let mut timeline = Vec::new();
    while clients.running() {
        std::thread::sleep(Duration::from_millis(TIMELINE_SAMPLE_MILLIS));
        let done = answered.load(Ordering::Relaxed);
        timeline.push((started.elapsed().as_secs_f64(), done));
        progress(done, options.commands);
    }
    // Before the clients are joined: async clients' workers still run (threads of their
    // own have ended, and count as such).
    let cpu_after = CpuSample::now();
    // The load ends with the last client's last answer, not when the loop above (which
    // sleeps between samples) noticed: that overstated a 2-second run by up to a twentieth.
    let mut ended = None;
    let mut latency = new_histogram();
    let (mut committed, mut rejected) = (0, 0);
    for result in clients.finish()? {
        ended = ended.max(result.ended);
        committed += result.committed;
        rejected += result.rejected;
        latency
            .add(&result.latency)
            .map_err(|error| BenchError::Setup(error.to_string()))?;
    }
    let seconds = ended
        .unwrap_or_else(Instant::now)
        .saturating_duration_since(started)
        .as_secs_f64();
    let cpu = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| before.used_until(&after, cpu::cores()));
    let after = ledger.metrics();
    let batches = after.batches.saturating_sub(before.batches).max(1);
    let appended = after
        .commands_appended
        .saturating_sub(before.commands_appended);
    let events = after.events;
    let rss_bytes_peak = rss_bytes_peak();
    let rss_bytes = rss_bytes();
    let memory_log_bytes = match &storage {
        Storage::Memory(log) => Some(log.record_bytes()),
        Storage::Disk { .. } => None,
    };
    // Recovery and disk: close with the log alone (its size), reopen by replaying all of it,
    // take a snapshot, close (the size with one snapshot), and reopen from the snapshot.
    let ledger = Arc::into_inner(ledger)
        .ok_or_else(|| BenchError::Setup("the ledger is still shared".into()))?;
    ledger.close()?;
    let log_bytes = storage.bytes_on_disk();
    let timed_open = |uses_snapshots: bool| -> Result<(f64, Ledger), BenchError> {
        let opened = Instant::now();
        let ledger = storage.open(Config {
            recovery_uses_snapshots: uses_snapshots,
            snapshot_every_events: 0,
            snapshot_replica: options.snapshot_replica,
            ..Config::default()
        })?;
        Ok((opened.elapsed().as_secs_f64(), ledger))
    };
    let (recovery_seconds_full, ledger) = timed_open(false)?;
    ledger
        .snapshot_now()
        .map_err(|error| BenchError::Setup(error.to_string()))?;
    if options.snapshot_replica == SnapshotReplica::Rebuilt {
        let waited = Instant::now();
        while ledger.metrics().snapshot_replica_held
            && waited.elapsed() < Duration::from_millis(REPLICA_RELEASE_WAIT_MILLIS)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let rss_bytes_after_snapshot = self::rss_bytes();
    ledger.close()?;
    let bytes_on_disk = storage.bytes_on_disk();
    let (recovery_seconds_snapshot, ledger) = timed_open(true)?;
    ledger.close()?;
    let machine = probe(storage.dir());
    let per_event = |bytes: u64| {
        if events > 0 {
            bytes as f64 / events as f64
        } else {
            0.0
        }
    };
    let per_second = |count: u64, seconds: f64| {
        if seconds > 0.0 {
            count as f64 / seconds
        } else {
            0.0
        }
    };
    Ok(BenchReport {
        workload: options.workload,
        target: "embedded".into(),
        accounts: layout.accounts(),
        clients: options.clients,
        batch_size: options.batch_size,
        commands: options.commands,
        committed,
        rejected,
        seconds,
        commands_per_sec: per_second(committed + rejected, seconds),
        latency_us: latency_of(&latency),
        mean_batch_size: appended as f64 / batches as f64,
        commands_per_sync: appended as f64 / after.syncs.saturating_sub(before.syncs).max(1) as f64,
        commit_us_mean: Some(
            after
                .commit_latency_sum_micros
                .saturating_sub(before.commit_latency_sum_micros) as f64
                / after.syncs.saturating_sub(before.syncs).max(1) as f64,
        ),
        commit_us_buckets: commit_buckets(
            &before.commit_latency_buckets,
            &after.commit_latency_buckets,
        ),
        durable: Some(!options.in_memory),
        snapshot_every_events: Some(options.snapshot_every_events),
        snapshot_growth_percent: Some(options.snapshot_growth_percent),
        snapshot_niceness: Some(options.snapshot_niceness),
        snapshots_during_load: Some(
            after
                .snapshots_written
                .saturating_sub(before.snapshots_written),
        ),
        last_snapshot_during_load: Some(after.last_snapshot.0),
        events,
        bytes_on_disk: Some(bytes_on_disk),
        bytes_per_event: Some(per_event(bytes_on_disk)),
        log_bytes: Some(log_bytes),
        log_bytes_per_event: Some(per_event(log_bytes)),
        rss_bytes_peak: Some(rss_bytes_peak),
        rss_bytes: Some(rss_bytes),
        rss_bytes_after_snapshot: Some(rss_bytes_after_snapshot),
        memory_log_bytes,
        recovery_seconds_full: Some(recovery_seconds_full),
        recovery_seconds_snapshot: Some(recovery_seconds_snapshot),
        replay_events_per_sec: Some(per_second(events, recovery_seconds_full)),
        timeline,
        machine,
        cpu,
    })
}

/// What [`recovery`] measured on an existing data directory (`bench --recovery-only`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecoveryReport {
    /// The log head: events in the ledger.
    pub events: u64,
    /// The snapshot the second open started from (`None`: the directory has none).
    pub snapshot_seq: Option<u64>,
    pub recovery_seconds_full: f64,
    pub recovery_seconds_snapshot: f64,
    pub replay_events_per_sec: f64,
    /// Peak RSS of the process, i.e. of the larger of the two recovered ledgers.
    pub rss_bytes_peak: u64,
    /// Bytes of the directory's files read once before the timed opens, so that both find
    /// them in the page cache alike.
    pub bytes_read_before: u64,
    /// The machine's speed right after the two opens (the disk probe in `dir`).
    pub machine: MachineProbe,
}

/// Opens the ledger in `dir` twice, by a full replay and from its newest snapshot, closing it
/// after each, and times both opens. Writes nothing but what opening a ledger writes, so it
/// can measure a production directory's recovery time (on a copy: sled locks the directory).
/// Every file is read once first, untimed: otherwise the first open would also pay for
/// reading the files from the disk and the second would find them cached (`run` measures
/// both opens with the files just written, so cached too).
pub fn recovery(dir: &Path) -> Result<RecoveryReport, BenchError> {
    if !dir.join("conf").exists() {
        return Err(BenchError::Options(format!(
            "{} holds no ledger",
            dir.display()
        )));
    }
    let bytes_read_before = read_every_file(dir)?;
    let timed_open = |uses_snapshots: bool| -> Result<(f64, Ledger), BenchError> {
        let opened = Instant::now();
        let (log, _) = SledLog::open(dir, StoreOptions::default())?;
        let ledger = Ledger::open(
            Config {
                recovery_uses_snapshots: uses_snapshots,
                snapshot_every_events: 0,
                ..Config::default()
            },
            log,
            SystemClock,
        )?;
        Ok((opened.elapsed().as_secs_f64(), ledger))
    };
    let (recovery_seconds_full, ledger) = timed_open(false)?;
    let events = ledger.recovery().head.0;
    ledger.close()?;
    let (recovery_seconds_snapshot, ledger) = timed_open(true)?;
    let snapshot_seq = ledger.recovery().snapshot.map(|seq| seq.0);
    ledger.close()?;
    let rss_bytes_peak = rss_bytes_peak();
    let machine = probe(Some(dir));
    Ok(RecoveryReport {
        events,
        snapshot_seq,
        recovery_seconds_full,
        recovery_seconds_snapshot,
        replay_events_per_sec: if recovery_seconds_full > 0.0 {
            events as f64 / recovery_seconds_full
        } else {
            0.0
        },
        rss_bytes_peak,
        bytes_read_before,
        machine,
    })
}

/// Compiles and runs the README's code blocks as doc tests, so the embedding examples stay true
/// (this crate depends on every crate they use).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_keys_are_the_index_in_eight_digits() {
        for index in [0, 7, 10, 99, 1_234_567, 99_999_999] {
            assert_eq!(account_key(index).as_str(), format!("{index:08}"));
        }
    }

    /// A rotation's revocation names a secret the generator created (the oldest not yet
    /// revoked), so that rotations complete; with none created, an id never issued.
    #[test]
    fn revocations_name_secrets_the_generator_created() {
        let options = BenchOptions {
            workload: Workload::Vonage,
            ..BenchOptions::default()
        };
        let (_, mut generator) = client_plan(&options, Layout::of(&options), 0);
        let mut created = std::collections::VecDeque::new();
        let (mut revoked_known, mut revoked_unknown) = (0, 0);
        for _ in 0..200_000 {
            match generator.next() {
                Command::CreateSecret(create) => {
                    created.push_back((create.account, create.secret.id));
                }
                Command::RevokeSecret(revoke) => match created.pop_front() {
                    Some(expected) => {
                        assert_eq!((revoke.account, revoke.secret), expected);
                        revoked_known += 1;
                    }
                    None => revoked_unknown += 1,
                },
                _ => {}
            }
        }
        assert!(revoked_known > 10, "{revoked_known} rotations completed");
        assert!(revoked_unknown > 0, "some revocations name unknown ids");
    }

    #[test]
    fn every_latency_is_recorded_however_many_wait() {
        let answered = AtomicU64::new(0);
        let mut result = ClientResult::new();
        let started = Instant::now();
        for _ in 0..LATENCY_PENDING_MAX * 2 + 3 {
            assert_eq!(result.record(started, &[], &answered), 1);
        }
        let result = result.finished();
        assert_eq!(result.latency.len(), (LATENCY_PENDING_MAX * 2 + 3) as u64);
        assert!(result.pending.is_empty());
    }
}
