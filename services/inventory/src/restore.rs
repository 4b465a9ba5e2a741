//! How a restore squares the stock records with the inventory events. Pure logic: the admin's
//! restore reads, deletes and writes; this decides.
//!
//! A backup copies the stock records first, record by record, each at its revision, and the
//! `INVENTORY` streams after: every event stored before the copy is in the backup, and so are
//! some stored after it. A decision or release says, per SKU, at which revision of the record
//! its stock change is ([`StockRevisions`]); a change is *in the copy* if that revision is at
//! most the copy's, or the copy still holds the order's mark. Then, per order:
//!
//! - a **reservation not wholly in the copy** (stored after the backup began) is carried
//!   forward — the rest of its units taken in the copy — if the copy has them; otherwise (the
//!   units went to orders the backup holds, or came from a count set after the copy) it is
//!   dropped, with any release after it, and what the copy holds of it is given back: the
//!   order is decided again after the restore, on the restored stock.
//! - **takes marked for an order with no decision** (the decision came after the backup) are
//!   given back, marks and all, for the same reason, and so that a new attempt does not meet
//!   marks of an old one on some SKUs and none on others.
//! - a **release not wholly in the copy** is kept and the rest of it is given back in the
//!   copy: a give-back can always be carried forward.
//! - **give-backs marked for an order with no release** are completed on the other SKUs under
//!   the same mark, so that the release, appended when the cancellation is delivered again,
//!   finds every SKU given back once.
//!
//! Rejections are always kept: what they took is given back when their marks are settled,
//! whether the copy holds the takes or not. Changes stored before the backup began are in the
//! copy and left alone.

use std::collections::BTreeMap;

use bus::Recorded;
use events::{Event, OrderId, ReservedLine, Sku, StockRevisions};
use uuid::Uuid;

use crate::stock::{Mark, StockRecord};

/// A stock record as the backup copied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedStock {
    /// The record.
    pub record: StockRecord,
    /// The revision it was copied at.
    pub revision: u64,
}

/// One of an order's inventory events in the restored stream.
#[derive(Debug, Clone)]
pub struct RestoredEvent {
    /// The event, at its sequence.
    pub recorded: Recorded,
    /// Where its stock changes are, if it said (events of older builds do not).
    pub revisions: Option<StockRevisions>,
    /// Whether it was stored after the backup began (only those may be dropped).
    pub late: bool,
}

/// What the restore does with an order's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Squared {
    /// The sequences of the events to delete from the order's `INVENTORY` stream.
    pub drop: Vec<u64>,
    /// The dropped decision's event id: order events it caused go too.
    pub dropped_decision: Option<Uuid>,
}

/// Squares the copied stock with `order`'s inventory `events` (oldest first). `held` is what
/// the order's cancellation says it held (a confirmed order's), for an order whose reservation
/// has left the hot log.
pub fn square(
    order: OrderId,
    events: &[RestoredEvent],
    held: &[ReservedLine],
    stock: &mut BTreeMap<Sku, CopiedStock>,
) -> Squared {
    let decision = events.iter().find(|e| {
        matches!(
            e.recorded.envelope.event,
            Event::InventoryReserved(_) | Event::InventoryRejected(_)
        )
    });
    let release = events
        .iter()
        .find(|e| matches!(e.recorded.envelope.event, Event::InventoryReleased(_)));
    match decision {
        Some(d) => match &d.recorded.envelope.event {
            Event::InventoryReserved(reserved)
                if d.late && !reserved.lines.iter().all(|l| taken(order, d, l, stock)) =>
            {
                let missing: Vec<&ReservedLine> = reserved
                    .lines
                    .iter()
                    .filter(|l| !taken(order, d, l, stock))
                    .collect();
                let fits = missing.iter().all(|l| {
                    stock
                        .get(&l.sku)
                        .is_some_and(|c| c.record.available >= u64::from(l.quantity))
                });
                if fits {
                    for line in missing {
                        if let Some(copied) = stock.get_mut(&line.sku) {
                            copied.record.take_back(line.quantity);
                        }
                    }
                    complete_release(order, release, &reserved.lines, stock);
                    return Squared::default();
                }
                for line in &reserved.lines {
                    // A give-back marked in the copy counts, whether or not its release is.
                    let given_back = marked_returning(order, line, stock)
                        || release.is_some_and(|r| given_back(order, r, line, stock));
                    if taken(order, d, line, stock) && !given_back {
                        give_back(stock, &line.sku, line.quantity);
                    }
                }
                unmark(order, stock);
                Squared {
                    drop: [Some(d), release]
                        .into_iter()
                        .flatten()
                        .map(|e| e.recorded.sequence)
                        .collect(),
                    dropped_decision: Some(d.recorded.envelope.id),
                }
            }
            Event::InventoryReserved(reserved) => {
                complete_release(order, release, &reserved.lines, stock);
                Squared::default()
            }
            _ => Squared::default(),
        },
        None => {
            // Takes of a decision the backup does not hold: undone.
            for copied in stock.values_mut() {
                if let Some(mark) = copied.record.taking.remove(&order) {
                    copied.record.give_back(mark.quantity);
                }
            }
            complete_release(order, release, held, stock);
            Squared::default()
        }
    }
}

