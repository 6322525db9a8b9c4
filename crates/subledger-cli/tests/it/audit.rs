//! verify, replay, export and snapshot on generated ledgers: clean, damaged in each way, and
//! through the portable archive; auditing never changes a byte.

use std::path::Path;

use subledger_core::Sequence;

use crate::support::*;

fn verify_json(args: &[&str]) -> (i32, serde_json::Value) {
    let output = run(&[&["verify", "--json"], args].concat());
    let code = output.status.code().unwrap();
    let json = serde_json::from_str(&stdout(&output)).unwrap_or(serde_json::Value::Null);
    (code, json)
}

fn data_args(dir: &Path) -> Vec<String> {
    vec!["--data".into(), dir.display().to_string()]
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Edits the raw sled tree of a (closed) data directory.
fn edit_raw(dir: &Path, tree: &str, edit: impl FnOnce(&sled_edit::Tree)) {
    // sled releases its lock shortly after the last handle of a closed database drops.
    let mut attempts = 0;
    let db = loop {
        // At the segment size the store creates ledgers with (sled refuses another).
        let opened = sled_edit::Config::new()
            .path(dir)
            .segment_size(subledger_store::SEGMENT_BYTES_NEW)
            .open();
        match opened {
            Ok(db) => break db,
            Err(_) if attempts < 100 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("cannot open the store to edit it: {error}"),
        }
    };
    let tree = db.open_tree(tree).unwrap();
    edit(&tree);
    db.flush().unwrap();
}

mod sled_edit {
    pub use sled::{Config, Tree};
}

#[test]
fn a_clean_ledger_verifies_and_auditing_changes_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    let events = generate(dir.path());
    let before = tree_bytes(dir.path());
    let args = data_args(dir.path());
    let (code, report) = verify_json(&strs(&args));
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["problem"], serde_json::Value::Null);
    assert_eq!(report["events"], events);
    assert_eq!(report["accounts"], 6);
    assert_eq!(report["families"], 2);
    assert_eq!(report["snapshots_checked"], 1);
    assert_eq!(report["first_at"], "2026-01-01T00:00:01.000Z");
    let human = run(&[&["verify"], &strs(&args)[..]].concat());
    assert!(stdout(&human).contains("OK"));
    for what in ["events", "transfers", "statements", "log"] {
        let output = run(&[&["export", "--what", what], &strs(&args)[..]].concat());
        assert!(output.status.success(), "export {what}");
    }
    for extra in [
        vec![],
        vec!["--seq", "10"],
        vec!["--at", "2026-01-01T00:00:05Z"],
        vec!["--format", "csv"],
    ] {
        let output = run(&[&["replay"], &strs(&args)[..], &extra[..]].concat());
        assert!(output.status.success(), "replay {extra:?}");
    }
    assert_eq!(
        tree_bytes(dir.path()),
        before,
        "an audit changed the data directory"
    );
}

#[test]
fn replay_at_a_sequence_or_an_instant_equals_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let events = generate(dir.path());
    let args = data_args(dir.path());
    for seq in [1, 7, 15, 20, 21, events - 1, events] {
        let text = seq.to_string();
        let output = run(&[
            &["replay", "--format", "json", "--seq", &text],
            &strs(&args)[..],
        ]
        .concat());
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let replayed: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
        let expected = brute_force_balances(dir.path(), Sequence(seq));
        let rows = replayed["accounts"].as_array().unwrap();
        assert_eq!(rows.len(), expected.len(), "seq {seq}");
        for row in rows {
            let key = row["api_key"].as_str().unwrap();
            assert_eq!(
                row["balance"].as_str().map(String::from),
                expected[key],
                "seq {seq}, {key}"
            );
        }
        // Past the snapshot at 20, replay starts from it; before it, from scratch.
        let from_snapshot = replayed["from_snapshot"].as_u64();
        assert_eq!(from_snapshot, (seq >= 20).then_some(20), "seq {seq}");
    }
    // One command per second: the state at 00:00:07.5 is after command 7.
    let output = run(&[
        &["replay", "--json", "--at", "2026-01-01T00:00:07.500Z"],
        &strs(&args)[..],
    ]
    .concat());
    let replayed: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(replayed["seq"], 7);
    let family = run(&[
        &["replay", "--json", "--primary", "audp0002"],
        &strs(&args)[..],
    ]
    .concat());
    let family: serde_json::Value = serde_json::from_str(&stdout(&family)).unwrap();
    assert_eq!(family["families"].as_array().unwrap().len(), 1);
    assert_eq!(family["families"][0]["total_credit_limit"], "-100");
    assert_eq!(family["families"][0]["total_balance"], "500");
}

#[test]
fn a_flipped_byte_in_a_record_is_found_and_located() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    edit_raw(dir.path(), "log", |tree| {
        let key = 9_u64.to_be_bytes();
        let mut bytes = tree
            .get(key)
            .unwrap()
            .expect("a record starts at 9")
            .to_vec();
        bytes[90] ^= 0x04;
        tree.insert(key, bytes).unwrap();
    });
    let args = data_args(dir.path());
    let (code, report) = verify_json(&strs(&args));
    assert_eq!(code, 1);
    assert_eq!(report["problem"]["seq"], 9);
    assert!(report["problem"]["what"]
        .as_str()
        .unwrap()
        .contains("checksum"));
}

