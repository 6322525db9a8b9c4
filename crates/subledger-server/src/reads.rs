//! Beyond the public API: statements, point-in-time state, charge and top-up reports, the live
//! event stream (Server-Sent Events), batch transfers and low-balance thresholds.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use serde_json::{json, Map, Value};
use subledger_core::{ApiKey, Command, Sequence, SetLowBalanceThreshold, Transfer};
use subledger_engine::{Filter, REQUEST_COMMANDS_MAX};
use subledger_views::time::{format_rfc3339_millis, parse_rfc3339};
use subledger_views::{AsOf, PaymentKind, StatementQuery, TransferKind, PAGE_ITEMS_MAX};

use crate::auth::{Authenticator, Principal};
use crate::json::{
    number, parse_object, raw_number, read_bytes, read_object, read_object_limited, Fields,
    BATCH_BODY_BYTES_MAX,
};
use crate::problem::Problem;
use crate::routes::{
    as_primary, batch_problem, command_id, json_response, link, money, paged, path_key,
    percent_decode, primary_json, query_problem, secret_owner, subaccount_json, submit_ok,
    transfer_query, Access, Answer, Endpoint, Shared,
};
use crate::AppState;

/// Most transfers in one batch request.
pub const BATCH_TRANSFERS_MAX: usize = 1_000;
/// Most live event streams at once.
pub const EVENT_STREAMS_MAX: usize = 256;
/// How long a stream's reader waits for an event before checking that its client is there.
const STREAM_POLL_MILLIS: u64 = 1_000;
/// Events buffered per stream between the reader thread and the connection.
const STREAM_EVENTS_QUEUED_MAX: usize = 256;

pub(crate) fn endpoints() -> Vec<Endpoint> {
    use Access::{Account, Admin};
    let endpoint = |method, path, access, summary, handler| Endpoint {
        method,
        path,
        summary,
        access,
        handler,
    };
    vec![
        endpoint(
            "get",
            "/accounts/{key}/statement",
            Account,
            "An account's statement: every change to its balance or credit limit, oldest first",
            get(statement),
        ),
        endpoint(
            "get",
            "/accounts/{primary}/charges",
            Account,
            "List a family's charges, newest first",
            get(list_charges),
        ),
        endpoint(
            "get",
            "/accounts/{primary}/top-ups",
            Account,
            "List a family's top-ups, newest first",
            get(list_top_ups),
        ),
        endpoint(
            "get",
            "/accounts/{key}/events",
            Account,
            "Live committed events as Server-Sent Events (?since=SEQ or Last-Event-ID)",
            get(events),
        ),
        endpoint(
            "post",
            "/accounts/{primary}/batch-transfers",
            Account,
            "Up to 1,000 transfers in one request, one outcome each",
            post(batch_transfers),
        ),
        endpoint(
            "put",
            "/admin/accounts/{key}/low-balance-threshold",
            Admin,
            "Set or remove an account's low-balance alert threshold",
            put(admin_threshold),
        ),
        endpoint(
            "post",
            "/admin/batch-charges",
            Admin,
            "Up to 1,000 charges in one request, one outcome each",
            post(admin_batch_charges),
        ),
    ]
}

/// `name=value` pairs of a query string, decoded.
pub(crate) fn params(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name.to_string(), percent_decode(value).unwrap_or_default())
        })
        .collect()
}

/// `at=RFC3339` or `seq=N` (point-in-time queries); `None` for "now".
pub(crate) fn as_of(raw: Option<&str>, allowed: &[&str]) -> Result<Option<AsOf>, Problem> {
    let mut fields = Fields::default();
    let mut point = None;
    for (name, value) in params(raw) {
        match name.as_str() {
            "at" => match parse_rfc3339(&value) {
                Some(at) => point = Some(AsOf::At(at)),
                None => fields.fail("at", "must be an RFC 3339 date-time"),
            },
            "seq" => match value.parse::<u64>() {
                Ok(seq) => point = Some(AsOf::Seq(Sequence(seq))),
                Err(_) => fields.fail("seq", "must be a sequence number"),
            },
            other if allowed.contains(&other) => {}
            other => fields.fail(other, "is not a recognised parameter"),
        }
    }
    fields.finish(false)?;
    Ok(point)
}

