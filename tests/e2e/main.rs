//! End to end: nats-server and the three services — in this process (`TestApp`) unless the test
//! is about processes (crashes, signals, logs, metrics, exported spans: `System`) — driven over
//! HTTP and observed through their APIs, a real webhook receiver and a real OTLP receiver.

// Helpers outside `#[test]` fns are test code too: a panic here is a failed test with a message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod archive;
mod backup;
mod bad_input;
mod cluster;
mod contention;
mod contract;
mod customer_auth;
mod dead_letters;
mod deploy;
mod faults;
mod full_store;
mod idempotency;
mod least_privilege;
mod loadgen;
mod notifications;
mod ops;
mod properties;
mod redelivery;
mod saga;
mod secrets;
mod security;
mod slow_clients;
mod support;
mod trace;
