//! Every endpoint of SPEC §8 and the admin API, with their JSON shapes and exact numbers.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn admin_opens_primaries() {
    let server = Server::new();
    let response = server
        .admin(
            "POST",
            "/admin/primaries",
            r#"{"name":"Acme","currency":"USD","secret":"Primary1Secret"}"#,
        )
        .await;
    let primary = response.ok(200);
    assert_keys(
        &primary,
        &[
            "api_key",
            "name",
            "created_at",
            "suspended",
            "balance",
            "credit_limit",
            "currency",
            "secret",
        ],
    );
    assert_api_key(&primary["api_key"]);
    assert_eq!(primary["name"], "Acme");
    assert_eq!(primary["currency"], "USD");
    assert_eq!(primary["secret"], "Primary1Secret");
    assert_eq!(primary["suspended"], false);
    assert_eq!(num(&primary["balance"]), "0");
    assert_eq!(num(&primary["credit_limit"]), "0");
    assert_timestamp(&primary["created_at"]);
    // The chosen secret authenticates.
    let creds = Creds::new(&text(&primary["api_key"]), "Primary1Secret");
    server
        .get(&format!("/accounts/{}/subaccounts", creds.key), &creds)
        .await
        .ok(200);

    // Defaults: name "" (always a string), EUR, a generated secret that meets the rules.
    let other = server.admin("POST", "/admin/primaries", "").await.ok(200);
    assert_eq!(other["name"], "");
    assert_eq!(other["currency"], "EUR");
    let secret = text(&other["secret"]);
    assert!(subledger_core::validate_secret(&secret).is_ok(), "{secret}");
    assert_ne!(other["api_key"], primary["api_key"]);

    // An opening credit line.
    let credit = server
        .admin("POST", "/admin/primaries", r#"{"credit_limit":-25.5}"#)
        .await
        .ok(200);
    assert_eq!(num(&credit["credit_limit"]), "-25.5");
}

#[tokio::test]
async fn admin_top_ups_charges_credit_limits_and_suspensions() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let key = primary.key.clone();

    let top_up = server
        .admin(
            "POST",
            &format!("/admin/accounts/{key}/top-ups"),
            r#"{"amount":100.5,"reference":"payment 1"}"#,
        )
        .await
        .ok(200);
    assert_keys(
        &top_up,
        &[
            "id",
            "api_key",
            "amount",
            "reference",
            "created_at",
            "replayed",
            "balance",
        ],
    );
    assert_uuid(&top_up["id"]);
    assert_eq!(top_up["api_key"], key.as_str());
    assert_eq!(num(&top_up["amount"]), "100.5");
    assert_eq!(top_up["reference"], "payment 1");
    assert_eq!(top_up["replayed"], false);
    assert_eq!(num(&top_up["balance"]), "100.5");
    assert_timestamp(&top_up["created_at"]);

    let charge = server
        .admin(
            "POST",
            &format!("/admin/accounts/{key}/charges"),
            r#"{"amount":0.5}"#,
        )
        .await
        .ok(200);
    assert_eq!(num(&charge["amount"]), "0.5");
    assert_eq!(charge["reference"], "");
    assert_eq!(num(&charge["balance"]), "100");

    let limit = server.set_credit_limit(&key, "-50").await;
    assert_eq!(num(&limit["credit_limit"]), "-50");
    assert_eq!(num(&limit["total_credit_limit"]), "-50");
    assert_eq!(num(&limit["balance"]), "100");
    assert_eq!(limit["api_key"], key.as_str());

    // available = 100 - (-50) = 150
    let charge = server
        .admin(
            "POST",
            &format!("/admin/accounts/{key}/charges"),
            r#"{"amount":120}"#,
        )
        .await
        .ok(200);
    assert_eq!(num(&charge["balance"]), "-20");
    server
        .admin(
            "POST",
            &format!("/admin/accounts/{key}/charges"),
            r#"{"amount":30.00000001}"#,
        )
        .await
        .problem(403, "valid-transfers", "Transfer amount is invalid");
    assert_eq!(server.balance(&key).as_deref(), Some("-20"));
    // The credit line cannot be raised above what the balance already uses.
    assert!(matches!(
        server
            .admin(
                "PUT",
                &format!("/admin/accounts/{key}/credit-limit"),
                r#"{"credit_limit":-10}"#
            )
            .await
            .status,
        403
    ));

    // A shared subaccount's charges come out of the primary's balance.
    let shared = server.shared_sub(&primary).await;
    let charge = server
        .admin(
            "POST",
            &format!("/admin/accounts/{}/charges", shared.key),
            r#"{"amount":10}"#,
        )
        .await
        .ok(200);
    assert_eq!(charge["balance"], Value::Null);
    assert_eq!(server.balance(&key).as_deref(), Some("-30"));

    // Suspend the primary: its credentials stop working, charges are refused.
    let suspended = server
        .admin(
            "PATCH",
            &format!("/admin/accounts/{key}"),
            r#"{"suspended":true}"#,
        )
        .await
        .ok(200);
    assert_eq!(suspended["suspended"], true);
    assert!(suspended.get("primary_account_api_key").is_none());
    server
        .get(&format!("/accounts/{key}/subaccounts"), &primary)
        .await
        .unauthorized();
    server
        .admin(
            "POST",
            &format!("/admin/accounts/{key}/charges"),
            r#"{"amount":1}"#,
        )
        .await
        .problem(403, "account-suspended", "Account Suspended");
    let reactivated = server
        .admin(
            "PATCH",
            &format!("/admin/accounts/{key}"),
            r#"{"suspended":false}"#,
        )
        .await
        .ok(200);
    assert_eq!(reactivated["suspended"], false);
    server
        .get(&format!("/accounts/{key}/subaccounts"), &primary)
        .await
        .ok(200);
}

