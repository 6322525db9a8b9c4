//! Through a real socket: `serve` on 127.0.0.1 and a hand-written HTTP/1.1 client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use subledger_engine::Config;
use subledger_server::ServerConfig;
use tokio::io::AsyncWriteExt as _;

use crate::support::*;

fn admin() -> Option<&'static str> {
    Some("Bearer test-admin-token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_a_real_socket() {
    let server = Server::new();
    let running = Running::start(&server).await;
    let addr = running.addr;

    let health = http(addr, "GET", "/healthz", None, "")
        .await
        .expect("healthz");
    assert_eq!(health.ok(200)["status"], "ok");

    let opened = http(
        addr,
        "POST",
        "/admin/primaries",
        admin(),
        r#"{"name":"socket"}"#,
    )
    .await
    .expect("open")
    .ok(200);
    let primary = Creds::new(&text(&opened["api_key"]), &text(&opened["secret"]));
    let auth = primary.authorization();
    let auth = Some(auth.as_str());
    http(
        addr,
        "POST",
        &format!("/admin/accounts/{}/top-ups", primary.key),
        admin(),
        r#"{"amount":10}"#,
    )
    .await
    .expect("top up")
    .ok(200);
    let created = http(
        addr,
        "POST",
        &format!("/accounts/{}/subaccounts", primary.key),
        auth,
        r#"{"name":"over tcp","use_primary_account_balance":false}"#,
    )
    .await
    .expect("create")
    .ok(200);
    let sub = Creds::new(&text(&created["api_key"]), &text(&created["secret"]));

    let transfer = http(
        addr,
        "POST",
        &format!("/accounts/{}/balance-transfers", primary.key),
        auth,
        &transfer_body(&primary, &sub, "0.1"),
    )
    .await
    .expect("transfer");
    assert!(
        transfer.text.contains(r#""amount":0.1"#),
        "{}",
        transfer.text
    );
    let transfer = transfer.ok(200);
    assert_timestamp(&transfer["created_at"]);

    let list = http(
        addr,
        "GET",
        &format!("/accounts/{}/subaccounts", primary.key),
        auth,
        "",
    )
    .await
    .expect("list")
    .ok(200);
    assert_eq!(num(&list["total_balance"]), "10");
    assert_eq!(num(&list["_embedded"]["primary_account"]["balance"]), "9.9");
    assert_eq!(num(&list["_embedded"]["subaccounts"][0]["balance"]), "0.1");

    let sub_auth = sub.authorization();
    let balance = http(addr, "GET", "/account/get-balance", Some(&sub_auth), "")
        .await
        .expect("balance")
        .ok(200);
    assert_eq!(num(&balance["value"]), "0.1");

    let transfers = http(
        addr,
        "GET",
        &format!(
            "/accounts/{}/balance-transfers?subaccount={}&page_size=1",
            primary.key, sub.key
        ),
        auth,
        "",
    )
    .await
    .expect("transfers")
    .ok(200);
    assert_eq!(transfers["_embedded"]["balance_transfers"][0], transfer);

    let created = http(
        addr,
        "POST",
        &format!("/accounts/{}/secrets", sub.key),
        Some(&sub_auth),
        r#"{"secret":"Socket1Secret"}"#,
    )
    .await
    .expect("secret");
    assert_eq!(created.status, 201, "{}", created.text);
    assert!(!created.text.contains("Socket1Secret"));

    // Errors are problem bodies over the wire too.
    let refused = http(
        addr,
        "GET",
        &format!("/accounts/{}/subaccounts", primary.key),
        None,
        "",
    )
    .await
    .expect("refused");
    refused.unauthorized();
    http(addr, "GET", "/no/such/route", auth, "")
        .await
        .expect("404")
        .problem(404, "not-found", "Not Found");
    http(
        addr,
        "POST",
        &format!("/accounts/{}/balance-transfers", primary.key),
        auth,
        "{not json",
    )
    .await
    .expect("400")
    .problem(400, "bad-request", "Bad Request");
    http(
        addr,
        "POST",
        &format!("/accounts/{}/balance-transfers", primary.key),
        auth,
        &transfer_body(&primary, &sub, "0.000000001"),
    )
    .await
    .expect("422")
    .validation(422, &["amount"]);

    let metrics = http(addr, "GET", "/metrics", None, "")
        .await
        .expect("metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text.contains("subledger_http_requests_total{"),
        "{}",
        metrics.text
    );

    running.stop().await;
    // Stopped: nobody listens any more.
    assert!(http(addr, "GET", "/healthz", None, "").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_over_sockets_balance_exactly() {
    const TASKS: usize = 8;
    const TRANSFERS: usize = 25;
    let server = Server::new();
    let primary = server.funded_primary("1000").await;
    let mut subs = Vec::new();
    for _ in 0..4 {
        subs.push(server.own_sub(&primary).await);
    }
    let running = Running::start(&server).await;
    let addr = running.addr;
    let path = format!("/accounts/{}/balance-transfers", primary.key);
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (primary, sub, path) = (primary.clone(), subs[task % 4].clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            let auth = primary.authorization();
            let mut ids = Vec::new();
            for round in 0..TRANSFERS {
                // Four out, then one back: 20 × 0.35 out and 5 × 0.1 back per task.
                let body = if round % 5 == 4 {
                    transfer_body(&sub, &primary, "0.1")
                } else {
                    transfer_body(&primary, &sub, "0.35")
                };
                let response = http(addr, "POST", &path, Some(&auth), &body)
                    .await
                    .expect("a response");
                let value = response.ok(200);
                ids.push(text(&value["id"]));
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.expect("client task"));
    }
    running.stop().await;

    assert_eq!(ids.len(), TASKS * TRANSFERS);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), TASKS * TRANSFERS, "transfer ids are unique");
    // Two tasks per subaccount: 2 × (7 − 0.5) = 13 each.
    for sub in &subs {
        assert_eq!(server.balance(&sub.key).as_deref(), Some("13"));
    }
    assert_eq!(server.balance(&primary.key).as_deref(), Some("948"));
    let page = server.get(&path, &primary).await.ok(200);
    let listed = page["_embedded"]["balance_transfers"]
        .as_array()
        .expect("array");
    assert_eq!(listed.len(), TASKS * TRANSFERS);
    let mut listed_ids: Vec<String> = listed.iter().map(|item| text(&item["id"])).collect();
    listed_ids.sort();
    assert_eq!(listed_ids, ids);
    let list = server
        .get(&format!("/accounts/{}/subaccounts", primary.key), &primary)
        .await
        .ok(200);
    assert_eq!(num(&list["total_balance"]), "1000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_a_request_in_flight() {
    let (server, mut running, primary, sub) = running_with(server_config()).await;
    // Headers and part of the body are sent; the handler is waiting for the rest.
    let (mut stream, path, rest) = half_sent_transfer(&running, &primary, &sub).await;
    stream.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(300)).await;

    running.trigger_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !running.handle.is_finished(),
        "serve returned with a request in flight"
    );
    stream.write_all(&rest).await.expect("write the rest");
    let response = read_response(&mut stream, &path).await.expect("response");
    let transfer = response.ok(200);
    running.stop().await;

    assert_eq!(server.balance(&sub.key).as_deref(), Some("2.5"));
    let list = server.get(&path, &primary).await.ok(200);
    assert_eq!(list["_embedded"]["balance_transfers"][0], transfer);
}

/// A running server with these settings and a funded primary with an own-balance subaccount.
async fn running_with(config: ServerConfig) -> (Server, Running, Creds, Creds) {
    let server = Server::configured(
        subledger_engine::Ledger::in_memory(subledger_engine::Config::default())
            .expect("in-memory ledger"),
        config,
    );
    let primary = server.funded_primary("10").await;
    let sub = server.own_sub(&primary).await;
    let running = Running::start(&server).await;
    (server, running, primary, sub)
}

/// A transfer of 2.5 from `primary` to `sub` whose head and first 10 body bytes are sent, then
/// nothing: its handler waits for the rest. Returns the connection, the request's path and the
/// bytes not sent.
async fn half_sent_transfer(
    running: &Running,
    primary: &Creds,
    sub: &Creds,
) -> (tokio::net::TcpStream, String, Vec<u8>) {
    let path = format!("/accounts/{}/balance-transfers", primary.key);
    let request = request_text(
        "POST",
        &path,
        Some(&primary.authorization()),
        &[],
        &transfer_body(primary, sub, "2.5"),
    );
    let split = request.find("\r\n\r\n").expect("head") + 4 + 10;
    let mut stream = tokio::net::TcpStream::connect(running.addr)
        .await
        .expect("connect");
    stream
        .write_all(&request.as_bytes()[..split])
        .await
        .expect("write head");
    (stream, path, request.as_bytes()[split..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_its_time_is_answered_503_and_changes_nothing() {
    let (server, running, primary, sub) = running_with(ServerConfig {
        request_timeout: Duration::from_millis(300),
        ..server_config()
    })
    .await;
    let (mut stream, path, _) = half_sent_transfer(&running, &primary, &sub).await;
    let started = tokio::time::Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream, &path))
        .await
        .expect("an answer within the test's patience")
        .expect("response");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(response.status, 503, "{}", response.text);
    let problem = response.json();
    assert_eq!(
        problem["type"],
        format!("{PROBLEM_BASE}#timeout"),
        "{problem}"
    );
    assert_eq!(problem["instance"], path.as_str(), "{problem}");
    assert_eq!(server.balance(&sub.key).as_deref(), Some("0"));
    // Counted under its route, though the route never answered.
    let metrics = server.req("GET", "/metrics").send().await;
    assert!(
        metrics.text.lines().any(|line| line
            == r#"subledger_http_requests_total{method="POST",route="/accounts/{primary}/balance-transfers",status="503"} 1"#),
        "{}",
        metrics.text
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_in_flight_limit_wait_but_health_checks_do_not() {
    let (server, running, primary, sub) = running_with(ServerConfig {
        request_timeout: Duration::from_millis(600),
        requests_in_flight_max: 1,
        ..server_config()
    })
    .await;
    // The only turn is taken by a request whose body stops halfway.
    let (mut holder, path, _) = half_sent_transfer(&running, &primary, &sub).await;
    let held = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The health check answers at once all the same.
    let health = http(running.addr, "GET", "/healthz", None, "")
        .await
        .expect("health");
    assert_eq!(health.status, 200, "{}", health.text);
    assert!(held.elapsed() < Duration::from_millis(500));

    // An API request waits for the turn: it is answered only once the holder has timed out.
    let list = http(
        running.addr,
        "GET",
        &format!("/accounts/{}/subaccounts", primary.key),
        Some(&primary.authorization()),
        "",
    )
    .await
    .expect("list");
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(
        held.elapsed() >= Duration::from_millis(550),
        "{:?}",
        held.elapsed()
    );
    let timed_out = read_response(&mut holder, &path).await.expect("response");
    assert_eq!(timed_out.status, 503, "{}", timed_out.text);
    assert_eq!(server.balance(&sub.key).as_deref(), Some("0"));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_loses_no_acknowledged_transfer() {
    const CLIENTS: usize = 6;
    // A small group-commit wait keeps requests in flight inside the writer.
    let server = Server::with_engine(Config {
        batch_wait: Duration::from_millis(3),
        ..Config::default()
    });
    let primary = server.funded_primary("100000").await;
    let sub = server.own_sub(&primary).await;
    let mut running = Running::start(&server).await;
    let addr = running.addr;
    let path = format!("/accounts/{}/balance-transfers", primary.key);
    let acknowledged = Arc::new(Mutex::new(Vec::<Value>::new()));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (primary, sub, path, acknowledged) = (
            primary.clone(),
            sub.clone(),
            path.clone(),
            Arc::clone(&acknowledged),
        );
        tasks.push(tokio::spawn(async move {
            let auth = primary.authorization();
            let mut attempts = 0_usize;
            loop {
                attempts += 1;
                match http(
                    addr,
                    "POST",
                    &path,
                    Some(&auth),
                    &transfer_body(&primary, &sub, "1"),
                )
                .await
                {
                    Ok(response) if response.status == 200 => {
                        acknowledged.lock().expect("lock").push(response.json());
                    }
                    Ok(response) => {
                        // Anything but a success must be a problem body, never a 5xx.
                        assert!(
                            response.status < 500,
                            "{} {}",
                            response.status,
                            response.text
                        );
                    }
                    // Refused or cut off by the shutdown.
                    Err(_) => return attempts,
                }
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while acknowledged.lock().expect("lock").len() < 40 {
        assert!(tokio::time::Instant::now() < deadline, "too slow");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    running.trigger_shutdown();
    let mut attempts = 0;
    for task in tasks {
        attempts += tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("clients stop after shutdown")
            .expect("client task");
    }
    running.stop().await;

    let acknowledged = acknowledged.lock().expect("lock").clone();
    let page = server
        .get(&format!("{path}?page_size=1000"), &primary)
        .await
        .ok(200);
    let listed = page["_embedded"]["balance_transfers"]
        .as_array()
        .expect("array")
        .clone();
    // Every acknowledged transfer is in the ledger, exactly as answered.
    for transfer in &acknowledged {
        assert!(
            listed.contains(transfer),
            "acknowledged transfer {transfer} is missing"
        );
    }
    // Nothing more than was attempted, and balances agree with the history.
    assert!(listed.len() >= acknowledged.len());
    assert!(listed.len() <= attempts);
    let moved = listed.len();
    assert_eq!(
        server.balance(&sub.key),
        Some(moved.to_string()),
        "balance vs history"
    );
    assert_eq!(
        server.balance(&primary.key),
        Some((100_000 - moved).to_string())
    );
}

/// Sends one request from a chosen loopback source address.
async fn from_address(
    source: &str,
    addr: std::net::SocketAddr,
    path: &str,
    authorization: &str,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("address"))
        .expect("bind the source");
    let mut stream = socket.connect(addr).await.expect("connect");
    stream
        .write_all(request_text("GET", path, Some(authorization), &[], "").as_bytes())
        .await
        .expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    parse_response(&raw, path).expect("response").status
}

#[tokio::test]
async fn failed_logins_from_one_address_do_not_lock_the_owner_out_elsewhere() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let running = Running::start(&server).await;
    let wrong = primary.with_secret("Wrong9Secret").authorization();
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses
            .push(from_address("127.0.0.2", running.addr, "/account/get-balance", &wrong).await);
    }
    assert_eq!(statuses[..10], [401; 10]);
    assert_eq!(statuses[10], 429, "the attacker's address is blocked");
    // The owner, from another address, is not.
    let status = from_address(
        "127.0.0.1",
        running.addr,
        "/account/get-balance",
        &primary.authorization(),
    )
    .await;
    assert_eq!(status, 200);
    // A client cannot choose the address it is counted under.
    let spoofed = server
        .req("GET", "/account/get-balance")
        .header("authorization", &primary.authorization())
        .header("x-subledger-peer", "127.0.0.9")
        .send()
        .await;
    assert_eq!(spoofed.status, 200);
    running.stop().await;
}
