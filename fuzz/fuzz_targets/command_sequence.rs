//! Arbitrary command sequences against the core: decide + apply must never panic, every
//! accepted command must apply, invariant 1 must hold after every step, and replaying the
//! events from empty must give the same state hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use subledger_core::*;

const KEYS: [&str; 6] = ["prim0001", "prim0002", "sub00001", "sub00002", "sub00003", "unknown1"];

fn key(byte: u8) -> ApiKey {
    KEYS[usize::from(byte) % KEYS.len()].parse().unwrap_or_else(|_| unreachable!())
}

fn amount(high: u8, low: u8) -> Amount {
    let units = (i128::from(high) << 8 | i128::from(low)) - 2_000;
    Amount::from_units(units * 1_000_000).unwrap_or(Amount::ZERO)
}

fn secret(byte: u8) -> NewSecret {
    NewSecret {
        id: SecretId::from_bytes([byte % 4; 16]),
        hash: SecretHash::new("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into()).unwrap_or_else(|_| unreachable!()),
    }
}

fn command(bytes: &[u8; 6]) -> Command {
    let [op, a, b, c, d, e] = *bytes;
    let id = CommandId::from_bytes([e % 8; 16]);
    match op % 12 {
        0 => Command::OpenPrimary(OpenPrimary { key: key(a), name: String::new(), currency: Currency::EUR, credit_line: amount(b, c).negate().min(Amount::ZERO), secret: secret(d) }),
        1 => Command::CreateSubaccount(CreateSubaccount { primary: key(a), key: key(b), name: "s".into(), use_primary_account_balance: c % 2 == 0, secret: secret(d) }),
        2 => Command::UpdateSubaccount(UpdateSubaccount { primary: key(a), subaccount: key(b), name: None, suspended: (c % 3 != 0).then_some(c % 3 == 1), use_primary_account_balance: (d % 3 != 0).then_some(d % 3 == 1) }),
        3 => Command::CloseSubaccount(CloseSubaccount { primary: key(a), subaccount: key(b) }),
        4 => Command::SetSuspended(SetSuspended { account: key(a), suspended: b % 2 == 0 }),
        5 | 6 => Command::TransferBalance(Transfer { id, primary: key(a), from: key(b), to: key(c), amount: amount(d, e), reference: String::new() }),
        7 => Command::TransferCredit(Transfer { id, primary: key(a), from: key(b), to: key(c), amount: amount(d, e), reference: String::new() }),
        8 => Command::Charge(Charge { id, account: key(a), amount: amount(b, c), reference: String::new() }),
        9 => Command::TopUp(TopUp { id, primary: key(a), amount: amount(b, c), reference: String::new() }),
        10 => Command::SetCreditLine(SetCreditLine { primary: key(a), credit_line: amount(b, c) }),
        _ => if d % 2 == 0 {
            Command::CreateSecret(CreateSecret { account: key(a), secret: secret(b) })
        } else {
            Command::RevokeSecret(RevokeSecret { account: key(a), secret: secret(b).id })
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let mut state = State::new(Policy { subaccounts_per_primary_max: 2 });
    let mut log: Vec<(Sequence, Event)> = Vec::new();
    for chunk in data.chunks_exact(6).take(512) {
        let Ok(bytes) = <&[u8; 6]>::try_from(chunk) else { continue };
        if let Ok(Decision::Apply(events)) = decide(&state, &command(bytes)) {
            for event in events {
                let seq = state.last_seq().next();
                if let Err(error) = state.apply(seq, Timestamp(0), &event) {
                    panic!("decided event refused: {error}");
                }
                log.push((seq, event));
            }
        }
        assert!(state.check_invariants().is_ok());
    }
    let mut replayed = State::new(Policy::default());
    for (seq, event) in &log {
        assert!(replayed.apply(*seq, Timestamp(0), event).is_ok());
    }
    assert_eq!(replayed.state_hash(), state.state_hash());
});
