//! The handlers: HTTP in, commands and view queries through the `Ledger`, JSON out.
//!
//! Authorization (SPEC §8): a primary's credentials manage its own family (and its subaccounts'
//! secrets, with the subaccount key in the path); a subaccount's credentials may read itself,
//! ask its balance and manage its own secrets, nothing else. A path key that is unknown or not
//! the caller's is `404 invalid-api-key` either way, so keys cannot be probed.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use subledger_core::{
    validate_secret, Amount, ApiKey, Charge, CloseSubaccount, Command, CommandId, CreateSecret,
    CreateSubaccount, Currency, NewSecret, OpenPrimary, RevokeSecret, SecretId, SetCreditLine,
    SetSuspended, TopUp, Transfer, UpdateSubaccount,
};
use subledger_engine::{Outcome, Receipt};
use subledger_views::time::{format_rfc3339_millis, parse_rfc3339};
use subledger_views::{
    AccountSnapshot, TransferKind, TransferQuery, TransferSnapshot, PAGE_ITEMS_MAX,
};

use crate::auth::{generate_secret, Principal};
use crate::idempotency::{claim, idempotency_key, Claimed};
use crate::json::{number, parse_object, read_bytes, read_object, Fields, REQUEST_BODY_BYTES_MAX};
use crate::problem::Problem;
use crate::{prometheus, AppState};

pub(crate) type Shared = State<Arc<AppState>>;
pub(crate) type Answer = Result<Response, Problem>;

/// Attempts at a fresh api key when a generated one collides.
const KEY_ATTEMPTS_MAX: usize = 4;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// HTTP Basic with an account's api key and secret.
    Account,
    /// `Authorization: Bearer <admin token>`.
    Admin,
    /// No credentials.
    Open,
}

/// One endpoint: the single source for the router and for `/openapi.json`.
pub(crate) struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    pub handler: axum::routing::MethodRouter<Arc<AppState>>,
}

fn endpoint(
    method: &'static str,
    path: &'static str,
    access: Access,
    summary: &'static str,
    handler: axum::routing::MethodRouter<Arc<AppState>>,
) -> Endpoint {
    Endpoint {
        method,
        path,
        summary,
        access,
        handler,
    }
}

/// Every endpoint of the server.
pub(crate) fn endpoints() -> Vec<Endpoint> {
    use Access::{Account, Admin, Open};
    let mut all = vec![
        endpoint(
            "get",
            "/accounts/{primary}/subaccounts",
            Account,
            "List a primary's subaccounts with the family totals (optionally as of ?at= or ?seq=)",
            get(list_subaccounts),
        ),
        endpoint(
            "post",
            "/accounts/{primary}/subaccounts",
            Account,
            "Create a subaccount (the secret is returned here only)",
            post(create_subaccount),
        ),
        endpoint(
            "get",
            "/accounts/{primary}/subaccounts/{sub}",
            Account,
            "Get a subaccount",
            get(get_subaccount),
        ),
        endpoint(
            "patch",
            "/accounts/{primary}/subaccounts/{sub}",
            Account,
            "Rename, suspend or reactivate a subaccount, or switch it to its own balance",
            patch(update_subaccount),
        ),
        endpoint(
            "delete",
            "/accounts/{primary}/subaccounts/{sub}",
            Account,
            "Close a subaccount (balance and credit limit 0)",
            axum::routing::delete(close_subaccount),
        ),
        endpoint(
            "get",
            "/accounts/{primary}/credit-transfers",
            Account,
            "List credit transfers, newest first",
            get(list_credit_transfers),
        ),
        endpoint(
            "post",
            "/accounts/{primary}/credit-transfers",
            Account,
            "Transfer credit between a primary and its subaccount",
            post(credit_transfer),
        ),
        endpoint(
            "get",
            "/accounts/{primary}/balance-transfers",
            Account,
            "List balance transfers, newest first",
            get(list_balance_transfers),
        ),
        endpoint(
            "post",
            "/accounts/{primary}/balance-transfers",
            Account,
            "Transfer balance between a primary and its subaccount",
            post(balance_transfer),
        ),
        endpoint(
            "get",
            "/accounts/{key}/secrets",
            Account,
            "List an account's secrets",
            get(list_secrets),
        ),
        endpoint(
            "post",
            "/accounts/{key}/secrets",
            Account,
            "Add a secret (at most two)",
            post(create_secret),
        ),
        endpoint(
            "get",
            "/accounts/{key}/secrets/{id}",
            Account,
            "Get one secret's metadata",
            get(get_secret),
        ),
        endpoint(
            "delete",
            "/accounts/{key}/secrets/{id}",
            Account,
            "Revoke a secret (never the last)",
            axum::routing::delete(revoke_secret),
        ),
        endpoint(
            "get",
            "/account/get-balance",
            Account,
            "The caller's balance (legacy Account API)",
            get(get_balance),
        ),
        endpoint(
            "post",
            "/admin/primaries",
            Admin,
            "Open a primary account (the secret is returned once)",
            post(admin_open_primary),
        ),
        endpoint(
            "post",
            "/admin/accounts/{key}/top-ups",
            Admin,
            "Credit a payment to a primary",
            post(admin_top_up),
        ),
        endpoint(
            "post",
            "/admin/accounts/{key}/charges",
            Admin,
            "Charge usage to an account",
            post(admin_charge),
        ),
        endpoint(
            "put",
            "/admin/accounts/{key}/credit-limit",
            Admin,
            "Set a primary family's credit line",
            put(admin_credit_limit),
        ),
        endpoint(
            "patch",
            "/admin/accounts/{key}",
            Admin,
            "Suspend or reactivate any account",
            patch(admin_update_account),
        ),
        endpoint(
            "get",
            "/admin/log",
            Admin,
            "The portable, self-verifying log archive, streamed",
            get(admin_log),
        ),
        endpoint(
            "get",
            "/healthz",
            Open,
            "Liveness and the writer's state",
            get(healthz),
        ),
        endpoint("get", "/metrics", Open, "Prometheus metrics", get(metrics)),
        endpoint(
            "get",
            "/openapi.json",
            Open,
            "This API's OpenAPI document",
            get(openapi_json),
        ),
    ];
    all.extend(crate::reads::endpoints());
    all.extend(crate::monitor::endpoints());
    all.extend(crate::import::endpoints());
    all
}

