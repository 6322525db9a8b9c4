#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Integration tests of the HTTP server: every endpoint of SPEC §8 and the admin API, the
//! problem+json error table, the authorization matrix, secret rotation under load,
//! idempotent retries, concurrency and graceful shutdown through a real socket.

mod authz;
mod endpoints;
mod engine;
mod errors;
mod idempotency;
mod import;
mod monitor;
mod openapi;
mod reads;
mod rotation;
mod socket;
mod support;
mod tls;
