//! Durable pull consumers and the ack discipline every handler gets for free.
//!
//! A [`Handler`] returns ok, a transient error, or a permanent error; the consumer turns that
//! into ack, nak-with-growing-delay, or dead letter + term — and dead-letters a transient error
//! on the last allowed delivery instead of letting the message vanish. Concurrency is bounded
//! by a semaphore, and each pull asks for no more messages than there are free handler slots,
//! so a prefetched message never waits out its `ack_wait` behind a busy handler. Long handlers
//! send progress acks. Shutdown stops pulling, hands back unstarted messages, and finishes
//! in-flight handlers before returning.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, consumer::pull};
use events::{Domain, Envelope, EventKind, OrderKey, Partitions, layout, names::header};
use futures::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::connect::Bus;
use crate::dead_letter::{self, DeadLetterReason, Origin};
use crate::handler::{Delivery, Handler, HandlerError, Lease};
use crate::trace;

/// A durable pull consumer's settings. Checked by [`ConsumerSpec::validate`] before use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// The stream to consume.
    pub stream: String,
    /// The durable name: one per service per purpose, shared by the service's replicas.
    pub durable: String,
    /// Subjects to receive (all of the stream when empty).
    pub filter_subjects: Vec<String>,
    /// How long the server waits for a settlement before redelivering.
    pub ack_wait: Duration,
    /// Deliveries before the message is given up on (and dead-lettered).
    pub max_deliver: i64,
    /// Server-side redelivery schedule after ack timeouts; replaces `ack_wait` when set.
    pub backoff: Vec<Duration>,
    /// Nak delay after the first transient failure; doubles on each further delivery.
    pub nak_delay: Duration,
    /// Upper bound of the nak delay.
    pub max_nak_delay: Duration,
    /// Messages delivered but not yet settled, across all replicas.
    pub max_ack_pending: i64,
    /// Handlers running at once in this process.
    pub concurrency: usize,
    /// Most messages requested per pull.
    pub max_batch: usize,
    /// How long an idle pull waits for messages before asking again.
    pub pull_expiry: Duration,
    /// Progress-ack interval for a running handler; must be shorter than the ack window.
    pub progress_every: Duration,
    /// A handler still running after this long is abandoned and counted as a transient
    /// failure — otherwise its progress acks would keep a hung handler's message forever.
    pub handler_timeout: Duration,
}