pub(crate) fn router() -> Router<Arc<AppState>> {
    endpoints()
        .into_iter()
        .fold(Router::new(), |router, endpoint| {
            router.route(endpoint.path, endpoint.handler)
        })
}

async fn openapi_json() -> Response {
    json_response(StatusCode::OK, &crate::openapi::document())
}

pub(crate) async fn not_found() -> Problem {
    Problem::not_found("no such resource")
}

pub(crate) async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method Not Allowed",
        "this resource does not support that method",
    )
}

// --- shared helpers -----------------------------------------------------------------------

pub(crate) fn path_key(text: &str) -> Result<ApiKey, Problem> {
    text.parse().map_err(|_| Problem::invalid_api_key(text))
}

/// The caller must be this primary.
pub(crate) fn as_primary(principal: Principal, primary: &str) -> Result<ApiKey, Problem> {
    let key = path_key(primary)?;
    if principal.key == key && principal.primary.is_none() {
        Ok(key)
    } else {
        Err(Problem::invalid_api_key(primary))
    }
}

pub(crate) async fn submit(state: &AppState, command: Command) -> Result<Outcome, Problem> {
    state
        .ledger
        .submit_async(command)
        .await
        .map_err(|error| Problem::from_engine(&error))
}

pub(crate) async fn submit_ok(
    state: &AppState,
    command: Command,
    secrets: bool,
) -> Result<Receipt, Problem> {
    submit(state, command)
        .await?
        .map_err(|rejection| Problem::from_rejection(&rejection, secrets))
}

/// Submits a command that creates an account under a freshly generated api key (and a new
/// secret id), generating another key if the rules say it is taken. Returns the key used.
async fn submit_with_fresh_key(
    state: &AppState,
    hash: &subledger_core::SecretHash,
    command: impl Fn(ApiKey, NewSecret) -> Command,
) -> Result<ApiKey, Problem> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let key = state.ledger.new_api_key();
        let secret = NewSecret {
            id: state.ledger.new_secret_id(),
            hash: hash.clone(),
        };
        match submit(state, command(key, secret)).await? {
            Ok(_) => return Ok(key),
            Err(subledger_core::Rejection::KeyTaken { .. }) if attempt < KEY_ATTEMPTS_MAX => {}
            Err(rejection) => return Err(Problem::from_rejection(&rejection, false)),
        }
    }
}

/// A batch item's rejection, as the `problem` of its result.
pub(crate) fn batch_problem(state: &AppState, rejection: &subledger_core::Rejection) -> Value {
    let problem = Problem::from_rejection(rejection, false);
    json!({
        "status": problem.status.as_u16(),
        "problem": {
            "type": format!("{}#{}", state.config.problem_type_base, problem.code),
            "title": problem.title,
            "detail": problem.detail,
        },
    })
}

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response {
    (status, Json(value)).into_response()
}

pub(crate) fn money(amount: Option<Amount>) -> Value {
    amount.map_or(Value::Null, number)
}

pub(crate) fn subaccount_json(account: &AccountSnapshot) -> Value {
    json!({
        "api_key": account.key.as_str(),
        "name": account.name,
        "primary_account_api_key": account.primary.map(|key| key.to_string()),
        "use_primary_account_balance": account.uses_primary_balance(),
        "created_at": format_rfc3339_millis(account.created_at),
        "suspended": account.suspended,
        "closed": account.closed,
        "balance": money(account.balance),
        "credit_limit": money(account.credit_limit),
    })
}

pub(crate) fn primary_json(account: &AccountSnapshot) -> Value {
    json!({
        "api_key": account.key.as_str(),
        "name": account.name,
        "created_at": format_rfc3339_millis(account.created_at),
        "suspended": account.suspended,
        "balance": money(account.balance),
        "credit_limit": money(account.credit_limit),
    })
}

pub(crate) fn link(href: &str) -> Value {
    json!({ "self": { "href": href } })
}

/// A command id from the `Idempotency-Key` header (scoped to the caller and the operation), or
/// a fresh one.
pub(crate) fn command_id(
    headers: &HeaderMap,
    caller: ApiKey,
    operation: &str,
) -> Result<CommandId, Problem> {
    match idempotency_key(headers)? {
        Some(key) => {
            let mut hasher = blake3::Hasher::new();
            hasher.update(b"subledger idempotency v1\0");
            hasher.update(&caller.as_bytes());
            hasher.update(operation.as_bytes());
            hasher.update(b"\0");
            hasher.update(key.as_bytes());
            let mut id = [0u8; 16];
            id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
            Ok(CommandId::from_bytes(id))
        }
        None => Ok(CommandId::from_uuid(uuid::Uuid::new_v4())),
    }
}

// --- subaccounts ------------------------------------------------------------------------

