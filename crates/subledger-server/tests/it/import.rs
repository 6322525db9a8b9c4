//! `POST /admin/import`: accounts with their own keys and argon2id hashes, checked strictly.

use argon2::password_hash::{PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde_json::Value;

use crate::support::*;

/// An argon2id PHC hash of `secret` with the given cost.
fn phc(secret: &str, memory_kib: u32, passes: u32) -> String {
    let params = Params::new(memory_kib, passes, 1, None).expect("params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(
            secret.as_bytes(),
            &SaltString::from_b64("c29tZXNhbHQ").expect("salt"),
        )
        .expect("hash")
        .to_string()
}

fn results(answer: &Value) -> &Vec<Value> {
    answer["results"].as_array().expect("results")
}

#[tokio::test]
async fn imported_accounts_keep_their_keys_and_secrets() {
    let server = Server::new();
    let cost = server_config().hash_cost;
    let hash = phc("Imported1Secret", cost.memory_kib, cost.passes);
    let body = format!(
        r#"{{"accounts":[
            {{"api_key":"imp00001","name":"Imported","currency":"USD","credit_limit":-100,"secret_hash":"{hash}"}},
            {{"api_key":"imp00002","primary_account_api_key":"imp00001","name":"own","use_primary_account_balance":false,"secret_hash":"{hash}"}},
            {{"api_key":"imp00003","primary_account_api_key":"imp00001","name":"shared","secret_hash":"{hash}"}}
        ]}}"#
    );
    let answer = server.admin("POST", "/admin/import", &body).await.ok(200);
    let statuses: Vec<_> = results(&answer)
        .iter()
        .map(|item| item["status"].clone())
        .collect();
    assert_eq!(statuses, vec![200, 200, 200]);
    assert_eq!(results(&answer)[1]["api_key"], "imp00002");
    let primary = Creds::new("imp00001", "Imported1Secret");
    let family = server
        .get("/accounts/imp00001/subaccounts", &primary)
        .await
        .ok(200);
    assert_eq!(family["_embedded"]["primary_account"]["name"], "Imported");
    assert_eq!(
        num(&family["_embedded"]["primary_account"]["credit_limit"]),
        "-100"
    );
    let subs = family["_embedded"]["subaccounts"].as_array().expect("subs");
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[0]["use_primary_account_balance"], false);
    assert_eq!(subs[1]["use_primary_account_balance"], true);
    let sub = Creds::new("imp00002", "Imported1Secret");
    server.get("/account/get-balance", &sub).await.ok(200);
    server
        .get("/account/get-balance", &sub.with_secret("Wrong1Secret"))
        .await
        .unauthorized();

    // Importing again: each account is refused on its own (the keys are taken), and a new one
    // in the same request still lands.
    let again = format!(
        r#"{{"accounts":[
            {{"api_key":"imp00001","secret_hash":"{hash}"}},
            {{"api_key":"imp00004","primary_account_api_key":"imp00001","name":"new","secret_hash":"{hash}"}},
            {{"api_key":"imp00005","primary_account_api_key":"zzzzzzzz","secret_hash":"{hash}"}}
        ]}}"#
    );
    let answer = server.admin("POST", "/admin/import", &again).await.ok(200);
    let items = results(&answer);
    assert!(
        items[0]["status"].as_u64().expect("status") >= 400,
        "{answer}"
    );
    assert_eq!(items[0]["api_key"], "imp00001");
    assert!(items[0]["problem"]["detail"].is_string());
    assert_eq!(items[1]["status"], 200);
    assert!(
        items[2]["status"].as_u64().expect("status") >= 400,
        "{answer}"
    );
}

#[tokio::test]
async fn weak_costly_or_malformed_hashes_and_fields_are_refused_whole() {
    let server = Server::new();
    let cost = server_config().hash_cost;
    let good = phc("Imported1Secret", cost.memory_kib, cost.passes);
    let weak = phc("Imported1Secret", cost.memory_kib - 8, cost.passes);
    let costly = phc("Imported1Secret", cost.memory_kib, 17);
    let argon2i = good.replace("$argon2id$", "$argon2i$");
    let before = server.ledger.metrics().last_seq;
    let cases = [
        (
            format!(r#"{{"api_key":"imp00001","secret_hash":"{weak}"}}"#),
            "accounts[1].secret_hash",
        ),
        (
            format!(r#"{{"api_key":"imp00001","secret_hash":"{costly}"}}"#),
            "accounts[1].secret_hash",
        ),
        (
            format!(r#"{{"api_key":"imp00001","secret_hash":"{argon2i}"}}"#),
            "accounts[1].secret_hash",
        ),
        (
            r#"{"api_key":"imp00001","secret_hash":"$2b$12$abcdefghijklmnopqrstuv"}"#.to_string(),
            "accounts[1].secret_hash",
        ),
        (
            r#"{"api_key":"imp00001","secret_hash":"Plain1Secret"}"#.to_string(),
            "accounts[1].secret_hash",
        ),
        (
            r#"{"api_key":"imp00001"}"#.to_string(),
            "accounts[1].secret_hash",
        ),
        (
            format!(r#"{{"api_key":"NOT A KEY","secret_hash":"{good}"}}"#),
            "accounts[1].api_key",
        ),
        (
            format!(r#"{{"api_key":"imp00001","secret":"x","secret_hash":"{good}"}}"#),
            "accounts[1].secret",
        ),
        (
            format!(
                r#"{{"api_key":"imp00001","primary_account_api_key":"imp00000","credit_limit":-1,"secret_hash":"{good}"}}"#
            ),
            "accounts[1].credit_limit",
        ),
        (
            format!(
                r#"{{"api_key":"imp00001","use_primary_account_balance":true,"secret_hash":"{good}"}}"#
            ),
            "accounts[1].use_primary_account_balance",
        ),
        (
            format!(r#"{{"api_key":"imp00001","currency":"euro","secret_hash":"{good}"}}"#),
            "accounts[1].currency",
        ),
        ("42".to_string(), "accounts[1]"),
    ];
    for (item, field) in cases {
        // A valid first item: an invalid second one must keep it from landing too.
        let body =
            format!(r#"{{"accounts":[{{"api_key":"imp00009","secret_hash":"{good}"}},{item}]}}"#);
        let problem = server
            .admin("POST", "/admin/import", &body)
            .await
            .validation(422, &[field]);
        assert!(problem["detail"].is_string());
    }
    server
        .admin("POST", "/admin/import", r#"{"accounts":[]}"#)
        .await
        .validation(422, &["accounts"]);
    let too_many = format!(
        r#"{{"accounts":[{}]}}"#,
        vec![format!(r#"{{"api_key":"imp00001","secret_hash":"{good}"}}"#); 1_001].join(",")
    );
    server
        .admin("POST", "/admin/import", &too_many)
        .await
        .validation(422, &["accounts"]);
    server
        .req("POST", "/admin/import")
        .body(format!(
            r#"{{"accounts":[{{"api_key":"imp00001","secret_hash":"{good}"}}]}}"#
        ))
        .send()
        .await
        .unauthorized();
    assert_eq!(server.ledger.metrics().last_seq, before, "nothing changed");
}
