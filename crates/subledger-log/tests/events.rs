//! The fast decoding of a record's events must be bincode's decoding, value for value and
//! error for error: on valid payloads and on damaged ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use subledger_core::{AccountId, Amount, CommandId, Event, SecretHash, SecretId, SecretRecord};
use subledger_core::{Batch, Sequence, Timestamp};
use subledger_log::record::{
    check_link, decode_events, decode_record, encode_batch, RecordLimits, NON_CANONICAL,
    RECORD_BYTES_MAX,
};
use subledger_log::ChainHash;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<RECORD_BYTES_MAX>()
}

fn reference() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(String::new()),
        1 => "[a-z0-9 é€-]{0,12}",
    ]
}

fn money() -> impl Strategy<Value = Event> {
    (
        0..4_u8,
        any::<[u8; 16]>(),
        any::<u32>(),
        any::<u32>(),
        -1_000_000_000_000_i128..1_000_000_000_000,
        reference(),
    )
        .prop_map(|(kind, id, one, other, units, reference)| {
            let command = CommandId::from_bytes(id);
            let amount = Amount::from_units(units).unwrap();
            let (account, source, target) = (AccountId(one), AccountId(one), AccountId(other));
            match kind {
                0 => Event::BalanceTransferred {
                    command,
                    source,
                    target,
                    amount,
                    reference,
                },
                1 => Event::CreditTransferred {
                    command,
                    source,
                    target,
                    amount,
                    reference,
                },
                2 => Event::Charged {
                    command,
                    account,
                    payer: target,
                    amount,
                    reference,
                },
                _ => Event::ToppedUp {
                    command,
                    account,
                    amount,
                    reference,
                },
            }
        })
}

fn other() -> impl Strategy<Value = Event> {
    (
        any::<u32>(),
        "[a-z]{0,8}",
        proptest::option::of(0..1_000_000_i128),
    )
        .prop_map(|(id, name, threshold)| match id % 4 {
            0 => Event::AccountSuspended {
                account: AccountId(id),
            },
            1 => Event::SubaccountRenamed {
                account: AccountId(id),
                name,
            },
            2 => Event::LowBalanceThresholdSet {
                account: AccountId(id),
                threshold: threshold.map(|units| Amount::from_units(units).unwrap()),
            },
            _ => Event::SecretCreated {
                account: AccountId(id),
                secret: SecretRecord {
                    id: SecretId::from_bytes(id.to_le_bytes().repeat(4).try_into().unwrap()),
                    hash: SecretHash::new(format!("$argon2id${name}x")).unwrap(),
                },
            },
        })
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    proptest::collection::vec(prop_oneof![6 => money(), 1 => other()], 0..40)
}

/// The fast decoding of `payload` against bincode's: the same events and bytes used where
/// bincode would also have written those bytes; an error where bincode decodes only an
/// over-wide encoding; an error wherever bincode refuses (its own, or the over-wide one for an
/// earlier event).
fn same_as_bincode(payload: &[u8]) -> Result<(), TestCaseError> {
    let fast = decode_events(payload);
    let generic: Result<(Vec<Event>, usize), _> = bincode::decode_from_slice(payload, config());
    match (fast, generic) {
        (fast, Ok((events, used))) => {
            let canonical = bincode::encode_to_vec(&events, config()).unwrap() == payload[..used];
            if canonical {
                prop_assert_eq!(fast.unwrap(), (events, used));
            } else {
                prop_assert_eq!(fast.unwrap_err().to_string(), non_canonical());
            }
        }
        (Err(fast), Err(generic)) => {
            let fast = fast.to_string();
            prop_assert!(
                fast == generic.to_string() || fast == non_canonical(),
                "{fast} against {generic}"
            );
        }
        (Ok(fast), Err(generic)) => {
            prop_assert!(false, "fast {:?} against bincode {}", fast, generic)
        }
    }
    Ok(())
}

fn non_canonical() -> String {
    bincode::error::DecodeError::Other(NON_CANONICAL).to_string()
}

/// Every record the fuzzer found that bincode decodes but would not write is refused.
#[test]
fn an_amount_written_wider_than_needed_is_refused() {
    // One balance transfer whose amount (a small i128) is written with the 4-byte marker.
    let mut payload = vec![1, 7];
    payload.extend([0; 16]);
    payload.extend([13, 235, 252, 0x83, 0x54, 0, 0, 0]);
    let generic: Result<(Vec<Event>, usize), _> = bincode::decode_from_slice(&payload, config());
    assert!(generic.is_ok(), "bincode accepts it");
    assert_eq!(
        decode_events(&payload).unwrap_err().to_string(),
        non_canonical()
    );
    same_as_bincode(&payload).unwrap();
}

