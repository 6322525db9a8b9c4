//! `Idempotency-Key`: a retry with the same body gets the original response and changes
//! nothing; the same key with another body is `409 idempotency-conflict`.

use crate::support::*;

async fn keyed(server: &Server, creds: &Creds, path: &str, key: &str, body: &str) -> Resp {
    server
        .req("POST", path)
        .basic(creds)
        .header("idempotency-key", key)
        .body(body)
        .send()
        .await
}

#[tokio::test]
async fn transfer_retries_return_the_original_and_apply_once() {
    let server = Server::new();
    let primary = server.funded_primary("100").await;
    let sub = server.own_sub(&primary).await;
    let path = format!("/accounts/{}/balance-transfers", primary.key);
    let body = format!(
        r#"{{"from":"{}","to":"{}","amount":60.5,"reference":"order 7"}}"#,
        primary.key, sub.key
    );

    let first = keyed(&server, &primary, &path, "retry-1", &body).await;
    let original = first.ok(200);
    assert_eq!(server.balance(&sub.key).as_deref(), Some("60.5"));
    // Spend the rest, so that a fresh transfer of 60.5 would now be refused.
    server
        .balance_transfer(&primary, &primary, &sub, "39.5")
        .await
        .ok(200);
    for _ in 0..3 {
        let again = keyed(&server, &primary, &path, "retry-1", &body).await;
        assert_eq!(again.status, 200, "{}", again.text);
        assert_eq!(again.text, first.text);
    }
    // Key order and spacing do not make it another request.
    let reordered = format!(
        r#"{{ "reference": "order 7", "amount": 60.50, "to": "{}", "from": "{}" }}"#,
        sub.key, primary.key
    );
    let again = keyed(&server, &primary, &path, "retry-1", &reordered).await;
    assert_eq!(again.ok(200)["id"], original["id"]);
    assert_eq!(server.balance(&sub.key).as_deref(), Some("100"));
    assert_eq!(server.balance(&primary.key).as_deref(), Some("0"));

    // The same key with other content: a conflict, nothing changes.
    for other in [
        format!(
            r#"{{"from":"{}","to":"{}","amount":60.4,"reference":"order 7"}}"#,
            primary.key, sub.key
        ),
        format!(
            r#"{{"from":"{}","to":"{}","amount":60.5,"reference":"order 8"}}"#,
            primary.key, sub.key
        ),
        format!(
            r#"{{"from":"{}","to":"{}","amount":60.5,"reference":"order 7"}}"#,
            sub.key, primary.key
        ),
    ] {
        keyed(&server, &primary, &path, "retry-1", &other)
            .await
            .problem(409, "idempotency-conflict", "Conflict");
    }
    assert_eq!(server.balance(&sub.key).as_deref(), Some("100"));
    let list = server.get(&path, &primary).await.ok(200);
    let items = list["_embedded"]["balance_transfers"]
        .as_array()
        .expect("array");
    assert_eq!(items.len(), 2);
    assert_eq!(items[1], original);

    // A credit transfer with the same key is another operation.
    server.set_credit_limit(&primary.key, "-10").await;
    let credit = keyed(
        &server,
        &primary,
        &format!("/accounts/{}/credit-transfers", primary.key),
        "retry-1",
        &transfer_body(&primary, &sub, "1"),
    )
    .await
    .ok(200);
    assert_ne!(credit["id"], original["id"]);
    // Keys are scoped to the caller: another primary's "retry-1" is its own.
    let other = server.funded_primary("5").await;
    let other_sub = server.own_sub(&other).await;
    let theirs = keyed(
        &server,
        &other,
        &format!("/accounts/{}/balance-transfers", other.key),
        "retry-1",
        &transfer_body(&other, &other_sub, "5"),
    )
    .await
    .ok(200);
    assert_ne!(theirs["id"], original["id"]);
    assert_eq!(server.balance(&other_sub.key).as_deref(), Some("5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_apply_once() {
    let server = Server::new();
    let primary = server.funded_primary("100").await;
    let sub = server.own_sub(&primary).await;
    let path = format!("/accounts/{}/balance-transfers", primary.key);
    let body = transfer_body(&primary, &sub, "0.1");
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (server, primary, path, body) =
            (server.clone(), primary.clone(), path.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            keyed(&server, &primary, &path, "same-everywhere", &body).await
        }));
    }
    let mut texts = Vec::new();
    for task in tasks {
        let response = task.await.expect("task");
        assert_eq!(response.status, 200, "{}", response.text);
        texts.push(response.text);
    }
    assert!(texts.iter().all(|text| *text == texts[0]), "{texts:#?}");
    assert_eq!(server.balance(&sub.key).as_deref(), Some("0.1"));
    assert_eq!(server.balance(&primary.key).as_deref(), Some("99.9"));
}

