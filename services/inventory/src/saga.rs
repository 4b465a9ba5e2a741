//! Inventory's side of the saga, on the durable consumer `inventory` (`orders.*.created`,
//! `orders.*.cancelled`, per partition), safe with any number of replicas and any redelivery:
//!
//! - reserve: take every line through the ledger (group-committed per SKU; each take marked
//!   with the id of the decision event it will be recorded by), then append the decision —
//!   `reserved`, or `rejected` with what was short — create-only. The append is the commit: if
//!   another decision is there first (a replica, a cancellation's tombstone, an earlier
//!   attempt), the takes are settled against *that* decision, and ours are undone. A first
//!   delivery decides without reading; a redelivery reads first and only settles if decided.
//! - release: read the reservation, give back each held line once (marked like a take), then
//!   append `released` conditionally on the history read. A cancellation of an order inventory
//!   has not decided yet appends the rejection itself: the tombstone the late order finds.
//!
//! The message is acked only after the append, so a crash at any point is finished by the
//! redelivery; marks are settled after the append, riding along with the SKU's next write.

use std::collections::BTreeMap;

use bus::retry_on_conflict;
use bus::{Appended, ConsumerSpec, Delivery, HandlerError, Lease, Precondition, Round};
use events::{
    Envelope, Event, OrderCreated, OrderId, OrderKey, Partitions, ReservedLine, ServiceId,
    Shortfall, Sku, StockRevisions,
};
use uuid::Uuid;

use crate::reservation::{self, Decision, Reservation};
use crate::stock::{Applied, StockOp};
use crate::store::Store;

/// The inventory service's consumers: one per partition.
pub fn consumer_specs(partitions: Partitions) -> Vec<ConsumerSpec> {
    ConsumerSpec::per_partition(&events::topology::INVENTORY, partitions)
}

/// Handles `orders.created` and `orders.cancelled`.
#[derive(Debug, Clone)]
pub struct Saga {
    pub(crate) store: Store,
}

impl bus::Handler for Saga {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        match &delivery.envelope.event {
            Event::OrderCreated(order) => self.reserve(order, &delivery).await,
            Event::OrderCancelled(_) => self.release(&delivery).await,
            other => Err(HandlerError::permanent(format!(
                "{} does not handle {}",
                ServiceId::Inventory,
                other.kind()
            ))),
        }
    }
}

/// The order's lines as (SKU, quantity), one per SKU, in SKU order — a fixed order keeps two
/// replicas from working on the same SKUs in opposite orders.
fn lines_of(order: &OrderCreated) -> Result<Vec<ReservedLine>, HandlerError> {
    let mut by_sku: BTreeMap<&Sku, u32> = BTreeMap::new();
    for line in &order.items {
        let quantity = by_sku.entry(&line.sku).or_default();
        *quantity = quantity.checked_add(line.quantity).ok_or_else(|| {
            HandlerError::permanent(format!("quantity of {} overflows", line.sku))
        })?;
    }
    Ok(by_sku
        .into_iter()
        .map(|(sku, quantity)| ReservedLine {
            sku: sku.clone(),
            quantity,
        })
        .collect())
}

/// What taking an order's lines did.
struct Taken {
    /// The id the takes are marked with: the decision event's id.
    event: Uuid,
    /// The lines that were short.
    shortfall: Vec<Shortfall>,
    /// The stock revisions the takes were written or read at.
    revisions: StockRevisions,
}

impl Saga {
    async fn reserve(&self, order: &OrderCreated, delivery: &Delivery) -> Result<(), HandlerError> {
        let (key, cause, lease) = (&delivery.key, &delivery.envelope, &delivery.lease);
        let lines = lines_of(order)?;
        let known = match delivery.is_redelivery() {
            true => Some(self.store.read(key).await?),
            false => None,
        };
        let lines = &lines;
        let contended =
            || HandlerError::transient(format!("reservation of {} is contended", key.order));
        retry_on_conflict(known, contended, |known| async move {
            if let Some(decision) = known.as_ref().and_then(|r| r.decision.as_ref()) {
                // Decided (by an earlier attempt, a replica, or a cancellation's tombstone):
                // settle this order's takes against the stored decision, now.
                for line in lines {
                    let op = settle_take(key.order, decision);
                    self.store.ledger().apply(&line.sku, op, None).await?;
                }
                return Ok(Round::Done(()));
            }
            let Some(taken) = self.take(key.order, lines, lease, known.is_some()).await? else {
                // An earlier attempt's mark: what it did is read before anything is taken.
                return Ok(Round::Again(Some(self.store.read(key).await?)));
            };
            let decision = if taken.shortfall.is_empty() {
                reservation::reserved(key.order, lines.clone(), taken.event, cause)
            } else {
                reservation::rejected(key.order, taken.shortfall.clone(), taken.event, cause)
            };
            // Create-only: the first decision is the decision.
            let revisions = Some(&taken.revisions);
            match self
                .store
                .append(key, &decision, Precondition::CreateOnly, revisions)
                .await?
            {
                Appended::Stored(_) => {
                    self.settle_own(key.order, lines, &decision).await?;
                    let kind = decision.kind();
                    tracing::info!(order_id = %key.order, decision = %kind, "reservation decided");
                    Ok(Round::Done(()))
                }
                Appended::Conflict(history) => {
                    Ok(Round::Again(Some(Reservation::fold(key.order, &history))))
                }
            }
        })
        .await
    }

