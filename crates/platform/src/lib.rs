//! What every orderflow service stands on, so each service holds only its domain:
//!
//! - [`config`] — the shared settings (NATS, streams, HTTP edge) parsed from the environment,
//!   with secrets that never print;
//! - [`problem`] — RFC 9457 problem JSON and extractors whose every rejection is one;
//! - [`edge`] — the HTTP edge: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, a server
//!   span per request (OTel HTTP conventions, parent taken from `traceparent`), request
//!   metrics, body-size limit, request timeout, and graceful serving;
//! - [`admin`] — bearer-token guard for admin endpoints;
//! - [`probe`] — the `healthcheck` subcommand, a container HEALTHCHECK without curl;
//! - [`shutdown`] — SIGTERM/SIGINT as a cancellation token;
//! - [`service`] — the life of a service: connect, provision (retrying while NATS is away),
//!   consume, serve, and drain on shutdown — so each service states only what is its own.

pub mod admin;
pub mod config;
pub mod edge;
pub mod json;
pub mod openapi;
pub mod probe;
pub mod problem;
pub mod rate_limit;
pub mod service;
pub mod shutdown;
pub mod usage;