impl ConsumerSpec {
    /// A spec with production defaults: ack_wait 30 s, 10 deliveries, nak 250 ms doubling to
    /// 30 s, 32 handlers, 1000 pending.
    pub fn new(
        stream: impl Into<String>,
        durable: impl Into<String>,
        filter_subjects: &[&str],
    ) -> Self {
        Self {
            stream: stream.into(),
            durable: durable.into(),
            filter_subjects: filter_subjects.iter().map(|s| (*s).to_owned()).collect(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 10,
            backoff: Vec::new(),
            nak_delay: Duration::from_millis(250),
            max_nak_delay: Duration::from_secs(30),
            max_ack_pending: 1000,
            concurrency: 32,
            max_batch: 32,
            pull_expiry: Duration::from_secs(5),
            progress_every: Duration::from_secs(10),
            handler_timeout: Duration::from_secs(60),
        }
    }

    /// One spec per partition for the durable `durable` consuming `kinds` — events of one
    /// domain, so of one stream per partition — each filtered to its partition's subjects.
    pub fn per_partition(durable: &str, kinds: &[EventKind], partitions: Partitions) -> Vec<Self> {
        let Some(domain) = kinds.first().map(|kind| Domain::of(*kind)) else {
            return Vec::new();
        };
        partitions
            .all()
            .map(|p| Self {
                filter_subjects: kinds
                    .iter()
                    .map(|kind| layout::consumer_filter(*kind, p))
                    .collect(),
                ..Self::new(domain.stream(p, partitions), durable, &[])
            })
            .collect()
    }

    /// Refuses settings that would misbehave at run time, with a message that says which.
    pub fn validate(&self) -> Result<(), SpecError> {
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !token(&self.durable) {
            return Err(SpecError::DurableName(self.durable.clone()));
        }
        if self.max_deliver < 1 {
            return Err(SpecError::MaxDeliver(self.max_deliver));
        }
        if !self.backoff.is_empty() && self.backoff.len() as i64 >= self.max_deliver {
            return Err(SpecError::BackoffTooLong {
                steps: self.backoff.len(),
                max_deliver: self.max_deliver,
            });
        }
        if self.backoff.iter().any(Duration::is_zero) || self.ack_wait.is_zero() {
            return Err(SpecError::ZeroAckWindow);
        }
        if self.nak_delay.is_zero() {
            return Err(SpecError::ZeroNakDelay);
        }
        if self.max_nak_delay < self.nak_delay {
            return Err(SpecError::NakDelayOrder {
                nak_delay: self.nak_delay,
                max: self.max_nak_delay,
            });
        }
        if self.concurrency == 0 || self.max_batch == 0 {
            return Err(SpecError::ZeroConcurrency);
        }
        if self.max_ack_pending < self.concurrency as i64 {
            return Err(SpecError::AckPendingBelowConcurrency {
                max_ack_pending: self.max_ack_pending,
                concurrency: self.concurrency,
            });
        }
        let window = self.shortest_ack_window();
        if self.progress_every.is_zero() || self.progress_every >= window {
            return Err(SpecError::ProgressInterval {
                progress_every: self.progress_every,
                window,
            });
        }
        if self.handler_timeout.is_zero() {
            return Err(SpecError::ZeroHandlerTimeout);
        }
        if self.pull_expiry < Duration::from_millis(100) {
            return Err(SpecError::PullExpiry(self.pull_expiry));
        }
        Ok(())
    }

    /// The shortest time the server waits for an ack on any delivery.
    fn shortest_ack_window(&self) -> Duration {
        self.backoff
            .iter()
            .copied()
            .chain([self.ack_wait])
            .min()
            .unwrap_or(self.ack_wait)
    }

    /// The nak delay after the `attempt`-th delivery failed transiently.
    fn nak_delay_after(&self, attempt: u64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(20) as u32;
        self.nak_delay
            .saturating_mul(1 << doublings)
            .min(self.max_nak_delay)
    }

    fn server_config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.durable.clone()),
            filter_subjects: self.filter_subjects.clone(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            backoff: self.backoff.clone(),
            max_ack_pending: self.max_ack_pending,
            ..Default::default()
        }
    }
}

/// Consumer settings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The durable name is unusable in subjects.
    #[error("durable name {0:?} must be non-empty and use only A-Z, a-z, 0-9, '_' and '-'")]
    DurableName(String),
    /// `max_deliver` is not positive.
    #[error(
        "max_deliver must be at least 1 (got {0}); unlimited redelivery would never dead-letter"
    )]
    MaxDeliver(i64),
    /// The backoff schedule is not shorter than `max_deliver`.
    #[error(
        "backoff has {steps} steps but max_deliver is {max_deliver}; the server needs max_deliver > steps"
    )]
    BackoffTooLong {
        /// Steps in the schedule.
        steps: usize,
        /// The configured max_deliver.
        max_deliver: i64,
    },
    /// An ack window of zero.
    #[error("ack_wait and every backoff step must be positive")]
    ZeroAckWindow,
    /// A zero nak delay would burn every delivery in milliseconds.
    #[error("nak_delay must be positive: a bare nak is redelivered at once and burns max_deliver")]
    ZeroNakDelay,
    /// The nak delay bounds are reversed.
    #[error("max_nak_delay {max:?} is shorter than nak_delay {nak_delay:?}")]
    NakDelayOrder {
        /// First delay.
        nak_delay: Duration,
        /// Upper bound.
        max: Duration,
    },
    /// No handler could ever run.
    #[error("concurrency and max_batch must be at least 1")]
    ZeroConcurrency,
    /// `max_ack_pending` would cap concurrency below what was asked.
    #[error("max_ack_pending {max_ack_pending} is below concurrency {concurrency}")]
    AckPendingBelowConcurrency {
        /// Configured max_ack_pending.
        max_ack_pending: i64,
        /// Configured concurrency.
        concurrency: usize,
    },
    /// Progress acks would come too late (or never).
    #[error(
        "progress_every {progress_every:?} must be positive and shorter than the shortest ack window {window:?}"
    )]
    ProgressInterval {
        /// Configured interval.
        progress_every: Duration,
        /// Shortest ack window.
        window: Duration,
    },
    /// Every handler would time out at once.
    #[error("handler_timeout must be positive")]
    ZeroHandlerTimeout,
    /// Pulls that expire almost at once would spin.
    #[error("pull_expiry {0:?} is too short (at least 100ms)")]
    PullExpiry(Duration),
}

