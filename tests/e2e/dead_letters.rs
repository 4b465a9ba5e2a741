//! Dead letters as a feature: list and inspect them, and redrive one once its cause is fixed —
//! idempotently (a second redrive finds nothing) and at a bounded rate in bulk.

use serde_json::Value;
use testkit::TestApp;

use crate::support::eventually;
use bus::{Bus, BusConfig, MsgId};
use events::{
    Currency, CustomerId, Envelope, Event, EventKind, InventoryReserved, LineItem, OrderCreated,
    OrderId, ReservedLine, Sku,
};

#[tokio::test]
async fn a_dead_letter_is_listed_inspected_and_redriven_once_its_cause_is_fixed() {
    let app = TestApp::builder()
        .env("CONSUMER_ACK_WAIT_MS", "1000")
        .env("CONSUMER_MAX_DELIVER", "2")
        .spawn()
        .await;
    let bus = Bus::connect(&BusConfig::new("test").with_url(app.nats.url()))
        .await
        .unwrap();
    let order_id = OrderId::new();

    // A reservation for an order the order service has never recorded: retried, then dead-lettered.
    let reserved = Event::InventoryReserved(
        InventoryReserved::builder()
            .order_id(order_id)
            .lines(vec![ReservedLine {
                sku: Sku::new("DLQ-SKU").unwrap(),
                quantity: 1,
            }])
            .build(),
    );
    let envelope = Envelope::new("/test", reserved);
    bus.publisher()
        .publish(
            &crate::support::subject_of(&envelope, "restored"),
            &envelope,
            &MsgId::new(EventKind::InventoryReserved, order_id),
        )
        .await
        .unwrap();

    let admin = |request: reqwest::RequestBuilder| app.as_admin(request);
    let list_url = format!("{}/admin/dead-letters", app.order_url());
    assert_eq!(
        app.http.get(&list_url).send().await.unwrap().status(),
        401,
        "the DLQ is admin-only"
    );
    let letters = testkit::eventually_some("the reservation is dead-lettered", || async {
        let letters: Value = app.admin_get_json(&list_url).await;
        let listed = letters["dead_letters"]
            .as_array()
            .is_some_and(|l| !l.is_empty());
        listed.then_some(letters)
    })
    .await;
    let letter = &letters["dead_letters"][0];
    assert_eq!(
        letter["subject"],
        crate::support::subject_of(&envelope, "restored")
    );
    assert_eq!(letter["consumer"], "order-saga");
    assert_eq!(letter["reason"], "retries_exhausted");
    assert_eq!(letter["deliveries"], 2);
    assert_eq!(letter["payload"]["data"]["order_id"], order_id.to_string());
    let sequence = letter["dlq_sequence"].as_u64().unwrap();
    let inspected: Value = app.admin_get_json(&format!("{list_url}/{sequence}")).await;
    assert_eq!(inspected["error"], letter["error"]);

    // The cause is fixed: an operator restores the missing order's `created` event.
    let created = Envelope::new(
        "/test",
        Event::OrderCreated(
            OrderCreated::builder()
                .order_id(order_id)
                .customer_id(CustomerId::new("restored").unwrap())
                .items(vec![LineItem {
                    sku: Sku::new("DLQ-SKU").unwrap(),
                    quantity: 1,
                    unit_price_cents: 100,
                }])
                .currency(Currency::new("EUR").unwrap())
                .build()
                .unwrap(),
        ),
    );
    bus.publisher()
        .publish(
            &crate::support::subject_of(&created, "restored"),
            &created,
            &MsgId::new(EventKind::OrderCreated, order_id),
        )
        .await
        .unwrap();

    let redrive = format!("{list_url}/{sequence}/redrive");
    let response = admin(app.http.post(&redrive)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // The redriven reservation now finds its order, and confirms it.
    app.wait_for_status(&order_id.to_string(), "confirmed")
        .await;
    assert_eq!(
        admin(app.http.post(&redrive))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "redriven twice"
    );
    let after: Value = app.admin_get_json(&list_url).await;
    assert!(
        after["dead_letters"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["dlq_sequence"] != sequence),
        "a redriven letter stayed in the DLQ: {after}"
    );
}

#[tokio::test]
async fn bulk_redrive_takes_the_oldest_letters_and_reports_how_many() {
    let app = TestApp::builder().spawn().await;
    let nats = async_nats::connect(app.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    // Garbage on the subject of new orders: inventory's consumer and the archive's projection
    // each dead-letter it.
    for _ in 0..3 {
        let subject = format!("orders.0.mallory.{}.created", OrderId::new());
        js.publish(subject, "garbage".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let list_url = format!("{}/admin/dead-letters", app.order_url());
    let count = || async {
        app.admin_get_json(&list_url).await["dead_letters"]
            .as_array()
            .map_or(0, Vec::len)
    };
    eventually(
        "six dead letters (inventory's and the archive's)",
        || async { count().await == 6 },
    )
    .await;
    let redriven: Value = app
        .as_admin(
            app.http
                .post(format!("{list_url}/redrive?max=6&per_second=50")),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Inventory's letters are published again; the archive's are taken back by order-service,
    // where garbage cannot be folded: they stay, counted, and do not stop the others.
    assert_eq!(redriven["redriven"], 3, "{redriven}");
    assert_eq!(redriven["not_redrivable"], 3, "{redriven}");
    // Garbage stays garbage: each republished letter is back on its subject, where both
    // consumers dead-letter it again.
    eventually("the redriven poison is dead-lettered again", || async {
        count().await == 3 + 6
    })
    .await;
}
