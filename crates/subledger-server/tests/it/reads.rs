//! Beyond the public API: statements, point-in-time families, charge and top-up reports, batch
//! transfers, low-balance thresholds, and the live event stream over a real socket.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test]
async fn a_statement_lists_every_change_with_running_values() {
    let server = Server::new();
    let primary = server.funded_primary("100").await;
    let sub = server.own_sub(&primary).await;
    server
        .balance_transfer(&primary, &primary, &sub, "30")
        .await
        .ok(200);
    server
        .balance_transfer(&primary, &sub, &primary, "5.5")
        .await
        .ok(200);
    let path = format!("/accounts/{}/statement", sub.key);
    // The primary may read its subaccount's statement; the subaccount its own.
    for creds in [&primary, &sub] {
        let statement = server.get(&path, creds).await.ok(200);
        let entries = statement["_embedded"]["entries"]
            .as_array()
            .expect("entries")
            .clone();
        let summary: Vec<(String, String, String)> = entries
            .iter()
            .map(|entry| {
                (
                    text(&entry["type"]),
                    num(&entry["balance_change"]),
                    num(&entry["balance"]),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "transfer_in".to_string(),
                    "30".to_string(),
                    "30".to_string()
                ),
                (
                    "transfer_out".to_string(),
                    "-5.5".to_string(),
                    "24.5".to_string()
                ),
            ]
        );
        assert_eq!(
            entries[0]["counterparty"],
            Value::String(primary.key.clone())
        );
        assert_uuid(&entries[0]["id"]);
    }
    // Paged one at a time.
    let first = server
        .get(&format!("{path}?page_size=1"), &primary)
        .await
        .ok(200);
    let next = first["_links"]["next"]["href"]
        .as_str()
        .expect("a next page")
        .to_string();
    let second = server.get(&next, &primary).await.ok(200);
    assert_eq!(num(&second["_embedded"]["entries"][0]["balance"]), "24.5");
    // Newest first, paged: the next link keeps the order.
    let latest = server
        .get(&format!("{path}?page_size=1&order=newest"), &primary)
        .await
        .ok(200);
    assert_eq!(num(&latest["_embedded"]["entries"][0]["balance"]), "24.5");
    let next = latest["_links"]["next"]["href"]
        .as_str()
        .expect("a next page")
        .to_string();
    assert!(next.contains("order=newest"), "{next}");
    let earlier = server.get(&next, &primary).await.ok(200);
    assert_eq!(num(&earlier["_embedded"]["entries"][0]["balance"]), "30");
    assert!(earlier["_links"]["next"].is_null(), "{earlier}");
    server
        .get(&format!("{path}?order=sideways"), &primary)
        .await
        .validation(422, &["order"]);
    // Another primary may not.
    let stranger = server.open_primary().await;
    server.get(&path, &stranger).await.invalid_api_key();
}

#[tokio::test]
async fn the_family_as_of_a_sequence_number() {
    let server = Server::new();
    let primary = server.funded_primary("100").await;
    let sub = server.own_sub(&primary).await;
    let base = format!("/accounts/{}/subaccounts", primary.key);
    let statement = format!("/accounts/{}/statement", primary.key);
    let before = server.get(&statement, &primary).await.ok(200);
    let last_before = before["_embedded"]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|entry| entry["seq"].as_u64())
        .max()
        .expect("the top-up");
    server
        .balance_transfer(&primary, &primary, &sub, "40")
        .await
        .ok(200);
    let now = server.get(&base, &primary).await.ok(200);
    assert_eq!(num(&now["_embedded"]["primary_account"]["balance"]), "60");
    let then = server
        .get(&format!("{base}?seq={last_before}"), &primary)
        .await
        .ok(200);
    assert_eq!(num(&then["_embedded"]["primary_account"]["balance"]), "100");
    // The subaccount was created after the top-up: it was not part of the family then.
    assert_eq!(
        then["_embedded"]["subaccounts"].as_array().map(Vec::len),
        Some(0)
    );
    assert_eq!(num(&then["total_balance"]), "100");
    server
        .get(&format!("{base}?at=yesterday"), &primary)
        .await
        .validation(422, &["at"]);
}

