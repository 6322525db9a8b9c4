//! `verify`, `replay`, `export` and `snapshot`: the auditor's commands. Exit codes: 0 success,
//! 1 the check found a problem, 2 usage or I/O error. `--json` (or `--format json`) gives
//! machine output; tables are for people. Progress bars appear only on a terminal.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use subledger_audit::{AuditError, Format, Point, Progress, Source, What, Window};
use subledger_core::{ApiKey, Sequence};
use subledger_log::EventLog;
use subledger_store::{SledLog, StoreOptions};
use subledger_views::time::parse_rfc3339;

/// Where to read: a data directory or a portable log archive.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SourceArgs {
    /// A ledger data directory (read through a private copy; never changed).
    #[arg(long)]
    data: Option<PathBuf>,
    /// A portable log archive written by `export --what log`.
    #[arg(long)]
    log: Option<PathBuf>,
}

impl SourceArgs {
    fn source(&self) -> Source {
        match (&self.data, &self.log) {
            (Some(dir), _) => Source::Data(dir.clone()),
            (None, Some(file)) => Source::Archive(file.clone()),
            // clap's group makes one of them required.
            (None, None) => Source::Data(PathBuf::from(crate::DATA_DIR_DEFAULT)),
        }
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TableFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// State as of this instant (RFC 3339, e.g. 2026-01-02T03:04:05Z).
    #[arg(long, conflicts_with = "seq")]
    at: Option<String>,
    /// State as of this sequence number.
    #[arg(long)]
    seq: Option<u64>,
    /// Only this primary's family.
    #[arg(long)]
    primary: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: TableFormat,
    /// Same as `--format json`.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum WhatArg {
    Events,
    Transfers,
    Statements,
    Log,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum RowFormat {
    Jsonl,
    Csv,
}

/// Where `export` reads: a data directory, an archive, or a running server.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ExportSource {
    /// A ledger data directory (read through a private copy; never changed).
    #[arg(long)]
    data: Option<PathBuf>,
    /// A portable log archive written by `export --what log`.
    #[arg(long)]
    log: Option<PathBuf>,
    /// A running server (`http://host:port`): pulls its log archive through the admin API
    /// (`--what log` only), so a live ledger is audited without stopping it.
    #[arg(long)]
    from: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    source: ExportSource,
    /// With `--from`: read the admin token from this file (else SUBLEDGER_ADMIN_TOKEN).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// What to export: events (JSON lines), transfers or statements (CSV or JSON lines), or
    /// log (the portable, self-verifying archive).
    #[arg(long, value_enum)]
    what: WhatArg,
    /// Row format (default: jsonl for events, csv for reports).
    #[arg(long, value_enum)]
    format: Option<RowFormat>,
    /// Only events committed at or after this instant (RFC 3339).
    #[arg(long)]
    start: Option<String>,
    /// Only events committed before this instant (RFC 3339).
    #[arg(long)]
    end: Option<String>,
    /// Write here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The ledger data directory (must not be in use).
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    json: bool,
}

/// A progress bar on stderr when it is a terminal; nothing otherwise.
pub(crate) struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    pub(crate) fn new(what: &str) -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} events ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(what.to_string());
        Bar(Some(bar))
    }
}