    /// Takes every line, marked with one decision id: a fresh one, or the id an earlier attempt
    /// already marked this order's takes with. After the first short line the rest are only
    /// looked at, to report every short line. `None` if an earlier attempt's mark is met and
    /// the history was not `read`: that attempt may have decided and settled some lines
    /// already (a NATS restart can forget an ack and deliver the order again as new), and a
    /// take under its id on such a line could not be told from its own — taken twice.
    async fn take(
        &self,
        order: OrderId,
        lines: &[ReservedLine],
        lease: &Lease,
        read: bool,
    ) -> Result<Option<Taken>, HandlerError> {
        let fresh = Uuid::now_v7();
        let mut marked: Option<Uuid> = None;
        let mut shortfall = Vec::new();
        let mut revisions = StockRevisions::default();
        for line in lines {
            let outcome = if shortfall.is_empty() {
                let event = marked.unwrap_or(fresh);
                let op = StockOp::Take {
                    order,
                    quantity: line.quantity,
                    event,
                };
                let applied = self
                    .store
                    .ledger()
                    .apply(&line.sku, op, Some(lease))
                    .await?;
                revisions.note(&line.sku, applied.revision);
                match applied.value {
                    Applied::Moved => Applied::Moved,
                    Applied::AlreadyMoved(_) if !read && marked.is_none() => return Ok(None),
                    Applied::AlreadyMoved(earlier) => match marked {
                        Some(ours) if ours != earlier => {
                            // Takes of two attempts that never decided: only possible when a
                            // stale attempt wrote; the redelivery reads and sorts it out.
                            return Err(HandlerError::transient(format!(
                                "order {order}: stock marks of two attempts; deciding on a redelivery"
                            )));
                        }
                        _ => Applied::AlreadyMoved(earlier),
                    },
                    other => other,
                }
            } else {
                let stock = self.store.ledger().stock().get(line.sku.as_str()).await?;
                revisions.note(&line.sku, stock.as_ref().map_or(0, |s| s.revision));
                let available = stock.map_or(0, |s| s.value.available);
                if available >= u64::from(line.quantity) {
                    continue;
                }
                Applied::Short { available }
            };
            match outcome {
                Applied::Moved if marked.is_none() => marked = Some(fresh),
                Applied::AlreadyMoved(earlier) => marked = Some(earlier),
                Applied::Short { available } => shortfall.push(Shortfall {
                    sku: line.sku.clone(),
                    requested: line.quantity,
                    available: u32::try_from(available).unwrap_or(u32::MAX),
                }),
                _ => {}
            }
        }
        Ok(Some(Taken {
            event: marked.unwrap_or(fresh),
            shortfall,
            revisions,
        }))
    }

    /// Settles the takes of a decision this attempt stored: kept units ride along with the
    /// SKUs' next writes; a rejection gives back what it took before the short line, now.
    async fn settle_own(
        &self,
        order: OrderId,
        lines: &[ReservedLine],
        decision: &Envelope,
    ) -> Result<(), HandlerError> {
        let keep = matches!(decision.event, Event::InventoryReserved(_));
        for line in lines {
            let op = StockOp::SettleTake {
                order,
                decision: decision.id,
                keep,
            };
            if keep {
                self.store.ledger().settle_later(&line.sku, op);
            } else {
                self.store.ledger().apply(&line.sku, op, None).await?;
            }
        }
        Ok(())
    }

