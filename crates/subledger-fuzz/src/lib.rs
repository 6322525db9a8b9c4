//! subledger-fuzz: what each fuzz target checks, as plain functions. cargo-fuzz (in `fuzz/`,
//! nightly) calls them with generated inputs; `tests/corpus.rs` calls them on stable with every
//! committed corpus and regression input, so CI exercises them on each run.
//!
//! Every function panics only when it finds a bug (a panic in the code under test, or a broken
//! property), never on bad input as such.

use std::sync::{Arc, OnceLock};

use subledger_core::*;
use subledger_engine::snapshot::decode_snapshot;
use subledger_log::record::{decode_record, encode_record};

/// Log record decoding: never panics; whatever decodes re-encodes to the very same bytes.
/// Tried as given, then with the payload length and checksum repaired, so that the event
/// decoder behind the checksum is explored too.
pub fn record(data: &[u8]) {
    record_as_given(data);
    record_as_given(&record_with_valid_checksum(data));
}

/// `data` as a record whose payload length field and trailing BLAKE3 hash are correct (layout
/// in `docs/event-format.md`).
fn record_with_valid_checksum(data: &[u8]) -> Vec<u8> {
    const HEADER_BYTES: usize = 70;
    let mut bytes = data.to_vec();
    if bytes.len() < HEADER_BYTES {
        bytes.resize(HEADER_BYTES, 0);
    }
    let payload = u32::try_from(bytes.len() - HEADER_BYTES).unwrap_or(u32::MAX);
    bytes[66..70].copy_from_slice(&payload.to_le_bytes());
    let hash = blake3::hash(&bytes);
    bytes.extend_from_slice(hash.as_bytes());
    bytes
}

fn record_as_given(data: &[u8]) {
    if let Ok(record) = decode_record(data) {
        let encoded = encode_record(
            record.first,
            record.at,
            record.batch_last,
            record.prev_hash,
            &record.events,
        );
        let (bytes, hash) =
            encoded.unwrap_or_else(|error| panic!("a decoded record does not re-encode: {error}"));
        assert_eq!(bytes, data, "decoding then encoding changed the record");
        assert_eq!(hash, record.hash);
    }
}

/// Snapshot decoding: never panics; whatever decodes is internally consistent.
pub fn snapshot(data: &[u8]) {
    let check = |bytes: &[u8]| {
        if let Ok(snapshot) = decode_snapshot(bytes) {
            assert!(
                snapshot
                    .views
                    .state()
                    .is_some_and(|state| state.check_invariants().is_ok()),
                "a decoded snapshot breaks an invariant"
            );
            assert_eq!(snapshot.views.last_seq(), snapshot.seq);
        }
    };
    check(data);
    // Random bytes almost never carry a valid checksum, so the payload decoder behind it would
    // go unexplored. A forger with write access can always write one: repair the length field
    // and the checksum, and decode again.
    check(&with_valid_checksum(data));
}

/// `data` as a snapshot whose payload length field and trailing BLAKE3 checksum are correct
/// (header layout in `subledger_engine::snapshot`). Format 7's checksum covers the header, the
/// two section lengths and each section's hash: the lengths are first made to bound sections
/// within the payload, so that the sections' decoders behind the checksum are reached too.
fn with_valid_checksum(data: &[u8]) -> Vec<u8> {
    const HEADER_BYTES: usize = 62;
    const TRAILER_BYTES: usize = 32;
    const LENGTHS_BYTES: usize = 16;
    let mut bytes = data.to_vec();
    if bytes.len() < HEADER_BYTES {
        bytes.resize(HEADER_BYTES, 0);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    // Formats 7 to 10 seal the sections' hashes: BLAKE3 in 7, XXH3-128 from 8.
    let format_7 = (7..=10).contains(&version);
    let section_hash = |section: &[u8]| {
        if version >= 8 {
            xxhash_rust::xxh3::xxh3_128(section).to_le_bytes().to_vec()
        } else {
            blake3::hash(section).as_bytes().to_vec()
        }
    };
    if format_7 && bytes.len() < HEADER_BYTES + LENGTHS_BYTES {
        bytes.resize(HEADER_BYTES + LENGTHS_BYTES, 0);
    }
    let payload = (bytes.len() - HEADER_BYTES) as u64;
    bytes[54..62].copy_from_slice(&payload.to_le_bytes());
    let checksum = if format_7 {
        let start = HEADER_BYTES + LENGTHS_BYTES;
        let all = bytes.len() - start;
        let length = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            usize::try_from(u64::from_le_bytes(word)).unwrap_or(usize::MAX)
        };
        let head = length(HEADER_BYTES).min(all);
        let histories = length(HEADER_BYTES + 8).min(all - head);
        bytes[HEADER_BYTES..HEADER_BYTES + 8].copy_from_slice(&(head as u64).to_le_bytes());
        bytes[HEADER_BYTES + 8..start].copy_from_slice(&(histories as u64).to_le_bytes());
        let mut hasher = blake3::Hasher::new();
        hasher.update(&bytes[..start]);
        let (head_start, index_start) = (start + head, start + head + histories);
        for section in [
            &bytes[start..head_start],
            &bytes[head_start..index_start],
            &bytes[index_start..],
        ] {
            hasher.update(&section_hash(section));
        }
        hasher.finalize()
    } else {
        blake3::hash(&bytes)
    };
    bytes.extend_from_slice(checksum.as_bytes());
    debug_assert!(bytes.len() >= HEADER_BYTES + TRAILER_BYTES);
    bytes
}

