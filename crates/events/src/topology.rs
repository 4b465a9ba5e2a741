//! Who the services are, and who writes and who reads each event: the saga's wiring (and the
//! archive's) in one place. [`ServiceId`] is the catalog of the services — name, event source,
//! the domain it writes, its durable consumers, its buckets — and everything else names a
//! service through it. The services build their consumers from it, the NATS permissions and
//! the AsyncAPI document ([`crate::asyncapi`]) state it, so none of them can drift.

use std::fmt;

use crate::envelope::EventKind;
use crate::layout::Domain;
use crate::names;

/// One of the system's services. Its name is the NATS user, the connection name, the
/// OpenTelemetry `service.name` and the binary's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceId {
    /// Takes orders over HTTP and runs the order's side of the saga.
    Order,
    /// Reserves and releases stock.
    Inventory,
    /// Tells the customer how the order ended.
    Notification,
}

impl ServiceId {
    /// Every service, in the order an order meets them.
    pub const ALL: [Self; 3] = [Self::Order, Self::Inventory, Self::Notification];

    /// `order-service`, `inventory-service`, `notification-service`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Order => "order-service",
            Self::Inventory => "inventory-service",
            Self::Notification => "notification-service",
        }
    }

    /// The CloudEvents `source` of every event it produces (`/orderflow/order-service`).
    pub const fn source(self) -> &'static str {
        match self {
            Self::Order => "/orderflow/order-service",
            Self::Inventory => "/orderflow/inventory-service",
            Self::Notification => "/orderflow/notification-service",
        }
    }

    /// The one event domain it writes.
    pub const fn writes(self) -> Domain {
        match self {
            Self::Order => Domain::Orders,
            Self::Inventory => Domain::Inventory,
            Self::Notification => Domain::Notifications,
        }
    }

    /// Its durable consumers.
    pub fn subscriptions(self) -> impl Iterator<Item = &'static Subscription> {
        SUBSCRIPTIONS.iter().filter(move |s| s.service == self)
    }

    /// The KV buckets it keeps its state in (it alone reads and writes them).
    pub const fn buckets(self) -> &'static [&'static str] {
        match self {
            Self::Order => &[names::bucket::IDEMPOTENCY],
            Self::Inventory => &[names::bucket::STOCK],
            Self::Notification => &[names::bucket::WEBHOOK_ENDPOINTS],
        }
    }

    /// Whether it owns the streams that are not event streams ([`SUPPORT_STREAMS_OWNER`]).
    pub fn owns_support_streams(self) -> bool {
        self == SUPPORT_STREAMS_OWNER
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A service's durable consumer: its name, and the events it handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// The service.
    pub service: ServiceId,
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
    service: ServiceId::Order,
    durable: "order-saga",
    purpose: "confirms the order when its stock is reserved, cancels it when it is rejected",
    kinds: &[EventKind::InventoryReserved, EventKind::InventoryRejected],
};

/// order-service folds every order event into the order's row in the PostgreSQL archive, the
/// read model that outlives the hot window. Only subscription of a service to its own events.
pub const ORDER_ARCHIVE: Subscription = Subscription {
    service: ServiceId::Order,
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
    service: ServiceId::Order,
    durable: "order-archive-notifications",
    purpose: "folds every notification's outcome into the order's row in the PostgreSQL archive",
    kinds: &[EventKind::NotificationSent, EventKind::NotificationFailed],
};

/// The archive's subscriptions: order-service's projection runs their consumers.
pub const ARCHIVE: [Subscription; 2] = [ORDER_ARCHIVE, ORDER_ARCHIVE_NOTIFICATIONS];

/// inventory-service reserves stock for a new order and releases it for a cancelled one.
pub const INVENTORY: Subscription = Subscription {
    service: ServiceId::Inventory,
    durable: "inventory",
    purpose: "reserves stock for a new order (or rejects it), releases it when the order is cancelled",
    kinds: &[EventKind::OrderCreated, EventKind::OrderCancelled],
};

/// notification-service tells the customer about the order's outcome.
pub const NOTIFICATION: Subscription = Subscription {
    service: ServiceId::Notification,
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
pub fn writer(domain: Domain) -> ServiceId {
    match domain {
        Domain::Orders => ServiceId::Order,
        Domain::Inventory => ServiceId::Inventory,
        Domain::Notifications => ServiceId::Notification,
    }
}

/// The service that creates and configures the streams that are not event streams (`DLQ`,
/// `ADVISORIES`): order-service, which serves the dead letters' admin API. Every service
/// publishes its dead letters into them; only their owner may change them.
pub const SUPPORT_STREAMS_OWNER: ServiceId = ServiceId::Order;

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
            let archived = matches!(Domain::of(kind), Domain::Orders | Domain::Notifications);
            assert_eq!(read, archived, "{kind:?}");
        }
    }

    #[test]
    fn every_service_writes_one_domain_and_reads_through_one_subscription() {
        for domain in Domain::ALL {
            let service = writer(domain);
            assert_eq!(service.writes(), domain);
            assert!(
                service.subscriptions().next().is_some(),
                "{service} reads nothing"
            );
        }
        assert_eq!(SUPPORT_STREAMS_OWNER.writes(), Domain::Orders);
    }

    #[test]
    fn a_service_signs_its_events_with_its_name() {
        for service in ServiceId::ALL {
            assert_eq!(service.source(), format!("/orderflow/{service}"));
        }
    }

    #[test]
    fn durable_names_are_unique() {
        let mut durables: Vec<&str> = SUBSCRIPTIONS.iter().map(|s| s.durable).collect();
        durables.sort_unstable();
        durables.dedup();
        assert_eq!(durables.len(), SUBSCRIPTIONS.len());
    }
}
