#![allow(clippy::unwrap_used, clippy::expect_used)]
//! End-to-end tests of the `subledger` binary.

mod audit;
mod restore;
mod security;
mod serve;
mod support;
