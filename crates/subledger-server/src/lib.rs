//! subledger-server: the HTTP face of the ledger — a REST API compatible with the public
//! Vonage Subaccounts API and its secret management, an admin API, and operations endpoints.
//!
//! Layout: [`app`] builds the service (the axum `Router` behind the [`edge`]) from an [`AppState`] (tests call it without a
//! socket); [`serve`] runs it on a listener until a shutdown future resolves, then drains
//! in-flight requests. `routes` holds the handlers, [`auth`] Basic/bearer authentication
//! (argon2id off the async workers, a verified-credential cache that revocation reaches at
//! once), [`json`] exact JSON parsing and writing, [`problem`] the `application/problem+json`
//! errors. Business rules stay in the core: handlers translate HTTP into commands and views
//! into JSON, nothing more. The server knows nothing of storage: it is given a `Ledger`.

pub mod auth;
mod dashboard;
pub mod edge;
mod idempotency;
pub mod import;
pub mod json;
pub mod limit;
pub mod monitor;
pub mod openapi;
pub mod problem;
mod process;
mod reads;
mod routes;
pub mod tls;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use subledger_engine::Ledger;

use crate::auth::{Authenticator, HashCost};
use crate::problem::Problem;

/// Default for [`ServerConfig::problem_type_base`].
pub const PROBLEM_TYPE_BASE_DEFAULT: &str = "https://developer.vonage.com/api-errors";
/// Default for [`ServerConfig::requests_in_flight_max`].
pub const REQUESTS_IN_FLIGHT_MAX: usize = 1_024;
/// Longest a request may take before it is answered 503, unless configured otherwise.
pub const REQUEST_SECONDS_MAX: u64 = 30;
/// Most remembered responses to non-money POSTs with an `Idempotency-Key`.
pub const IDEMPOTENT_RESPONSES_MAX: usize = 100_000;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `type` of problem bodies is `<base>#<code>`.
    pub problem_type_base: String,
    /// The admin API's bearer token.
    pub admin_token: String,
    /// Argon2id cost for secrets.
    pub hash_cost: HashCost,
    /// Longest a request may take before it is answered `503` (default
    /// [`REQUEST_SECONDS_MAX`] seconds). Bounds the handler, not the streaming of a body.
    pub request_timeout: Duration,
    /// Most API requests handled at once (default [`REQUESTS_IN_FLIGHT_MAX`]); beyond, a
    /// request waits for a turn within its `request_timeout`.
    pub requests_in_flight_max: usize,
}

impl ServerConfig {
    pub fn new(admin_token: String) -> ServerConfig {
        ServerConfig {
            problem_type_base: PROBLEM_TYPE_BASE_DEFAULT.into(),
            admin_token,
            hash_cost: HashCost::default(),
            request_timeout: Duration::from_secs(REQUEST_SECONDS_MAX),
            requests_in_flight_max: REQUESTS_IN_FLIGHT_MAX,
        }
    }
}

/// Answered requests of one route by (method, status). The method is one of a fixed set
/// (see `edge`): any token is a method to hyper, and a client must not be able to grow this.
type StatusCounts = rustc_hash::FxHashMap<(&'static str, u16), u64>;

/// Counts of answered requests by route and status, for `/metrics`.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    /// Route → (method, status) → count. Nested so that counting a request allocates nothing
    /// once its route has been seen.
    counts: Mutex<rustc_hash::FxHashMap<String, StatusCounts>>,
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    pub ledger: Arc<Ledger>,
    pub config: ServerConfig,
    pub(crate) auth: Authenticator,
    pub(crate) metrics: RequestMetrics,
    pub(crate) remembered: Mutex<rustc_hash::FxHashMap<[u8; 32], idempotency::Remembered>>,
    /// Permits for live event streams.
    pub(crate) streams: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    pub fn new(ledger: Arc<Ledger>, config: ServerConfig) -> Arc<AppState> {
        let auth = Authenticator::new(config.hash_cost, &config.admin_token);
        Arc::new(AppState {
            ledger,
            config,
            auth,
            metrics: RequestMetrics::default(),
            remembered: Mutex::new(rustc_hash::FxHashMap::default()),
            streams: Arc::new(tokio::sync::Semaphore::new(reads::EVENT_STREAMS_MAX)),
        })
    }
}

/// The client's address, for any of our listeners.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

type PlainListener = limit::LimitedListener<tokio::net::TcpListener>;
type SecureListener = limit::LimitedListener<tls::TlsListener>;

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, PlainListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, PlainListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, SecureListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, SecureListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// The application's service type: see [`app`].
pub type App = edge::Edge<Router>;

