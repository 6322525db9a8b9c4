//! `subledger serve`: the HTTP server on a data directory (created on first start).
//!
//! The admin token comes from `SUBLEDGER_ADMIN_TOKEN`, or `--admin-token-file`; without
//! either, one is generated on first start and kept in `DIR/admin-token` (mode 0600). SIGINT or
//! SIGTERM stops accepting, finishes the requests in flight, closes the ledger (draining its
//! queue) and exits 0.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use subledger_core::{
    Amount, ApiKey, Command, CreateSubaccount, Currency, NewSecret, OpenPrimary, TopUp, Transfer,
};
use subledger_engine::{Config, Ledger, SystemClock};
use subledger_server::{AppState, ServerConfig};
use subledger_store::{SledLog, StoreOptions};

/// Longest accepted admin token, in bytes.
const ADMIN_TOKEN_BYTES_MAX: usize = 256;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory (created when missing).
    #[arg(long, default_value = crate::DATA_DIR_DEFAULT)]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Read the admin token from this file (otherwise SUBLEDGER_ADMIN_TOKEN, otherwise one is
    /// generated into the data directory).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Seed an empty data directory with a demo primary and subaccounts (once; later starts
    /// keep what is there), and print curl commands that work against it.
    #[arg(long)]
    demo: bool,
    /// What the background snapshot thread keeps between snapshots: `kept` (a copy of the
    /// views: cheap snapshots, twice the memory) or `rebuilt` (nothing: each snapshot starts
    /// from the previous one and the log after it).
    #[arg(long, value_enum, default_value = "kept")]
    snapshot_replica: crate::SnapshotReplicaArg,
    /// Write a snapshot in the background after this many new events (0: never; `subledger
    /// snapshot` on the stopped ledger still can). Fewer snapshots cost less throughput, and
    /// recovery replays up to this many events after the newest one (or the share that
    /// `--snapshot-growth-percent` allows, if larger).
    #[arg(long, default_value_t = subledger_engine::SNAPSHOT_EVERY_EVENTS_DEFAULT)]
    snapshot_every_events: u64,
    /// A background snapshot also waits until the new events number at least this percentage
    /// of the last snapshot's position (0: a fixed interval). Each snapshot rewrites the whole
    /// ledger; growing the interval with it bounds the bytes written for snapshots, at the
    /// price of a recovery replaying up to this share of the log beyond its snapshot.
    #[arg(long, default_value_t = subledger_engine::SNAPSHOT_GROWTH_PERCENT_DEFAULT,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(subledger_engine::SNAPSHOT_GROWTH_PERCENT_MAX)))]
    snapshot_growth_percent: u32,
    /// Added to the background snapshot thread's nice value (Linux; 0: as the process): the
    /// writer, log and views threads get the cores first when all want them.
    #[arg(long, default_value_t = subledger_engine::SNAPSHOT_NICENESS_DEFAULT,
          value_parser = clap::value_parser!(u8).range(0..=i64::from(subledger_engine::SNAPSHOT_NICENESS_MAX)))]
    snapshot_niceness: u8,
    /// Fewest commands in a batch for the writer to hand it to the log thread, deciding the
    /// next batch while it is synced; smaller batches the writer syncs itself (with many
    /// single-command clients, handing their small batches over only added latency).
    #[arg(long, default_value_t = subledger_engine::LOG_HANDOFF_COMMANDS_MIN_DEFAULT)]
    log_handoff_commands_min: usize,
    /// Longest a request may take before it is answered 503 (`timeout` problem); from 1 to
    /// 3,600 seconds. Live event streams are not bound by it once they have started.
    #[arg(long, default_value_t = subledger_server::REQUEST_SECONDS_MAX,
          value_parser = clap::value_parser!(u64).range(1..=REQUEST_TIMEOUT_SECONDS_MAX))]
    request_timeout_seconds: u64,
}

/// Longest `--request-timeout-seconds` accepted: an hour.
const REQUEST_TIMEOUT_SECONDS_MAX: u64 = 3_600;

