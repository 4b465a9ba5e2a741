//! The contracts the three services speak: every event of the order saga, its CloudEvents
//! envelope, the subject layout that puts each order's events under its own subjects
//! ([`layout`]), and the other NATS names (streams, headers) they travel under.
//!
//! This crate is pure data — no I/O — so that producers, consumers, the JSON Schemas for
//! non-Rust readers, and the golden fixtures all come from one definition.
//!
//! Versioning rule: a reader accepts every schema version it has ever known and upcasts it to
//! the current one on decode ([`Envelope::decode`]); an unknown version is a [`DecodeError`],
//! never a guess. Payloads ignore unknown fields (a newer producer may add optional ones).
//!
//! Producers build a payload with its builder (`OrderConfirmed::builder()…build()`): payloads
//! are `#[non_exhaustive]`, so no code outside this crate spells out every field, and a field
//! added with a default changes no producer. How to add one: `docs/extending.md`.

pub mod asyncapi;
mod envelope;
mod id;
mod inventory;
pub mod layout;
pub mod names;
mod notification;
mod order;
pub mod permissions;
pub mod schema;
pub mod topology;

pub use envelope::{DecodeError, Envelope, Event, EventKind, SPEC_VERSION};
pub use id::{Currency, CustomerId, InvalidId, OrderId, Sku, TOKEN_MAX_LEN, TOKEN_PATTERN};
pub use inventory::{
    InventoryRejected, InventoryReleased, InventoryReserved, ReservedLine, Shortfall,
    StockRevisions,
};
pub use layout::{Domain, OrderKey, Partitions};
pub use notification::{Channel, NotificationFailed, NotificationKind, NotificationSent};
pub use order::{
    CancelReason, LineItem, OrderCancelled, OrderConfirmed, OrderCreated, OrderCreatedV1,
    total_cents,
};
pub use topology::ServiceId;
