//! The `subledger` binary: a thin shell over the library crates. It alone uses `anyhow` and
//! maps errors to exit codes (0 success, 1 a check found a problem, 2 usage or I/O error).

mod audit;
mod bench;
mod remote;
mod restore;
mod serve;

use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use subledger_core::*;
use subledger_engine::{Config, Ledger};

/// `--snapshot-replica`: what the snapshot thread keeps between snapshots
/// (`subledger_engine::SnapshotReplica`).
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
enum SnapshotReplicaArg {
    /// A copy of the views, kept up to date: cheap snapshots, twice the memory.
    #[default]
    Kept,
    /// Nothing: each snapshot is rebuilt from the previous one and the log after it, then
    /// dropped: the memory doubles only while a snapshot is written.
    Rebuilt,
}

impl From<SnapshotReplicaArg> for subledger_engine::SnapshotReplica {
    fn from(arg: SnapshotReplicaArg) -> Self {
        match arg {
            SnapshotReplicaArg::Kept => subledger_engine::SnapshotReplica::Kept,
            SnapshotReplicaArg::Rebuilt => subledger_engine::SnapshotReplica::Rebuilt,
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "subledger",
    version,
    about = "An event-sourced ledger engine for account credit"
)]
struct Cli {
    #[command(subcommand)]
    command: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Serve the HTTP API (Vonage Subaccounts compatible, plus admin and operations
    /// endpoints) on a data directory.
    Serve(serve::ServeArgs),
    /// Run a short scenario on an in-memory ledger and print the resulting family.
    Demo,
    /// Measure durable throughput, latency and recovery with closed-loop clients.
    Bench(bench::BenchArgs),
    /// Check every record's checksum and the hash chain, the invariants after every event,
    /// and every snapshot against a replay. Exit 1 when a problem is found.
    Verify(audit::VerifyArgs),
    /// Every account's state as of a sequence number or instant, from the log alone.
    Replay(audit::ReplayArgs),
    /// Export events, transfer or statement reports, or the portable log archive.
    Export(audit::ExportArgs),
    /// Write a snapshot of a (stopped) ledger now.
    Snapshot(audit::SnapshotArgs),
    /// Create a data directory from a portable log archive (`export --what log`), with the
    /// archived hash chain, and write a snapshot of it. Exit 1 when the archive is damaged or
    /// its events break the rules.
    Restore(restore::RestoreArgs),
}

/// The data directory used when none is given.
pub const DATA_DIR_DEFAULT: &str = "./subledger-data";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Action::Serve(args) => serve::run(&args),
        Action::Demo => demo(),
        Action::Bench(args) => bench::run(&args),
        Action::Verify(args) => return audit::verify(&args),
        Action::Replay(args) => return audit::replay(&args),
        Action::Export(args) => return audit::export(&args),
        Action::Snapshot(args) => return audit::snapshot(&args),
        Action::Restore(args) => return restore::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// A placeholder hash: the demo never authenticates, and the core only stores what it is given.
fn demo_secret(ledger: &Ledger) -> Result<NewSecret> {
    let hash = SecretHash::new("$argon2id$v=19$m=19456,t=2,p=1$ZGVtb3NhbHQ$ZGVtb2hhc2g".into())
        .map_err(|error| anyhow!("{error}"))?;
    Ok(NewSecret {
        id: ledger.new_secret_id(),
        hash,
    })
}

fn submit(ledger: &Ledger, label: &str, command: Command) -> Result<()> {
    match ledger
        .submit(command)
        .context("the engine refused the command")?
    {
        Ok(receipt) => println!("  ok        {label} (seq {})", receipt.first),
        Err(rejection) => println!("  rejected  {label}: {rejection} [{}]", rejection.code()),
    }
    Ok(())
}

fn demo() -> Result<()> {
    let ledger = Ledger::in_memory(Config::default()).context("opening the ledger")?;
    let primary: ApiKey = "acme0001".parse().map_err(|error| anyhow!("{error}"))?;
    let own: ApiKey = "acmeown1".parse().map_err(|error| anyhow!("{error}"))?;
    let shared: ApiKey = "acmeshr1".parse().map_err(|error| anyhow!("{error}"))?;
    let money = |text: &str| text.parse::<Amount>().map_err(|error| anyhow!("{error}"));
    println!("commands:");
    let open = OpenPrimary {
        key: primary,
        name: "Acme Ltd".into(),
        currency: Currency::EUR,
        credit_line: money("-50")?,
        secret: demo_secret(&ledger)?,
    };
    submit(
        &ledger,
        "open primary acme0001 with a 50 EUR credit line",
        Command::OpenPrimary(open),
    )?;
    for (key, name, uses_primary) in [
        (own, "Own balance", false),
        (shared, "Shared balance", true),
    ] {
        let create = CreateSubaccount {
            primary,
            key,
            name: name.into(),
            use_primary_account_balance: uses_primary,
            secret: demo_secret(&ledger)?,
        };
        submit(
            &ledger,
            &format!("create subaccount {key}"),
            Command::CreateSubaccount(create),
        )?;
    }
    let top_up = TopUp {
        id: ledger.new_command_id(),
        primary,
        amount: money("100")?,
        reference: "payment".into(),
    };
    submit(&ledger, "top up 100", Command::TopUp(top_up))?;
    let transfer = |from, to, amount| Transfer {
        id: ledger.new_command_id(),
        primary,
        from,
        to,
        amount,
        reference: String::new(),
    };
    submit(
        &ledger,
        "transfer 30.5 balance to acmeown1",
        Command::TransferBalance(transfer(primary, own, money("30.5")?)),
    )?;
    submit(
        &ledger,
        "transfer 20 credit to acmeown1",
        Command::TransferCredit(transfer(primary, own, money("20")?)),
    )?;
    submit(
        &ledger,
        "transfer 1 balance to the shared acmeshr1",
        Command::TransferBalance(transfer(primary, shared, money("1")?)),
    )?;
    let charge = |account, amount| Charge {
        id: ledger.new_command_id(),
        account,
        amount,
        reference: "usage".into(),
    };
    submit(
        &ledger,
        "charge 45 to acmeown1 (uses its credit)",
        Command::Charge(charge(own, money("45")?)),
    )?;
    submit(
        &ledger,
        "charge 1000 to acmeshr1 (too much)",
        Command::Charge(charge(shared, money("1000")?)),
    )?;
    submit(
        &ledger,
        "charge 0.1 to acmeshr1 (debits the primary)",
        Command::Charge(charge(shared, money("0.1")?)),
    )?;
    let family = ledger
        .read(|views| views.family(&primary))
        .ok_or_else(|| anyhow!("the primary is missing"))?;
    println!("\nfamily of {primary}:");
    println!(
        "  {:<10} {:<16} {:>14} {:>14} {:>10}",
        "key", "name", "balance", "credit_limit", "suspended"
    );
    let show = |value: Option<Amount>| {
        value.map_or_else(|| "shared".to_string(), |amount| amount.to_string())
    };
    for account in std::iter::once(&family.primary).chain(family.subaccounts.iter()) {
        println!(
            "  {:<10} {:<16} {:>14} {:>14} {:>10}",
            account.key.to_string(),
            account.name,
            show(account.balance),
            show(account.credit_limit),
            account.suspended
        );
    }
    println!(
        "  total_balance {}  total_credit_limit {}",
        family.total_balance, family.total_credit_limit
    );
    ledger.close().context("closing the ledger")?;
    Ok(())
}
