//! Monitoring reads beyond the public API, shaped for live views such as the dashboard: a
//! family's whole state with available funds and low-balance alerts in one consistent read
//! (with the sequence number it reflects, to resume the event stream from), and the operator's
//! list of primaries and stream of every event.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{json, Map, Value};
use subledger_core::ApiKey;
use subledger_engine::Filter;
use subledger_views::{AccountSnapshot, FamilySnapshot, Views, PAGE_ITEMS_MAX};

use crate::json::{raw_number, Fields};
use crate::problem::Problem;
use crate::reads::{as_of, params, stream};
use crate::routes::{
    as_primary, json_response, link, money, subaccount_json, Access, Answer, Endpoint, Shared,
};

/// Primaries per page of `GET /admin/primaries` unless `page_size` says otherwise.
pub const PRIMARIES_PAGE_DEFAULT: usize = 100;

pub(crate) fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            method: "get",
            path: "/accounts/{primary}/overview",
            summary: "A family in one consistent read: every account with available funds and \
                      low-balance alerts, the totals, and the sequence number it reflects \
                      (optionally as of ?at= or ?seq=)",
            access: Access::Account,
            handler: get(overview),
        },
        Endpoint {
            method: "get",
            path: "/admin/primaries",
            summary: "List primaries with their family totals (?page_size, ?cursor)",
            access: Access::Admin,
            handler: get(list_primaries),
        },
        Endpoint {
            method: "get",
            path: "/admin/events",
            summary: "Every committed event as Server-Sent Events (?since=SEQ or Last-Event-ID)",
            access: Access::Admin,
            handler: get(all_events),
        },
    ]
}

/// One account with what a monitor needs beside the public fields. `low_balance` is `None`
/// for past points: thresholds are current settings, not history.
fn account_json(
    account: &AccountSnapshot,
    low_balance: Option<(subledger_core::Amount, bool)>,
) -> Value {
    let available = match (account.balance, account.credit_limit) {
        (Some(balance), Some(credit_limit)) => balance.checked_sub(credit_limit),
        _ => None,
    };
    // The public subaccount fields (primaries included), plus what a monitor needs.
    let mut value = subaccount_json(account);
    if let Value::Object(map) = &mut value {
        map.insert("available".into(), money(available));
        map.insert(
            "low_balance_threshold".into(),
            money(low_balance.map(|(threshold, _)| threshold)),
        );
        map.insert(
            "low_balance".into(),
            Value::Bool(low_balance.is_some_and(|(_, below)| below)),
        );
    }
    value
}

fn family_json(views: &Views, family: &FamilySnapshot, current: bool) -> Map<String, Value> {
    let accounts: Vec<Value> = std::iter::once(&family.primary)
        .chain(&family.subaccounts)
        .map(|account| {
            let low = if current {
                views.low_balance(&account.key)
            } else {
                None
            };
            account_json(account, low)
        })
        .collect();
    let alerts = accounts
        .iter()
        .filter(|account| account["low_balance"] == Value::Bool(true))
        .count();
    let mut out = Map::new();
    out.insert(
        "primary_account_api_key".into(),
        json!(family.primary.key.as_str()),
    );
    out.insert(
        "total_balance".into(),
        raw_number(&family.total_balance.to_string()),
    );
    out.insert(
        "total_credit_limit".into(),
        raw_number(&family.total_credit_limit.to_string()),
    );
    out.insert("low_balance_alerts".into(), json!(alerts));
    out.insert("accounts".into(), Value::Array(accounts));
    out
}