#[tokio::test]
async fn admin_money_retries_are_replayed() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let path = format!("/admin/accounts/{}/top-ups", primary.key);
    let send = |body: &'static str| {
        let server = server.clone();
        let path = path.clone();
        async move {
            server
                .req("POST", &path)
                .admin()
                .header("idempotency-key", "payment-42")
                .body(body)
                .send()
                .await
        }
    };
    let first = send(r#"{"amount":25,"reference":"wire"}"#).await.ok(200);
    assert_eq!(first["replayed"], false);
    let second = send(r#"{"amount":25,"reference":"wire"}"#).await.ok(200);
    assert_eq!(second["replayed"], true);
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["created_at"], first["created_at"]);
    assert_eq!(server.balance(&primary.key).as_deref(), Some("25"));
    send(r#"{"amount":26,"reference":"wire"}"#).await.problem(
        409,
        "idempotency-conflict",
        "Conflict",
    );
    assert_eq!(server.balance(&primary.key).as_deref(), Some("25"));

    // Charges too.
    let charge = |amount: &'static str| {
        let server = server.clone();
        let key = primary.key.clone();
        async move {
            server
                .req("POST", &format!("/admin/accounts/{key}/charges"))
                .admin()
                .header("idempotency-key", "usage-1")
                .body(format!(r#"{{"amount":{amount}}}"#))
                .send()
                .await
        }
    };
    let first = charge("2.5").await.ok(200);
    let second = charge("2.5").await.ok(200);
    assert_eq!(first["id"], second["id"]);
    assert_eq!(second["replayed"], true);
    charge("3")
        .await
        .problem(409, "idempotency-conflict", "Conflict");
    assert_eq!(server.balance(&primary.key).as_deref(), Some("22.5"));
}

#[tokio::test]
async fn subaccount_and_secret_creation_retries_are_remembered() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let base = format!("/accounts/{}/subaccounts", primary.key);
    let first = keyed(&server, &primary, &base, "new-sub", r#"{"name":"once"}"#).await;
    let created = first.ok(200);
    let again = keyed(&server, &primary, &base, "new-sub", r#"{"name":"once"}"#).await;
    assert_eq!(again.status, 200);
    // The replay is the same subaccount, without the generated secret: it is shown once, and
    // never kept in memory for replays.
    let mut expected = created.clone();
    expected.as_object_mut().expect("object").remove("secret");
    assert!(created
        .get("secret")
        .is_some_and(serde_json::Value::is_string));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&again.text).expect("json"),
        expected
    );
    keyed(&server, &primary, &base, "new-sub", r#"{"name":"twice"}"#)
        .await
        .problem(409, "idempotency-conflict", "Conflict");
    let list = server.get(&base, &primary).await.ok(200);
    let subs = list["_embedded"]["subaccounts"].as_array().expect("array");
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["api_key"], created["api_key"]);
    // Without a key, the same body makes another subaccount.
    server.create_sub(&primary, r#"{"name":"once"}"#).await;

    let secrets = format!("/accounts/{}/secrets", primary.key);
    let first = keyed(
        &server,
        &primary,
        &secrets,
        "new-secret",
        r#"{"secret":"Second2Secret"}"#,
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = keyed(
        &server,
        &primary,
        &secrets,
        "new-secret",
        r#"{"secret":"Second2Secret"}"#,
    )
    .await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.text, first.text);
    keyed(
        &server,
        &primary,
        &secrets,
        "new-secret",
        r#"{"secret":"Third3Secret"}"#,
    )
    .await
    .problem(409, "idempotency-conflict", "Conflict");
    let list = server.get(&secrets, &primary).await.ok(200);
    assert_eq!(
        list["_embedded"]["secrets"].as_array().map(Vec::len),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_subaccount_creation_retries_create_one() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let base = format!("/accounts/{}/subaccounts", primary.key);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (server, primary, base) = (server.clone(), primary.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            keyed(&server, &primary, &base, "one-only", r#"{"name":"one"}"#).await
        }));
    }
    let mut keys = Vec::new();
    for task in tasks {
        let response = task.await.expect("task");
        keys.push(response.ok(200)["api_key"].clone());
    }
    let list = server.get(&base, &primary).await.ok(200);
    assert_eq!(
        list["_embedded"]["subaccounts"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    assert!(keys.iter().all(|key| *key == keys[0]), "{keys:?}");
}
