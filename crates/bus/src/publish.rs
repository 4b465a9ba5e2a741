//! Publishing events: one serialization, one PubAck awaited, a deterministic `Nats-Msg-Id` so
//! a retried or redelivered publish is deduplicated by the server, a PRODUCER span whose context
//! rides in the headers, retries with backoff under a deadline, and a circuit breaker that makes
//! callers fail fast (HTTP: 503 + Retry-After) while NATS is unreachable.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::connection::State;
use async_nats::jetstream::{self, context::PublishErrorKind};
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use events::{Envelope, EventKind, names::header};
use failsafe::futures::CircuitBreaker as _;
use failsafe::{StateMachine, failure_policy};
use tracing::Instrument;

use telemetry::metric;

use crate::config::PublishPolicy;
use crate::trace;

/// A `Nats-Msg-Id`: derived from the cause of a publish, never random, so that publishing the
/// same decision twice stores it once (within the stream's duplicate window).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MsgId(String);

impl MsgId {
    /// The id of the event of `kind` caused by `key`: `orders.confirmed:<order id>`.
    pub fn new(kind: EventKind, key: impl fmt::Display) -> Self {
        Self(format!("{}:{key}", kind.type_name()))
    }

    /// An id built by the caller, for publishes that are not events of the saga.
    pub fn raw(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the server acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The stream that stored the message.
    pub stream: String,
    /// Its sequence in that stream.
    pub sequence: u64,
    /// The server had already stored a message with this `Nats-Msg-Id`: nothing new was stored.
    pub duplicate: bool,
}

/// A publish that did not get a PubAck.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event could not be serialized (a bug, not a condition to retry).
    #[error("cannot encode {kind}: {source}")]
    Encode {
        /// The event type.
        kind: EventKind,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The circuit breaker is open: recent publishes failed, so this one was not tried.
    #[error("NATS publishing is failing; circuit breaker open, not trying")]
    CircuitOpen,
    /// Every attempt failed with a transient error until the deadline passed.
    #[error(
        "publish to {subject} (msg id {msg_id}) gave up after {attempts} attempts in {elapsed:?}: {source}"
    )]
    Exhausted {
        /// The subject.
        subject: String,
        /// The `Nats-Msg-Id`.
        msg_id: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The last error.
        #[source]
        source: jetstream::context::PublishError,
    },
    /// A conditional append found the history moved: someone appended under the filter since
    /// the sequence the writer expected. Read again and decide again.
    #[error("append to {subject}: the history under {filter} moved past sequence {expected}")]
    Conflict {
        /// The subject.
        subject: String,
        /// The filter the precondition was about.
        filter: String,
        /// The last sequence the writer expected.
        expected: u64,
    },
    /// The stream (or bucket) is at its byte or message bound: it refuses new messages and
    /// keeps what it holds. Retrying later succeeds once it has room again.
    #[error("publish to {subject} refused: the store is full ({source})")]
    StoreFull {
        /// The subject.
        subject: String,
        /// The server's answer.
        #[source]
        source: jetstream::context::PublishError,
    },
    /// The server refused the message for a reason retrying cannot fix.
    #[error("publish to {subject} refused: {source}")]
    Refused {
        /// The subject.
        subject: String,
        /// The server's answer.
        #[source]
        source: jetstream::context::PublishError,
    },
}

impl PublishError {
    /// Whether trying again later may succeed (NATS down or slow), as opposed to a bug or a
    /// refusal. A consumer naks transient failures and dead-letters the others.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::CircuitOpen | Self::Exhausted { .. } | Self::StoreFull { .. }
        )
    }

    /// Whether the stream was full (at its bound).
    pub fn is_store_full(&self) -> bool {
        matches!(self, Self::StoreFull { .. })
    }
}

impl From<PublishError> for crate::handler::HandlerError {
    fn from(error: PublishError) -> Self {
        if error.is_transient() {
            Self::transient(error)
        } else {
            Self::permanent(error)
        }
    }
}

/// The precondition of a conditional append: nothing was appended under `filter` since
/// sequence `last` (0: nothing was ever appended there — create-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// A subject filter (wildcards allowed) covering the aggregate's subjects.
    pub filter: String,
    /// The last sequence the writer saw under it.
    pub last: u64,
}