/// Portable archive decoding: opening and reading never panic; every record read verifies.
pub fn archive(data: &[u8]) {
    let Ok(mut file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if std::io::Write::write_all(&mut file, data).is_err() {
        return;
    }
    let Ok(opened) = subledger_log::archive::ArchiveReader::open(file.path()) else {
        return;
    };
    let reader: &dyn subledger_log::LogReader = &opened;
    let Ok(records) = reader.records_from(Sequence(1)) else {
        return;
    };
    let mut state = State::new(Policy::default());
    'records: for record in records {
        let Ok(record) = record else { break };
        let at = record.at;
        for (seq, event) in record.into_batch().iter() {
            if state.apply(seq, at, event).is_err() {
                break 'records;
            }
        }
    }
}

const KEYS: [&str; 6] = [
    "fuzzp001", "fuzzp002", "fuzzs001", "fuzzs002", "fuzzs003", "unknown1",
];

fn key(byte: u8) -> ApiKey {
    KEYS[usize::from(byte) % KEYS.len()]
        .parse()
        .unwrap_or_else(|_| unreachable!("constant keys are valid"))
}

fn amount(high: u8, low: u8) -> Amount {
    let units = (i128::from(high) << 8 | i128::from(low)) - 2_000;
    Amount::from_units(units * 1_000_000).unwrap_or(Amount::ZERO)
}