/// The family as of a point (`GET /accounts/{primary}/subaccounts?at=…`).
pub(crate) fn family_at_json(
    state: &AppState,
    primary: ApiKey,
    point: AsOf,
) -> Result<Value, Problem> {
    let family = state
        .ledger
        .read(|views| views.family_at(&primary, point))
        .ok_or_else(|| Problem::not_found(format!("{primary} did not exist at that point")))?;
    let subaccounts: Vec<Value> = family.subaccounts.iter().map(subaccount_json).collect();
    Ok(json!({
        "_links": link(&format!("/accounts/{primary}/subaccounts")),
        "total_balance": raw_number(&family.total_balance.to_string()),
        "total_credit_limit": raw_number(&family.total_credit_limit.to_string()),
        "_embedded": {
            "primary_account": primary_json(&family.primary),
            "subaccounts": subaccounts,
        },
    }))
}

/// `GET /accounts/{key}/statement?start_date&end_date&page_size&cursor&order`: every change to
/// the account's balance or credit limit with the values after it, oldest first (or newest
/// first with `order=newest`).
async fn statement(
    State(state): Shared,
    Path(key): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Answer {
    let principal = state
        .auth
        .authenticate_read(&state.ledger, &headers, &key)
        .await?;
    let account = secret_owner(&state, principal, &key)?;
    let mut query = StatementQuery::default();
    let mut fields = Fields::default();
    for (name, value) in params(raw.as_deref()) {
        match name.as_str() {
            "start_date" => {
                query.start = parse_rfc3339(&value).or_else(|| {
                    fields.fail("start_date", "must be an RFC 3339 date-time");
                    None
                })
            }
            "end_date" => {
                query.end = parse_rfc3339(&value).or_else(|| {
                    fields.fail("end_date", "must be an RFC 3339 date-time");
                    None
                })
            }
            "page_size" => match value.parse::<usize>() {
                Ok(size) if (1..=PAGE_ITEMS_MAX).contains(&size) => query.limit = Some(size),
                _ => fields.fail(
                    "page_size",
                    format!("must be between 1 and {PAGE_ITEMS_MAX}"),
                ),
            },
            "cursor" => match value.parse::<u64>() {
                Ok(seq) => query.after = Some(Sequence(seq)),
                Err(_) => fields.fail("cursor", "must be a cursor from a previous page"),
            },
            // Beyond oldest first: `order=newest` pages from the latest change backwards.
            "order" => match value.as_str() {
                "oldest" => query.newest_first = false,
                "newest" => query.newest_first = true,
                _ => fields.fail("order", "must be oldest or newest"),
            },
            other => fields.fail(other, "is not a recognised parameter"),
        }
    }
    fields.finish(false)?;
    let page = state
        .ledger
        .read(|views| views.statement(&account, &query))
        .map_err(|error| query_problem(&key, &error))?;
    let entries: Vec<Value> = page
        .items
        .iter()
        .map(|line| {
            json!({
                "seq": line.seq.0,
                "created_at": format_rfc3339_millis(line.at),
                "type": line.kind.as_str(),
                "balance_change": number(line.balance_change),
                "credit_limit_change": number(line.credit_limit_change),
                "balance": number(line.balance_after),
                "credit_limit": number(line.credit_limit_after),
                "counterparty": line.counterparty.map(|other| other.to_string()),
                "id": line.command.map(|id| id.to_string()),
                "reference": line.reference,
            })
        })
        .collect();
    let base = format!("/accounts/{account}/statement");
    Ok(paged(&base, raw.as_deref(), "entries", entries, page.next))
}

async fn list_payments(
    state: &AppState,
    primary: &str,
    headers: &HeaderMap,
    raw: Option<&str>,
    kind: PaymentKind,
) -> Answer {
    let principal = state
        .auth
        .authenticate_read(&state.ledger, headers, primary)
        .await?;
    let key = as_primary(principal, primary)?;
    let query = transfer_query(raw)?;
    let page = state
        .ledger
        .read(|views| views.payments(&key, kind, &query))
        .map_err(|error| query_problem(primary, &error))?;
    let (collection, embedded) = match kind {
        PaymentKind::Charges => ("charges", "charges"),
        PaymentKind::TopUps => ("top-ups", "top_ups"),
    };
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|item| {
            json!({
                "id": item.id.to_string(),
                "api_key": item.account.as_str(),
                "payer": item.payer.as_str(),
                "amount": number(item.amount),
                "reference": item.reference,
                "created_at": format_rfc3339_millis(item.at),
                "masterAccountId": item.primary.as_str(),
            })
        })
        .collect();
    let base = format!("/accounts/{key}/{collection}");
    Ok(paged(&base, raw, embedded, items, page.next))
}

