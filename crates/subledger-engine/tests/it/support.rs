//! Builders shared by the engine tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use subledger_log::{EventLog, LogError, LogReader, MemoryLog, SnapshotStore};

use subledger_core::*;

pub fn key(text: &str) -> ApiKey {
    text.parse().unwrap()
}

pub fn amount(text: &str) -> Amount {
    text.parse().unwrap()
}

static IDS: AtomicU64 = AtomicU64::new(1);

pub fn command_id() -> CommandId {
    let n = IDS.fetch_add(1, Ordering::Relaxed);
    let mut bytes = [0u8; 16];
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    CommandId::from_bytes(bytes)
}

pub fn new_secret() -> NewSecret {
    let n = IDS.fetch_add(1, Ordering::Relaxed);
    let mut bytes = [0u8; 16];
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    NewSecret {
        id: SecretId::from_bytes(bytes),
        hash: SecretHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()).unwrap(),
    }
}

pub fn open_primary(primary: &str) -> Command {
    Command::OpenPrimary(OpenPrimary {
        key: key(primary),
        name: format!("primary {primary}"),
        currency: Currency::EUR,
        credit_line: Amount::ZERO,
        secret: new_secret(),
    })
}

pub fn create_subaccount(primary: &str, sub: &str, shared: bool) -> Command {
    Command::CreateSubaccount(CreateSubaccount {
        primary: key(primary),
        key: key(sub),
        name: format!("sub {sub}"),
        use_primary_account_balance: shared,
        secret: new_secret(),
    })
}

pub fn top_up(primary: &str, value: &str) -> Command {
    Command::TopUp(TopUp {
        id: command_id(),
        primary: key(primary),
        amount: amount(value),
        reference: String::new(),
    })
}

pub fn transfer_balance(primary: &str, from: &str, to: &str, value: &str) -> Command {
    Command::TransferBalance(Transfer {
        id: command_id(),
        primary: key(primary),
        from: key(from),
        to: key(to),
        amount: amount(value),
        reference: String::new(),
    })
}

pub fn charge(account: &str, value: &str) -> Command {
    Command::Charge(Charge {
        id: command_id(),
        account: key(account),
        amount: amount(value),
        reference: String::new(),
    })
}

/// A log whose `sync` signals `entered`, waits for a token on `gate` (so a test can hold a
/// thread mid-commit), then panics if `panic_next` is set, or else syncs the memory log (which
/// may have been told to fail).
pub struct HeldLog {
    pub inner: MemoryLog,
    pub entered: Sender<()>,
    pub gate: Receiver<()>,
    pub panic_next: Arc<AtomicBool>,
}

impl EventLog for HeldLog {
    fn append(&mut self, batch: &Batch) -> Result<(), LogError> {
        self.inner.append(batch)
    }

    fn sync(&mut self) -> Result<(), LogError> {
        let _ = self.entered.send(());
        self.gate.recv().map_err(|_| LogError::Injected)?;
        assert!(
            !self.panic_next.swap(false, Ordering::SeqCst),
            "injected panic in sync"
        );
        self.inner.sync()
    }

    fn reader(&self) -> Arc<dyn LogReader> {
        self.inner.reader()
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        self.inner.snapshots()
    }
}