/// The application: every route behind the [`edge`] (limits, the client's address, error
/// rendering, counting). A `tower::Service`; cheap to clone.
pub fn app(state: Arc<AppState>) -> App {
    let router = routes::router()
        .merge(dashboard::router())
        .route_layer(edge::MarkRouteLayer)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(Arc::clone(&state));
    edge::Edge::new(router, state)
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, finishes the
/// requests in flight, and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = limit::LimitedListener::new(listener, limit::CONNECTIONS_MAX);
    let app = axum::ServiceExt::<Request>::into_make_service_with_connect_info::<Peer>(app(state));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Like [`serve`], over TLS (see [`tls`]).
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = limit::LimitedListener::new(
        tls::TlsListener::new(listener, config)?,
        limit::CONNECTIONS_MAX,
    );
    let app = axum::ServiceExt::<Request>::into_make_service_with_connect_info::<Peer>(app(state));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// `/metrics` in the Prometheus text format.
pub(crate) fn prometheus(state: &AppState) -> String {
    let metrics = state.ledger.metrics();
    let mut text = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: String| {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    gauge(
        "subledger_queue_depth",
        "Requests waiting for the writer.",
        "gauge",
        metrics.queue_depth.to_string(),
    );
    gauge(
        "subledger_commands_total",
        "Commands decided.",
        "counter",
        metrics.commands.to_string(),
    );
    gauge(
        "subledger_rejected_total",
        "Commands rejected by the rules.",
        "counter",
        metrics.rejected.to_string(),
    );
    gauge(
        "subledger_batches_total",
        "Batches appended to the log (commands decided together; one sync covers one or more).",
        "counter",
        metrics.batches.to_string(),
    );
    gauge(
        "subledger_commands_appended_total",
        "Commands of the batches appended to the log (the others had no events to append).",
        "counter",
        metrics.commands_appended.to_string(),
    );
    gauge(
        "subledger_syncs_total",
        "Syncs of the log (group commits).",
        "counter",
        metrics.syncs.to_string(),
    );
    gauge(
        "subledger_events_total",
        "Events committed.",
        "counter",
        metrics.events.to_string(),
    );
    gauge(
        "subledger_last_sequence",
        "Sequence number of the last committed event.",
        "gauge",
        metrics.last_seq.0.to_string(),
    );
    gauge(
        "subledger_snapshots_total",
        "Snapshots written since the ledger opened.",
        "counter",
        metrics.snapshots_written.to_string(),
    );
    gauge(
        "subledger_last_snapshot_sequence",
        "Sequence number of the newest snapshot (0 for none).",
        "gauge",
        metrics.last_snapshot.0.to_string(),
    );
    gauge(
        "subledger_snapshot_failing",
        "1 while the last background snapshot attempt failed.",
        "gauge",
        u8::from(metrics.snapshot_error.is_some()).to_string(),
    );
    let mean = metrics.commands.checked_div(metrics.batches).unwrap_or(0);
    gauge(
        "subledger_commands_per_batch",
        "Mean commands per batch.",
        "gauge",
        mean.to_string(),
    );
    gauge(
        "subledger_argon2_runs_total",
        "Argon2id runs started: hashes of new secrets, verifications of uncached credentials.",
        "counter",
        state.auth.argon2_runs().to_string(),
    );
    gauge(
        "subledger_up",
        "1 while the writer accepts commands, 0 after a fail-stop.",
        "gauge",
        u8::from(state.ledger.failure().is_none()).to_string(),
    );
    // The durable-commit latency histogram (append + sync per sync of the log), in seconds.
    text.push_str(
        "# HELP subledger_commit_seconds Durable write time per group commit (append and sync).\n",
    );
    text.push_str("# TYPE subledger_commit_seconds histogram\n");
    let seconds = |micros: u64| {
        let fraction = format!("{:06}", micros % 1_000_000);
        let fraction = fraction.trim_end_matches('0');
        if fraction.is_empty() {
            (micros / 1_000_000).to_string()
        } else {
            format!("{}.{fraction}", micros / 1_000_000)
        }
    };
    let mut cumulative = 0_u64;
    for (index, count) in metrics.commit_latency_buckets.iter().enumerate() {
        cumulative += count;
        let bound = subledger_engine::COMMIT_LATENCY_BUCKETS_MICROS
            .get(index)
            .map_or_else(|| "+Inf".to_string(), |micros| seconds(*micros));
        text.push_str(&format!(
            "subledger_commit_seconds_bucket{{le=\"{bound}\"}} {cumulative}\n"
        ));
    }
    text.push_str(&format!(
        "subledger_commit_seconds_sum {}\nsubledger_commit_seconds_count {cumulative}\n",
        seconds(metrics.commit_latency_sum_micros)
    ));
    let process = process::read();
    let figures = [
        (
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            "counter",
            process
                .cpu_centiseconds
                .map(|cs| format!("{}.{:02}", cs / 100, cs % 100)),
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            "gauge",
            process.resident_memory_bytes.map(|bytes| bytes.to_string()),
        ),
        (
            "process_threads",
            "Number of OS threads in the process.",
            "gauge",
            process.threads.map(|threads| threads.to_string()),
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            "gauge",
            process.open_fds.map(|fds| fds.to_string()),
        ),
    ];
    for (name, help, kind, value) in figures {
        if let Some(value) = value {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        }
    }
    text.push_str(
        "# HELP subledger_http_requests_total HTTP requests answered, by route and status.\n",
    );
    text.push_str("# TYPE subledger_http_requests_total counter\n");
    if let Ok(counts) = state.metrics.counts.lock() {
        // Sorted, so that the text is stable between scrapes.
        let mut rows: Vec<(&str, &str, u16, u64)> = counts
            .iter()
            .flat_map(|(route, by_route)| {
                by_route.iter().map(move |((method, status), count)| {
                    (*method, route.as_str(), *status, *count)
                })
            })
            .collect();
        rows.sort_unstable();
        for (method, route, status, count) in rows {
            text.push_str(&format!(
                "subledger_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}\n"
            ));
        }
    }
    text
}
