//! The server's edge: what every request goes through around the router, in one layer.
//!
//! It bounds the requests in flight ([`crate::ServerConfig::requests_in_flight_max`];
//! `/healthz` and `/metrics` aside) and the time each may take, waiting for its turn included
//! ([`crate::ServerConfig::request_timeout`], then a `503` problem); passes the client's
//! address to authentication; renders the problems handlers leave in a response; and counts
//! the answers by route, method and status for `/metrics` (a 405 under `unmatched`: the
//! router answers it without entering a route).
//!
//! Why one hand-written layer: these were three `axum::middleware::from_fn` layers and a
//! `tower` stack. Each `from_fn` boxes a future and clones the boxed service below it on every
//! request, and `Router::layer` wraps each route one by one. With single-transfer requests the
//! layers cost ~30 % of the server's CPU (sixteenth session, `docs/benchmarks.md`). The edge
//! wraps the whole router once and allocates one future per request.
//!
//! The matched route is known only inside the router, so the edge puts an empty slot in each
//! request and a small route layer (`MarkRoute`) fills it as the request enters its route: a
//! request that times out is still counted under its route.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::problem::{Problem, ProblemResponse};
use crate::{auth, AppState, Peer};

/// Where [`MarkRoute`] leaves the matched route for the edge to count (empty for requests the
/// router answers itself: no route, or a method the route does not have).
#[derive(Debug, Clone, Default)]
struct RouteSlot(Arc<std::sync::OnceLock<MatchedPath>>);

/// The application's outer service: the router behind the edge. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    state: Arc<AppState>,
    permits: Arc<Semaphore>,
}

impl<S> std::fmt::Debug for Edge<S> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Edge")
            .field("permits_free", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl<S> Edge<S> {
    pub(crate) fn new(inner: S, state: Arc<AppState>) -> Edge<S> {
        // At least one (none would refuse every request), at most what tokio can count.
        let permits = state
            .config
            .requests_in_flight_max
            .clamp(1, Semaphore::MAX_PERMITS);
        Edge {
            inner,
            state,
            permits: Arc::new(Semaphore::new(permits)),
        }
    }
}

impl<S> tower::Service<Request> for Edge<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // The service polled ready is the one to call; a clone stays for the next request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = Arc::clone(&self.state);
        let permits = Arc::clone(&self.permits);
        Box::pin(async move {
            tag_peer(&mut request);
            let route = RouteSlot::default();
            request.extensions_mut().insert(route.clone());
            // The path is needed only when a problem quotes it as `instance`; a `Uri` clone
            // shares its bytes.
            let uri = request.uri().clone();
            let method = request.method().clone();
            let started = std::time::Instant::now();
            // The wait for a turn counts against the request's time: under overload a request
            // is answered 503 after the timeout rather than queued for ever. The operations
            // endpoints skip the limit, so that health checks and scrapes still answer when
            // the API's requests are all busy (say, waiting for argon2).
            let limited = !OPERATIONS_PATHS.contains(&uri.path());
            let answer = tokio::time::timeout(state.config.request_timeout, async move {
                let _permit = if limited {
                    // The semaphore is never closed; were it, the request would run unlimited.
                    permits.acquire_owned().await.ok()
                } else {
                    None
                };
                inner.call(request).await
            })
            .await;
            let mut response = match answer {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => timed_out().into_response(),
            };
            if let Some(problem) = response.extensions_mut().remove::<Problem>() {
                response = render(&state, problem, uri.path(), response);
            }
            count(&state, &route, &response, &method, started);
            Ok(response)
        })
    }
}

/// Served whatever the number of requests in flight: cheap, and what operators look at when
/// the server is overloaded.
const OPERATIONS_PATHS: [&str; 2] = ["/healthz", "/metrics"];

/// Puts the client's address (when the connection has one) where authentication reads it,
/// after removing anything a client sent under that name.
fn tag_peer(request: &mut Request) {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .map(|info| info.0 .0.ip());
    let headers = request.headers_mut();
    headers.remove(auth::PEER_HEADER);
    if let Some(address) = peer.and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok()) {
        headers.insert(auth::PEER_HEADER, address);
    }
}

fn timed_out() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "timeout",
        "Service Unavailable",
        "the request took too long",
    )
}

/// A problem as `application/problem+json`, with the configured type base and the request's
/// path as `instance`, in place of the bare `answer` a handler or the router gave: its `Allow`
/// header (a 405's list of methods) is kept.
fn render(state: &AppState, problem: Problem, path: &str, answer: Response) -> Response {
    let mut response = ProblemResponse {
        problem,
        base: state.config.problem_type_base.clone(),
        instance: path.to_string(),
    }
    .into_response();
    if let Some(allow) = answer.headers().get(axum::http::header::ALLOW) {
        response
            .headers_mut()
            .insert(axum::http::header::ALLOW, allow.clone());
    }
    response
}

/// A method as a label: one of a fixed set, so that clients cannot grow the counts (hyper
/// takes any token as a method).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Counts an answer by matched route (`unmatched` for the fallbacks) and status.
fn count(
    state: &AppState,
    route: &RouteSlot,
    response: &Response,
    method: &axum::http::Method,
    started: std::time::Instant,
) {
    let route = route.0.get().map_or("unmatched", MatchedPath::as_str);
    let status = response.status().as_u16();
    tracing::debug!(
        target: "subledger::http",
        method = %method,
        route = %route,
        status,
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    if let Ok(mut counts) = state.metrics.counts.lock() {
        let by_route = match counts.get_mut(route) {
            Some(by_route) => by_route,
            None => counts.entry(route.to_string()).or_default(),
        };
        *by_route.entry((method_label(method), status)).or_default() += 1;
    }
}

/// The route layer that fills the edge's [`RouteSlot`] as a request enters its route.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MarkRouteLayer;

impl<S> tower::Layer<S> for MarkRouteLayer {
    type Service = MarkRoute<S>;

    fn layer(&self, inner: S) -> MarkRoute<S> {
        MarkRoute { inner }
    }
}

/// See [`MarkRouteLayer`].
#[derive(Debug, Clone)]
pub(crate) struct MarkRoute<S> {
    inner: S,
}

impl<S> tower::Service<Request> for MarkRoute<S>
where
    S: tower::Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request) -> S::Future {
        if let (Some(slot), Some(route)) = (
            request.extensions().get::<RouteSlot>(),
            request.extensions().get::<MatchedPath>(),
        ) {
            // Set once: a request enters one route.
            let _ = slot.0.set(route.clone());
        }
        self.inner.call(request)
    }
}
