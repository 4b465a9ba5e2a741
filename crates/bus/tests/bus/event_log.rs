//! The event store against a real server: an aggregate's history read back in one round trip,
//! and conditional appends — create-only, and "only if the history did not move".

use bus::{Append, Appended, DECISION_ROUNDS, MsgId, Precondition, Round, retry_on_conflict};
use events::{
    CancelReason, Currency, CustomerId, Domain, Envelope, Event, OrderCancelled, OrderConfirmed,
    OrderId, Partitions,
};

use crate::support::{Harness, connect, key_of, order_created};

fn confirmed(created: &Envelope) -> Envelope {
    let Event::OrderCreated(order) = &created.event else {
        unreachable!("a created event")
    };
    Envelope::new(
        "/orderflow/test",
        Event::OrderConfirmed(
            OrderConfirmed::builder()
                .order_id(order.order_id)
                .customer_id(order.customer_id.clone())
                .total_cents(order.total_cents)
                .currency(Currency::new("EUR").unwrap())
                .build(),
        ),
    )
    .caused_by(created)
}

fn cancelled(created: &Envelope) -> Envelope {
    let Event::OrderCreated(order) = &created.event else {
        unreachable!("a created event")
    };
    Envelope::new(
        "/orderflow/test",
        Event::OrderCancelled(
            OrderCancelled::builder()
                .order_id(order.order_id)
                .customer_id(order.customer_id.clone())
                .reason(CancelReason::CustomerRequested)
                .reserved(Vec::new())
                .build(),
        ),
    )
    .caused_by(created)
}

/// Appends `envelope` to its order's history if nothing was appended after `after` (0: if
/// nothing was).
async fn append(h: &Harness, envelope: &Envelope, after: u64) -> Appended {
    let key = key_of(envelope);
    h.bus
        .events()
        .append(Append::new(
            Precondition::unchanged_since(after),
            &key.history(Domain::Orders, Partitions::ONE),
            key.subject(&envelope.event),
            envelope,
            MsgId::new(envelope.kind(), envelope.id),
        ))
        .await
        .unwrap()
}

fn stored(appended: Appended) -> u64 {
    match appended {
        Appended::Stored(sequence) => sequence,
        Appended::Conflict(events) => panic!("refused; history is {events:?}"),
    }
}

#[tokio::test]
async fn a_history_is_read_back_in_the_order_it_was_appended() {
    let h = Harness::start().await;
    let created = order_created(OrderId::new());
    let first = stored(append(&h, &created, 0).await);
    let confirmed = confirmed(&created);
    let second = stored(append(&h, &confirmed, first).await);

    let key = key_of(&created);
    let history = h
        .bus
        .events()
        .read(&key.history(Domain::Orders, Partitions::ONE))
        .await
        .unwrap();
    let read: Vec<_> = history
        .iter()
        .map(|e| (e.sequence, e.envelope.id))
        .collect();
    assert_eq!(read, [(first, created.id), (second, confirmed.id)]);
    assert_eq!(history[1].subject, key.subject(&confirmed.event));
}

#[tokio::test]
async fn an_aggregate_with_no_events_reads_as_empty() {
    let h = Harness::start().await;
    let key = key_of(&order_created(OrderId::new()));
    let history = h
        .bus
        .events()
        .read(&key.history(Domain::Orders, Partitions::ONE))
        .await
        .unwrap();
    assert!(history.is_empty());
}

#[tokio::test]
async fn a_second_create_only_append_is_refused_with_the_history() {
    let h = Harness::start().await;
    let order_id = OrderId::new();
    let created = order_created(order_id);
    stored(append(&h, &created, 0).await);
    let again = order_created(order_id);
    match append(&h, &again, 0).await {
        Appended::Conflict(history) => {
            assert_eq!(history.len(), 1);
            assert_eq!(history[0].envelope.id, created.id);
        }
        Appended::Stored(_) => panic!("a second create-only append was stored"),
    }
}

