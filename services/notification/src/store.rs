//! Where the notification service keeps its state: each notification's outcome is an event in
//! the `NOTIFICATIONS` stream (see [`events::layout`]); the one KV bucket is for what is not an
//! event — `webhook_endpoints`, whether the endpoint was disabled by a `410 Gone`.

use bus::{Append, AppendError, Appended, Bus, EventLog, MsgId, Precondition, ReadError};
use events::layout::{self, History};
use events::{Domain, Envelope, NotificationKind, OrderId, OrderKey, Partitions};

use crate::notification::{Notification, notification_id};
use crate::webhook::Webhook;

/// The notification service's state.
#[derive(Debug, Clone)]
pub struct Store {
    log: EventLog,
    partitions: Partitions,
    pub(crate) webhook: Option<Webhook>,
}

impl Store {
    /// Opens the store over `bus`, delivering through `webhook` when there is one.
    pub fn new(bus: &Bus, partitions: Partitions, webhook: Option<Webhook>) -> Self {
        Self {
            log: bus.events().clone(),
            partitions,
            webhook,
        }
    }

    /// How many partitions the streams have.
    pub fn partitions(&self) -> Partitions {
        self.partitions
    }

    fn history(&self, key: &OrderKey, kind: NotificationKind) -> History {
        key.notification(kind, self.partitions)
    }

    /// The outcome of notification `kind` of the order under `key`, if it has one.
    pub async fn outcome(
        &self,
        key: &OrderKey,
        kind: NotificationKind,
    ) -> Result<Option<Notification>, ReadError> {
        let events = self.log.read(&self.history(key, kind)).await?;
        Ok(events.iter().find_map(Notification::from_event))
    }

    /// Records `outcome` create-only: [`Appended::Conflict`] if the notification had an
    /// outcome already (the first outcome stands).
    pub async fn record(
        &self,
        key: &OrderKey,
        kind: NotificationKind,
        outcome: &Envelope,
    ) -> Result<Appended, AppendError> {
        let history = self.history(key, kind);
        let msg_id = MsgId::new(outcome.kind(), notification_id(key.order, kind));
        let subject = key.subject(&outcome.event);
        let append = Append::new(Precondition::CreateOnly, &history, subject, outcome, msg_id);
        self.log.append(append).await
    }

    /// Every outcome of `order_id`'s notifications, whoever placed it, oldest first.
    pub async fn outcomes_of(&self, order_id: OrderId) -> Result<Vec<Notification>, ReadError> {
        let history = layout::order_anywhere(Domain::Notifications, self.partitions, order_id);
        let events = self.log.read(&history).await?;
        Ok(events.iter().filter_map(Notification::from_event).collect())
    }
}
