//! One message, start to end: decode it (body and subject), run the handler inside its CONSUMER
//! span with progress acks and a timeout, then settle — ack, nak with a growing delay, or dead
//! letter + term. A delivery whose lease expired stays silent: the server would apply its nak
//! or progress ack to the message's current delivery.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use events::{Envelope, OrderKey, names::header};
use futures::FutureExt;
use tracing::Instrument;

use telemetry::metric;

use super::spec::ConsumerSpec;
use crate::connect::Bus;
use crate::dead_letter::{self, DeadLetterReason, Origin};
use crate::handler::{Delivery, Handler, HandlerError, Lease};
use crate::trace;

/// What to do with a message once its handler is done.
enum Verdict {
    Ack,
    /// Nak, after the schedule's delay or, if longer, the one given.
    Retry(String, Option<Duration>),
    DeadLetter(DeadLetterReason, String),
}

/// Where a delivery stands: in its stream, and in its consumer's count of deliveries.
struct Position {
    stream: String,
    sequence: u64,
    subject: String,
    attempt: u64,
    is_last_attempt: bool,
}

/// Decodes, handles and settles one message inside its CONSUMER span.
pub(super) async fn process<H: Handler>(
    bus: &Bus,
    spec: &ConsumerSpec,
    handler: &H,
    message: jetstream::Message,
    replay_until: u64,
) {
    let Ok(info) = message.info() else {
        tracing::error!(subject = %message.subject, "not a JetStream delivery; terminating it");
        let _ = message.ack_with(AckKind::Term).await;
        return;
    };
    let attempt = u64::try_from(info.delivered).unwrap_or(1).max(1);
    let position = Position {
        stream: info.stream.to_owned(),
        sequence: info.stream_sequence,
        subject: message.subject.to_string(),
        attempt,
        is_last_attempt: attempt as i64 >= spec.max_deliver,
    };
    let span = consumer_span(&message, spec, &position);
    if attempt > 1 {
        metrics::counter!(metric::REDELIVERIES, "consumer" => spec.durable.clone()).increment(1);
    }

    async {
        let started = Instant::now();
        // Four fifths of the window: a margin for the server's clock and the network.
        let lease = Lease::new(spec.shortest_ack_window().mul_f64(0.8));
        let (event_type, verdict) =
            judge(spec, handler, &message, &position, &lease, replay_until).await;
        let consumer = spec.durable.clone();
        metrics::histogram!(
            metric::HANDLER_DURATION,
            "consumer" => consumer.clone(),
            "type" => event_type,
        )
        .record(started.elapsed().as_secs_f64());
        let origin = Origin {
            subject: &position.subject,
            stream: &position.stream,
            sequence: position.sequence,
            consumer: &spec.durable,
            deliveries: attempt,
        };
        let outcome = settle(bus, spec, &message, verdict, origin, attempt, &lease).await;
        metrics::counter!(
            metric::EVENTS_CONSUMED,
            "consumer" => consumer,
            "type" => event_type,
            "outcome" => outcome,
        )
        .increment(1);
    }
    .instrument(span)
    .await;
}

/// The delivery's CONSUMER span (OTel messaging conventions), its parent the trace context
/// the message carries.
fn consumer_span(
    message: &jetstream::Message,
    spec: &ConsumerSpec,
    position: &Position,
) -> tracing::Span {
    let msg_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get(header::MSG_ID))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "process",
        otel.name = format!("process {}", span_target(message, &position.subject)),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %position.subject,
        messaging.consumer.group.name = %spec.durable,
        messaging.message.id = %msg_id,
        messaging.nats.message.delivery_count = position.attempt as i64,
        messaging.nats.stream.sequence = position.sequence as i64,
        cloudevents.event_id = tracing::field::Empty,
        cloudevents.event_type = tracing::field::Empty,
        order_id = tracing::field::Empty,
    );
    trace::set_parent_from(&span, message.headers.as_ref());
    span
}

/// Decodes the message and runs the handler on it, with progress acks and a timeout: the
/// event's type (for metrics) and what to do with the message.
async fn judge<H: Handler>(
    spec: &ConsumerSpec,
    handler: &H,
    message: &jetstream::Message,
    position: &Position,
    lease: &Lease,
    replay_until: u64,
) -> (&'static str, Verdict) {
    let (envelope, key) = match decode(&position.subject, &message.payload) {
        Ok(decoded) => decoded,
        Err(e) => {
            return (
                "undecodable",
                Verdict::DeadLetter(DeadLetterReason::Permanent, e),
            );
        }
    };
    let span = tracing::Span::current();
    span.record("cloudevents.event_id", tracing::field::display(envelope.id));
    span.record("cloudevents.event_type", envelope.kind().type_name());
    span.record("order_id", tracing::field::display(envelope.correlation_id));
    let event_type = envelope.kind().type_name();
    // A message a restored consumer delivers again may have been handled before the restore:
    // to its handler, that is an earlier delivery.
    let attempt = match position.sequence <= replay_until {
        true => position.attempt + 1,
        false => position.attempt,
    };
    let delivery = Delivery {
        envelope,
        key,
        subject: position.subject.clone(),
        stream_sequence: position.sequence,
        attempt,
        is_last_attempt: position.is_last_attempt,
        lease: lease.clone(),
    };
    let handled = tokio::time::timeout(
        spec.handler_timeout,
        AssertUnwindSafe(handler.handle(delivery)).catch_unwind(),
    );
    let handled = with_progress_acks(handled, message, spec.progress_every, lease)
        .await
        .unwrap_or_else(|_elapsed| {
            let why = format!("handler timed out after {:?}", spec.handler_timeout);
            Ok(Err(HandlerError::transient(why)))
        });
    (event_type, verdict(spec, handled, position.is_last_attempt))
}

/// What to do with a message, given how its handler ended: returned, or panicked. A transient
/// failure of the last delivery is dead-lettered (no delivery would follow).
fn verdict(
    spec: &ConsumerSpec,
    handled: std::thread::Result<Result<(), HandlerError>>,
    is_last_attempt: bool,
) -> Verdict {
    match handled {
        Ok(Ok(())) => Verdict::Ack,
        Ok(Err(HandlerError::Transient(e) | HandlerError::Wait { error: e, .. }))
            if is_last_attempt =>
        {
            let why = format!(
                "transient failure on the last of {} deliveries: {e}",
                spec.max_deliver
            );
            Verdict::DeadLetter(DeadLetterReason::RetriesExhausted, why)
        }
        Ok(Err(HandlerError::Transient(e))) => Verdict::Retry(e.to_string(), None),
        Ok(Err(HandlerError::Wait { after, error })) => {
            Verdict::Retry(error.to_string(), Some(after))
        }
        Ok(Err(HandlerError::Permanent(e))) => {
            Verdict::DeadLetter(DeadLetterReason::Permanent, e.to_string())
        }
        Err(panic) => {
            let why = format!("handler panicked: {}", panic_text(&panic));
            Verdict::DeadLetter(DeadLetterReason::Permanent, why)
        }
    }
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
        Verdict::Retry(error, _) if !lease.is_held() => {
            // The server has redelivered the message (or will): a nak from this old delivery
            // would land on the current one and hand it to a third handler while the second
            // still works on it. Stay silent; the current delivery settles the message.
            tracing::warn!(
                error,
                attempt,
                "transient failure after the lease expired; \
                 leaving the message to its newer delivery"
            );
            tracing::Span::current().record("otel.status_code", "ERROR");
            return "stale";
        }
        Verdict::Retry(error, at_least) => {
            let delay = spec
                .nak_delay_after(attempt)
                .max(at_least.unwrap_or_default());
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
