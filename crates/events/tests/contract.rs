//! The event contract as a specification: golden fixtures that must decode forever, schemas that
//! must match the types, and decode errors that say what was wrong.

// Helpers outside `#[test]` fns are test code too: a panic here is a failed test with a message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use events::{
    DecodeError, Envelope, Event, EventKind, LineItem, OrderCreated, OrderId, Sku, schema,
};

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture_path(kind: EventKind, version: u32) -> PathBuf {
    crate_dir()
        .join("fixtures")
        .join(format!("{}.v{version}.json", kind.type_name()))
}

fn fixture(kind: EventKind, version: u32) -> Vec<u8> {
    let path = fixture_path(kind, version);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {} is missing: {e}", path.display()))
}

#[test]
fn every_known_event_version_has_a_golden_fixture_that_decodes_to_its_kind() {
    for kind in EventKind::ALL {
        for &version in kind.versions() {
            let envelope = Envelope::decode(&fixture(kind, version))
                .unwrap_or_else(|e| panic!("{kind} v{version} no longer decodes: {e}"));
            assert_eq!(envelope.kind(), kind);
        }
    }
}

#[test]
fn a_v1_order_created_is_upcast_to_v2_with_its_total_computed() {
    let v1 = Envelope::decode(&fixture(EventKind::OrderCreated, 1)).unwrap();
    let v2 = Envelope::decode(&fixture(EventKind::OrderCreated, 2)).unwrap();
    let (Event::OrderCreated(from_v1), Event::OrderCreated(from_v2)) = (&v1.event, &v2.event)
    else {
        panic!("not an OrderCreated")
    };
    assert_eq!(from_v1.total_cents, 4490);
    assert_eq!(from_v1, from_v2);
}

#[test]
fn an_envelope_survives_encode_then_decode_unchanged() {
    let order = OrderCreated::builder()
        .order_id(OrderId::new())
        .customer_id("c-1".to_string().try_into().unwrap())
        .items(vec![LineItem {
            sku: Sku::new("A").unwrap(),
            quantity: 3,
            unit_price_cents: 100,
        }])
        .currency(events::Currency::new("USD").unwrap())
        .build()
        .unwrap();
    let cause = Envelope::new("/test", Event::OrderCreated(order.clone()));
    let envelope = Envelope::new("/test", Event::OrderCreated(order)).caused_by(&cause);
    let decoded = Envelope::decode(&envelope.to_json().unwrap()).unwrap();
    assert_eq!(decoded, envelope);
    assert_eq!(decoded.causation_id, Some(cause.id));
}

#[test]
fn events_are_written_in_their_current_version() {
    let bytes = Envelope::decode(&fixture(EventKind::OrderCreated, 1))
        .unwrap()
        .to_json()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["schemaversion"], 2);
    assert_eq!(json["type"], "orders.created");
    assert_eq!(json["specversion"], "1.0");
}

fn with_fixture(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut json: serde_json::Value =
        serde_json::from_slice(&fixture(EventKind::OrderCreated, 2)).unwrap();
    edit(&mut json);
    serde_json::to_vec(&json).unwrap()
}

#[test]
fn garbage_bytes_are_reported_as_not_json() {
    let err = Envelope::decode(b"\x00\xffnot json").unwrap_err();
    assert!(matches!(err, DecodeError::Json(_)), "{err}");
}