fn admin_token(args: &ServeArgs) -> Result<(String, String)> {
    if let Some(path) = &args.admin_token_file {
        let token =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return checked(token.trim().to_string(), format!("from {}", path.display()));
    }
    if let Ok(token) = std::env::var("SUBLEDGER_ADMIN_TOKEN") {
        return checked(
            token.trim().to_string(),
            "from SUBLEDGER_ADMIN_TOKEN".into(),
        );
    }
    let path = args.data.join("admin-token");
    if path.exists() {
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return checked(token.trim().to_string(), format!("from {}", path.display()));
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(&path, &token)?;
    Ok((
        token,
        format!("generated into {} (mode 0600)", path.display()),
    ))
}

fn checked(token: String, origin: String) -> Result<(String, String)> {
    if token.is_empty()
        || token.len() > ADMIN_TOKEN_BYTES_MAX
        || token.chars().any(char::is_whitespace)
    {
        bail!("the admin token {origin} must be 1 to {ADMIN_TOKEN_BYTES_MAX} characters without spaces");
    }
    Ok((token, origin))
}

fn write_private(path: &Path, token: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

pub fn run(args: &ServeArgs) -> Result<()> {
    // SUBLEDGER_LOG=debug logs every request; the default is startup, warnings and errors.
    let level = match std::env::var("SUBLEDGER_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .init();
    let (log, report) = SledLog::open(&args.data, StoreOptions::default())
        .with_context(|| format!("opening {}", args.data.display()))?;
    if report.torn_records_discarded > 0 {
        tracing::warn!(
            "discarded {} records ({} events) of a commit batch torn by a crash (never acknowledged)",
            report.torn_records_discarded,
            report.torn_events_discarded
        );
    }
    let (token, origin) = admin_token(args)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(certificate), Some(key)) => Some(
            subledger_server::tls::load_config(certificate, key)
                .map_err(|error| anyhow!("TLS: {error}"))?,
        ),
        _ => None,
    };
    let ledger = Arc::new(
        Ledger::open(
            Config {
                snapshot_replica: args.snapshot_replica.into(),
                snapshot_every_events: args.snapshot_every_events,
                snapshot_growth_percent: args.snapshot_growth_percent,
                snapshot_niceness: args.snapshot_niceness,
                log_handoff_commands_min: args.log_handoff_commands_min,
                ..Config::default()
            },
            log,
            SystemClock,
        )
        .context("recovering the ledger")?,
    );
    let recovery = ledger.recovery().clone();
    tracing::info!(
        head = recovery.head.0,
        snapshot = recovery.snapshot.map(|seq| seq.0),
        replayed = recovery.events_replayed,
        "ledger open in {:?}",
        recovery.elapsed
    );
    let demo = if args.demo {
        Some(seed_demo(&ledger)?)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let config = ServerConfig {
        request_timeout: std::time::Duration::from_secs(args.request_timeout_seconds),
        ..ServerConfig::new(token)
    };
    let state = AppState::new(Arc::clone(&ledger), config);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let address = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!(
            "subledger listening on {scheme}://{address} (data in {})",
            args.data.display()
        );
        println!("admin token {origin}");
        println!(
            "dashboard at {scheme}://{address}/dashboard (sign in with a primary's key and secret, or the admin token)"
        );
        if let Some(demo) = &demo {
            print_demo(address, demo);
        }
        match tls {
            Some(config) => {
                subledger_server::serve_tls(listener, config, state, shutdown_signal()).await
            }
            None => subledger_server::serve(listener, state, shutdown_signal()).await,
        }
        .context("serving")
    })?;
    drop(runtime);
    let ledger =
        Arc::into_inner(ledger).ok_or_else(|| anyhow!("the ledger is still in use at shutdown"))?;
    ledger.close().context("closing the ledger")?;
    println!("stopped cleanly");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = interrupt => {},
            () = terminate => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: finishing requests in flight");
}

/// Credentials of the seeded demo family.
struct Demo {
    primary: ApiKey,
    secret: String,
    subaccounts: Vec<ApiKey>,
}