/// Setting up or running a consumer failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The spec is invalid.
    #[error("consumer {durable}: {source}")]
    Spec {
        /// The durable name.
        durable: String,
        /// What is wrong.
        #[source]
        source: SpecError,
    },
    /// The server refused to create or update the durable consumer.
    #[error("cannot create or update consumer {durable} on {stream}: {source}")]
    Create {
        /// The durable name.
        durable: String,
        /// The stream.
        stream: String,
        /// The server's answer.
        #[source]
        source: jetstream::stream::ConsumerError,
    },
}

/// A provisioned durable pull consumer, ready to [`run`](Consumer::run) a handler.
#[derive(Debug)]
pub struct Consumer {
    bus: Bus,
    spec: Arc<ConsumerSpec>,
    consumer: PullConsumer,
}

impl Consumer {
    /// Validates `spec` and creates (or updates) the durable consumer on the server.
    pub async fn create(bus: &Bus, spec: ConsumerSpec) -> Result<Self, ConsumeError> {
        spec.validate().map_err(|source| ConsumeError::Spec {
            durable: spec.durable.clone(),
            source,
        })?;
        let consumer = bus
            .jetstream()
            .create_consumer_on_stream(spec.server_config(), &spec.stream)
            .await
            .map_err(|source| ConsumeError::Create {
                durable: spec.durable.clone(),
                stream: spec.stream.clone(),
                source,
            })?;
        Ok(Self {
            bus: bus.clone(),
            spec: Arc::new(spec),
            consumer,
        })
    }

    /// Runs `handler` on every message until `shutdown` is cancelled, then stops pulling,
    /// hands back messages not yet started, waits for running handlers, and returns.
    pub async fn run<H: Handler>(
        self,
        handler: H,
        shutdown: CancellationToken,
    ) -> Result<(), ConsumeError> {
        let advisories = tokio::spawn(dead_letter::watch_max_deliveries(
            self.bus.clone(),
            self.spec.stream.clone(),
            self.spec.durable.clone(),
            shutdown.clone(),
        ));
        // Zeroed series from the start, so dashboards and rate() see every consumer at once.
        metrics::counter!("orderflow_redeliveries_total", "consumer" => self.spec.durable.clone())
            .increment(0);
        for reason in [
            DeadLetterReason::Permanent,
            DeadLetterReason::RetriesExhausted,
            DeadLetterReason::AckTimeout,
        ] {
            metrics::counter!(
                "orderflow_dead_letters_total",
                "consumer" => self.spec.durable.clone(),
                "reason" => reason.as_str(),
            )
            .increment(0);
        }
        let lag = tokio::spawn(report_lag(
            self.consumer.clone(),
            self.spec.durable.clone(),
            shutdown.clone(),
        ));
        let handler = Arc::new(handler);
        let slots = Arc::new(Semaphore::new(self.spec.concurrency));
        let mut running = JoinSet::new();
        let durable = self.spec.durable.as_str();
        tracing::info!(durable, stream = %self.spec.stream, "consumer started");

        'pull: while !shutdown.is_cancelled() {
            reap(&mut running);
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break 'pull,
                    _ = running.join_next() => continue 'pull,
                }
            }
            let request = self
                .consumer
                .batch()
                .max_messages(free.min(self.spec.max_batch))
                .expires(self.spec.pull_expiry)
                .messages();
            let mut batch = tokio::select! {
                _ = shutdown.cancelled() => break 'pull,
                batch = request => match batch {
                    Ok(batch) => batch,
                    Err(e) => {
                        tracing::warn!(durable, error = %e, "pull failed; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => break 'pull,
                            _ = tokio::time::sleep(Duration::from_millis(500)) => continue 'pull,
                        }
                    }
                },
            };
            loop {
                let next = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        // Hand back what already arrived so another replica takes it now,
                        // not after ack_wait.
                        while let Some(Some(Ok(message))) = batch.next().now_or_never() {
                            let _ = message.ack_with(AckKind::Nak(None)).await;
                        }
                        break 'pull;
                    }
                    next = batch.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        let Ok(slot) = slots.clone().acquire_owned().await else {
                            break 'pull;
                        };
                        let (bus, spec, handler) =
                            (self.bus.clone(), self.spec.clone(), handler.clone());
                        running.spawn(async move {
                            process(&bus, &spec, handler.as_ref(), message).await;
                            drop(slot);
                        });
                    }
                    Some(Err(e)) => {
                        tracing::warn!(durable, error = %e, "pull interrupted");
                        break;
                    }
                    None => break,
                }
            }
        }

        tracing::info!(durable, in_flight = running.len(), "consumer draining");
        while let Some(result) = running.join_next().await {
            if let Err(e) = result {
                tracing::error!(durable, error = %e, "handler task failed");
            }
        }
        // Acks are fire-and-forget: put the last ones on the wire before saying we are done.
        if let Err(e) = self.bus.client().flush().await {
            tracing::warn!(durable, error = %e, "could not flush the final acks");
        }
        let _ = lag.await;
        if let Ok(Err(e)) = advisories.await {
            tracing::error!(durable, error = %e, "max-deliveries watcher could not start");
        }
        tracing::info!(durable, "consumer stopped");
        Ok(())
    }
}

