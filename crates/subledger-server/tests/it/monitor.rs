//! The monitoring reads behind the dashboard: the family overview, the operator's read-only
//! access, the list of primaries, the stream of every event, and the dashboard's assets.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::*;

fn account<'a>(overview: &'a Value, key: &str) -> &'a Value {
    overview["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|account| account["api_key"] == key)
        .unwrap_or_else(|| panic!("{key} in {overview}"))
}

#[tokio::test]
async fn the_overview_reports_available_funds_alerts_and_the_sequence_it_reflects() {
    let server = Server::new();
    let primary = server.funded_primary("100").await;
    server.set_credit_limit(&primary.key, "-50").await;
    let own = server.own_sub(&primary).await;
    let shared = server.shared_sub(&primary).await;
    server
        .balance_transfer(&primary, &primary, &own, "30")
        .await
        .ok(200);
    server
        .admin(
            "PUT",
            &format!("/admin/accounts/{}/low-balance-threshold", own.key),
            r#"{"threshold":25}"#,
        )
        .await
        .ok(200);
    let before = server.ledger.metrics().last_seq.0;
    server
        .admin(
            "POST",
            &format!("/admin/accounts/{}/charges", own.key),
            r#"{"amount":10}"#,
        )
        .await
        .ok(200);
    let path = format!("/accounts/{}/overview", primary.key);
    let overview = server.get(&path, &primary).await.ok(200);
    assert_eq!(
        overview["seq"].as_u64(),
        Some(server.ledger.metrics().last_seq.0),
        "the read reflects the last event"
    );
    assert_eq!(overview["as_of"], "now");
    assert_eq!(num(&overview["total_balance"]), "90");
    assert_eq!(num(&overview["total_credit_limit"]), "-50");
    assert_eq!(overview["low_balance_alerts"], 1);
    let accounts = overview["accounts"].as_array().expect("accounts");
    assert_eq!(accounts.len(), 3);
    assert_eq!(
        accounts[0]["api_key"],
        primary.key.as_str(),
        "primary first"
    );
    let first = account(&overview, &primary.key);
    assert_eq!(num(&first["balance"]), "70");
    assert_eq!(num(&first["available"]), "120", "balance - credit_limit");
    assert_eq!(first["low_balance"], false);
    assert_eq!(first["low_balance_threshold"], Value::Null);
    let sub = account(&overview, &own.key);
    assert_eq!(num(&sub["available"]), "20");
    assert_eq!(num(&sub["low_balance_threshold"]), "25");
    assert_eq!(sub["low_balance"], true);
    let on_primary = account(&overview, &shared.key);
    assert_eq!(on_primary["use_primary_account_balance"], true);
    assert_eq!(on_primary["available"], Value::Null);

    // As of the sequence before the charge: the past, without current thresholds.
    let past = server
        .get(&format!("{path}?seq={before}"), &primary)
        .await
        .ok(200);
    assert_eq!(past["as_of"], "past");
    assert_eq!(
        past["seq"],
        Value::Null,
        "a past read is no stream position"
    );
    assert_eq!(num(&account(&past, &own.key)["balance"]), "30");
    assert_eq!(account(&past, &own.key)["low_balance"], false);
    assert_eq!(
        account(&past, &own.key)["low_balance_threshold"],
        Value::Null
    );
    // Before the primary existed.
    server
        .get(&format!("{path}?at=2000-01-01T00:00:00Z"), &primary)
        .await
        .problem(404, "not-found", "Not Found");
    server
        .get(&format!("{path}?at=yesterday"), &primary)
        .await
        .validation(422, &["at"]);
    // A subaccount is not the primary.
    server.get(&path, &own).await.invalid_api_key();
    server.req("GET", &path).send().await.unauthorized();
}