async fn list_subaccounts(
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
    // Beyond the public API: `?at=RFC3339` or `?seq=N` gives the family as it was then.
    if let Some(point) = crate::reads::as_of(raw.as_deref(), &[])? {
        let family = crate::reads::family_at_json(&state, key, point)?;
        return Ok(json_response(StatusCode::OK, &family));
    }
    let family = state
        .ledger
        .read(|views| views.family(&key))
        .ok_or_else(|| Problem::invalid_api_key(&primary))?;
    let subaccounts: Vec<Value> = family.subaccounts.iter().map(subaccount_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "_links": link(&format!("/accounts/{key}/subaccounts")),
            "total_balance": crate::json::raw_number(&family.total_balance.to_string()),
            "total_credit_limit": crate::json::raw_number(&family.total_credit_limit.to_string()),
            "_embedded": {
                "primary_account": primary_json(&family.primary),
                "subaccounts": subaccounts,
            },
        }),
    ))
}

async fn create_subaccount(
    State(state): Shared,
    Path(primary): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let principal = state.auth.authenticate(&state.ledger, &headers).await?;
    let key = as_primary(principal, &primary)?;
    let body = read_object(body).await?;
    let claim = match claim(&state, &headers, key, "create-subaccount", &body).await? {
        Claimed::Replay(response) => return Ok(response),
        Claimed::Fresh(claim) => claim,
    };
    let mut fields = Fields::default();
    fields.only(&body, &["name", "secret", "use_primary_account_balance"]);
    let name = fields.string(&body, "name");
    if name.is_none() && !body.contains_key("name") {
        fields.fail("name", "is required");
    }
    let secret = fields.string(&body, "secret");
    if let Some(secret) = &secret {
        if let Err(error) = validate_secret(secret) {
            fields.fail("secret", error.to_string());
        }
    }
    let shared = fields
        .boolean(&body, "use_primary_account_balance")
        .unwrap_or(true);
    fields.finish(false)?;
    let plaintext = secret.unwrap_or_else(generate_secret);
    let hash = state.auth.hash_secret(plaintext.clone()).await?;
    let sub = submit_with_fresh_key(&state, &hash, |sub, secret| {
        Command::CreateSubaccount(CreateSubaccount {
            primary: key,
            key: sub,
            name: name.clone().unwrap_or_default(),
            use_primary_account_balance: shared,
            secret,
        })
    })
    .await?;
    let account = state
        .ledger
        .read(|views| views.account(&sub))
        .ok_or_else(|| Problem::internal("the new subaccount is not visible"))?;
    let mut value = subaccount_json(&account);
    if let Value::Object(map) = &mut value {
        map.insert("secret".into(), Value::String(plaintext));
    }
    if let Some(claim) = claim {
        claim.finish(StatusCode::OK, &value);
    }
    Ok(json_response(StatusCode::OK, &value))
}

/// The subaccount `sub` of `primary`, readable by the primary or by the subaccount itself.
fn readable_subaccount(
    state: &AppState,
    principal: Principal,
    primary: &str,
    sub: &str,
) -> Result<AccountSnapshot, Problem> {
    let primary_key = path_key(primary)?;
    let sub_key = path_key(sub)?;
    let allowed = (principal.key == primary_key && principal.primary.is_none())
        || (principal.key == sub_key && principal.primary == Some(primary_key));
    if !allowed {
        return Err(Problem::invalid_api_key(sub));
    }
    match state.ledger.read(|views| views.account(&sub_key)) {
        Some(account) if account.primary == Some(primary_key) => Ok(account),
        _ => Err(Problem::invalid_api_key(sub)),
    }
}