fn secret(byte: u8) -> NewSecret {
    let hash = SecretHash::new("$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into());
    NewSecret {
        id: SecretId::from_bytes([byte % 4; 16]),
        hash: hash.unwrap_or_else(|_| unreachable!("a valid constant")),
    }
}

/// One command from six bytes (`None`: the "crash and reopen" step).
fn command(bytes: [u8; 6]) -> Option<Command> {
    let [op, a, b, c, d, e] = bytes;
    let id = CommandId::from_bytes([e % 8; 16]);
    let transfer = || Transfer {
        id,
        primary: key(a),
        from: key(b),
        to: key(c),
        amount: amount(d, e),
        reference: String::new(),
    };
    Some(match op % 14 {
        0 => Command::OpenPrimary(OpenPrimary {
            key: key(a),
            name: String::new(),
            currency: Currency::EUR,
            credit_line: amount(b, c).negate().min(Amount::ZERO),
            secret: secret(d),
        }),
        1 => Command::CreateSubaccount(CreateSubaccount {
            primary: key(a),
            key: key(b),
            name: "s".into(),
            use_primary_account_balance: c % 2 == 0,
            secret: secret(d),
        }),
        2 => Command::UpdateSubaccount(UpdateSubaccount {
            primary: key(a),
            subaccount: key(b),
            name: (c % 5 == 0).then(|| "\u{7}".repeat(usize::from(d % 3))),
            suspended: (c % 3 != 0).then_some(c % 3 == 1),
            use_primary_account_balance: (d % 3 != 0).then_some(d % 3 == 1),
        }),
        3 => Command::CloseSubaccount(CloseSubaccount {
            primary: key(a),
            subaccount: key(b),
        }),
        4 => Command::SetSuspended(SetSuspended {
            account: key(a),
            suspended: b % 2 == 0,
        }),
        5 | 6 => Command::TransferBalance(transfer()),
        7 => Command::TransferCredit(transfer()),
        8 => Command::Charge(Charge {
            id,
            account: key(a),
            amount: amount(b, c),
            reference: String::new(),
        }),
        9 => Command::TopUp(TopUp {
            id,
            primary: key(a),
            amount: amount(b, c),
            reference: String::new(),
        }),
        10 => Command::SetCreditLine(SetCreditLine {
            primary: key(a),
            credit_line: amount(b, c),
        }),
        11 => Command::SetLowBalanceThreshold(SetLowBalanceThreshold {
            account: key(a),
            threshold: (b % 4 != 0).then(|| amount(c, d)),
        }),
        12 if d % 2 == 0 => Command::CreateSecret(CreateSecret {
            account: key(a),
            secret: secret(b),
        }),
        12 => Command::RevokeSecret(RevokeSecret {
            account: key(a),
            secret: secret(b).id,
        }),
        _ => return None,
    })
}

/// Command sequences, with "crash and reopen" steps (the state is rebuilt from the recorded
/// events): executing never panics, invariant 1 holds after every step, the family totals equal
/// top-ups minus charges, and a rebuilt state equals the live one. At the end the recorded
/// events build read views both ways — with a full state and lean (a directory of the
/// accounts, their values from the histories, as live read views keep them) — and the two
/// must be equal, down to the state hash.
pub fn commands(data: &[u8]) {
    let log = commands_log(data);
    let mut full = subledger_views::Views::new();
    // Made lean after the first half, so that both a directory taken from a state and one
    // built event by event are exercised.
    let half = log.len() / 2;
    for (seq, at, event) in &log[..half] {
        full.apply(*seq, *at, event)
            .unwrap_or_else(|error| panic!("full views refused a recorded event: {error}"));
    }
    let mut lean = full.clone().into_lean();
    for (seq, at, event) in &log[half..] {
        full.apply(*seq, *at, event)
            .unwrap_or_else(|error| panic!("full views refused a recorded event: {error}"));
        lean.apply(*seq, *at, event)
            .unwrap_or_else(|error| panic!("lean views refused a recorded event: {error}"));
    }
    assert!(lean.is_lean() || !full.is_complete());
    assert_eq!(
        lean.views_hash(),
        full.views_hash(),
        "lean views differ from full ones"
    );
    assert!(lean == full, "lean views differ from full ones");
}

/// The body of [`commands`]: the events it recorded.
fn commands_log(data: &[u8]) -> Vec<(Sequence, Timestamp, Event)> {
    let mut state = State::new(Policy {
        subaccounts_per_primary_max: 2,
    });
    let mut log: Vec<(Sequence, Timestamp, Event)> = Vec::new();
    let mut money_in: i128 = 0;
    for (step, chunk) in (0_i64..).zip(data.chunks_exact(6).take(512)) {
        let Ok(bytes) = <[u8; 6]>::try_from(chunk) else {
            continue;
        };
        let Some(command) = command(bytes) else {
            let mut reopened = State::new(*state.policy());
            for (seq, at, event) in &log {
                reopened
                    .apply(*seq, *at, event)
                    .unwrap_or_else(|error| panic!("replay refused a recorded event: {error}"));
            }
            assert_eq!(
                reopened.state_hash(),
                state.state_hash(),
                "reopening changed the state"
            );
            state = reopened;
            continue;
        };
        let at = Timestamp(step);
        match execute(&mut state, at, &command) {
            Err(error) => panic!("a decided event did not apply: {error}"),
            Ok(Err(_)) | Ok(Ok(Executed::AlreadyApplied { .. })) => {}
            Ok(Ok(Executed::Applied { first, events })) => {
                for (offset, event) in (0..).zip(events) {
                    match &event {
                        Event::ToppedUp { amount, .. } => money_in += amount.units(),
                        Event::Charged { amount, .. } => money_in -= amount.units(),
                        _ => {}
                    }
                    log.push((Sequence(first.0 + offset), at, event));
                }
            }
        }
        assert!(
            state.check_invariants().is_ok(),
            "invariant 1 broken after step {step}"
        );
        let balances: i128 = state
            .accounts()
            .map(|(_, account)| match account.funding() {
                Funding::Own { balance, .. } => balance.units(),
                Funding::Shared => 0,
            })
            .sum();
        assert_eq!(
            balances, money_in,
            "balances no longer add up to top-ups minus charges"
        );
    }
    log
}

/// A server on an in-memory ledger with one funded primary, shared by every HTTP input.
struct Http {
    runtime: tokio::runtime::Runtime,
    state: Arc<subledger_server::AppState>,
    authorization: String,
}

fn http_fixture() -> &'static Http {
    static FIXTURE: OnceLock<Http> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|error| panic!("runtime: {error}"));
        let ledger = subledger_engine::Ledger::in_memory(subledger_engine::Config::default())
            .unwrap_or_else(|error| panic!("ledger: {error}"));
        let config = subledger_server::ServerConfig {
            hash_cost: subledger_server::auth::HashCost {
                memory_kib: 8,
                passes: 1,
            },
            ..subledger_server::ServerConfig::new("fuzz-admin".into())
        };
        let state = subledger_server::AppState::new(Arc::new(ledger), config);
        let created = runtime.block_on(send(
            &state,
            "POST",
            "/admin/primaries",
            Some("Bearer fuzz-admin"),
            br#"{"secret":"Fuzz1Secret"}"#.to_vec(),
        ));
        let primary: serde_json::Value = serde_json::from_slice(&created.1).unwrap_or_default();
        let key = primary["api_key"].as_str().unwrap_or_default().to_string();
        let token = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{key}:Fuzz1Secret"),
        );
        let authorization = format!("Basic {token}");
        runtime.block_on(send(
            &state,
            "POST",
            &format!("/admin/accounts/{key}/top-ups"),
            Some("Bearer fuzz-admin"),
            br#"{"amount":100}"#.to_vec(),
        ));
        Http {
            runtime,
            state,
            authorization,
        }
    })
}