/// How often the consumer's lag is read from the server.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// Exports the consumer's lag (`num_pending`, not yet delivered) and its unacked count as
/// gauges, read from the server, so a stuck consumer shows even when nothing is delivered.
async fn report_lag(consumer: PullConsumer, durable: String, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(LAG_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match consumer.get_info().await {
            Ok(info) => {
                metrics::gauge!("orderflow_consumer_pending", "consumer" => durable.clone())
                    .set(info.num_pending as f64);
                metrics::gauge!("orderflow_consumer_ack_pending", "consumer" => durable.clone())
                    .set(info.num_ack_pending as f64);
            }
            Err(e) => tracing::debug!(durable, error = %e, "cannot read consumer info"),
        }
    }
}

/// Collects finished handler tasks so the set does not grow.
fn reap(running: &mut JoinSet<()>) {
    while let Some(result) = running.try_join_next() {
        if let Err(e) = result {
            tracing::error!(error = %e, "handler task failed");
        }
    }
}

/// What to do with a message once its handler is done.
enum Verdict {
    Ack,
    Retry(String),
    DeadLetter(DeadLetterReason, String),
}

/// Decodes, handles and settles one message inside its CONSUMER span.
async fn process<H: Handler>(
    bus: &Bus,
    spec: &ConsumerSpec,
    handler: &H,
    message: jetstream::Message,
) {
    let Ok(info) = message.info() else {
        tracing::error!(subject = %message.subject, "not a JetStream delivery; terminating it");
        let _ = message.ack_with(AckKind::Term).await;
        return;
    };
    let (stream, sequence) = (info.stream.to_owned(), info.stream_sequence);
    let attempt = u64::try_from(info.delivered).unwrap_or(1).max(1);
    let is_last_attempt = attempt as i64 >= spec.max_deliver;
    let subject = message.subject.to_string();
    let msg_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get(header::MSG_ID))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();

    let span = tracing::info_span!(
        "process",
        otel.name = format!("process {}", span_target(&message, &subject)),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %subject,
        messaging.consumer.group.name = %spec.durable,
        messaging.message.id = %msg_id,
        messaging.nats.message.delivery_count = attempt as i64,
        messaging.nats.stream.sequence = sequence as i64,
        cloudevents.event_id = tracing::field::Empty,
        cloudevents.event_type = tracing::field::Empty,
        order_id = tracing::field::Empty,
    );
    trace::set_parent_from(&span, message.headers.as_ref());

    if attempt > 1 {
        metrics::counter!("orderflow_redeliveries_total", "consumer" => spec.durable.clone())
            .increment(1);
    }

    async {
        let started = Instant::now();
        // Four fifths of the window: a margin for the server's clock and the network.
        let lease = Lease::new(spec.shortest_ack_window().mul_f64(0.8));
        let (event_type, verdict) = match decode(&subject, &message.payload) {
            Err(e) => ("undecodable", Verdict::DeadLetter(DeadLetterReason::Permanent, e)),
            Ok((envelope, key)) => {
                let span = tracing::Span::current();
                span.record("cloudevents.event_id", tracing::field::display(envelope.id));
                span.record("cloudevents.event_type", envelope.kind().type_name());
                span.record("order_id", tracing::field::display(envelope.correlation_id));
                let event_type = envelope.kind().type_name();
                let delivery = Delivery {
                    envelope,
                    key,
                    subject: subject.clone(),
                    stream_sequence: sequence,
                    attempt,
                    is_last_attempt,
                    lease: lease.clone(),
                };
                let handled = tokio::time::timeout(
                    spec.handler_timeout,
                    AssertUnwindSafe(handler.handle(delivery)).catch_unwind(),
                );
                let timed_out = || HandlerError::transient(format!("handler timed out after {:?}", spec.handler_timeout));
                let verdict = match with_progress_acks(handled, &message, spec.progress_every, &lease).await.unwrap_or_else(|_| Ok(Err(timed_out()))) {
                    Ok(Ok(())) => Verdict::Ack,
                    Ok(Err(HandlerError::Transient(e))) if is_last_attempt => Verdict::DeadLetter(
                        DeadLetterReason::RetriesExhausted,
                        format!("transient failure on the last of {} deliveries: {e}", spec.max_deliver),
                    ),
                    Ok(Err(HandlerError::Transient(e))) => Verdict::Retry(e.to_string()),
                    Ok(Err(HandlerError::Permanent(e))) => Verdict::DeadLetter(DeadLetterReason::Permanent, e.to_string()),
                    Err(panic) => Verdict::DeadLetter(DeadLetterReason::Permanent, format!("handler panicked: {}", panic_text(&panic))),
                };
                (event_type, verdict)
            }
        };
        metrics::histogram!("orderflow_handler_duration_seconds", "consumer" => spec.durable.clone(), "type" => event_type)
            .record(started.elapsed().as_secs_f64());
        let outcome = settle(bus, spec, &message, verdict, Origin {
            subject: &subject,
            stream: &stream,
            sequence,
            consumer: &spec.durable,
            deliveries: attempt,
        }, attempt, &lease)
        .await;
        metrics::counter!("orderflow_events_consumed_total", "consumer" => spec.durable.clone(), "type" => event_type, "outcome" => outcome)
            .increment(1);
    }
    .instrument(span)
    .await;
}

