//! Every NATS name the system uses — subjects, streams, KV buckets, headers — in one place, so
//! that a rename is one edit and permissions files can be checked against this list.

/// Subjects events are published on. The subject of an event equals its CloudEvents `type`.
pub mod subject {
    /// A customer placed an order (`OrderCreated`).
    pub const ORDERS_CREATED: &str = "orders.created";
    /// The customer asked to cancel an order (`OrderCancellationRequested`).
    pub const ORDERS_CANCELLATION_REQUESTED: &str = "orders.cancellation_requested";
    /// Stock was reserved and the order is confirmed (`OrderConfirmed`).
    pub const ORDERS_CONFIRMED: &str = "orders.confirmed";
    /// The order was cancelled, by the customer or for lack of stock (`OrderCancelled`).
    pub const ORDERS_CANCELLED: &str = "orders.cancelled";
    /// Inventory reserved every line of an order (`InventoryReserved`).
    pub const INVENTORY_RESERVED: &str = "inventory.reserved";
    /// Inventory could not reserve an order; nothing was reserved (`InventoryRejected`).
    pub const INVENTORY_REJECTED: &str = "inventory.rejected";
    /// Inventory gave back what an order had reserved (`InventoryReleased`).
    pub const INVENTORY_RELEASED: &str = "inventory.released";
    /// A notification reached its recipient (`NotificationSent`).
    pub const NOTIFICATIONS_SENT: &str = "notifications.sent";
    /// A notification could not be delivered (`NotificationFailed`).
    pub const NOTIFICATIONS_FAILED: &str = "notifications.failed";
    /// Prefix of dead-letter subjects: a message from `orders.created` goes to `dlq.orders.created`.
    pub const DLQ_PREFIX: &str = "dlq";
    /// Advisory the server emits when a message exhausted `max_deliver` on a consumer;
    /// followed by `.<stream>.<consumer>`.
    pub const MAX_DELIVERIES_ADVISORY_PREFIX: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES";

    /// The dead-letter subject for a message originally published on `subject`.
    pub fn dead_letter(subject: &str) -> String {
        format!("{DLQ_PREFIX}.{subject}")
    }
}

/// JetStream streams and the subjects each one captures.
pub mod stream {
    /// Order lifecycle events (`orders.>`).
    pub const ORDERS: &str = "ORDERS";
    /// Inventory decisions (`inventory.>`).
    pub const INVENTORY: &str = "INVENTORY";
    /// Notification outcomes (`notifications.>`).
    pub const NOTIFICATIONS: &str = "NOTIFICATIONS";
    /// Dead letters of every consumer (`dlq.>`).
    pub const DLQ: &str = "DLQ";
    /// Captured max-deliveries advisories, so an ack-timeout death is dead-lettered even if no
    /// process was listening at the moment the server gave up on the message.
    pub const ADVISORIES: &str = "ADVISORIES";

    /// `(stream, subjects)` for every stream the system provisions.
    pub const ALL: [(&str, &str); 5] = [
        (ORDERS, "orders.>"),
        (INVENTORY, "inventory.>"),
        (NOTIFICATIONS, "notifications.>"),
        (DLQ, "dlq.>"),
        (ADVISORIES, "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>"),
    ];
}

/// Message headers the system reads or writes.
pub mod header {
    /// JetStream de-duplication id; always derived from the cause, never random.
    pub const MSG_ID: &str = "Nats-Msg-Id";
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
    /// Dead letter: why it was given up (`permanent`, `max_deliver`, `ack_timeout`).
    pub const DLQ_REASON: &str = "Dlq-Reason";
    /// Dead letter: the error text.
    pub const DLQ_ERROR: &str = "Dlq-Error";
    /// Dead letter: when it was dead-lettered (RFC 3339).
    pub const DLQ_TIME: &str = "Dlq-Time";
    /// Dead letter: the original `Nats-Msg-Id`, kept because the dead letter needs its own.
    pub const DLQ_MSG_ID: &str = "Dlq-Original-Msg-Id";
}
