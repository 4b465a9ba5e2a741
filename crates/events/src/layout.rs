//! Where every event lives on the bus — subject layout version 3, in which **the log is the
//! database**: the order an event belongs to is in its subject, so an order's history is read
//! back by subject filter and a transition is appended only if that history has not moved.
//!
//! ```text
//! orders.<p>.<customer>.<order>.created | confirmed | cancelled
//! inventory.<p>.<customer>.<order>.reserved | rejected | released
//! notifications.<p>.<customer>.<order>.<confirmed|cancelled>.sent | failed
//! ```
//!
//! - `<p>` is the order's partition, `fnv1a32(order id) mod N` — the function of NATS subject
//!   mapping's `{{partition(N, …)}}`, so a server-side mapping and the services agree on it. With
//!   one partition (the default) it is always `0` and each domain is one stream (`ORDERS`, …);
//!   with N it is stream `ORDERS_<p>`, and so on.
//! - The customer comes before the order so that one customer's orders are a literal subject
//!   prefix: listing them is a subject filter (`orders.<p>.<customer>.*.created`), not an index
//!   to write.
//! - Each event type occurs at most once per order (per notification), so the last message of
//!   every subject under an order's prefix — one multi-last direct get — is its whole history.

use std::fmt;

use crate::envelope::{Event, EventKind};
use crate::id::{CustomerId, OrderId};
use crate::notification::NotificationKind;

/// The version of this layout; a change to it is a migration, not an edit.
pub const LAYOUT_VERSION: u32 = 3;

/// The stream metadata key under which every stream of a deployment records the layout its
/// subjects follow ([`LAYOUT_VERSION`]): a service refuses a stream of another layout.
pub const LAYOUT_METADATA: &str = "orderflow.layout";

/// Most partitions a deployment may split its streams into.
pub const MAX_PARTITIONS: u16 = 64;

/// How many partitions each event stream is split into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partitions(u16);

impl Partitions {
    /// One partition: each domain is a single stream.
    pub const ONE: Self = Self(1);

    /// `count` partitions, 1 to [`MAX_PARTITIONS`].
    pub fn new(count: u16) -> Result<Self, InvalidPartitions> {
        if (1..=MAX_PARTITIONS).contains(&count) {
            Ok(Self(count))
        } else {
            Err(InvalidPartitions(count))
        }
    }

    /// The number of partitions.
    pub fn count(self) -> u16 {
        self.0
    }

    /// Every partition number, `0..count`.
    pub fn all(self) -> impl Iterator<Item = u16> {
        0..self.0
    }

    /// The partition of `order`: FNV-1a (32 bit) of its id as written in subjects, modulo the
    /// count — exactly what `{{partition(N, <order token>)}}` computes on the server.
    pub fn of(self, order: OrderId) -> u16 {
        let mut text = uuid::Uuid::encode_buffer();
        let id = order.0.hyphenated().encode_lower(&mut text);
        (fnv1a32(id.as_bytes()) % u32::from(self.0)) as u16
    }
}

impl Default for Partitions {
    fn default() -> Self {
        Self::ONE
    }
}

/// A partition count out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("partitions must be 1 to {MAX_PARTITIONS} (got {0})")]
pub struct InvalidPartitions(pub u16);

fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// The three event domains, each its own stream (or set of partition streams).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    /// The order lifecycle, written by order-service.
    Orders,
    /// Reservation decisions and releases, written by inventory-service.
    Inventory,
    /// Notification outcomes, written by notification-service.
    Notifications,
}

impl Domain {
    /// Every domain.
    pub const ALL: [Domain; 3] = [Self::Orders, Self::Inventory, Self::Notifications];

