//! JSON Schema of every event version, derived from the Rust types — the contract for readers
//! written in other languages. The files under `crates/events/schemas/` are generated from
//! here; a test fails when they are stale (`ORDERFLOW_BLESS=1 cargo test -p events` rewrites them).

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Value, json};

use crate::envelope::{EventKind, SPEC_VERSION, Wire};
use crate::inventory::{InventoryRejected, InventoryReleased, InventoryReserved};
use crate::notification::{NotificationFailed, NotificationSent};
use crate::order::{OrderCancelled, OrderConfirmed, OrderCreated, OrderCreatedV1};

/// The schema of one event version: its file name (`orders.created.v2.json`) and pretty JSON.
#[derive(Debug, Clone)]
pub struct EventSchema {
    /// The event type.
    pub kind: EventKind,
    /// The schema version.
    pub version: u32,
    /// The schema document.
    pub schema: Value,
}

impl EventSchema {
    /// The file name the schema is stored under.
    pub fn file_name(&self) -> String {
        format!("{}.v{}.json", self.kind.type_name(), self.version)
    }
}

/// The schema of every known version of every event, in catalogue order.
pub fn all() -> Vec<EventSchema> {
    EventKind::ALL
        .into_iter()
        .flat_map(|kind| kind.versions().iter().map(move |&version| (kind, version)))
        .map(|(kind, version)| EventSchema {
            kind,
            version,
            schema: envelope_schema(kind, version),
        })
        .collect()
}

fn envelope_schema(kind: EventKind, version: u32) -> Value {
    let schema = match (kind, version) {
        (EventKind::OrderCreated, 1) => generate::<OrderCreatedV1>(),
        (EventKind::OrderCreated, _) => generate::<OrderCreated>(),
        (EventKind::OrderConfirmed, _) => generate::<OrderConfirmed>(),
        (EventKind::OrderCancelled, _) => generate::<OrderCancelled>(),
        (EventKind::InventoryReserved, _) => generate::<InventoryReserved>(),
        (EventKind::InventoryRejected, _) => generate::<InventoryRejected>(),
        (EventKind::InventoryReleased, _) => generate::<InventoryReleased>(),
        (EventKind::NotificationSent, _) => generate::<NotificationSent>(),
        (EventKind::NotificationFailed, _) => generate::<NotificationFailed>(),
    };
    let mut value = schema.to_value();
    // The envelope struct is generic; pin the attributes that identify this event version.
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "$id".into(),
            json!(format!(
                "https://orderflow.dev/schemas/{}.v{version}.json",
                kind.type_name()
            )),
        );
        object.insert(
            "title".into(),
            json!(format!("{} v{version}", kind.type_name())),
        );
        object.insert(
            "description".into(),
            json!(format!(
                "CloudEvents 1.0 structured-mode event `{}`, schema version {version}.",
                kind.type_name()
            )),
        );
        if let Some(Value::Object(props)) = object.get_mut("properties") {
            props.insert("specversion".into(), json!({ "const": SPEC_VERSION }));
            props.insert("type".into(), json!({ "const": kind.type_name() }));
            props.insert("schemaversion".into(), json!({ "const": version }));
            props.insert(
                "datacontenttype".into(),
                json!({ "const": "application/json" }),
            );
            props.insert(
                "time".into(),
                json!({ "type": "string", "format": "date-time", "description": "RFC 3339 timestamp." }),
            );
        }
    }
    value
}

fn generate<D: JsonSchema>() -> Schema {
    SchemaGenerator::new(SchemaSettings::draft2020_12()).into_root_schema_for::<Wire<'static, D>>()
}
