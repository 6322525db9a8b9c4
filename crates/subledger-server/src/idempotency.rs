//! `Idempotency-Key` for POSTs that are not money commands (creating subaccounts, secrets,
//! primaries). Money commands need none of this: their command id is derived from the key and
//! the ledger itself recognises a retry, durably.
//!
//! A key is claimed before the work starts, so concurrent retries wait for the first one and
//! get its response instead of doing the work again; a claim whose request fails is released
//! so the client can retry. Remembered responses are kept in memory (bounded, lost on restart)
//! and never hold a plaintext secret: a replay answers without the `secret` field, since a
//! secret is shown once.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use subledger_core::ApiKey;

use crate::problem::Problem;
use crate::{AppState, IDEMPOTENT_RESPONSES_MAX};

/// Longest accepted `Idempotency-Key`, in bytes.
pub(crate) const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;
/// How often a retry checks whether the first request with its key has finished.
const IN_FLIGHT_POLL_MILLIS: u64 = 10;

/// What is known of a key.
#[derive(Debug, Clone)]
pub(crate) enum Remembered {
    InFlight {
        digest: [u8; 32],
    },
    Done {
        digest: [u8; 32],
        status: u16,
        body: Vec<u8>,
    },
}

/// The `Idempotency-Key` header, if any.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(text) if !text.is_empty() && text.len() <= IDEMPOTENCY_KEY_BYTES_MAX => {
            Ok(Some(text.to_string()))
        }
        _ => Err(Problem::bad_request(format!(
            "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} visible ASCII characters"
        ))),
    }
}

fn conflict() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "idempotency-conflict",
        "Conflict",
        "This idempotency key was used before with a different request",
    )
}

/// A claimed key: finish it with the response, or drop it to release the key.
#[derive(Debug)]
pub(crate) struct Claim<'a> {
    state: &'a AppState,
    slot: [u8; 32],
    digest: [u8; 32],
    finished: bool,
}

impl Claim<'_> {
    /// Remembers the response (without any plaintext secret).
    pub(crate) fn finish(mut self, status: StatusCode, value: &Value) {
        let mut kept = value.clone();
        if let Value::Object(map) = &mut kept {
            map.remove("secret");
        }
        if let Ok(mut cache) = self.state.remembered.lock() {
            cache.insert(
                self.slot,
                Remembered::Done {
                    digest: self.digest,
                    status: status.as_u16(),
                    body: serde_json::to_vec(&kept).unwrap_or_default(),
                },
            );
        }
        self.finished = true;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Ok(mut cache) = self.state.remembered.lock() {
            if matches!(cache.get(&self.slot), Some(Remembered::InFlight { .. })) {
                cache.remove(&self.slot);
            }
        }
    }
}

/// The outcome of presenting a key.
#[derive(Debug)]
pub(crate) enum Claimed<'a> {
    /// Do the work (with a claim to finish when there is a key).
    Fresh(Option<Claim<'a>>),
    /// The same request was answered before: send this.
    Replay(Response),
}

/// Claims the request's `Idempotency-Key` for `caller` and `operation`, or returns the
/// remembered answer; waits while the same key is in flight.
pub(crate) async fn claim<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    caller: ApiKey,
    operation: &str,
    body: &Map<String, Value>,
) -> Result<Claimed<'a>, Problem> {
    let Some(key) = idempotency_key(headers)? else {
        return Ok(Claimed::Fresh(None));
    };
    let digest = *blake3::hash(&serde_json::to_vec(body).unwrap_or_default()).as_bytes();
    let mut hasher = blake3::Hasher::new();
    hasher.update(&caller.as_bytes());
    hasher.update(operation.as_bytes());
    hasher.update(b"\0");
    hasher.update(key.as_bytes());
    let slot = *hasher.finalize().as_bytes();
    // As long as a request may take: the first one is answered or timed out by then.
    let deadline = Instant::now() + state.config.request_timeout;
    loop {
        {
            let mut cache = state
                .remembered
                .lock()
                .map_err(|_| Problem::internal("the idempotency cache is poisoned"))?;
            match cache.get(&slot) {
                None => {
                    if cache.len() >= IDEMPOTENT_RESPONSES_MAX {
                        cache.retain(|_, remembered| {
                            matches!(remembered, Remembered::InFlight { .. })
                        });
                    }
                    cache.insert(slot, Remembered::InFlight { digest });
                    return Ok(Claimed::Fresh(Some(Claim {
                        state,
                        slot,
                        digest,
                        finished: false,
                    })));
                }
                Some(
                    Remembered::InFlight { digest: first } | Remembered::Done { digest: first, .. },
                ) if *first != digest => {
                    return Err(conflict());
                }
                Some(Remembered::Done { status, body, .. }) => {
                    let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
                    let mut response = (status, body.clone()).into_response();
                    let headers = response.headers_mut();
                    headers.insert(
                        axum::http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
                    return Ok(Claimed::Replay(response));
                }
                Some(Remembered::InFlight { .. }) => {}
            }
        }
        if Instant::now() >= deadline {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "idempotency-in-progress",
                "Conflict",
                "A request with this idempotency key is still in progress",
            ));
        }
        tokio::time::sleep(Duration::from_millis(IN_FLIGHT_POLL_MILLIS)).await;
    }
}