    /// The first subject token.
    pub const fn token(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Inventory => "inventory",
            Self::Notifications => "notifications",
        }
    }

    /// The stream name without a partition suffix.
    pub const fn stream_base(self) -> &'static str {
        match self {
            Self::Orders => "ORDERS",
            Self::Inventory => "INVENTORY",
            Self::Notifications => "NOTIFICATIONS",
        }
    }

    /// The stream that holds `partition` of this domain.
    pub fn stream(self, partition: u16, partitions: Partitions) -> String {
        if partitions.count() == 1 {
            self.stream_base().to_owned()
        } else {
            format!("{}_{partition}", self.stream_base())
        }
    }

    /// The subjects the stream of `partition` captures.
    pub fn stream_subjects(self, partition: u16, partitions: Partitions) -> String {
        if partitions.count() == 1 {
            format!("{}.>", self.token())
        } else {
            format!("{}.{partition}.>", self.token())
        }
    }

    /// The domain whose events `kind` is.
    pub const fn of(kind: EventKind) -> Self {
        match kind {
            EventKind::OrderCreated | EventKind::OrderConfirmed | EventKind::OrderCancelled => {
                Self::Orders
            }
            EventKind::InventoryReserved
            | EventKind::InventoryRejected
            | EventKind::InventoryReleased => Self::Inventory,
            EventKind::NotificationSent | EventKind::NotificationFailed => Self::Notifications,
        }
    }
}

/// The last subject token of an event kind (`created`, `reserved`, `sent`, …).
pub const fn verb(kind: EventKind) -> &'static str {
    match kind {
        EventKind::OrderCreated => "created",
        EventKind::OrderConfirmed => "confirmed",
        EventKind::OrderCancelled => "cancelled",
        EventKind::InventoryReserved => "reserved",
        EventKind::InventoryRejected => "rejected",
        EventKind::InventoryReleased => "released",
        EventKind::NotificationSent => "sent",
        EventKind::NotificationFailed => "failed",
    }
}

/// The subject token of a notification kind: the verb of the order event that announced the
/// state change (layout 3; layout 2 said `order_confirmed`, `order_cancelled`).
pub const fn notification_token(kind: NotificationKind) -> &'static str {
    verb(kind.announces())
}

/// The filter a consumer of `kind` in `partition` subscribes with, e.g.
/// `orders.0.*.*.created` or `notifications.0.*.*.*.sent`.
pub fn consumer_filter(kind: EventKind, partition: u16) -> String {
    let domain = Domain::of(kind).token();
    match Domain::of(kind) {
        Domain::Notifications => format!("{domain}.{partition}.*.*.*.{}", verb(kind)),
        _ => format!("{domain}.{partition}.*.*.{}", verb(kind)),
    }
}

/// The filter that catches `kind` in every partition (for observers such as the load
/// generator), e.g. `orders.*.*.*.confirmed`.
pub fn any_partition(kind: EventKind) -> String {
    let domain = Domain::of(kind).token();
    match Domain::of(kind) {
        Domain::Notifications => format!("{domain}.*.*.*.*.{}", verb(kind)),
        _ => format!("{domain}.*.*.*.{}", verb(kind)),
    }
}

/// Where one order's events live: its partition, its customer and its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderKey {
    /// The partition (see [`Partitions::of`]).
    pub partition: u16,
    /// Who placed the order.
    pub customer: CustomerId,
    /// The order.
    pub order: OrderId,
}

/// One order's events in one domain: the stream to read and the filter that selects them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The stream holding them.
    pub stream: String,
    /// A subject filter matching exactly this history's events.
    pub filter: String,
}

impl OrderKey {
    /// The key of `order`, placed by `customer`, in a deployment of `partitions`.
    pub fn new(partitions: Partitions, customer: CustomerId, order: OrderId) -> Self {
        Self {
            partition: partitions.of(order),
            customer,
            order,
        }
    }

    fn prefix(&self, domain: Domain) -> String {
        format!(
            "{}.{}.{}.{}",
            domain.token(),
            self.partition,
            self.customer,
            self.order
        )
    }

    /// The subject `event` (which must be about this order) is appended on.
    pub fn subject(&self, event: &Event) -> String {
        let kind = event.kind();
        let prefix = self.prefix(Domain::of(kind));
        match event {
            Event::NotificationSent(e) => {
                format!("{prefix}.{}.{}", notification_token(e.kind), verb(kind))
            }
            Event::NotificationFailed(e) => {
                format!("{prefix}.{}.{}", notification_token(e.kind), verb(kind))
            }
            _ => format!("{prefix}.{}", verb(kind)),
        }
    }

    /// This order's events in `domain`, read and appended to as one aggregate.
    pub fn history(&self, domain: Domain, partitions: Partitions) -> History {
        History {
            stream: domain.stream(self.partition, partitions),
            filter: format!("{}.>", self.prefix(domain)),
        }
    }

