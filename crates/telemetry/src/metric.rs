//! Every metric the services export, in one place: its name, kind, labels and help text. Code
//! records through these names; the Prometheus recorder gets each help text (`# HELP`) when
//! it is installed; the metric list of docs/operating.md, the alerting rules and the dashboard
//! read the same names — a test keeps that list equal to this one.

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// One metric of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The Prometheus name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its labels, in the order docs/operating.md writes them.
    pub labels: &'static [&'static str],
    /// The `# HELP` text.
    pub help: &'static str,
}

macro_rules! catalog {
    ($($(#[$doc:meta])* $id:ident = $name:literal, $kind:ident [$($label:literal),*], $help:literal;)*) => {
        $(
            $(#[$doc])*
            pub const $id: &str = $name;
        )*

        /// Every metric, as listed above.
        pub const ALL: &[Metric] = &[
            $(Metric { name: $name, kind: Kind::$kind, labels: &[$($label),*], help: $help },)*
        ];
    };
}

catalog! {
    /// HTTP requests by route template and status, with their duration.
    HTTP_REQUEST_DURATION = "http_server_request_duration_seconds", Histogram ["method", "route", "status"],
        "Duration of HTTP requests, by method, route template and status";
    /// Requests refused by the per-client or per-customer rate limit.
    HTTP_RATE_LIMITED = "http_server_rate_limited_total", Counter [],
        "HTTP requests refused with 429 by the per-client or per-customer rate limit";
    /// Connections the HTTP edge holds open.
    HTTP_OPEN_CONNECTIONS = "http_server_open_connections", Gauge [],
        "HTTP connections open (at most HTTP_MAX_CONNECTIONS)";
    /// Connections refused because HTTP_MAX_CONNECTIONS were open.
    HTTP_CONNECTIONS_REFUSED = "http_server_connections_refused_total", Counter [],
        "HTTP connections closed at once because HTTP_MAX_CONNECTIONS were open";
    /// How full each stream or bucket is against its byte bound.
    STORE_USED_RATIO = "orderflow_store_used_ratio", Gauge ["store"],
        "Share of a stream's or bucket's byte bound in use (new orders are refused above ADMISSION_LIMIT)";
    /// Events published, by outcome (stored, duplicate, conflict, circuit_open, error).
    EVENTS_PUBLISHED = "orderflow_events_published_total", Counter ["type", "outcome"],
        "Events published to JetStream, by event type and outcome";
    /// Events consumed, by how they were settled.
    EVENTS_CONSUMED = "orderflow_events_consumed_total", Counter ["consumer", "type", "outcome"],
        "Events handled by a consumer, by event type and outcome (ack, retry, dead_letter, stale)";
    /// Time in the handler per event.
    HANDLER_DURATION = "orderflow_handler_duration_seconds", Histogram ["consumer", "type"],
        "Time a consumer's handler took per event";
    /// Deliveries after the first.
    REDELIVERIES = "orderflow_redeliveries_total", Counter ["consumer"],
        "Messages delivered again (delivery count above 1)";
    /// Messages sent to the dead-letter stream.
    DEAD_LETTERS = "orderflow_dead_letters_total", Counter ["consumer", "reason"],
        "Messages moved to the DLQ stream, by reason (permanent, retries_exhausted, ack_timeout)";
    /// Dead letters published again by the admin API.
    DEAD_LETTERS_REDRIVEN = "orderflow_dead_letters_redriven_total", Counter [],
        "Dead letters redriven onto their original subject";
    /// A consumer's lag.
    CONSUMER_PENDING = "orderflow_consumer_pending", Gauge ["stream", "consumer"],
        "Messages in the stream not yet delivered to the consumer (lag)";
    /// Delivered, not yet settled.
    CONSUMER_ACK_PENDING = "orderflow_consumer_ack_pending", Gauge ["stream", "consumer"],
        "Messages delivered to the consumer and not yet acknowledged";
    /// Lost compare-and-set races on a KV bucket.
    KV_CAS_CONFLICTS = "orderflow_kv_cas_conflicts_total", Counter ["bucket"],
        "KV writes whose expected revision was stale (read again and retried)";
    /// Stock changes per group-committed write.
    STOCK_BATCH_SIZE = "orderflow_stock_batch_size", Histogram [],
        "Stock changes applied by one group-committed write of a SKU's record";
    /// Whether the NATS connection is up.
    NATS_CONNECTED = "orderflow_nats_connected", Gauge ["connection"],
        "1 while the connection to NATS is up, 0 otherwise";
    /// Whether a stream's publish circuit breaker is open.
    PUBLISH_CIRCUIT_OPEN = "orderflow_publish_circuit_open", Gauge ["stream"],
        "1 while the publish circuit breaker of the stream is open, 0 otherwise";
    /// Publishes refused by an open breaker.
    PUBLISH_REJECTED = "orderflow_publish_rejected_total", Counter ["stream"],
        "Publishes not tried because the stream's circuit breaker was open";
    /// Orders accepted by the API.
    ORDERS_ACCEPTED = "orderflow_orders_accepted_total", Counter ["replayed"],
        "Orders answered 202 (replayed: an Idempotency-Key seen before)";
    /// Accepted → confirmed or cancelled.
    SAGA_DURATION = "orderflow_saga_duration_seconds", Histogram ["outcome"],
        "Time from an order's acceptance to its confirmation or cancellation";
    /// Notifications by channel and outcome.
    NOTIFICATIONS = "orderflow_notifications_total", Counter ["channel", "status"],
        "Notifications settled (sent, failed) or retried, by channel";
    /// State change → notification settled.
    NOTIFICATION_DELAY = "orderflow_notification_delay_seconds", Histogram ["channel", "status"],
        "Time from an order's state change to its notification being settled";
    /// Order events per archive transaction.
    ARCHIVE_BATCH_SIZE = "orderflow_archive_batch_size", Histogram [],
        "Order events folded into the PostgreSQL archive by one transaction";
    /// Whether the archive answers.
    ARCHIVE_AVAILABLE = "orderflow_archive_available", Gauge [],
        "1 while the PostgreSQL archive answered its last write or check, 0 otherwise";
    /// Readiness as of the scrape.
    READY = "orderflow_ready", Gauge [],
        "1 if /readyz would answer 200 at the time of the scrape";
}

/// Hands every help text to the installed recorder.
pub(crate) fn describe() {
    for metric in ALL {
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            Kind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list of docs/operating.md, each entry written `` `name{label,...}` ``.
    fn documented_metrics() -> Vec<String> {
        let operating = include_str!("../../../docs/operating.md");
        let section = operating
            .split("## Metrics (all services, at `/metrics`)")
            .nth(1)
            .expect("docs/operating.md has a metrics section");
        let section = section.split("\n#").next().unwrap_or_default();
        section
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|code| code.starts_with("orderflow_") || code.starts_with("http_server_"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_operating_guide_lists_exactly_the_catalog() {
        let catalog: Vec<String> = ALL
            .iter()
            .map(|m| match m.labels {
                [] => m.name.to_owned(),
                labels => format!("{}{{{}}}", m.name, labels.join(",")),
            })
            .collect();
        let mut documented = documented_metrics();
        let mut expected = catalog.clone();
        documented.sort();
        expected.sort();
        assert_eq!(
            documented, expected,
            "docs/operating.md's metric list differs from the catalog"
        );
    }

    #[test]
    fn names_are_unique_and_counters_end_in_total() {
        let mut names: Vec<_> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        for metric in ALL {
            if metric.kind == Kind::Counter {
                assert!(metric.name.ends_with("_total"), "{}", metric.name);
            }
        }
    }
}
