//! Tiny runs of each workload, so CI proves the harness works (no timing assertions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use subledger_bench::{run, BenchError, BenchOptions, Workload};

fn tiny(workload: Workload) -> BenchOptions {
    BenchOptions {
        workload,
        accounts: 300,
        primaries: 5,
        subaccounts_per_primary: 6,
        commands: 2_000,
        clients: 4,
        ..BenchOptions::default()
    }
}

#[test]
fn the_tigerbeetle_workload_runs_durably_and_reports_every_field() {
    let report = run(&tiny(Workload::TigerBeetle), &|_, _| {}).unwrap();
    assert_eq!(report.accounts, 300);
    assert_eq!(report.committed + report.rejected, 2_000);
    assert_eq!(
        report.rejected, 0,
        "transfers are sized to always be affordable"
    );
    assert_eq!(report.durable, Some(true));
    assert_eq!(report.target, "embedded");
    assert!(report.bytes_on_disk.unwrap() > 0);
    assert!(report.log_bytes.unwrap() > 0);
    assert_eq!(
        report.memory_log_bytes, None,
        "no in-memory log in a durable run"
    );
    assert!(
        report.log_bytes.unwrap() < report.bytes_on_disk.unwrap(),
        "the snapshot takes room"
    );
    assert!(report.events >= 2_000);
    assert!(report.latency_us.p50 >= 1 && report.latency_us.p50 <= report.latency_us.max);
    assert!(report.mean_batch_size >= 1.0);
    assert!(report.recovery_seconds_full.unwrap() > 0.0);
    assert!(report.recovery_seconds_snapshot.unwrap() > 0.0);
    let json = serde_json::to_value(&report).unwrap();
    for field in [
        "workload",
        "commands",
        "committed",
        "rejected",
        "seconds",
        "commands_per_sec",
        "latency_us",
        "mean_batch_size",
        "durable",
        "bytes_on_disk",
        "rss_bytes_peak",
        "recovery_seconds_full",
        "recovery_seconds_snapshot",
        "replay_events_per_sec",
    ] {
        assert!(json.get(field).is_some(), "missing {field}");
    }
    assert_eq!(json["workload"], "tigerbeetle");
    for percentile in ["p50", "p99", "p999", "max"] {
        assert!(json["latency_us"].get(percentile).is_some());
    }
    // Every sync of the load is in one duration bucket, the slowest ones in the last.
    let bucketed: u64 = report
        .commit_us_buckets
        .iter()
        .map(|bucket| bucket.syncs)
        .sum();
    assert!(
        (1..=2_000).contains(&bucketed),
        "{bucketed} syncs for 2,000 commands"
    );
    assert_eq!(
        report.commit_us_buckets.len(),
        subledger_bench::COMMIT_LATENCY_BUCKETS_MICROS.len() + 1
    );
    assert_eq!(
        report.commit_us_buckets.last().map(|bucket| bucket.le_us),
        Some(None)
    );
    // A durable run probes the disk of its data directory too.
    for probe in [
        "memory_random_read_ns",
        "cpu_ns_per_1k_rounds",
        "syscall_ns",
        "wake_round_trip_ns",
        "append_sync_us_p50",
    ] {
        assert!(json["machine"][probe].as_u64().is_some(), "missing {probe}");
    }
    // Where the CPU went: the writer decided every command, and the process total covers
    // every thread's share (Linux's /proc; elsewhere there is no figure).
    if std::path::Path::new("/proc/self/task").exists() {
        let cpu = report.cpu.as_ref().expect("measured on Linux");
        let writer = cpu.by_thread.get("subledger-write").copied().unwrap_or(0.0);
        assert!(writer > 0.0, "{cpu:?}");
        let named: f64 = cpu.by_thread.values().sum();
        // The total counts 10 ms ticks: allow one per thread shown.
        let rounding = 0.01 * (cpu.by_thread.len() + 1) as f64;
        assert!(cpu.seconds + rounding >= named, "{cpu:?}");
        assert!(cpu.busy_percent > 0.0, "{cpu:?}");
        for field in [
            "seconds",
            "busy_percent",
            "by_thread",
            "ended_threads_seconds",
        ] {
            assert!(json["cpu"].get(field).is_some(), "missing cpu.{field}");
        }
    } else {
        assert!(report.cpu.is_none());
    }
}

#[test]
fn a_durable_run_with_every_waiting_batch_handed_to_the_log_thread_completes() {
    let options = BenchOptions {
        batch_size: 50,
        log_handoff_commands_min: 1,
        ..tiny(Workload::TigerBeetle)
    };
    let report = run(&options, &|_, _| {}).unwrap();
    assert_eq!(report.committed + report.rejected, 2_000);
    assert_eq!(report.rejected, 0);
    // Reopened by a full replay and from a snapshot: the log the log thread wrote is whole.
    assert!(report.recovery_seconds_full.unwrap() > 0.0);
    assert!(report.recovery_seconds_snapshot.unwrap() > 0.0);
}

