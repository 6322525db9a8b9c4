//! `subledger bench`: flags, the human table, `--json`, and the `--plot` SVG.

// Rates and chart coordinates are floating point; money never is.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss)]

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use subledger_bench::{BenchOptions, BenchReport, Workload};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WorkloadArg {
    Tigerbeetle,
    Vonage,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The traffic: `tigerbeetle` (transfers between accounts, hot spots) or `vonage`
    /// (charges, transfers, credit, suspensions, secret rotations).
    #[arg(long, value_enum, default_value = "tigerbeetle")]
    workload: WorkloadArg,
    /// tigerbeetle: number of accounts (families of one primary and 99 subaccounts).
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    /// vonage: number of primaries.
    #[arg(long, default_value_t = 1_000)]
    primaries: usize,
    /// vonage: subaccounts per primary.
    #[arg(long, default_value_t = 100)]
    subaccounts_per_primary: usize,
    /// Commands in the measured load.
    #[arg(long, default_value_t = 1_000_000)]
    commands: u64,
    /// Closed-loop clients (threads), each waiting for its answer before the next request.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Commands per request (1 = single submissions; up to 8192 = batch submissions).
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Run the clients as tasks on a tokio runtime (one worker per core) submitting with
    /// `submit_async`, as an async server does, instead of one OS thread each.
    #[arg(long, conflicts_with = "http")]
    async_clients: bool,
    /// tigerbeetle: percent of transfers on the hottest 1 % of families.
    #[arg(long = "hot-accounts", default_value_t = 80)]
    hot_accounts: u8,
    /// Data directory (must be empty); default: a fresh temporary directory.
    #[arg(long, conflicts_with_all = ["in_memory", "http"])]
    data: Option<PathBuf>,
    /// Apply no load: open the existing ledger in `--data` by a full replay, then from its
    /// newest snapshot, and report both times (use a copy of a live directory).
    #[arg(long, requires = "data")]
    recovery_only: bool,
    /// No durability: the in-memory log.
    #[arg(long, conflicts_with = "http")]
    in_memory: bool,
    /// Load a running server through its HTTP API instead (`http://host:port`; it must hold
    /// no accounts yet). Needs the admin token: `SUBLEDGER_ADMIN_TOKEN` or
    /// `--admin-token-file`.
    #[arg(long, value_name = "URL")]
    http: Option<String>,
    /// With `--http`: a file holding the server's admin token.
    #[arg(long, requires = "http")]
    admin_token_file: Option<PathBuf>,
    /// Most events per stored sled value.
    #[arg(long, default_value_t = subledger_store_default_events_per_record())]
    events_per_record: usize,
    /// What the snapshot thread keeps once the reopened ledger has written its snapshot
    /// (`rss_bytes_after_snapshot`): `kept` or `rebuilt`, as `serve --snapshot-replica`.
    #[arg(long, value_enum, default_value = "kept", conflicts_with = "http")]
    snapshot_replica: crate::SnapshotReplicaArg,
    /// Take background snapshots during the load every this many events, as `serve` does
    /// (every 1,000,000); 0, the default, takes none during the load.
    #[arg(long, default_value_t = 0, conflicts_with = "http")]
    snapshot_every_events: u64,
    /// With `--snapshot-every-events`: a background snapshot also waits until the new events
    /// number at least this percentage of the last snapshot's position, as `serve
    /// --snapshot-growth-percent` (0: a fixed interval).
    #[arg(long, default_value_t = subledger_engine::SNAPSHOT_GROWTH_PERCENT_DEFAULT, conflicts_with = "http",
          value_parser = clap::value_parser!(u32).range(0..=i64::from(subledger_engine::SNAPSHOT_GROWTH_PERCENT_MAX)))]
    snapshot_growth_percent: u32,
    /// Added to the background snapshot thread's nice value (Linux; 0: as the process): the
    /// writer, log and views threads get the cores first when all want them.
    #[arg(long, default_value_t = subledger_engine::SNAPSHOT_NICENESS_DEFAULT, conflicts_with = "http",
          value_parser = clap::value_parser!(u8).range(0..=i64::from(subledger_engine::SNAPSHOT_NICENESS_MAX)))]
    snapshot_niceness: u8,
    /// Fewest commands in a batch for the writer to hand it to the log thread and decide the
    /// next batch while it is synced (smaller batches the writer syncs itself), as `serve
    /// --log-handoff-commands-min`.
    #[arg(long, default_value_t = subledger_engine::LOG_HANDOFF_COMMANDS_MIN_DEFAULT, conflicts_with = "http")]
    log_handoff_commands_min: usize,
    /// Random seed of the workload.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Write an SVG chart of throughput over time and the latency percentiles.
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn recovery_only(args: &BenchArgs) -> Result<()> {
    let dir = args
        .data
        .as_deref()
        .context("--recovery-only needs --data")?;
    let report = subledger_bench::recovery(dir).context("measuring recovery failed")?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("events                    {}", report.events);
        match report.snapshot_seq {
            Some(seq) => println!("snapshot at               {seq}"),
            None => println!("snapshot at               none"),
        }
        println!(
            "recovery, full replay     {:.3} s ({:.0} events/s)",
            report.recovery_seconds_full, report.replay_events_per_sec
        );
        println!(
            "recovery, from snapshot   {:.3} s",
            report.recovery_seconds_snapshot
        );
        println!(
            "peak RSS                  {} MiB",
            report.rss_bytes_peak >> 20
        );
        println!(
            "read first, untimed       {} MiB (both opens find the files cached)",
            report.bytes_read_before >> 20
        );
        println!("machine                   {}", machine(&report.machine));
    }
    Ok(())
}

