//! `--http URL`: the same workloads through a running server's HTTP API.
//!
//! Setup imports the families with `POST /admin/import` (keys laid out as in-process runs, one
//! argon2id hash computed here once, so the server hashes nothing), tops the primaries up and
//! funds the own-balance subaccounts with batch transfers — which also makes the server verify
//! each primary's secret once, before the clock starts. The load then comes from closed-loop
//! clients, each a tokio task with its own keep-alive HTTP/1.1 connection, waiting for each
//! answer before sending the next request:
//! - single requests (`batch_size` 1): transfers as the primary (Basic), charges through the
//!   admin API, suspensions as PATCH, secret rotations as POST/DELETE on `/secrets`;
//! - batches: `tigerbeetle` sends `batch_size` transfers of one family per
//!   `POST /accounts/{primary}/batch-transfers?compact=true`; `vonage` sends its charges as
//!   `POST /admin/batch-charges` and its transfers grouped by family, the rare others singly.
//!
//! A 2xx answer (or batch item) counts as committed, a 4xx as rejected by the rules; a 5xx or a
//! broken connection stops the run with an error. What only the server knows (durability,
//! disk, recovery) is left out of the report; group-commit size and events come from
//! `/metrics`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use serde::Deserialize;
use subledger_core::{Amount, ApiKey, Command, SecretId, Transfer};

use crate::{
    client_plan, latency_of, new_histogram, request_size, validate, BenchError, BenchOptions,
    BenchReport, ClientResult, Generator, Layout, Workload, TIMELINE_SAMPLE_MILLIS,
};

/// The secret every benchmark account gets.
const BENCH_SECRET: &str = "BenchSecret42";
/// The secret that secret rotations add.
const ROTATED_SECRET: &str = "BenchRotated42";
/// Most accounts per import request (the server's limit).
const IMPORT_ACCOUNTS_MAX: usize = 1_000;
/// Most items per batch request (the server's limit).
const HTTP_BATCH_ITEMS_MAX: usize = 1_000;
/// Concurrent requests during setup.
const SETUP_CONNECTIONS: usize = 4;
/// Most clients over HTTP: one connection each, well below the server's 4,096 connections.
pub const HTTP_CLIENTS_MAX: usize = 1_024;
/// Longest wait for one answer.
const REQUEST_SECONDS_MAX: u64 = 60;
/// Most characters of an answer quoted in an error: an import's refusal lists a result per
/// account, hundreds of kilobytes nobody reads on a terminal.
const ERROR_EXCERPT_CHARS_MAX: usize = 400;

/// An answer's text for an error message, cut to [`ERROR_EXCERPT_CHARS_MAX`] characters.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(ERROR_EXCERPT_CHARS_MAX) {
        Some((end, _)) => format!("{}… ({} bytes in all)", &text[..end], body.len()),
        None => text.into_owned(),
    }
}

/// A server to load, and how to reach its admin API. `Debug` leaves the token out.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `http://host:port` (plain HTTP: the harness measures the ledger, not TLS).
    pub url: String,
    pub admin_token: String,
    /// Argon2id cost of the imported secret hash; the server accepts no weaker hash than it
    /// makes itself, and verifies each primary's secret once during setup at this cost.
    pub hash_memory_kib: u32,
    pub hash_passes: u32,
}

impl std::fmt::Debug for HttpTarget {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HttpTarget")
            .field("url", &self.url)
            .field("admin_token", &"<redacted>")
            .field("hash_memory_kib", &self.hash_memory_kib)
            .field("hash_passes", &self.hash_passes)
            .finish()
    }
}

impl HttpTarget {
    pub fn new(url: String, admin_token: String) -> HttpTarget {
        HttpTarget {
            url,
            admin_token,
            hash_memory_kib: 19 * 1024,
            hash_passes: 2,
        }
    }
}

fn failed(why: impl Into<String>) -> BenchError {
    BenchError::Http(why.into())
}

