//! Read-side latency on a family with a long history: the state of an account and of its
//! family at an instant one million events in the past, and a statement page. Run with
//! `cargo bench -p subledger-benches --bench reads`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use subledger_core::*;
use subledger_views::{AsOf, StatementQuery, Views};

const SUBACCOUNTS: u32 = 100;
const TRANSFERS: u64 = 1_200_000;

fn key(index: u32) -> ApiKey {
    format!("{index:08}")
        .parse()
        .unwrap_or_else(|_| unreachable!("digits are a valid key"))
}

/// One primary with 100 subaccounts and 1.2M transfers, one per millisecond.
fn history() -> Views {
    let mut state = State::new(Policy::default());
    let mut views = Views::new();
    let hash = SecretHash::new("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into())
        .unwrap_or_else(|_| unreachable!());
    let secret = |n: u32| NewSecret {
        id: SecretId::from_bytes(u128::from(n).to_le_bytes()),
        hash: hash.clone(),
    };
    let primary = key(0);
    let mut commands = vec![
        Command::OpenPrimary(OpenPrimary {
            key: primary,
            name: String::new(),
            currency: Currency::EUR,
            credit_line: Amount::ZERO,
            secret: secret(0),
        }),
        Command::TopUp(TopUp {
            id: CommandId::from_bytes([0xff; 16]),
            primary,
            amount: Amount::from_whole(1_000_000_000).unwrap_or(Amount::ZERO),
            reference: String::new(),
        }),
    ];
    for sub in 1..=SUBACCOUNTS {
        commands.push(Command::CreateSubaccount(CreateSubaccount {
            primary,
            key: key(sub),
            name: "s".into(),
            use_primary_account_balance: false,
            secret: secret(sub),
        }));
    }
    let cent = Amount::from_units(1_000_000).unwrap_or(Amount::ZERO);
    let transfers = (0..TRANSFERS).map(|n| {
        let sub = key(1 + u32::try_from(n % u64::from(SUBACCOUNTS)).unwrap_or(0));
        Command::TransferBalance(Transfer {
            id: CommandId::from_bytes(u128::from(n).to_le_bytes()),
            primary,
            from: primary,
            to: sub,
            amount: cent,
            reference: String::new(),
        })
    });
    for (millis, command) in (0_i64..).zip(commands.into_iter().chain(transfers)) {
        let at = Timestamp(millis);
        match execute(&mut state, at, &command) {
            Ok(Ok(Executed::Applied { first, events })) => {
                for (offset, event) in (0..).zip(&events) {
                    if views.apply(Sequence(first.0 + offset), at, event).is_err() {
                        unreachable!("a decided event applies");
                    }
                }
            }
            other => unreachable!("setup command refused: {other:?}"),
        }
    }
    views
}

fn reads(criterion: &mut Criterion) {
    let views = history();
    let head = views.last_seq().0;
    // One million events before the head.
    let past = AsOf::At(Timestamp(
        i64::try_from(head.saturating_sub(1_000_000)).unwrap_or(0),
    ));
    let mut group = criterion.benchmark_group("reads");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("account_at_1m_events_ago", |bencher| {
        bencher.iter(|| black_box(views.account_at(&key(7), black_box(past))));
    });
    group.bench_function("family_at_1m_events_ago_101_accounts", |bencher| {
        bencher.iter(|| black_box(views.family_at(&key(0), black_box(past))));
    });
    let page = StatementQuery {
        after: Some(Sequence(head / 2)),
        limit: Some(100),
        ..StatementQuery::default()
    };
    group.bench_function("statement_page_100_lines", |bencher| {
        bencher.iter(|| black_box(views.statement(&key(7), black_box(&page))));
    });
    group.finish();
}

criterion_group!(benches, reads);
criterion_main!(benches);
