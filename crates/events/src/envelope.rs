//! The CloudEvents 1.0 envelope every event travels in, and the one place that turns bytes into
//! typed events (with upcasting) and typed events into bytes.
//!
//! Wire format (structured mode, `application/json`): the standard attributes `specversion`,
//! `id`, `source`, `type`, `subject`, `time`, `datacontenttype`, the extensions `schemaversion`,
//! `correlationid`, `causationid`, and the payload under `data` — readable by any CloudEvents SDK.

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::id::OrderId;
use crate::inventory::{InventoryRejected, InventoryReleased, InventoryReserved};
use crate::notification::{NotificationFailed, NotificationKind, NotificationSent};
use crate::order::{OrderCancelled, OrderConfirmed, OrderCreated, OrderCreatedV1};

/// The CloudEvents spec version this crate reads and writes.
pub const SPEC_VERSION: &str = "1.0";
const CONTENT_TYPE: &str = "application/json";

/// Every event of the saga, each in its current schema version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Event {
    /// `orders.created`
    OrderCreated(OrderCreated),
    /// `orders.confirmed`
    OrderConfirmed(OrderConfirmed),
    /// `orders.cancelled`
    OrderCancelled(OrderCancelled),
    /// `inventory.reserved`
    InventoryReserved(InventoryReserved),
    /// `inventory.rejected`
    InventoryRejected(InventoryRejected),
    /// `inventory.released`
    InventoryReleased(InventoryReleased),
    /// `notifications.sent`
    NotificationSent(NotificationSent),
    /// `notifications.failed`
    NotificationFailed(NotificationFailed),
}

/// The type of an event, without its payload: its name, subject and schema versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `orders.created`
    OrderCreated,
    /// `orders.confirmed`
    OrderConfirmed,
    /// `orders.cancelled`
    OrderCancelled,
    /// `inventory.reserved`
    InventoryReserved,
    /// `inventory.rejected`
    InventoryRejected,
    /// `inventory.released`
    InventoryReleased,
    /// `notifications.sent`
    NotificationSent,
    /// `notifications.failed`
    NotificationFailed,
}

impl EventKind {
    /// Every kind, for catalogues, schema generation and tests.
    pub const ALL: [EventKind; 8] = [
        Self::OrderCreated,
        Self::OrderConfirmed,
        Self::OrderCancelled,
        Self::InventoryReserved,
        Self::InventoryRejected,
        Self::InventoryReleased,
        Self::NotificationSent,
        Self::NotificationFailed,
    ];

    /// The CloudEvents `type`. Where an event of this type is published is the business of
    /// [`crate::layout`]: its subject also names the order it belongs to.
    pub const fn type_name(self) -> &'static str {
        match self {
            Self::OrderCreated => "orders.created",
            Self::OrderConfirmed => "orders.confirmed",
            Self::OrderCancelled => "orders.cancelled",
            Self::InventoryReserved => "inventory.reserved",
            Self::InventoryRejected => "inventory.rejected",
            Self::InventoryReleased => "inventory.released",
            Self::NotificationSent => "notifications.sent",
            Self::NotificationFailed => "notifications.failed",
        }
    }

    /// Every schema version a reader accepts, oldest first; the last one is written.
    pub const fn versions(self) -> &'static [u32] {
        match self {
            Self::OrderCreated => &[1, 2],
            _ => &[1],
        }
    }

    /// The schema version producers write.
    pub const fn current_version(self) -> u32 {
        match self.versions() {
            [.., last] => *last,
            [] => 1,
        }
    }

    /// The kind whose CloudEvents `type` is `type_name`.
    pub fn from_type_name(type_name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.type_name() == type_name)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.type_name())
    }
}

// Here rather than in notification.rs, which this module already depends on.
impl NotificationKind {
    /// The order event it announces.
    pub const fn announces(self) -> EventKind {
        match self {
            Self::OrderConfirmed => EventKind::OrderConfirmed,
            Self::OrderCancelled => EventKind::OrderCancelled,
        }
    }

    /// The notification that announces an event of `kind`, if the customer is told of it.
    pub fn announcing(kind: EventKind) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.announces() == kind)
    }
}

impl Event {
    /// The kind of this event.
    pub const fn kind(&self) -> EventKind {
        match self {
            Self::OrderCreated(_) => EventKind::OrderCreated,
            Self::OrderConfirmed(_) => EventKind::OrderConfirmed,
            Self::OrderCancelled(_) => EventKind::OrderCancelled,
            Self::InventoryReserved(_) => EventKind::InventoryReserved,
            Self::InventoryRejected(_) => EventKind::InventoryRejected,
            Self::InventoryReleased(_) => EventKind::InventoryReleased,
            Self::NotificationSent(_) => EventKind::NotificationSent,
            Self::NotificationFailed(_) => EventKind::NotificationFailed,
        }
    }

