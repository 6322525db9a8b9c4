//! `subledger serve` as a process: the demo answers, a live ledger's log archive is pulled with
//! `export --from`, and SIGTERM shuts it down cleanly.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A raw HTTP/1.1 GET; returns the whole response text.
fn get(port: u16, path: &str, authorization: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[test]
fn a_request_timeout_out_of_range_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    for seconds in ["0", "3601", "ten"] {
        let refused = run(&[
            "serve",
            "--data",
            &data.display().to_string(),
            "--request-timeout-seconds",
            seconds,
        ]);
        assert_eq!(refused.status.code(), Some(2), "{seconds}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("--request-timeout-seconds"),
            "{seconds}"
        );
        assert!(!data.exists(), "nothing was created for {seconds}");
    }
}

#[test]
fn serve_demo_export_from_a_live_server_and_shut_down_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    let port = free_port();
    let mut server = Process::new(env!("CARGO_BIN_EXE_subledger"))
        .args([
            "serve",
            "--demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data",
            &data.display().to_string(),
            // Background snapshots after every 3 events, rebuilt each time: the demo's 6
            // events take one, which `verify` below checks against a replay.
            "--snapshot-every-events",
            "3",
            "--snapshot-replica",
            "rebuilt",
            "--request-timeout-seconds",
            "20",
        ])
        .env("SUBLEDGER_ADMIN_TOKEN", "live-audit-token")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(port, "/healthz", "none").is_none_or(|response| !response.starts_with("HTTP/1.1 200"))
    {
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let basic = "Basic ZGVtbzAwMDE6RGVtb1NlY3JldDQy"; // demo0001:DemoSecret42
    let family = get(port, "/accounts/demo0001/subaccounts", basic).unwrap();
    assert!(family.starts_with("HTTP/1.1 200"), "{family}");
    assert!(family.contains("\"total_balance\":500"), "{family}");

    let archive = dir.path().join("live.slar");
    let exported = Process::new(env!("CARGO_BIN_EXE_subledger"))
        .args([
            "export",
            "--from",
            &format!("http://127.0.0.1:{port}"),
            "--what",
            "log",
        ])
        .args(["--out", &archive.display().to_string()])
        .env("SUBLEDGER_ADMIN_TOKEN", "live-audit-token")
        .output()
        .unwrap();
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let verified = run(&["verify", "--json", "--log", &archive.display().to_string()]);
    assert!(verified.status.success());
    let report: serde_json::Value = serde_json::from_str(&stdout(&verified)).unwrap();
    assert_eq!(
        report["events"], 6,
        "open, three subaccounts, top-up, transfer"
    );
    let refused = Process::new(env!("CARGO_BIN_EXE_subledger"))
        .args([
            "export",
            "--from",
            &format!("http://127.0.0.1:{port}"),
            "--what",
            "log",
        ])
        .args([
            "--out",
            &dir.path().join("refused.slar").display().to_string(),
        ])
        .env("SUBLEDGER_ADMIN_TOKEN", "wrong-token")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));

    // The snapshot thread looks for new events every 100 ms.
    let snapshots = data.join("ledger-snapshots");
    let written = || {
        std::fs::read_dir(&snapshots).is_ok_and(|mut files| {
            files.any(|file| {
                file.is_ok_and(|file| {
                    let name = file.file_name().to_string_lossy().into_owned();
                    name.starts_with("snapshot-") && name.ends_with(".bin")
                })
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !written() {
        assert!(
            Instant::now() < deadline,
            "no background snapshot was written"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let terminated = Process::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let status = server.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM must end in a clean exit: {status:?}"
    );
    let mut output = String::new();
    server
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    assert!(output.contains("stopped cleanly"), "{output}");
    // The directory is a sound ledger after the shutdown.
    let (code, _) = (
        run(&["verify", "--data", &data.display().to_string()])
            .status
            .code(),
        (),
    );
    assert_eq!(code, Some(0));
}