/// Carries a release (or its marks) forward to every line of `lines` the copy does not
/// hold it on.
fn complete_release(
    order: OrderId,
    release: Option<&RestoredEvent>,
    lines: &[ReservedLine],
    stock: &mut BTreeMap<Sku, CopiedStock>,
) {
    match release {
        Some(r) => {
            let Event::InventoryReleased(released) = &r.recorded.envelope.event else {
                return;
            };
            for line in &released.lines {
                if !given_back(order, r, line, stock) {
                    give_back(stock, &line.sku, line.quantity);
                }
            }
        }
        None => {
            let mark = stock
                .values()
                .find_map(|c| c.record.returning.get(&order).copied());
            let Some(mark) = mark else { return };
            for line in lines {
                let Some(copied) = stock.get_mut(&line.sku) else {
                    continue;
                };
                if !copied.record.returning.contains_key(&order) {
                    copied.record.give_back(line.quantity);
                    copied.record.returning.insert(
                        order,
                        Mark {
                            quantity: line.quantity,
                            ..mark
                        },
                    );
                }
            }
        }
    }
}

/// Whether the copy holds `decision`'s take of `line`.
fn taken(
    order: OrderId,
    decision: &RestoredEvent,
    line: &ReservedLine,
    stock: &BTreeMap<Sku, CopiedStock>,
) -> bool {
    in_copy(order, decision, line, stock, |r| &r.taking)
}

/// Whether the copy holds `release`'s give-back of `line`.
fn given_back(
    order: OrderId,
    release: &RestoredEvent,
    line: &ReservedLine,
    stock: &BTreeMap<Sku, CopiedStock>,
) -> bool {
    in_copy(order, release, line, stock, |r| &r.returning)
}

fn in_copy(
    order: OrderId,
    event: &RestoredEvent,
    line: &ReservedLine,
    stock: &BTreeMap<Sku, CopiedStock>,
    marks: impl Fn(&StockRecord) -> &BTreeMap<OrderId, Mark>,
) -> bool {
    let Some(copied) = stock.get(&line.sku) else {
        return false;
    };
    // An event that does not say where its change is was stored by a build before the
    // backup could ask: long before any backup of this build began.
    let at = match &event.revisions {
        None => return true,
        Some(revisions) => revisions.of(&line.sku),
    };
    marks(&copied.record).contains_key(&order) || at.is_some_and(|at| at <= copied.revision)
}

/// Whether the copy of `line`'s record marks a give-back of `order`.
fn marked_returning(
    order: OrderId,
    line: &ReservedLine,
    stock: &BTreeMap<Sku, CopiedStock>,
) -> bool {
    stock
        .get(&line.sku)
        .is_some_and(|c| c.record.returning.contains_key(&order))
}

fn give_back(stock: &mut BTreeMap<Sku, CopiedStock>, sku: &Sku, quantity: u32) {
    if let Some(copied) = stock.get_mut(sku) {
        copied.record.give_back(quantity);
    }
}

fn unmark(order: OrderId, stock: &mut BTreeMap<Sku, CopiedStock>) {
    for copied in stock.values_mut() {
        copied.record.taking.remove(&order);
        copied.record.returning.remove(&order);
    }
}

#[cfg(test)]
mod tests {
    use events::{Envelope, InventoryRejected, InventoryReleased, InventoryReserved};

    use super::*;

    fn sku(name: &str) -> Sku {
        Sku::new(name).unwrap()
    }

    fn line(name: &str, quantity: u32) -> ReservedLine {
        ReservedLine {
            sku: sku(name),
            quantity,
        }
    }

    fn copied(available: u64, reserved: u64, revision: u64) -> CopiedStock {
        CopiedStock {
            record: StockRecord {
                available,
                reserved,
                ..StockRecord::default()
            },
            revision,
        }
    }

    fn event(sequence: u64, event: Event, at: &[(&str, u64)], late: bool) -> RestoredEvent {
        let mut revisions = StockRevisions::default();
        for (name, revision) in at {
            revisions.note(&sku(name), *revision);
        }
        RestoredEvent {
            recorded: Recorded {
                sequence,
                subject: String::new(),
                envelope: Envelope::new("/test", event),
            },
            revisions: Some(revisions),
            late,
        }
    }

    fn reserved(order: OrderId, lines: &[ReservedLine]) -> Event {
        Event::InventoryReserved(
            InventoryReserved::builder()
                .order_id(order)
                .lines(lines.to_vec())
                .build(),
        )
    }