/// What a consumer span is named for: the event type from the `Ce-Type` header, so span
/// names stay few (subjects carry order ids); the subject of a message without one.
fn span_target<'a>(message: &'a jetstream::Message, subject: &'a str) -> &'a str {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(header::EVENT_TYPE))
        .map_or(subject, |v| v.as_str())
}

/// The event and the order it belongs to, or why the message can never be handled: its body
/// does not decode, its subject is not an event subject, or the two disagree.
fn decode(subject: &str, payload: &[u8]) -> Result<(Envelope, OrderKey), String> {
    let envelope = Envelope::decode(payload).map_err(|e| e.to_string())?;
    let (key, kind) = OrderKey::parse(subject).map_err(|e| e.to_string())?;
    if kind != envelope.kind() || key.order != envelope.event.order_id() {
        return Err(format!(
            "subject {subject} does not match its body ({} of order {})",
            envelope.kind(),
            envelope.event.order_id()
        ));
    }
    Ok((envelope, key))
}

/// Acks, naks or dead-letters; returns the outcome label for metrics.
async fn settle(
    bus: &Bus,
    spec: &ConsumerSpec,
    message: &jetstream::Message,
    verdict: Verdict,
    origin: Origin<'_>,
    attempt: u64,
    lease: &Lease,
) -> &'static str {
    let (kind, outcome) = match verdict {
        Verdict::Ack => (AckKind::Ack, "ack"),
        Verdict::Retry(error) if !lease.is_held() => {
            // The server has redelivered the message (or will): a nak from this old delivery
            // would land on the current one and hand it to a third handler while the second
            // still works on it. Stay silent; the current delivery settles the message.
            tracing::warn!(
                error,
                attempt,
                "transient failure after the lease expired; leaving the message to its newer delivery"
            );
            tracing::Span::current().record("otel.status_code", "ERROR");
            return "stale";
        }
        Verdict::Retry(error) => {
            let delay = spec.nak_delay_after(attempt);
            tracing::warn!(error, ?delay, attempt, "transient failure; will retry");
            tracing::Span::current().record("otel.status_code", "ERROR");
            (AckKind::Nak(Some(delay)), "retry")
        }
        Verdict::DeadLetter(reason, error) => {
            tracing::Span::current().record("otel.status_code", "ERROR");
            match dead_letter::publish(
                bus,
                &origin,
                message.headers.as_ref(),
                message.payload.clone(),
                reason,
                &error,
            )
            .await
            {
                Ok(_) => (AckKind::Term, "dead_letter"),
                // Not stored in the DLQ yet: keep the message; if this was its last delivery,
                // the max-deliveries advisory dead-letters it.
                Err(_) => (AckKind::Nak(Some(spec.nak_delay_after(attempt))), "retry"),
            }
        }
    };
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(error = %e, "cannot settle message; it will be redelivered");
    }
    outcome
}

