//! `replay`: every account's state as of a sequence number or an instant, from the log alone
//! (starting from the newest snapshot at or before the point whose hash matches the log, so a
//! point far along does not replay everything; the records after it are verified as read).

use serde::Serialize;
use subledger_core::{ApiKey, Sequence, Timestamp};
use subledger_engine::snapshot::decode_snapshot_from;
use subledger_log::LogError;
use subledger_views::time::format_rfc3339_millis;
use subledger_views::Views;

use crate::source::Opened;
use crate::{AuditError, Progress};

/// Where to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// After the event with this sequence number.
    Seq(Sequence),
    /// After every event committed at or before this instant.
    At(Timestamp),
    /// After the last event.
    Head,
}

/// One account as of the point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountRow {
    pub api_key: String,
    pub primary_account_api_key: Option<String>,
    pub name: String,
    pub currency: String,
    /// Decimal text; `None` while the subaccount uses its primary's balance.
    pub balance: Option<String>,
    pub credit_limit: Option<String>,
    pub suspended: bool,
    pub closed: bool,
    pub created_at: String,
}

/// One family's totals as of the point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FamilyRow {
    pub primary_account_api_key: String,
    pub subaccounts: usize,
    pub total_balance: String,
    pub total_credit_limit: String,
}

/// The state at a point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replayed {
    pub seq: u64,
    pub at: Option<String>,
    pub from_snapshot: Option<u64>,
    pub accounts: Vec<AccountRow>,
    pub families: Vec<FamilyRow>,
}

/// Rebuilds the views as of `point`.
pub fn views_at(
    opened: &Opened,
    point: Point,
    progress: &dyn Progress,
) -> Result<(Views, Option<Sequence>), AuditError> {
    let head = opened.reader.head();
    let target = match point {
        Point::Seq(seq) if seq > head => {
            return Err(AuditError::Usage(format!(
                "the log ends at {head}, before {seq}"
            )))
        }
        Point::Seq(seq) => Some(seq),
        Point::At(_) | Point::Head => None,
    };
    let (mut views, from_snapshot) = newest_snapshot_before(opened, point)?;
    let start = views.last_seq();
    let records = opened
        .reader
        .records_from(start.next())
        .map_err(|error| AuditError::from_log(&error))?;
    'records: for record in records {
        let record = record.map_err(|error| AuditError::from_log(&error))?;
        if let Point::At(instant) = point {
            if record.at > instant {
                break;
            }
        }
        let at = record.at;
        for (seq, event) in record.into_batch().iter().filter(|(seq, _)| *seq > start) {
            if target.is_some_and(|target| seq > target) {
                break 'records;
            }
            views
                .apply(seq, at, event)
                .map_err(|error| AuditError::Problem {
                    seq: Some(seq.0),
                    what: error.fault.to_string(),
                })?;
            progress.advance(seq.0, target.unwrap_or(head).0);
        }
    }
    Ok((views, from_snapshot))
}

/// The newest snapshot usable for `point` that matches the log; empty views otherwise.
fn newest_snapshot_before(
    opened: &Opened,
    point: Point,
) -> Result<(Views, Option<Sequence>), AuditError> {
    let listed = opened
        .snapshots
        .list()
        .map_err(|error| AuditError::Io(error.to_string()))?;
    for seq in listed.into_iter().rev() {
        if let Point::Seq(target) = point {
            if seq > target {
                continue;
            }
        }
        let Ok(Some(bytes)) = opened.snapshots.load(seq) else {
            continue;
        };
        let Ok(snapshot) = decode_snapshot_from(&bytes) else {
            continue;
        };
        if let Point::At(instant) = point {
            if snapshot.at > instant {
                continue;
            }
        }
        match opened.reader.hash_at(seq) {
            Ok(Some(hash)) if hash == snapshot.head_hash => {
                // Replaying to a point needs no idempotency index: drop it.
                let mut views = snapshot.views;
                views.forget_command_index();
                return Ok((views, Some(seq)));
            }
            Ok(_) => continue,
            Err(LogError::Corrupt { seq, detail }) => {
                return Err(AuditError::Problem {
                    seq: Some(seq.0),
                    what: detail,
                })
            }
            Err(error) => return Err(AuditError::Io(error.to_string())),
        }
    }
    Ok((Views::new(), None))
}

/// The rows of every account (or one family) of `views`.
pub fn rows(
    views: &Views,
    primary: Option<&ApiKey>,
    from_snapshot: Option<Sequence>,
) -> Result<Replayed, AuditError> {
    let mut accounts = Vec::new();
    let mut families = Vec::new();
    let primaries: Vec<ApiKey> = match primary {
        Some(key) => {
            let known = views.family(key).is_some();
            if !known {
                return Err(AuditError::Usage(format!(
                    "{key} is not a primary account at that point"
                )));
            }
            vec![*key]
        }
        None => account_ids(views)
            .filter(|id| views.family_of(*id) == *id)
            .filter_map(|id| views.key_of(id))
            .collect(),
    };
    let text = |amount: Option<subledger_core::Amount>| amount.map(|amount| amount.to_string());
    for key in primaries {
        let Some(family) = views.family(&key) else {
            continue;
        };
        for account in std::iter::once(&family.primary).chain(family.subaccounts.iter()) {
            accounts.push(AccountRow {
                api_key: account.key.to_string(),
                primary_account_api_key: account.primary.map(|key| key.to_string()),
                name: account.name.clone(),
                currency: account.currency.to_string(),
                balance: text(account.balance),
                credit_limit: text(account.credit_limit),
                suspended: account.suspended,
                closed: account.closed,
                created_at: format_rfc3339_millis(account.created_at),
            });
        }
        families.push(FamilyRow {
            primary_account_api_key: key.to_string(),
            subaccounts: family.subaccounts.len(),
            total_balance: family.total_balance.to_string(),
            total_credit_limit: family.total_credit_limit.to_string(),
        });
    }
    let seq = views.last_seq();
    Ok(Replayed {
        seq: seq.0,
        at: (seq > Sequence::ZERO).then(|| format_rfc3339_millis(views.last_at())),
        from_snapshot: from_snapshot.map(|seq| seq.0),
        accounts,
        families,
    })
}

/// Every account id of `views`, in id order.
pub(crate) fn account_ids(views: &Views) -> impl Iterator<Item = subledger_core::AccountId> + '_ {
    (0..views.account_count())
        .filter_map(|index| u32::try_from(index).ok().map(subledger_core::AccountId))
}