    fn released(order: OrderId, lines: &[ReservedLine]) -> Event {
        Event::InventoryReleased(
            InventoryReleased::builder()
                .order_id(order)
                .lines(lines.to_vec())
                .build(),
        )
    }

    fn numbers(stock: &BTreeMap<Sku, CopiedStock>, name: &str) -> (u64, u64, usize) {
        let r = &stock[&sku(name)].record;
        (r.available, r.reserved, r.unsettled())
    }

    #[test]
    fn a_reservation_the_copy_holds_on_every_sku_is_kept() {
        let order = OrderId::new();
        let mut stock =
            BTreeMap::from([(sku("A"), copied(8, 2, 10)), (sku("B"), copied(7, 3, 20))]);
        let d = event(
            5,
            reserved(order, &[line("A", 2), line("B", 3)]),
            &[("A", 9), ("B", 20)],
            true,
        );
        assert_eq!(square(order, &[d], &[], &mut stock), Squared::default());
        assert_eq!(
            (numbers(&stock, "A"), numbers(&stock, "B")),
            ((8, 2, 0), (7, 3, 0))
        );
    }

    #[test]
    fn a_reservation_the_copy_has_no_units_for_is_dropped_and_given_back_where_it_holds_them() {
        // Taken from A (in the copy, settled), then from B after B was copied; the units
        // B has in the copy went to orders the backup holds.
        let order = OrderId::new();
        let mut stock =
            BTreeMap::from([(sku("A"), copied(8, 2, 10)), (sku("B"), copied(2, 8, 20))]);
        let d = event(
            5,
            reserved(order, &[line("A", 2), line("B", 3)]),
            &[("A", 9), ("B", 21)],
            true,
        );
        let id = d.recorded.envelope.id;
        let squared = square(order, &[d], &[], &mut stock);
        assert_eq!(
            squared,
            Squared {
                drop: vec![5],
                dropped_decision: Some(id)
            }
        );
        assert_eq!(
            (numbers(&stock, "A"), numbers(&stock, "B")),
            ((10, 0, 0), (2, 8, 0))
        );
    }

    #[test]
    fn a_mark_in_the_copy_counts_as_the_take_whatever_the_revision_says() {
        // The decision's revision for A is a read past the copy; the copy has A's take marked.
        let order = OrderId::new();
        let mut a = copied(8, 2, 10);
        let d = event(
            5,
            reserved(order, &[line("A", 2), line("B", 3)]),
            &[("A", 12), ("B", 30)],
            true,
        );
        a.record.taking.insert(
            order,
            Mark {
                quantity: 2,
                event: d.recorded.envelope.id,
                at: 0,
            },
        );
        let mut stock = BTreeMap::from([(sku("A"), a), (sku("B"), copied(1, 0, 20))]);
        square(order, &[d], &[], &mut stock);
        assert_eq!(
            (numbers(&stock, "A"), numbers(&stock, "B")),
            ((10, 0, 0), (1, 0, 0))
        );
    }

    #[test]
    fn a_reservation_stored_before_the_backup_began_is_never_dropped() {
        let order = OrderId::new();
        let mut stock = BTreeMap::from([(sku("A"), copied(8, 2, 10))]);
        let d = event(5, reserved(order, &[line("A", 2)]), &[("A", 11)], false);
        assert_eq!(square(order, &[d], &[], &mut stock), Squared::default());
        assert_eq!(numbers(&stock, "A"), (8, 2, 0));
    }

    #[test]
    fn a_dropped_reservation_takes_its_release_along_and_nets_to_nothing() {
        // A: taken and given back in the copy; B: taken after the copy, no units for it.
        let order = OrderId::new();
        let mut stock =
            BTreeMap::from([(sku("A"), copied(10, 0, 10)), (sku("B"), copied(0, 10, 20))]);
        let lines = [line("A", 2), line("B", 3)];
        let d = event(5, reserved(order, &lines), &[("A", 8), ("B", 21)], true);
        let r = event(9, released(order, &lines), &[("A", 9), ("B", 22)], true);
        let squared = square(order, &[d, r], &[], &mut stock);
        assert_eq!(squared.drop, vec![5, 9]);
        assert_eq!(
            (numbers(&stock, "A"), numbers(&stock, "B")),
            ((10, 0, 0), (0, 10, 0))
        );
    }

    #[test]
    fn a_reservation_the_copy_holds_on_some_skus_only_is_carried_forward_where_the_units_are() {
        // Taken from A (in the copy, settled), then from B after B was copied.
        let order = OrderId::new();
        let mut stock =
            BTreeMap::from([(sku("A"), copied(8, 2, 10)), (sku("B"), copied(10, 0, 20))]);
        let d = event(
            5,
            reserved(order, &[line("A", 2), line("B", 3)]),
            &[("A", 9), ("B", 21)],
            true,
        );
        assert_eq!(square(order, &[d], &[], &mut stock), Squared::default());
        assert_eq!(
            (numbers(&stock, "A"), numbers(&stock, "B")),
            ((8, 2, 0), (7, 3, 0))
        );
    }