impl Progress for Bar {
    fn advance(&self, done: u64, total: u64) {
        if let Some(bar) = &self.0 {
            bar.set_length(total);
            bar.set_position(done);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

fn fail(error: &AuditError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(error.exit_code())
}

fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

pub fn verify(args: &VerifyArgs) -> ExitCode {
    let opened = match args.source.source().open() {
        Ok(opened) => opened,
        Err(error) => return fail(&error),
    };
    let report = {
        let bar = Bar::new("verifying");
        match subledger_audit::verify(&opened, &bar) {
            Ok(report) => report,
            Err(error) => return fail(&error),
        }
    };
    if args.json {
        match serde_json::to_string(&report) {
            Ok(json) => println!("{json}"),
            Err(error) => return usage(error),
        }
    } else {
        println!("events          {}", report.events);
        println!("records         {}", report.records);
        println!(
            "accounts        {} in {} families",
            report.accounts, report.families
        );
        println!("head            {} {}", report.head, report.head_hash);
        println!(
            "time span       {} .. {}",
            report.first_at.as_deref().unwrap_or("-"),
            report.last_at.as_deref().unwrap_or("-")
        );
        println!("snapshots       {} checked", report.snapshots_checked);
        match &report.problem {
            None => println!("result          OK: checksums, hash chain, invariants, snapshots"),
            Some(problem) => println!(
                "result          PROBLEM at sequence {}: {}",
                problem
                    .seq
                    .map_or_else(|| "-".into(), |seq| seq.to_string()),
                problem.what
            ),
        }
    }
    if report.problem.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn replay(args: &ReplayArgs) -> ExitCode {
    let point = match (&args.at, args.seq) {
        (Some(text), _) => match parse_rfc3339(text) {
            Some(at) => Point::At(at),
            None => return usage(format!("--at {text:?} is not an RFC 3339 instant")),
        },
        (None, Some(seq)) => Point::Seq(Sequence(seq)),
        (None, None) => Point::Head,
    };
    let primary: Option<ApiKey> = match args.primary.as_deref().map(str::parse) {
        Some(Ok(key)) => Some(key),
        Some(Err(error)) => return usage(format!("--primary: {error}")),
        None => None,
    };
    let opened = match args.source.source().open() {
        Ok(opened) => opened,
        Err(error) => return fail(&error),
    };
    let replayed = {
        let bar = Bar::new("replaying");
        subledger_audit::views_at(&opened, point, &bar)
            .and_then(|(views, snapshot)| subledger_audit::rows(&views, primary.as_ref(), snapshot))
    };
    let replayed = match replayed {
        Ok(replayed) => replayed,
        Err(error) => return fail(&error),
    };
    let format = if args.json {
        TableFormat::Json
    } else {
        args.format
    };
    let written = match format {
        TableFormat::Json => serde_json::to_string(&replayed)
            .map(|json| println!("{json}"))
            .map_err(|error| error.to_string()),
        TableFormat::Csv => write_csv(&replayed),
        TableFormat::Table => {
            print_table(&replayed);
            Ok(())
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => usage(error),
    }
}

fn write_csv(replayed: &subledger_audit::Replayed) -> Result<(), String> {
    let mut writer = csv::Writer::from_writer(std::io::stdout());
    for row in &replayed.accounts {
        writer.serialize(row).map_err(|error| error.to_string())?;
    }
    writer.flush().map_err(|error| error.to_string())
}

fn print_table(replayed: &subledger_audit::Replayed) {
    println!(
        "state at sequence {} ({}){}",
        replayed.seq,
        replayed.at.as_deref().unwrap_or("empty log"),
        replayed
            .from_snapshot
            .map_or_else(String::new, |seq| format!(", from the snapshot at {seq}"))
    );
    println!(
        "{:<10} {:<10} {:<24} {:>18} {:>18} {:<9} {:<6}",
        "api_key", "primary", "name", "balance", "credit_limit", "suspended", "closed"
    );
    for row in &replayed.accounts {
        println!(
            "{:<10} {:<10} {:<24} {:>18} {:>18} {:<9} {:<6}",
            row.api_key,
            row.primary_account_api_key.as_deref().unwrap_or("-"),
            row.name.chars().take(24).collect::<String>(),
            row.balance.as_deref().unwrap_or("shared"),
            row.credit_limit.as_deref().unwrap_or("shared"),
            row.suspended,
            row.closed
        );
    }
    println!(
        "\n{:<10} {:>11} {:>22} {:>22}",
        "family", "subaccounts", "total_balance", "total_credit_limit"
    );
    for family in &replayed.families {
        println!(
            "{:<10} {:>11} {:>22} {:>22}",
            family.primary_account_api_key,
            family.subaccounts,
            family.total_balance,
            family.total_credit_limit
        );
    }
}

pub fn export(args: &ExportArgs) -> ExitCode {
    let instant = |flag: &str, text: &Option<String>| match text {
        None => Ok(None),
        Some(text) => parse_rfc3339(text)
            .map(Some)
            .ok_or_else(|| format!("{flag} {text:?} is not an RFC 3339 instant")),
    };
    let window = match (instant("--start", &args.start), instant("--end", &args.end)) {
        (Ok(start), Ok(end)) => Window { start, end },
        (Err(error), _) | (_, Err(error)) => return usage(error),
    };
    let what = match args.what {
        WhatArg::Events => What::Events,
        WhatArg::Transfers => What::Transfers,
        WhatArg::Statements => What::Statements,
        WhatArg::Log => What::Log,
    };
    if what == What::Log && (window.start.is_some() || window.end.is_some()) {
        return usage("a log archive is always the whole log: --start/--end do not apply");
    }
    let format = match (args.format, what) {
        (Some(RowFormat::Csv), What::Events) => {
            return usage("events are exported as JSON lines only (their fields differ by kind)")
        }
        (Some(RowFormat::Csv), _) => Format::Csv,
        (Some(RowFormat::Jsonl), _) | (None, What::Events | What::Log) => Format::JsonLines,
        (None, _) => Format::Csv,
    };
    if let Some(url) = &args.source.from {
        if what != What::Log {
            return usage("--from pulls the log archive only: use --what log, then audit the file");
        }
        return crate::remote::export_log(
            url,
            args.admin_token_file.as_deref(),
            args.out.as_deref(),
        );
    }
    let source = match (&args.source.data, &args.source.log) {
        (Some(dir), _) => Source::Data(dir.clone()),
        (None, Some(file)) => Source::Archive(file.clone()),
        (None, None) => return usage("give --data, --log or --from"),
    };
    let opened = match source.open() {
        Ok(opened) => opened,
        Err(error) => return fail(&error),
    };
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => match std::fs::File::create(path) {
            Ok(file) => Box::new(std::io::BufWriter::new(file)),
            Err(error) => return usage(format!("{}: {error}", path.display())),
        },
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let result = {
        let bar = Bar::new("exporting");
        subledger_audit::export(&opened, what, format, window, &mut out, &bar)
    };
    match result.and_then(|summary| {
        out.flush()
            .map(|()| summary)
            .map_err(|error| AuditError::Io(error.to_string()))
    }) {
        Ok(summary) => {
            if args.out.is_some() {
                eprintln!(
                    "exported {} rows ({} events read, head {})",
                    summary.rows, summary.events_read, summary.head
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}

pub fn snapshot(args: &SnapshotArgs) -> ExitCode {
    let options = StoreOptions {
        create: false,
        ..StoreOptions::default()
    };
    let (log, _) = match SledLog::open(&args.data, options) {
        Ok(opened) => opened,
        Err(error) => return usage(error),
    };
    let written = subledger_engine::snapshot_stopped(
        log.reader().as_ref(),
        log.snapshots().as_ref(),
        subledger_engine::SNAPSHOTS_KEEP_DEFAULT,
    );
    match written {
        Ok(seq) => {
            if args.json {
                println!("{{\"snapshot\":{}}}", seq.0);
            } else {
                println!("snapshot written at sequence {seq}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => usage(error),
    }
}