/// Whether one failed attempt is worth repeating.
fn retryable(error: &jetstream::context::PublishError) -> bool {
    unwell(error.kind()) || in_process(error)
}

/// Whether a failed attempt says "NATS is unwell" (what opens the circuit breaker).
fn unwell(kind: PublishErrorKind) -> bool {
    matches!(
        kind,
        PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::MaxAckPending
            // No responders: JetStream is (re)starting and the stream is not loaded yet.
            | PublishErrorKind::StreamNotFound
    )
}

/// Whether the stream refused the message because it is at its bound (discard new): the
/// server's "store failed" answer naming a maximum.
pub(crate) fn store_full(error: &jetstream::context::PublishError) -> bool {
    names_a_full_store(error)
}

/// Whether `error` — or an error it wraps (a KV write wraps its publish's) — is the server's
/// "store failed" answer naming a maximum: the stream or bucket is at its bound.
pub(crate) fn names_a_full_store(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| {
        e.downcast_ref::<jetstream::Error>().is_some_and(|e| {
            e.error_code() == jetstream::ErrorCode::STREAM_STORE_FAILED
                && e.to_string().contains("maximum")
        })
    })
}

/// A clustered stream is still proposing a message with the same `Nats-Msg-Id` (an earlier try
/// of this very publish, say, after a leader change): asking again soon gets its outcome.
fn in_process(error: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|e| e.error_code() == jetstream::ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT)
}

type Breaker = StateMachine<failure_policy::ConsecutiveFailures<OpenFor>, BreakerLog>;

/// How long the breaker stays open: doubling from the configured time, capped at 16×.
/// (failsafe's own `backoff::exponential` panics below one second; tests need less.)
#[derive(Debug, Clone)]
struct OpenFor {
    next: Duration,
    max: Duration,
}

impl Iterator for OpenFor {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (current * 2).min(self.max);
        Some(current)
    }
}

/// Publishes events to JetStream. Cheap to clone; clones share the circuit breakers.
///
/// There is one breaker per stream a subject goes to (keyed by its first two tokens:
/// `orders.0`, `inventory.2`, `dlq.orders`): a partition whose leader is being elected fails
/// fast on its own, while the other partitions keep taking publishes.
#[derive(Clone)]
pub struct Publisher {
    jetstream: jetstream::Context,
    policy: PublishPolicy,
    breakers: Arc<Mutex<HashMap<String, Breaker>>>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

enum Attempt {
    Rejected,
    Failed(jetstream::context::PublishError),
}

impl Publisher {
    pub(crate) fn new(jetstream: jetstream::Context, policy: PublishPolicy) -> Self {
        Self {
            jetstream,
            policy,
            breakers: Arc::default(),
        }
    }

    /// The breaker of the stream `subject` goes to (created closed on first use).
    fn breaker(&self, subject: &str) -> Breaker {
        let key = breaker_key(subject);
        let mut breakers = self
            .breakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Every publish looks its breaker up: no allocation once it exists.
        if let Some(breaker) = breakers.get(key) {
            return breaker.clone();
        }
        // A closed breaker is a series too, so dashboards and alerts see every stream's.
        metrics::gauge!(metric::PUBLISH_CIRCUIT_OPEN, "stream" => key.to_owned()).set(0.0);
        breakers
            .entry(key.to_owned())
            .or_insert_with(|| {
                let open_for = OpenFor {
                    next: self.policy.breaker_open_for,
                    max: self.policy.breaker_open_for * 16,
                };
                failsafe::Config::new()
                    .failure_policy(failure_policy::consecutive_failures(
                        self.policy.breaker_failures,
                        open_for,
                    ))
                    .instrument(BreakerLog {
                        stream: key.to_owned(),
                    })
                    .build()
            })
            .clone()
    }

    /// Publishes `envelope` on `subject` with `msg_id`, inside a PRODUCER span whose context is
    /// sent in the headers, and returns once the server acknowledged it.
    pub async fn publish(
        &self,
        subject: &str,
        envelope: &Envelope,
        msg_id: &MsgId,
    ) -> Result<Published, PublishError> {
        self.publish_event(subject, envelope, msg_id, None, &[])
            .await
    }