#[tokio::test]
async fn charges_and_top_ups_are_reported_per_family() {
    let server = Server::new();
    let primary = server.funded_primary("100").await;
    let shared = server.shared_sub(&primary).await;
    server
        .admin(
            "POST",
            &format!("/admin/accounts/{}/charges", shared.key),
            r#"{"amount":2.5,"reference":"sms"}"#,
        )
        .await
        .ok(200);
    let charges = server
        .get(&format!("/accounts/{}/charges", primary.key), &primary)
        .await
        .ok(200);
    let list = charges["_embedded"]["charges"].as_array().expect("charges");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["api_key"], Value::String(shared.key.clone()));
    assert_eq!(list[0]["payer"], Value::String(primary.key.clone()));
    assert_eq!(num(&list[0]["amount"]), "2.5");
    let top_ups = server
        .get(&format!("/accounts/{}/top-ups", primary.key), &primary)
        .await
        .ok(200);
    assert_eq!(
        top_ups["_embedded"]["top_ups"].as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn a_batch_of_transfers_gets_one_outcome_each() {
    let server = Server::new();
    let primary = server.funded_primary("10").await;
    server.set_credit_limit(&primary.key, "-5").await;
    let sub = server.own_sub(&primary).await;
    let body = format!(
        r#"{{"transfers":[
            {{"type":"balance","from":"{p}","to":"{s}","amount":4}},
            {{"type":"balance","from":"{p}","to":"{s}","amount":20}},
            {{"type":"credit","from":"{p}","to":"{s}","amount":1}},
            {{"type":"balance","from":"{s}","to":"{p}","amount":0.5}}
        ]}}"#,
        p = primary.key,
        s = sub.key
    );
    let path = format!("/accounts/{}/batch-transfers", primary.key);
    let answer = server.post(&path, &primary, &body).await.ok(200);
    let statuses: Vec<u64> = answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|result| result["status"].as_u64())
        .collect();
    assert_eq!(statuses, vec![200, 403, 200, 200]);
    assert_eq!(
        answer["results"][1]["problem"]["title"],
        "Transfer amount is invalid"
    );
    assert_eq!(server.balance(&sub.key).as_deref(), Some("3.5"));
    // A batch item has exactly the shape of a single transfer's answer.
    let single = server
        .balance_transfer(&primary, &primary, &sub, "0.01")
        .await
        .ok(200);
    let item = &answer["results"][0]["transfer"];
    assert_eq!(keys(item), keys(&single));
    assert_eq!(num(&item["amount"]), "4");
    assert_timestamp(&item["created_at"]);
    // Compact answers: statuses and ids only.
    let compact_body = format!(
        r#"{{"transfers":[{{"type":"balance","from":"{p}","to":"{s}","amount":0.01}},{{"type":"balance","from":"{p}","to":"{s}","amount":1000}}]}}"#,
        p = primary.key,
        s = sub.key
    );
    let compact = server
        .post(&format!("{path}?compact=true"), &primary, &compact_body)
        .await
        .ok(200);
    assert_keys(&compact["results"][0], &["id", "status"]);
    assert_uuid(&compact["results"][0]["id"]);
    assert_eq!(compact["results"][1]["status"], 403);
    server
        .post(&format!("{path}?compact=maybe"), &primary, &compact_body)
        .await
        .validation(422, &["compact"]);
    let invalid = server
        .post(
            &path,
            &primary,
            r#"{"transfers":[{"type":"sideways","from":"x","to":"y","amount":"1"}]}"#,
        )
        .await;
    let problem = invalid.validation(
        422,
        &[
            "transfers[0].type",
            "transfers[0].from",
            "transfers[0].to",
            "transfers[0].amount",
        ],
    );
    assert!(problem.is_object());
    server
        .post(&path, &primary, r#"{"transfers":[]}"#)
        .await
        .validation(422, &["transfers"]);
}