async fn send(
    state: &Arc<subledger_server::AppState>,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    use tower::ServiceExt;
    let mut request = axum::http::Request::builder().method(method).uri(path);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let Ok(request) = request
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
    else {
        return (400, Vec::new());
    };
    let Ok(response) = subledger_server::app(Arc::clone(state))
        .oneshot(request)
        .await;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap_or_default();
    (status, bytes.to_vec())
}

/// HTTP request bodies and query strings through the real routing, parsing and validation:
/// never a 5xx other than 503, never a panic, and a refused request changes no balance.
pub fn http(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let fixture = http_fixture();
    let primary = fixture
        .state
        .ledger
        .read(|views| views.key_of(subledger_core::AccountId(0)));
    let Some(primary) = primary else { return };
    let query = String::from_utf8_lossy(rest).replace(['#', ' ', '\r', '\n'], "");
    let (method, path, body) = match selector % 8 {
        0 => (
            "POST",
            format!("/accounts/{primary}/balance-transfers"),
            rest.to_vec(),
        ),
        1 => (
            "POST",
            format!("/accounts/{primary}/credit-transfers"),
            rest.to_vec(),
        ),
        2 => (
            "POST",
            format!("/accounts/{primary}/subaccounts"),
            rest.to_vec(),
        ),
        3 => (
            "POST",
            format!("/accounts/{primary}/secrets"),
            rest.to_vec(),
        ),
        4 => (
            "POST",
            format!("/accounts/{primary}/batch-transfers"),
            rest.to_vec(),
        ),
        5 => (
            "GET",
            format!("/accounts/{primary}/balance-transfers?{query}"),
            Vec::new(),
        ),
        6 => (
            "GET",
            format!("/accounts/{primary}/statement?{query}"),
            Vec::new(),
        ),
        _ => (
            "PATCH",
            format!(
                "/accounts/{primary}/subaccounts/{}",
                query.chars().take(8).collect::<String>()
            ),
            rest.to_vec(),
        ),
    };
    let before = fixture.state.ledger.read(|views| views.views_hash());
    let (status, answer) = fixture.runtime.block_on(send(
        &fixture.state,
        method,
        &path,
        Some(&fixture.authorization),
        body,
    ));
    assert!(
        status < 500 || status == 503,
        "{method} {path} answered {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    if status >= 400 {
        let after = fixture.state.ledger.read(|views| views.views_hash());
        assert_eq!(before, after, "a refused request changed the ledger");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The harness seals a snapshot exactly as the encoder does (formats 6 to 10), so the
    /// fuzzer's repaired inputs reach the decoders behind the checksum.
    #[test]
    fn the_harness_seals_snapshots_as_the_encoder_does() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../subledger-engine/tests/fixtures");
        for name in [
            "snapshot-v6.bin",
            "snapshot-v7.bin",
            "snapshot-v8.bin",
            "snapshot-v9.bin",
            "snapshot-v10.bin",
        ] {
            let good = std::fs::read(fixtures.join(name)).unwrap();
            let resealed = with_valid_checksum(&good[..good.len() - 32]);
            assert!(resealed == good, "{name}");
            assert!(decode_snapshot(&resealed).is_ok(), "{name}");
        }
    }
}