#[tokio::test]
async fn the_admin_token_reads_any_family_and_changes_nothing() {
    let server = Server::new();
    let primary = server.funded_primary("100").await;
    let sub = server.own_sub(&primary).await;
    server
        .balance_transfer(&primary, &primary, &sub, "5")
        .await
        .ok(200);
    let reads = [
        format!("/accounts/{}/overview", primary.key),
        format!("/accounts/{}/subaccounts", primary.key),
        format!("/accounts/{}/subaccounts/{}", primary.key, sub.key),
        format!("/accounts/{}/balance-transfers", primary.key),
        format!("/accounts/{}/credit-transfers", primary.key),
        format!("/accounts/{}/charges", primary.key),
        format!("/accounts/{}/top-ups", primary.key),
        format!("/accounts/{}/statement", sub.key),
        format!("/accounts/{}/secrets", sub.key),
    ];
    for path in &reads {
        server.req("GET", path).admin().send().await.ok(200);
        // A wrong token is refused, not read as Basic.
        server
            .req("GET", path)
            .header("authorization", "Bearer wrong-token")
            .send()
            .await
            .unauthorized();
    }
    // Unknown accounts are refused the same way for the operator.
    server
        .req("GET", "/accounts/zzzzzzzz/overview")
        .admin()
        .send()
        .await
        .invalid_api_key();
    // Nothing that changes state accepts the token in place of the account's credentials.
    let before = server.ledger.metrics().last_seq;
    let writes = [
        (
            "POST",
            format!("/accounts/{}/balance-transfers", primary.key),
            transfer_body(&primary, &sub, "1"),
        ),
        (
            "POST",
            format!("/accounts/{}/subaccounts", primary.key),
            r#"{"name":"x"}"#.to_string(),
        ),
        (
            "PATCH",
            format!("/accounts/{}/subaccounts/{}", primary.key, sub.key),
            r#"{"suspended":true}"#.to_string(),
        ),
        (
            "POST",
            format!("/accounts/{}/secrets", sub.key),
            r#"{"secret":"Another1Secret"}"#.to_string(),
        ),
    ];
    for (method, path, body) in &writes {
        server
            .req(method, path)
            .admin()
            .body(body.clone())
            .send()
            .await
            .unauthorized();
    }
    // The caller-scoped legacy call has no account to read as.
    server
        .req("GET", "/account/get-balance")
        .admin()
        .send()
        .await
        .unauthorized();
    assert_eq!(server.ledger.metrics().last_seq, before);
}

#[tokio::test]
async fn admin_primaries_pages_through_every_primary_in_creation_order() {
    let server = Server::new();
    let mut opened = Vec::new();
    for _ in 0..5 {
        let primary = server.funded_primary("10").await;
        // Subaccounts between primaries must not disturb the paging.
        server.own_sub(&primary).await;
        opened.push(primary.key);
    }
    // The first family has an account below its threshold.
    server
        .admin(
            "PUT",
            &format!("/admin/accounts/{}/low-balance-threshold", opened[0]),
            r#"{"threshold":50}"#,
        )
        .await
        .ok(200);
    let mut listed = Vec::new();
    let mut alerts = Vec::new();
    let mut path = "/admin/primaries?page_size=2".to_string();
    let mut pages = 0;
    loop {
        let page = server.req("GET", &path).admin().send().await.ok(200);
        pages += 1;
        for item in page["_embedded"]["primaries"].as_array().expect("items") {
            assert_eq!(num(&item["total_balance"]), "10");
            assert_eq!(item["subaccounts"], 1);
            assert_eq!(num(&item["balance"]), "10");
            alerts.push(item["low_balance_alerts"].as_u64().expect("count"));
            listed.push(text(&item["primary_account_api_key"]));
        }
        match page["_links"]["next"]["href"].as_str() {
            Some(next) => path = next.to_string(),
            None => break,
        }
    }
    assert_eq!(listed, opened);
    assert_eq!(alerts, vec![1, 0, 0, 0, 0]);
    assert_eq!(pages, 3);
    server
        .req("GET", "/admin/primaries?page_size=0")
        .admin()
        .send()
        .await
        .validation(422, &["page_size"]);
    server
        .req("GET", "/admin/primaries?cursor=zzzzzzzz")
        .admin()
        .send()
        .await
        .validation(422, &["cursor"]);
    server
        .req("GET", "/admin/primaries?colour=red")
        .admin()
        .send()
        .await
        .validation(422, &["colour"]);
    server
        .req("GET", "/admin/primaries")
        .send()
        .await
        .unauthorized();
}