async fn get_subaccount(
    State(state): Shared,
    Path((primary, sub)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let principal = state
        .auth
        .authenticate_read(&state.ledger, &headers, &primary)
        .await?;
    let account = readable_subaccount(&state, principal, &primary, &sub)?;
    Ok(json_response(StatusCode::OK, &subaccount_json(&account)))
}

async fn update_subaccount(
    State(state): Shared,
    Path((primary, sub)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let principal = state.auth.authenticate(&state.ledger, &headers).await?;
    let key = as_primary(principal, &primary)?;
    let sub_key = path_key(&sub)?;
    let body = read_object(body).await?;
    let mut fields = Fields::default();
    fields.only(&body, &["suspended", "use_primary_account_balance", "name"]);
    let update = UpdateSubaccount {
        primary: key,
        subaccount: sub_key,
        name: fields.string(&body, "name"),
        suspended: fields.boolean(&body, "suspended"),
        use_primary_account_balance: fields.boolean(&body, "use_primary_account_balance"),
    };
    fields.finish(false)?;
    submit_ok(&state, Command::UpdateSubaccount(update), false).await?;
    let account = readable_subaccount(&state, principal, &primary, &sub)?;
    Ok(json_response(StatusCode::OK, &subaccount_json(&account)))
}

async fn close_subaccount(
    State(state): Shared,
    Path((primary, sub)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let principal = state.auth.authenticate(&state.ledger, &headers).await?;
    let key = as_primary(principal, &primary)?;
    let close = CloseSubaccount {
        primary: key,
        subaccount: path_key(&sub)?,
    };
    submit_ok(&state, Command::CloseSubaccount(close), false).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// --- transfers --------------------------------------------------------------------------

/// A transfer as the API answers it, written straight from the snapshot (no `Value` tree):
/// the single-transfer endpoints answer one per request. The fields are in the order a `Value`
/// object writes them (sorted), so a transfer reads the same alone and in a list.
#[derive(Debug, serde::Serialize)]
pub(crate) struct TransferOut<'a> {
    _links: SelfLink,
    amount: Option<serde_json::Number>,
    created_at: String,
    from: &'a str,
    id: String,
    #[serde(rename = "masterAccountId")]
    master_account_id: &'a str,
    reference: &'a str,
    to: &'a str,
}

/// `{"self": {"href": ...}}`.
#[derive(Debug, serde::Serialize)]
struct SelfLink {
    #[serde(rename = "self")]
    this: Href,
}

#[derive(Debug, serde::Serialize)]
struct Href {
    href: String,
}

impl<'a> TransferOut<'a> {
    pub(crate) fn new(kind: TransferKind, transfer: &'a TransferSnapshot) -> TransferOut<'a> {
        let collection = match kind {
            TransferKind::Balance => "balance-transfers",
            TransferKind::Credit => "credit-transfers",
        };
        TransferOut {
            _links: SelfLink {
                this: Href {
                    href: format!(
                        "/accounts/{}/{collection}/{}",
                        transfer.primary, transfer.id
                    ),
                },
            },
            // An amount's text is always a valid JSON number; `null` (as `number` gives) if not.
            amount: transfer.amount.to_string().parse().ok(),
            created_at: format_rfc3339_millis(transfer.at),
            from: transfer.from.as_str(),
            id: transfer.id.to_string(),
            master_account_id: transfer.primary.as_str(),
            reference: &transfer.reference,
            to: transfer.to.as_str(),
        }
    }
}

pub(crate) fn transfer_json(kind: TransferKind, transfer: &TransferSnapshot) -> Value {
    serde_json::to_value(TransferOut::new(kind, transfer)).unwrap_or(Value::Null)
}

/// Query parameters of the transfer lists: `start_date`, `end_date` (RFC 3339, with or without
/// milliseconds; start inclusive, end exclusive), repeated `subaccount`, and the cursor
/// pagination beyond the public API: `page_size` (default and most 1,000) and `cursor`.
pub(crate) fn transfer_query(raw: Option<&str>) -> Result<TransferQuery, Problem> {
    let mut query = TransferQuery::default();
    let mut fields = Fields::default();
    for pair in raw
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).unwrap_or_default();
        match name {
            "start_date" => match parse_rfc3339(&value) {
                Some(at) => query.start = Some(at),
                None => fields.fail("start_date", "must be an RFC 3339 date-time"),
            },
            "end_date" => match parse_rfc3339(&value) {
                Some(at) => query.end = Some(at),
                None => fields.fail("end_date", "must be an RFC 3339 date-time"),
            },
            "subaccount" => match value.parse() {
                Ok(key) => query.subaccounts.push(key),
                Err(_) => fields.fail("subaccount", "must be an api key"),
            },
            "page_size" => match value.parse::<usize>() {
                Ok(size) if (1..=PAGE_ITEMS_MAX).contains(&size) => query.limit = Some(size),
                _ => fields.fail(
                    "page_size",
                    format!("must be between 1 and {PAGE_ITEMS_MAX}"),
                ),
            },
            "cursor" => match value.parse::<u64>() {
                Ok(seq) => query.before = Some(subledger_core::Sequence(seq)),
                Err(_) => fields.fail("cursor", "must be a cursor from a previous page"),
            },
            other => fields.fail(other, "is not a recognised parameter"),
        }
    }
    fields.finish(false)?;
    Ok(query)
}

pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

async fn list_transfers(
    state: &AppState,
    primary: &str,
    headers: &HeaderMap,
    raw: Option<&str>,
    kind: TransferKind,
) -> Answer {
    let principal = state
        .auth
        .authenticate_read(&state.ledger, headers, primary)
        .await?;
    let key = as_primary(principal, primary)?;
    let query = transfer_query(raw)?;
    let page = state
        .ledger
        .read(|views| views.transfers(&key, kind, &query))
        .map_err(|error| query_problem(primary, &error))?;
    let (collection, embedded) = match kind {
        TransferKind::Balance => ("balance-transfers", "balance_transfers"),
        TransferKind::Credit => ("credit-transfers", "credit_transfers"),
    };
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|item| transfer_json(kind, item))
        .collect();
    let base = format!("/accounts/{key}/{collection}");
    Ok(paged(&base, raw, embedded, items, page.next))
}

/// One page of a list: `_links.self`, `_links.next` (the same query one page further, when there
/// is one) and the items under `_embedded.<embedded>`.
pub(crate) fn paged(
    base: &str,
    raw: Option<&str>,
    embedded: &str,
    items: Vec<Value>,
    next: Option<subledger_core::Sequence>,
) -> Response {
    let mut links = Map::new();
    links.insert("self".into(), json!({ "href": base }));
    if let Some(next) = next {
        let kept: Vec<&str> = raw
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty() && !pair.starts_with("cursor="))
            .collect();
        let mut query = kept.join("&");
        if !query.is_empty() {
            query.push('&');
        }
        links.insert(
            "next".into(),
            json!({ "href": format!("{base}?{query}cursor={}", next.0) }),
        );
    }
    json_response(
        StatusCode::OK,
        &json!({ "_links": links, "_embedded": { embedded: items } }),
    )
}

/// A report query's error, naming the parameter at fault.
pub(crate) fn query_problem(primary: &str, error: &subledger_views::QueryError) -> Problem {
    use subledger_views::QueryError;
    match error {
        QueryError::UnknownAccount(_) => Problem::invalid_api_key(primary),
        QueryError::TooManySubaccounts => Problem::field(
            "subaccount",
            format!(
                "at most {} subaccounts per query",
                subledger_views::QUERY_SUBACCOUNTS_MAX
            ),
            false,
        ),
        QueryError::EmptyRange => Problem::field("start_date", "must not be after end_date", false),
        other => Problem::bad_request(other.to_string()),
    }
}