async fn list_charges(
    State(state): Shared,
    Path(primary): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Answer {
    list_payments(
        &state,
        &primary,
        &headers,
        raw.as_deref(),
        PaymentKind::Charges,
    )
    .await
}

async fn list_top_ups(
    State(state): Shared,
    Path(primary): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Answer {
    list_payments(
        &state,
        &primary,
        &headers,
        raw.as_deref(),
        PaymentKind::TopUps,
    )
    .await
}

/// What a stream delivers: a primary's whole family, or one account.
fn stream_filter(state: &AppState, principal: Principal, key: &str) -> Result<Filter, Problem> {
    let account = secret_owner(state, principal, key)?;
    let is_primary = state
        .ledger
        .read(|views| views.account(&account))
        .is_some_and(|snapshot| snapshot.primary.is_none());
    Ok(if is_primary {
        Filter::Family(account)
    } else {
        Filter::Account(account)
    })
}

/// `GET /accounts/{key}/events?since=SEQ` as Server-Sent Events: every committed event of the
/// account (a primary: its whole family) after `since` — or after `Last-Event-ID` when a client
/// reconnects, or from now — then live. Each event's `id` is its sequence number, so a client
/// that reconnects misses nothing and sees nothing twice.
async fn events(
    State(state): Shared,
    Path(key): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Answer {
    let principal = state
        .auth
        .authenticate_read(&state.ledger, &headers, &key)
        .await?;
    let filter = stream_filter(&state, principal, &key)?;
    stream(&state, filter, raw.as_deref(), &headers, Some(principal))
}

/// The events that `filter` selects as Server-Sent Events, from `?since=`, `Last-Event-ID` or
/// now, then live.
///
/// With a `principal`, the stream ends (with an `error` event) as soon as its credentials stop
/// holding: a revoked secret or a suspended account reads no further.
pub(crate) fn stream(
    state: &AppState,
    filter: Filter,
    raw: Option<&str>,
    headers: &HeaderMap,
    principal: Option<Principal>,
) -> Answer {
    let mut since = None;
    for (name, value) in params(raw) {
        match name.as_str() {
            "since" => {
                since = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| Problem::field("since", "must be a sequence number", false))?,
                )
            }
            other => {
                return Err(Problem::field(
                    other,
                    "is not a recognised parameter",
                    false,
                ))
            }
        }
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let after = resume
        .or(since)
        .unwrap_or_else(|| state.ledger.metrics().last_seq.0);
    let permit = Arc::clone(&state.streams)
        .try_acquire_owned()
        .map_err(|_| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "Service Unavailable",
                format!("at most {EVENT_STREAMS_MAX} event streams at once"),
            )
        })?;
    let mut feed = state
        .ledger
        .feed(Sequence(after.saturating_add(1)), filter)
        .map_err(|error| Problem::internal(error.to_string()))?;
    let (sender, mut receiver) =
        tokio::sync::mpsc::channel::<Result<SseEvent, Infallible>>(STREAM_EVENTS_QUEUED_MAX);
    let ledger = Arc::clone(&state.ledger);
    // A plain thread per stream: the feed blocks while waiting, and long-lived streams must not
    // occupy tokio's blocking pool (argon2 needs it).
    let spawned = std::thread::Builder::new()
        .name("subledger-sse".into())
        .spawn(move || {
            let _permit = permit;
            loop {
                let revoked = principal
                    .as_ref()
                    .is_some_and(|principal| !Authenticator::still_valid(&ledger, principal));
                if revoked {
                    let _ = sender.blocking_send(Ok(SseEvent::default()
                        .event("error")
                        .data("the credentials of this stream were revoked or suspended")));
                    return;
                }
                match feed.recv_timeout(Duration::from_millis(STREAM_POLL_MILLIS)) {
                    Ok(Some(notice)) => {
                        let fields = ledger.read(|views| {
                            subledger_views::json::event_fields(views, &notice.event)
                        });
                        let data = json!({
                            "seq": notice.seq.0,
                            "created_at": format_rfc3339_millis(notice.at),
                            "type": notice.event.kind(),
                            "event": fields,
                        });
                        let event = SseEvent::default()
                            .id(notice.seq.0.to_string())
                            .event(notice.event.kind())
                            .data(data.to_string());
                        if sender.blocking_send(Ok(event)).is_err() {
                            return;
                        }
                    }
                    Ok(None) if sender.is_closed() => return,
                    Ok(None) => {}
                    Err(error) => {
                        let _ = sender.blocking_send(Ok(SseEvent::default()
                            .event("error")
                            .data(error.to_string())));
                        return;
                    }
                }
            }
        });
    spawned.map_err(|error| Problem::internal(format!("cannot start a stream: {error}")))?;
    let stream = futures_util::stream::poll_fn(move |context| receiver.poll_recv(context));
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `POST /accounts/{primary}/batch-transfers` `{"transfers":[{"type":"balance"|"credit", "from",
/// "to", "amount", "reference"?}, …]}`: up to 1,000 transfers decided in order in one group
/// commit, each with its own outcome (`{"status":200,"transfer":{…}}` or
/// `{"status":4xx,"problem":{…}}`). With an `Idempotency-Key`, each transfer's id derives from
/// the key and its position, so a retried batch applies nothing twice.
async fn batch_transfers(
    State(state): Shared,
    Path(primary): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Answer {
    let principal = state.auth.authenticate(&state.ledger, &headers).await?;
    let key = as_primary(principal, &primary)?;
    // `?compact=true`: each success is `{"id", "status"}` instead of the whole transfer.
    let mut compact = false;
    for (name, value) in params(raw.as_deref()) {
        match (name.as_str(), value.as_str()) {
            ("compact", "true") => compact = true,
            ("compact", "false") => compact = false,
            ("compact", _) => {
                return Err(Problem::field("compact", "must be true or false", false))
            }
            (other, _) => {
                return Err(Problem::field(
                    other,
                    "is not a recognised parameter",
                    false,
                ))
            }
        }
    }
    let bytes = read_bytes(body, BATCH_BODY_BYTES_MAX).await?;
    let (commands, kinds) = match fast_batch(&bytes, &headers, key) {
        Some(parsed) => parsed?,
        None => slow_batch(&parse_object(&bytes)?, &headers, key)?,
    };
    answer_batch(&state, key, commands, kinds, compact).await
}

/// A parsed batch: the commands and each one's kind.
type ParsedBatch = (Vec<Command>, Vec<TransferKind>);

/// The common case, parsed straight into typed rows (no `serde_json::Value` per transfer):
/// `None` when anything is off, so that [`slow_batch`] can name every bad field.
fn fast_batch(
    bytes: &[u8],
    headers: &HeaderMap,
    key: ApiKey,
) -> Option<Result<ParsedBatch, Problem>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request<'a> {
        #[serde(borrow)]
        transfers: Vec<Item<'a>>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        from: &'a str,
        to: &'a str,
        amount: serde_json::Number,
        #[serde(default)]
        reference: Option<String>,
    }
    if bytes.len() > BATCH_BODY_BYTES_MAX {
        return None;
    }
    let request: Request<'_> = serde_json::from_slice(bytes).ok()?;
    if request.transfers.is_empty() || request.transfers.len() > BATCH_TRANSFERS_MAX {
        return None;
    }
    let mut commands = Vec::with_capacity(request.transfers.len());
    let mut kinds = Vec::with_capacity(request.transfers.len());
    for (index, item) in request.transfers.into_iter().enumerate() {
        let kind = match item.kind {
            "balance" => TransferKind::Balance,
            "credit" => TransferKind::Credit,
            _ => return None,
        };
        let amount = item.amount.to_string().parse().ok()?;
        let reference = item.reference.unwrap_or_default();
        if subledger_core::validate_reference(&reference).is_err() {
            return None;
        }
        let id = match command_id(headers, key, &format!("batch-transfer {index}")) {
            Ok(id) => id,
            Err(problem) => return Some(Err(problem)),
        };
        let transfer = Transfer {
            id,
            primary: key,
            from: item.from.parse().ok()?,
            to: item.to.parse().ok()?,
            amount,
            reference,
        };
        kinds.push(kind);
        commands.push(match kind {
            TransferKind::Balance => Command::TransferBalance(transfer),
            TransferKind::Credit => Command::TransferCredit(transfer),
        });
    }
    Some(Ok((commands, kinds)))
}