#[tokio::test]
async fn admin_api_needs_the_bearer_token() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let routes = [
        ("POST", "/admin/primaries".to_string(), "{}"),
        (
            "POST",
            format!("/admin/accounts/{}/top-ups", primary.key),
            r#"{"amount":1}"#,
        ),
        (
            "POST",
            format!("/admin/accounts/{}/charges", primary.key),
            r#"{"amount":1}"#,
        ),
        (
            "PUT",
            format!("/admin/accounts/{}/credit-limit", primary.key),
            r#"{"credit_limit":-1}"#,
        ),
        (
            "PATCH",
            format!("/admin/accounts/{}", primary.key),
            r#"{"suspended":true}"#,
        ),
    ];
    for (method, path, body) in &routes {
        server
            .req(method, path)
            .body(*body)
            .send()
            .await
            .unauthorized();
        server
            .req(method, path)
            .header("authorization", "Bearer not-the-token")
            .body(*body)
            .send()
            .await
            .unauthorized();
        // A primary's Basic credentials are no admin token.
        server
            .req(method, path)
            .basic(&primary)
            .body(*body)
            .send()
            .await
            .unauthorized();
    }
    assert_eq!(server.balance(&primary.key).as_deref(), Some("0"));
    assert_eq!(server.credit_limit(&primary.key).as_deref(), Some("0"));
}

