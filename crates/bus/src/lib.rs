//! NATS JetStream as the services use it: the only crate that talks to NATS.
//!
//! - [`Bus::connect`] — a connection that reconnects forever, with auth and TLS from config, and
//!   a readiness flag ([`Bus::is_connected`]).
//! - [`Bus::provision_streams`], [`Bus::key_value`] — idempotent create-or-update of streams and
//!   KV buckets, done by every service at start-up.
//! - [`Publisher`] — typed events out, PubAck in; deterministic `Nats-Msg-Id`; W3C trace context
//!   injected; retried under a deadline; a circuit breaker fails fast while NATS is down.
//! - [`Consumer`] — durable pull consumers with bounded concurrency: ok → ack, transient → nak
//!   with a growing delay, permanent or last delivery → dead letter + term; ack-timeout
//!   exhaustion is caught from the server's advisory and dead-lettered too.
//!
//! Everything a handler must not get wrong (ack discipline, dead-letter shape, spans) lives here
//! once, so services contain only domain logic.

mod config;
mod connect;
mod consume;
mod dead_letter;
mod provision;
mod publish;
mod store;
mod trace;

pub use config::{BusConfig, ConfigError, NatsAuth, NatsTls, PublishPolicy, Secret};
pub use connect::{Bus, ConnectError};
pub use consume::{
    ConsumeError, Consumer, ConsumerSpec, Delivery, Handler, HandlerError, Lease, SpecError,
};
pub use dead_letter::{DeadLetter, DeadLetterError, DeadLetterReason, StoredDeadLetter};
pub use provision::{KvBucket, ProvisionError, StreamSettings};
pub use publish::{MsgId, PublishError, Published, Publisher};
pub use store::{Change, RECENT_KEYS, Store, StoreError, Versioned};
pub use trace::{HeaderExtractor, HeaderInjector};

/// Re-exported so services can name KV stores and cancellation without extra dependencies.
pub use async_nats::jetstream::kv;
/// Cancels consumers and servers on shutdown.
pub use tokio_util::sync::CancellationToken;