/// Field-by-field parsing of a batch, naming every bad field.
fn slow_batch(
    body: &Map<String, Value>,
    headers: &HeaderMap,
    key: ApiKey,
) -> Result<ParsedBatch, Problem> {
    let mut fields = Fields::default();
    fields.only(body, &["transfers"]);
    let items = fields.items(body, "transfers", BATCH_TRANSFERS_MAX, "transfers");
    fields.finish(false)?;
    let mut commands = Vec::with_capacity(items.len());
    let mut kinds = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let prefix = |name: &str| format!("transfers[{index}].{name}");
        let Value::Object(item) = item else {
            return Err(Problem::field(
                &format!("transfers[{index}]"),
                "must be an object",
                false,
            ));
        };
        let mut fields = Fields::default();
        fields.only(item, &["type", "from", "to", "amount", "reference"]);
        let kind = match fields.required_string(item, "type").as_deref() {
            Some("balance") => Some(TransferKind::Balance),
            Some("credit") => Some(TransferKind::Credit),
            Some(_) => {
                fields.fail("type", "must be \"balance\" or \"credit\"");
                None
            }
            None => None,
        };
        let mut account = |name: &str| {
            let text = fields.required_string(item, name)?;
            text.parse::<ApiKey>()
                .map_err(|_| fields.fail(name, "must be an api key"))
                .ok()
        };
        let from = account("from");
        let to = account("to");
        let amount = fields.amount(item, "amount", true);
        let reference = fields.string(item, "reference").unwrap_or_default();
        if !fields.invalid.is_empty() {
            let renamed = fields
                .invalid
                .into_iter()
                .map(|mut field| {
                    field.name = prefix(&field.name);
                    field
                })
                .collect();
            return Err(Problem::validation(renamed, false));
        }
        let (Some(kind), Some(from), Some(to), Some(amount)) = (kind, from, to, amount) else {
            return Err(Problem::internal("validated fields are missing"));
        };
        let operation = format!("batch-transfer {index}");
        let transfer = Transfer {
            id: command_id(headers, key, &operation)?,
            primary: key,
            from,
            to,
            amount,
            reference,
        };
        kinds.push(kind);
        commands.push(match kind {
            TransferKind::Balance => Command::TransferBalance(transfer),
            TransferKind::Credit => Command::TransferCredit(transfer),
        });
    }
    Ok((commands, kinds))
}

