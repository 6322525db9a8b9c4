//! subledger-log: the seam between the engine and durable storage.
//!
//! The engine's writer owns one [`EventLog`]: it appends each committed [`Batch`] and then calls
//! [`EventLog::sync`], acknowledging nobody before `sync` returns. Readers (recovery, change
//! feeds, audits) use a [`LogReader`], which can be cloned and used from any thread while the
//! writer appends. This crate deliberately knows no storage engine: `MemoryLog` lives here for
//! tests and embedding without persistence; the sled implementation lives in its own crate, and
//! another backend (e.g. NATS JetStream) is one more crate implementing these two traits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use subledger_core::{Batch, Sequence};

/// Why the log failed. Every variant is fail-stop for the writer: it stops accepting commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The storage failed (I/O, flush). Nothing after the last successful `sync` is durable.
    #[error("storage failure: {0}")]
    Storage(String),
    /// A record is corrupt or out of place; `seq` names the first sequence number affected.
    #[error("corrupt log at sequence {seq}: {detail}")]
    Corrupt { seq: Sequence, detail: String },
    /// A batch does not continue the log (its first sequence is not the head + 1).
    #[error("batch starting at {first} does not follow the head {head}")]
    Gap { head: Sequence, first: Sequence },
    /// An injected failure (tests only).
    #[error("injected failure")]
    Injected,
}

/// Batches read from the log in sequence order; each item is a batch or the error that stops
/// the read (a corrupt record is never skipped).
pub type BatchIter<'a> = Box<dyn Iterator<Item = Result<Batch, LogError>> + Send + 'a>;

/// Read access to a log, shareable across threads.
pub trait LogReader: Send + Sync {
    /// Batches containing events with sequence ≥ `from`, in order. The first batch may start
    /// before `from`; callers skip the events they do not need.
    fn read_from(&self, from: Sequence) -> Result<BatchIter<'_>, LogError>;

    /// The last durable sequence number (0 for an empty log).
    fn head(&self) -> Sequence;
}

/// The writer's handle on a log.
pub trait EventLog: Send + 'static {
    /// Adds a batch after the head. Not durable until [`EventLog::sync`] returns `Ok`.
    fn append(&mut self, batch: &Batch) -> Result<(), LogError>;

    /// Makes every appended batch durable.
    fn sync(&mut self) -> Result<(), LogError>;

    /// A reader over the same log.
    fn reader(&self) -> Arc<dyn LogReader>;
}

impl std::fmt::Debug for dyn LogReader {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "LogReader(head {})", self.head())
    }
}

impl std::fmt::Debug for dyn EventLog {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("EventLog")
    }
}

/// A log kept in memory: complete and fast, durable only as long as the process lives.
#[derive(Debug, Clone, Default)]
pub struct MemoryLog {
    shared: Arc<MemoryShared>,
}

#[derive(Debug, Default)]
struct MemoryShared {
    batches: RwLock<Vec<Batch>>,
    fail_next_sync: AtomicBool,
}

impl MemoryLog {
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    /// A handle that makes the next `sync` fail, for fail-stop tests.
    pub fn fault_switch(&self) -> FaultSwitch {
        FaultSwitch {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Every batch in the log, cloned.
    pub fn batches(&self) -> Vec<Batch> {
        self.shared
            .batches
            .read()
            .map(|batches| batches.clone())
            .unwrap_or_default()
    }
}

/// Makes a [`MemoryLog`]'s next `sync` fail.
#[derive(Debug, Clone)]
pub struct FaultSwitch {
    shared: Arc<MemoryShared>,
}

impl FaultSwitch {
    pub fn fail_next_sync(&self) {
        self.shared.fail_next_sync.store(true, Ordering::SeqCst);
    }
}

fn poisoned() -> LogError {
    LogError::Storage("memory log lock poisoned".into())
}

impl EventLog for MemoryLog {
    fn append(&mut self, batch: &Batch) -> Result<(), LogError> {
        let mut batches = self.shared.batches.write().map_err(|_| poisoned())?;
        let head = batches.last().map_or(Sequence::ZERO, Batch::last);
        if batch.first != head.next() {
            return Err(LogError::Gap {
                head,
                first: batch.first,
            });
        }
        batches.push(batch.clone());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), LogError> {
        if self.shared.fail_next_sync.swap(false, Ordering::SeqCst) {
            return Err(LogError::Injected);
        }
        Ok(())
    }

    fn reader(&self) -> Arc<dyn LogReader> {
        Arc::new(self.clone())
    }
}

impl LogReader for MemoryLog {
    fn read_from(&self, from: Sequence) -> Result<BatchIter<'_>, LogError> {
        let batches = self.shared.batches.read().map_err(|_| poisoned())?;
        let start = batches.partition_point(|batch| batch.last() < from);
        let selected: Vec<Batch> = batches[start..].to_vec();
        Ok(Box::new(selected.into_iter().map(Ok)))
    }

    fn head(&self) -> Sequence {
        self.shared
            .batches
            .read()
            .ok()
            .and_then(|batches| batches.last().map(Batch::last))
            .unwrap_or(Sequence::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use subledger_core::{Event, Timestamp};

    fn batch(first: u64, count: usize) -> Batch {
        let event = Event::AccountSuspended {
            account: subledger_core::AccountId(0),
        };
        Batch {
            first: Sequence(first),
            at: Timestamp(0),
            events: vec![event; count],
        }
    }

    #[test]
    fn appends_in_order_and_reads_from_any_sequence() {
        let mut log = MemoryLog::new();
        log.append(&batch(1, 3)).unwrap();
        log.append(&batch(4, 2)).unwrap();
        assert_eq!(
            log.append(&batch(7, 1)),
            Err(LogError::Gap {
                head: Sequence(5),
                first: Sequence(7)
            })
        );
        let reader = log.reader();
        assert_eq!(reader.head(), Sequence(5));
        let firsts: Vec<u64> = reader
            .read_from(Sequence(4))
            .unwrap()
            .map(|batch| batch.unwrap().first.0)
            .collect();
        assert_eq!(firsts, vec![4]);
        assert_eq!(reader.read_from(Sequence(3)).unwrap().count(), 2);
        assert_eq!(reader.read_from(Sequence(6)).unwrap().count(), 0);
    }

    #[test]
    fn the_fault_switch_fails_one_sync() {
        let mut log = MemoryLog::new();
        log.fault_switch().fail_next_sync();
        assert_eq!(log.sync(), Err(LogError::Injected));
        assert_eq!(log.sync(), Ok(()));
    }
}