async fn list_credit_transfers(
    State(state): Shared,
    Path(primary): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Answer {
    list_transfers(
        &state,
        &primary,
        &headers,
        raw.as_deref(),
        TransferKind::Credit,
    )
    .await
}

async fn list_balance_transfers(
    State(state): Shared,
    Path(primary): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Answer {
    list_transfers(
        &state,
        &primary,
        &headers,
        raw.as_deref(),
        TransferKind::Balance,
    )
    .await
}

/// A transfer request's body when it is exactly as documented: parsed without a `Value` tree.
/// Anything else (a wrong type, an unknown or duplicate field, a bad key or amount) is left to
/// [`transfer_fields`], which names every bad field; both accept the same bodies the same way.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferIn<'a> {
    #[serde(borrow)]
    from: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    to: std::borrow::Cow<'a, str>,
    amount: serde_json::Number,
    #[serde(default, borrow)]
    reference: Option<std::borrow::Cow<'a, str>>,
}

impl TransferIn<'_> {
    fn parse(bytes: &[u8]) -> Option<(ApiKey, ApiKey, Amount, String)> {
        let body: TransferIn<'_> = serde_json::from_slice(bytes).ok()?;
        Some((
            body.from.parse().ok()?,
            body.to.parse().ok()?,
            body.amount.as_str().parse().ok()?,
            body.reference
                .map(std::borrow::Cow::into_owned)
                .unwrap_or_default(),
        ))
    }
}

/// A transfer request's fields from a parsed body, every bad one named.
fn transfer_fields(body: &Map<String, Value>) -> Result<(ApiKey, ApiKey, Amount, String), Problem> {
    let mut fields = Fields::default();
    fields.only(body, &["from", "to", "amount", "reference"]);
    let mut account = |name: &str| {
        let text = fields.required_string(body, name)?;
        match text.parse::<ApiKey>() {
            Ok(key) => Some(key),
            Err(_) => {
                fields.fail(name, "must be an api key");
                None
            }
        }
    };
    let from = account("from");
    let to = account("to");
    let amount = fields.amount(body, "amount", true);
    let reference = fields.string(body, "reference").unwrap_or_default();
    fields.finish(false)?;
    match (from, to, amount) {
        (Some(from), Some(to), Some(amount)) => Ok((from, to, amount, reference)),
        _ => Err(Problem::internal("validated fields are missing")),
    }
}

async fn transfer(
    state: &AppState,
    primary: &str,
    headers: &HeaderMap,
    body: Body,
    kind: TransferKind,
) -> Answer {
    let principal = state.auth.authenticate(&state.ledger, headers).await?;
    let key = as_primary(principal, primary)?;
    let bytes = read_bytes(body, REQUEST_BODY_BYTES_MAX).await?;
    let (from, to, amount, reference) = match TransferIn::parse(&bytes) {
        Some(fields) => fields,
        None => transfer_fields(&parse_object(&bytes)?)?,
    };
    let operation = match kind {
        TransferKind::Balance => "balance-transfer",
        TransferKind::Credit => "credit-transfer",
    };
    let transfer = Transfer {
        id: command_id(headers, key, operation)?,
        primary: key,
        from,
        to,
        amount,
        reference: reference.clone(),
    };
    let id = transfer.id;
    let command = match kind {
        TransferKind::Balance => Command::TransferBalance(transfer),
        TransferKind::Credit => Command::TransferCredit(transfer),
    };
    let receipt = submit_ok(state, command, false).await?;
    let snapshot = TransferSnapshot {
        id,
        seq: receipt.first,
        at: receipt.at,
        from,
        to,
        amount,
        reference,
        primary: key,
    };
    Ok((StatusCode::OK, Json(TransferOut::new(kind, &snapshot))).into_response())
}

async fn credit_transfer(
    State(state): Shared,
    Path(primary): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    transfer(&state, &primary, &headers, body, TransferKind::Credit).await
}

async fn balance_transfer(
    State(state): Shared,
    Path(primary): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    transfer(&state, &primary, &headers, body, TransferKind::Balance).await
}

// --- secrets ----------------------------------------------------------------------------

/// The account whose secrets the caller may manage: itself, or (for a primary) one of its
/// subaccounts.
pub(crate) fn secret_owner(
    state: &AppState,
    principal: Principal,
    key: &str,
) -> Result<ApiKey, Problem> {
    let target = path_key(key)?;
    if principal.key == target {
        return Ok(target);
    }
    let owned = principal.primary.is_none()
        && state
            .ledger
            .read(|views| views.account(&target))
            .is_some_and(|account| account.primary == Some(principal.key));
    if owned {
        Ok(target)
    } else {
        Err(Problem::invalid_api_key(key))
    }
}

fn secret_json(key: ApiKey, id: SecretId, created_at: subledger_core::Timestamp) -> Value {
    json!({
        "_links": link(&format!("/accounts/{key}/secrets/{id}")),
        "id": id.to_string(),
        "created_at": format_rfc3339_millis(created_at),
    })
}

async fn list_secrets(State(state): Shared, Path(key): Path<String>, headers: HeaderMap) -> Answer {
    let principal = state
        .auth
        .authenticate_read(&state.ledger, &headers, &key)
        .await?;
    let owner = secret_owner(&state, principal, &key)?;
    let secrets: Vec<Value> = state
        .ledger
        .read(|views| {
            views.secrets(&owner).map(|secrets| {
                secrets
                    .iter()
                    .map(|secret| secret_json(owner, secret.id, secret.created_at))
                    .collect()
            })
        })
        .ok_or_else(|| Problem::invalid_api_key(&key))?;
    let mut response = json_response(
        StatusCode::OK,
        &json!({
            "_links": link(&format!("/accounts/{owner}/secrets")),
            "_embedded": { "secrets": secrets },
        }),
    );
    // Beyond the public API, in a header so the body stays the public shape: the secret this
    // very request authenticated with, so a client rotating its own secrets knows which one
    // not to revoke first.
    if let Some(id) = principal.secret.filter(|_| principal.key == owner) {
        if let Ok(value) = axum::http::HeaderValue::from_str(&id.to_string()) {
            response
                .headers_mut()
                .insert(AUTHENTICATED_SECRET_HEADER, value);
        }
    }
    Ok(response)
}