/// Submits a parsed batch and answers one outcome per transfer.
async fn answer_batch(
    state: &AppState,
    key: ApiKey,
    commands: Vec<Command>,
    kinds: Vec<TransferKind>,
    compact: bool,
) -> Answer {
    debug_assert!(commands.len() <= REQUEST_COMMANDS_MAX);
    let outcomes = state
        .ledger
        .submit_batch_async(commands.clone())
        .await
        .map_err(|error| Problem::from_engine(&error))?;
    // Typed rows rather than `serde_json::Value`: a batch answers hundreds of transfers, and
    // building and dropping a map per transfer dominated the endpoint's profile. Fields are
    // declared in the order `Value` would sort them, so the bytes match the single endpoints.
    let collection = |kind: &TransferKind| match kind {
        TransferKind::Balance => "balance-transfers",
        TransferKind::Credit => "credit-transfers",
    };
    let mut results = Vec::with_capacity(outcomes.len());
    for (outcome, (command, kind)) in outcomes.iter().zip(commands.iter().zip(&kinds)) {
        let (Command::TransferBalance(transfer) | Command::TransferCredit(transfer)) = command
        else {
            continue;
        };
        results.push(match outcome {
            Ok(_) if compact => BatchResult {
                id: Some(transfer.id.to_string()),
                problem: None,
                status: 200,
                transfer: None,
            },
            Ok(receipt) => BatchResult {
                id: None,
                problem: None,
                status: 200,
                transfer: Some(TransferRow {
                    links: SelfLink {
                        self_link: Href {
                            href: format!("/accounts/{key}/{}/{}", collection(kind), transfer.id),
                        },
                    },
                    amount: amount_number(transfer.amount),
                    created_at: format_rfc3339_millis(receipt.at),
                    from: transfer.from.to_string(),
                    id: transfer.id.to_string(),
                    master_account_id: key.to_string(),
                    reference: transfer.reference.clone(),
                    to: transfer.to.to_string(),
                }),
            },
            Err(rejection) => {
                let problem = Problem::from_rejection(rejection, false);
                BatchResult {
                    id: None,
                    problem: Some(BatchProblem {
                        detail: problem.detail,
                        title: problem.title,
                        kind: format!("{}#{}", state.config.problem_type_base, problem.code),
                    }),
                    status: problem.status.as_u16(),
                    transfer: None,
                }
            }
        });
    }
    Ok((StatusCode::OK, axum::Json(BatchAnswer { results })).into_response())
}

fn amount_number(amount: subledger_core::Amount) -> serde_json::Number {
    amount
        .to_string()
        .parse()
        .unwrap_or_else(|_| serde_json::Number::from(0))
}

