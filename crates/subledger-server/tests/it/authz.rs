//! The authorization matrix of SPEC §8.

use crate::support::*;

#[tokio::test]
async fn another_primary_gets_404_on_a_family() {
    let server = Server::new();
    let owner = server.funded_primary("100").await;
    let sub = server.own_sub(&owner).await;
    let intruder = server.funded_primary("100").await;
    let family = format!("/accounts/{}", owner.key);

    server
        .get(&format!("{family}/subaccounts"), &intruder)
        .await
        .invalid_api_key();
    server
        .post(
            &format!("{family}/subaccounts"),
            &intruder,
            r#"{"name":"x"}"#,
        )
        .await
        .invalid_api_key();
    server
        .get(&format!("{family}/subaccounts/{}", sub.key), &intruder)
        .await
        .invalid_api_key();
    server
        .patch(
            &format!("{family}/subaccounts/{}", sub.key),
            &intruder,
            r#"{"suspended":true}"#,
        )
        .await
        .invalid_api_key();
    let closed = server
        .delete(&format!("{family}/subaccounts/{}", sub.key), &intruder)
        .await;
    closed.invalid_api_key();
    for kind in ["balance-transfers", "credit-transfers"] {
        server
            .get(&format!("{family}/{kind}"), &intruder)
            .await
            .invalid_api_key();
        server
            .post(
                &format!("{family}/{kind}"),
                &intruder,
                &transfer_body(&owner, &sub, "1"),
            )
            .await
            .invalid_api_key();
    }
    for key in [&owner.key, &sub.key] {
        server
            .get(&format!("/accounts/{key}/secrets"), &intruder)
            .await
            .invalid_api_key();
        server
            .post(
                &format!("/accounts/{key}/secrets"),
                &intruder,
                r#"{"secret":"Intruder1Secret"}"#,
            )
            .await
            .invalid_api_key();
    }
    let secrets = server
        .get(&format!("/accounts/{}/secrets", sub.key), &owner)
        .await
        .ok(200);
    let id = text(&secrets["_embedded"]["secrets"][0]["id"]);
    server
        .get(&format!("/accounts/{}/secrets/{id}", sub.key), &intruder)
        .await
        .invalid_api_key();
    server
        .delete(&format!("/accounts/{}/secrets/{id}", sub.key), &intruder)
        .await
        .invalid_api_key();
    // Its own path with the other family's subaccount.
    let own_family = format!("/accounts/{}", intruder.key);
    server
        .get(&format!("{own_family}/subaccounts/{}", sub.key), &intruder)
        .await
        .invalid_api_key();
    server
        .patch(
            &format!("{own_family}/subaccounts/{}", sub.key),
            &intruder,
            r#"{"suspended":true}"#,
        )
        .await
        .invalid_api_key();
    // ... and a transfer to it is a stranger transfer.
    server
        .balance_transfer(&intruder, &intruder, &sub, "1")
        .await
        .problem(403, "valid-transfers", "Invalid Transfer");

    // Nothing changed.
    let got = server
        .get(&format!("{family}/subaccounts/{}", sub.key), &owner)
        .await
        .ok(200);
    assert_eq!(got["suspended"], false);
    assert_eq!(got["closed"], false);
    assert_eq!(server.balance(&owner.key).as_deref(), Some("100"));
    assert_eq!(server.balance(&intruder.key).as_deref(), Some("100"));
    assert_eq!(server.balance(&sub.key).as_deref(), Some("0"));
    let list = server
        .get(&format!("{family}/subaccounts"), &owner)
        .await
        .ok(200);
    assert_eq!(
        list["_embedded"]["subaccounts"].as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn subaccount_credentials_read_themselves_and_manage_their_secrets_only() {
    let server = Server::new();
    let primary = server.funded_primary("100").await;
    let sub = server.own_sub(&primary).await;
    let sibling = server.shared_sub(&primary).await;
    server
        .balance_transfer(&primary, &primary, &sub, "7")
        .await
        .ok(200);
    let family = format!("/accounts/{}", primary.key);

    // Allowed: itself, its balance, its secrets.
    let me = server
        .get(&format!("{family}/subaccounts/{}", sub.key), &sub)
        .await
        .ok(200);
    assert_eq!(me["api_key"], sub.key.as_str());
    assert_eq!(num(&me["balance"]), "7");
    let balance = server.get("/account/get-balance", &sub).await.ok(200);
    assert_eq!(num(&balance["value"]), "7");
    let secrets_path = format!("/accounts/{}/secrets", sub.key);
    let list = server.get(&secrets_path, &sub).await.ok(200);
    let original = text(&list["_embedded"]["secrets"][0]["id"]);
    let created = server
        .post(&secrets_path, &sub, r#"{"secret":"SubNew1Secret"}"#)
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let new_id = text(&created.json()["id"]);
    server
        .get(&format!("{secrets_path}/{new_id}"), &sub)
        .await
        .ok(200);
    let revoked = server
        .delete(&format!("{secrets_path}/{original}"), &sub)
        .await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    server.get(&secrets_path, &sub).await.unauthorized();
    let sub = sub.with_secret("SubNew1Secret");
    server.get(&secrets_path, &sub).await.ok(200);

    // Refused: the family list, transfers, other subaccounts, changing itself, others' secrets.
    server
        .get(&format!("{family}/subaccounts"), &sub)
        .await
        .invalid_api_key();
    server
        .post(&format!("{family}/subaccounts"), &sub, r#"{"name":"x"}"#)
        .await
        .invalid_api_key();
    server
        .get(&format!("/accounts/{}/subaccounts", sub.key), &sub)
        .await
        .invalid_api_key();
    server
        .get(&format!("{family}/subaccounts/{}", sibling.key), &sub)
        .await
        .invalid_api_key();
    server
        .patch(
            &format!("{family}/subaccounts/{}", sub.key),
            &sub,
            r#"{"name":"mine"}"#,
        )
        .await
        .invalid_api_key();
    server
        .delete(&format!("{family}/subaccounts/{}", sub.key), &sub)
        .await
        .invalid_api_key();
    for kind in ["balance-transfers", "credit-transfers"] {
        server
            .get(&format!("{family}/{kind}"), &sub)
            .await
            .invalid_api_key();
        server
            .post(
                &format!("{family}/{kind}"),
                &sub,
                &transfer_body(&sub, &primary, "1"),
            )
            .await
            .invalid_api_key();
        server
            .post(
                &format!("/accounts/{}/{kind}", sub.key),
                &sub,
                &transfer_body(&sub, &primary, "1"),
            )
            .await
            .invalid_api_key();
    }
    for key in [&primary.key, &sibling.key] {
        server
            .get(&format!("/accounts/{key}/secrets"), &sub)
            .await
            .invalid_api_key();
        server
            .post(
                &format!("/accounts/{key}/secrets"),
                &sub,
                r#"{"secret":"Sneaky1Secret"}"#,
            )
            .await
            .invalid_api_key();
    }
    let primary_secrets = server
        .get(&format!("/accounts/{}/secrets", primary.key), &primary)
        .await
        .ok(200);
    let primary_secret = text(&primary_secrets["_embedded"]["secrets"][0]["id"]);
    server
        .delete(
            &format!("/accounts/{}/secrets/{primary_secret}", primary.key),
            &sub,
        )
        .await
        .invalid_api_key();

    assert_eq!(server.balance(&sub.key).as_deref(), Some("7"));
    assert_eq!(server.balance(&primary.key).as_deref(), Some("93"));
    let me = server
        .get(&format!("{family}/subaccounts/{}", sub.key), &primary)
        .await
        .ok(200);
    assert_eq!(me["name"], "own");
}

#[tokio::test]
async fn a_primary_manages_its_subaccounts_secrets() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let sub = server.shared_sub(&primary).await;
    let path = format!("/accounts/{}/secrets", sub.key);

    let list = server.get(&path, &primary).await.ok(200);
    assert_eq!(list["_links"]["self"]["href"], path.as_str());
    let original = text(&list["_embedded"]["secrets"][0]["id"]);
    let created = server
        .post(&path, &primary, r#"{"secret":"Rotated1Secret"}"#)
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let created = created.json();
    assert_eq!(
        created["_links"]["self"]["href"],
        serde_json::Value::String(format!("{path}/{}", text(&created["id"])))
    );
    server
        .get(&format!("{path}/{}", text(&created["id"])), &primary)
        .await
        .ok(200);
    let revoked = server.delete(&format!("{path}/{original}"), &primary).await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);

    // The subaccount now signs in with the new secret only; the primary's are untouched.
    let me = format!("/accounts/{}/subaccounts/{}", primary.key, sub.key);
    server.get(&me, &sub).await.unauthorized();
    server
        .get(&me, &sub.with_secret("Rotated1Secret"))
        .await
        .ok(200);
    server
        .get(&format!("/accounts/{}/subaccounts", primary.key), &primary)
        .await
        .ok(200);
    let primary_secrets = server
        .get(&format!("/accounts/{}/secrets", primary.key), &primary)
        .await
        .ok(200);
    assert_eq!(
        primary_secrets["_embedded"]["secrets"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn suspended_and_closed_accounts_cannot_authenticate() {
    let server = Server::new();
    let primary = server.funded_primary("50").await;
    let by_admin = server.own_sub(&primary).await;
    let by_primary = server.shared_sub(&primary).await;
    let to_close = server.own_sub(&primary).await;
    let family = format!("/accounts/{}/subaccounts", primary.key);
    let me = |sub: &Creds| format!("{family}/{}", sub.key);

    // Signed in once (so the credential is cached) before each change.
    for sub in [&by_admin, &by_primary, &to_close] {
        server.get(&me(sub), sub).await.ok(200);
        server.get("/account/get-balance", sub).await.ok(200);
    }

    // Suspended by the admin API.
    server
        .admin(
            "PATCH",
            &format!("/admin/accounts/{}", by_admin.key),
            r#"{"suspended":true}"#,
        )
        .await
        .ok(200);
    server.get(&me(&by_admin), &by_admin).await.unauthorized();
    server
        .get("/account/get-balance", &by_admin)
        .await
        .unauthorized();
    server
        .get(&format!("/accounts/{}/secrets", by_admin.key), &by_admin)
        .await
        .unauthorized();

    // Suspended by its primary.
    let suspended = server
        .patch(&me(&by_primary), &primary, r#"{"suspended":true}"#)
        .await
        .ok(200);
    assert_eq!(suspended["suspended"], true);
    server
        .get(&me(&by_primary), &by_primary)
        .await
        .unauthorized();

    // The primary still manages suspended subaccounts, and transfers with them are allowed.
    server.get(&me(&by_admin), &primary).await.ok(200);
    server
        .balance_transfer(&primary, &primary, &by_admin, "5")
        .await
        .ok(200);
    server
        .balance_transfer(&primary, &by_admin, &primary, "5")
        .await
        .ok(200);

    // Reactivated: the same credentials work again.
    server
        .admin(
            "PATCH",
            &format!("/admin/accounts/{}", by_admin.key),
            r#"{"suspended":false}"#,
        )
        .await
        .ok(200);
    server.get(&me(&by_admin), &by_admin).await.ok(200);
    server
        .patch(&me(&by_primary), &primary, r#"{"suspended":false}"#)
        .await
        .ok(200);
    server.get(&me(&by_primary), &by_primary).await.ok(200);

    // Closed: never again.
    let closed = server.delete(&me(&to_close), &primary).await;
    assert_eq!(closed.status, 204, "{}", closed.text);
    server.get(&me(&to_close), &to_close).await.unauthorized();
    server
        .get("/account/get-balance", &to_close)
        .await
        .unauthorized();
    // A closed subaccount cannot be a transfer end.
    server
        .balance_transfer(&primary, &primary, &to_close, "1")
        .await
        .problem(403, "valid-transfers", "Invalid Transfer");

    // A suspended primary cannot authenticate either.
    server
        .admin(
            "PATCH",
            &format!("/admin/accounts/{}", primary.key),
            r#"{"suspended":true}"#,
        )
        .await
        .ok(200);
    server.get(&family, &primary).await.unauthorized();
    server
        .get("/account/get-balance", &primary)
        .await
        .unauthorized();
    assert_eq!(server.balance(&primary.key).as_deref(), Some("50"));
}

#[tokio::test]
async fn suspending_a_primary_locks_out_its_whole_family() {
    let server = Server::new();
    let primary = server.funded_primary("10").await;
    let sub = server.own_sub(&primary).await;
    server.get("/account/get-balance", &sub).await.ok(200);
    server
        .admin(
            "PATCH",
            &format!("/admin/accounts/{}", primary.key),
            r#"{"suspended":true}"#,
        )
        .await
        .ok(200);
    server
        .get("/account/get-balance", &sub)
        .await
        .unauthorized();
    server
        .admin(
            "PATCH",
            &format!("/admin/accounts/{}", primary.key),
            r#"{"suspended":false}"#,
        )
        .await
        .ok(200);
    server.get("/account/get-balance", &sub).await.ok(200);
}

#[tokio::test]
async fn the_basic_scheme_name_is_case_insensitive() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let lower = primary.authorization().replacen("Basic", "basic", 1);
    server
        .req("GET", "/account/get-balance")
        .header("authorization", &lower)
        .send()
        .await
        .ok(200);
}
