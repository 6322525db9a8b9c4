//! `export`: events as JSON lines, transfer and statement reports as CSV or JSON lines, and the
//! portable log archive. Secrets never leave: events that carry a secret are exported with its
//! id only — no hash, no plaintext (there is none to export).

use std::io::Write;

use serde::Serialize;
use subledger_core::{AccountId, Amount, Event, Funding, Sequence, Timestamp};
use subledger_log::archive::{write_archive, ArchiveSummary};
use subledger_views::time::format_rfc3339_millis;
use subledger_views::Views;

use crate::source::Opened;
use crate::{AuditError, Progress};

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    Events,
    Transfers,
    Statements,
    Log,
}

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    JsonLines,
    Csv,
}

/// Which events are exported: commit instants in `[start, end)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
}

impl Window {
    fn contains(&self, at: Timestamp) -> bool {
        self.start.is_none_or(|start| at >= start) && self.end.is_none_or(|end| at < end)
    }
}

/// One exported event: where and when, its kind, and its fields with accounts as api keys.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub seq: u64,
    pub at: String,
    pub kind: &'static str,
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// One transfer.
#[derive(Debug, Clone, Serialize)]
pub struct TransferRow {
    pub seq: u64,
    pub at: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub primary_account_api_key: String,
    pub from: String,
    pub to: String,
    pub amount: String,
    pub reference: String,
}

/// One change to one account's balance or credit limit, with the values after it.
#[derive(Debug, Clone, Serialize)]
pub struct StatementRow {
    pub seq: u64,
    pub at: String,
    pub api_key: String,
    pub entry: &'static str,
    pub balance_change: String,
    pub credit_limit_change: String,
    pub balance_after: String,
    pub credit_limit_after: String,
    pub command_id: String,
    /// The other account of a transfer, or the subaccount a charge was made for.
    pub counterparty: String,
    pub reference: String,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    pub rows: u64,
    pub events_read: u64,
    pub head: u64,
}

/// Exports `what` from `opened` to `out`.
pub fn export(
    opened: &Opened,
    what: What,
    format: Format,
    window: Window,
    out: &mut dyn Write,
    progress: &dyn Progress,
) -> Result<ExportSummary, AuditError> {
    if what == What::Log {
        let ArchiveSummary { head, records, .. } = write_archive(opened.reader.as_ref(), out)
            .map_err(|error| AuditError::from_log(&error))?;
        return Ok(ExportSummary {
            rows: records,
            events_read: head.0,
            head: head.0,
        });
    }
    let head = opened.reader.head();
    let mut writer = RowWriter::new(format, out);
    let mut views = Views::new();
    let mut summary = ExportSummary {
        rows: 0,
        events_read: 0,
        head: head.0,
    };
    let records = opened
        .reader
        .records_from(Sequence(1))
        .map_err(|error| AuditError::from_log(&error))?;
    for record in records {
        let record = record.map_err(|error| AuditError::from_log(&error))?;
        let at = record.at;
        for (seq, event) in record.into_batch().iter() {
            let touched: Vec<AccountId> = event.accounts().into_iter().flatten().collect();
            let before: Vec<(Amount, Amount)> =
                touched.iter().map(|id| funding(&views, *id)).collect();
            views
                .apply(seq, at, event)
                .map_err(|error| AuditError::Problem {
                    seq: Some(seq.0),
                    what: error.fault.to_string(),
                })?;
            summary.events_read += 1;
            if !window.contains(at) {
                continue;
            }
            match what {
                What::Events => {
                    writer.write(&event_row(&views, seq, at, event))?;
                    summary.rows += 1;
                }
                What::Transfers => {
                    if let Some(row) = transfer_row(&views, seq, at, event) {
                        writer.write(&row)?;
                        summary.rows += 1;
                    }
                }
                What::Statements => {
                    for (id, before) in touched.iter().zip(&before) {
                        if let Some(row) = statement_row(&views, seq, at, event, *id, *before) {
                            writer.write(&row)?;
                            summary.rows += 1;
                        }
                    }
                }
                What::Log => {}
            }
        }
        progress.advance(summary.events_read, head.0);
    }
    writer.finish()?;
    Ok(summary)
}