#[test]
fn a_corrupted_snapshot_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let snapshots: Vec<_> = std::fs::read_dir(dir.path().join("ledger-snapshots"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    let mut bytes = std::fs::read(&snapshots[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&snapshots[0], bytes).unwrap();
    let (code, report) = verify_json(&strs(&data_args(dir.path())));
    assert_eq!(code, 1);
    assert_eq!(report["problem"]["seq"], 20);
    assert!(
        report["problem"]["what"]
            .as_str()
            .unwrap()
            .contains("snapshot"),
        "{report}"
    );
}

#[test]
fn a_truncated_log_is_reported_with_the_first_missing_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let events = generate(dir.path());
    edit_raw(dir.path(), "log", |tree| {
        let (last, _) = tree.iter().next_back().unwrap().unwrap();
        tree.remove(last).unwrap();
    });
    let output = run(&[&["verify"], &strs(&data_args(dir.path()))[..]].concat());
    assert_eq!(output.status.code(), Some(1));
    let error = String::from_utf8(output.stderr).unwrap();
    assert!(
        error.contains(&format!("sequence Some({events})")),
        "{error}"
    );
}

#[test]
fn the_archive_verifies_replays_alike_and_tampering_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let events = generate(dir.path());
    let archive = dir
        .path()
        .parent()
        .unwrap()
        .join(format!("archive-{}.slar", uuid::Uuid::new_v4()));
    let archive_text = archive.display().to_string();
    let data = data_args(dir.path());
    let exported = run(&[
        &["export", "--what", "log", "--out", &archive_text],
        &strs(&data)[..],
    ]
    .concat());
    assert!(exported.status.success());
    let (code, report) = verify_json(&["--log", &archive_text]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["events"], events);
    let from_archive = run(&["replay", "--json", "--log", &archive_text]);
    let from_data = run(&[&["replay", "--json"], &strs(&data)[..]].concat());
    let mut archive_state: serde_json::Value =
        serde_json::from_str(&stdout(&from_archive)).unwrap();
    let mut data_state: serde_json::Value = serde_json::from_str(&stdout(&from_data)).unwrap();
    archive_state["from_snapshot"] = serde_json::Value::Null;
    data_state["from_snapshot"] = serde_json::Value::Null;
    assert_eq!(archive_state, data_state);

    let original = std::fs::read(&archive).unwrap();
    let mut tampered = original.clone();
    tampered[8 + 4 + 100] ^= 0x20;
    std::fs::write(&archive, &tampered).unwrap();
    let (code, report) = verify_json(&["--log", &archive_text]);
    assert_eq!(code, 1);
    assert_eq!(report["problem"]["seq"], 1, "the first record was altered");

    std::fs::write(&archive, &original[..original.len() - 30]).unwrap();
    let output = run(&["verify", "--log", &archive_text]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8(output.stderr)
        .unwrap()
        .contains("truncated"));
    std::fs::remove_file(&archive).unwrap();
}

#[test]
fn exports_never_contain_secret_hashes_and_reports_have_rows() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let data = data_args(dir.path());
    let events = stdout(&run(
        &[&["export", "--what", "events"], &strs(&data)[..]].concat()
    ));
    assert!(!events.contains("argon2") && !events.contains("YXVkaXRoYXNo"));
    assert!(events.lines().count() > 30);
    assert!(events.contains("\"secret_id\""));
    let transfers = stdout(&run(&[
        &["export", "--what", "transfers"],
        &strs(&data)[..],
    ]
    .concat()));
    let mut lines = transfers.lines();
    assert_eq!(
        lines.next(),
        Some("seq,at,type,id,primary_account_api_key,from,to,amount,reference")
    );
    assert_eq!(lines.count(), 16, "8 balance and 8 credit transfers");
    let window = run(&[
        &[
            "export",
            "--what",
            "statements",
            "--start",
            "2026-01-01T00:00:10Z",
            "--end",
            "2026-01-01T00:00:12Z",
        ],
        &strs(&data)[..],
    ]
    .concat());
    let statements = stdout(&window);
    // Commands 10 and 11: a balance transfer (two rows) and a charge on a shared subaccount
    // (one row, on the primary that pays).
    assert_eq!(statements.lines().count(), 1 + 3, "{statements}");
}

#[test]
fn clear_errors_for_missing_foreign_and_locked_directories() {
    let missing = run(&["verify", "--data", "/nonexistent/subledger"]);
    assert_eq!(missing.status.code(), Some(2));
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("notes.txt"), "x").unwrap();
    let output = run(&["verify", "--data", &foreign.path().display().to_string()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8(output.stderr)
        .unwrap()
        .contains("not a subledger data directory"));

    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let (held, _) =
        subledger_store::SledLog::open(dir.path(), subledger_store::StoreOptions::default())
            .unwrap();
    let output = run(&["verify", "--data", &dir.path().display().to_string()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8(output.stderr).unwrap().contains("locked"));
    drop(held);
    let usage = run(&[
        "replay",
        "--data",
        &dir.path().display().to_string(),
        "--at",
        "yesterday",
    ]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn snapshot_writes_one_that_verify_then_checks() {
    let dir = tempfile::tempdir().unwrap();
    let events = generate(dir.path());
    let output = run(&[
        "snapshot",
        "--json",
        "--data",
        &dir.path().display().to_string(),
    ]);
    assert!(output.status.success());
    let written: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(written["snapshot"], events);
    let (code, report) = verify_json(&strs(&data_args(dir.path())));
    assert_eq!(code, 0);
    assert_eq!(report["snapshots_checked"], 2);
}

#[test]
fn a_newer_format_version_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    edit_raw(dir.path(), "meta", |tree| {
        tree.insert(b"format", &99_u16.to_le_bytes()).unwrap();
    });
    let output = run(&["verify", "--data", &dir.path().display().to_string()]);
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8(output.stderr).unwrap();
    assert!(error.contains("format version 99 is newer"), "{error}");
}
