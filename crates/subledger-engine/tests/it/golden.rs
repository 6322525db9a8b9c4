//! Golden bytes: a small log and a snapshot written by version 1 of the formats are committed
//! in `tests/fixtures/` and must decode to the same state forever. If an encoding change is
//! intended, bump the format version, keep decoding the old fixture, and add a new one
//! (`SUBLEDGER_BLESS=1 cargo test -p subledger-engine golden` rewrites the files).

use std::path::PathBuf;

use subledger_core::*;
use subledger_engine::snapshot::{decode_snapshot, encode_snapshot, SnapshotError};
use subledger_log::record::{encode_batch, RecordLimits};
use subledger_log::{verify_records, ChainHash};
use subledger_views::Views;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn fixed_id(n: u8) -> [u8; 16] {
    [n; 16]
}

fn hash() -> SecretHash {
    SecretHash::new("$argon2id$v=19$m=19456,t=2,p=1$Z29sZGVu$Z29sZGVuaGFzaA".into()).unwrap()
}

/// Every kind of event, decided by the core from fixed inputs, one batch per command.
fn todays_batches() -> Vec<Batch> {
    let key = |text: &str| text.parse::<ApiKey>().unwrap();
    let amount = |text: &str| text.parse::<Amount>().unwrap();
    let secret = |n| NewSecret {
        id: SecretId::from_bytes(fixed_id(n)),
        hash: hash(),
    };
    let (primary, own, shared) = (key("gold0001"), key("golds001"), key("golds002"));
    let transfer = |n, from, to, value: &str| Transfer {
        id: CommandId::from_bytes(fixed_id(n)),
        primary,
        from,
        to,
        amount: amount(value),
        reference: format!("ref {n}"),
    };
    let commands = vec![
        Command::OpenPrimary(OpenPrimary {
            key: primary,
            name: "Golden Ltd".into(),
            currency: "USD".parse().unwrap(),
            credit_line: amount("-50"),
            secret: secret(1),
        }),
        Command::CreateSubaccount(CreateSubaccount {
            primary,
            key: own,
            name: "Own".into(),
            use_primary_account_balance: true,
            secret: secret(2),
        }),
        Command::CreateSubaccount(CreateSubaccount {
            primary,
            key: shared,
            name: "Shared".into(),
            use_primary_account_balance: true,
            secret: secret(3),
        }),
        Command::UpdateSubaccount(UpdateSubaccount {
            primary,
            subaccount: own,
            name: Some("Own balance".into()),
            suspended: Some(true),
            use_primary_account_balance: Some(false),
        }),
        Command::TopUp(TopUp {
            id: CommandId::from_bytes(fixed_id(10)),
            primary,
            amount: amount("1000.12345678"),
            reference: "wire".into(),
        }),
        Command::TransferBalance(transfer(11, primary, own, "250.5")),
        Command::TransferCredit(transfer(12, primary, own, "20")),
        Command::TransferBalance(transfer(13, own, primary, "0.00000001")),
        Command::Charge(Charge {
            id: CommandId::from_bytes(fixed_id(14)),
            account: shared,
            amount: amount("3.3"),
            reference: "sms".into(),
        }),
        Command::SetCreditLine(SetCreditLine {
            primary,
            credit_line: amount("-80"),
        }),
        Command::CreateSecret(CreateSecret {
            account: own,
            secret: secret(4),
        }),
        Command::RevokeSecret(RevokeSecret {
            account: own,
            secret: SecretId::from_bytes(fixed_id(2)),
        }),
        Command::SetSuspended(SetSuspended {
            account: own,
            suspended: false,
        }),
        Command::SetSuspended(SetSuspended {
            account: primary,
            suspended: true,
        }),
        Command::SetSuspended(SetSuspended {
            account: primary,
            suspended: false,
        }),
        Command::UpdateSubaccount(UpdateSubaccount {
            primary,
            subaccount: shared,
            name: None,
            suspended: None,
            use_primary_account_balance: Some(false),
        }),
        Command::CloseSubaccount(CloseSubaccount {
            primary,
            subaccount: shared,
        }),
    ];
    let mut state = State::new(Policy::default());
    let mut batches = Vec::new();
    for (step, command) in (0_i64..).zip(&commands) {
        let Ok(Decision::Apply(events)) = decide(&state, command) else {
            panic!("fixture command {step} refused: {command:?}");
        };
        let batch = Batch {
            first: state.last_seq().next(),
            at: Timestamp(1_767_225_600_000 + step * 1_000),
            events,
        };
        state.apply_batch(&batch).unwrap();
        batches.push(batch);
    }
    batches
}

