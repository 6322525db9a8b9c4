//! restore: an archive becomes a new data directory with the same hash chain, state and a
//! snapshot; a damaged archive or an occupied directory leaves nothing behind.

use std::path::{Path, PathBuf};

use crate::support::*;

/// A generated ledger in `dir` exported to an archive beside it (removed by the caller).
fn archived(dir: &Path) -> (u64, PathBuf) {
    let events = generate(dir);
    let archive = dir
        .parent()
        .unwrap()
        .join(format!("restore-{}.slar", uuid::Uuid::new_v4()));
    let exported = run(&[
        "export",
        "--data",
        &dir.display().to_string(),
        "--what",
        "log",
        "--out",
        &archive.display().to_string(),
    ]);
    assert!(exported.status.success());
    (events, archive)
}

fn verify(dir: &Path) -> (i32, serde_json::Value) {
    let output = run(&["verify", "--json", "--data", &dir.display().to_string()]);
    let json = serde_json::from_str(&stdout(&output)).unwrap_or(serde_json::Value::Null);
    (output.status.code().unwrap(), json)
}

fn restore(archive: &Path, data: &Path, extra: &[&str]) -> std::process::Output {
    run(&[
        &[
            "restore",
            "--json",
            "--log",
            &archive.display().to_string(),
            "--data",
            &data.display().to_string(),
        ],
        extra,
    ]
    .concat())
}

fn replay_state(dir: &Path) -> serde_json::Value {
    let output = run(&["replay", "--json", "--data", &dir.display().to_string()]);
    assert!(output.status.success());
    let mut state: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    state["from_snapshot"] = serde_json::Value::Null;
    state
}

/// Entries of `parent` whose name marks an unfinished restore.
fn leftovers(parent: &Path) -> Vec<String> {
    std::fs::read_dir(parent)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".restoring-"))
        .collect()
}

#[test]
fn a_restored_ledger_has_the_archived_chain_state_and_a_snapshot() {
    let source = tempfile::tempdir().unwrap();
    let (events, archive) = archived(source.path());
    let (empty, target) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // An existing empty directory is taken (also spelled with a trailing `.`); a missing one,
    // with missing parents, is created.
    for data in [empty.path().join("."), target.path().join("a/b/ledger")] {
        let output = restore(&archive, &data, &[]);
        assert!(output.status.success(), "{output:?}");
        let restored: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
        assert_eq!(restored["events"], events);
        assert_eq!(restored["snapshot"], events, "a snapshot at the head");
        let (code, original) = verify(source.path());
        assert_eq!(code, 0);
        let (code, report) = verify(&data);
        assert_eq!(code, 0, "{report}");
        assert_eq!(report["events"], events);
        // The records kept their bytes: the whole chain ends in the same hash.
        assert_eq!(report["head_hash"], original["head_hash"]);
        assert_eq!(restored["head_hash"], original["head_hash"]);
        assert_eq!(report["snapshots_checked"], 1);
        assert_eq!(replay_state(&data), replay_state(source.path()));
        assert!(leftovers(data.parent().unwrap()).is_empty());
    }

    let bare = target.path().join("bare");
    let output = restore(&archive, &bare, &["--no-snapshot"]);
    assert!(output.status.success(), "{output:?}");
    let restored: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(restored["snapshot"], serde_json::Value::Null);
    let (code, report) = verify(&bare);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["snapshots_checked"], 0);
    assert_eq!(report["head_hash"], verify(source.path()).1["head_hash"]);
    std::fs::remove_file(&archive).unwrap();
}

