//! The dashboard end to end in headless Chromium: `tests/browser/dashboard.mjs` (playwright-core)
//! drives the page against a real server on a socket. Needs Node.js, Debian's `chromium`, and
//! `npm ci` in `tests/browser`; `.ci/run` installs them and sets `SUBLEDGER_BROWSER_TESTS=1`,
//! which makes their absence a failure. Elsewhere a missing browser skips the test loudly.
//! Screenshots land in `target/tmp/dashboard-e2e/`.
//!
//! A test binary of its own, so that it never runs beside the load tests of `it` (its one-second
//! bound on live updates is about the page, not about a machine busy with other tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Running, Server, ADMIN_TOKEN};

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// What is missing to run the browser test, if anything.
fn missing(script_dir: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !chromium().exists() {
        missing.push(format!(
            "{} (apt-get install chromium)",
            chromium().display()
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node (Node.js 20)".into());
    }
    if !script_dir.join("node_modules/playwright-core").exists() {
        missing.push(format!(
            "playwright-core (npm ci --prefix {})",
            script_dir.display()
        ));
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let missing = missing(&script_dir);
    if !missing.is_empty() {
        let required = std::env::var_os("SUBLEDGER_BROWSER_TESTS").is_some();
        assert!(!required, "the browser test needs: {}", missing.join(", "));
        eprintln!(
            "SKIPPED dashboard_in_headless_chromium: missing {} (set SUBLEDGER_BROWSER_TESTS=1 to make this a failure)",
            missing.join(", ")
        );
        return;
    }
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-e2e");
    let _ = std::fs::remove_dir_all(&artifacts);
    let server = Server::new();
    let running = Running::start(&server).await;
    let base = format!("http://{}", running.addr);
    let run = {
        let artifacts = artifacts.clone();
        tokio::task::spawn_blocking(move || {
            Command::new("node")
                .arg("dashboard.mjs")
                .current_dir(&script_dir)
                .env("BASE_URL", base)
                .env("ADMIN_TOKEN", ADMIN_TOKEN)
                .env("ARTIFACT_DIR", &artifacts)
                .env("CHROMIUM", chromium())
                .output()
        })
    };
    let output = tokio::time::timeout(std::time::Duration::from_secs(240), run)
        .await
        .expect("the browser test finishes within 4 minutes")
        .expect("join")
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}\nscreenshots: {}",
        output.status,
        artifacts.display()
    );
    assert!(
        stdout.contains("RESULT ok"),
        "the script reports its result"
    );
    for shot in [
        "dashboard.png",
        "dashboard-narrow.png",
        "dashboard-operator.png",
    ] {
        let bytes = std::fs::read(artifacts.join(shot)).expect("screenshot saved");
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{shot} is a PNG");
    }
    running.stop().await;
}