/// The admin token for `--http`: the file's first line, or `SUBLEDGER_ADMIN_TOKEN`.
fn admin_token(file: Option<&std::path::Path>) -> Result<String> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
        None => std::env::var("SUBLEDGER_ADMIN_TOKEN").unwrap_or_default(),
    };
    if token.is_empty() {
        anyhow::bail!("--http needs the admin token: SUBLEDGER_ADMIN_TOKEN or --admin-token-file");
    }
    Ok(token)
}

const fn subledger_store_default_events_per_record() -> usize {
    1_024
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.recovery_only {
        return recovery_only(args);
    }
    let options = BenchOptions {
        workload: match args.workload {
            WorkloadArg::Tigerbeetle => Workload::TigerBeetle,
            WorkloadArg::Vonage => Workload::Vonage,
        },
        accounts: args.accounts,
        primaries: args.primaries,
        subaccounts_per_primary: args.subaccounts_per_primary,
        commands: args.commands,
        clients: args.clients,
        batch_size: args.batch_size,
        async_clients: args.async_clients,
        hot_accounts_pct: args.hot_accounts,
        data: args.data.clone(),
        in_memory: args.in_memory,
        seed: args.seed,
        events_per_record: args.events_per_record,
        snapshot_replica: args.snapshot_replica.into(),
        snapshot_every_events: args.snapshot_every_events,
        snapshot_growth_percent: args.snapshot_growth_percent,
        snapshot_niceness: args.snapshot_niceness,
        log_handoff_commands_min: args.log_handoff_commands_min,
        ..BenchOptions::default()
    };
    let interactive = std::io::stderr().is_terminal();
    let progress = |done: u64, total: u64| {
        if interactive {
            eprint!("\r  {done} / {total} commands answered");
        }
    };
    let report = match &args.http {
        Some(url) => {
            let token = admin_token(args.admin_token_file.as_deref())?;
            let target = subledger_bench::HttpTarget::new(url.clone(), token);
            subledger_bench::http::run(&options, &target, &progress)
        }
        None => subledger_bench::run(&options, &progress),
    }
    .context("the benchmark failed")?;
    if interactive {
        eprintln!();
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, svg(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// A figure, or why there is none: only the server knows it in `--http` runs.
fn known(value: Option<String>) -> String {
    value.unwrap_or_else(|| "n/a (measured by the server, not over HTTP)".into())
}

fn print_table(report: &BenchReport) {
    let rows = [
        ("workload", format!("{:?}", report.workload).to_lowercase()),
        ("target", report.target.clone()),
        ("accounts", report.accounts.to_string()),
        (
            "clients × batch",
            format!("{} × {}", report.clients, report.batch_size),
        ),
        ("commands", report.commands.to_string()),
        (
            "committed / rejected",
            format!("{} / {}", report.committed, report.rejected),
        ),
        ("seconds", format!("{:.3}", report.seconds)),
        ("commands/s", format!("{:.0}", report.commands_per_sec)),
        (
            "latency µs p50/p99/p999/max",
            format!(
                "{} / {} / {} / {}",
                report.latency_us.p50,
                report.latency_us.p99,
                report.latency_us.p999,
                report.latency_us.max
            ),
        ),
        (
            "commands per writer batch",
            format!("{:.1}", report.mean_batch_size),
        ),
        (
            "commands per group commit",
            format!("{:.1}", report.commands_per_sync),
        ),
        (
            "µs per group commit's append + sync",
            known(report.commit_us_mean.map(|micros| format!("{micros:.0}"))),
        ),
        (
            "group commits ≤ µs: count",
            commit_buckets(&report.commit_us_buckets),
        ),
        (
            "durable",
            known(report.durable.map(|durable| durable.to_string())),
        ),
        (
            "snapshots during the load (newest at)",
            known(
                report
                    .snapshots_during_load
                    .zip(report.last_snapshot_during_load)
                    .map(|(count, last)| format!("{count} ({last})")),
            ),
        ),
        ("events", report.events.to_string()),
        (
            "bytes with a snapshot (per event)",
            known(
                report
                    .bytes_on_disk
                    .zip(report.bytes_per_event)
                    .map(|(bytes, per)| format!("{bytes} ({per:.1})")),
            ),
        ),
        (
            "log bytes alone (per event)",
            known(
                report
                    .log_bytes
                    .zip(report.log_bytes_per_event)
                    .map(|(bytes, per)| format!("{bytes} ({per:.1})")),
            ),
        ),
        (
            "peak RSS bytes",
            known(report.rss_bytes_peak.map(|bytes| bytes.to_string())),
        ),
        (
            "RSS bytes after the load",
            known(report.rss_bytes.map(|bytes| bytes.to_string())),
        ),
        (
            "RSS bytes after a snapshot",
            known(
                report
                    .rss_bytes_after_snapshot
                    .map(|bytes| bytes.to_string()),
            ),
        ),
        (
            "  of it the in-memory log",
            match (report.memory_log_bytes, report.rss_bytes) {
                (Some(bytes), _) => bytes.to_string(),
                // An embedded run on disk: RSS is known, the log is in files.
                (None, Some(_)) => "none (the log is on disk)".into(),
                (None, None) => known(None),
            },
        ),
        (
            "RSS per account, no log",
            known(report.rss_bytes_peak.map(|bytes| {
                let log = report.memory_log_bytes.unwrap_or(0);
                format!(
                    "{:.0}",
                    bytes.saturating_sub(log) as f64 / report.accounts.max(1) as f64
                )
            })),
        ),
        (
            "recovery s: snapshot / full",
            known(
                report
                    .recovery_seconds_snapshot
                    .zip(report.recovery_seconds_full)
                    .map(|(snapshot, full)| format!("{snapshot:.3} / {full:.3}")),
            ),
        ),
        (
            "replay events/s",
            known(
                report
                    .replay_events_per_sec
                    .map(|rate| format!("{rate:.0}")),
            ),
        ),
        ("machine", machine(&report.machine)),
        (
            "CPU during the load",
            report
                .cpu
                .as_ref()
                .map_or_else(|| "not measured".into(), cpu),
        ),
    ];
    for (name, value) in rows {
        println!("{name:<30} {value}");
    }
}

/// The non-empty commit-duration buckets on one line (`unknown` over HTTP).
fn commit_buckets(buckets: &[subledger_bench::CommitBucket]) -> String {
    if buckets.is_empty() {
        return known(None);
    }
    let shown: Vec<String> = buckets
        .iter()
        .filter(|bucket| bucket.syncs > 0)
        .map(|bucket| match bucket.le_us {
            Some(bound) => format!("{bound}: {}", bucket.syncs),
            None => format!("more: {}", bucket.syncs),
        })
        .collect();
    shown.join(", ")
}

/// The probe's figures on one line.
fn machine(probe: &subledger_bench::MachineProbe) -> String {
    let sync = probe.append_sync_us_p50.map_or_else(String::new, |micros| {
        format!(", append + fdatasync {micros} µs")
    });
    let syscall = probe
        .syscall_ns
        .map_or_else(String::new, |ns| format!(", syscall {ns} ns"));
    let wake = probe
        .wake_round_trip_ns
        .map_or_else(String::new, |ns| format!(", wake round trip {ns} ns"));
    format!(
        "random read {} ns, 1k rounds {} ns{syscall}{wake}{sync}",
        probe.memory_random_read_ns, probe.cpu_ns_per_1k_rounds
    )
}

/// The load's CPU use on one line: the total, the busy share, then the threads, busiest first.
fn cpu(used: &subledger_bench::CpuUse) -> String {
    let mut threads: Vec<(&str, f64)> = used
        .by_thread
        .iter()
        .map(|(name, seconds)| (name.as_str(), *seconds))
        .chain(std::iter::once((
            "ended threads",
            used.ended_threads_seconds,
        )))
        .filter(|(_, seconds)| *seconds >= 0.005)
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    let shown: Vec<String> = threads
        .iter()
        .map(|(name, seconds)| format!("{name} {seconds:.2}"))
        .collect();
    let server = used.server_seconds.map_or_else(String::new, |seconds| {
        format!("; the server {seconds:.2} s")
    });
    format!(
        "{:.2} s ({:.0} % of the cores): {}{server}",
        used.seconds,
        used.busy_percent,
        shown.join(", ")
    )
}

/// A self-contained SVG: throughput per sample interval over time, and latency percentiles.
fn svg(report: &BenchReport) -> String {
    let (width, height, margin) = (800.0, 300.0, 50.0);
    let rates: Vec<(f64, f64)> = report
        .timeline
        .windows(2)
        .map(|pair| {
            let ((t0, c0), (t1, c1)) = (pair[0], pair[1]);
            (t1, (c1.saturating_sub(c0)) as f64 / (t1 - t0).max(1e-9))
        })
        .collect();
    let t_max = rates.last().map_or(1.0, |(t, _)| *t).max(1e-9);
    let r_max = rates.iter().map(|(_, r)| *r).fold(1.0, f64::max);
    let points: Vec<String> = rates
        .iter()
        .map(|(t, r)| {
            let x = margin + t / t_max * (width - 2.0 * margin);
            let y = height - margin - r / r_max * (height - 2.0 * margin);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let latency = report.latency_us;
    let bars = [
        ("p50", latency.p50),
        ("p99", latency.p99),
        ("p99.9", latency.p999),
        ("max", latency.max),
    ];
    let l_max = bars.iter().map(|(_, v)| *v).max().unwrap_or(1).max(1) as f64;
    let mut bar_svg = String::new();
    for (index, (name, value)) in bars.iter().enumerate() {
        let x = margin + index as f64 * 180.0;
        let bar = *value as f64 / l_max * 200.0;
        bar_svg.push_str(&format!(
            "<rect x=\"{x:.0}\" y=\"{:.0}\" width=\"120\" height=\"{bar:.0}\" fill=\"#c0504d\"/>\
             <text x=\"{x:.0}\" y=\"{:.0}\">{name}: {value} µs</text>",
            height + 260.0 - bar,
            height + 280.0
        ));
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{margin}\" y=\"20\">{:?}: {:.0} commands/s over {:.1} s (peak {:.0}/s)</text>\
         <line x1=\"{margin}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\
         <line x1=\"{margin}\" y1=\"{margin}\" x2=\"{margin}\" y2=\"{}\" stroke=\"black\"/>\
         <polyline fill=\"none\" stroke=\"#4f81bd\" stroke-width=\"2\" points=\"{}\"/>\
         <text x=\"{margin}\" y=\"{}\">submission latency</text>{bar_svg}</svg>",
        height + 300.0,
        report.workload,
        report.commands_per_sec,
        report.seconds,
        r_max,
        height - margin,
        width - margin,
        height - margin,
        height - margin,
        points.join(" "),
        height + 30.0,
    )
}