    async fn release(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let (key, cause, lease) = (&delivery.key, &delivery.envelope, &delivery.lease);
        let reservation = self.store.read(key).await?;
        // A confirmed order's cancellation names what inventory holds for it.
        let held = match &cause.event {
            Event::OrderCancelled(cancelled) => cancelled.reserved.as_slice(),
            _ => &[],
        };
        let contended =
            || HandlerError::transient(format!("release of {} is contended", key.order));
        retry_on_conflict(reservation, contended, |reservation| async move {
            let moved = match (&reservation.decision, reservation.released) {
                (Some(Decision::Rejected { .. }), _) => return Ok(Round::Done(())),
                (decision, Some(release)) => {
                    // Released already: settle any give-back mark that is left (of the lines
                    // the cancellation names, once the reservation has left the hot log).
                    let lines = match decision {
                        Some(Decision::Reserved { lines, .. }) => lines.as_slice(),
                        _ => held,
                    };
                    for line in lines {
                        let op = StockOp::SettleReturn {
                            order: key.order,
                            release,
                        };
                        self.store.ledger().apply(&line.sku, op, None).await?;
                    }
                    return Ok(Round::Done(()));
                }
                (Some(decision @ Decision::Reserved { lines, .. }), None) => {
                    self.give_back(key, &reservation, Some(decision), lines, cause, lease)
                        .await?
                }
                // The order was confirmed, so inventory reserved it, but the record of that
                // has left the hot window (a cancellation weeks later): give back what the
                // cancellation names; the release, appended create-only, makes it once.
                (None, None) if !held.is_empty() => {
                    self.give_back(key, &reservation, None, held, cause, lease)
                        .await?
                }
                (None, None) => self.tombstone(key, cause).await?,
            };
            Ok(match moved {
                None => Round::Done(()),
                Some(moved) => Round::Again(moved),
            })
        })
        .await
    }

    /// Leaves the rejection a late `orders.created` will find; the moved history if something
    /// was decided first.
    async fn tombstone(
        &self,
        key: &OrderKey,
        cause: &Envelope,
    ) -> Result<Option<Reservation>, HandlerError> {
        let rejection = reservation::rejected(key.order, Vec::new(), Uuid::now_v7(), cause);
        match self
            .store
            .append(key, &rejection, Precondition::CreateOnly, None)
            .await?
        {
            Appended::Stored(_) => {
                tracing::info!(
                    order_id = %key.order,
                    "cancelled before its reservation; rejected in advance"
                );
                Ok(None)
            }
            Appended::Conflict(history) => Ok(Some(Reservation::fold(key.order, &history))),
        }
    }

    /// Gives back every held line once, then appends the release; the moved history if the
    /// reservation changed meanwhile. `decision` is the reservation, while the hot log still
    /// has it (its take marks are settled in the same writes).
    async fn give_back(
        &self,
        key: &OrderKey,
        reservation: &Reservation,
        decision: Option<&Decision>,
        lines: &[ReservedLine],
        cause: &Envelope,
        lease: &Lease,
    ) -> Result<Option<Reservation>, HandlerError> {
        let ledger = self.store.ledger();
        let fresh = Uuid::now_v7();
        let mut marked: Option<Uuid> = None;
        let mut revisions = StockRevisions::default();
        for line in lines {
            // The takes were kept: their marks can go in the same write.
            if let Some(decision) = decision {
                ledger.settle_later(&line.sku, settle_take(key.order, decision));
            }
            let op = StockOp::Return {
                order: key.order,
                quantity: line.quantity,
                event: marked.unwrap_or(fresh),
            };
            let applied = ledger.apply(&line.sku, op, Some(lease)).await?;
            revisions.note(&line.sku, applied.revision);
            match applied.value {
                Applied::AlreadyMoved(earlier) if marked.is_none() => marked = Some(earlier),
                Applied::AlreadyMoved(earlier) if marked != Some(earlier) => {
                    return Err(HandlerError::transient(format!(
                        "order {}: give-back marks of two attempts; releasing on a redelivery",
                        key.order
                    )));
                }
                Applied::Moved if marked.is_none() => marked = Some(fresh),
                _ => {}
            }
        }
        let release = marked.unwrap_or(fresh);
        let released = reservation::released(key.order, lines.to_vec(), release, cause);
        let unchanged = Precondition::unchanged_since(reservation.last_sequence);
        match self
            .store
            .append(key, &released, unchanged, Some(&revisions))
            .await?
        {
            Appended::Stored(_) => {
                for line in lines {
                    ledger.settle_later(
                        &line.sku,
                        StockOp::SettleReturn {
                            order: key.order,
                            release,
                        },
                    );
                }
                tracing::info!(order_id = %key.order, "reservation released");
                Ok(None)
            }
            Appended::Conflict(history) => Ok(Some(Reservation::fold(key.order, &history))),
        }
    }
}