/// Runs `work`, telling the server every `every` that the message is still being processed.
async fn with_progress_acks<F: Future>(
    work: F,
    message: &jetstream::Message,
    every: Duration,
    lease: &Lease,
) -> F::Output {
    let mut work = std::pin::pin!(work);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = ticks.tick() => {
                // A progress ack from an expired delivery would extend the current one's.
                if !lease.is_held() {
                    continue;
                }
                // Confirmed by the server, so the lease only grows when the server knows.
                let sent = Instant::now();
                match message.double_ack_with(AckKind::Progress).await {
                    Ok(()) => lease.renew(sent),
                    Err(e) => tracing::warn!(error = %e, "progress ack failed"),
                }
            }
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ConsumerSpec {
        ConsumerSpec::new("ORDERS", "inventory", &["orders.created"])
    }

    #[test]
    fn a_spec_per_partition_filters_each_to_its_partition_stream() {
        let specs = ConsumerSpec::per_partition(
            "inventory",
            &[EventKind::OrderCreated, EventKind::OrderCancelled],
            Partitions::new(2).unwrap(),
        );
        let streams: Vec<_> = specs.iter().map(|s| s.stream.as_str()).collect();
        assert_eq!(streams, ["ORDERS_0", "ORDERS_1"]);
        assert_eq!(
            specs[1].filter_subjects,
            ["orders.1.*.*.created", "orders.1.*.*.cancelled"]
        );
        assert!(specs.iter().all(|s| s.durable == "inventory"));
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(spec().validate(), Ok(()));
    }

    #[test]
    fn a_backoff_schedule_as_long_as_max_deliver_is_refused() {
        let spec = ConsumerSpec {
            max_deliver: 2,
            backoff: vec![Duration::from_secs(1); 2],
            ..spec()
        };
        let err = spec.validate().unwrap_err();
        assert_eq!(
            err,
            SpecError::BackoffTooLong {
                steps: 2,
                max_deliver: 2
            }
        );
        assert!(err.to_string().contains("max_deliver > steps"), "{err}");
    }

    #[test]
    fn a_zero_nak_delay_is_refused() {
        let err = ConsumerSpec {
            nak_delay: Duration::ZERO,
            ..spec()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err, SpecError::ZeroNakDelay);
    }

    #[test]
    fn unlimited_deliveries_are_refused_because_nothing_would_be_dead_lettered() {
        let err = ConsumerSpec {
            max_deliver: -1,
            ..spec()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err, SpecError::MaxDeliver(-1));
    }

    #[test]
    fn progress_acks_slower_than_the_shortest_backoff_step_are_refused() {
        let spec = ConsumerSpec {
            backoff: vec![Duration::from_secs(5), Duration::from_secs(60)],
            progress_every: Duration::from_secs(10),
            ..spec()
        };
        assert!(matches!(
            spec.validate(),
            Err(SpecError::ProgressInterval { .. })
        ));
    }

    #[test]
    fn max_ack_pending_below_concurrency_is_refused() {
        let err = ConsumerSpec {
            max_ack_pending: 4,
            concurrency: 8,
            ..spec()
        }
        .validate()
        .unwrap_err();
        assert!(matches!(err, SpecError::AckPendingBelowConcurrency { .. }));
    }

    #[test]
    fn a_durable_name_with_a_dot_is_refused() {
        let err = ConsumerSpec {
            durable: "a.b".into(),
            ..spec()
        }
        .validate()
        .unwrap_err();
        assert!(matches!(err, SpecError::DurableName(_)));
    }

    #[test]
    fn the_nak_delay_doubles_per_delivery_up_to_its_cap() {
        let spec = ConsumerSpec {
            nak_delay: Duration::from_millis(100),
            max_nak_delay: Duration::from_millis(500),
            ..spec()
        };
        let delays: Vec<_> = (1..=5)
            .map(|a| spec.nak_delay_after(a).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }
}
