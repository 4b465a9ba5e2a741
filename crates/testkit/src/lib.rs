//! Test support — real parts only, never mocks:
//!
//! - [`NatsServer`]: a real `nats-server` with JetStream on a free loopback port in a temp dir;
//! - [`PostgresServer`]: a real PostgreSQL server on a free loopback port in a temp dir (the
//!   archive);
//! - [`TestApp`]: the three services in this process against it, each through its own
//!   `run(config, listener, shutdown)` — the default for a test of behaviour;
//! - [`System`]: the three services as real processes against it (the binaries of
//!   `cargo build --bins`, built on first use), ready-checked, killable and restartable — for
//!   faults, signals, logs, metrics and exported spans;
//! - [`ApiClient`]: the typed steps of a test (stock a SKU, place an order, wait for its
//!   status), which both of them dereference to;
//! - [`WebhookReceiver`]: an HTTP server recording webhooks, with a Standard Webhooks
//!   signature check written independently of the one that signs;
//! - [`OtlpReceiver`]: an HTTP server decoding OTLP/protobuf trace exports;
//! - [`FaultProxy`]: a TCP proxy that adds latency and resets connections;
//! - [`NatsServer::cluster`]: three nats-servers clustered on loopback ports, for R3 streams;
//! - [`Workload`] and [`check_invariants`]: steady order traffic with a ledger of every
//!   attempt, and the system's invariants checked against it once the faults stop;
//! - [`sample`]: sample events, a first [`bus::Delivery`] of one, a provisioned bus — for
//!   tests that call a service's handler directly;
//! - [`eventually`], [`eventually_some`] and [`PATIENCE`]: the one way every test waits
//!   ([`eventually_after`] when it can only come after a scheduled retry).

// A test-support crate: failing loudly with a message *is* the error handling.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

mod api;
mod app;
pub mod faults;
mod identity;
mod launch;
mod nats;
mod otlp;
mod postgres;
mod proxy;
pub mod sample;
mod system;
mod tls;
mod wait;
mod webhook;
mod workload;

pub use api::{ApiClient, accepted_order_id, answer, http_client, order_body};
pub use app::TestApp;
pub use identity::{AUDIENCE, ISSUER, IdentityProvider, Signer};
pub use nats::{Builder, INSTALL_HINT, NatsServer, binary, free_port};
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use postgres::{POSTGRES_DATABASE, POSTGRES_INSTALL_HINT, PostgresServer};
pub use proxy::FaultProxy;
pub use system::{ADMIN_TOKEN, ServiceProcess, System, SystemBuilder, admin, service_binary};
pub use tls::Pki;
pub use wait::{PATIENCE, eventually, eventually_after, eventually_some};
pub use webhook::{ReceivedWebhook, WebhookReceiver};
pub use workload::{Attempt, Ledger, Outcome, Report, Workload, check_invariants};