fn settle_take(order: OrderId, decision: &Decision) -> StockOp {
    StockOp::SettleTake {
        order,
        decision: decision.event(),
        keep: decision.keeps(),
    }
}

#[cfg(test)]
mod tests {
    use bus::{Handler as _, Lease};
    use events::{CancelReason, OrderCancelled};
    use testkit::{NatsServer, sample};

    use super::*;
    use crate::stock::StockOp;

    /// A server, and the saga over a store on it with `available` MUGs.
    async fn saga(available: u64) -> (NatsServer, Saga) {
        let server = NatsServer::start();
        let bus = sample::bus(&server, "inventory-saga-test").await;
        let store = Store::open(&bus, &bus::StreamSettings::default())
            .await
            .unwrap();
        store
            .ledger()
            .apply(&sample::sku("MUG"), StockOp::SetAvailable(available), None)
            .await
            .unwrap();
        (server, Saga { store })
    }

    /// The first delivery of a new order of `quantity` MUGs.
    fn new_order(quantity: u32) -> Delivery {
        let id = OrderId::new();
        let created = sample::order_created(id, "bob", &[("MUG", quantity)]);
        sample::delivery(&sample::key("bob", id), created)
    }

    /// The first delivery of the customer's cancellation of the order `created` delivered.
    fn cancellation_of(created: &Delivery) -> Delivery {
        cancellation_naming(created, Vec::new())
    }

    /// The cancellation of a confirmed order, which names what inventory holds for it.
    fn cancellation_naming(created: &Delivery, reserved: Vec<ReservedLine>) -> Delivery {
        let cancelled = Event::OrderCancelled(
            OrderCancelled::builder()
                .order_id(created.key.order)
                .customer_id(sample::customer("bob"))
                .reason(CancelReason::CustomerRequested)
                .reserved(reserved)
                .build(),
        );
        sample::delivery(
            &created.key,
            sample::caused_by(cancelled, &created.envelope),
        )
    }

    /// (available, reserved) MUGs.
    async fn mugs(saga: &Saga) -> (u64, u64) {
        let record = saga
            .store
            .ledger()
            .stock()
            .get("MUG")
            .await
            .unwrap()
            .unwrap();
        (record.value.available, record.value.reserved)
    }

    #[tokio::test]
    async fn an_order_in_stock_is_reserved_and_takes_its_stock() {
        let (_server, saga) = saga(10).await;
        let delivery = new_order(4);

        saga.handle(delivery.clone()).await.unwrap();

        let reservation = saga.store.read(&delivery.key).await.unwrap();
        assert!(
            matches!(reservation.decision, Some(Decision::Reserved { .. })),
            "{reservation:?}"
        );
        assert_eq!(mugs(&saga).await, (6, 4));
    }

    #[tokio::test]
    async fn an_order_short_of_stock_is_rejected_with_the_shortfall_and_takes_nothing() {
        let (_server, saga) = saga(1).await;
        let delivery = new_order(3);

        saga.handle(delivery.clone()).await.unwrap();

        let reservation = saga.store.read(&delivery.key).await.unwrap();
        let Some(Decision::Rejected { shortfall, .. }) = reservation.decision else {
            panic!("not rejected: {reservation:?}");
        };
        assert_eq!(
            shortfall,
            vec![Shortfall {
                sku: sample::sku("MUG"),
                requested: 3,
                available: 1
            }]
        );
        assert_eq!(mugs(&saga).await, (1, 0));
    }

