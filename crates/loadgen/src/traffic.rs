//! Counts the messages nats-server receives and sends, from its monitoring endpoint (`/varz`).
//! Divided by a run's orders it is what one order costs the server, message for message — the
//! figure a saved KV read or write shows up in — measured, not assumed.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Reads the message counters of one server.
pub struct ServerTraffic {
    http: reqwest::Client,
    varz: String,
}

/// The server's message counters at one moment.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Traffic {
    in_msgs: u64,
    out_msgs: u64,
}

/// Messages through the server per accepted order (the load generator's own subscriptions
/// included: two deliveries per order).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MessagesPerOrder {
    /// Received: publishes, KV writes and reads, acks, pulls.
    pub inbound: f64,
    /// Sent: deliveries, replies and acks of writes.
    pub outbound: f64,
}

impl ServerTraffic {
    /// A reader of `monitor_url` (e.g. `http://127.0.0.1:8222`).
    pub fn new(http: reqwest::Client, monitor_url: &str) -> Self {
        Self {
            http,
            varz: format!("{}/varz", monitor_url.trim_end_matches('/')),
        }
    }

    /// The counters now.
    pub async fn sample(&self) -> anyhow::Result<Traffic> {
        self.http
            .get(&self.varz)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {}", self.varz))?
            .json()
            .await
            .with_context(|| format!("reading {}", self.varz))
    }
}

impl Traffic {
    /// What passed between `self` (earlier) and `later`, per order.
    pub fn per_order(self, later: Traffic, orders: u64) -> Option<MessagesPerOrder> {
        let per = |before: u64, after: u64| {
            (after.saturating_sub(before) as f64 / orders as f64 * 10.0).round() / 10.0
        };
        (orders > 0).then(|| MessagesPerOrder {
            inbound: per(self.in_msgs, later.in_msgs),
            outbound: per(self.out_msgs, later.out_msgs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_per_order_are_the_difference_over_the_orders() {
        let before = Traffic {
            in_msgs: 1_000,
            out_msgs: 2_000,
        };
        let after = Traffic {
            in_msgs: 2_700,
            out_msgs: 3_900,
        };
        assert_eq!(
            before.per_order(after, 100),
            Some(MessagesPerOrder {
                inbound: 17.0,
                outbound: 19.0
            })
        );
        assert_eq!(before.per_order(after, 0), None);
    }
}