/// Records as stored in the fixture: for each, a 4-byte little-endian length and the bytes.
fn encode_log(batches: &[Batch]) -> (Vec<u8>, ChainHash) {
    let mut file = Vec::new();
    let mut hash = ChainHash::GENESIS;
    for batch in batches {
        let (records, last) = encode_batch(batch, hash, RecordLimits::events(2)).unwrap();
        for (_, bytes) in records {
            file.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_le_bytes());
            file.extend_from_slice(&bytes);
        }
        hash = last;
    }
    (file, hash)
}

fn decode_log(file: &[u8]) -> Vec<subledger_log::Record> {
    let mut stored = Vec::new();
    let mut rest = file;
    while !rest.is_empty() {
        let (length, tail) = rest.split_at(4);
        let length = usize::try_from(u32::from_le_bytes(length.try_into().unwrap())).unwrap();
        let (bytes, tail) = tail.split_at(length);
        let first = Sequence(u64::from_le_bytes(bytes[6..14].try_into().unwrap()));
        stored.push(Ok((first, bytes.to_vec())));
        rest = tail;
    }
    verify_records(stored.into_iter(), (Sequence::ZERO, ChainHash::GENESIS))
        .collect::<Result<_, _>>()
        .unwrap()
}

fn replay(records: &[subledger_log::Record]) -> Views {
    let mut views = Views::with_command_index();
    // A fixed hash key: a format-10 snapshot stores its index's key, drawn at random otherwise.
    views.detach_command_index().unwrap();
    views
        .attach_command_index(CommandIndex::with_tag_key(TagKey::from_words(
            0x5eed_0001,
            0x5eed_0002,
        )))
        .unwrap();
    for record in records {
        for (seq, event) in record.clone().into_batch().iter() {
            views.apply(seq, record.at, event).unwrap();
        }
    }
    views
}

