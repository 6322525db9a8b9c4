//! subledger-audit: what an auditor runs — `verify`, `replay` to any point, `export` — on a
//! data directory or a portable log archive, without ever changing what it reads.
//!
//! Layout: [`source`] opens what to read (a private copy of a data directory, or an archive);
//! [`verify`](mod@verify) checks every record, event, invariant and snapshot; [`replay`] rebuilds the
//! state at a sequence number or instant; [`export`](mod@export) writes events, reports and archives.
//! This crate decides nothing and writes nothing to a ledger; the CLI turns its results into
//! tables, JSON, CSV and exit codes.

pub mod export;
pub mod replay;
pub mod source;
pub mod verify;

use subledger_log::LogError;

pub use export::{export, ExportSummary, Format, What, Window};
pub use replay::{rows, views_at, Point, Replayed};
pub use source::{Opened, Source};
pub use verify::{verify, Problem, VerifyReport};

/// Why an audit could not run, or what stopped it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The input is not what it should be: a bad argument, a missing or locked directory, a
    /// newer format. Exit code 2.
    #[error("{0}")]
    Usage(String),
    /// Reading or writing failed. Exit code 2.
    #[error("I/O error: {0}")]
    Io(String),
    /// The ledger itself is damaged where the operation needed it. Exit code 1.
    #[error("problem at sequence {seq:?}: {what}")]
    Problem { seq: Option<u64>, what: String },
}

impl AuditError {
    pub(crate) fn from_log(error: &LogError) -> AuditError {
        match error {
            LogError::Corrupt { seq, detail } => AuditError::Problem {
                seq: Some(seq.0),
                what: detail.clone(),
            },
            other => AuditError::Io(other.to_string()),
        }
    }

    /// The process exit code for this error (1: a problem found, 2: usage or I/O).
    pub fn exit_code(&self) -> u8 {
        match self {
            AuditError::Problem { .. } => 1,
            AuditError::Usage(_) | AuditError::Io(_) => 2,
        }
    }
}

/// Receives progress of long operations (done, total), e.g. to draw a progress bar.
pub trait Progress {
    fn advance(&self, done: u64, total: u64);
}

/// No progress reporting.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn advance(&self, _done: u64, _total: u64) {}
}
