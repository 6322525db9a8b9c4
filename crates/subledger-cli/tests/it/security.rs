//! No plaintext secret anywhere: a server run with known secrets (created, rotated, used, and
//! tried wrongly), then its data directory, a snapshot, every export and the captured logs are
//! searched for them — and for their Basic-auth encodings.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn request(port: u16, method: &str, path: &str, authorization: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {authorization}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn body_json(response: &str) -> serde_json::Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

fn basic(key: &str, secret: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"))
    )
}

#[test]
fn known_secrets_are_nowhere_in_plaintext() {
    let secrets = [
        "Known1Secret",
        "Known2Secret",
        "Known3Secret",
        "Wrong9Secret",
    ];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ledger");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Process::new(env!("CARGO_BIN_EXE_subledger"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data",
            &data.display().to_string(),
        ])
        .env("SUBLEDGER_ADMIN_TOKEN", "security-admin")
        .env("SUBLEDGER_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let admin = "Bearer security-admin";
    let primary = body_json(&request(
        port,
        "POST",
        "/admin/primaries",
        admin,
        r#"{"name":"Sec","secret":"Known1Secret"}"#,
    ));
    let primary = primary["api_key"]
        .as_str()
        .expect("primary created")
        .to_string();
    request(
        port,
        "POST",
        &format!("/admin/accounts/{primary}/top-ups"),
        admin,
        r#"{"amount":100}"#,
    );
    let owner = basic(&primary, "Known1Secret");
    let sub = body_json(&request(
        port,
        "POST",
        &format!("/accounts/{primary}/subaccounts"),
        &owner,
        r#"{"name":"shop","secret":"Known2Secret","use_primary_account_balance":false}"#,
    ));
    let sub = sub["api_key"]
        .as_str()
        .expect("subaccount created")
        .to_string();
    let transfer = format!(r#"{{"from":"{primary}","to":"{sub}","amount":12.5}}"#);
    assert!(request(
        port,
        "POST",
        &format!("/accounts/{primary}/balance-transfers"),
        &owner,
        &transfer
    )
    .starts_with("HTTP/1.1 200"));
    // Rotation: a second secret, used, then the first revoked.
    let added = body_json(&request(
        port,
        "POST",
        &format!("/accounts/{primary}/secrets"),
        &owner,
        r#"{"secret":"Known3Secret"}"#,
    ));
    assert!(added["id"].is_string(), "{added}");
    let rotated = basic(&primary, "Known3Secret");
    let listed = body_json(&request(
        port,
        "GET",
        &format!("/accounts/{primary}/secrets"),
        &rotated,
        "",
    ));
    let first = listed["_embedded"]["secrets"][0]["id"]
        .as_str()
        .expect("a secret id")
        .to_string();
    request(
        port,
        "DELETE",
        &format!("/accounts/{primary}/secrets/{first}"),
        &rotated,
        "",
    );
    assert!(request(
        port,
        "GET",
        "/account/get-balance",
        &basic(&sub, "Known2Secret"),
        ""
    )
    .starts_with("HTTP/1.1 200"));
    assert!(request(
        port,
        "GET",
        "/account/get-balance",
        &basic(&primary, "Wrong9Secret"),
        ""
    )
    .starts_with("HTTP/1.1 401"));
    assert!(
        request(port, "GET", "/account/get-balance", &owner, "").starts_with("HTTP/1.1 401"),
        "revoked"
    );

    Process::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
    let mut logs = String::new();
    server
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(logs.contains("request"), "request logging was on: {logs}");

    let data_text = data.display().to_string();
    assert!(run(&["snapshot", "--data", &data_text]).status.success());
    let mut exports = Vec::new();
    for what in ["events", "transfers", "statements", "log"] {
        let output = run(&["export", "--data", &data_text, "--what", what]);
        assert!(output.status.success(), "export {what}");
        exports.push((what.to_string(), output.stdout));
    }
    let mut haystacks: Vec<(String, Vec<u8>)> = tree_bytes(&data).into_iter().collect();
    haystacks.extend(exports);
    haystacks.push(("server logs".into(), logs.into_bytes()));
    assert!(
        haystacks.iter().any(|(name, _)| name.contains("db")),
        "the sled files were searched"
    );
    for secret in secrets {
        let needles = [
            secret.to_string(),
            basic(&primary, secret),
            basic(&sub, secret),
        ];
        for (name, bytes) in &haystacks {
            for needle in &needles {
                let found = bytes
                    .windows(needle.len())
                    .any(|window| window == needle.as_bytes());
                assert!(!found, "{needle:?} found in {name}");
            }
        }
    }
}