#[test]
fn the_version_1_log_and_snapshot_decode_to_the_same_state_forever() {
    let batches = todays_batches();
    let (log_bytes, head_hash) = encode_log(&batches);
    let today = replay(&decode_log(&log_bytes));
    // Blessing writes today's snapshot format; older fixtures are never rewritten.
    if std::env::var_os("SUBLEDGER_BLESS").is_some() {
        std::fs::write(fixture("log-v1.bin"), &log_bytes).unwrap();
        std::fs::write(
            fixture("snapshot-v10.bin"),
            encode_snapshot(&today, head_hash).unwrap(),
        )
        .unwrap();
    }
    // Today's snapshot encoding has not drifted either. (Formats 7 to 10 store history entries
    // as their packed in-memory words: changing that packing changes these bytes, and needs a
    // new format version.)
    let today_bytes = encode_snapshot(&today, head_hash).unwrap();
    assert_eq!(
        std::fs::read(fixture("snapshot-v10.bin")).unwrap(),
        today_bytes,
        "snapshot encoding changed: bump the snapshot format version"
    );
    // Format 8 is format 7 but for the version and the section hashes the trailer covers.
    let v7 = std::fs::read(fixture("snapshot-v7.bin")).unwrap();
    let v8 = std::fs::read(fixture("snapshot-v8.bin")).unwrap();
    assert_eq!(v7.len(), v8.len());
    assert_eq!(v7[..4], v8[..4]);
    assert_eq!(v7[6..v7.len() - 32], v8[6..v8.len() - 32]);
    assert_eq!(
        (v7[4..6].to_vec(), v8[4..6].to_vec()),
        (7u16.to_le_bytes().to_vec(), 8u16.to_le_bytes().to_vec())
    );
    // Format 9 leaves out the money lists' entries (rebuilt from the index's records); format
    // 10 adds the index's hash key (16 bytes) and a 4-byte tag per record (five here).
    let v9 = std::fs::read(fixture("snapshot-v9.bin")).unwrap();
    assert!(v9.len() < v8.len(), "{} bytes", v9.len());
    assert_eq!(today_bytes.len(), v9.len() + 16 + 5 * 4);
    let stored_log = std::fs::read(fixture("log-v1.bin")).unwrap();
    // The encoding has not drifted: today's code writes the very same bytes.
    assert_eq!(
        stored_log, log_bytes,
        "log encoding changed: bump the record format version"
    );
    let records = decode_log(&stored_log);
    let events: Vec<Event> = records
        .iter()
        .flat_map(|record| record.events.clone())
        .collect();
    let expected: Vec<Event> = batches
        .iter()
        .flat_map(|batch| batch.events.clone())
        .collect();
    assert_eq!(events, expected);
    let kinds: std::collections::BTreeSet<&str> = events.iter().map(Event::kind).collect();
    assert_eq!(
        kinds.len(),
        14,
        "the fixture covers every event kind: {kinds:?}"
    );
    let replayed = replay(&records);
    assert_eq!(replayed.views_hash(), today.views_hash());

    // Version 1: state, details and transfer histories, still decoded exactly.
    let snapshot = decode_snapshot(&std::fs::read(fixture("snapshot-v1.bin")).unwrap()).unwrap();
    assert_eq!(snapshot.seq, replayed.last_seq());
    assert_eq!(snapshot.head_hash, head_hash);
    assert!(
        !snapshot.views.is_complete(),
        "version 1 has no per-account history"
    );
    assert_eq!(snapshot.views.core_hash(), replayed.core_hash());
    assert_eq!(
        snapshot.views.state().unwrap().state_hash(),
        replayed.state().unwrap().state_hash()
    );
    // Versions 3 (one payload), 4 (views and idempotency index in two sections), 5 (secrets'
    // hashes left in the log), 6 (the views in two sections), 7 (fixed-width history
    // entries, a checksum over the sections' hashes) and 8 (XXH3 section hashes): the same
    // complete views.
    for version in [
        "snapshot-v3.bin",
        "snapshot-v4.bin",
        "snapshot-v5.bin",
        "snapshot-v6.bin",
        "snapshot-v7.bin",
        "snapshot-v8.bin",
        "snapshot-v9.bin",
        "snapshot-v10.bin",
    ] {
        let snapshot = decode_snapshot(&std::fs::read(fixture(version)).unwrap()).unwrap();
        assert!(snapshot.views.is_complete(), "{version}");
        assert_eq!(
            snapshot.views.views_hash(),
            replayed.views_hash(),
            "{version}"
        );
        assert_eq!(
            snapshot.views.state().unwrap().state_hash(),
            replayed.state().unwrap().state_hash(),
            "{version}"
        );
        assert_eq!(
            snapshot.views.state().unwrap().command_count(),
            3 + 1 + 1,
            "{version}: top-up, three transfers and a charge"
        );
    }
    // Formats 8, 9 and 10 decode to equal views, money lists and all.
    let v8 = decode_snapshot(&std::fs::read(fixture("snapshot-v8.bin")).unwrap()).unwrap();
    let v9 = decode_snapshot(&std::fs::read(fixture("snapshot-v9.bin")).unwrap()).unwrap();
    let snapshot = decode_snapshot(&std::fs::read(fixture("snapshot-v10.bin")).unwrap()).unwrap();
    assert!(v9.views == v8.views, "format 9 decodes as format 8 does");
    assert!(
        snapshot.views == v8.views,
        "format 10 decodes as format 8 does"
    );
    let family = snapshot.views.family(&"gold0001".parse().unwrap()).unwrap();
    assert_eq!(family.total_credit_limit.to_string(), "-80");
    assert_eq!(family.total_balance.to_string(), "996.82345678");
    // Format 10's stored tags find every command, as tags hashed at open do.
    let (state, _) = snapshot.views.into_writer_and_views().unwrap();
    let (state9, _) = v9.views.into_writer_and_views().unwrap();
    let records = state9.command_index().unwrap().records();
    assert_eq!(records.len(), 5);
    for record in records.iter() {
        assert!(state.command(&record.id).is_some(), "{}", record.id);
        assert_eq!(state.command(&record.id), state9.command(&record.id));
    }
}

/// Rewrites a snapshot's payload and seals it again (a forger can compute the checksum).
fn resealed(snapshot: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut bytes = snapshot[..54].to_vec();
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(payload);
    let checksum = blake3::hash(&bytes);
    bytes.extend_from_slice(checksum.as_bytes());
    bytes
}

