//! Tiny `--http` runs of each workload against a real server on a socket, so CI proves the
//! HTTP mode works (no timing assertions): setup through `/admin/import`, single requests and
//! batches, and every answered command visible in the server's ledger.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use subledger_bench::http::run;
use subledger_bench::{BenchError, BenchOptions, HttpTarget, Workload};
use subledger_engine::{Config, Ledger};
use subledger_server::auth::HashCost;
use subledger_server::{AppState, ServerConfig};

const TOKEN: &str = "bench-test-token";
/// Cheap argon2 for tests; the server accepts imported hashes no weaker than its own.
const COST: HashCost = HashCost {
    memory_kib: 64,
    passes: 1,
};

/// A server on an in-memory ledger, on its own runtime thread; the URL and the ledger.
fn server() -> (String, Arc<Ledger>, std::sync::mpsc::Sender<()>) {
    let ledger = Arc::new(Ledger::in_memory(Config::default()).unwrap());
    let state = AppState::new(
        Arc::clone(&ledger),
        ServerConfig {
            hash_cost: COST,
            ..ServerConfig::new(TOKEN.into())
        },
    );
    let (address_out, address_in) = std::sync::mpsc::channel();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            address_out.send(listener.local_addr().unwrap()).unwrap();
            let shutdown = async move {
                let _ = tokio::task::spawn_blocking(move || stopped.recv()).await;
            };
            subledger_server::serve(listener, state, shutdown)
                .await
                .unwrap();
        });
    });
    let address = address_in.recv().unwrap();
    (format!("http://{address}"), ledger, stop)
}

fn target(url: &str) -> HttpTarget {
    HttpTarget {
        hash_memory_kib: COST.memory_kib,
        hash_passes: COST.passes,
        ..HttpTarget::new(url.into(), TOKEN.into())
    }
}

fn tiny(workload: Workload, batch_size: usize) -> BenchOptions {
    BenchOptions {
        workload,
        accounts: 300,
        primaries: 4,
        subaccounts_per_primary: 6,
        commands: 1_200,
        clients: 4,
        batch_size,
        ..BenchOptions::default()
    }
}

#[test]
fn the_tigerbeetle_workload_runs_over_http_singly_and_in_batches() {
    for batch_size in [1, 50] {
        let (url, ledger, _stop) = server();
        let before = ledger.metrics().commands;
        let report = run(
            &tiny(Workload::TigerBeetle, batch_size),
            &target(&url),
            &|_, _| {},
        )
        .unwrap();
        assert_eq!(report.target, url);
        assert_eq!(report.accounts, 300);
        assert_eq!(report.committed + report.rejected, 1_200);
        assert_eq!(report.rejected, 0, "transfers are always affordable");
        assert!(report.latency_us.p50 >= 1 && report.latency_us.p50 <= report.latency_us.max);
        assert!(report.mean_batch_size >= 1.0);
        assert_eq!(report.durable, None, "only the server knows");
        assert_eq!(report.recovery_seconds_full, None);
        // Every transfer answered reached the server's ledger: one command for each account
        // setup created (and a few fundings), then the load's 1,200.
        let family = ledger
            .read(|views| views.family(&"00000000".parse().unwrap()))
            .unwrap();
        assert_eq!(family.subaccounts.len(), 99);
        let decided = ledger.metrics().commands - before;
        assert!(decided >= 1_200 + 300, "{decided} commands decided");
        assert!(report.events >= 1_200);
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["durable"].is_null() && json["bytes_on_disk"].is_null());
        // The load generator's workers sent every request (Linux's /proc only).
        if std::path::Path::new("/proc/self/task").exists() {
            let cpu = report.cpu.as_ref().unwrap();
            assert!(
                cpu.by_thread.get("bench-client").is_some_and(|s| *s > 0.0),
                "{cpu:?}"
            );
            // The server reports its own CPU time on /metrics (here: this test process's).
            assert!(cpu.server_seconds.is_some_and(|s| s >= 0.0), "{cpu:?}");
        }
    }
}

#[test]
fn the_vonage_workload_runs_over_http_with_rejections_and_batches() {
    for batch_size in [1, 40] {
        let (url, ledger, _stop) = server();
        let before = ledger.metrics().commands;
        let report = run(
            &tiny(Workload::Vonage, batch_size),
            &target(&url),
            &|_, _| {},
        )
        .unwrap();
        assert_eq!(report.accounts, 28);
        assert_eq!(report.committed + report.rejected, 1_200, "{report:?}");
        assert!(
            report.committed > 600,
            "most real traffic commits: {report:?}"
        );
        // Setup's one command per account, then the load's 1,200.
        let decided = ledger.metrics().commands - before;
        assert!(decided >= 1_200 + 28, "{decided} commands decided");
    }
}

#[test]
fn a_server_that_already_holds_the_accounts_is_refused() {
    let (url, _ledger, _stop) = server();
    let options = BenchOptions {
        commands: 10,
        ..tiny(Workload::Vonage, 1)
    };
    run(&options, &target(&url), &|_, _| {}).unwrap();
    let again = run(&options, &target(&url), &|_, _| {});
    assert!(
        matches!(&again, Err(BenchError::Setup(why))
            if why.contains("already holds benchmark accounts") && why.len() < 300),
        "{again:?}"
    );
    let nowhere = run(&options, &target("https://127.0.0.1:1"), &|_, _| {});
    assert!(matches!(nowhere, Err(BenchError::Options(_))));
    let too_big = BenchOptions {
        batch_size: 1_001,
        ..options
    };
    assert!(matches!(
        run(&too_big, &target(&url), &|_, _| {}),
        Err(BenchError::Options(_))
    ));
}