/// Response header of `GET /accounts/{key}/secrets`: the id of the secret the request used.
pub(crate) const AUTHENTICATED_SECRET_HEADER: &str = "subledger-authenticated-secret";

async fn create_secret(
    State(state): Shared,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let principal = state.auth.authenticate(&state.ledger, &headers).await?;
    let owner = secret_owner(&state, principal, &key)?;
    let body = read_object(body).await?;
    let operation = format!("create-secret {owner}");
    let claim = match claim(&state, &headers, principal.key, &operation, &body).await? {
        Claimed::Replay(response) => return Ok(response),
        Claimed::Fresh(claim) => claim,
    };
    let mut fields = Fields::default();
    fields.only(&body, &["secret"]);
    let secret = fields.required_string(&body, "secret");
    if let Some(secret) = &secret {
        if let Err(error) = validate_secret(secret) {
            fields.fail("secret", error.to_string());
        }
    }
    fields.finish(true)?;
    // An open account that already has its two secrets is refused by the rules; saying so
    // before hashing spares an argon2id hash (tens of milliseconds of a core, more on a busy
    // machine) per refused attempt. Only that case is short-cut, with the rules' own answer:
    // anything else (an unknown or closed account, a revocation in between) goes to the rules.
    let full = state.ledger.read(|views| {
        views.account(&owner).is_some_and(|account| !account.closed)
            && views
                .secrets(&owner)
                .is_some_and(|secrets| secrets.len() >= subledger_core::SECRETS_PER_ACCOUNT_MAX)
    });
    if full {
        return Err(Problem::from_rejection(
            &subledger_core::Rejection::ExcessSecret,
            true,
        ));
    }
    let hash = state.auth.hash_secret(secret.unwrap_or_default()).await?;
    let id = state.ledger.new_secret_id();
    let command = Command::CreateSecret(CreateSecret {
        account: owner,
        secret: NewSecret { id, hash },
    });
    let receipt = submit_ok(&state, command, true).await?;
    let value = secret_json(owner, id, receipt.at);
    if let Some(claim) = claim {
        claim.finish(StatusCode::CREATED, &value);
    }
    Ok(json_response(StatusCode::CREATED, &value))
}

fn parse_secret_id(id: &str) -> Result<SecretId, Problem> {
    id.parse().map_err(|_| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "invalid-id",
            "Invalid ID",
            format!("no secret {id}"),
        )
    })
}

async fn get_secret(
    State(state): Shared,
    Path((key, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let principal = state
        .auth
        .authenticate_read(&state.ledger, &headers, &key)
        .await?;
    let owner = secret_owner(&state, principal, &key)?;
    let id = parse_secret_id(&id)?;
    let found = state.ledger.read(|views| {
        views.secrets(&owner).and_then(|secrets| {
            secrets
                .iter()
                .find(|secret| secret.id == id)
                .map(|secret| secret.created_at)
        })
    });
    match found {
        Some(created_at) => Ok(json_response(
            StatusCode::OK,
            &secret_json(owner, id, created_at),
        )),
        None => Err(Problem::from_rejection(
            &subledger_core::Rejection::UnknownSecret { id },
            true,
        )),
    }
}

async fn revoke_secret(
    State(state): Shared,
    Path((key, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let principal = state.auth.authenticate(&state.ledger, &headers).await?;
    let owner = secret_owner(&state, principal, &key)?;
    let secret = parse_secret_id(&id)?;
    submit_ok(
        &state,
        Command::RevokeSecret(RevokeSecret {
            account: owner,
            secret,
        }),
        true,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// --- legacy balance -----------------------------------------------------------------------

async fn get_balance(State(state): Shared, headers: HeaderMap) -> Answer {
    let principal = state.auth.authenticate(&state.ledger, &headers).await?;
    let balance = state.ledger.read(|views| {
        let account = views.account(&principal.key)?;
        match (account.balance, account.primary) {
            (Some(balance), _) => Some(balance),
            // A shared subaccount reports its primary's balance.
            (None, Some(primary)) => views.account(&primary)?.balance,
            (None, None) => None,
        }
    });
    let balance = balance.ok_or_else(|| Problem::invalid_api_key(principal.key.as_str()))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "value": number(balance), "autoReload": false }),
    ))
}

// --- admin ------------------------------------------------------------------------------

async fn admin_open_primary(State(state): Shared, headers: HeaderMap, body: Body) -> Answer {
    state.auth.admin(&headers)?;
    let body = read_object(body).await?;
    let admin_key = ApiKey::from_random([b'a'; 8]);
    let claim = match claim(&state, &headers, admin_key, "open-primary", &body).await? {
        Claimed::Replay(response) => return Ok(response),
        Claimed::Fresh(claim) => claim,
    };
    let mut fields = Fields::default();
    fields.only(&body, &["name", "currency", "credit_limit", "secret"]);
    let name = fields.string(&body, "name").unwrap_or_default();
    let currency = match fields.string(&body, "currency") {
        None => Currency::EUR,
        Some(text) => text.parse().unwrap_or_else(|_| {
            fields.fail("currency", "must be an ISO 4217 code such as EUR");
            Currency::EUR
        }),
    };
    let credit_line = fields
        .amount(&body, "credit_limit", false)
        .unwrap_or(Amount::ZERO);
    let secret = fields.string(&body, "secret");
    if let Some(secret) = &secret {
        if let Err(error) = validate_secret(secret) {
            fields.fail("secret", error.to_string());
        }
    }
    fields.finish(false)?;
    let plaintext = secret.unwrap_or_else(generate_secret);
    let hash = state.auth.hash_secret(plaintext.clone()).await?;
    let key = submit_with_fresh_key(&state, &hash, |key, secret| {
        Command::OpenPrimary(OpenPrimary {
            key,
            name: name.clone(),
            currency,
            credit_line,
            secret,
        })
    })
    .await?;
    let account = state
        .ledger
        .read(|views| views.account(&key))
        .ok_or_else(|| Problem::internal("the new primary is not visible"))?;
    let mut value = primary_json(&account);
    if let Value::Object(map) = &mut value {
        map.insert(
            "currency".into(),
            Value::String(account.currency.to_string()),
        );
        map.insert("secret".into(), Value::String(plaintext));
    }
    if let Some(claim) = claim {
        claim.finish(StatusCode::OK, &value);
    }
    Ok(json_response(StatusCode::OK, &value))
}

async fn admin_money(
    state: &AppState,
    key: &str,
    headers: &HeaderMap,
    body: Body,
    charge: bool,
) -> Answer {
    state.auth.admin(headers)?;
    let account = path_key(key)?;
    let body = read_object(body).await?;
    let mut fields = Fields::default();
    fields.only(&body, &["amount", "reference"]);
    let amount = fields.amount(&body, "amount", true);
    let reference = fields.string(&body, "reference").unwrap_or_default();
    fields.finish(false)?;
    let Some(amount) = amount else {
        return Err(Problem::internal("validated fields are missing"));
    };
    let operation = if charge { "charge" } else { "top-up" };
    let id = command_id(headers, account, operation)?;
    let command = if charge {
        Command::Charge(Charge {
            id,
            account,
            amount,
            reference: reference.clone(),
        })
    } else {
        Command::TopUp(TopUp {
            id,
            primary: account,
            amount,
            reference: reference.clone(),
        })
    };
    let receipt = submit_ok(state, command, false).await?;
    let balance = state
        .ledger
        .read(|views| views.account(&account).and_then(|account| account.balance));
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "id": id.to_string(),
            "api_key": account.as_str(),
            "amount": number(amount),
            "reference": reference,
            "created_at": format_rfc3339_millis(receipt.at),
            "replayed": receipt.replayed,
            "balance": money(balance),
        }),
    ))
}

