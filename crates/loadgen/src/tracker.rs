//! Follows every order the load generator placed to its end by listening to the saga's own
//! events on NATS (`orders.*.confirmed`, `orders.*.cancelled`, `notifications.*.sent/failed`,
//! in every partition) — no
//! polling, so measuring adds no load to the services. Events may arrive before the HTTP answer
//! that names the order; both sides meet in one map keyed by order id.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use events::{Envelope, Event, EventKind, layout};
use futures::StreamExt as _;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::latency::Latency;

/// How an order's saga ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Confirmed,
    Cancelled,
}

/// Everything known about one order placed by this run.
#[derive(Debug, Default)]
pub struct Track {
    /// When the request was meant to go out (open loop) or went out (closed loop).
    pub intended: Option<Instant>,
    /// When the 202 arrived.
    pub accepted: Option<Instant>,
    pub outcome: Option<(Outcome, Instant)>,
    /// When `notifications.sent` (or `.failed`, then `notify_failed`) was seen.
    pub notified: Option<Instant>,
    pub notify_failed: bool,
    waiter: Option<oneshot::Sender<()>>,
}

/// Live counters for the progress display.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub errors: AtomicU64,
    pub ended: AtomicU64,
    pub notified: AtomicU64,
}

/// The shared map of orders and the counters.
#[derive(Debug, Default)]
pub struct Tracker {
    orders: Mutex<HashMap<Uuid, Track>>,
    pub counters: Counters,
    /// POST → confirmed of the orders that ended since it was last taken (`--every`).
    interval: Mutex<Latency>,
}

impl Tracker {
    /// Subscribes to the end events on `client` and records them until the subscription ends.
    /// Returns once the subscriptions are registered with the server.
    pub async fn follow(self: &Arc<Self>, client: &async_nats::Client) -> anyhow::Result<()> {
        let mut subscriptions = Vec::new();
        for kind in [
            EventKind::OrderConfirmed,
            EventKind::OrderCancelled,
            EventKind::NotificationSent,
            EventKind::NotificationFailed,
        ] {
            let subject = layout::any_partition(kind);
            subscriptions.push(
                client
                    .subscribe(subject.clone())
                    .await
                    .with_context(|| format!("subscribing to {subject}"))?,
            );
        }
        client.flush().await.context("registering subscriptions")?;
        let mut all = futures::stream::select_all(subscriptions);
        let tracker = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(message) = all.next().await {
                let at = Instant::now();
                // Events this run cannot read are not its orders' ends; they are simply skipped.
                if let Ok(envelope) = Envelope::decode(&message.payload) {
                    tracker.record(&envelope, at);
                }
            }
        });
        Ok(())
    }

    fn record(&self, envelope: &Envelope, at: Instant) {
        let order = envelope.correlation_id.0;
        let mut orders = self.lock();
        let track = orders.entry(order).or_default();
        match &envelope.event {
            Event::OrderConfirmed(_) | Event::OrderCancelled(_) if track.outcome.is_none() => {
                let outcome = if matches!(envelope.event, Event::OrderConfirmed(_)) {
                    Outcome::Confirmed
                } else {
                    Outcome::Cancelled
                };
                track.outcome = Some((outcome, at));
                if let Some(intended) = track.intended {
                    self.interval()
                        .record(at.saturating_duration_since(intended));
                }
                if let Some(waiter) = track.waiter.take() {
                    let _ = waiter.send(());
                }
                if track.accepted.is_some() {
                    self.counters.ended.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::NotificationSent(_) | Event::NotificationFailed(_)
                if track.notified.is_none() =>
            {
                track.notified = Some(at);
                track.notify_failed = matches!(envelope.event, Event::NotificationFailed(_));
                if track.accepted.is_some() {
                    self.counters.notified.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }

    /// Records an accepted order; the returned receiver fires when its saga ends (at once if it
    /// already has).
    pub fn accepted(&self, order: Uuid, intended: Instant, at: Instant) -> oneshot::Receiver<()> {
        let (sender, receiver) = oneshot::channel();
        let mut orders = self.lock();
        let track = orders.entry(order).or_default();
        track.intended = Some(intended);
        track.accepted = Some(at);
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        if let Some((_, ended)) = track.outcome {
            self.interval()
                .record(ended.saturating_duration_since(intended));
            self.counters.ended.fetch_add(1, Ordering::Relaxed);
            let _ = sender.send(());
        } else {
            track.waiter = Some(sender);
        }
        if track.notified.is_some() {
            self.counters.notified.fetch_add(1, Ordering::Relaxed);
        }
        receiver
    }

    /// Takes the orders of this run (those with an accepted request), leaving the map empty.
    pub fn take(&self) -> Vec<Track> {
        std::mem::take(&mut *self.lock())
            .into_values()
            .filter(|t| t.accepted.is_some())
            .collect()
    }

    /// The latencies of the sagas that ended since the last call, leaving an empty record.
    pub fn take_interval(&self) -> Latency {
        std::mem::take(&mut *self.interval())
    }

    fn interval(&self) -> std::sync::MutexGuard<'_, Latency> {
        self.interval
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Track>> {
        // A poisoned map only means a recording thread panicked mid-insert; the data is still
        // the best there is.
        self.orders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
