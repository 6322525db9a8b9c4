//! The engine's refusals seen through HTTP: a full queue is `503 busy`, a failed durable
//! write stops the writer (fail-stop) and is reported, and nothing unacknowledged changes.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use subledger_core::Batch;
use subledger_engine::{Config, Ledger, SystemClock};
use subledger_log::{EventLog, LogError, LogReader, MemoryLog, SnapshotStore};

use crate::support::*;

/// A memory log whose `sync` waits while the gate is closed.
#[derive(Debug, Default)]
struct Gate {
    /// (closed, a sync is waiting)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Gate {
    fn set_closed(&self, closed: bool) {
        let mut state = self.state.lock().expect("gate");
        state.0 = closed;
        self.changed.notify_all();
    }

    fn sync_waiting(&self) -> bool {
        self.state.lock().expect("gate").1
    }
}

/// Opens the gate when dropped, so that a failing test cannot leave the writer (and the
/// ledger's `Drop`, which joins it) waiting forever.
#[derive(Debug)]
struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.lock() {
            state.0 = false;
            self.0.changed.notify_all();
        }
    }
}

#[derive(Debug)]
struct GatedLog {
    inner: MemoryLog,
    gate: Arc<Gate>,
}

impl EventLog for GatedLog {
    fn append(&mut self, batch: &Batch) -> Result<(), LogError> {
        self.inner.append(batch)
    }

    fn sync(&mut self) -> Result<(), LogError> {
        let mut state = self.gate.state.lock().expect("gate");
        while state.0 {
            state.1 = true;
            state = self.gate.changed.wait(state).expect("gate");
        }
        state.1 = false;
        drop(state);
        self.inner.sync()
    }

    fn reader(&self) -> Arc<dyn LogReader> {
        self.inner.reader()
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        self.inner.snapshots()
    }
}

async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_503_busy() {
    let gate = Arc::new(Gate::default());
    let log = GatedLog {
        inner: MemoryLog::new(),
        gate: Arc::clone(&gate),
    };
    let config = Config {
        queue_requests_max: 1,
        batch_commands_max: 1,
        ..Config::default()
    };
    let server = Server::on(Ledger::open(config, log, SystemClock).expect("ledger"));
    let primary = server.funded_primary("10").await;
    let sub = server.own_sub(&primary).await;

    let _open_at_the_end = OpenOnDrop(Arc::clone(&gate));
    gate.set_closed(true);
    // A: taken by the writer, which now waits in `sync`.
    let first = {
        let (server, primary, sub) = (server.clone(), primary.clone(), sub.clone());
        tokio::spawn(async move { server.balance_transfer(&primary, &primary, &sub, "1").await })
    };
    eventually("the writer syncs A", || gate.sync_waiting()).await;
    // B: waits in the queue, which is now full.
    let second = {
        let (server, primary, sub) = (server.clone(), primary.clone(), sub.clone());
        tokio::spawn(async move { server.balance_transfer(&primary, &primary, &sub, "2").await })
    };
    eventually("B is queued", || server.ledger.metrics().queue_depth == 1).await;
    // C: refused at once.
    server
        .balance_transfer(&primary, &primary, &sub, "4")
        .await
        .problem(503, "busy", "Service Unavailable");
    server
        .req("POST", &format!("/admin/accounts/{}/top-ups", primary.key))
        .admin()
        .body(r#"{"amount":1}"#)
        .send()
        .await
        .problem(503, "busy", "Service Unavailable");
    // Reads do not queue.
    server.get("/account/get-balance", &primary).await.ok(200);

    gate.set_closed(false);
    first.await.expect("A").ok(200);
    second.await.expect("B").ok(200);
    assert_eq!(server.balance(&sub.key).as_deref(), Some("3"));
    assert_eq!(server.balance(&primary.key).as_deref(), Some("7"));
    // And the ledger takes commands again.
    server
        .balance_transfer(&primary, &primary, &sub, "4")
        .await
        .ok(200);
}

#[tokio::test]
async fn a_failed_durable_write_stops_the_writer_and_is_reported() {
    let log = MemoryLog::new();
    let fault = log.fault_switch();
    let server = Server::on(Ledger::open(Config::default(), log, SystemClock).expect("ledger"));
    let primary = server.funded_primary("10").await;
    let sub = server.own_sub(&primary).await;

    fault.fail_next_sync();
    let failed = server.balance_transfer(&primary, &primary, &sub, "1").await;
    assert_eq!(failed.status, 503, "{}", failed.text);
    assert_eq!(
        failed.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    // Fail-stop: later commands are refused too, and nothing was applied.
    let again = server.balance_transfer(&primary, &primary, &sub, "1").await;
    assert_eq!(again.status, 503, "{}", again.text);
    assert_eq!(server.balance(&sub.key).as_deref(), Some("0"));
    assert_eq!(server.balance(&primary.key).as_deref(), Some("10"));
    // Reported by /healthz and /metrics.
    let health = server.req("GET", "/healthz").send().await;
    assert_eq!(health.status, 503, "{}", health.text);
    let health = health.json();
    assert_eq!(health["status"], "stopped");
    assert!(health["reason"].is_string(), "{health}");
    let metrics = server.req("GET", "/metrics").send().await;
    assert!(
        metrics.text.lines().any(|line| line == "subledger_up 0"),
        "{}",
        metrics.text
    );
    // Reads of the committed state still work.
    let balance = server.get("/account/get-balance", &primary).await.ok(200);
    assert_eq!(num(&balance["value"]), "10");
}