#[tokio::test]
async fn subaccounts_are_listed_created_read_updated_and_closed() {
    let server = Server::new();
    let primary = server.funded_primary("100").await;
    let base = format!("/accounts/{}/subaccounts", primary.key);

    let empty = server.get(&base, &primary).await.ok(200);
    assert_keys(
        &empty,
        &["_links", "total_balance", "total_credit_limit", "_embedded"],
    );
    assert_eq!(empty["_links"]["self"]["href"], base.as_str());
    assert_eq!(num(&empty["total_balance"]), "100");
    assert_eq!(num(&empty["total_credit_limit"]), "0");
    let owner = &empty["_embedded"]["primary_account"];
    assert_keys(
        owner,
        &[
            "api_key",
            "name",
            "created_at",
            "suspended",
            "balance",
            "credit_limit",
        ],
    );
    assert_eq!(owner["api_key"], primary.key.as_str());
    assert_eq!(owner["name"], "primary");
    assert_eq!(num(&owner["balance"]), "100");
    assert_eq!(num(&owner["credit_limit"]), "0");
    assert_eq!(owner["suspended"], false);
    assert_timestamp(&owner["created_at"]);
    assert_eq!(empty["_embedded"]["subaccounts"], serde_json::json!([]));

    // A shared subaccount with a generated secret.
    let (shared, shared_creds) = server
        .create_sub(&primary, r#"{"name":"shared one"}"#)
        .await;
    let subaccount_fields = [
        "api_key",
        "name",
        "primary_account_api_key",
        "use_primary_account_balance",
        "created_at",
        "suspended",
        "closed",
        "balance",
        "credit_limit",
    ];
    let mut with_secret = subaccount_fields.to_vec();
    with_secret.push("secret");
    assert_keys(&shared, &with_secret);
    assert_api_key(&shared["api_key"]);
    assert_eq!(shared["name"], "shared one");
    assert_eq!(shared["primary_account_api_key"], primary.key.as_str());
    assert_eq!(shared["use_primary_account_balance"], true);
    assert_eq!(shared["suspended"], false);
    assert_eq!(shared["closed"], false);
    assert_eq!(shared["balance"], Value::Null);
    assert_eq!(shared["credit_limit"], Value::Null);
    assert_timestamp(&shared["created_at"]);
    assert!(subledger_core::validate_secret(&shared_creds.secret).is_ok());
    // The generated secret works.
    server
        .get(&format!("{base}/{}", shared_creds.key), &shared_creds)
        .await
        .ok(200);

    // An own-balance subaccount with a chosen secret.
    let (own, own_creds) = server
        .create_sub(
            &primary,
            r#"{"name":"own","use_primary_account_balance":false,"secret":"Own1secretX"}"#,
        )
        .await;
    assert_eq!(own["secret"], "Own1secretX");
    assert_eq!(own["use_primary_account_balance"], false);
    assert_eq!(num(&own["balance"]), "0");
    assert_eq!(num(&own["credit_limit"]), "0");

    // Listed oldest first, with no secrets.
    let list = server.get(&base, &primary).await.ok(200);
    let subs = list["_embedded"]["subaccounts"].as_array().expect("array");
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[0]["api_key"], shared["api_key"]);
    assert_eq!(subs[1]["api_key"], own["api_key"]);
    for sub in subs {
        assert_keys(sub, &subaccount_fields);
    }
    assert!(!list.to_string().contains(&shared_creds.secret));
    assert_eq!(subs[0]["balance"], Value::Null);
    assert_eq!(subs[0]["credit_limit"], Value::Null);
    assert_eq!(subs[0]["created_at"], shared["created_at"]);

    // Get one.
    let got = server
        .get(&format!("{base}/{}", own_creds.key), &primary)
        .await
        .ok(200);
    assert_keys(&got, &subaccount_fields);
    let mut expected = own.clone();
    expected.as_object_mut().expect("object").remove("secret");
    assert_eq!(got, expected);

    // Move money to the own-balance subaccount: totals count it, balances add up.
    server
        .balance_transfer(&primary, &primary, &own_creds, "30")
        .await
        .ok(200);
    let list = server.get(&base, &primary).await.ok(200);
    assert_eq!(num(&list["total_balance"]), "100");
    assert_eq!(num(&list["_embedded"]["primary_account"]["balance"]), "70");
    assert_eq!(num(&list["_embedded"]["subaccounts"][1]["balance"]), "30");

    // PATCH: rename, switch to own balance, suspend, reactivate.
    let path = format!("{base}/{}", shared_creds.key);
    let renamed = server
        .patch(&path, &primary, r#"{"name":"renamed"}"#)
        .await
        .ok(200);
    assert_keys(&renamed, &subaccount_fields);
    assert_eq!(renamed["name"], "renamed");
    assert_eq!(renamed["use_primary_account_balance"], true);
    let switched = server
        .patch(&path, &primary, r#"{"use_primary_account_balance":false}"#)
        .await
        .ok(200);
    assert_eq!(switched["use_primary_account_balance"], false);
    assert_eq!(num(&switched["balance"]), "0");
    assert_eq!(num(&switched["credit_limit"]), "0");
    let suspended = server
        .patch(&path, &primary, r#"{"suspended":true}"#)
        .await
        .ok(200);
    assert_eq!(suspended["suspended"], true);
    assert_eq!(suspended["name"], "renamed");
    let everything = server
        .patch(
            &path,
            &primary,
            r#"{"suspended":false,"name":"again","use_primary_account_balance":false}"#,
        )
        .await
        .ok(200);
    assert_eq!(everything["suspended"], false);
    assert_eq!(everything["name"], "again");
    // An empty PATCH changes nothing.
    let same = server.patch(&path, &primary, "{}").await.ok(200);
    assert_eq!(same, everything);

    // DELETE closes a settled subaccount (beyond the public API); an unsettled one is refused.
    let closed = server.delete(&path, &primary).await;
    assert_eq!(closed.status, 204, "{}", closed.text);
    assert_eq!(closed.text, "");
    let got = server.get(&path, &primary).await.ok(200);
    assert_eq!(got["closed"], true);
    server
        .delete(&format!("{base}/{}", own_creds.key), &primary)
        .await
        .problem(403, "not-settled", "Account Not Settled");
    assert_eq!(server.balance(&own_creds.key).as_deref(), Some("30"));
}

#[tokio::test]
async fn balance_transfers_are_exact() {
    let server = Server::new();
    let primary = server.funded_primary("100").await;
    let sub = server.own_sub(&primary).await;
    let path = format!("/accounts/{}/balance-transfers", primary.key);

    for _ in 0..3 {
        let response = server
            .balance_transfer(&primary, &primary, &sub, "0.1")
            .await;
        assert!(
            response.text.contains(r#""amount":0.1"#),
            "{}",
            response.text
        );
        response.ok(200);
    }
    // 0.1 three times is exactly 0.3: no floating point anywhere.
    assert_eq!(server.balance(&primary.key).as_deref(), Some("99.7"));
    assert_eq!(server.balance(&sub.key).as_deref(), Some("0.3"));

    let transfer = server
        .post(
            &path,
            &primary,
            &format!(
                r#"{{"from":"{}","to":"{}","amount":0.05,"reference":"back"}}"#,
                sub.key, primary.key
            ),
        )
        .await
        .ok(200);
    assert_keys(
        &transfer,
        &[
            "_links",
            "id",
            "from",
            "to",
            "amount",
            "reference",
            "created_at",
            "masterAccountId",
        ],
    );
    assert_uuid(&transfer["id"]);
    assert_eq!(transfer["from"], sub.key.as_str());
    assert_eq!(transfer["to"], primary.key.as_str());
    assert_eq!(num(&transfer["amount"]), "0.05");
    assert_eq!(transfer["reference"], "back");
    assert_eq!(transfer["masterAccountId"], primary.key.as_str());
    assert_timestamp(&transfer["created_at"]);
    assert_eq!(
        transfer["_links"]["self"]["href"],
        Value::String(format!("{path}/{}", text(&transfer["id"])))
    );
    assert_eq!(server.balance(&sub.key).as_deref(), Some("0.25"));
    assert_eq!(server.balance(&primary.key).as_deref(), Some("99.75"));

    // The smallest unit, and exponent notation, parsed exactly.
    let tiny = server
        .balance_transfer(&primary, &primary, &sub, "0.00000001")
        .await
        .ok(200);
    assert_eq!(num(&tiny["amount"]), "0.00000001");
    let exponent = server
        .balance_transfer(&primary, &primary, &sub, "1e-8")
        .await
        .ok(200);
    assert_eq!(num(&exponent["amount"]), "0.00000001");
    assert_eq!(server.balance(&sub.key).as_deref(), Some("0.25000002"));
    assert_eq!(server.balance(&primary.key).as_deref(), Some("99.74999998"));

    // The whole available balance may move, not a unit more.
    server
        .balance_transfer(&primary, &sub, &primary, "0.25000002")
        .await
        .ok(200);
    assert_eq!(server.balance(&sub.key).as_deref(), Some("0"));
    let list = server
        .get(&format!("/accounts/{}/subaccounts", primary.key), &primary)
        .await
        .ok(200);
    assert_eq!(num(&list["total_balance"]), "100");
}

#[tokio::test]
async fn credit_transfers_move_the_credit_line() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let sub = server.own_sub(&primary).await;
    server.set_credit_limit(&primary.key, "-100").await;

    let transfer = server
        .credit_transfer(&primary, &primary, &sub, "40")
        .await
        .ok(200);
    assert_eq!(num(&transfer["amount"]), "40");
    assert_eq!(transfer["masterAccountId"], primary.key.as_str());
    assert_eq!(
        transfer["_links"]["self"]["href"],
        Value::String(format!(
            "/accounts/{}/credit-transfers/{}",
            primary.key,
            text(&transfer["id"])
        ))
    );
    assert_eq!(server.credit_limit(&primary.key).as_deref(), Some("-60"));
    assert_eq!(server.credit_limit(&sub.key).as_deref(), Some("-40"));
    assert_eq!(server.balance(&sub.key).as_deref(), Some("0"));
    let list = server
        .get(&format!("/accounts/{}/subaccounts", primary.key), &primary)
        .await
        .ok(200);
    assert_eq!(num(&list["total_credit_limit"]), "-100");
    assert_eq!(num(&list["total_balance"]), "0");

    // The subaccount spends 10 on credit; only its unused 30 can go back.
    server
        .admin(
            "POST",
            &format!("/admin/accounts/{}/charges", sub.key),
            r#"{"amount":10}"#,
        )
        .await
        .ok(200);
    server
        .credit_transfer(&primary, &sub, &primary, "30.00000001")
        .await
        .problem(403, "valid-transfers", "Transfer amount is invalid");
    server
        .credit_transfer(&primary, &sub, &primary, "30")
        .await
        .ok(200);
    assert_eq!(server.credit_limit(&sub.key).as_deref(), Some("-10"));
    assert_eq!(server.credit_limit(&primary.key).as_deref(), Some("-90"));
    assert_eq!(server.balance(&sub.key).as_deref(), Some("-10"));

    let page = server
        .get(
            &format!("/accounts/{}/credit-transfers", primary.key),
            &primary,
        )
        .await
        .ok(200);
    assert_keys(&page, &["_links", "_embedded"]);
    assert_eq!(
        page["_links"]["self"]["href"],
        Value::String(format!("/accounts/{}/credit-transfers", primary.key))
    );
    let items = page["_embedded"]["credit_transfers"]
        .as_array()
        .expect("array");
    assert_eq!(items.len(), 2);
    assert_eq!(num(&items[0]["amount"]), "30");
    assert_eq!(items[0]["from"], sub.key.as_str());
    assert_eq!(items[1]["id"], transfer["id"]);
    assert_eq!(items[1], transfer);

    // The credit transfer list takes the same filters and pages.
    let other = server.own_sub(&primary).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let to_other = server
        .credit_transfer(&primary, &primary, &other, "5")
        .await
        .ok(200);
    let base = format!("/accounts/{}/credit-transfers", primary.key);
    let only_other = server
        .get(&format!("{base}?subaccount={}", other.key), &primary)
        .await
        .ok(200);
    assert_eq!(
        ids(&only_other, "credit_transfers"),
        [text(&to_other["id"])]
    );
    let only_sub = server
        .get(&format!("{base}?subaccount={}", sub.key), &primary)
        .await
        .ok(200);
    assert_eq!(ids(&only_sub, "credit_transfers").len(), 2);
    let since = server
        .get(
            &format!("{base}?start_date={}", text(&to_other["created_at"])),
            &primary,
        )
        .await
        .ok(200);
    assert_eq!(ids(&since, "credit_transfers"), [text(&to_other["id"])]);
    let before = server
        .get(
            &format!("{base}?end_date={}", text(&to_other["created_at"])),
            &primary,
        )
        .await
        .ok(200);
    assert_eq!(ids(&before, "credit_transfers").len(), 2);
    let first = server
        .get(&format!("{base}?page_size=1"), &primary)
        .await
        .ok(200);
    assert_eq!(ids(&first, "credit_transfers"), [text(&to_other["id"])]);
    let cursor = next_cursor(&first).expect("a next link");
    let second = server
        .get(&format!("{base}?page_size=2&cursor={cursor}"), &primary)
        .await
        .ok(200);
    assert_eq!(
        ids(&second, "credit_transfers"),
        ids(&only_sub, "credit_transfers")
    );
    assert!(second["_links"].get("next").is_none());

    // Credit transfers are not balance transfers.
    let balance = server
        .get(
            &format!("/accounts/{}/balance-transfers", primary.key),
            &primary,
        )
        .await
        .ok(200);
    assert_eq!(
        balance["_embedded"]["balance_transfers"],
        serde_json::json!([])
    );
}

fn ids(page: &Value, embedded: &str) -> Vec<String> {
    page["_embedded"][embedded]
        .as_array()
        .unwrap_or_else(|| panic!("no {embedded} in {page}"))
        .iter()
        .map(|item| text(&item["id"]))
        .collect()
}

/// The `cursor` of a page's `_links.next`, if any.
fn next_cursor(page: &Value) -> Option<String> {
    let href = page["_links"]["next"]["href"].as_str()?;
    let (_, query) = href.split_once('?').expect("a query in the next link");
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("cursor="))
        .map(str::to_string)
}

#[tokio::test]
async fn transfer_lists_filter_newest_first_and_paginate() {
    let server = Server::new();
    let primary = server.funded_primary("1000").await;
    let a = server.own_sub(&primary).await;
    let b = server.own_sub(&primary).await;
    let moves = [
        (&primary, &a, "1"),
        (&primary, &b, "2"),
        (&a, &primary, "0.5"),
        (&primary, &a, "4"),
        (&b, &primary, "1"),
    ];
    let mut made = Vec::new();
    for (from, to, amount) in moves {
        // Distinct commit instants (milliseconds) for the date filters.
        tokio::time::sleep(Duration::from_millis(12)).await;
        made.push(
            server
                .balance_transfer(&primary, from, to, amount)
                .await
                .ok(200),
        );
    }
    let id = |index: usize| text(&made[index]["id"]);
    let at = |index: usize| text(&made[index]["created_at"]);
    let base = format!("/accounts/{}/balance-transfers", primary.key);
    let list = |query: String| {
        let server = server.clone();
        let primary = primary.clone();
        let path = if query.is_empty() {
            base.clone()
        } else {
            format!("{base}?{query}")
        };
        async move { server.get(&path, &primary).await.ok(200) }
    };

    let all = list(String::new()).await;
    assert_keys(&all, &["_links", "_embedded"]);
    assert_eq!(all["_links"]["self"]["href"], base.as_str());
    assert!(all["_links"].get("next").is_none(), "{all}");
    assert_eq!(
        ids(&all, "balance_transfers"),
        [id(4), id(3), id(2), id(1), id(0)]
    );
    // Listed exactly as they were answered.
    assert_eq!(all["_embedded"]["balance_transfers"][4], made[0]);
    assert_eq!(all["_embedded"]["balance_transfers"][2], made[2]);

    // subaccount filters (repeatable).
    let only_a = list(format!("subaccount={}", a.key)).await;
    assert_eq!(ids(&only_a, "balance_transfers"), [id(3), id(2), id(0)]);
    let both = list(format!("subaccount={}&subaccount={}", a.key, b.key)).await;
    assert_eq!(ids(&both, "balance_transfers").len(), 5);

    // Dates: start inclusive, end exclusive, with or without milliseconds, percent-encoded.
    let from_second = list(format!("start_date={}", at(1))).await;
    assert_eq!(
        ids(&from_second, "balance_transfers"),
        [id(4), id(3), id(2), id(1)]
    );
    let before_fourth = list(format!("end_date={}", at(3))).await;
    assert_eq!(
        ids(&before_fourth, "balance_transfers"),
        [id(2), id(1), id(0)]
    );
    let window = list(format!(
        "start_date={}&end_date={}",
        at(1).replace(':', "%3A"),
        at(3)
    ))
    .await;
    assert_eq!(ids(&window, "balance_transfers"), [id(2), id(1)]);
    let window_and_sub = list(format!(
        "start_date={}&end_date={}&subaccount={}",
        at(1),
        at(3),
        a.key
    ))
    .await;
    assert_eq!(ids(&window_and_sub, "balance_transfers"), [id(2)]);
    let since_2000 = list("start_date=2000-01-01T00:00:00Z".into()).await;
    assert_eq!(ids(&since_2000, "balance_transfers").len(), 5);
    let before_2000 = list("end_date=2000-01-01T00:00:00Z".into()).await;
    assert_eq!(ids(&before_2000, "balance_transfers").len(), 0);
    let future = list("start_date=2100-01-01T00:00:00.000Z".into()).await;
    assert_eq!(ids(&future, "balance_transfers").len(), 0);

    // Pages of two, newest first, following the cursor.
    let first = list("page_size=2".into()).await;
    assert_eq!(ids(&first, "balance_transfers"), [id(4), id(3)]);
    let cursor = next_cursor(&first).expect("a next link");
    let second = list(format!("page_size=2&cursor={cursor}")).await;
    assert_eq!(ids(&second, "balance_transfers"), [id(2), id(1)]);
    let cursor = next_cursor(&second).expect("a next link");
    let third = list(format!("page_size=2&cursor={cursor}")).await;
    assert_eq!(ids(&third, "balance_transfers"), [id(0)]);
    assert!(third["_links"].get("next").is_none(), "{third}");
    // An exact last page has no next link.
    let exact = list("page_size=5".into()).await;
    assert!(exact["_links"].get("next").is_none(), "{exact}");

    // Paging a filtered list.
    let first = list(format!("subaccount={}&page_size=2", a.key)).await;
    assert_eq!(ids(&first, "balance_transfers"), [id(3), id(2)]);
    let cursor = next_cursor(&first).expect("a next link");
    let second = list(format!("subaccount={}&page_size=2&cursor={cursor}", a.key)).await;
    assert_eq!(ids(&second, "balance_transfers"), [id(0)]);
    assert!(second["_links"].get("next").is_none());

    // The credit transfer list is separate and empty.
    let credit = server
        .get(
            &format!("/accounts/{}/credit-transfers", primary.key),
            &primary,
        )
        .await
        .ok(200);
    assert_eq!(
        credit["_embedded"]["credit_transfers"],
        serde_json::json!([])
    );
}

#[tokio::test]
async fn unknown_or_foreign_subaccount_filters_match_nothing() {
    let server = Server::new();
    let primary = server.funded_primary("10").await;
    let sub = server.own_sub(&primary).await;
    server
        .balance_transfer(&primary, &primary, &sub, "1")
        .await
        .ok(200);
    let other = server.open_primary().await;
    let foreign = server.own_sub(&other).await;
    for key in ["zzzzzzzz", foreign.key.as_str()] {
        let page = server
            .get(
                &format!(
                    "/accounts/{}/balance-transfers?subaccount={key}",
                    primary.key
                ),
                &primary,
            )
            .await
            .ok(200);
        assert_eq!(
            ids(&page, "balance_transfers"),
            Vec::<String>::new(),
            "{key}"
        );
    }
}

#[tokio::test]
async fn next_link_keeps_the_query() {
    let server = Server::new();
    let primary = server.funded_primary("1000").await;
    let a = server.own_sub(&primary).await;
    let b = server.own_sub(&primary).await;
    let mut a_ids = Vec::new();
    for _ in 0..3 {
        let to_a = server
            .balance_transfer(&primary, &primary, &a, "1")
            .await
            .ok(200);
        a_ids.push(text(&to_a["id"]));
        server
            .balance_transfer(&primary, &primary, &b, "1")
            .await
            .ok(200);
    }
    let first = server
        .get(
            &format!(
                "/accounts/{}/balance-transfers?subaccount={}&page_size=1",
                primary.key, a.key
            ),
            &primary,
        )
        .await
        .ok(200);
    assert_eq!(ids(&first, "balance_transfers"), [a_ids[2].clone()]);
    let next = text(&first["_links"]["next"]["href"]);
    let second = server.get(&next, &primary).await.ok(200);
    // The next page of the same query: one item, to `a`.
    assert_eq!(ids(&second, "balance_transfers"), [a_ids[1].clone()]);
}

#[tokio::test]
async fn secrets_are_listed_created_read_and_revoked() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let base = format!("/accounts/{}/secrets", primary.key);

    let list = server.get(&base, &primary).await.ok(200);
    assert_keys(&list, &["_links", "_embedded"]);
    assert_eq!(list["_links"]["self"]["href"], base.as_str());
    let secrets = list["_embedded"]["secrets"].as_array().expect("array");
    assert_eq!(secrets.len(), 1);
    let first = secrets[0].clone();
    assert_keys(&first, &["_links", "id", "created_at"]);
    assert_uuid(&first["id"]);
    assert_timestamp(&first["created_at"]);
    let first_id = text(&first["id"]);
    assert_eq!(
        first["_links"]["self"]["href"],
        Value::String(format!("{base}/{first_id}"))
    );

    let created = server
        .post(&base, &primary, r#"{"secret":"Second2Secret"}"#)
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert!(!created.text.contains("Second2Secret"), "{}", created.text);
    let created = created.json();
    assert_keys(&created, &["_links", "id", "created_at"]);
    assert_timestamp(&created["created_at"]);
    let second_id = text(&created["id"]);
    assert_ne!(second_id, first_id);
    assert_eq!(
        created["_links"]["self"]["href"],
        Value::String(format!("{base}/{second_id}"))
    );

    let got = server
        .get(&format!("{base}/{second_id}"), &primary)
        .await
        .ok(200);
    assert_eq!(got, created);
    let list = server.get(&base, &primary).await.ok(200);
    assert_eq!(ids(&list, "secrets"), [first_id.clone(), second_id.clone()]);
    assert!(!list.to_string().contains("Second2Secret"));
    assert!(!list.to_string().contains("argon2"));

    // Both secrets authenticate.
    let second = primary.with_secret("Second2Secret");
    server.get(&base, &second).await.ok(200);
    server.get(&base, &primary).await.ok(200);

    // Revoke the first, with the second.
    let revoked = server.delete(&format!("{base}/{first_id}"), &second).await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    assert_eq!(revoked.text, "");
    let list = server.get(&base, &second).await.ok(200);
    assert_eq!(ids(&list, "secrets"), [second_id]);
    server.get(&base, &primary).await.unauthorized();
    server
        .get(&format!("{base}/{first_id}"), &second)
        .await
        .problem(404, "invalid-id", "Invalid ID");
}

#[tokio::test]
async fn get_balance_reports_the_paying_balance() {
    let server = Server::new();
    let primary = server.funded_primary("100").await;
    let shared = server.shared_sub(&primary).await;
    let own = server.own_sub(&primary).await;

    let balance = server.get("/account/get-balance", &primary).await.ok(200);
    assert_keys(&balance, &["value", "autoReload"]);
    assert_eq!(num(&balance["value"]), "100");
    assert_eq!(balance["autoReload"], false);

    server
        .balance_transfer(&primary, &primary, &own, "12.5")
        .await
        .ok(200);
    let of = |creds: Creds| {
        let server = server.clone();
        async move { num(&server.get("/account/get-balance", &creds).await.ok(200)["value"]) }
    };
    assert_eq!(of(primary.clone()).await, "87.5");
    assert_eq!(of(own.clone()).await, "12.5");
    // A shared subaccount reports its primary's balance.
    assert_eq!(of(shared.clone()).await, "87.5");
    server
        .admin(
            "POST",
            &format!("/admin/accounts/{}/charges", shared.key),
            r#"{"amount":0.25}"#,
        )
        .await
        .ok(200);
    assert_eq!(of(shared).await, "87.25");
    assert_eq!(of(primary).await, "87.25");
}

#[tokio::test]
async fn healthz_and_metrics() {
    let server = Server::new();
    let primary = server.open_primary().await;
    let health = server.req("GET", "/healthz").send().await.ok(200);
    assert_eq!(health["status"], "ok");
    assert!(
        health["last_sequence"].as_u64().is_some_and(|seq| seq >= 1),
        "{health}"
    );
    assert_eq!(num(&health["queue_depth"]), "0");
    assert_eq!(num(&health["last_snapshot"]), "0", "a new ledger has none");
    assert_eq!(health["snapshot_failing"], false);

    server
        .get(&format!("/accounts/{}/subaccounts", primary.key), &primary)
        .await
        .ok(200);
    server
        .get(
            &format!("/accounts/{}/subaccounts", primary.key),
            &primary.with_secret("Wrong1Secret"),
        )
        .await
        .unauthorized();
    // No route: counted too, under one label (not the path, which a client chooses).
    assert_eq!(server.req("GET", "/no/such/path").send().await.status, 404);
    // Any token is a method to hyper: the counts keep a fixed set of method labels.
    for method in ["FOOBAR1", "FOOBAR2"] {
        assert_eq!(server.req(method, "/no/such/path").send().await.status, 404);
    }
    let metrics = server.req("GET", "/metrics").send().await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|value| value.starts_with("text/plain")),
        "{:?}",
        metrics.headers
    );
    let body = &metrics.text;
    assert!(
        body.contains("# TYPE subledger_http_requests_total counter"),
        "{body}"
    );
    // The process's own figures under the standard names (read from /proc: Linux only).
    let process: &[(&str, &str)] = if std::path::Path::new("/proc/self/stat").exists() {
        &[
            ("process_cpu_seconds_total", "counter"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_threads", "gauge"),
            ("process_open_fds", "gauge"),
        ]
    } else {
        &[]
    };
    for &(name, kind) in [
        ("subledger_snapshots_total", "counter"),
        ("subledger_last_snapshot_sequence", "gauge"),
        ("subledger_snapshot_failing", "gauge"),
    ]
    .iter()
    .chain(process)
    {
        assert!(
            body.contains(&format!("# TYPE {name} {kind}\n{name} ")),
            "{body}"
        );
    }
    assert!(body.contains("\nsubledger_snapshot_failing 0\n"), "{body}");
    let lines: Vec<&str> = body.lines().collect();
    // The commit histogram is cumulative and ends with +Inf = count.
    assert!(
        body.contains("# TYPE subledger_commit_seconds histogram"),
        "{body}"
    );
    let inf = lines
        .iter()
        .find_map(|line| line.strip_prefix(r#"subledger_commit_seconds_bucket{le="+Inf"} "#))
        .expect("+Inf bucket");
    let count = lines
        .iter()
        .find_map(|line| line.strip_prefix("subledger_commit_seconds_count "))
        .expect("count");
    assert_eq!(inf, count);
    assert!(
        count.parse::<u64>().expect("a count") >= 1,
        "commits happened"
    );
    assert!(
        lines.contains(
            &r#"subledger_http_requests_total{method="GET",route="/accounts/{primary}/subaccounts",status="200"} 1"#
        ),
        "{body}"
    );
    assert!(
        lines.contains(
            &r#"subledger_http_requests_total{method="GET",route="/accounts/{primary}/subaccounts",status="401"} 1"#
        ),
        "{body}"
    );
    assert!(
        lines.contains(
            &r#"subledger_http_requests_total{method="POST",route="/admin/primaries",status="200"} 1"#
        ),
        "{body}"
    );
    assert!(
        lines.contains(
            &r#"subledger_http_requests_total{method="GET",route="unmatched",status="404"} 1"#
        ),
        "{body}"
    );
    assert!(
        lines.contains(
            &r#"subledger_http_requests_total{method="OTHER",route="unmatched",status="404"} 2"#
        ),
        "{body}"
    );
    assert!(!body.contains("FOOBAR"), "{body}");
    assert!(lines.contains(&"subledger_up 1"), "{body}");
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("subledger_commands_total ")),
        "{body}"
    );
    // Every sample line is `name{labels} value` or `name value` with a decimal value (counts
    // are integers; the histogram's sum is in seconds).
    for line in lines.iter().filter(|line| !line.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap_or_default();
        let (whole, fraction) = value.split_once('.').unwrap_or((value, "0"));
        let decimal = whole.parse::<u64>().is_ok()
            && !fraction.is_empty()
            && fraction.bytes().all(|byte| byte.is_ascii_digit());
        assert!(decimal, "{line}");
    }
}