    /// The order this event belongs to: every event of the saga is about one order.
    pub fn order_id(&self) -> OrderId {
        match self {
            Self::OrderCreated(e) => e.order_id,
            Self::OrderConfirmed(e) => e.order_id,
            Self::OrderCancelled(e) => e.order_id,
            Self::InventoryReserved(e) => e.order_id,
            Self::InventoryRejected(e) => e.order_id,
            Self::InventoryReleased(e) => e.order_id,
            Self::NotificationSent(e) => e.order_id,
            Self::NotificationFailed(e) => e.order_id,
        }
    }

    /// The id of the aggregate the event changes (the CloudEvents `subject`): the notification
    /// for notification outcomes, the order for everything else.
    pub fn aggregate_id(&self) -> String {
        match self {
            Self::NotificationSent(e) => e.notification_id.to_string(),
            Self::NotificationFailed(e) => e.notification_id.to_string(),
            other => other.order_id().to_string(),
        }
    }
}

/// An event with its CloudEvents attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Unique id of this event (UUID v7).
    pub id: Uuid,
    /// The producing service, as a URI reference (`/orderflow/order-service`).
    pub source: String,
    /// The aggregate the event changes (see [`Event::aggregate_id`]).
    pub subject: String,
    /// When the event happened.
    pub time: DateTime<Utc>,
    /// The order whose saga this event belongs to.
    pub correlation_id: OrderId,
    /// The event that caused this one, if any.
    pub causation_id: Option<Uuid>,
    /// The payload, upcast to its current version.
    pub event: Event,
}

impl Envelope {
    /// Wraps `event` as produced now by `source`, with a fresh id and no cause.
    pub fn new(source: impl Into<String>, event: Event) -> Self {
        Self {
            id: Uuid::now_v7(),
            source: source.into(),
            subject: event.aggregate_id(),
            time: Utc::now(),
            correlation_id: event.order_id(),
            causation_id: None,
            event,
        }
    }

    /// Records `cause` as the event that caused this one.
    pub fn caused_by(mut self, cause: &Envelope) -> Self {
        self.causation_id = Some(cause.id);
        self
    }

    /// The kind of the payload.
    pub fn kind(&self) -> EventKind {
        self.event.kind()
    }

    /// Serializes to CloudEvents structured JSON in the current schema version.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let kind = self.kind();
        serde_json::to_vec(&Wire {
            specversion: SPEC_VERSION,
            id: self.id,
            source: &self.source,
            event_type: kind.type_name(),
            subject: &self.subject,
            time: self.time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            datacontenttype: CONTENT_TYPE,
            schemaversion: kind.current_version(),
            correlationid: self.correlation_id,
            causationid: self.causation_id,
            data: &self.event,
        })
    }

    /// Parses CloudEvents structured JSON, checks every attribute, and decodes the payload of
    /// any known schema version, upcast to the current one.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let wire: WireIn<'_> = serde_json::from_slice(bytes).map_err(DecodeError::Json)?;
        let specversion = required(wire.specversion, "specversion")?;
        if specversion != SPEC_VERSION {
            return Err(DecodeError::UnsupportedSpecVersion(specversion));
        }
        let type_name = required(wire.event_type, "type")?;
        let kind = EventKind::from_type_name(&type_name)
            .ok_or_else(|| DecodeError::UnknownType(type_name.clone()))?;
        let version = required(wire.schemaversion, "schemaversion")?;
        if !kind.versions().contains(&version) {
            return Err(DecodeError::UnknownVersion { kind, version });
        }
        let id = parse_uuid(&required(wire.id, "id")?, "id")?;
        let correlation_id = OrderId(parse_uuid(
            &required(wire.correlationid, "correlationid")?,
            "correlationid",
        )?);
        let causation_id = wire
            .causationid
            .map(|c| parse_uuid(&c, "causationid"))
            .transpose()?;
        let time = required(wire.time, "time")?;
        let time = DateTime::parse_from_rfc3339(&time)
            .map_err(|e| DecodeError::InvalidAttribute {
                attribute: "time",
                reason: format!("{time:?} is not RFC 3339: {e}"),
            })?
            .with_timezone(&Utc);
        let data = wire.data.ok_or(DecodeError::MissingAttribute("data"))?;
        let event = decode_data(kind, version, data.get())?;
        Ok(Self {
            id,
            source: required(wire.source, "source")?,
            subject: required(wire.subject, "subject")?,
            time,
            correlation_id,
            causation_id,
            event,
        })
    }
}

