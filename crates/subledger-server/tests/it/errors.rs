//! Every error row of SPEC §8's table, and hostile bodies: always a 4xx problem body, never a
//! 5xx, never a changed balance.

use subledger_core::Policy;
use subledger_engine::Config;

use crate::support::*;

#[tokio::test]
async fn bad_or_missing_credentials_are_401_problems() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let sub = server.shared_sub(&primary).await;
    let paths = [
        format!("/accounts/{}/subaccounts", primary.key),
        format!("/accounts/{}/subaccounts/{}", primary.key, sub.key),
        format!("/accounts/{}/balance-transfers", primary.key),
        format!("/accounts/{}/credit-transfers", primary.key),
        format!("/accounts/{}/secrets", primary.key),
        "/account/get-balance".to_string(),
    ];
    for path in &paths {
        // No credentials.
        server.req("GET", path).send().await.unauthorized();
        // Not Basic.
        server
            .req("GET", path)
            .header("authorization", "Bearer not-the-admin-token")
            .send()
            .await
            .unauthorized();
        // Not base64, no colon.
        server
            .req("GET", path)
            .header("authorization", "Basic %%%")
            .send()
            .await
            .unauthorized();
        server
            .req("GET", path)
            .header("authorization", &format!("Basic {}", "bm9jb2xvbg=="))
            .send()
            .await
            .unauthorized();
        // An unknown key.
        server
            .req("GET", path)
            .header("authorization", &basic("zzzzzzzz", "Some1Secret"))
            .send()
            .await
            .unauthorized();
    }
    // A wrong secret (a few: failed attempts are limited per key).
    server
        .get(&paths[0], &primary.with_secret("Wrong1Secret"))
        .await
        .unauthorized();
    server
        .get(&paths[1], &sub.with_secret(&primary.secret))
        .await
        .unauthorized();
    // A POST with bad credentials changes nothing.
    server
        .post(
            &format!("/accounts/{}/subaccounts", primary.key),
            &primary.with_secret("Wrong1Secret"),
            r#"{"name":"x"}"#,
        )
        .await
        .unauthorized();
    let list = server
        .get(&format!("/accounts/{}/subaccounts", primary.key), &primary)
        .await
        .ok(200);
    assert_eq!(
        list["_embedded"]["subaccounts"].as_array().map(Vec::len),
        Some(1)
    );
    // An oversized Authorization header is refused, not parsed.
    let long = format!("Basic {}", "A".repeat(4096));
    server
        .req("GET", &paths[0])
        .header("authorization", &long)
        .send()
        .await
        .unauthorized();
}

#[tokio::test]
async fn repeated_failures_are_throttled_per_key() {
    let server = Server::new();
    let victim = server.open_primary().await;
    let bystander = server.open_primary().await;
    let path = format!("/accounts/{}/subaccounts", victim.key);
    for _ in 0..subledger_server::auth::AUTH_FAILURES_MAX {
        server
            .get(&path, &victim.with_secret("Wrong1Secret"))
            .await
            .unauthorized();
    }
    server
        .get(&path, &victim.with_secret("Wrong1Secret"))
        .await
        .problem(429, "too-many-attempts", "Too Many Requests");
    // Other keys are not affected.
    server
        .get(
            &format!("/accounts/{}/subaccounts", bystander.key),
            &bystander,
        )
        .await
        .ok(200);
}