/// Cuts `events` into records within `limits` and checks every record against them and the
/// records, decoded in order, against the batch: same events, chained, the last one ending it.
fn cut_within_limits(events: Vec<Event>, limits: RecordLimits) -> Result<(), TestCaseError> {
    let batch = Batch {
        first: Sequence(41),
        at: Timestamp(1_700_000_000_000),
        events,
    };
    let prev = ChainHash([7; 32]);
    let (records, last_hash) = encode_batch(&batch, prev, limits).unwrap();
    let (mut previous_last, mut previous_hash) = (Sequence(40), prev);
    let mut decoded_events = Vec::new();
    for (first, bytes) in &records {
        let record = decode_record(bytes).unwrap();
        prop_assert_eq!(record.first, *first);
        prop_assert!(record.events.len() <= limits.events.max(1));
        prop_assert!(
            bytes.len() <= limits.bytes || record.events.len() == 1,
            "{} bytes for {} events over a limit of {}",
            bytes.len(),
            record.events.len(),
            limits.bytes
        );
        prop_assert_eq!(record.batch_last, batch.last());
        check_link(&record, previous_last, previous_hash).map_err(TestCaseError::fail)?;
        (previous_last, previous_hash) = (record.last(), record.hash);
        decoded_events.extend(record.events);
    }
    prop_assert_eq!(previous_last, batch.last());
    prop_assert_eq!(last_hash, previous_hash);
    prop_assert_eq!(decoded_events, batch.events);
    Ok(())
}

#[test]
fn a_batch_over_the_byte_limit_is_cut_into_records_within_it() {
    let events: Vec<Event> = (0..300_u32)
        .map(|n| Event::ToppedUp {
            command: subledger_core::CommandId::from_bytes([1; 16]),
            account: AccountId(n),
            amount: Amount::from_units(i128::from(n) * 1_000).unwrap(),
            reference: "x".repeat(usize::try_from(n % 50).unwrap()),
        })
        .collect();
    let one_record = encode_batch(
        &Batch {
            first: Sequence(1),
            at: Timestamp(0),
            events: events.clone(),
        },
        ChainHash::GENESIS,
        RecordLimits::events(1_000),
    )
    .unwrap()
    .0;
    assert_eq!(one_record.len(), 1);
    let limits = RecordLimits::new(1_000, 2_048);
    let cut = encode_batch(
        &Batch {
            first: Sequence(1),
            at: Timestamp(0),
            events: events.clone(),
        },
        ChainHash::GENESIS,
        limits,
    )
    .unwrap()
    .0;
    // Full records, not slivers: the records are no more than twice as many as the bytes need.
    let needed = one_record[0].1.len().div_ceil(limits.bytes);
    assert!(
        cut.len() >= needed && cut.len() <= 2 * needed + 1,
        "{} records",
        cut.len()
    );
    cut_within_limits(events, limits).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn batches_are_cut_into_chained_records_within_the_limits(
        events in proptest::collection::vec(prop_oneof![6 => money(), 1 => other()], 1..80),
        per_record in 1..20_usize,
        bytes in 0..3_000_usize,
    ) {
        cut_within_limits(events, RecordLimits::new(per_record, bytes))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn valid_payloads_decode_as_bincode_decodes_them(events in events()) {
        let payload = bincode::encode_to_vec(&events, config()).unwrap();
        let (decoded, used) = decode_events(&payload).unwrap();
        prop_assert_eq!(&decoded, &events);
        prop_assert_eq!(used, payload.len());
    }

    #[test]
    fn damaged_payloads_decode_or_fail_as_bincode_does(
        events in events(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut payload = bincode::encode_to_vec(&events, config()).unwrap();
        for (at, byte) in edits {
            if !payload.is_empty() {
                let index = at.index(payload.len());
                payload[index] = byte;
            }
        }
        if truncate && !payload.is_empty() {
            payload.truncate(cut.index(payload.len()));
        }
        same_as_bincode(&payload)?;
    }

    #[test]
    fn arbitrary_bytes_decode_or_fail_as_bincode_does(payload in proptest::collection::vec(any::<u8>(), 0..200)) {
        same_as_bincode(&payload)?;
    }
}

/// A claimed length whose events could not fit under bincode's limit is left to bincode.
#[test]
fn a_huge_claimed_length_gets_bincode_s_error() {
    for len in [u64::from(u32::MAX), 1 << 40, u64::MAX] {
        let mut payload = bincode::encode_to_vec(len, config()).unwrap();
        payload.extend([7_u8; 40]);
        same_as_bincode(&payload).unwrap();
    }
}