#[test]
fn forged_version_4_sections_are_refused_not_panicked_on() {
    let good = std::fs::read(fixture("snapshot-v5.bin")).unwrap();
    let payload = &good[62..good.len() - 32];
    let views_len = u64::from_le_bytes(payload[..8].try_into().unwrap());
    let sections = &payload[8..];
    let with_length = |length: u64| {
        let mut forged = length.to_le_bytes().to_vec();
        forged.extend_from_slice(sections);
        resealed(&good, &forged)
    };
    assert!(decode_snapshot(&resealed(&good, payload)).is_ok());
    for length in [
        u64::MAX,
        sections.len() as u64 + 1,
        0,
        views_len - 1,
        views_len + 1,
        sections.len() as u64,
    ] {
        assert!(
            decode_snapshot(&with_length(length)).is_err(),
            "views section length {length} accepted"
        );
    }
    // Too short to hold the length itself.
    assert!(decode_snapshot(&resealed(&good, &payload[..5])).is_err());
    // The index section repeated: the same command ids twice.
    let views_end = usize::try_from(views_len).unwrap();
    let index = &sections[views_end..];
    let count = index[0]; // a varint below 251 is one byte
    let mut doubled = payload.to_vec();
    let at = 8 + views_end;
    doubled[at] = count * 2;
    doubled.extend_from_slice(&index[1..]);
    let refused = decode_snapshot(&resealed(&good, &doubled)).unwrap_err();
    assert!(refused.to_string().contains("duplicate"), "{refused}");
}

#[test]
fn forged_version_6_section_lengths_are_refused_not_panicked_on() {
    let good = std::fs::read(fixture("snapshot-v6.bin")).unwrap();
    let payload = &good[62..good.len() - 32];
    let head_len = u64::from_le_bytes(payload[..8].try_into().unwrap());
    let histories_len = u64::from_le_bytes(payload[8..16].try_into().unwrap());
    let sections = &payload[16..];
    let with_lengths = |head: u64, histories: u64| {
        let mut forged = head.to_le_bytes().to_vec();
        forged.extend_from_slice(&histories.to_le_bytes());
        forged.extend_from_slice(sections);
        resealed(&good, &forged)
    };
    assert!(decode_snapshot(&with_lengths(head_len, histories_len)).is_ok());
    let all = sections.len() as u64;
    for (head, histories) in [
        (u64::MAX, histories_len),
        (head_len, u64::MAX),
        (all + 1, 0),
        (0, histories_len),
        (head_len - 1, histories_len + 1),
        (head_len + 1, histories_len - 1),
        (head_len, histories_len - 1),
        (head_len, histories_len + 1),
        (head_len, all - head_len),
        (head_len + histories_len, 0),
    ] {
        assert!(
            decode_snapshot(&with_lengths(head, histories)).is_err(),
            "section lengths {head} / {histories} accepted"
        );
    }
    // Too short to hold the two lengths.
    assert!(decode_snapshot(&resealed(&good, &payload[..12])).is_err());
    // A damaged checksum is reported as such, whatever else the sections hold.
    let mut damaged = good.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    assert!(matches!(
        decode_snapshot(&damaged),
        Err(SnapshotError::Checksum)
    ));
}