    #[test]
    fn a_reservation_carried_forward_carries_its_release_forward_too() {
        let order = OrderId::new();
        let mut stock = BTreeMap::from([(sku("A"), copied(10, 0, 10))]);
        let lines = [line("A", 2)];
        let d = event(5, reserved(order, &lines), &[("A", 11)], true);
        let r = event(9, released(order, &lines), &[("A", 12)], true);
        assert_eq!(square(order, &[d, r], &[], &mut stock), Squared::default());
        assert_eq!(numbers(&stock, "A"), (10, 0, 0));
    }

    #[test]
    fn a_dropped_reservation_whose_give_back_the_copy_marks_is_not_given_back_twice() {
        // A: taken and given back (marked) in the copy, its release not stored yet; B: taken
        // after the copy, and no units for it there.
        let order = OrderId::new();
        let lines = [line("A", 2), line("B", 3)];
        let d = event(5, reserved(order, &lines), &[("A", 8), ("B", 21)], true);
        let mut a = copied(10, 0, 10);
        a.record.returning.insert(
            order,
            Mark {
                quantity: 2,
                event: Uuid::now_v7(),
                at: 0,
            },
        );
        let mut stock = BTreeMap::from([(sku("A"), a), (sku("B"), copied(0, 10, 20))]);
        assert_eq!(square(order, &[d], &[], &mut stock).drop, vec![5]);
        assert_eq!(
            (numbers(&stock, "A"), numbers(&stock, "B")),
            ((10, 0, 0), (0, 10, 0))
        );
    }

    #[test]
    fn takes_marked_for_an_order_with_no_decision_are_undone() {
        let order = OrderId::new();
        let mut a = copied(8, 2, 10);
        a.record.taking.insert(
            order,
            Mark {
                quantity: 2,
                event: Uuid::now_v7(),
                at: 0,
            },
        );
        let mut stock = BTreeMap::from([(sku("A"), a), (sku("B"), copied(10, 0, 20))]);
        assert_eq!(square(order, &[], &[], &mut stock), Squared::default());
        assert_eq!(
            (numbers(&stock, "A"), numbers(&stock, "B")),
            ((10, 0, 0), (10, 0, 0))
        );
    }

    #[test]
    fn a_release_the_copy_holds_in_part_is_kept_and_given_back_on_the_rest() {
        let order = OrderId::new();
        let mut stock =
            BTreeMap::from([(sku("A"), copied(10, 0, 10)), (sku("B"), copied(7, 3, 20))]);
        let lines = [line("A", 2), line("B", 3)];
        let d = event(2, reserved(order, &lines), &[("A", 3), ("B", 4)], false);
        let r = event(9, released(order, &lines), &[("A", 9), ("B", 21)], true);
        assert_eq!(square(order, &[d, r], &[], &mut stock), Squared::default());
        assert_eq!(
            (numbers(&stock, "A"), numbers(&stock, "B")),
            ((10, 0, 0), (10, 0, 0))
        );
    }

    #[test]
    fn give_backs_marked_without_a_release_are_completed_under_the_same_mark() {
        let order = OrderId::new();
        let lines = [line("A", 2), line("B", 3)];
        let d = event(2, reserved(order, &lines), &[("A", 3), ("B", 4)], false);
        let mark = Mark {
            quantity: 2,
            event: Uuid::now_v7(),
            at: 0,
        };
        let mut a = copied(10, 0, 10);
        a.record.returning.insert(order, mark);
        let mut stock = BTreeMap::from([(sku("A"), a), (sku("B"), copied(7, 3, 20))]);
        square(order, &[d], &[], &mut stock);
        assert_eq!(
            (numbers(&stock, "A"), numbers(&stock, "B")),
            ((10, 0, 1), (10, 0, 1))
        );
        let b = stock[&sku("B")].record.returning[&order];
        assert_eq!((b.event, b.quantity), (mark.event, 3));
    }

    #[test]
    fn a_rejection_is_always_kept() {
        let order = OrderId::new();
        let mut stock = BTreeMap::from([(sku("A"), copied(1, 0, 10))]);
        let rejected = Event::InventoryRejected(
            InventoryRejected::builder()
                .order_id(order)
                .shortfall(Vec::new())
                .build(),
        );
        let d = event(5, rejected, &[("A", 40)], true);
        assert_eq!(square(order, &[d], &[], &mut stock), Squared::default());
        assert_eq!(numbers(&stock, "A"), (1, 0, 0));
    }
}