#[tokio::test]
async fn low_balance_alerts_arrive_on_the_event_stream() {
    let server = Server::new();
    let primary = server.funded_primary("100").await;
    let running = Running::start(&server).await;
    server
        .admin(
            "PUT",
            &format!("/admin/accounts/{}/low-balance-threshold", primary.key),
            r#"{"threshold":50}"#,
        )
        .await
        .ok(200);
    let mut stream = tokio::net::TcpStream::connect(running.addr)
        .await
        .expect("connect");
    let since = 0;
    let request = request_text(
        "GET",
        &format!("/accounts/{}/events?since={since}", primary.key),
        Some(&primary.authorization()),
        &[],
        "",
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    server
        .admin(
            "POST",
            &format!("/admin/accounts/{}/charges", primary.key),
            r#"{"amount":60}"#,
        )
        .await
        .ok(200);
    let mut received = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !received.contains("event: low_balance_alert") {
        let mut buffer = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buffer))
            .await
            .expect("the alert arrives in time")
            .expect("read");
        assert!(read > 0, "the stream closed: {received}");
        received.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(received
        .to_ascii_lowercase()
        .contains("content-type: text/event-stream"));
    // From the beginning: the opening, the top-up, the threshold, the charge, the alert, in order.
    let kinds: Vec<&str> = received
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert_eq!(
        kinds,
        vec![
            "primary_opened",
            "topped_up",
            "low_balance_threshold_set",
            "charged",
            "low_balance_alert"
        ]
    );
    let ids: Vec<u64> = received
        .lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .filter_map(|id| id.parse().ok())
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    assert!(received.contains("\"available\":\"40\""), "{received}");
    drop(stream);
    running.stop().await;
}

#[tokio::test]
async fn a_batch_of_charges_gets_one_outcome_each() {
    let server = Server::new();
    let primary = server.funded_primary("10").await;
    let shared = server.shared_sub(&primary).await;
    let body = format!(
        r#"{{"charges":[{{"account":"{s}","amount":4}},{{"account":"{p}","amount":7}},{{"account":"{s}","amount":1.5,"reference":"sms"}}]}}"#,
        s = shared.key,
        p = primary.key
    );
    let answer = server
        .admin("POST", "/admin/batch-charges", &body)
        .await
        .ok(200);
    let statuses: Vec<u64> = answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|result| result["status"].as_u64())
        .collect();
    assert_eq!(statuses, vec![200, 403, 200], "{answer}");
    assert_eq!(server.balance(&primary.key).as_deref(), Some("4.5"));
    server
        .admin(
            "POST",
            "/admin/batch-charges",
            r#"{"charges":[{"account":"nope","amount":-1}]}"#,
        )
        .await
        .validation(422, &["charges[0].account"]);
}

#[tokio::test]
async fn connections_beyond_the_bound_wait_for_a_free_slot() {
    use subledger_server::limit::LimitedListener;
    let server = Server::new();
    let primary = server.open_primary().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = subledger_server::app(std::sync::Arc::clone(&server.state));
    tokio::spawn(async move {
        let app = axum::ServiceExt::<axum::extract::Request>::into_make_service(app);
        let _ = axum::serve(LimitedListener::new(listener, 1), app).await;
    });
    // The first connection is open (and idle): it holds the only slot.
    let holder = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let authorization = primary.authorization();
    let waiting = tokio::spawn(async move {
        http(
            addr,
            "GET",
            "/account/get-balance",
            Some(&authorization),
            "",
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the second connection must wait for a slot"
    );
    drop(holder);
    let answered = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered once the slot frees")
        .expect("task")
        .expect("response");
    assert_eq!(answered.status, 200);
}