#[derive(serde::Serialize)]
struct BatchAnswer {
    results: Vec<BatchResult>,
}

#[derive(serde::Serialize)]
struct BatchResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<BatchProblem>,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    transfer: Option<TransferRow>,
}

#[derive(serde::Serialize)]
struct BatchProblem {
    detail: String,
    title: &'static str,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(serde::Serialize)]
struct Href {
    href: String,
}

#[derive(serde::Serialize)]
struct SelfLink {
    #[serde(rename = "self")]
    self_link: Href,
}

#[derive(serde::Serialize)]
struct TransferRow {
    #[serde(rename = "_links")]
    links: SelfLink,
    amount: serde_json::Number,
    created_at: String,
    from: String,
    id: String,
    #[serde(rename = "masterAccountId")]
    master_account_id: String,
    reference: String,
    to: String,
}

/// `PUT /admin/accounts/{key}/low-balance-threshold` `{"threshold": number | null}`.
async fn admin_threshold(
    State(state): Shared,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    state.auth.admin(&headers)?;
    let account = path_key(&key)?;
    let body = read_object(body).await?;
    let mut fields = Fields::default();
    fields.only(&body, &["threshold"]);
    if !body.contains_key("threshold") {
        fields.fail("threshold", "is required (a number, or null to remove it)");
    }
    let threshold = fields.amount(&body, "threshold", false);
    fields.finish(false)?;
    let set = SetLowBalanceThreshold { account, threshold };
    submit_ok(&state, Command::SetLowBalanceThreshold(set), false).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "api_key": account.as_str(), "threshold": money(threshold) }),
    ))
}

/// `POST /admin/batch-charges` `{"charges":[{"account", "amount", "reference"?}, …]}`: up to
/// 1,000 charges decided in order in one group commit, each with its own outcome. With an
/// `Idempotency-Key`, each charge's id derives from the key and its position.
async fn admin_batch_charges(State(state): Shared, headers: HeaderMap, body: Body) -> Answer {
    state.auth.admin(&headers)?;
    let body = read_object_limited(body, BATCH_BODY_BYTES_MAX).await?;
    let mut fields = Fields::default();
    fields.only(&body, &["charges"]);
    let items = fields.items(&body, "charges", BATCH_TRANSFERS_MAX, "charges");
    fields.finish(false)?;
    let admin = ApiKey::from_random([b'a'; 8]);
    let mut commands = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let Value::Object(item) = item else {
            return Err(Problem::field(
                &format!("charges[{index}]"),
                "must be an object",
                false,
            ));
        };
        let mut fields = Fields::default();
        fields.only(item, &["account", "amount", "reference"]);
        let account = fields.required_string(item, "account");
        let account = match account.map(|text| text.parse::<ApiKey>()) {
            Some(Ok(key)) => Some(key),
            Some(Err(_)) => {
                fields.fail("account", "must be an api key");
                None
            }
            None => None,
        };
        let amount = fields.amount(item, "amount", true);
        let reference = fields.string(item, "reference").unwrap_or_default();
        if !fields.invalid.is_empty() {
            let renamed = fields
                .invalid
                .into_iter()
                .map(|mut field| {
                    field.name = format!("charges[{index}].{}", field.name);
                    field
                })
                .collect();
            return Err(Problem::validation(renamed, false));
        }
        let (Some(account), Some(amount)) = (account, amount) else {
            return Err(Problem::internal("validated fields are missing"));
        };
        let id = command_id(&headers, admin, &format!("batch-charge {index}"))?;
        commands.push(Command::Charge(subledger_core::Charge {
            id,
            account,
            amount,
            reference,
        }));
    }
    let outcomes = state
        .ledger
        .submit_batch_async(commands.clone())
        .await
        .map_err(|error| Problem::from_engine(&error))?;
    let results: Vec<Value> = outcomes
        .iter()
        .zip(&commands)
        .map(|(outcome, command)| {
            let Command::Charge(charge) = command else {
                return json!({ "status": 500 });
            };
            match outcome {
                Ok(receipt) => json!({
                    "status": 200,
                    "charge": {
                        "id": charge.id.to_string(),
                        "api_key": charge.account.as_str(),
                        "amount": number(charge.amount),
                        "reference": charge.reference,
                        "created_at": format_rfc3339_millis(receipt.at),
                    },
                }),
                Err(rejection) => batch_problem(&state, rejection),
            }
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "results": results }),
    ))
}