#[test]
fn a_damaged_archive_or_an_occupied_directory_restores_nothing() {
    let source = tempfile::tempdir().unwrap();
    let (_, archive) = archived(source.path());
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("ledger");

    // An occupied directory is refused, untouched.
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("notes.txt"), b"mine").unwrap();
    let before = tree_bytes(&data);
    let output = restore(&archive, &data, &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("not empty"));
    assert_eq!(tree_bytes(&data), before);
    std::fs::remove_dir_all(&data).unwrap();

    // A flipped byte in a record: exit 1, and neither the ledger nor its build directory stays.
    let original = std::fs::read(&archive).unwrap();
    let mut tampered = original.clone();
    tampered[8 + 4 + 100] ^= 0x20;
    std::fs::write(&archive, &tampered).unwrap();
    let output = restore(&archive, &data, &[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(!data.exists());
    assert!(leftovers(parent.path()).is_empty());

    // Cut short (no trailer): exit 1 as well.
    std::fs::write(&archive, &original[..original.len() - 30]).unwrap();
    let output = restore(&archive, &data, &[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("truncated"));
    assert!(!data.exists());
    assert!(leftovers(parent.path()).is_empty());

    // A trailer whose head was zeroed, which once read as an empty log: exit 1.
    let mut zeroed = original.clone();
    let head_at = zeroed.len() - 48;
    zeroed[head_at..head_at + 8].fill(0);
    std::fs::write(&archive, &zeroed).unwrap();
    let deep = parent.path().join("new/deeper/ledger");
    let output = restore(&archive, &deep, &[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        !parent.path().join("new").exists(),
        "the parents it created are gone"
    );

    // A symbolic link is refused before any work.
    std::fs::write(&archive, &original).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let link = parent.path().join("link");
    std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
    let output = restore(&archive, &link, &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("symbolic link"));
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    std::fs::remove_file(&link).unwrap();

    // No archive at all: a usage error.
    std::fs::remove_file(&archive).unwrap();
    let output = restore(&archive, &data, &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(!data.exists());
    assert!(leftovers(parent.path()).is_empty());
}

#[test]
fn an_archive_whose_events_break_the_rules_is_refused_even_without_a_snapshot() {
    use subledger_core::{AccountId, Batch, Event, Sequence, Timestamp};
    use subledger_log::EventLog;
    // A well-formed chain of one event that suspends an account nobody opened.
    let mut log = subledger_log::MemoryLog::new();
    log.append(&Batch {
        first: Sequence(1),
        at: Timestamp(1_000),
        events: vec![Event::AccountSuspended {
            account: AccountId(3),
        }],
    })
    .unwrap();
    log.sync().unwrap();
    let parent = tempfile::tempdir().unwrap();
    let archive = parent.path().join("forged.slar");
    let file = std::fs::File::create(&archive).unwrap();
    subledger_log::archive::write_archive(log.reader().as_ref(), file).unwrap();
    let data = parent.path().join("ledger");
    for extra in [&[][..], &["--no-snapshot"][..]] {
        let output = restore(&archive, &data, extra);
        assert_eq!(output.status.code(), Some(1), "{extra:?}: {output:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("break the rules"));
        assert!(!data.exists());
        assert!(leftovers(parent.path()).is_empty());
    }
}

#[test]
fn a_killed_restores_leftover_is_removed_and_a_running_ones_is_not_touched() {
    let source = tempfile::tempdir().unwrap();
    let (events, archive) = archived(source.path());
    let target = tempfile::tempdir().unwrap();
    // No process ever has the number `pid_max` (they count up to one below it): it names
    // the leftover of a killed restore.
    let dead_pid: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let killed = target.path().join(format!(".ledger.restoring-{dead_pid}"));
    std::fs::create_dir_all(killed.join("db")).unwrap();
    std::fs::write(killed.join("db/half-written"), b"x").unwrap();
    // This test's own process is running: a restore in progress, as far as anyone can tell.
    let running = target
        .path()
        .join(format!(".ledger.restoring-{}", std::process::id()));
    std::fs::create_dir(&running).unwrap();
    // Another target's leftover is not this restore's to judge, nor a name it would not
    // have written.
    let other = target.path().join(format!(".other.restoring-{dead_pid}"));
    std::fs::create_dir(&other).unwrap();
    let padded = target.path().join(format!(".ledger.restoring-0{dead_pid}"));
    std::fs::create_dir(&padded).unwrap();
    // A restore of this version in another process namespace: its number means nothing
    // here, its lock does.
    let elsewhere = target
        .path()
        .join(format!(".ledger.restoring-{}", dead_pid - 1));
    std::fs::create_dir(&elsewhere).unwrap();
    let held = std::fs::File::open(&elsewhere).unwrap();
    held.try_lock().unwrap();

    let output = restore(&archive, &target.path().join("ledger"), &[]);
    assert!(output.status.success(), "{output:?}");
    let restored: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(restored["events"], events);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        !killed.exists(),
        "the killed restore's leftover is removed: {said}"
    );
    assert!(
        said.contains(&format!("process {dead_pid} is gone")),
        "{said}"
    );
    assert!(running.exists(), "a running restore's directory stays");
    assert!(said.contains("may still be running"), "{said}");
    assert!(other.exists(), "another target's leftover stays");
    assert!(padded.exists(), "a name restore would not write stays");
    assert!(elsewhere.exists(), "a locked one stays");
    drop(held);
    let mut left = leftovers(target.path());
    left.sort();
    let mut expected = vec![
        format!(".ledger.restoring-{}", std::process::id()),
        format!(".ledger.restoring-{}", dead_pid - 1),
        format!(".ledger.restoring-0{dead_pid}"),
        format!(".other.restoring-{dead_pid}"),
    ];
    expected.sort();
    assert_eq!(left, expected);
    std::fs::remove_file(archive).unwrap();
}