#[test]
fn the_vonage_workload_runs_in_memory_with_batches_and_some_rejections() {
    let options = BenchOptions {
        in_memory: true,
        batch_size: 16,
        ..tiny(Workload::Vonage)
    };
    let report = run(&options, &|_, _| {}).unwrap();
    assert_eq!(report.accounts, 35);
    assert_eq!(report.committed + report.rejected, 2_000);
    assert!(
        report.committed > 1_000,
        "most real traffic commits: {report:?}"
    );
    assert_eq!(report.durable, Some(false));
    assert_eq!(report.bytes_on_disk, Some(0));
    assert_eq!(report.machine.append_sync_us_p50, None, "no disk to probe");
    // Over 2,000 commands of events, and the data of none of them lost in the count.
    assert!(
        report.memory_log_bytes.unwrap() > report.events * 20,
        "{report:?}"
    );
    assert!(report.mean_batch_size >= 1.0);
}

#[test]
fn async_clients_run_singly_and_in_batches_and_answer_every_command() {
    for batch_size in [1, 16] {
        let options = BenchOptions {
            in_memory: true,
            async_clients: true,
            clients: 32,
            batch_size,
            ..tiny(Workload::Vonage)
        };
        let report = run(&options, &|_, _| {}).unwrap();
        assert_eq!(
            report.committed + report.rejected,
            2_000,
            "batch {batch_size}"
        );
        assert!(report.committed > 1_000, "{report:?}");
        assert!(report.latency_us.p50 >= 1);
        let counts: Vec<u64> = report.timeline.iter().map(|(_, done)| *done).collect();
        assert!(
            counts.windows(2).all(|pair| pair[0] <= pair[1]) && counts.iter().all(|&n| n <= 2_000),
            "{counts:?}"
        );
    }
}

#[test]
fn bad_options_are_refused() {
    let no_clients = BenchOptions {
        clients: 0,
        ..tiny(Workload::TigerBeetle)
    };
    assert!(matches!(
        run(&no_clients, &|_, _| {}),
        Err(BenchError::Options(_))
    ));
    // Sizes whose product overflows are refused, not a panic.
    for (primaries, subaccounts_per_primary) in [(2, usize::MAX), (usize::MAX, 2), (20_000, 999)] {
        let huge = BenchOptions {
            primaries,
            subaccounts_per_primary,
            ..tiny(Workload::Vonage)
        };
        assert!(
            matches!(run(&huge, &|_, _| {}), Err(BenchError::Options(_))),
            "{primaries} × {subaccounts_per_primary}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x"), "not empty").unwrap();
    let used = BenchOptions {
        data: Some(dir.path().to_path_buf()),
        ..tiny(Workload::TigerBeetle)
    };
    assert!(matches!(
        run(&used, &|_, _| {}),
        Err(BenchError::Options(_))
    ));
}

#[test]
fn recovery_only_measures_an_existing_ledger_and_refuses_a_directory_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let options = BenchOptions {
        data: Some(dir.path().to_path_buf()),
        ..tiny(Workload::TigerBeetle)
    };
    let report = run(&options, &|_, _| {}).unwrap();
    let bytes_now = files_bytes(dir.path());
    let measured = subledger_bench::recovery(dir.path()).unwrap();
    assert_eq!(measured.events, report.events);
    // The harness took one snapshot at the head after the load.
    assert_eq!(measured.snapshot_seq, Some(report.events));
    assert!(measured.recovery_seconds_full > 0.0 && measured.recovery_seconds_snapshot > 0.0);
    assert!(measured.replay_events_per_sec > 0.0);
    assert!(measured.machine.append_sync_us_p50.is_some());
    assert_eq!(
        measured.bytes_read_before, bytes_now,
        "every byte of the directory read before the timed opens"
    );
    let probe_files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().contains("probe"))
        .collect();
    assert!(
        probe_files.is_empty(),
        "the disk probe left {probe_files:?}"
    );
    // Measuring changed nothing: a second measurement sees the same ledger.
    assert_eq!(
        subledger_bench::recovery(dir.path()).unwrap().events,
        report.events
    );

    let empty = tempfile::tempdir().unwrap();
    match subledger_bench::recovery(empty.path()) {
        Err(BenchError::Options(message)) => assert!(message.contains("holds no ledger")),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Background snapshots during the load (as `serve` takes them), with a rebuilt replica: the
/// run completes, counts every command and says how it ran. Whether a background snapshot
/// falls inside so short a load depends on timing, so this checks the run, not the count.
#[test]
fn a_run_with_background_snapshots_and_a_rebuilt_replica_completes() {
    let options = BenchOptions {
        snapshot_every_events: 500,
        snapshot_replica: subledger_engine::SnapshotReplica::Rebuilt,
        ..tiny(Workload::TigerBeetle)
    };
    let report = run(&options, &|_, _| {}).unwrap();
    assert_eq!(report.committed + report.rejected, 2_000);
    assert_eq!(report.snapshot_every_events, Some(500));
    assert_eq!(
        report.snapshot_niceness,
        Some(subledger_engine::SNAPSHOT_NICENESS_DEFAULT)
    );
    assert!(report.recovery_seconds_snapshot.unwrap() > 0.0);
    // The ledger is new: a position only if a snapshot was written, and never past the end.
    let written = report.snapshots_during_load.unwrap();
    let last = report.last_snapshot_during_load.unwrap();
    assert_eq!(
        written == 0,
        last == 0,
        "{written} snapshots, newest at {last}"
    );
    assert!(last <= report.events);
}

/// Bytes of every file under `dir`.
fn files_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_bytes(&path)
            } else {
                std::fs::metadata(&path).unwrap().len()
            }
        })
        .sum()
}
