//! The AsyncAPI 3.0 document of the bus, generated from the code that defines it: channels from
//! the subject layout ([`crate::layout`]), messages from the event catalogue and its checked-in
//! JSON Schemas ([`crate::schema`]), headers from [`crate::names::header`], senders and
//! receivers from [`crate::topology`]. `crates/events/asyncapi.json` is this document; a test
//! fails when it is stale (`ORDERFLOW_BLESS=1 cargo test -p events` rewrites it) and CI
//! validates it with the AsyncAPI parser.

use serde_json::{Map, Value, json};

use crate::envelope::{EventKind, SPEC_VERSION};
use crate::layout::{self, Domain, LAYOUT_VERSION, MAX_PARTITIONS};
use crate::names::{header, stream, subject};
use crate::notification::NotificationKind;
use crate::topology;

/// The document.
pub fn document() -> Value {
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    for kind in EventKind::ALL {
        let name = kind.type_name();
        let mut channel_messages = Map::new();
        for &version in kind.versions() {
            let id = format!("{name}.v{version}");
            channel_messages.insert(
                format!("v{version}"),
                json!({ "$ref": format!("#/components/messages/{id}") }),
            );
            messages.insert(id.clone(), message(kind, version));
        }
        let domain = Domain::of(kind);
        channels.insert(
            name.to_owned(),
            json!({
                "address": address(kind),
                "title": name,
                "description": format!(
                    "`{name}` events, one per order{}, stored in stream `{}` (`{}_<partition>` when \
                     the deployment is partitioned). Each version of the body is a message.",
                    if domain == Domain::Notifications { " and notification" } else { "" },
                    domain.stream_base(),
                    domain.stream_base(),
                ),
                "parameters": parameters(domain),
                "messages": channel_messages,
            }),
        );
        let writer = topology::writer(domain);
        operations.insert(
            format!("{writer}.sends.{name}"),
            json!({
                "action": "send",
                "channel": { "$ref": format!("#/channels/{}", escape(name)) },
                "title": format!("{writer} appends {name}"),
                "summary": format!(
                    "Appended with a conditional write on the order's history \
                     (`{}` over the order's subjects), and `{}` from its cause.",
                    header::EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT,
                    header::MSG_ID,
                ),
            }),
        );
        for reader in topology::readers(kind) {
            operations.insert(
                format!("{}.receives.{name}", reader.service),
                json!({
                    "action": "receive",
                    "channel": { "$ref": format!("#/channels/{}", escape(name)) },
                    "title": format!("{} receives {name}", reader.service),
                    "summary": format!(
                        "Durable consumer `{}` (filter `{}`, one per partition stream): {}.",
                        reader.durable,
                        layout::consumer_filter(kind, 0).replacen(".0.", ".<partition>.", 1),
                        reader.purpose,
                    ),
                }),
            );
        }
    }
    channels.insert(
        "dead-letters".to_owned(),
        json!({
            "address": format!("{}.{{consumer}}.{{original_subject}}", subject::DLQ_PREFIX),
            "title": "Dead letters",
            "description": format!(
                "A message a consumer gave up on, under that consumer's name and its original \
                 subject, in stream `{}`: the original body and headers, plus the `Dlq-*` \
                 headers. Each service may publish under its own consumers' names only. The \
                 admin API lists, shows and redrives them.",
                stream::DLQ
            ),
            "parameters": {
                "consumer": {
                    "description": "The durable consumer that gave up on the message."
                },
                "original_subject": {
                    "description": "The subject the message was first published on (several tokens)."
                }
            },
            "messages": { "deadLetter": { "$ref": "#/components/messages/dead-letter" } },
        }),
    );
    for subscription in topology::SUBSCRIPTIONS {
        operations.insert(
            format!("{}.dead-letters", subscription.service),
            json!({
                "action": "send",
                "channel": { "$ref": "#/channels/dead-letters" },
                "title": format!("{} dead-letters what it gives up on", subscription.service),
                "summary": format!(
                    "A message its consumer `{}` cannot handle (permanent error, retries \
                     exhausted, or every delivery timed out) is published here with the reason.",
                    subscription.durable
                ),
            }),
        );
    }
    messages.insert(
        "dead-letter".to_owned(),
        json!({
            "name": "dead-letter",
            "title": "A dead letter",
            "contentType": "application/cloudevents+json",
            "headers": { "$ref": "#/components/schemas/DeadLetterHeaders" },
            "payload": {
                "description": "The original message's body, unchanged (usually one of the events)."
            },
        }),
    );
    json!({
        "asyncapi": "3.0.0",
        "id": "urn:orderflow:events",
        "info": {
            "title": "orderflow events",
            "version": format!("{LAYOUT_VERSION}.0.0"),
            "description": format!(
                "The events of the order saga on NATS JetStream (nats-server >= 2.11), subject \
                 layout version {LAYOUT_VERSION}: the log is the database, so each order's \
                 events are under its own subjects and its history is read back by subject \
                 filter. Bodies are CloudEvents {SPEC_VERSION} in structured mode (JSON); \
                 W3C trace context rides in the headers, so one order is one trace."
            ),
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {
            "nats": {
                "host": "localhost:4222",
                "protocol": "nats",
                "description": "The NATS server or cluster; every service connects with its own user.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": {
                "EventHeaders": event_headers(),
                "DeadLetterHeaders": dead_letter_headers(),
            },
        },
    })
}

/// A channel key as a JSON Pointer token (`~` and `/` escaped; our names have neither, but
/// the pointer must stay right if one ever does).
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn address(kind: EventKind) -> String {
    let domain = Domain::of(kind);
    let notification = if domain == Domain::Notifications {
        ".{notification}"
    } else {
        ""
    };
    format!(
        "{}.{{partition}}.{{customer_id}}.{{order_id}}{notification}.{}",
        domain.token(),
        layout::verb(kind)
    )
}

fn parameters(domain: Domain) -> Value {
    let mut parameters = json!({
        "partition": {
            "description": format!(
                "The order's partition: FNV-1a (32 bit) of the order id as written here, modulo \
                 the deployment's partition count (1 to {MAX_PARTITIONS}; `0` with one partition)."
            ),
            "examples": ["0"],
        },
        "customer_id": {
            "description": format!(
                "Who placed the order: {} (a subject token).",
                crate::id::TOKEN_PATTERN
            ),
            "examples": ["alice"],
        },
        "order_id": {
            "description": "The order id, a lower-case hyphenated UUID.",
            "examples": ["01a2398c-2f6e-7d1a-9c53-2b3f4a5b6c7d"],
        },
    });
    if domain == Domain::Notifications {
        parameters["notification"] = json!({
            "description": "Which state change the notification announces.",
            "enum": [
                layout::notification_token(NotificationKind::OrderConfirmed),
                layout::notification_token(NotificationKind::OrderCancelled),
            ],
        });
    }
    parameters
}

fn message(kind: EventKind, version: u32) -> Value {
    let name = kind.type_name();
    let current = if version == kind.current_version() {
        "the version written today"
    } else {
        "an older version, still read (upcast) forever"
    };
    json!({
        "name": name,
        "title": format!("{name} v{version}"),
        "summary": format!("`{name}`, schema version {version}: {current}."),
        "contentType": "application/cloudevents+json",
        "headers": { "$ref": "#/components/schemas/EventHeaders" },
        "payload": {
            "schemaFormat": "application/schema+json;version=draft-07",
            "schema": { "$ref": format!("./schemas/{name}.v{version}.json") },
        },
    })
}

fn string_header(description: &str) -> Value {
    json!({ "type": "string", "description": description })
}

fn event_headers() -> Value {
    json!({
        "type": "object",
        "required": [header::MSG_ID, header::EVENT_TYPE, header::EVENT_VERSION],
        "properties": {
            header::MSG_ID: string_header(
                "JetStream de-duplication id, derived from the cause (never random): a retried \
                 append is stored once."
            ),
            header::EVENT_TYPE: string_header("The CloudEvents `type` of the body, so routers need not parse it."),
            header::EVENT_VERSION: string_header("The schema version of the body."),
            header::TRACEPARENT: string_header("W3C trace context: the producer span of this message."),
            header::TRACESTATE: string_header("W3C trace state, when the trace has one."),
            header::EXPECTED_LAST_SUBJECT_SEQUENCE: string_header(
                "Conditional append: the last sequence the writer saw under the order's subjects (0: none)."
            ),
            header::EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: string_header(
                "Conditional append: the subject filter that sequence is about (the order's subjects)."
            ),
        },
    })
}

fn dead_letter_headers() -> Value {
    json!({
        "type": "object",
        "description": "The original message's headers, plus these.",
        "required": [
            header::DLQ_SUBJECT, header::DLQ_STREAM, header::DLQ_SEQUENCE, header::DLQ_CONSUMER,
            header::DLQ_DELIVERIES, header::DLQ_REASON, header::DLQ_ERROR, header::DLQ_TIME,
        ],
        "properties": {
            header::DLQ_SUBJECT: string_header("The subject the message was first published on."),
            header::DLQ_STREAM: string_header("The stream it was stored in."),
            header::DLQ_SEQUENCE: string_header("Its sequence in that stream."),
            header::DLQ_CONSUMER: string_header("The durable consumer that gave up on it."),
            header::DLQ_DELIVERIES: string_header("How many times it was delivered."),
            header::DLQ_REASON: {
                "type": "string",
                "description": "Why it was given up.",
                "enum": crate::names::dead_letter_reason::ALL,
            },
            header::DLQ_ERROR: string_header("The error text."),
            header::DLQ_TIME: string_header("When it was dead-lettered (RFC 3339)."),
            header::DLQ_MSG_ID: string_header("The original `Nats-Msg-Id`."),
            header::TRACEPARENT: string_header("The original message's trace context."),
        },
    })
}