#[tokio::test]
async fn of_two_transitions_decided_on_the_same_history_only_one_is_stored() {
    let h = Harness::start().await;
    let created = order_created(OrderId::new());
    let last = stored(append(&h, &created, 0).await);
    let (confirm, cancel) = (confirmed(&created), cancelled(&created));
    let (a, b) = tokio::join!(append(&h, &confirm, last), append(&h, &cancel, last));
    let winners = [&a, &b]
        .iter()
        .filter(|o| matches!(o, Appended::Stored(_)))
        .count();
    assert_eq!(winners, 1, "{a:?} / {b:?}");
}

#[tokio::test]
async fn a_writer_that_lost_decides_again_on_the_history_it_got_back() {
    let h = Harness::start().await;
    let created = order_created(OrderId::new());
    let last = stored(append(&h, &created, 0).await);
    // Another writer appends first, on the same history.
    stored(append(&h, &confirmed(&created), last).await);
    let cancel = cancelled(&created);
    let (h, cancel) = (&h, &cancel);
    let stored_at = retry_on_conflict(
        last,
        || "contended",
        |after| async move {
            Ok(match append(h, cancel, after).await {
                Appended::Stored(sequence) => Round::Done(sequence),
                Appended::Conflict(history) => Round::Again(history.last().unwrap().sequence),
            })
        },
    )
    .await
    .unwrap();
    let key = key_of(&created);
    let history = h
        .bus
        .events()
        .read(&key.history(Domain::Orders, Partitions::ONE))
        .await
        .unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[2].sequence, stored_at);
    assert_eq!(history[2].envelope.id, cancel.id);
}

#[tokio::test]
async fn a_writer_that_keeps_losing_gives_up_after_the_round_limit() {
    let mut rounds = 0;
    let outcome: Result<(), &str> = retry_on_conflict(
        0_u64,
        || "contended",
        |state| {
            rounds += 1;
            async move { Ok(Round::Again(state)) }
        },
    )
    .await;
    assert_eq!(outcome, Err("contended"));
    assert_eq!(rounds, DECISION_ROUNDS);
}

#[tokio::test]
async fn repeating_an_append_that_was_stored_reports_it_stored_not_moved() {
    let h = Harness::start().await;
    let created = order_created(OrderId::new());
    let last = stored(append(&h, &created, 0).await);
    let confirm = confirmed(&created);
    let sequence = stored(append(&h, &confirm, last).await);
    // As after a lost PubAck: the same append with the same precondition.
    assert_eq!(append(&h, &confirm, last).await, Appended::Stored(sequence));
}

#[tokio::test]
async fn another_customers_order_is_outside_the_history() {
    let h = Harness::start().await;
    let order_id = OrderId::new();
    let created = order_created(order_id);
    stored(append(&h, &created, 0).await);
    let other = events::OrderKey::new(
        Partitions::ONE,
        CustomerId::new("someone-else").unwrap(),
        order_id,
    );
    let other_process = connect(&h.server, bus::BusConfig::new("reader")).await;
    let history = other_process
        .events()
        .read(&other.history(Domain::Orders, Partitions::ONE))
        .await
        .unwrap();
    assert!(history.is_empty());
    let anywhere = events::layout::order_anywhere(Domain::Orders, Partitions::ONE, order_id);
    let found = other_process.events().read(&anywhere).await.unwrap();
    assert_eq!(
        found.len(),
        1,
        "an order is found by id without its customer"
    );
}

#[tokio::test]
async fn a_leader_read_sees_the_same_history_as_a_direct_read() {
    let h = Harness::start().await;
    let created = order_created(OrderId::new());
    let last = stored(append(&h, &created, 0).await);
    stored(append(&h, &cancelled(&created), last).await);
    let history = key_of(&created).history(Domain::Orders, Partitions::ONE);
    let direct = h.bus.events().read(&history).await.unwrap();
    let leader = h
        .bus
        .events()
        .clone()
        .with_leader_reads(true)
        .read(&history)
        .await
        .unwrap();
    assert_eq!(direct.len(), 2);
    assert_eq!(leader, direct);
}
