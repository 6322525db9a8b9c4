//! Generated ledgers and a runner for the binary.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command as Process, Output};

use subledger_core::*;
use subledger_engine::{Config, Ledger, ManualClock};
use subledger_store::{SledLog, StoreOptions};

pub fn key(text: &str) -> ApiKey {
    text.parse().unwrap()
}

pub fn amount(text: &str) -> Amount {
    text.parse().unwrap()
}

fn secret(n: u32) -> NewSecret {
    NewSecret {
        id: SecretId::from_bytes(u128::from(n).to_le_bytes()),
        hash: SecretHash::new("$argon2id$v=19$m=19456,t=2,p=1$YXVkaXQ$YXVkaXRoYXNo".into())
            .unwrap(),
    }
}

/// Runs `subledger` with `args`.
pub fn run(args: &[&str]) -> Output {
    Process::new(env!("CARGO_BIN_EXE_subledger"))
        .args(args)
        .output()
        .unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Every file under `dir` with its bytes.
pub fn tree_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                let name = entry
                    .path()
                    .strip_prefix(dir)
                    .unwrap()
                    .display()
                    .to_string();
                files.insert(name, std::fs::read(entry.path()).unwrap());
            }
        }
    }
    files
}

/// Instant of the n-th commit in generated ledgers: one second apart from 2026-01-01.
pub fn instant(step: i64) -> Timestamp {
    Timestamp(1_767_225_600_000 + step * 1_000)
}

/// A ledger with two families, transfers, charges and credit, one command per second,
/// records of 4 events, and a snapshot after command 20. Returns the number of events.
pub fn generate(dir: &Path) -> u64 {
    let options = StoreOptions {
        events_per_record: 4,
        ..StoreOptions::default()
    };
    let (log, _) = SledLog::open(dir, options).unwrap();
    let clock = ManualClock::new(instant(0));
    let config = Config {
        snapshot_every_events: 0,
        ..Config::default()
    };
    let ledger = Ledger::open(config, log, clock.clone()).unwrap();
    let mut ids = 0_u32;
    let mut next_id = || {
        ids += 1;
        CommandId::from_bytes(u128::from(ids).to_le_bytes())
    };
    let mut commands = Vec::new();
    let families = [
        ("audp0001", ["auds0011", "auds0012"]),
        ("audp0002", ["auds0021", "auds0022"]),
    ];
    for (family, (primary, subs)) in (0_u32..).zip(families) {
        commands.push(Command::OpenPrimary(OpenPrimary {
            key: key(primary),
            name: format!("Primary {primary}"),
            currency: Currency::EUR,
            credit_line: amount("-100"),
            secret: secret(1_000 + family * 10),
        }));
        for (index, sub) in subs.iter().enumerate() {
            commands.push(Command::CreateSubaccount(CreateSubaccount {
                primary: key(primary),
                key: key(sub),
                name: format!("Sub {sub}"),
                use_primary_account_balance: index == 1,
                secret: secret(1_001 + family * 10 + u32::try_from(index).unwrap()),
            }));
        }
        commands.push(Command::TopUp(TopUp {
            id: next_id(),
            primary: key(primary),
            amount: amount("500"),
            reference: "wire".into(),
        }));
    }
    for round in 0..8 {
        let value = format!("{}.{}", 5 + round, round);
        commands.push(Command::TransferBalance(Transfer {
            id: next_id(),
            primary: key("audp0001"),
            from: key("audp0001"),
            to: key("auds0011"),
            amount: amount(&value),
            reference: format!("round {round}"),
        }));
        commands.push(Command::Charge(Charge {
            id: next_id(),
            account: key("auds0012"),
            amount: amount("1.25"),
            reference: String::new(),
        }));
        commands.push(Command::TransferCredit(Transfer {
            id: next_id(),
            primary: key("audp0002"),
            from: key("audp0002"),
            to: key("auds0021"),
            amount: amount("2"),
            reference: String::new(),
        }));
    }
    for (step, command) in (1_i64..).zip(commands) {
        clock.set(instant(step));
        ledger.submit(command).unwrap().unwrap();
        if step == 20 {
            ledger.snapshot_now().unwrap();
        }
    }
    let events = ledger.metrics().events;
    ledger.close().unwrap();
    events
}

/// Brute force: applies the first `count` events from the data directory's log.
pub fn brute_force_balances(dir: &Path, upto: Sequence) -> BTreeMap<String, Option<String>> {
    let copy = tempfile::tempdir().unwrap();
    for (name, bytes) in tree_bytes(dir) {
        let target = copy.path().join(&name);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
    let (log, _) = SledLog::open(copy.path(), StoreOptions::default()).unwrap();
    let reader = subledger_log::EventLog::reader(&log);
    let mut state = State::new(Policy::default());
    for record in reader.records_from(Sequence(1)).unwrap() {
        let record = record.unwrap();
        for (seq, event) in record.clone().into_batch().iter() {
            if seq <= upto {
                state.apply(seq, record.at, event).unwrap();
            }
        }
    }
    state
        .accounts()
        .map(|(_, account)| {
            let balance = match account.funding() {
                Funding::Own { balance, .. } => Some(balance.to_string()),
                Funding::Shared => None,
            };
            (account.key.to_string(), balance)
        })
        .collect()
}
