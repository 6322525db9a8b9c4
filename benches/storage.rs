//! Storage costs: encoding and decoding records, appending a committed batch to the sled log
//! (durable), replaying records into state, and writing and reading a snapshot. Run with
//! `cargo bench -p subledger-benches --bench storage`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use subledger_core::*;
use subledger_engine::snapshot::{decode_snapshot, encode_snapshot};
use subledger_log::record::{decode_record, encode_batch, encode_record, RecordLimits};
use subledger_log::{ChainHash, EventLog};
use subledger_views::Views;

const BATCH_EVENTS: usize = 4_096;

fn transfer_event(n: u64) -> Event {
    Event::BalanceTransferred {
        command: CommandId::from_bytes(u128::from(n).to_le_bytes()),
        source: AccountId(0),
        target: AccountId(1 + u32::try_from(n % 99).unwrap_or(0)),
        amount: Amount::from_units(1_000_000).unwrap_or(Amount::ZERO),
        reference: String::new(),
    }
}

fn batch(first: u64) -> Batch {
    Batch {
        first: Sequence(first),
        at: Timestamp(1),
        events: (first..first + BATCH_EVENTS as u64)
            .map(transfer_event)
            .collect(),
    }
}

/// A family of one primary and 99 subaccounts, funded, then `transfers` transfers.
fn family_log(transfers: u64) -> Vec<(Sequence, Timestamp, Event)> {
    let mut state = State::new(Policy::default());
    let hash = SecretHash::new("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into())
        .unwrap_or_else(|_| unreachable!());
    let key = |n: u32| {
        format!("{n:08}")
            .parse::<ApiKey>()
            .unwrap_or_else(|_| unreachable!())
    };
    let secret = |n: u32| NewSecret {
        id: SecretId::from_bytes(u128::from(n).to_le_bytes()),
        hash: hash.clone(),
    };
    let mut commands = vec![
        Command::OpenPrimary(OpenPrimary {
            key: key(0),
            name: String::new(),
            currency: Currency::EUR,
            credit_line: Amount::ZERO,
            secret: secret(0),
        }),
        Command::TopUp(TopUp {
            id: CommandId::from_bytes([0xee; 16]),
            primary: key(0),
            amount: Amount::from_whole(1_000_000_000).unwrap_or(Amount::ZERO),
            reference: String::new(),
        }),
    ];
    for sub in 1..100 {
        commands.push(Command::CreateSubaccount(CreateSubaccount {
            primary: key(0),
            key: key(sub),
            name: "s".into(),
            use_primary_account_balance: false,
            secret: secret(sub),
        }));
    }
    let transfers = (0..transfers).map(|n| {
        Command::TransferBalance(Transfer {
            id: CommandId::from_bytes(u128::from(n).to_le_bytes()),
            primary: key(0),
            from: key(0),
            to: key(1 + u32::try_from(n % 99).unwrap_or(0)),
            amount: Amount::from_units(1_000_000).unwrap_or(Amount::ZERO),
            reference: String::new(),
        })
    });
    let mut log = Vec::new();
    for command in commands.into_iter().chain(transfers) {
        if let Ok(Ok(Executed::Applied { first, events })) =
            execute(&mut state, Timestamp(1), &command)
        {
            for (offset, event) in (0..).zip(events) {
                log.push((Sequence(first.0 + offset), Timestamp(1), event));
            }
        }
    }
    log
}

fn storage(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("storage");
    group.measurement_time(Duration::from_secs(4));
    group.sample_size(20);
    let events = batch(1);
    group.throughput(Throughput::Elements(BATCH_EVENTS as u64));
    group.bench_function("encode_record_4096_events", |bencher| {
        bencher.iter(|| {
            black_box(encode_record(
                Sequence(1),
                Timestamp(1),
                Sequence(4096),
                ChainHash::GENESIS,
                black_box(&events.events),
            ))
        });
    });
    let (encoded, _) = encode_record(
        Sequence(1),
        Timestamp(1),
        Sequence(4096),
        ChainHash::GENESIS,
        &events.events,
    )
    .unwrap_or_else(|_| unreachable!());
    group.bench_function("decode_verify_record_4096_events", |bencher| {
        bencher.iter(|| black_box(decode_record(black_box(&encoded))));
    });
    let dir = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
    let (mut log, _) =
        subledger_store::SledLog::open(dir.path(), subledger_store::StoreOptions::default())
            .unwrap_or_else(|_| unreachable!());
    let mut next = 1_u64;
    group.bench_function("sled_append_and_flush_4096_events", |bencher| {
        bencher.iter_batched(
            || {
                let batch = batch(next);
                next += BATCH_EVENTS as u64;
                batch
            },
            |batch| {
                let appended = log.append(&batch).and_then(|()| log.sync());
                black_box(appended)
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("encode_batch_records_4096_events", |bencher| {
        bencher.iter(|| {
            black_box(encode_batch(
                black_box(&events),
                ChainHash::GENESIS,
                RecordLimits::events(1_024),
            ))
        });
    });
    let history = family_log(200_000);
    group.throughput(Throughput::Elements(history.len() as u64));
    group.bench_function("replay_into_views_200k_events", |bencher| {
        bencher.iter(|| {
            let mut views = Views::with_command_index();
            for (seq, at, event) in &history {
                let _ = views.apply(*seq, *at, event);
            }
            black_box(views.last_seq())
        });
    });
    let mut views = Views::with_command_index();
    for (seq, at, event) in &history {
        let _ = views.apply(*seq, *at, event);
    }
    group.bench_function("snapshot_encode_200k_events", |bencher| {
        bencher.iter(|| {
            black_box(
                encode_snapshot(black_box(&views), ChainHash::GENESIS).map(|bytes| bytes.len()),
            )
        });
    });
    let snapshot = encode_snapshot(&views, ChainHash::GENESIS).unwrap_or_else(|_| unreachable!());
    group.bench_function("snapshot_decode_200k_events", |bencher| {
        bencher
            .iter(|| black_box(decode_snapshot(black_box(&snapshot)).map(|decoded| decoded.seq)));
    });
    group.finish();
}

criterion_group!(benches, storage);
criterion_main!(benches);
