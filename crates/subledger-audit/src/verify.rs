//! `verify`: replays the whole log and checks everything that can be checked.
//!
//! - every record: checksum, sequence continuity, hash chain (by the shared reader);
//! - every event applies (structure and invariant 1, by `apply`);
//! - invariants 2 and 3 after every event, per family, in O(1): the balances and credit limits
//!   of the touched accounts must change exactly as the event says (a top-up adds its amount,
//!   a charge removes it, transfers move without creating or destroying, only a credit line
//!   change moves the family's credit), and the running family totals must equal the top-ups
//!   minus the charges and the credit line; at the end the totals are recomputed from scratch;
//! - every snapshot: when the replay reaches its sequence number, the snapshot must decode and
//!   equal the replayed state and views exactly (which is also what recovery would rebuild).

use serde::Serialize;
use subledger_core::{AccountId, Amount, Event, Funding, Sequence, Timestamp};
use subledger_engine::snapshot::decode_snapshot_from;
use subledger_log::{ChainHash, LogError};
use subledger_views::time::format_rfc3339_millis;
use subledger_views::Views;

use crate::source::Opened;
use crate::{AuditError, Progress};

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The sequence number where it shows, when it belongs to one.
    pub seq: Option<u64>,
    pub what: String,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub events: u64,
    pub records: u64,
    pub accounts: usize,
    pub families: usize,
    pub head: u64,
    pub head_hash: String,
    pub first_at: Option<String>,
    pub last_at: Option<String>,
    pub snapshots_checked: usize,
    pub problem: Option<Problem>,
}

/// Per-family running totals, in minor units.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    /// Σ balances computed from the changes of touched accounts.
    balance: i128,
    /// Σ credit limits computed the same way.
    credit: i128,
    /// Σ top-ups − Σ charges (what the balances must add up to).
    money_in: i128,
    /// The family's credit line (what the credit limits must add up to).
    credit_line: i128,
}

fn own(views: &Views, id: AccountId) -> (AccountId, i128, i128) {
    let family = views.family_of(id);
    match views.funding_of(id) {
        Some(Funding::Own {
            balance,
            credit_limit,
        }) => (family, balance.units(), credit_limit.units()),
        _ => (family, 0, 0),
    }
}

struct Checker {
    views: Views,
    totals: Vec<Totals>,
}

impl Checker {
    fn totals(&mut self, family: AccountId) -> &mut Totals {
        let index = family.index();
        if self.totals.len() <= index {
            self.totals.resize(index + 1, Totals::default());
        }
        &mut self.totals[index]
    }

    /// Applies one event and checks invariants 2 and 3 for the families it touches.
    fn apply(&mut self, seq: Sequence, at: Timestamp, event: &Event) -> Result<(), String> {
        let touched: Vec<AccountId> = event.accounts().into_iter().flatten().collect();
        let before: Vec<_> = touched.iter().map(|id| own(&self.views, *id)).collect();
        self.views
            .apply(seq, at, event)
            .map_err(|error| error.fault.to_string())?;
        for (id, (_, balance, credit)) in touched.iter().zip(&before) {
            let (family, balance_after, credit_after) = own(&self.views, *id);
            let totals = self.totals(family);
            totals.balance += balance_after - balance;
            totals.credit += credit_after - credit;
        }
        let units = |amount: &Amount| amount.units();
        match event {
            Event::ToppedUp {
                account, amount, ..
            } => self.totals(*account).money_in += units(amount),
            Event::Charged { payer, amount, .. } => {
                let (family, _, _) = own(&self.views, *payer);
                self.totals(family).money_in -= units(amount);
            }
            Event::PrimaryOpened {
                account,
                credit_limit,
                ..
            } => self.totals(*account).credit_line = units(credit_limit),
            Event::CreditLineSet {
                account,
                credit_line,
                ..
            } => self.totals(*account).credit_line = units(credit_line),
            _ => {}
        }
        for id in &touched {
            let (family, _, _) = own(&self.views, *id);
            let totals = *self.totals(family);
            if totals.balance != totals.money_in {
                return Err(format!(
                    "invariant 2 broken in family {family:?}: balances add up to {} minor units, \
                     top-ups minus charges to {}",
                    totals.balance, totals.money_in
                ));
            }
            if totals.credit != totals.credit_line {
                return Err(format!(
                    "invariant 3 broken in family {family:?}: credit limits add up to {}, the \
                     credit line is {}",
                    totals.credit, totals.credit_line
                ));
            }
        }
        Ok(())
    }