/// `GET /accounts/{primary}/overview[?at=|?seq=]`: the family and its totals, each account
/// with `available` funds and its low-balance state, and `seq`, the last event the read
/// reflects (`null` for past reads): a client that then streams `/events?since=<seq>` misses
/// nothing.
async fn overview(
    State(state): Shared,
    Path(primary): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Answer {
    let principal = state
        .auth
        .authenticate_read(&state.ledger, &headers, &primary)
        .await?;
    let key = as_primary(principal, &primary)?;
    let point = as_of(raw.as_deref(), &[])?;
    let body = state.ledger.read(|views| {
        let family = match point {
            Some(point) => views.family_at(&key, point),
            None => views.family(&key),
        }?;
        let mut body = family_json(views, &family, point.is_none());
        // The last event this read reflects; a past read reflects no single stream position.
        let seq = match point {
            None => json!(views.last_seq().0),
            Some(_) => Value::Null,
        };
        body.insert("seq".into(), seq);
        body.insert(
            "as_of".into(),
            json!(if point.is_some() { "past" } else { "now" }),
        );
        Some(body)
    });
    let mut body = body.ok_or_else(|| match point {
        Some(_) => Problem::not_found(format!("{key} did not exist at that point")),
        None => Problem::invalid_api_key(&primary),
    })?;
    body.insert("_links".into(), link(&format!("/accounts/{key}/overview")));
    Ok(json_response(StatusCode::OK, &Value::Object(body)))
}

/// `GET /admin/primaries?page_size=N&cursor=KEY`: primaries in creation order with their family
/// totals; `_links.next` continues after the last one.
async fn list_primaries(
    State(state): Shared,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Answer {
    state.auth.admin(&headers)?;
    let mut fields = Fields::default();
    let mut limit = PRIMARIES_PAGE_DEFAULT;
    let mut after: Option<ApiKey> = None;
    for (name, value) in params(raw.as_deref()) {
        match name.as_str() {
            "page_size" => match value.parse::<usize>() {
                Ok(size) if (1..=PAGE_ITEMS_MAX).contains(&size) => limit = size,
                _ => fields.fail(
                    "page_size",
                    format!("must be between 1 and {PAGE_ITEMS_MAX}"),
                ),
            },
            "cursor" => match value.parse() {
                Ok(key) => after = Some(key),
                Err(_) => fields.fail("cursor", "must be a cursor from a previous page"),
            },
            other => fields.fail(other, "is not a recognised parameter"),
        }
    }
    fields.finish(false)?;
    let page = state.ledger.read(|views| {
        views
            .primaries(after.as_ref(), limit)
            .map(|(families, next)| {
                let items: Vec<Value> = families
                    .iter()
                    .map(|family| {
                        // Brief per primary: the accounts themselves are one overview away.
                        json!({
                            "primary_account_api_key": family.primary.key.as_str(),
                            "name": family.primary.name,
                            "suspended": family.primary.suspended,
                            "balance": money(family.primary.balance),
                            "credit_limit": money(family.primary.credit_limit),
                            "subaccounts": family.subaccounts,
                            "total_balance": raw_number(&family.total_balance.to_string()),
                            "total_credit_limit": raw_number(&family.total_credit_limit.to_string()),
                            "low_balance_alerts": family.low_balance_alerts,
                        })
                    })
                    .collect();
                (items, next, views.last_seq().0)
            })
    });
    let (items, next, seq) =
        page.map_err(|_| Problem::field("cursor", "must be a cursor from a previous page", false))?;
    let mut links = Map::new();
    links.insert("self".into(), json!({ "href": "/admin/primaries" }));
    if let Some(next) = next {
        links.insert(
            "next".into(),
            json!({ "href": format!("/admin/primaries?page_size={limit}&cursor={next}") }),
        );
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "_links": links,
            "seq": seq,
            "_embedded": { "primaries": items },
        }),
    ))
}

/// `GET /admin/events?since=SEQ`: every committed event, live.
async fn all_events(State(state): Shared, headers: HeaderMap, RawQuery(raw): RawQuery) -> Answer {
    state.auth.admin(&headers)?;
    stream(&state, Filter::All, raw.as_deref(), &headers, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_is_balance_minus_credit_limit_and_null_when_shared() {
        let amount = |text: &str| text.parse::<subledger_core::Amount>().ok();
        let key: ApiKey = "abcd1234".parse().unwrap_or_else(|_| unreachable!());
        let mut account = AccountSnapshot {
            key,
            primary: None,
            name: "p".into(),
            currency: subledger_core::Currency::EUR,
            balance: amount("10.5"),
            credit_limit: amount("-20"),
            suspended: false,
            closed: false,
            created_at: subledger_core::Timestamp(0),
        };
        let own = account_json(&account, amount("40").map(|threshold| (threshold, true)));
        assert_eq!(own["available"].to_string(), "30.5");
        assert_eq!(own["low_balance_threshold"].to_string(), "40");
        assert_eq!(own["low_balance"], Value::Bool(true));
        account.balance = None;
        account.credit_limit = None;
        account.primary = Some(key);
        let shared = account_json(&account, None);
        assert_eq!(shared["available"], Value::Null);
        assert_eq!(shared["low_balance"], Value::Bool(false));
    }
}