#[tokio::test]
async fn unknown_or_foreign_keys_in_the_path_are_404() {
    let server = Server::new();
    let primary = server.funded_primary("10").await;
    let sub = server.own_sub(&primary).await;
    for key in ["zzzzzzzz", "NOT-A-KEY", "abc"] {
        server
            .get(&format!("/accounts/{key}/subaccounts"), &primary)
            .await
            .invalid_api_key();
        server
            .get(&format!("/accounts/{key}/balance-transfers"), &primary)
            .await
            .invalid_api_key();
        server
            .post(
                &format!("/accounts/{key}/balance-transfers"),
                &primary,
                &transfer_body(&primary, &sub, "1"),
            )
            .await
            .invalid_api_key();
        server
            .get(&format!("/accounts/{key}/secrets"), &primary)
            .await
            .invalid_api_key();
        server
            .get(
                &format!("/accounts/{}/subaccounts/{key}", primary.key),
                &primary,
            )
            .await
            .invalid_api_key();
        server
            .patch(
                &format!("/accounts/{}/subaccounts/{key}", primary.key),
                &primary,
                r#"{"name":"x"}"#,
            )
            .await
            .invalid_api_key();
    }
    // Admin calls on unknown accounts.
    server
        .admin(
            "POST",
            "/admin/accounts/zzzzzzzz/top-ups",
            r#"{"amount":1}"#,
        )
        .await
        .invalid_api_key();
    server
        .admin("PATCH", "/admin/accounts/zzzzzzzz", r#"{"suspended":true}"#)
        .await
        .invalid_api_key();
    // Top-ups and credit lines are for primaries.
    server
        .admin(
            "POST",
            &format!("/admin/accounts/{}/top-ups", sub.key),
            r#"{"amount":1}"#,
        )
        .await
        .invalid_api_key();
    assert_eq!(server.balance(&primary.key).as_deref(), Some("10"));
    assert_eq!(server.balance(&sub.key).as_deref(), Some("0"));
}

#[tokio::test]
async fn bad_amounts_are_422_naming_amount() {
    let server = Server::new();
    let primary = server.funded_primary("100").await;
    let sub = server.own_sub(&primary).await;
    let path = format!("/accounts/{}/balance-transfers", primary.key);
    let credit_path = format!("/accounts/{}/credit-transfers", primary.key);
    let bad = [
        "0.123456789",
        "1.000000001",
        r#""10""#,
        r#""0.1""#,
        "0",
        "0.0",
        "-5",
        "-0.00000001",
        "null",
        "true",
        "[1]",
        r#"{"value":1}"#,
        "1e13",
        "123456789012345678901234567890",
    ];
    for amount in bad {
        for path in [&path, &credit_path] {
            let response = server
                .post(path, &primary, &transfer_body(&primary, &sub, amount))
                .await;
            let problem = response.validation(422, &["amount"]);
            assert!(
                problem["detail"]
                    .as_str()
                    .is_some_and(|detail| detail.contains("amount")),
                "{problem}"
            );
        }
        for route in ["top-ups", "charges"] {
            server
                .admin(
                    "POST",
                    &format!("/admin/accounts/{}/{route}", primary.key),
                    &format!(r#"{{"amount":{amount}}}"#),
                )
                .await
                .validation(422, &["amount"]);
        }
    }
    // A missing amount.
    server
        .post(
            &path,
            &primary,
            &format!(r#"{{"from":"{}","to":"{}"}}"#, primary.key, sub.key),
        )
        .await
        .validation(422, &["amount"]);
    // Every bad field is named at once.
    server
        .post(&path, &primary, r#"{"from":1,"amount":"x","extra":true}"#)
        .await
        .validation(422, &["from", "to", "amount", "extra"]);
    server
        .post(&path, &primary, "{}")
        .await
        .validation(422, &["from", "to", "amount"]);
    server
        .post(
            &path,
            &primary,
            &format!(
                r#"{{"from":"{}","to":"NOPE","amount":1,"reference":7}}"#,
                primary.key
            ),
        )
        .await
        .validation(422, &["to", "reference"]);
    // A too-long reference (from the rules).
    server
        .post(
            &path,
            &primary,
            &format!(
                r#"{{"from":"{}","to":"{}","amount":1,"reference":"{}"}}"#,
                primary.key,
                sub.key,
                "r".repeat(256)
            ),
        )
        .await
        .validation(422, &["reference"]);
    assert_eq!(server.balance(&primary.key).as_deref(), Some("100"));
    assert_eq!(server.balance(&sub.key).as_deref(), Some("0"));
    assert_eq!(server.credit_limit(&sub.key).as_deref(), Some("0"));
}

#[tokio::test]
async fn each_bad_field_is_named_once() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let problem = server
        .post(
            &format!("/accounts/{}/balance-transfers", primary.key),
            &primary,
            &format!(r#"{{"from":1,"to":"{}","amount":1}}"#, primary.key),
        )
        .await
        .validation(422, &["from"]);
    assert_eq!(
        problem["invalid_parameters"],
        serde_json::json!([{"name": "from", "reason": "must be a string"}])
    );
    let problem = server
        .post(
            &format!("/accounts/{}/secrets", primary.key),
            &primary,
            r#"{"secret":12345678}"#,
        )
        .await
        .validation(400, &["secret"]);
    assert_eq!(
        problem["invalid_parameters"],
        serde_json::json!([{"name": "secret", "reason": "must be a string"}])
    );
}

#[tokio::test]
async fn subaccount_and_admin_validation_is_422() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let base = format!("/accounts/{}/subaccounts", primary.key);
    server
        .post(&base, &primary, "{}")
        .await
        .validation(422, &["name"]);
    server
        .post(&base, &primary, r#"{"name":7}"#)
        .await
        .validation(422, &["name"]);
    server
        .post(
            &base,
            &primary,
            &format!(r#"{{"name":"{}"}}"#, "n".repeat(81)),
        )
        .await
        .validation(422, &["name"]);
    server
        .post(&base, &primary, r#"{"name":""}"#)
        .await
        .validation(422, &["name"]);
    // Outside the secrets endpoints, a weak secret is a 422.
    server
        .post(&base, &primary, r#"{"name":"a","secret":"weak"}"#)
        .await
        .validation(422, &["secret"]);
    server
        .post(
            &base,
            &primary,
            r#"{"name":"a","use_primary_account_balance":"no","colour":"red"}"#,
        )
        .await
        .validation(422, &["use_primary_account_balance", "colour"]);
    let list = server.get(&base, &primary).await.ok(200);
    assert_eq!(list["_embedded"]["subaccounts"], serde_json::json!([]));

    let sub = server.shared_sub(&primary).await;
    let path = format!("{base}/{}", sub.key);
    server
        .patch(&path, &primary, r#"{"suspended":"yes"}"#)
        .await
        .validation(422, &["suspended"]);
    server
        .patch(&path, &primary, r#"{"api_key":"abcdefgh"}"#)
        .await
        .validation(422, &["api_key"]);
    server
        .patch(
            &path,
            &primary,
            &format!(r#"{{"name":"{}"}}"#, "n".repeat(81)),
        )
        .await
        .validation(422, &["name"]);

    // Admin bodies.
    server
        .admin("POST", "/admin/primaries", r#"{"currency":"euro"}"#)
        .await
        .validation(422, &["currency"]);
    server
        .admin("POST", "/admin/primaries", r#"{"credit_limit":10}"#)
        .await
        .validation(422, &["credit_limit"]);
    server
        .admin(
            "PUT",
            &format!("/admin/accounts/{}/credit-limit", primary.key),
            r#"{"credit_limit":"-5"}"#,
        )
        .await
        .validation(422, &["credit_limit"]);
    server
        .admin(
            "PUT",
            &format!("/admin/accounts/{}/credit-limit", primary.key),
            r#"{"credit_limit":5}"#,
        )
        .await
        .validation(422, &["credit_limit"]);
    server
        .admin("PATCH", &format!("/admin/accounts/{}", primary.key), "{}")
        .await
        .validation(422, &["suspended"]);
    assert_eq!(server.credit_limit(&primary.key).as_deref(), Some("0"));
}

#[tokio::test]
async fn query_parameters_are_validated() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let base = format!("/accounts/{}/balance-transfers", primary.key);
    for (query, field) in [
        ("page_size=0", "page_size"),
        ("page_size=1001", "page_size"),
        ("page_size=two", "page_size"),
        ("cursor=abc", "cursor"),
        ("start_date=yesterday", "start_date"),
        ("end_date=2026-13-01T00:00:00Z", "end_date"),
        ("subaccount=NOPE", "subaccount"),
        ("colour=red", "colour"),
        (
            "start_date=2026-02-01T00:00:00Z&end_date=2026-01-01T00:00:00Z",
            "start_date",
        ),
    ] {
        let response = server.get(&format!("{base}?{query}"), &primary).await;
        response.validation(422, &[field]);
    }
}

#[tokio::test]
async fn too_many_subaccount_filters_name_subaccount() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let query: Vec<String> = (0..101)
        .map(|index| format!("subaccount=a{index:07}"))
        .collect();
    server
        .get(
            &format!(
                "/accounts/{}/balance-transfers?{}",
                primary.key,
                query.join("&")
            ),
            &primary,
        )
        .await
        .validation(422, &["subaccount"]);
}

#[tokio::test]
async fn secrets_validation_is_400() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let base = format!("/accounts/{}/secrets", primary.key);
    for body in [
        r#"{"secret":"Sh0rt"}"#,
        r#"{"secret":"alllowercase1"}"#,
        r#"{"secret":"ALLUPPERCASE1"}"#,
        r#"{"secret":"NoDigitsAtAll"}"#,
        r#"{"secret":"Toolong1Toolong1Toolong1Toolong1"}"#,
        r#"{"secret":12345678}"#,
        r#"{"secret":null}"#,
        "{}",
    ] {
        server
            .post(&base, &primary, body)
            .await
            .validation(400, &["secret"]);
    }
    server
        .post(&base, &primary, r#"{"secret":"Valid1Secret","note":"x"}"#)
        .await
        .validation(400, &["note"]);
    // Still one secret.
    let list = server.get(&base, &primary).await.ok(200);
    assert_eq!(
        list["_embedded"]["secrets"].as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn invalid_transfers_are_403() {
    let server = Server::new();
    let primary = server.funded_primary("100").await;
    let a = server.own_sub(&primary).await;
    let b = server.own_sub(&primary).await;
    let shared = server.shared_sub(&primary).await;
    let stranger = server.funded_primary("100").await;
    let strangers_sub = server.own_sub(&stranger).await;
    server
        .balance_transfer(&primary, &primary, &a, "10")
        .await
        .ok(200);

    for transfer in [
        // subaccount → subaccount
        (&a, &b),
        // a stranger at either end
        (&primary, &stranger),
        (&stranger, &primary),
        (&primary, &strangers_sub),
        (&strangers_sub, &primary),
        // a shared-balance end
        (&primary, &shared),
        (&shared, &primary),
        // the same account on both sides
        (&primary, &primary),
        (&a, &a),
    ] {
        let (from, to) = transfer;
        server
            .balance_transfer(&primary, from, to, "1")
            .await
            .problem(403, "valid-transfers", "Invalid Transfer");
        server
            .credit_transfer(&primary, from, to, "1")
            .await
            .problem(403, "valid-transfers", "Invalid Transfer");
    }
    // An unknown account at an end.
    let ghost = Creds::new("zzzzzzzz", "Ghost1Secret");
    server
        .balance_transfer(&primary, &primary, &ghost, "1")
        .await
        .problem(403, "valid-transfers", "Invalid Transfer");

    // Not enough balance / credit.
    server
        .balance_transfer(&primary, &a, &primary, "10.00000001")
        .await
        .problem(403, "valid-transfers", "Transfer amount is invalid");
    server
        .balance_transfer(&primary, &primary, &b, "90.00000001")
        .await
        .problem(403, "valid-transfers", "Transfer amount is invalid");
    server
        .credit_transfer(&primary, &primary, &a, "0.00000001")
        .await
        .problem(403, "valid-transfers", "Transfer amount is invalid");

    assert_eq!(server.balance(&primary.key).as_deref(), Some("90"));
    assert_eq!(server.balance(&a.key).as_deref(), Some("10"));
    assert_eq!(server.balance(&b.key).as_deref(), Some("0"));
    assert_eq!(server.balance(&stranger.key).as_deref(), Some("100"));
    assert_eq!(server.balance(&strangers_sub.key).as_deref(), Some("0"));
    assert_eq!(server.credit_limit(&a.key).as_deref(), Some("0"));
    let transfers = server
        .get(
            &format!("/accounts/{}/balance-transfers", primary.key),
            &primary,
        )
        .await
        .ok(200);
    assert_eq!(
        transfers["_embedded"]["balance_transfers"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn switching_back_to_the_primary_balance_is_422() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let sub = server.own_sub(&primary).await;
    let path = format!("/accounts/{}/subaccounts/{}", primary.key, sub.key);
    server
        .patch(&path, &primary, r#"{"use_primary_account_balance":true}"#)
        .await
        .validation(422, &["use_primary_account_balance"]);
    // Nothing else in the same PATCH was applied.
    server
        .patch(
            &path,
            &primary,
            r#"{"use_primary_account_balance":true,"name":"changed"}"#,
        )
        .await
        .validation(422, &["use_primary_account_balance"]);
    let got = server.get(&path, &primary).await.ok(200);
    assert_eq!(got["use_primary_account_balance"], false);
    assert_eq!(got["name"], "own");
    // `false` again is fine.
    server
        .patch(&path, &primary, r#"{"use_primary_account_balance":false}"#)
        .await
        .ok(200);
}

#[tokio::test]
async fn the_subaccount_limit_is_403_provisioning() {
    let server = Server::with_engine(Config {
        policy: Policy {
            subaccounts_per_primary_max: 2,
        },
        ..Config::default()
    });
    let primary = server.open_primary().await;
    let first = server.shared_sub(&primary).await;
    server.shared_sub(&primary).await;
    let base = format!("/accounts/{}/subaccounts", primary.key);
    server
        .post(&base, &primary, r#"{"name":"third"}"#)
        .await
        .problem(
            403,
            "provisioning",
            "Maximum number of sub-accounts reached",
        );
    let list = server.get(&base, &primary).await.ok(200);
    assert_eq!(
        list["_embedded"]["subaccounts"].as_array().map(Vec::len),
        Some(2)
    );
    // Another primary has its own allowance.
    let other = server.open_primary().await;
    server.shared_sub(&other).await;
    // Closed subaccounts do not count.
    let closed = server
        .delete(&format!("{base}/{}", first.key), &primary)
        .await;
    assert_eq!(closed.status, 204, "{}", closed.text);
    server.shared_sub(&primary).await;
}

/// `subledger_argon2_runs_total` from `/metrics`.
async fn argon2_runs(server: &Server) -> u64 {
    let metrics = server.req("GET", "/metrics").send().await;
    metrics
        .text
        .lines()
        .find_map(|line| line.strip_prefix("subledger_argon2_runs_total "))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no argon2 count in {}", metrics.text))
}

#[tokio::test]
async fn secret_count_rules_and_unknown_ids() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let base = format!("/accounts/{}/secrets", primary.key);
    let list = server.get(&base, &primary).await.ok(200);
    let only = text(&list["_embedded"]["secrets"][0]["id"]);

    // The last secret cannot be revoked.
    server
        .delete(&format!("{base}/{only}"), &primary)
        .await
        .problem(403, "delete-last-secret", "Secret Deletion Forbidden");

    let created = server
        .post(&base, &primary, r#"{"secret":"Second2Secret"}"#)
        .await;
    assert_eq!(created.status, 201);
    // A third is refused, without hashing it first (the account is seen to be full).
    let before = argon2_runs(&server).await;
    server
        .post(&base, &primary, r#"{"secret":"Third3Secret"}"#)
        .await
        .problem(403, "add-excess-secret", "Secret Addition Forbidden");
    assert_eq!(argon2_runs(&server).await, before);
    server
        .get(&base, &primary.with_secret("Third3Secret"))
        .await
        .unauthorized();

    // Unknown secret ids: well-formed or not, on GET and DELETE.
    for id in ["00000000-0000-4000-8000-000000000000", "not-an-id", "1"] {
        server.get(&format!("{base}/{id}"), &primary).await.problem(
            404,
            "invalid-id",
            "Invalid ID",
        );
        server
            .delete(&format!("{base}/{id}"), &primary)
            .await
            .problem(404, "invalid-id", "Invalid ID");
    }
    // Another account's secret id is unknown here.
    let other = server.open_primary().await;
    let other_list = server
        .get(&format!("/accounts/{}/secrets", other.key), &other)
        .await
        .ok(200);
    let other_id = text(&other_list["_embedded"]["secrets"][0]["id"]);
    server
        .get(&format!("{base}/{other_id}"), &primary)
        .await
        .problem(404, "invalid-id", "Invalid ID");
    server
        .delete(&format!("{base}/{other_id}"), &primary)
        .await
        .problem(404, "invalid-id", "Invalid ID");
    let list = server.get(&base, &primary).await.ok(200);
    assert_eq!(
        list["_embedded"]["secrets"].as_array().map(Vec::len),
        Some(2)
    );
    let other_list = server
        .get(&format!("/accounts/{}/secrets", other.key), &other)
        .await
        .ok(200);
    assert_eq!(
        other_list["_embedded"]["secrets"].as_array().map(Vec::len),
        Some(1)
    );

    // Once there is room again, a creation does hash (so the count above could have moved).
    let second = primary.with_secret("Second2Secret");
    let revoked = server.delete(&format!("{base}/{only}"), &second).await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    let before = argon2_runs(&server).await;
    server
        .post(&base, &second, r#"{"secret":"Third3Secret"}"#)
        .await
        .ok(201);
    assert_eq!(argon2_runs(&server).await, before + 1);
}

#[tokio::test]
async fn hostile_bodies_are_4xx_problems_and_change_nothing() {
    let server = Server::new();
    let primary = server.funded_primary("100").await;
    let sub = server.own_sub(&primary).await;
    let transfers = format!("/accounts/{}/balance-transfers", primary.key);
    let subaccounts = format!("/accounts/{}/subaccounts", primary.key);
    let secrets = format!("/accounts/{}/secrets", primary.key);
    let patch = format!("{subaccounts}/{}", sub.key);
    let huge = format!(
        r#"{{"from":"{}","to":"{}","amount":1,"reference":"{}"}}"#,
        primary.key,
        sub.key,
        "x".repeat(70 * 1024)
    );
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let deep_object = format!(r#"{{"from":{}1{}}}"#, r#"{"a":"#.repeat(40), "}".repeat(40));
    let bodies: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"{\"from\":".to_vec(),
        b"not json".to_vec(),
        b"[]".to_vec(),
        b"[1,2]".to_vec(),
        b"1".to_vec(),
        b"\"string\"".to_vec(),
        b"null".to_vec(),
        b"{\"amount\":1}{\"amount\":2}".to_vec(),
        b"{\"amount\":1,\"amount\":1}x".to_vec(),
        vec![0xff, 0xfe, b'{', b'}'],
        b"{\"from\":\"\xff\"}".to_vec(),
        huge.into_bytes(),
        deep.into_bytes(),
        deep_object.into_bytes(),
        b"{\"amount\":1e999999999}".to_vec(),
        b"{\"amount\":-}".to_vec(),
    ];
    for body in &bodies {
        for (method, path) in [
            ("POST", &transfers),
            ("POST", &subaccounts),
            ("POST", &secrets),
            ("PATCH", &patch),
        ] {
            let response = server
                .req(method, path)
                .basic(&primary)
                .body(body.clone())
                .send()
                .await;
            assert!(
                (400..500).contains(&response.status),
                "{method} {path} {:?} → {} {}",
                String::from_utf8_lossy(&body[..body.len().min(60)]),
                response.status,
                response.text
            );
            assert_eq!(
                response.header("content-type").as_deref(),
                Some("application/problem+json"),
                "{}",
                response.text
            );
            let problem = response.json();
            assert!(
                text(&problem["type"]).starts_with(&format!("{PROBLEM_BASE}#")),
                "{problem}"
            );
            assert_eq!(problem["instance"], path.as_str());
        }
    }
    // Specific statuses.
    let response = server.post(&transfers, &primary, "{\"from\":").await;
    response.problem(400, "bad-request", "Bad Request");
    let response = server.post(&secrets, &primary, "{").await;
    response.problem(400, "bad-request", "Bad Request");
    let response = server.post(&transfers, &primary, "[]").await;
    response.problem(400, "bad-request", "Bad Request");
    let big = "x".repeat(subledger_server::json::REQUEST_BODY_BYTES_MAX + 1);
    let response = server.post(&transfers, &primary, &big).await;
    response.problem(413, "payload-too-large", "Payload Too Large");

    // Admin endpoints too.
    for body in [&b"{"[..], b"[]", &vec![b' '; 70 * 1024][..]] {
        let response = server
            .req("POST", &format!("/admin/accounts/{}/top-ups", primary.key))
            .admin()
            .body(body.to_vec())
            .send()
            .await;
        assert!((400..500).contains(&response.status), "{}", response.status);
        assert_eq!(
            response.header("content-type").as_deref(),
            Some("application/problem+json")
        );
    }

    assert_eq!(server.balance(&primary.key).as_deref(), Some("100"));
    assert_eq!(server.balance(&sub.key).as_deref(), Some("0"));
    let list = server.get(&subaccounts, &primary).await.ok(200);
    assert_eq!(
        list["_embedded"]["subaccounts"].as_array().map(Vec::len),
        Some(1)
    );
    let list = server.get(&secrets, &primary).await.ok(200);
    assert_eq!(
        list["_embedded"]["secrets"].as_array().map(Vec::len),
        Some(1)
    );
    let got = server.get(&patch, &primary).await.ok(200);
    assert_eq!(got["name"], "own");
}

#[tokio::test]
async fn bad_idempotency_keys_are_400() {
    let server = Server::new();
    let primary = server.funded_primary("10").await;
    let sub = server.own_sub(&primary).await;
    let path = format!("/accounts/{}/balance-transfers", primary.key);
    let long = "k".repeat(256);
    for key in ["", long.as_str()] {
        server
            .req("POST", &path)
            .basic(&primary)
            .header("idempotency-key", key)
            .body(transfer_body(&primary, &sub, "1"))
            .send()
            .await
            .problem(400, "bad-request", "Bad Request");
    }
    assert_eq!(server.balance(&sub.key).as_deref(), Some("0"));
}

#[tokio::test]
async fn unknown_routes_are_404_problems() {
    let server = Server::new();
    let primary = server.open_primary().await;
    for path in [
        "/",
        "/accounts",
        "/accounts/x/unknown",
        "/admin",
        "/healthz/x",
    ] {
        server
            .get(path, &primary)
            .await
            .problem(404, "not-found", "Not Found");
    }
}

#[tokio::test]
async fn wrong_methods_are_405_problems() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let response = server
        .req("PUT", &format!("/accounts/{}/subaccounts", primary.key))
        .basic(&primary)
        .body("{}")
        .send()
        .await;
    assert_eq!(response.status, 405);
    assert_eq!(
        response.header("content-type").as_deref(),
        Some("application/problem+json"),
        "{:?}",
        response.text
    );
    // RFC 9110 §15.5.6: a 405 lists the methods the resource has.
    let allow = response.header("allow").unwrap_or_default();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow:?}");
}