    /// The outcome of one notification of this order: at most one `sent` or `failed`.
    pub fn notification(&self, kind: NotificationKind, partitions: Partitions) -> History {
        History {
            stream: Domain::Notifications.stream(self.partition, partitions),
            filter: format!(
                "{}.{}.>",
                self.prefix(Domain::Notifications),
                notification_token(kind)
            ),
        }
    }

    /// The key of the event published on `subject`, with its kind; an error names what is wrong.
    pub fn parse(subject: &str) -> Result<(Self, EventKind), SubjectError> {
        let bad = |reason: &'static str| SubjectError {
            subject: subject.to_owned(),
            reason,
        };
        let tokens: Vec<&str> = subject.split('.').collect();
        let (domain, rest) = tokens.split_first().ok_or_else(|| bad("empty subject"))?;
        let domain = Domain::ALL
            .into_iter()
            .find(|d| d.token() == *domain)
            .ok_or_else(|| bad("not an event domain"))?;
        let expected = if domain == Domain::Notifications {
            5
        } else {
            4
        };
        if rest.len() != expected {
            return Err(bad("wrong number of tokens for its domain"));
        }
        let partition = rest[0]
            .parse::<u16>()
            .map_err(|_| bad("the partition is not a number"))?;
        let customer = CustomerId::new(rest[1]).map_err(|_| bad("not a valid customer id"))?;
        let order = rest[2]
            .parse::<OrderId>()
            .map_err(|_| bad("not a valid order id"))?;
        let last = rest[expected - 1];
        let kind = EventKind::ALL
            .into_iter()
            .find(|k| Domain::of(*k) == domain && verb(*k) == last)
            .ok_or_else(|| bad("no event of this domain ends so"))?;
        Ok((
            Self {
                partition,
                customer,
                order,
            },
            kind,
        ))
    }
}

/// Whether `subject` is an event subject that `stream` holds in some layout: the domain's
/// stream unpartitioned (`ORDERS` holds `orders.>`), or the stream of the subject's own
/// partition (`ORDERS_2` holds `orders.2.>`). A dead letter is redriven only when this holds
/// for its original subject and stream, so a forged letter cannot publish anywhere else.
pub fn stream_holds(stream: &str, subject: &str) -> bool {
    let Ok((key, kind)) = OrderKey::parse(subject) else {
        return false;
    };
    let base = Domain::of(kind).stream_base();
    stream == base
        || stream
            .strip_prefix(base)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|partition| partition == key.partition.to_string())
}

impl fmt::Display for OrderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.partition, self.customer, self.order)
    }
}

/// The filter that finds an order whose customer is not known (an HTTP lookup by id): a
/// wildcard over the customers of its partition, so it costs more than a keyed read.
pub fn order_anywhere(domain: Domain, partitions: Partitions, order: OrderId) -> History {
    let partition = partitions.of(order);
    History {
        stream: domain.stream(partition, partitions),
        filter: format!("{}.{partition}.*.{order}.>", domain.token()),
    }
}

/// The subjects of one customer's created orders in `partition`: listing them lists the
/// customer's orders.
pub fn orders_of(customer: &CustomerId, partition: u16, partitions: Partitions) -> History {
    History {
        stream: Domain::Orders.stream(partition, partitions),
        filter: format!("orders.{partition}.{customer}.*.created"),
    }
}

/// A subject that is not an event subject of this layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subject {subject:?} is not an orderflow event subject: {reason}")]
pub struct SubjectError {
    /// The subject.
    pub subject: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notification::{Channel, NotificationSent};
    use crate::order::OrderConfirmed;
    use crate::{Currency, InventoryReserved};

    #[test]
    fn a_stream_holds_the_event_subjects_of_its_domain_and_partition_only() {
        let key = key(Partitions::new(3).unwrap());
        let partition = key.partition;
        let subject = format!("orders.{partition}.alice.{}.confirmed", key.order);
        assert!(stream_holds("ORDERS", &subject));
        assert!(stream_holds(&format!("ORDERS_{partition}"), &subject));
        assert!(!stream_holds(
            &format!("ORDERS_{}", partition + 1),
            &subject
        ));
        assert!(!stream_holds("INVENTORY", &subject));
        assert!(!stream_holds("KV_stock", "$KV.stock.SKU-1"));
        assert!(!stream_holds(
            "ORDERS",
            "orders.0.alice.not-an-order.created"
        ));
    }

