//! Every committed fuzz corpus and regression input, replayed through the target functions on
//! stable Rust, so CI exercises the fuzz targets on each run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no corpus for {target}");
    inputs
}

fn replay(target: &str, run: fn(&[u8])) {
    for (name, data) in inputs(target) {
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: input {name} fails");
    }
}

#[test]
fn record_corpus() {
    replay("record", subledger_fuzz::record);
}

#[test]
fn snapshot_corpus() {
    replay("snapshot", subledger_fuzz::snapshot);
}

#[test]
fn archive_corpus() {
    replay("archive", subledger_fuzz::archive);
}

#[test]
fn commands_corpus() {
    replay("commands", subledger_fuzz::commands);
}

#[test]
fn http_corpus() {
    replay("http", subledger_fuzz::http);
}
