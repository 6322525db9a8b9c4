//! Shared builders: a ledger on a sled directory and a few commands.

use std::path::Path;

use subledger_core::*;
use subledger_engine::{Config, Ledger, OpenError, SystemClock};
use subledger_store::{SledLog, StoreOptions};

pub fn key(text: &str) -> ApiKey {
    text.parse().unwrap()
}

pub fn amount(text: &str) -> Amount {
    text.parse().unwrap()
}

pub fn fresh_id() -> CommandId {
    CommandId::from_uuid(uuid::Uuid::new_v4())
}

pub fn new_secret() -> NewSecret {
    NewSecret {
        id: SecretId::from_uuid(uuid::Uuid::new_v4()),
        hash: SecretHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()).unwrap(),
    }
}

pub fn open_primary(primary: &str) -> Command {
    Command::OpenPrimary(OpenPrimary {
        key: key(primary),
        name: format!("primary {primary}"),
        currency: Currency::EUR,
        credit_line: amount("-100"),
        secret: new_secret(),
    })
}

pub fn create_subaccount(primary: &str, sub: &str) -> Command {
    Command::CreateSubaccount(CreateSubaccount {
        primary: key(primary),
        key: key(sub),
        name: format!("sub {sub}"),
        use_primary_account_balance: false,
        secret: new_secret(),
    })
}

pub fn top_up(primary: &str, value: &str) -> Command {
    Command::TopUp(TopUp {
        id: fresh_id(),
        primary: key(primary),
        amount: amount(value),
        reference: String::new(),
    })
}

pub fn transfer(primary: &str, from: &str, to: &str, value: &str) -> Command {
    Command::TransferBalance(Transfer {
        id: fresh_id(),
        primary: key(primary),
        from: key(from),
        to: key(to),
        amount: amount(value),
        reference: String::new(),
    })
}

pub fn charge(account: &str, value: &str) -> Command {
    Command::Charge(Charge {
        id: fresh_id(),
        account: key(account),
        amount: amount(value),
        reference: "usage".into(),
    })
}

pub fn small_records() -> StoreOptions {
    StoreOptions {
        events_per_record: 2,
        ..StoreOptions::default()
    }
}

pub fn no_auto_snapshots() -> Config {
    Config {
        snapshot_every_events: 0,
        ..Config::default()
    }
}

pub fn open_ledger(dir: &Path, options: StoreOptions, config: Config) -> Result<Ledger, OpenError> {
    let (log, _) =
        SledLog::open(dir, options).map_err(|error| OpenError::Thread(error.to_string()))?;
    Ledger::open(config, log, SystemClock)
}

/// Views hash and writer-state hash, then closes.
pub fn fingerprint(ledger: Ledger) -> ([u8; 32], [u8; 32]) {
    let views = ledger.read(|views| views.views_hash());
    let (state, _) = ledger.close_into_parts().unwrap();
    (views, state.state_hash())
}

/// A family and a few money commands: 8 events.
pub fn populate(ledger: &Ledger) {
    for command in [
        open_primary("disk0001"),
        create_subaccount("disk0001", "disks001"),
        create_subaccount("disk0001", "disks002"),
        top_up("disk0001", "100"),
        transfer("disk0001", "disk0001", "disks001", "30"),
        transfer("disk0001", "disk0001", "disks002", "20"),
        charge("disks001", "2.5"),
        charge("disk0001", "1"),
    ] {
        ledger.submit(command).unwrap().unwrap();
    }
}