    /// Recomputes every family total from scratch and compares with the running ones.
    fn final_check(&self) -> Result<(), String> {
        let mut recomputed = vec![(0_i128, 0_i128); self.totals.len()];
        for id in crate::replay::account_ids(&self.views) {
            let (family, balance, credit) = own(&self.views, id);
            if let Some(slot) = recomputed.get_mut(family.index()) {
                slot.0 += balance;
                slot.1 += credit;
            }
        }
        for (index, ((balance, credit), totals)) in recomputed.iter().zip(&self.totals).enumerate()
        {
            if *balance != totals.money_in || *credit != totals.credit_line {
                return Err(format!(
                    "family {index}: totals recomputed from all accounts do not match"
                ));
            }
        }
        self.views
            .state()
            .ok_or("the replayed views keep no state to check")?
            .check_invariants()
            .map_err(|id| format!("invariant 1 broken for account {id:?}"))
    }
}

/// Verifies everything; `Ok` with `problem: None` means the ledger is sound. `Err` is for
/// failures to read at all (I/O), not for what the checks find.
pub fn verify(opened: &Opened, progress: &dyn Progress) -> Result<VerifyReport, AuditError> {
    let head = opened.reader.head();
    let mut snapshots = opened
        .snapshots
        .list()
        .map_err(|error| AuditError::Io(error.to_string()))?
        .into_iter()
        .peekable();
    // Verification keeps the idempotency index: it proves no command id is applied twice,
    // and snapshots are compared with it included.
    let mut views = Views::with_command_index();
    views.reserve_commands(usize::try_from(head.0).unwrap_or(0));
    let mut checker = Checker {
        views,
        totals: Vec::new(),
    };
    let mut report = VerifyReport {
        events: 0,
        records: 0,
        accounts: 0,
        families: 0,
        head: head.0,
        head_hash: ChainHash::GENESIS.to_hex(),
        first_at: None,
        last_at: None,
        snapshots_checked: 0,
        problem: None,
    };
    let problem = |seq: Option<Sequence>, what: String| {
        Some(Problem {
            seq: seq.map(|seq| seq.0),
            what,
        })
    };
    let records = match opened.reader.records_from(Sequence(1)) {
        Ok(records) => records,
        Err(LogError::Corrupt { seq, detail }) => {
            report.problem = problem(Some(seq), detail);
            return Ok(report);
        }
        Err(error) => return Err(AuditError::Io(error.to_string())),
    };
    for record in records {
        let record = match record {
            Ok(record) => record,
            Err(LogError::Corrupt { seq, detail }) => {
                report.problem = problem(Some(seq), detail);
                return Ok(report);
            }
            Err(error) => return Err(AuditError::Io(error.to_string())),
        };
        report.records += 1;
        report.head_hash = record.hash.to_hex();
        if report.first_at.is_none() {
            report.first_at = Some(format_rfc3339_millis(record.at));
        }
        report.last_at = Some(format_rfc3339_millis(record.at));
        let (at, last) = (record.at, record.last());
        for (seq, event) in record.into_batch().iter() {
            if let Err(what) = checker.apply(seq, at, event) {
                report.problem = problem(Some(seq), what);
                return Ok(report);
            }
            report.events += 1;
        }
        progress.advance(last.0, head.0);
        // Snapshots are taken at record ends: check each one when the replay reaches it.
        while let Some(snapshot) = snapshots.next_if(|snapshot| *snapshot <= last) {
            report.snapshots_checked += 1;
            let outcome = if snapshot == last {
                check_snapshot(opened, snapshot, &checker.views)
            } else {
                Err(format!(
                    "snapshot at {snapshot} does not end at a record boundary"
                ))
            };
            if let Err(what) = outcome {
                report.problem = problem(Some(snapshot), what);
                return Ok(report);
            }
        }
    }
    if let Some(beyond) = snapshots.next() {
        report.problem = problem(
            Some(head.next()),
            format!(
                "a snapshot covers up to {beyond} but the log ends at {head}: records are missing"
            ),
        );
        return Ok(report);
    }
    if let Err(what) = checker.final_check() {
        report.problem = problem(None, what);
    }
    let views = &checker.views;
    report.accounts = views.account_count();
    report.families = crate::replay::account_ids(views)
        .filter(|id| views.family_of(*id) == *id)
        .count();
    Ok(report)
}

fn check_snapshot(opened: &Opened, seq: Sequence, replayed: &Views) -> Result<(), String> {
    let bytes = opened
        .snapshots
        .load(seq)
        .map_err(|error| error.to_string())?
        .ok_or_else(|| format!("snapshot at {seq} disappeared"))?;
    let snapshot =
        decode_snapshot_from(&bytes).map_err(|error| format!("snapshot at {seq}: {error}"))?;
    let expected_hash = opened
        .reader
        .hash_at(seq)
        .map_err(|error| error.to_string())?;
    if expected_hash != Some(snapshot.head_hash) {
        return Err(format!(
            "snapshot at {seq} was not taken from this log (hash differs)"
        ));
    }
    // An older snapshot format holds less; compare what it holds.
    let equal = if snapshot.views.is_complete() {
        snapshot.views.views_hash() == replayed.views_hash()
    } else {
        snapshot.views.core_hash() == replayed.core_hash()
    };
    if !equal {
        return Err(format!("snapshot at {seq} differs from the replayed state"));
    }
    Ok(())
}