/// Rewrites a format-7 to 10 snapshot's payload (two section lengths, then the sections) and
/// seals it again with its format's checksum over the sections' hashes (BLAKE3 in format 7,
/// XXH3-128 from format 8).
fn resealed_v7(snapshot: &[u8], head_len: u64, histories_len: u64, sections: &[u8]) -> Vec<u8> {
    let version = u16::from_le_bytes([snapshot[4], snapshot[5]]);
    let section_hash = |section: &[u8]| match version {
        7 => blake3::hash(section).as_bytes().to_vec(),
        8..=10 => xxhash_rust::xxh3::xxh3_128(section).to_le_bytes().to_vec(),
        other => panic!("not a sectioned format: {other}"),
    };
    let mut bytes = snapshot[..54].to_vec();
    bytes.extend_from_slice(&(16 + sections.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&head_len.to_le_bytes());
    bytes.extend_from_slice(&histories_len.to_le_bytes());
    let mut hasher = blake3::Hasher::new();
    hasher.update(&bytes);
    let head = usize::try_from(head_len).unwrap().min(sections.len());
    let histories = head
        .saturating_add(usize::try_from(histories_len).unwrap())
        .min(sections.len());
    for section in [
        &sections[..head],
        &sections[head..histories],
        &sections[histories..],
    ] {
        hasher.update(&section_hash(section));
    }
    bytes.extend_from_slice(sections);
    bytes.extend_from_slice(hasher.finalize().as_bytes());
    bytes
}

#[test]
fn forged_or_damaged_version_7_to_10_snapshots_are_refused_not_panicked_on() {
    for name in [
        "snapshot-v7.bin",
        "snapshot-v8.bin",
        "snapshot-v9.bin",
        "snapshot-v10.bin",
    ] {
        forged_or_damaged_sectioned_snapshots_are_refused(name);
    }
}

fn forged_or_damaged_sectioned_snapshots_are_refused(name: &str) {
    let good = std::fs::read(fixture(name)).unwrap();
    let payload = &good[62..good.len() - 32];
    let head_len = u64::from_le_bytes(payload[..8].try_into().unwrap());
    let histories_len = u64::from_le_bytes(payload[8..16].try_into().unwrap());
    let sections = &payload[16..];
    assert_eq!(
        resealed_v7(&good, head_len, histories_len, sections),
        good,
        "the test seals as the encoder does"
    );
    let all = sections.len() as u64;
    for (head, histories) in [
        (u64::MAX, histories_len),
        (head_len, u64::MAX),
        (all + 1, 0),
        (0, histories_len),
        (head_len - 1, histories_len + 1),
        (head_len + 1, histories_len - 1),
        (head_len, histories_len - 1),
        (head_len, histories_len + 1),
        (head_len + histories_len, 0),
    ] {
        let forged = resealed_v7(&good, head, histories, sections);
        assert!(
            decode_snapshot(&forged).is_err(),
            "{name}: section lengths {head} / {histories} accepted"
        );
    }
    // A damaged byte anywhere in a section, or in the checksum, is a checksum error.
    let head = usize::try_from(head_len).unwrap();
    let histories = usize::try_from(histories_len).unwrap();
    for at in [
        62 + 16 + head / 2,
        62 + 16 + head + histories / 2,
        62 + 16 + head + histories + 3,
        good.len() - 1,
    ] {
        let mut damaged = good.clone();
        damaged[at] ^= 0x10;
        assert!(
            matches!(decode_snapshot(&damaged), Err(SnapshotError::Checksum)),
            "{name}: damage at byte {at}"
        );
    }
    // A history entry no entry writes (an unknown kind: the kind's bits in the last packed
    // word), sealed again as a forger could, is refused by the decoding.
    let entries_at = head;
    let mut forged = sections.to_vec();
    // The first account's first entry: after the account count (1 byte) and the entry count
    // (1 byte), 40 bytes whose last 8 are the high word; kind bits start at bit 40.
    let high = entries_at + 2 + 32;
    forged[high + 5] |= 0x0F;
    let refused = decode_snapshot(&resealed_v7(&good, head_len, histories_len, &forged));
    assert!(
        matches!(&refused, Err(SnapshotError::Payload(detail)) if detail.contains("no history entry writes")),
        "{refused:?}"
    );
}

/// A snapshot file whose reads fail when they cover byte `bad` (a bad sector mid-file).
struct FailingAt(Vec<u8>, u64);

impl subledger_log::ReadAt for FailingAt {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if (offset..offset + buf.len() as u64).contains(&self.1) {
            return Err(std::io::Error::other("injected read failure"));
        }
        subledger_log::ReadAt::read_exact_at(self.0.as_slice(), buf, offset)
    }
}

/// Read piecewise from a source that is not a slice: a read that fails in any section is
/// reported as a read error (not as what the decoder made of the missing bytes), and a
/// damaged byte, read without failure, as a checksum error.
#[test]
fn version_7_to_10_read_errors_and_damage_are_told_apart_when_read_piecewise() {
    for name in [
        "snapshot-v7.bin",
        "snapshot-v8.bin",
        "snapshot-v9.bin",
        "snapshot-v10.bin",
    ] {
        read_errors_and_damage_are_told_apart(name);
    }
}

fn read_errors_and_damage_are_told_apart(name: &str) {
    use subledger_engine::snapshot::decode_snapshot_from;
    let good = std::fs::read(fixture(name)).unwrap();
    let len = good.len() as u64;
    assert!(decode_snapshot_from(&FailingAt(good.clone(), len)).is_ok());
    let payload = &good[62..good.len() - 32];
    let head_len = u64::from_le_bytes(payload[..8].try_into().unwrap());
    let histories_len = u64::from_le_bytes(payload[8..16].try_into().unwrap());
    // A bad byte in the head, the histories, the index section.
    for bad in [
        62 + 16 + head_len / 2,
        62 + 16 + head_len + histories_len / 2,
        len - 32 - 5,
    ] {
        let result = decode_snapshot_from(&FailingAt(good.clone(), bad));
        assert!(
            matches!(&result, Err(SnapshotError::Read(detail)) if detail.contains("injected")),
            "{name}: failing at {bad}: {result:?}"
        );
    }
    let mut damaged = good.clone();
    damaged[usize::try_from(62 + 16 + head_len + 7).unwrap()] ^= 0x01;
    assert!(matches!(
        decode_snapshot_from(&FailingAt(damaged, len)),
        Err(SnapshotError::Checksum)
    ));
}
