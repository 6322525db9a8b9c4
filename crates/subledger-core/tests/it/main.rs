#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Integration tests of subledger-core: one given/when/then test per rule (`rules`), and a
//! proptest state machine against an independent reference model (`model`).

mod alerts;
mod encoding;
mod model;
mod rules;
mod support;