#[tokio::test]
async fn admin_events_streams_every_family() {
    let server = Server::new();
    let first = server.funded_primary("10").await;
    let running = Running::start(&server).await;
    let mut stream = tokio::net::TcpStream::connect(running.addr)
        .await
        .expect("connect");
    let request = request_text(
        "GET",
        "/admin/events?since=0",
        Some(&format!("Bearer {ADMIN_TOKEN}")),
        &[],
        "",
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let second = server.funded_primary("20").await;
    let mut received = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while received.matches("event: topped_up").count() < 2 {
        let mut buffer = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buffer))
            .await
            .expect("both families' events arrive in time")
            .expect("read");
        assert!(read > 0, "the stream closed: {received}");
        received.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(received.contains(&first.key) && received.contains(&second.key));
    drop(stream);
    // Only the admin token opens it.
    let refused = http(
        running.addr,
        "GET",
        "/admin/events",
        Some(&first.authorization()),
        "",
    )
    .await
    .expect("answer");
    assert_eq!(refused.status, 401);
    running.stop().await;
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary_with_a_strict_policy() {
    let server = Server::new();
    let page = server.req("GET", "/dashboard").send().await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("content-security-policy").expect("a CSP");
    assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"));
    assert_eq!(page.header("x-frame-options").as_deref(), Some("DENY"));
    assert!(page.text.contains(r#"src="/dashboard/app.js""#));
    // Nothing from elsewhere: every src and href is local.
    assert!(!page.text.contains("http://") && !page.text.contains("https://"));
    let script = server.req("GET", "/dashboard/app.js").send().await;
    assert_eq!(script.status, 200);
    assert!(script
        .header("content-type")
        .is_some_and(|kind| kind.starts_with("text/javascript")));
    assert!(script.text.contains("/accounts/"));
    let style = server.req("GET", "/dashboard/app.css").send().await;
    assert_eq!(style.status, 200);
    assert!(style
        .header("content-type")
        .is_some_and(|kind| kind.starts_with("text/css")));
    let slash = server.req("GET", "/dashboard/").send().await;
    assert_eq!(slash.status, 308);
    assert_eq!(slash.header("location").as_deref(), Some("/dashboard"));
    server
        .req("GET", "/dashboard/secrets.txt")
        .send()
        .await
        .problem(404, "not-found", "Not Found");
}

#[tokio::test]
async fn the_secret_list_names_the_secret_the_request_used() {
    let server = Server::new();
    let primary = server.funded_primary("1").await;
    let path = format!("/accounts/{}/secrets", primary.key);
    let second = server
        .post(&path, &primary, r#"{"secret":"Second1Secret"}"#)
        .await
        .ok(201);
    let header = "subledger-authenticated-secret";
    let with_first = server.get(&path, &primary).await;
    let list = with_first.ok(200);
    let ids: Vec<String> = list["_embedded"]["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .map(|secret| text(&secret["id"]))
        .collect();
    assert_eq!(with_first.header(header), Some(ids[0].clone()));
    let with_second = server
        .get(&path, &primary.with_secret("Second1Secret"))
        .await;
    assert_eq!(with_second.header(header), Some(text(&second["id"])));
    // The operator used none of them; nor did a primary reading its subaccount's list.
    let operator = server.req("GET", &path).admin().send().await;
    assert_eq!(operator.header(header), None);
    let sub = server.own_sub(&primary).await;
    let theirs = server
        .get(&format!("/accounts/{}/secrets", sub.key), &primary)
        .await;
    assert_eq!(theirs.header(header), None);
}

/// Reads a stream until it closes or `deadline`; everything received.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, seconds: u64) -> String {
    let mut received = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let mut buffer = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(read)) if read > 0 => {
                received.push_str(&String::from_utf8_lossy(&buffer[..read]))
            }
            _ => return received,
        }
    }
}

#[tokio::test]
async fn an_event_stream_ends_when_its_secret_is_revoked_or_its_account_suspended() {
    let server = Server::new();
    let primary = server.funded_primary("10").await;
    let sub = server.own_sub(&primary).await;
    let running = Running::start(&server).await;
    let secrets = format!("/accounts/{}/secrets", primary.key);
    let second = primary.with_secret("Second1Secret");
    server
        .post(&secrets, &primary, r#"{"secret":"Second1Secret"}"#)
        .await
        .ok(201);
    let mut stream = tokio::net::TcpStream::connect(running.addr)
        .await
        .expect("connect");
    let request = request_text(
        "GET",
        &format!("/accounts/{}/events", primary.key),
        Some(&primary.authorization()),
        &[],
        "",
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Revoke the secret the stream was opened with (using the other one).
    let listed = server.get(&secrets, &second).await.ok(200);
    let first_id = text(&listed["_embedded"]["secrets"][0]["id"]);
    server
        .delete(&format!("{secrets}/{first_id}"), &second)
        .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    server.top_up(&primary.key, "1").await;
    let received = read_until_closed(&mut stream, 10).await;
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(received.contains("event: error"), "{received}");
    assert!(received.contains("revoked or suspended"), "{received}");
    assert!(
        !received.contains("event: topped_up"),
        "no event after the revocation: {received}"
    );

    // A subaccount's stream ends when its primary suspends it.
    let mut stream = tokio::net::TcpStream::connect(running.addr)
        .await
        .expect("connect");
    let request = request_text(
        "GET",
        &format!("/accounts/{}/events", sub.key),
        Some(&sub.authorization()),
        &[],
        "",
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    server
        .patch(
            &format!("/accounts/{}/subaccounts/{}", primary.key, sub.key),
            &second,
            r#"{"suspended":true}"#,
        )
        .await
        .ok(200);
    let received = read_until_closed(&mut stream, 10).await;
    assert!(received.contains("event: error"), "{received}");
    running.stop().await;
}