const DEMO_SECRET: &str = "DemoSecret42";

fn seed_demo(ledger: &Ledger) -> Result<Demo> {
    let primary: ApiKey = "demo0001".parse().map_err(|error| anyhow!("{error}"))?;
    let subaccounts: Vec<ApiKey> = ["demosub1", "demosub2", "demosub3"]
        .iter()
        .map(|key| key.parse().map_err(|error| anyhow!("{error}")))
        .collect::<Result<_>>()?;
    if ledger.read(|views| views.account(&primary)).is_some() {
        // Seeded on an earlier start: serve it as it is now.
        return Ok(Demo {
            primary,
            secret: DEMO_SECRET.into(),
            subaccounts,
        });
    }
    if ledger.metrics().last_seq.0 > 0 {
        bail!("--demo seeds only an empty data directory; this one holds another ledger");
    }
    let hash = hash_for_demo()?;
    let money = |text: &str| text.parse::<Amount>().map_err(|error| anyhow!("{error}"));
    let mut commands = vec![Command::OpenPrimary(OpenPrimary {
        key: primary,
        name: "Demo primary".into(),
        currency: Currency::EUR,
        credit_line: money("-100")?,
        secret: NewSecret {
            id: ledger.new_secret_id(),
            hash: hash.clone(),
        },
    })];
    for (index, key) in subaccounts.iter().enumerate() {
        commands.push(Command::CreateSubaccount(CreateSubaccount {
            primary,
            key: *key,
            name: format!("Demo subaccount {}", index + 1),
            use_primary_account_balance: index == 2,
            secret: NewSecret {
                id: ledger.new_secret_id(),
                hash: hash.clone(),
            },
        }));
    }
    commands.push(Command::TopUp(TopUp {
        id: ledger.new_command_id(),
        primary,
        amount: money("500")?,
        reference: "demo".into(),
    }));
    commands.push(Command::TransferBalance(Transfer {
        id: ledger.new_command_id(),
        primary,
        from: primary,
        to: subaccounts[0],
        amount: money("50")?,
        reference: "demo".into(),
    }));
    for outcome in ledger.submit_batch(commands).context("seeding")? {
        outcome.map_err(|rejection| anyhow!("seeding was refused: {rejection}"))?;
    }
    Ok(Demo {
        primary,
        secret: DEMO_SECRET.into(),
        subaccounts,
    })
}

/// The demo secret's argon2id hash, computed here once.
fn hash_for_demo() -> Result<subledger_core::SecretHash> {
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let auth = subledger_server::auth::Authenticator::new(
        subledger_server::auth::HashCost::default(),
        "unused",
    );
    runtime
        .block_on(auth.hash_secret(DEMO_SECRET.into()))
        .map_err(|problem| anyhow!("hashing the demo secret: {}", problem.detail))
}

fn print_demo(address: SocketAddr, demo: &Demo) {
    let base = format!("http://{address}");
    let credentials = format!("{}:{}", demo.primary, demo.secret);
    let own = demo
        .subaccounts
        .first()
        .map(ApiKey::to_string)
        .unwrap_or_default();
    println!(
        "\ndemo primary {} with secret {} and subaccounts {:?}",
        demo.primary,
        demo.secret,
        demo.subaccounts
            .iter()
            .map(ApiKey::to_string)
            .collect::<Vec<_>>()
    );
    println!("try:");
    println!(
        "  curl -s -u {credentials} {base}/accounts/{}/subaccounts",
        demo.primary
    );
    println!(
        "  curl -s -u {credentials} -H 'Content-Type: application/json' -d '{{\"from\":\"{}\",\"to\":\"{own}\",\"amount\":12.5}}' {base}/accounts/{}/balance-transfers",
        demo.primary, demo.primary
    );
    println!(
        "  curl -s -u {credentials} {base}/accounts/{}/balance-transfers",
        demo.primary
    );
    println!("  curl -s -u {credentials} {base}/account/get-balance");
    println!("  curl -s {base}/metrics\n");
}