#[test]
fn an_unknown_schema_version_is_reported_with_the_known_ones() {
    let err = Envelope::decode(&with_fixture(|j| j["schemaversion"] = 99.into())).unwrap_err();
    assert!(
        matches!(err, DecodeError::UnknownVersion { version: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("known: [1, 2]"), "{err}");
}

#[test]
fn an_unknown_event_type_is_reported_by_name() {
    let err = Envelope::decode(&with_fixture(|j| j["type"] = "orders.shipped".into())).unwrap_err();
    assert!(
        matches!(&err, DecodeError::UnknownType(t) if t == "orders.shipped"),
        "{err}"
    );
}

#[test]
fn a_missing_envelope_attribute_is_named() {
    let err = Envelope::decode(&with_fixture(|j| {
        j.as_object_mut().unwrap().remove("correlationid");
    }))
    .unwrap_err();
    assert!(
        matches!(err, DecodeError::MissingAttribute("correlationid")),
        "{err}"
    );
}

#[test]
fn a_missing_payload_field_is_named() {
    let err = Envelope::decode(&with_fixture(|j| {
        j["data"].as_object_mut().unwrap().remove("total_cents");
    }))
    .unwrap_err();
    assert!(matches!(err, DecodeError::InvalidData { .. }), "{err}");
    assert!(
        err.to_string().contains("missing field `total_cents`"),
        "{err}"
    );
}

#[test]
fn a_payload_field_of_the_wrong_type_is_reported() {
    let err =
        Envelope::decode(&with_fixture(|j| j["data"]["total_cents"] = "lots".into())).unwrap_err();
    assert!(matches!(err, DecodeError::InvalidData { .. }), "{err}");
    assert!(err.to_string().contains("invalid type"), "{err}");
}

#[test]
fn a_sku_that_is_unsafe_as_a_subject_token_is_refused() {
    let err = Envelope::decode(&with_fixture(|j| {
        j["data"]["items"][0]["sku"] = "a.>".into()
    }))
    .unwrap_err();
    assert!(err.to_string().contains("invalid sku"), "{err}");
}

#[test]
fn a_v1_order_whose_total_overflows_cannot_be_upcast() {
    let mut json: serde_json::Value =
        serde_json::from_slice(&fixture(EventKind::OrderCreated, 1)).unwrap();
    json["data"]["items"][0]["unit_price_cents"] = u64::MAX.into();
    let err = Envelope::decode(&serde_json::to_vec(&json).unwrap()).unwrap_err();
    assert!(matches!(err, DecodeError::Upcast { from: 1, .. }), "{err}");
}

#[test]
fn unknown_payload_fields_are_tolerated_for_forward_compatibility() {
    let envelope =
        Envelope::decode(&with_fixture(|j| j["data"]["gift_wrap"] = true.into())).unwrap();
    assert_eq!(envelope.kind(), EventKind::OrderCreated);
}

#[test]
fn checked_in_json_schemas_match_the_types() {
    let dir = crate_dir().join("schemas");
    let bless = std::env::var_os("ORDERFLOW_BLESS").is_some();
    let mut stale = Vec::new();
    for s in schema::all() {
        let path = dir.join(s.file_name());
        let expected = serde_json::to_string_pretty(&s.schema).unwrap() + "\n";
        if bless {
            std::fs::write(&path, &expected).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(expected.as_str()) {
            stale.push(s.file_name());
        }
    }
    assert!(
        stale.is_empty(),
        "stale JSON Schemas {stale:?}: run `ORDERFLOW_BLESS=1 cargo test -p events` and commit"
    );
}

#[test]
fn every_schema_file_belongs_to_a_known_event_version() {
    let known: Vec<String> = schema::all().iter().map(|s| s.file_name()).collect();
    for entry in std::fs::read_dir(crate_dir().join("schemas")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            known.contains(&name),
            "schemas/{name} describes no known event version"
        );
    }
}

#[test]
fn the_checked_in_asyncapi_document_matches_the_code() {
    let path = crate_dir().join("asyncapi.json");
    let expected = serde_json::to_string_pretty(&events::asyncapi::document()).unwrap() + "\n";
    if std::env::var_os("ORDERFLOW_BLESS").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    assert!(
        std::fs::read_to_string(&path).ok().as_deref() == Some(expected.as_str()),
        "asyncapi.json is stale: run `ORDERFLOW_BLESS=1 cargo test -p events` and commit"
    );
}

#[test]
fn the_asyncapi_document_has_a_channel_and_a_message_per_event_version() {
    let document = events::asyncapi::document();
    for kind in EventKind::ALL {
        let channel = &document["channels"][kind.type_name()];
        assert!(
            channel["address"]
                .as_str()
                .unwrap()
                .ends_with(events::layout::verb(kind))
        );
        for &version in kind.versions() {
            let id = format!("{}.v{version}", kind.type_name());
            assert!(document["components"]["messages"][&id].is_object(), "{id}");
            assert!(
                schema::all()
                    .iter()
                    .any(|s| s.file_name() == format!("{id}.json"))
            );
        }
    }
    for subscription in events::topology::SUBSCRIPTIONS {
        for kind in subscription.kinds {
            let operation = format!("{}.receives.{}", subscription.service, kind.type_name());
            assert_eq!(
                document["operations"][&operation]["action"], "receive",
                "{operation}"
            );
        }
    }
}