    #[tokio::test]
    async fn an_order_delivered_again_as_new_after_a_partial_settle_takes_nothing_twice() {
        // What a NATS restart can leave: the order decided and one line settled, the other
        // still marked — and the server, having forgotten the ack, delivers it as a first
        // delivery.
        let (_server, saga) = saga(10).await;
        let book = sample::sku("BOOK");
        saga.store
            .ledger()
            .apply(&book, StockOp::SetAvailable(10), None)
            .await
            .unwrap();
        let id = OrderId::new();
        let created = sample::order_created(id, "bob", &[("BOOK", 1), ("MUG", 2)]);
        let delivery = sample::delivery(&sample::key("bob", id), created);
        let lines = lines_of(match &delivery.envelope.event {
            Event::OrderCreated(order) => order,
            _ => unreachable!(),
        })
        .unwrap();
        let taken = saga
            .take(id, &lines, &delivery.lease, false)
            .await
            .unwrap()
            .unwrap();
        let decision = reservation::reserved(id, lines.clone(), taken.event, &delivery.envelope);
        let created_only = Precondition::CreateOnly;
        let stored = saga
            .store
            .append(
                &delivery.key,
                &decision,
                created_only,
                Some(&taken.revisions),
            )
            .await
            .unwrap();
        assert!(matches!(stored, Appended::Stored(_)), "{stored:?}");
        // MUG's take is settled, BOOK's mark is left.
        let settle = StockOp::SettleTake {
            order: id,
            decision: decision.id,
            keep: true,
        };
        saga.store
            .ledger()
            .apply(&sample::sku("MUG"), settle, None)
            .await
            .unwrap();

        saga.handle(delivery).await.unwrap();

        assert_eq!(mugs(&saga).await, (8, 2), "MUG taken twice");
        let book = saga.store.ledger().record(&book).await.unwrap();
        assert_eq!((book.available, book.reserved, book.unsettled()), (9, 1, 0));
    }

    #[tokio::test]
    async fn a_redelivered_order_takes_its_stock_once() {
        let (_server, saga) = saga(10).await;
        let delivery = new_order(4);
        saga.handle(delivery.clone()).await.unwrap();

        saga.handle(Delivery {
            attempt: 2,
            ..delivery
        })
        .await
        .unwrap();

        assert_eq!(mugs(&saga).await, (6, 4));
    }

    #[tokio::test]
    async fn a_stale_attempt_takes_no_stock_and_decides_nothing() {
        let (_server, saga) = saga(10).await;
        let delivery = Delivery {
            lease: Lease::expired(),
            ..new_order(4)
        };

        let outcome = saga.handle(delivery.clone()).await;

        assert!(
            matches!(outcome, Err(HandlerError::Transient(_))),
            "{outcome:?}"
        );
        assert_eq!(mugs(&saga).await, (10, 0));
        assert_eq!(saga.store.read(&delivery.key).await.unwrap().decision, None);
    }

    #[tokio::test]
    async fn an_order_whose_cancellation_came_first_finds_the_tombstone_and_gives_its_take_back() {
        let (_server, saga) = saga(10).await;
        let delivery = new_order(4);
        saga.handle(cancellation_of(&delivery)).await.unwrap();

        // A first delivery does not read: it takes, and its create-only append finds the
        // rejection the cancellation left.
        saga.handle(delivery.clone()).await.unwrap();

        let reservation = saga.store.read(&delivery.key).await.unwrap();
        assert!(
            matches!(reservation.decision, Some(Decision::Rejected { .. })),
            "{reservation:?}"
        );
        assert_eq!(mugs(&saga).await, (10, 0));
    }

    #[tokio::test]
    async fn a_cancellation_delivered_again_gives_the_stock_back_once() {
        let (_server, saga) = saga(10).await;
        let delivery = new_order(4);
        saga.handle(delivery.clone()).await.unwrap();
        let cancelled = cancellation_of(&delivery);
        saga.handle(cancelled.clone()).await.unwrap();

        saga.handle(Delivery {
            attempt: 2,
            ..cancelled
        })
        .await
        .unwrap();

        assert_eq!(mugs(&saga).await, (10, 0));
    }

    #[tokio::test]
    async fn a_cancellation_after_the_reservation_left_the_hot_log_gives_back_what_it_names_once() {
        let (server, saga) = saga(10).await;
        let delivery = new_order(4);
        saga.handle(delivery.clone()).await.unwrap();
        // The hot window passes: the reservation's events leave the stream.
        let bus = sample::bus(&server, "the-hot-window").await;
        sample::expire(&bus, events::Domain::Inventory, &delivery.key).await;
        let held = vec![ReservedLine {
            sku: sample::sku("MUG"),
            quantity: 4,
        }];
        let cancelled = cancellation_naming(&delivery, held);

        saga.handle(cancelled.clone()).await.unwrap();
        saga.handle(Delivery {
            attempt: 2,
            ..cancelled
        })
        .await
        .unwrap();

        assert_eq!(mugs(&saga).await, (10, 0));
        let reservation = saga.store.read(&delivery.key).await.unwrap();
        assert!(reservation.released.is_some(), "{reservation:?}");
    }
}
