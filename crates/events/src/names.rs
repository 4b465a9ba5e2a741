//! The NATS names the system uses besides the event layout ([`crate::layout`]) — dead-letter
//! and advisory subjects, the streams that are not event streams, headers — in one place, so
//! that a rename is one edit and permissions files can be checked against this list.

/// Subjects outside the event layout (events themselves: [`crate::layout`]).
pub mod subject {
    /// Prefix of dead-letter subjects: a message from `orders.0.alice.<id>.created` that the
    /// consumer `inventory` gave up on goes to `dlq.inventory.orders.0.alice.<id>.created`.
    /// Each service may publish only under its own consumers' names, so the subject proves
    /// which consumer (and service) wrote a letter; its `Dlq-*` headers are only claims.
    pub const DLQ_PREFIX: &str = "dlq";
    /// Advisory the server emits when a message exhausted `max_deliver` on a consumer;
    /// followed by `.<stream>.<consumer>`.
    pub const MAX_DELIVERIES_ADVISORY_PREFIX: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES";

    /// The dead-letter subject for a message originally published on `subject` that
    /// `consumer` gave up on.
    pub fn dead_letter(consumer: &str, subject: &str) -> String {
        format!("{DLQ_PREFIX}.{consumer}.{subject}")
    }

    /// Every dead-letter subject of `consumer` (what its service may publish).
    pub fn dead_letters_of(consumer: &str) -> String {
        format!("{DLQ_PREFIX}.{consumer}.>")
    }
}

/// The streams that are not event streams (those are named by [`crate::layout::Domain`]).
pub mod stream {
    /// Dead letters of every consumer (`dlq.>`).
    pub const DLQ: &str = "DLQ";
    /// Captured max-deliveries advisories, so an ack-timeout death is dead-lettered even if no
    /// process was listening at the moment the server gave up on the message.
    pub const ADVISORIES: &str = "ADVISORIES";

    /// `(stream, subjects)` of each of them.
    pub const SUPPORT: [(&str, &str); 2] = [
        (DLQ, "dlq.>"),
        (ADVISORIES, "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>"),
    ];
}

/// The KV buckets, each owned by one service ([`crate::ServiceId::buckets`]).
pub mod bucket {
    /// inventory-service: stock per SKU, with each order's reservation marked in it.
    pub const STOCK: &str = "stock";
    /// order-service: `Idempotency-Key` claims (they expire).
    pub const IDEMPOTENCY: &str = "idempotency";
    /// notification-service: webhook endpoints disabled by a 410.
    pub const WEBHOOK_ENDPOINTS: &str = "webhook_endpoints";

    /// Every bucket.
    pub const ALL: [&str; 3] = [STOCK, IDEMPOTENCY, WEBHOOK_ENDPOINTS];

    /// The stream that holds `bucket`.
    pub fn stream(bucket: &str) -> String {
        format!("KV_{bucket}")
    }
}

/// Where a connection named `name` receives replies: `_INBOX_<name>` (other characters than
/// letters, digits, `-` and `_` become `_`), so a server can let each service's user receive
/// only its own replies (`_INBOX_order-service.>`, not `_INBOX.>`).
pub fn inbox_prefix(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("_INBOX_{name}")
}

/// Durable consumer names besides the subscriptions' own ([`crate::topology`]).
pub mod durable {
    /// The durable consumer on `ADVISORIES` that dead-letters what `consumer` gave up on in
    /// `stream`. One per consumer *and* stream: with partitions a subscription has a consumer
    /// on every partition stream, each with its own watcher.
    pub fn max_deliveries_watcher(consumer: &str, stream: &str) -> String {
        format!("{consumer}-{stream}-max-deliveries")
    }
}

/// Message headers the system reads or writes.
pub mod header {
    /// JetStream de-duplication id; always derived from the cause, never random.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// Conditional append: the last sequence the writer saw under the filter subject (0: none).
    pub const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
    /// Conditional append: the filter (wildcards allowed) the expected sequence is about.
    pub const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str =
        "Nats-Expected-Last-Subject-Sequence-Subject";
    /// W3C trace context: the producer span of this message.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state, vendor-specific trace data.
    pub const TRACESTATE: &str = "tracestate";
    /// W3C baggage.
    pub const BAGGAGE: &str = "baggage";
    /// The CloudEvents `type` of the body, so routers need not parse it.
    pub const EVENT_TYPE: &str = "Ce-Type";
    /// The schema version of the body.
    pub const EVENT_VERSION: &str = "Ce-Schemaversion";
    /// Dead letter: the subject the message was first published on.
    pub const DLQ_SUBJECT: &str = "Dlq-Original-Subject";
    /// Dead letter: the stream the message was stored in.
    pub const DLQ_STREAM: &str = "Dlq-Original-Stream";
    /// Dead letter: its sequence in that stream.
    pub const DLQ_SEQUENCE: &str = "Dlq-Stream-Sequence";
    /// Dead letter: the durable consumer that gave up on it.
    pub const DLQ_CONSUMER: &str = "Dlq-Consumer";
    /// Dead letter: how many times it was delivered.
    pub const DLQ_DELIVERIES: &str = "Dlq-Delivery-Count";
    /// Dead letter: why it was given up (one of [`super::dead_letter_reason::ALL`]).
    pub const DLQ_REASON: &str = "Dlq-Reason";
    /// Dead letter: the error text.
    pub const DLQ_ERROR: &str = "Dlq-Error";
    /// Dead letter: when it was dead-lettered (RFC 3339).
    pub const DLQ_TIME: &str = "Dlq-Time";
    /// Dead letter: the original `Nats-Msg-Id`, kept because the dead letter needs its own.
    pub const DLQ_MSG_ID: &str = "Dlq-Original-Msg-Id";
    /// An inventory decision or release: per SKU, the revision of the `stock` record its
    /// stock change is at (a JSON object, [`crate::StockRevisions`]), so that a backup can
    /// tell whether its copy of a record holds the change.
    pub const STOCK_REVISION: &str = "Orderflow-Stock-Revision";

    /// The headers a redrive carries over from the original message: what an event carries
    /// besides its body — its type and version, and its trace context. Nothing else (no
    /// precondition, no `Dlq-*` claim) is published again.
    pub const REPLAYED: [&str; 6] = [
        EVENT_TYPE,
        EVENT_VERSION,
        STOCK_REVISION,
        TRACEPARENT,
        TRACESTATE,
        BAGGAGE,
    ];
}

/// The values of the `Dlq-Reason` header.
pub mod dead_letter_reason {
    /// The message can never succeed: undecodable, unknown version, or a permanent error.
    pub const PERMANENT: &str = "permanent";
    /// The handler failed transiently on every allowed delivery.
    pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";
    /// Every delivery ended in an ack timeout: the handler hung or its process died.
    pub const ACK_TIMEOUT: &str = "ack_timeout";
    /// Every reason.
    pub const ALL: [&str; 3] = [PERMANENT, RETRIES_EXHAUSTED, ACK_TIMEOUT];
}
