//! The bus against a real nats-server: each module one capability, each test one behaviour.

// Helpers outside `#[test]` fns are test code too: a panic here is a failed test with a message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod consume;
mod dead_letter;
mod event_log;
mod example;
mod kv_store;
mod provision;
mod publish;
mod restart;
mod security;
mod snapshot;
mod support;
mod trace_context;