fn address(url: &str) -> Result<(SocketAddr, String), BenchError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| BenchError::Options("--http takes an http://host:port URL".into()))?;
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') || authority.is_empty() {
        return Err(BenchError::Options(
            "--http takes the server's base URL, without a path".into(),
        ));
    }
    let address = authority
        .to_socket_addrs()
        .map_err(|error| BenchError::Options(format!("cannot resolve {authority}: {error}")))?
        .next()
        .ok_or_else(|| BenchError::Options(format!("{authority} resolves to nothing")))?;
    Ok((address, authority.to_string()))
}

/// Who a request is made as.
#[derive(Debug, Clone, Copy)]
enum As {
    Admin,
    Primary(ApiKey),
}

/// One request of the load.
#[derive(Debug)]
struct Call {
    method: &'static str,
    path: String,
    caller: As,
    body: Option<String>,
    /// Items in a batch request (their statuses are in the answer), 0 for a single request.
    items: usize,
    /// Whether this creates or revokes a secret (see [`SecretStep`]).
    secret: SecretStep,
}

/// A secret rotation's steps over HTTP. The workload revokes secrets it created, by the ids it
/// gave them; the server gives its own ids, read from the creation's answer, and a revocation
/// is sent with the server's id when its creation was answered (else with the workload's id,
/// which the server refuses as unknown, as in process for a creation the rules refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecretStep {
    None,
    /// Creates the secret the workload calls by this id.
    Create(SecretId),
    /// Revokes the secret the workload calls by this id, of this account.
    Revoke(ApiKey, SecretId),
}

/// Most secret ids a client remembers between a creation and its revocation.
const SECRET_IDS_KEPT_MAX: usize = 1_024;

/// One keep-alive connection.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    admin: String,
    secret: String,
}

impl Connection {
    async fn open(
        address: SocketAddr,
        host: &str,
        target: &HttpTarget,
    ) -> Result<Connection, BenchError> {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|error| failed(format!("cannot connect to {address}: {error}")))?;
        // Small requests, answered one at a time: Nagle would add a delay to each.
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|error| failed(format!("HTTP handshake: {error}")))?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes; errors surface as failed
            // requests on the sender.
            let _ = connection.await;
        });
        Ok(Connection {
            sender,
            host: host.to_string(),
            admin: format!("Bearer {}", target.admin_token),
            secret: BENCH_SECRET.to_string(),
        })
    }

    fn authorization(&self, caller: As) -> String {
        match caller {
            As::Admin => self.admin.clone(),
            As::Primary(key) => {
                let pair = format!("{key}:{}", self.secret);
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
        }
    }

    /// Sends one request; the status and body of the answer.
    async fn send(&mut self, call: &Call) -> Result<(u16, Bytes), BenchError> {
        let mut request = hyper::Request::builder()
            .method(call.method)
            .uri(&call.path)
            .header("host", &self.host)
            .header("authorization", self.authorization(call.caller));
        if call.body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(
                call.body.clone().unwrap_or_default(),
            )))
            .map_err(|error| failed(format!("building a request: {error}")))?;
        let exchange = async {
            self.sender
                .ready()
                .await
                .map_err(|error| failed(format!("the connection closed: {error}")))?;
            let response = self
                .sender
                .send_request(request)
                .await
                .map_err(|error| failed(format!("{} {}: {error}", call.method, call.path)))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|error| failed(format!("reading an answer: {error}")))?
                .to_bytes();
            Ok::<_, BenchError>((status, body))
        };
        tokio::time::timeout(Duration::from_secs(REQUEST_SECONDS_MAX), exchange)
            .await
            .map_err(|_| {
                failed(format!(
                    "{} {} got no answer in time",
                    call.method, call.path
                ))
            })?
    }

    /// Sends a setup request that must succeed.
    async fn must(&mut self, call: &Call) -> Result<Bytes, BenchError> {
        let (status, body) = self.send(call).await?;
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(BenchError::Setup(format!(
                "{} {} answered {status}: {}",
                call.method,
                call.path,
                excerpt(&body)
            )))
        }
    }
}

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<ItemStatus>,
}

#[derive(Deserialize)]
struct ItemStatus {
    status: u16,
}

/// The status of each item of a batch answer.
fn statuses(body: &[u8]) -> Result<impl Iterator<Item = u16>, BenchError> {
    let answer: BatchAnswer = serde_json::from_slice(body)
        .map_err(|error| failed(format!("a batch answer is not as documented: {error}")))?;
    Ok(answer.results.into_iter().map(|item| item.status))
}