/// Decodes the payload of `kind` written in schema `version`, upcasting old versions.
fn decode_data(kind: EventKind, version: u32, data: &str) -> Result<Event, DecodeError> {
    fn parse<T: for<'de> Deserialize<'de>>(
        kind: EventKind,
        version: u32,
        data: &str,
    ) -> Result<T, DecodeError> {
        serde_json::from_str(data).map_err(|source| DecodeError::InvalidData {
            kind,
            version,
            source,
        })
    }
    Ok(match (kind, version) {
        (EventKind::OrderCreated, 1) => {
            let v1: OrderCreatedV1 = parse(kind, version, data)?;
            let v2 = OrderCreated::try_from(v1).map_err(|reason| DecodeError::Upcast {
                kind,
                from: 1,
                reason,
            })?;
            Event::OrderCreated(v2)
        }
        (EventKind::OrderCreated, _) => Event::OrderCreated(parse(kind, version, data)?),
        (EventKind::OrderConfirmed, _) => Event::OrderConfirmed(parse(kind, version, data)?),
        (EventKind::OrderCancelled, _) => Event::OrderCancelled(parse(kind, version, data)?),
        (EventKind::InventoryReserved, _) => Event::InventoryReserved(parse(kind, version, data)?),
        (EventKind::InventoryRejected, _) => Event::InventoryRejected(parse(kind, version, data)?),
        (EventKind::InventoryReleased, _) => Event::InventoryReleased(parse(kind, version, data)?),
        (EventKind::NotificationSent, _) => Event::NotificationSent(parse(kind, version, data)?),
        (EventKind::NotificationFailed, _) => {
            Event::NotificationFailed(parse(kind, version, data)?)
        }
    })
}

fn required<T>(value: Option<T>, attribute: &'static str) -> Result<T, DecodeError> {
    value.ok_or(DecodeError::MissingAttribute(attribute))
}

fn parse_uuid(value: &str, attribute: &'static str) -> Result<Uuid, DecodeError> {
    Uuid::parse_str(value).map_err(|e| DecodeError::InvalidAttribute {
        attribute,
        reason: format!("{value:?} is not a UUID: {e}"),
    })
}

/// Why bytes could not be decoded into an [`Envelope`]. Every variant is permanent: the same
/// bytes will never decode, so the message belongs in the dead-letter stream.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a JSON object of the envelope's shape.
    #[error("not a JSON CloudEvent: {0}")]
    Json(#[source] serde_json::Error),
    /// A required CloudEvents attribute is absent.
    #[error("missing CloudEvents attribute `{0}`")]
    MissingAttribute(&'static str),
    /// An attribute is present but malformed.
    #[error("invalid CloudEvents attribute `{attribute}`: {reason}")]
    InvalidAttribute {
        /// The attribute.
        attribute: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `specversion` is not `1.0`.
    #[error("unsupported CloudEvents specversion {0:?} (expected \"1.0\")")]
    UnsupportedSpecVersion(String),
    /// `type` names no event of this system.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// The schema version is not one this reader knows.
    #[error("unknown schema version {version} of {kind} (known: {known:?})", known = kind.versions())]
    UnknownVersion {
        /// The event type.
        kind: EventKind,
        /// The version found.
        version: u32,
    },
    /// `data` does not match the schema of its type and version (missing field, wrong type, ...).
    #[error("invalid data for {kind} v{version}: {source}")]
    InvalidData {
        /// The event type.
        kind: EventKind,
        /// The schema version it claimed.
        version: u32,
        /// The serde error: names the field and position.
        #[source]
        source: serde_json::Error,
    },
    /// An old version could not be upcast to the current one.
    #[error("cannot upcast {kind} v{from} to the current version: {reason}")]
    Upcast {
        /// The event type.
        kind: EventKind,
        /// The version being upcast.
        from: u32,
        /// Why it failed.
        reason: &'static str,
    },
}

/// The envelope as written. Generic over the payload so that [`crate::schema`] derives the
/// JSON Schema of each event version from this very struct.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Wire<'a, D> {
    pub(crate) specversion: &'a str,
    pub(crate) id: Uuid,
    pub(crate) source: &'a str,
    #[serde(rename = "type")]
    pub(crate) event_type: &'a str,
    pub(crate) subject: &'a str,
    /// RFC 3339 timestamp.
    pub(crate) time: String,
    pub(crate) datacontenttype: &'a str,
    pub(crate) schemaversion: u32,
    pub(crate) correlationid: OrderId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) causationid: Option<Uuid>,
    pub(crate) data: D,
}

/// The envelope as read: every attribute optional so that a missing one is reported by name.
#[derive(Deserialize)]
struct WireIn<'a> {
    specversion: Option<String>,
    id: Option<String>,
    source: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    subject: Option<String>,
    time: Option<String>,
    schemaversion: Option<u32>,
    correlationid: Option<String>,
    causationid: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}