async fn admin_top_up(
    State(state): Shared,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    admin_money(&state, &key, &headers, body, false).await
}

async fn admin_charge(
    State(state): Shared,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    admin_money(&state, &key, &headers, body, true).await
}

async fn admin_credit_limit(
    State(state): Shared,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    state.auth.admin(&headers)?;
    let primary = path_key(&key)?;
    let body = read_object(body).await?;
    let mut fields = Fields::default();
    fields.only(&body, &["credit_limit"]);
    let credit_line = match body.get("credit_limit") {
        Some(Value::Number(number)) => number.to_string().parse::<Amount>().ok(),
        _ => None,
    };
    if credit_line.is_none() {
        fields.fail(
            "credit_limit",
            "must be a number, zero or negative, with at most 8 decimals",
        );
    }
    fields.finish(false)?;
    let credit_line = credit_line.unwrap_or(Amount::ZERO);
    submit_ok(
        &state,
        Command::SetCreditLine(SetCreditLine {
            primary,
            credit_line,
        }),
        false,
    )
    .await?;
    let family = state
        .ledger
        .read(|views| views.family(&primary))
        .ok_or_else(|| Problem::invalid_api_key(&key))?;
    let mut value = primary_json(&family.primary);
    if let Value::Object(map) = &mut value {
        map.insert(
            "total_credit_limit".into(),
            crate::json::raw_number(&family.total_credit_limit.to_string()),
        );
    }
    Ok(json_response(StatusCode::OK, &value))
}

async fn admin_update_account(
    State(state): Shared,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    state.auth.admin(&headers)?;
    let account = path_key(&key)?;
    let body = read_object(body).await?;
    let mut fields = Fields::default();
    fields.only(&body, &["suspended"]);
    let suspended = fields.boolean(&body, "suspended");
    if suspended.is_none() {
        fields.fail("suspended", "is required (true or false)");
    }
    fields.finish(false)?;
    let set = SetSuspended {
        account,
        suspended: suspended.unwrap_or(false),
    };
    submit_ok(&state, Command::SetSuspended(set), false).await?;
    let snapshot = state
        .ledger
        .read(|views| views.account(&account))
        .ok_or_else(|| Problem::invalid_api_key(&key))?;
    let value = if snapshot.primary.is_some() {
        subaccount_json(&snapshot)
    } else {
        primary_json(&snapshot)
    };
    Ok(json_response(StatusCode::OK, &value))
}

/// Bytes per chunk of a streamed archive.
const ARCHIVE_CHUNK_BYTES: usize = 64 * 1024;
/// Chunks buffered between the archive writer and the connection.
const ARCHIVE_CHUNKS_QUEUED_MAX: usize = 16;

/// Sends what is written to it as body chunks (blocking: runs on the blocking pool).
struct ChunkWriter {
    sender: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    buffer: Vec<u8>,
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= ARCHIVE_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(ARCHIVE_CHUNK_BYTES));
        self.sender.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