    /// Appends `envelope` on `subject`, with `annotations` as headers besides the event's own,
    /// only if nothing was appended under `expect.filter` since `expect.last`;
    /// [`PublishError::Conflict`] if something was.
    pub async fn append(
        &self,
        subject: &str,
        envelope: &Envelope,
        msg_id: &MsgId,
        expect: &Expect,
        annotations: &[(&str, &str)],
    ) -> Result<Published, PublishError> {
        self.publish_event(subject, envelope, msg_id, Some(expect), annotations)
            .await
    }

    async fn publish_event(
        &self,
        subject: &str,
        envelope: &Envelope,
        msg_id: &MsgId,
        expect: Option<&Expect>,
        annotations: &[(&str, &str)],
    ) -> Result<Published, PublishError> {
        let kind = envelope.kind();
        let payload = envelope
            .to_json()
            .map_err(|source| PublishError::Encode { kind, source })?;
        let mut headers = HeaderMap::new();
        headers.insert(header::EVENT_TYPE, kind.type_name());
        headers.insert(
            header::EVENT_VERSION,
            kind.current_version().to_string().as_str(),
        );
        for (name, value) in annotations {
            headers.insert(*name, *value);
        }
        if let Some(expect) = expect {
            headers.insert(
                header::EXPECTED_LAST_SUBJECT_SEQUENCE,
                expect.last.to_string().as_str(),
            );
            headers.insert(
                header::EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT,
                expect.filter.as_str(),
            );
        }
        let span = producer_span(subject, msg_id, envelope);
        let result = self
            .publish_raw(subject, msg_id, headers, Bytes::from(payload), Some(&span))
            .instrument(span.clone())
            .await
            .map_err(|e| match (e, expect) {
                (PublishError::Refused { subject, source }, Some(expect))
                    if source.kind() == PublishErrorKind::WrongLastSequence =>
                {
                    PublishError::Conflict {
                        subject,
                        filter: expect.filter.clone(),
                        expected: expect.last,
                    }
                }
                (e, _) => e,
            });
        record_outcome(kind.type_name(), &result, &span);
        result
    }

    /// Publishes bytes with headers as they are, adding the `Nats-Msg-Id` and, if given, the
    /// trace context of a span — for dead letters, whose payload and original trace context are
    /// kept as they were.
    pub(crate) async fn publish_raw(
        &self,
        subject: &str,
        msg_id: &MsgId,
        mut headers: HeaderMap,
        payload: Bytes,
        inject_from: Option<&tracing::Span>,
    ) -> Result<Published, PublishError> {
        headers.insert(header::MSG_ID, msg_id.as_str());
        if let Some(span) = inject_from {
            trace::inject(span, &mut headers);
        }
        let started = Instant::now();
        let mut attempts = 0u32;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.policy.min_delay)
            .with_max_delay(self.policy.max_delay)
            .with_jitter()
            .with_total_delay(Some(self.policy.deadline))
            .without_max_times();
        let attempt = || {
            attempts += 1;
            self.attempt(subject, headers.clone(), payload.clone())
        };
        let result = attempt
            .retry(backoff)
            .when(|e| matches!(e, Attempt::Failed(e) if retryable(e)))
            .notify(|e, delay| {
                if let Attempt::Failed(e) = e {
                    tracing::warn!(subject, %msg_id, error = %e, ?delay, "publish failed; retrying");
                }
            })
            .await;
        result.map_err(|e| match e {
            Attempt::Rejected => PublishError::CircuitOpen,
            Attempt::Failed(source) if retryable(&source) => PublishError::Exhausted {
                subject: subject.to_owned(),
                msg_id: msg_id.to_string(),
                attempts,
                elapsed: started.elapsed(),
                source,
            },
            Attempt::Failed(source) if store_full(&source) => PublishError::StoreFull {
                subject: subject.to_owned(),
                source,
            },
            Attempt::Failed(source) => PublishError::Refused {
                subject: subject.to_owned(),
                source,
            },
        })
    }

