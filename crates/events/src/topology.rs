//! Who writes and who reads each event: the saga's wiring (and the archive's) in one place. The services build
//! their consumers from it, and the AsyncAPI document ([`crate::asyncapi`]) states it, so the
//! two cannot drift.

use crate::envelope::EventKind;
use crate::layout::Domain;
use crate::names;

/// A service's durable consumer: its name, and the events it handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// The service.
    pub service: &'static str,
    /// The durable consumer's name (one per partition stream, all named alike).
    pub durable: &'static str,
    /// What it does with them, for the documentation.
    pub purpose: &'static str,
    /// The events it is sent; all from one domain.
    pub kinds: &'static [EventKind],
}

impl Subscription {
    /// The domain of its events (`None` for a subscription to nothing).
    pub fn domain(&self) -> Option<Domain> {
        self.kinds.first().map(|kind| Domain::of(*kind))
    }
}

/// order-service confirms or cancels an order on inventory's decision.
pub const ORDER_SAGA: Subscription = Subscription {
    service: "order-service",
    durable: "order-saga",
    purpose: "confirms the order when its stock is reserved, cancels it when it is rejected",
    kinds: &[EventKind::InventoryReserved, EventKind::InventoryRejected],
};

/// order-service folds every order event into the order's row in the PostgreSQL archive, the
/// read model that outlives the hot window. Only subscription of a service to its own events.
pub const ORDER_ARCHIVE: Subscription = Subscription {
    service: "order-service",
    durable: "order-archive",
    purpose: "folds every order event into the order's row in the PostgreSQL archive",
    kinds: &[
        EventKind::OrderCreated,
        EventKind::OrderConfirmed,
        EventKind::OrderCancelled,
    ],
};

/// order-service folds the outcome of every notification into the order's row in the archive,
/// so that what the customer was told outlives the hot window with the order.
pub const ORDER_ARCHIVE_NOTIFICATIONS: Subscription = Subscription {
    service: "order-service",
    durable: "order-archive-notifications",
    purpose: "folds every notification's outcome into the order's row in the PostgreSQL archive",
    kinds: &[EventKind::NotificationSent, EventKind::NotificationFailed],
};

/// The archive's subscriptions: order-service's projection runs their consumers.
pub const ARCHIVE: [Subscription; 2] = [ORDER_ARCHIVE, ORDER_ARCHIVE_NOTIFICATIONS];

/// inventory-service reserves stock for a new order and releases it for a cancelled one.
pub const INVENTORY: Subscription = Subscription {
    service: "inventory-service",
    durable: "inventory",
    purpose: "reserves stock for a new order (or rejects it), releases it when the order is cancelled",
    kinds: &[EventKind::OrderCreated, EventKind::OrderCancelled],
};

/// notification-service tells the customer about the order's outcome.
pub const NOTIFICATION: Subscription = Subscription {
    service: "notification-service",
    durable: "notification",
    purpose: "notifies the customer (log or webhook) and records the outcome",
    kinds: &[EventKind::OrderConfirmed, EventKind::OrderCancelled],
};

/// Every subscription.
pub const SUBSCRIPTIONS: [Subscription; 5] = [
    ORDER_SAGA,
    ORDER_ARCHIVE,
    ORDER_ARCHIVE_NOTIFICATIONS,
    INVENTORY,
    NOTIFICATION,
];

/// The one service that writes `domain`'s events.
pub const fn writer(domain: Domain) -> &'static str {
    match domain {
        Domain::Orders => "order-service",
        Domain::Inventory => "inventory-service",
        Domain::Notifications => "notification-service",
    }
}

/// The service that creates and configures the streams that are not event streams (`DLQ`,
/// `ADVISORIES`): order-service, which serves the dead letters' admin API. Every service
/// publishes its dead letters into them; only their owner may change them.
pub const SUPPORT_STREAMS_OWNER: &str = "order-service";

/// The event domain `service` writes, if it is one of the system's services.
pub fn written_by(service: &str) -> Option<Domain> {
    Domain::ALL.into_iter().find(|d| writer(*d) == service)
}

/// The subscriptions of `service`.
pub fn subscriptions_of(service: &str) -> impl Iterator<Item = &'static Subscription> {
    SUBSCRIPTIONS.iter().filter(move |s| s.service == service)
}

/// The KV buckets `service` keeps its state in (it alone reads and writes them).
pub fn buckets_of(service: &str) -> &'static [&'static str] {
    match written_by(service) {
        Some(Domain::Orders) => &[names::bucket::IDEMPOTENCY],
        Some(Domain::Inventory) => &[names::bucket::STOCK],
        Some(Domain::Notifications) => &[names::bucket::WEBHOOK_ENDPOINTS],
        None => &[],
    }
}

/// The subscriptions that are sent `kind`.
pub fn readers(kind: EventKind) -> impl Iterator<Item = &'static Subscription> {
    SUBSCRIPTIONS
        .iter()
        .filter(move |s| s.kinds.contains(&kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_saga_subscription_reads_one_domain_written_by_another_service() {
        for subscription in SUBSCRIPTIONS {
            let domain = subscription.domain().unwrap();
            assert!(subscription.kinds.iter().all(|k| Domain::of(*k) == domain));
            if subscription != ORDER_ARCHIVE {
                assert_ne!(writer(domain), subscription.service);
            }
        }
    }

    #[test]
    fn the_archive_reads_every_order_event_and_every_notification_outcome() {
        for kind in EventKind::ALL {
            let read = ARCHIVE.iter().any(|s| s.kinds.contains(&kind));
            assert_eq!(read, Domain::of(kind) != Domain::Inventory, "{kind:?}");
        }
    }

    #[test]
    fn every_service_writes_one_domain_and_reads_through_one_subscription() {
        for domain in Domain::ALL {
            let service = writer(domain);
            assert_eq!(written_by(service), Some(domain));
            assert!(
                subscriptions_of(service).next().is_some(),
                "{service} reads nothing"
            );
        }
        assert_eq!(written_by(SUPPORT_STREAMS_OWNER), Some(Domain::Orders));
    }
}
