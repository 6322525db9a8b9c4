#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Integration tests of the engine: group commit, back-pressure, fail-stop, concurrency,
//! subscriptions and recovery from the log.

mod concurrency;
mod feed;
mod golden;
mod lifecycle;
mod pipeline;
mod snapshots;
mod support;