/// Writes serializable rows as CSV (with a header) or JSON lines.
enum RowWriter<'a> {
    Csv(Box<csv::Writer<&'a mut dyn Write>>),
    Json(&'a mut dyn Write),
}

impl<'a> RowWriter<'a> {
    fn new(format: Format, out: &'a mut dyn Write) -> RowWriter<'a> {
        match format {
            Format::Csv => RowWriter::Csv(Box::new(csv::Writer::from_writer(out))),
            Format::JsonLines => RowWriter::Json(out),
        }
    }

    fn write(&mut self, row: &impl Serialize) -> Result<(), AuditError> {
        match self {
            RowWriter::Csv(writer) => writer
                .serialize(row)
                .map_err(|error| AuditError::Io(error.to_string())),
            RowWriter::Json(out) => {
                serde_json::to_writer(&mut **out, row)
                    .map_err(|error| AuditError::Io(error.to_string()))?;
                out.write_all(b"\n")
                    .map_err(|error| AuditError::Io(error.to_string()))
            }
        }
    }

    fn finish(self) -> Result<(), AuditError> {
        match self {
            RowWriter::Csv(mut writer) => writer
                .flush()
                .map_err(|error| AuditError::Io(error.to_string())),
            RowWriter::Json(out) => out
                .flush()
                .map_err(|error| AuditError::Io(error.to_string())),
        }
    }
}

fn funding(views: &Views, id: AccountId) -> (Amount, Amount) {
    match views.funding_of(id) {
        Some(Funding::Own {
            balance,
            credit_limit,
        }) => (balance, credit_limit),
        _ => (Amount::ZERO, Amount::ZERO),
    }
}

fn key(views: &Views, id: AccountId) -> String {
    views
        .key_of(id)
        .map_or_else(|| format!("#{}", id.0), |key| key.to_string())
}

fn event_row(views: &Views, seq: Sequence, at: Timestamp, event: &Event) -> EventRow {
    EventRow {
        seq: seq.0,
        at: format_rfc3339_millis(at),
        kind: event.kind(),
        fields: subledger_views::json::event_fields(views, event),
    }
}

fn transfer_row(views: &Views, seq: Sequence, at: Timestamp, event: &Event) -> Option<TransferRow> {
    let (kind, command, source, target, amount, reference) = match event {
        Event::BalanceTransferred {
            command,
            source,
            target,
            amount,
            reference,
        } => ("balance", command, source, target, amount, reference),
        Event::CreditTransferred {
            command,
            source,
            target,
            amount,
            reference,
        } => ("credit", command, source, target, amount, reference),
        _ => return None,
    };
    let family = |id: AccountId| views.family_of(id);
    Some(TransferRow {
        seq: seq.0,
        at: format_rfc3339_millis(at),
        kind,
        id: command.to_string(),
        primary_account_api_key: key(views, family(*source)),
        from: key(views, *source),
        to: key(views, *target),
        amount: amount.to_string(),
        reference: reference.clone(),
    })
}

fn statement_row(
    views: &Views,
    seq: Sequence,
    at: Timestamp,
    event: &Event,
    id: AccountId,
    (balance_before, credit_before): (Amount, Amount),
) -> Option<StatementRow> {
    let (entry, command, counterparty, reference) = match event {
        Event::ToppedUp {
            command, reference, ..
        } => ("top_up", Some(command), None, reference.as_str()),
        Event::Charged {
            command,
            account,
            payer,
            reference,
            ..
        } => {
            if id != *payer {
                return None;
            }
            let on_behalf = (account != payer).then_some(*account);
            ("charge", Some(command), on_behalf, reference.as_str())
        }
        Event::BalanceTransferred {
            command,
            source,
            target,
            reference,
            ..
        } => {
            let (entry, other) = if id == *source {
                ("transfer_out", target)
            } else {
                ("transfer_in", source)
            };
            (entry, Some(command), Some(*other), reference.as_str())
        }
        Event::CreditTransferred {
            command,
            source,
            target,
            reference,
            ..
        } => {
            let (entry, other) = if id == *source {
                ("credit_out", target)
            } else {
                ("credit_in", source)
            };
            (entry, Some(command), Some(*other), reference.as_str())
        }
        Event::CreditLineSet { .. } => ("credit_line", None, None, ""),
        _ => return None,
    };
    let (balance_after, credit_after) = funding(views, id);
    let change = |after: Amount, before: Amount| {
        after
            .checked_sub(before)
            .unwrap_or(Amount::ZERO)
            .to_string()
    };
    Some(StatementRow {
        seq: seq.0,
        at: format_rfc3339_millis(at),
        api_key: key(views, id),
        entry,
        balance_change: change(balance_after, balance_before),
        credit_limit_change: change(credit_after, credit_before),
        balance_after: balance_after.to_string(),
        credit_limit_after: credit_after.to_string(),
        command_id: command.map(ToString::to_string).unwrap_or_default(),
        counterparty: counterparty
            .map(|other| key(views, other))
            .unwrap_or_default(),
        reference: reference.to_string(),
    })
}