/// (committed, rejected) among a batch answer's items, or why a setup batch failed.
fn batch_statuses(body: &[u8]) -> Result<(u64, u64), BenchError> {
    let statuses: Vec<u16> = statuses(body)?.collect();
    let committed = statuses
        .iter()
        .filter(|status| (200..300).contains(*status))
        .count();
    let total = statuses.len();
    Ok((
        u64::try_from(committed).unwrap_or(0),
        u64::try_from(total - committed).unwrap_or(0),
    ))
}

fn import_hash(target: &HttpTarget) -> Result<String, BenchError> {
    let params = Params::new(target.hash_memory_kib, target.hash_passes, 1, None)
        .map_err(|error| BenchError::Options(format!("argon2 parameters: {error}")))?;
    let salt = SaltString::from_b64("c3VibGVkZ2VyYmVuY2g")
        .map_err(|error| BenchError::Setup(format!("salt: {error}")))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(BENCH_SECRET.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| BenchError::Setup(format!("hashing: {error}")))
}

/// Runs setup calls over a few connections; each must succeed.
async fn run_setup(
    address: SocketAddr,
    host: &str,
    target: &HttpTarget,
    calls: Vec<Call>,
) -> Result<(), BenchError> {
    let calls = Arc::new(std::sync::Mutex::new(calls.into_iter()));
    let mut tasks = Vec::new();
    for _ in 0..SETUP_CONNECTIONS {
        let calls = Arc::clone(&calls);
        let mut connection = Connection::open(address, host, target).await?;
        tasks.push(tokio::spawn(async move {
            loop {
                let next = calls.lock().ok().and_then(|mut calls| calls.next());
                let Some(call) = next else {
                    return Ok::<_, BenchError>(());
                };
                let body = connection.must(&call).await?;
                if call.items > 0 {
                    let (_, refused) = batch_statuses(&body)?;
                    if refused > 0 {
                        return Err(BenchError::Setup(format!(
                            "{} of {} items of {} were refused: {}",
                            refused,
                            call.items,
                            call.path,
                            excerpt(&body)
                        )));
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await
            .map_err(|_| BenchError::Setup("a setup task failed".into()))??;
    }
    Ok(())
}

fn amount_text(amount: Amount) -> String {
    amount.to_string()
}

/// The families, imported with their keys; primaries topped up; own-balance subaccounts funded.
async fn setup(
    address: SocketAddr,
    host: &str,
    target: &HttpTarget,
    options: &BenchOptions,
    layout: Layout,
) -> Result<(), BenchError> {
    let hash = import_hash(target)?;
    let mut accounts = Vec::with_capacity(layout.accounts());
    for family in 0..layout.families {
        accounts.push(serde_json::json!({
            "api_key": layout.primary(family).as_str(),
            "name": format!("bench primary {family}"),
            "credit_limit": serde_json::Number::from(-1_000_000),
            "secret_hash": hash,
        }));
        for sub in 0..layout.subaccounts {
            accounts.push(serde_json::json!({
                "api_key": layout.subaccount(family, sub).as_str(),
                "primary_account_api_key": layout.primary(family).as_str(),
                "name": format!("bench sub {sub}"),
                "use_primary_account_balance": !layout.own_balance(options.workload, sub),
                "secret_hash": hash,
            }));
        }
    }
    // In order: a chunk's subaccounts may need a primary from an earlier chunk.
    let mut connection = Connection::open(address, host, target).await?;
    for chunk in accounts.chunks(IMPORT_ACCOUNTS_MAX) {
        let call = Call {
            method: "POST",
            path: "/admin/import".into(),
            caller: As::Admin,
            body: Some(serde_json::json!({ "accounts": chunk }).to_string()),
            items: chunk.len(),
            secret: SecretStep::None,
        };
        let body = connection.must(&call).await.map_err(|error| match error {
            BenchError::Setup(why) if why.contains("taken") => BenchError::Setup(format!(
                "the server already holds benchmark accounts: run against an empty server ({why})"
            )),
            other => other,
        })?;
        let (_, refused) = batch_statuses(&body)?;
        if refused > 0 {
            let taken = statuses(&body)?.filter(|status| *status == 409).count();
            if u64::try_from(taken).is_ok_and(|taken| taken == refused) {
                return Err(BenchError::Setup(format!(
                    "the server already holds benchmark accounts ({taken} of {} api keys \
                     imported together are taken): run against an empty server",
                    chunk.len()
                )));
            }
            return Err(BenchError::Setup(format!(
                "the import was refused ({refused} accounts) — run against an empty server: {}",
                excerpt(&body)
            )));
        }
    }
    let top_ups: Vec<Call> = (0..layout.families)
        .map(|family| Call {
            method: "POST",
            path: format!("/admin/accounts/{}/top-ups", layout.primary(family)),
            caller: As::Admin,
            body: Some(r#"{"amount":1000000000}"#.into()),
            items: 0,
            secret: SecretStep::None,
        })
        .collect();
    run_setup(address, host, target, top_ups).await?;
    let mut funding = Vec::new();
    for family in 0..layout.families {
        let primary = layout.primary(family);
        let own: Vec<String> = (0..layout.subaccounts)
            .filter(|sub| layout.own_balance(options.workload, *sub))
            .map(|sub| {
                format!(
                    r#"{{"type":"balance","from":"{primary}","to":"{}","amount":1000000}}"#,
                    layout.subaccount(family, sub)
                )
            })
            .collect();
        if own.is_empty() {
            // Still verify the primary's secret once before the clock starts.
            funding.push(Call {
                method: "GET",
                path: format!("/accounts/{primary}/subaccounts"),
                caller: As::Primary(primary),
                body: None,
                items: 0,
                secret: SecretStep::None,
            });
        }
        for chunk in own.chunks(HTTP_BATCH_ITEMS_MAX) {
            funding.push(batch_transfers(primary, chunk));
        }
    }
    run_setup(address, host, target, funding).await
}

fn single(command: &Command, layout: Layout) -> Call {
    let transfer_call = |collection: &str, transfer: &Transfer| Call {
        method: "POST",
        path: format!("/accounts/{}/{collection}", transfer.primary),
        caller: As::Primary(transfer.primary),
        body: Some(format!(
            r#"{{"from":"{}","to":"{}","amount":{}}}"#,
            transfer.from,
            transfer.to,
            amount_text(transfer.amount)
        )),
        items: 0,
        secret: SecretStep::None,
    };
    match command {
        Command::TransferBalance(transfer) => transfer_call("balance-transfers", transfer),
        Command::TransferCredit(transfer) => transfer_call("credit-transfers", transfer),
        Command::Charge(charge) => Call {
            method: "POST",
            path: format!("/admin/accounts/{}/charges", charge.account),
            caller: As::Admin,
            body: Some(format!(r#"{{"amount":{}}}"#, amount_text(charge.amount))),
            items: 0,
            secret: SecretStep::None,
        },
        Command::UpdateSubaccount(update) => Call {
            method: "PATCH",
            path: format!(
                "/accounts/{}/subaccounts/{}",
                update.primary, update.subaccount
            ),
            caller: As::Primary(update.primary),
            body: Some(format!(
                r#"{{"suspended":{}}}"#,
                update.suspended.unwrap_or(false)
            )),
            items: 0,
            secret: SecretStep::None,
        },
        Command::CreateSecret(create) => Call {
            method: "POST",
            path: format!("/accounts/{}/secrets", create.account),
            caller: As::Primary(layout.owner(create.account)),
            body: Some(format!(r#"{{"secret":"{ROTATED_SECRET}"}}"#)),
            items: 0,
            secret: SecretStep::Create(create.secret.id),
        },
        Command::RevokeSecret(revoke) => Call {
            method: "DELETE",
            path: format!("/accounts/{}/secrets/{}", revoke.account, revoke.secret),
            caller: As::Primary(layout.owner(revoke.account)),
            body: None,
            items: 0,
            secret: SecretStep::Revoke(revoke.account, revoke.secret),
        },
        // The workloads generate nothing else; a health check keeps the mapping total.
        _ => Call {
            method: "GET",
            path: "/healthz".into(),
            caller: As::Admin,
            body: None,
            items: 0,
            secret: SecretStep::None,
        },
    }
}

/// One family's transfers (JSON objects) as a compact batch request, made as its primary.
fn batch_transfers(primary: ApiKey, items: &[String]) -> Call {
    Call {
        method: "POST",
        path: format!("/accounts/{primary}/batch-transfers?compact=true"),
        caller: As::Primary(primary),
        body: Some(format!(r#"{{"transfers":[{}]}}"#, items.join(","))),
        items: items.len(),
        secret: SecretStep::None,
    }
}

/// The requests for one batch of `count` generated commands.
fn batch(generator: &mut Generator, count: usize) -> Vec<Call> {
    let transfer_item = |transfer: &Transfer, kind: &str| {
        format!(
            r#"{{"type":"{kind}","from":"{}","to":"{}","amount":{}}}"#,
            transfer.from,
            transfer.to,
            amount_text(transfer.amount)
        )
    };
    if generator.workload == Workload::TigerBeetle {
        let family = generator.family();
        let primary = generator.layout.primary(family);
        let items: Vec<String> = (0..count)
            .map(|_| match generator.tigerbeetle_in(family) {
                Command::TransferBalance(transfer) => transfer_item(&transfer, "balance"),
                _ => String::new(),
            })
            .collect();
        return vec![batch_transfers(primary, &items)];
    }
    let mut charges = Vec::new();
    let mut transfers: BTreeMap<ApiKey, Vec<String>> = BTreeMap::new();
    let mut calls = Vec::new();
    for _ in 0..count {
        match generator.next() {
            Command::Charge(charge) => charges.push(format!(
                r#"{{"account":"{}","amount":{}}}"#,
                charge.account,
                amount_text(charge.amount)
            )),
            Command::TransferBalance(transfer) => transfers
                .entry(transfer.primary)
                .or_default()
                .push(transfer_item(&transfer, "balance")),
            Command::TransferCredit(transfer) => transfers
                .entry(transfer.primary)
                .or_default()
                .push(transfer_item(&transfer, "credit")),
            other => calls.push(single(&other, generator.layout)),
        }
    }
    for chunk in charges.chunks(HTTP_BATCH_ITEMS_MAX) {
        calls.push(Call {
            method: "POST",
            path: "/admin/batch-charges".into(),
            caller: As::Admin,
            body: Some(format!(r#"{{"charges":[{}]}}"#, chunk.join(","))),
            items: chunk.len(),
            secret: SecretStep::None,
        });
    }
    for (primary, items) in transfers {
        for chunk in items.chunks(HTTP_BATCH_ITEMS_MAX) {
            calls.push(batch_transfers(primary, chunk));
        }
    }
    calls
}

/// The `id` of a created secret's answer.
fn created_secret_id(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Created {
        id: String,
    }
    serde_json::from_slice::<Created>(body)
        .ok()
        .map(|created| created.id)
}

async fn run_client(
    mut connection: Connection,
    mut generator: Generator,
    mut remaining: u64,
    batch_size: usize,
    answered: Arc<AtomicU64>,
) -> Result<ClientResult, BenchError> {
    // Records its latencies one by one: no buffer.
    let mut result = ClientResult {
        pending: Vec::new(),
        ..ClientResult::new()
    };
    // The workload's secret ids → the server's, from creations answered 201.
    let mut secret_ids: std::collections::HashMap<SecretId, String> =
        std::collections::HashMap::new();
    while remaining > 0 {
        let count = request_size(remaining, batch_size);
        let calls = if count == 1 {
            vec![single(&generator.next(), generator.layout)]
        } else {
            batch(&mut generator, count)
        };
        for mut call in calls {
            if let SecretStep::Revoke(account, id) = call.secret {
                if let Some(given) = secret_ids.remove(&id) {
                    call.path = format!("/accounts/{account}/secrets/{given}");
                }
            }
            let started = Instant::now();
            let (status, body) = connection.send(&call).await?;
            if let (SecretStep::Create(id), 201) = (call.secret, status) {
                if secret_ids.len() >= SECRET_IDS_KEPT_MAX {
                    secret_ids.clear();
                }
                if let Some(given) = created_secret_id(&body) {
                    secret_ids.insert(id, given);
                }
            }
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            result.latency.saturating_record(micros.max(1));
            // Refusals that are not the rules' (credentials, size, rate, overload) mean the
            // run is not measuring what it claims: stop rather than count them as rejections.
            // (The rules' refusals are 4xx problems such as 403 and 422.)
            if status >= 500 || matches!(status, 401 | 413 | 429) {
                return Err(failed(format!(
                    "{} {} answered {status}: {}",
                    call.method,
                    call.path,
                    excerpt(&body)
                )));
            }
            let (committed, rejected) = if call.items > 0 && status == 200 {
                batch_statuses(&body)?
            } else if (200..300).contains(&status) {
                (1, 0)
            } else {
                (0, u64::try_from(call.items.max(1)).unwrap_or(1))
            };
            result.committed += committed;
            result.rejected += rejected;
            answered.fetch_add(committed + rejected, Ordering::Relaxed);
        }
        remaining = remaining.saturating_sub(u64::try_from(count).unwrap_or(1));
    }
    Ok(result.finished())
}

/// Counters from the server's `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
struct ServerCounters {
    commands: u64,
    commands_appended: u64,
    batches: u64,
    syncs: u64,
    events: u64,
    /// `process_cpu_seconds_total`, if the server reports it.
    cpu_seconds: Option<f64>,
}

async fn server_counters(connection: &mut Connection) -> Result<ServerCounters, BenchError> {
    let call = Call {
        method: "GET",
        path: "/metrics".into(),
        caller: As::Admin,
        body: None,
        items: 0,
        secret: SecretStep::None,
    };
    let body = connection.must(&call).await?;
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(ServerCounters {
        commands: value("subledger_commands_total"),
        commands_appended: value("subledger_commands_appended_total"),
        batches: value("subledger_batches_total"),
        syncs: value("subledger_syncs_total"),
        events: value("subledger_events_total"),
        cpu_seconds: text.lines().find_map(|line| {
            line.strip_prefix("process_cpu_seconds_total ")?
                .trim()
                .parse()
                .ok()
        }),
    })
}

/// Runs a workload against `target`.
pub fn run(
    options: &BenchOptions,
    target: &HttpTarget,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<BenchReport, BenchError> {
    validate(options)?;
    if options.batch_size > HTTP_BATCH_ITEMS_MAX {
        return Err(BenchError::Options(format!(
            "over HTTP, --batch-size is at most {HTTP_BATCH_ITEMS_MAX} (the batch endpoints' limit)"
        )));
    }
    if options.data.is_some() || options.in_memory {
        return Err(BenchError::Options(
            "--http loads a running server: --data and --in-memory do not apply".into(),
        ));
    }
    if options.clients > HTTP_CLIENTS_MAX {
        return Err(BenchError::Options(format!(
            "over HTTP, --clients is at most {HTTP_CLIENTS_MAX} (one connection each, below the server's connection limit)"
        )));
    }
    let (address, host) = address(&target.url)?;
    let layout = Layout::of(options);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(crate::CLIENT_THREAD_NAME)
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        setup(address, &host, target, options, layout).await?;
        let mut monitor = Connection::open(address, &host, target).await?;
        let before = server_counters(&mut monitor).await?;
        let answered = Arc::new(AtomicU64::new(0));
        let mut connections = Vec::with_capacity(options.clients);
        for _ in 0..options.clients {
            connections.push(Connection::open(address, &host, target).await?);
        }
        let cpu_before = crate::CpuSample::now();
        let started = Instant::now();
        let mut handles = Vec::with_capacity(options.clients);
        for (client, connection) in connections.into_iter().enumerate() {
            let (share, generator) = client_plan(options, layout, client);
            handles.push(tokio::spawn(run_client(
                connection,
                generator,
                share,
                options.batch_size,
                Arc::clone(&answered),
            )));
        }
        let mut timeline = Vec::new();
        while handles.iter().any(|handle| !handle.is_finished()) {
            tokio::time::sleep(Duration::from_millis(TIMELINE_SAMPLE_MILLIS)).await;
            let done = answered.load(Ordering::Relaxed);
            timeline.push((started.elapsed().as_secs_f64(), done));
            progress(done, options.commands);
        }
        // The load ends with the last client's last answer (see `run`).
        let mut ended = None;
        let mut latency = new_histogram();
        let (mut committed, mut rejected) = (0, 0);
        for handle in handles {
            let result = handle
                .await
                .map_err(|_| BenchError::Setup("a client task panicked".into()))??;
            ended = ended.max(result.ended);
            committed += result.committed;
            rejected += result.rejected;
            latency
                .add(&result.latency)
                .map_err(|error| BenchError::Setup(error.to_string()))?;
        }
        let seconds = ended
            .unwrap_or_else(Instant::now)
            .saturating_duration_since(started)
            .as_secs_f64();
        let mut cpu = cpu_before
            .zip(crate::CpuSample::now())
            .map(|(before, after)| before.used_until(&after, crate::cpu::cores()));
        let after = server_counters(&mut monitor).await?;
        if let Some(cpu) = cpu.as_mut() {
            cpu.server_seconds = after
                .cpu_seconds
                .zip(before.cpu_seconds)
                .map(|(after, before)| (after - before).max(0.0));
        }
        let batches = after.batches.saturating_sub(before.batches).max(1);
        let syncs = after.syncs.saturating_sub(before.syncs).max(1);
        let appended = match after
            .commands_appended
            .saturating_sub(before.commands_appended)
        {
            // A server older than `subledger_commands_appended_total`: every decided command,
            // which overstates the sizes when whole batches were rejected.
            0 => after.commands.saturating_sub(before.commands),
            appended => appended,
        };
        // The load is over: nothing else runs on this runtime while the probe blocks it.
        let machine = crate::probe(None);
        Ok(BenchReport {
            workload: options.workload,
            target: target.url.clone(),
            accounts: layout.accounts(),
            clients: options.clients,
            batch_size: options.batch_size,
            commands: options.commands,
            committed,
            rejected,
            seconds,
            commands_per_sec: if seconds > 0.0 {
                (committed + rejected) as f64 / seconds
            } else {
                0.0
            },
            latency_us: latency_of(&latency),
            mean_batch_size: appended as f64 / batches as f64,
            commands_per_sync: appended as f64 / syncs as f64,
            commit_us_mean: None,
            commit_us_buckets: Vec::new(),
            durable: None,
            snapshot_every_events: None,
            snapshot_growth_percent: None,
            snapshot_niceness: None,
            snapshots_during_load: None,
            last_snapshot_during_load: None,
            events: after.events,
            bytes_on_disk: None,
            bytes_per_event: None,
            log_bytes: None,
            log_bytes_per_event: None,
            rss_bytes_peak: None,
            rss_bytes: None,
            rss_bytes_after_snapshot: None,
            memory_log_bytes: None,
            recovery_seconds_full: None,
            recovery_seconds_snapshot: None,
            replay_events_per_sec: None,
            timeline,
            machine,
            cpu,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_secret_id_is_read_from_the_answer() {
        let answer = br#"{"_links":{"self":{"href":"/accounts/00000001/secrets/ad6dc56f-07b5-46e1-a527-85530e625800"}},"created_at":"2026-11-28T17:00:00.000Z","id":"ad6dc56f-07b5-46e1-a527-85530e625800"}"#;
        assert_eq!(
            created_secret_id(answer).as_deref(),
            Some("ad6dc56f-07b5-46e1-a527-85530e625800")
        );
        assert_eq!(created_secret_id(b"{}"), None);
        assert_eq!(created_secret_id(b"not json"), None);
    }

    #[test]
    fn error_excerpts_are_cut_at_a_character_boundary() {
        assert_eq!(excerpt(b"short"), "short");
        let long = "é".repeat(ERROR_EXCERPT_CHARS_MAX + 10);
        let cut = excerpt(long.as_bytes());
        assert!(cut.starts_with(&"é".repeat(ERROR_EXCERPT_CHARS_MAX)));
        assert!(cut.ends_with(&format!("… ({} bytes in all)", long.len())));
        assert_eq!(excerpt(&[0xff, b'a']), "\u{fffd}a");
    }
}
