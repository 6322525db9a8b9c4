//! decide + apply in memory, the CPU ceiling of the writer: balance transfers and charges over
//! 1,000 primaries × 100 subaccounts (SPEC's `vonage` shape). Run with
//! `cargo bench -p subledger-benches --bench core`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use subledger_core::*;

const PRIMARIES: u32 = 1_000;
const SUBACCOUNTS_PER_PRIMARY: u32 = 100;

fn key_of(index: u32) -> ApiKey {
    let text = format!("{index:08}");
    text.parse()
        .unwrap_or_else(|_| unreachable!("digits are a valid key"))
}

fn primary_key(primary: u32) -> ApiKey {
    key_of(primary * (SUBACCOUNTS_PER_PRIMARY + 1))
}

fn sub_key(primary: u32, sub: u32) -> ApiKey {
    key_of(primary * (SUBACCOUNTS_PER_PRIMARY + 1) + 1 + sub)
}

struct Ids(u128);

impl Ids {
    fn next(&mut self) -> [u8; 16] {
        self.0 += 1;
        self.0.to_le_bytes()
    }
}

/// Decides and applies, panicking on anything but acceptance: the bench must measure commits.
fn run(state: &mut State, command: &Command, at: Timestamp) {
    match decide(state, command) {
        Ok(Decision::Apply(events)) => {
            for event in &events {
                let seq = state.last_seq().next();
                if let Err(error) = state.apply(seq, at, event) {
                    panic!("apply failed: {error}");
                }
            }
        }
        other => panic!("unexpected outcome {other:?}"),
    }
}

fn populated(ids: &mut Ids) -> State {
    let mut state = State::new(Policy::default());
    let hash = SecretHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into())
        .unwrap_or_else(|_| unreachable!());
    let secret = |ids: &mut Ids| NewSecret {
        id: SecretId::from_bytes(ids.next()),
        hash: hash.clone(),
    };
    let at = Timestamp(0);
    for primary in 0..PRIMARIES {
        let open = OpenPrimary {
            key: primary_key(primary),
            name: String::new(),
            currency: Currency::EUR,
            credit_line: Amount::ZERO,
            secret: secret(ids),
        };
        run(&mut state, &Command::OpenPrimary(open), at);
        let top_up = TopUp {
            id: CommandId::from_bytes(ids.next()),
            primary: primary_key(primary),
            amount: Amount::from_whole(1_000_000_000).unwrap_or(Amount::ZERO),
            reference: String::new(),
        };
        run(&mut state, &Command::TopUp(top_up), at);
        for sub in 0..SUBACCOUNTS_PER_PRIMARY {
            let create = CreateSubaccount {
                primary: primary_key(primary),
                key: sub_key(primary, sub),
                name: "sub".into(),
                use_primary_account_balance: false,
                secret: secret(ids),
            };
            run(&mut state, &Command::CreateSubaccount(create), at);
        }
    }
    state
}

/// A cheap deterministic generator (xorshift), so command generation is not what we measure.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        u32::try_from(self.0 % u64::from(bound)).unwrap_or(0)
    }
}

fn transfers(ids: &mut Ids, rng: &mut Rng, count: u64) -> Vec<Command> {
    let cent = Amount::from_units(1_000_000).unwrap_or(Amount::ZERO);
    (0..count)
        .map(|_| {
            let primary = rng.below(PRIMARIES);
            let sub = rng.below(SUBACCOUNTS_PER_PRIMARY);
            // Primary → subaccount keeps every transfer affordable for the whole run.
            Command::TransferBalance(Transfer {
                id: CommandId::from_bytes(ids.next()),
                primary: primary_key(primary),
                from: primary_key(primary),
                to: sub_key(primary, sub),
                amount: cent,
                reference: String::new(),
            })
        })
        .collect()
}

fn charges(ids: &mut Ids, rng: &mut Rng, count: u64) -> Vec<Command> {
    let unit = Amount::from_units(1).unwrap_or(Amount::ZERO);
    (0..count)
        .map(|_| {
            let primary = rng.below(PRIMARIES);
            Command::Charge(Charge {
                id: CommandId::from_bytes(ids.next()),
                account: primary_key(primary),
                amount: unit,
                reference: String::new(),
            })
        })
        .collect()
}

fn decide_apply(criterion: &mut Criterion) {
    let mut ids = Ids(0);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut state = populated(&mut ids);
    let mut group = criterion.benchmark_group("decide_apply");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    let mut measure = |name: &str, generate: fn(&mut Ids, &mut Rng, u64) -> Vec<Command>| {
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iterations| {
                let commands = generate(&mut ids, &mut rng, iterations);
                let at = Timestamp(1);
                let started = Instant::now();
                for command in &commands {
                    run(&mut state, black_box(command), at);
                }
                started.elapsed()
            });
        });
    };
    measure("balance_transfer", transfers);
    measure("charge", charges);
    group.finish();
}

criterion_group!(benches, decide_apply);
criterion_main!(benches);