/// `GET /admin/log`: the portable, self-verifying log archive of everything durable so far,
/// streamed while the ledger keeps running (`subledger export --from URL --what log`). A
/// failure mid-stream cuts the body; the archive's trailer then reveals the truncation.
async fn admin_log(State(state): Shared, headers: HeaderMap) -> Answer {
    state.auth.admin(&headers)?;
    let reader = state.ledger.log_reader();
    let (sender, mut receiver) = tokio::sync::mpsc::channel(ARCHIVE_CHUNKS_QUEUED_MAX);
    tokio::task::spawn_blocking(move || {
        let failure = sender.clone();
        let writer = ChunkWriter {
            sender,
            buffer: Vec::with_capacity(ARCHIVE_CHUNK_BYTES),
        };
        if let Err(error) = subledger_log::archive::write_archive(reader.as_ref(), writer) {
            tracing::warn!("log archive export failed: {error}");
            let _ = failure.blocking_send(Err(std::io::Error::other(error.to_string())));
        }
    });
    let stream = futures_util::stream::poll_fn(move |context| receiver.poll_recv(context));
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

// --- operations -------------------------------------------------------------------------

async fn healthz(State(state): Shared) -> Response {
    let metrics = state.ledger.metrics();
    match state.ledger.failure() {
        None => json_response(
            StatusCode::OK,
            // Whether snapshots fail, not why: the reason may name paths, and this endpoint is
            // open (the log and `/metrics` say as much; the admin sees the log).
            &json!({
                "status": "ok",
                "last_sequence": metrics.last_seq.0,
                "queue_depth": metrics.queue_depth,
                "last_snapshot": metrics.last_snapshot.0,
                "snapshot_failing": metrics.snapshot_error.is_some(),
            }),
        ),
        Some(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "stopped", "reason": reason }),
        ),
    }
}

async fn metrics(State(state): Shared) -> Response {
    let mut response = prometheus(&state).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed reading of a transfer body never accepts what the field-by-field reading
    /// refuses, and reads what it accepts the same way.
    #[test]
    fn a_transfer_body_reads_the_same_either_way() {
        let bodies = [
            r#"{"from":"abcd1234","to":"efgh5678","amount":1.5}"#,
            r#"{"amount":1.5,"to":"efgh5678","from":"abcd1234","reference":"rent"}"#,
            r#" {"from":"abcd1234","to":"efgh5678","amount":0.00000001,"reference":null} "#,
            r#"{"from":"\u0061bcd1234","to":"efgh5678","amount":7,"reference":"a \"quoted\" é"}"#,
            r#"{"from":"abcd1234","to":"efgh5678","amount":1e2}"#,
            r#"{"from":"abcd1234","to":"efgh5678","amount":1.000000001}"#,
            r#"{"from":"abcd1234","to":"efgh5678","amount":-1}"#,
            r#"{"from":"abcd1234","to":"efgh5678","amount":"1.5"}"#,
            r#"{"from":"abcd1234","to":"efgh5678","amount":1.5,"extra":1}"#,
            r#"{"from":"abcd1234","from":"zzzz9999","to":"efgh5678","amount":1.5}"#,
            r#"{"from":"ABCD1234","to":"efgh5678","amount":1.5}"#,
            r#"{"from":null,"to":"efgh5678","amount":1.5}"#,
            r#"{"from":12345678,"to":"efgh5678","amount":1.5}"#,
            r#"{"to":"efgh5678","amount":1.5}"#,
            r#"{"from":"abcd1234","to":"efgh5678","amount":1.5,"reference":5}"#,
            r#"{"from":"abcd1234","to":"efgh5678","amount":1.5"#,
            r#"[{"from":"abcd1234","to":"efgh5678","amount":1.5}]"#,
            r#"{"from":"abcd1234","to":"efgh5678","amount":{"value":1.5}}"#,
            "",
            "{}",
        ];
        let mut typed = 0;
        for body in bodies {
            let slow = parse_object(body.as_bytes()).and_then(|map| transfer_fields(&map));
            match TransferIn::parse(body.as_bytes()) {
                Some(fast) => {
                    typed += 1;
                    assert_eq!(slow.ok(), Some(fast), "{body}");
                }
                // Only the first six bodies are read typed (`1e2` and `-1` are amounts to both
                // readings; the rules refuse a negative one later).
                // Every other one goes the field-by-field way and is refused there, except a
                // repeated field, where the last one counts (as before the typed reading).
                None if body.contains(r#""from":"zzzz9999""#) => {
                    let (from, ..) = slow.unwrap_or_else(|problem| panic!("{problem:?}"));
                    assert_eq!(from.as_str(), "zzzz9999");
                }
                None => assert!(slow.is_err(), "{body}: refused typed, accepted by fields"),
            }
        }
        assert_eq!(typed, 6);
    }

    /// A transfer answered alone (typed) and in a list (as a `Value`) is the same text.
    #[test]
    fn a_transfer_is_written_the_same_alone_and_in_a_list() {
        let snapshot = TransferSnapshot {
            id: CommandId::from_bytes([7; 16]),
            seq: subledger_core::Sequence(42),
            at: subledger_core::Timestamp(1_764_000_000_123),
            from: "abcd1234".parse().unwrap(),
            to: "efgh5678".parse().unwrap(),
            amount: "12.50000001".parse().unwrap(),
            reference: "a \"quoted\" é".into(),
            primary: "abcd1234".parse().unwrap(),
        };
        for (kind, collection) in [
            (TransferKind::Balance, "balance-transfers"),
            (TransferKind::Credit, "credit-transfers"),
        ] {
            let alone = serde_json::to_string(&TransferOut::new(kind, &snapshot)).unwrap();
            let listed = serde_json::to_string(&transfer_json(kind, &snapshot)).unwrap();
            assert_eq!(alone, listed);
            // What the `Value` built field by field (before the typed writer) gives.
            let id = snapshot.id.to_string();
            let expected = json!({
                "_links": link(&format!("/accounts/abcd1234/{collection}/{id}")),
                "id": id,
                "from": "abcd1234",
                "to": "efgh5678",
                "amount": crate::json::raw_number("12.50000001"),
                "reference": "a \"quoted\" é",
                "created_at": format_rfc3339_millis(snapshot.at),
                "masterAccountId": "abcd1234",
            });
            assert_eq!(alone, serde_json::to_string(&expected).unwrap());
        }
    }
}
