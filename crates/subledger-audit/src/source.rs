//! Where an audit reads from: a data directory or a portable archive, never changed.
//!
//! sled cannot open a database read-only — opening may recover and rewrite its files, closing
//! writes a snapshot of its own — so a data directory is audited through a private copy in a
//! temporary directory. A directory locked by a running server is refused (its files change
//! under a copy); audit a live ledger through its exported archive instead.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use subledger_log::archive::{ArchiveReader, NoSnapshots};
use subledger_log::{EventLog, LogReader, SnapshotStore};
use subledger_store::{Durability, SledLog, StoreError, StoreOptions};

use crate::AuditError;

/// What to audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A data directory (sled store with its snapshots).
    Data(PathBuf),
    /// A portable log archive (`export --what log`).
    Archive(PathBuf),
}

/// An opened source: a verified reader and the snapshots beside it.
pub struct Opened {
    pub reader: Arc<dyn LogReader>,
    pub snapshots: Arc<dyn SnapshotStore>,
    /// Keeps the private copy (and the store on it) alive while reading.
    _keep: Option<(SledLog, tempfile::TempDir)>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Opened(head {})", self.reader.head())
    }
}

impl Source {
    pub fn open(&self) -> Result<Opened, AuditError> {
        match self {
            Source::Archive(path) => {
                let reader =
                    ArchiveReader::open(path).map_err(|error| AuditError::from_log(&error))?;
                Ok(Opened {
                    reader: Arc::new(reader),
                    snapshots: Arc::new(NoSnapshots),
                    _keep: None,
                })
            }
            Source::Data(dir) => open_private_copy(dir),
        }
    }
}

fn open_private_copy(dir: &Path) -> Result<Opened, AuditError> {
    if !dir.is_dir() {
        return Err(AuditError::Usage(format!(
            "{}: no such data directory",
            dir.display()
        )));
    }
    let db_file = dir.join("db");
    if !db_file.is_file() || !dir.join("conf").is_file() {
        return Err(AuditError::Usage(format!(
            "{} is not a subledger data directory",
            dir.display()
        )));
    }
    // An advisory lock test: sled holds an exclusive lock on `db` while a ledger is open.
    // Taking and dropping a shared lock changes nothing on disk.
    let probe = File::open(&db_file)
        .map_err(|error| AuditError::Io(format!("{}: {error}", db_file.display())))?;
    if !lock_within(&probe, std::time::Duration::from_millis(LOCK_WAIT_MILLIS)) {
        return Err(AuditError::Usage(format!(
            "{} is locked by a running ledger (a server?): stop it, or audit an archive from \
             `subledger export --from URL --what log`",
            dir.display()
        )));
    }
    let copy = tempfile::Builder::new()
        .prefix("subledger-audit-")
        .tempdir()
        .map_err(|error| AuditError::Io(error.to_string()))?;
    copy_tree(dir, copy.path())?;
    drop(probe);
    let options = StoreOptions {
        create: false,
        // A working copy, removed after the audit: syncing it would only write it out.
        durability: Durability::Process,
        ..StoreOptions::default()
    };
    let (log, _) = SledLog::open(copy.path(), options).map_err(|error| match error {
        StoreError::Log(log) => AuditError::from_log(&log),
        StoreError::NewerFormat { found } => AuditError::Usage(format!(
            "the ledger's format version {found} is newer than this program"
        )),
        other => AuditError::Io(other.to_string()),
    })?;
    Ok(Opened {
        reader: log.reader(),
        snapshots: log.snapshots(),
        _keep: Some((log, copy)),
    })
}

/// How long to wait for a lock that a ledger closing in this process releases shortly after
/// its last handle drops (sled's I/O threads hold it a moment longer).
const LOCK_WAIT_MILLIS: u64 = 2_000;

fn lock_within(file: &File, wait: std::time::Duration) -> bool {
    let started = std::time::Instant::now();
    loop {
        if file.try_lock_shared().is_ok() {
            return true;
        }
        if started.elapsed() >= wait {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), AuditError> {
    let failed =
        |path: &Path, error: std::io::Error| AuditError::Io(format!("{}: {error}", path.display()));
    std::fs::create_dir_all(to).map_err(|error| failed(to, error))?;
    for entry in std::fs::read_dir(from).map_err(|error| failed(from, error))? {
        let entry = entry.map_err(|error| failed(from, error))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(|error| failed(&source, error))?;
        if kind.is_dir() {
            copy_tree(&source, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target).map_err(|error| failed(&source, error))?;
        }
    }
    Ok(())
}
