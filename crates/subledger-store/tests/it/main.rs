#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Integration tests of the sled store under the engine: durability across reopen, corruption
//! detection, and kill -9 crash tests.

mod corruption;
mod crash;
mod durable;
mod support;
