//! Zero-downtime secret rotation: add a second secret, move the clients, revoke the first —
//! while clients keep sending requests. No request may fail, and a revoked secret is refused
//! at once (the credential cache must not outlive a revocation).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::support::*;

const CLIENTS: usize = 3;
const ROTATIONS: u64 = 3;

#[derive(Debug, Default)]
struct Client {
    /// The credential generation of the last request this client completed.
    generation: AtomicU64,
    completed: AtomicUsize,
}

async fn wait_until(condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the clients"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_never_fails_a_request() {
    let server = Server::new();
    let primary = server.funded_primary("100").await;
    let sub = server.shared_sub(&primary).await;
    let secrets = format!("/accounts/{}/secrets", primary.key);
    let list = server.get(&secrets, &primary).await.ok(200);
    let mut current_id = text(&list["_embedded"]["secrets"][0]["id"]);

    let slot = Arc::new(RwLock::new((0_u64, primary.clone())));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Arc<Vec<Client>> = Arc::new((0..CLIENTS).map(|_| Client::default()).collect());
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for index in 0..CLIENTS {
        let (server, slot, stop, clients, failures) = (
            server.clone(),
            Arc::clone(&slot),
            Arc::clone(&stop),
            Arc::clone(&clients),
            Arc::clone(&failures),
        );
        let sub = sub.clone();
        tasks.push(tokio::spawn(async move {
            let mut round = 0_usize;
            while !stop.load(Ordering::SeqCst) {
                let (generation, creds) = slot.read().expect("slot").clone();
                round += 1;
                let path = match (index + round) % 3 {
                    0 => format!("/accounts/{}/subaccounts", creds.key),
                    1 => "/account/get-balance".to_string(),
                    _ => format!("/accounts/{}/subaccounts/{}", creds.key, sub.key),
                };
                let response = server.get(&path, &creds).await;
                if response.status != 200 {
                    failures.lock().expect("failures").push(format!(
                        "client {index} generation {generation} {path}: {} {}",
                        response.status, response.text
                    ));
                }
                let client = &clients[index];
                client.generation.store(generation, Ordering::SeqCst);
                client.completed.fetch_add(1, Ordering::SeqCst);
                // A cached credential answers without ever waiting: yield, so that the workers
                // also drive the timers the test waits on.
                tokio::task::yield_now().await;
            }
        }));
    }

    wait_until(|| {
        clients
            .iter()
            .all(|client| client.completed.load(Ordering::SeqCst) >= 3)
    })
    .await;
    let mut old = primary.clone();
    for generation in 1..=ROTATIONS {
        // 1. add a second secret
        let secret = format!("Rotation{generation}Secret");
        let created = server
            .post(&secrets, &old, &format!(r#"{{"secret":"{secret}"}}"#))
            .await;
        assert_eq!(created.status, 201, "{}", created.text);
        let new_id = text(&created.json()["id"]);
        let new = primary.with_secret(&secret);
        // 2. move every client to it, and wait until none still uses the old one
        *slot.write().expect("slot") = (generation, new.clone());
        wait_until(|| {
            clients
                .iter()
                .all(|client| client.generation.load(Ordering::SeqCst) == generation)
        })
        .await;
        // The old secret was in use until just now (so it is in the credential cache).
        server.get("/account/get-balance", &old).await.ok(200);
        // 3. revoke the old one
        let revoked = server
            .delete(&format!("{secrets}/{current_id}"), &new)
            .await;
        assert_eq!(revoked.status, 204, "{}", revoked.text);
        // Refused at once, whatever it was cached for.
        server
            .get("/account/get-balance", &old)
            .await
            .unauthorized();
        server
            .get(&format!("/accounts/{}/subaccounts", primary.key), &old)
            .await
            .unauthorized();
        let completed: usize = clients
            .iter()
            .map(|client| client.completed.load(Ordering::SeqCst))
            .sum();
        wait_until(|| {
            clients
                .iter()
                .map(|client| client.completed.load(Ordering::SeqCst))
                .sum::<usize>()
                >= completed + 3 * CLIENTS
        })
        .await;
        current_id = new_id;
        old = new;
    }
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("client task");
    }
    let failures = failures.lock().expect("failures").clone();
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    let total: usize = clients
        .iter()
        .map(|client| client.completed.load(Ordering::SeqCst))
        .sum();
    assert!(total >= 30, "only {total} requests");
    let list = server.get(&secrets, &old).await.ok(200);
    assert_eq!(
        list["_embedded"]["secrets"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(list["_embedded"]["secrets"][0]["id"], current_id.as_str());
}

#[tokio::test]
async fn a_revoked_secret_is_refused_even_right_after_a_cached_success() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let sub = server.own_sub(&primary).await;
    let path = format!("/accounts/{}/secrets", sub.key);
    let list = server.get(&path, &sub).await.ok(200);
    let first = text(&list["_embedded"]["secrets"][0]["id"]);
    let second = sub.with_secret("Second2Secret");
    assert_eq!(
        server
            .post(&path, &sub, r#"{"secret":"Second2Secret"}"#)
            .await
            .status,
        201
    );
    // Both cached.
    for _ in 0..3 {
        server.get(&path, &sub).await.ok(200);
        server.get(&path, &second).await.ok(200);
    }
    // The primary revokes the subaccount's first secret.
    let revoked = server.delete(&format!("{path}/{first}"), &primary).await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    server.get(&path, &sub).await.unauthorized();
    server.get(&path, &second).await.ok(200);
    // Adding the same plaintext again makes a new secret, which works.
    let again = server
        .post(&path, &second, &format!(r#"{{"secret":"{}"}}"#, sub.secret))
        .await;
    assert_eq!(again.status, 201, "{}", again.text);
    server.get(&path, &sub).await.ok(200);
}
