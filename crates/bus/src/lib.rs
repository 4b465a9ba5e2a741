//! NATS JetStream as the services use it: the only crate that talks to NATS.
//!
//! - [`Bus::connect`] — a connection that reconnects forever, with auth and TLS from config, and
//!   a readiness flag ([`Bus::is_connected`]).
//! - [`Bus::provision_streams`], [`Bus::provision_bucket`], [`Consumer::provision`] — idempotent
//!   create-or-update of streams, KV buckets and durable consumers: the provisioning step's job;
//!   a service only checks ([`Bus::check_streams`]) and binds ([`Bus::bucket`],
//!   [`Consumer::bind`]).
//! - [`EventLog`] — the event store: an aggregate's history read back in one round trip, and
//!   conditional appends that refuse to write over a history that moved.
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
mod event_log;
mod handler;
mod kv_store;
mod provision;
mod publish;
mod snapshot;
mod trace;

pub use config::{
    BusConfig, ConfigError, DEFAULT_API_PREFIX, NatsAuth, NatsTls, PublishPolicy, Secret,
};
pub use connect::{Bus, ConnectError};
pub use consume::{
    ConsumeError, Consumer, ConsumerSpec, DEFAULT_MAX_DELIVER, SpecError, Start, Starts,
};
pub use dead_letter::{DeadLetter, DeadLetterError, DeadLetterReason, StoredDeadLetter};
pub use event_log::{
    Append, AppendError, Appended, DECISION_ROUNDS, EventLog, Precondition, ReadError, Recorded,
    Round, retry_on_conflict,
};
pub use handler::{Delivery, Handler, HandlerError, Lease};
pub use kv_store::{Change, KvStore, RECENT_KEYS, StoreError, Versioned};
pub use provision::{
    Bounds, KvBucket, ProvisionError, StreamSettings, Usage, stores_written_by, stream_names,
};
pub use publish::{MsgId, PublishError, Published};
pub use snapshot::{SnapshotError, StreamSnapshot};

/// Re-exported so services can name KV stores and cancellation without extra dependencies.
pub use async_nats::jetstream::kv;
/// Cancels consumers and servers on shutdown.
pub use tokio_util::sync::CancellationToken;