    /// One attempt through the breaker: send, then await the PubAck.
    async fn attempt(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<Published, Attempt> {
        let send = async {
            // While disconnected the client would only buffer; fail now and let the retry
            // schedule (and the breaker) decide instead of waiting for an ack timeout.
            if self.jetstream.client().connection_state() != State::Connected {
                return Err(jetstream::context::PublishError::with_source(
                    PublishErrorKind::BrokenPipe,
                    "not connected to NATS",
                ));
            }
            let ack = self
                .jetstream
                .publish_with_headers(subject.to_owned(), headers, payload)
                .await?;
            ack.await
        };
        // Only failures that say "NATS is unwell" count towards opening the breaker.
        let counts = |e: &jetstream::context::PublishError| unwell(e.kind());
        match self.breaker(subject).call_with(counts, send).await {
            Ok(ack) => Ok(Published {
                stream: ack.stream,
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            }),
            Err(failsafe::Error::Rejected) => Err(Attempt::Rejected),
            Err(failsafe::Error::Inner(e)) => Err(Attempt::Failed(e)),
        }
    }
}

fn producer_span(subject: &str, msg_id: &MsgId, envelope: &Envelope) -> tracing::Span {
    // Named for the event type, not the subject: subjects carry order ids, and span names must
    // stay few (OTel messaging conventions: the destination *template*).
    tracing::info_span!(
        "publish",
        otel.name = format!("send {}", envelope.kind().type_name()),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = subject,
        messaging.message.id = msg_id.as_str(),
        cloudevents.event_id = %envelope.id,
        cloudevents.event_type = envelope.kind().type_name(),
        order_id = %envelope.correlation_id,
    )
}

fn record_outcome(
    event_type: &'static str,
    result: &Result<Published, PublishError>,
    span: &tracing::Span,
) {
    let outcome = match result {
        Ok(p) if p.duplicate => "duplicate",
        Ok(_) => "stored",
        Err(PublishError::CircuitOpen) => "circuit_open",
        // Not a failure: the writer reads the history and decides again.
        Err(PublishError::Conflict { .. }) => "conflict",
        Err(_) => "error",
    };
    match result {
        Ok(_) | Err(PublishError::Conflict { .. }) => {}
        Err(e) => {
            span.record("otel.status_code", "ERROR");
            tracing::warn!(parent: span, error = %e, "publish failed");
        }
    }
    metrics::counter!(metric::EVENTS_PUBLISHED, "type" => event_type, "outcome" => outcome)
        .increment(1);
}

/// The part of a subject that names its stream: the first two tokens (`orders.0`).
fn breaker_key(subject: &str) -> &str {
    match subject.match_indices('.').nth(1) {
        Some((end, _)) => &subject[..end],
        None => subject,
    }
}

/// Logs circuit-breaker transitions and exports each breaker's state as a gauge.
#[derive(Debug, Clone)]
struct BreakerLog {
    stream: String,
}

impl failsafe::Instrument for BreakerLog {
    fn on_call_rejected(&self) {
        metrics::counter!(metric::PUBLISH_REJECTED, "stream" => self.stream.clone()).increment(1);
    }

    fn on_open(&self) {
        tracing::error!(stream = %self.stream, "publish circuit breaker opened: NATS publishes keep failing");
        metrics::gauge!(metric::PUBLISH_CIRCUIT_OPEN, "stream" => self.stream.clone()).set(1.0);
    }

    fn on_half_open(&self) {
        tracing::info!(stream = %self.stream, "publish circuit breaker half-open: trying NATS again");
    }

    fn on_closed(&self) {
        tracing::info!(stream = %self.stream, "publish circuit breaker closed: NATS publishes succeed again");
        metrics::gauge!(metric::PUBLISH_CIRCUIT_OPEN, "stream" => self.stream.clone()).set(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_partition_stream_has_its_own_breaker() {
        assert_eq!(breaker_key("orders.0.alice.x.created"), "orders.0");
        assert_eq!(breaker_key("orders.2.alice.x.created"), "orders.2");
        assert_eq!(breaker_key("dlq.orders.0.alice.x.created"), "dlq.orders");
        assert_eq!(breaker_key("scratch"), "scratch");
    }
}