    fn key(partitions: Partitions) -> OrderKey {
        OrderKey::new(
            partitions,
            CustomerId::new("alice").unwrap(),
            "0193a5b0-7c1e-7d2a-9f00-0123456789ab".parse().unwrap(),
        )
    }

    #[test]
    fn an_order_event_subject_carries_partition_customer_order_and_verb() {
        let key = key(Partitions::ONE);
        let confirmed = Event::OrderConfirmed(
            OrderConfirmed::builder()
                .order_id(key.order)
                .customer_id(key.customer.clone())
                .total_cents(1)
                .currency(Currency::new("EUR").unwrap())
                .build(),
        );
        assert_eq!(
            key.subject(&confirmed),
            "orders.0.alice.0193a5b0-7c1e-7d2a-9f00-0123456789ab.confirmed"
        );
    }

    #[test]
    fn a_notification_subject_names_the_state_change_it_announces() {
        let key = key(Partitions::ONE);
        let sent = Event::NotificationSent(
            NotificationSent::builder()
                .notification_id(uuid::Uuid::nil())
                .order_id(key.order)
                .kind(NotificationKind::OrderCancelled)
                .channel(Channel::Log)
                .attempts(1)
                .build(),
        );
        let subject = key.subject(&sent);
        assert!(subject.ends_with(".cancelled.sent"), "{subject}");
        assert_eq!(
            OrderKey::parse(&subject).unwrap(),
            (key, EventKind::NotificationSent)
        );
    }

    #[test]
    fn a_subject_parses_back_to_its_key_and_kind() {
        let key = key(Partitions::new(8).unwrap());
        let reserved = Event::InventoryReserved(
            InventoryReserved::builder()
                .order_id(key.order)
                .lines(vec![])
                .build(),
        );
        let subject = key.subject(&reserved);
        assert_eq!(
            OrderKey::parse(&subject).unwrap(),
            (key, EventKind::InventoryReserved)
        );
    }

    #[test]
    fn foreign_and_malformed_subjects_are_refused_with_a_reason() {
        for bad in [
            "orders.created",
            "orders.x.alice.0193a5b0-7c1e-7d2a-9f00-0123456789ab.created",
            "orders.0.al*ce.0193a5b0-7c1e-7d2a-9f00-0123456789ab.created",
            "orders.0.alice.not-a-uuid.created",
            "orders.0.alice.0193a5b0-7c1e-7d2a-9f00-0123456789ab.shipped",
            "payments.0.alice.0193a5b0-7c1e-7d2a-9f00-0123456789ab.created",
        ] {
            assert!(OrderKey::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn the_partition_is_fnv1a_of_the_order_id_like_nats_subject_mapping() {
        // FNV-1a 32 of the empty input and of "a" (published test vectors).
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        let partitions = Partitions::new(8).unwrap();
        let order: OrderId = "0193a5b0-7c1e-7d2a-9f00-0123456789ab".parse().unwrap();
        let expected = fnv1a32(order.to_string().as_bytes()) % 8;
        assert_eq!(u32::from(partitions.of(order)), expected);
        assert_eq!(Partitions::ONE.of(order), 0);
    }

    #[test]
    fn one_partition_keeps_the_plain_stream_names() {
        assert_eq!(Domain::Orders.stream(0, Partitions::ONE), "ORDERS");
        assert_eq!(
            Domain::Orders.stream_subjects(0, Partitions::ONE),
            "orders.>"
        );
        let eight = Partitions::new(8).unwrap();
        assert_eq!(Domain::Inventory.stream(3, eight), "INVENTORY_3");
        assert_eq!(Domain::Inventory.stream_subjects(3, eight), "inventory.3.>");
    }

    #[test]
    fn a_partition_count_out_of_range_is_refused() {
        assert!(Partitions::new(0).is_err());
        assert!(Partitions::new(MAX_PARTITIONS + 1).is_err());
    }

    #[test]
    fn consumer_filters_match_the_event_subjects_they_are_for() {
        assert_eq!(
            consumer_filter(EventKind::OrderCreated, 2),
            "orders.2.*.*.created"
        );
        assert_eq!(
            consumer_filter(EventKind::NotificationFailed, 0),
            "notifications.0.*.*.*.failed"
        );
        assert_eq!(
            any_partition(EventKind::OrderConfirmed),
            "orders.*.*.*.confirmed"
        );
    }
}
