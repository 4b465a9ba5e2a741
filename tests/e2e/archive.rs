//! Orders outlive the hot window: once their events have left NATS they are read, listed,
//! replayed and cancelled from the PostgreSQL archive, exactly as while they were hot.

use serde_json::Value;
use testkit::{PATIENCE, TestApp};

/// The shortest hot window the services accept with these consumer settings: a message must
/// stay through 3 deliveries of 1 s (ack window and handler timeout alike) plus the delays
/// between them, and the dedupe window.
const HOT_WINDOW: &str = "15s";

async fn app_with_a_short_hot_window() -> TestApp {
    TestApp::builder()
        .env("HOT_WINDOW", HOT_WINDOW)
        .env("CONSUMER_ACK_WAIT_MS", "1000")
        .env("CONSUMER_HANDLER_TIMEOUT_MS", "1000")
        .env("CONSUMER_MAX_DELIVER", "3")
        .spawn()
        .await
}

/// Waits until the event streams and the idempotency claims hold nothing any more (what the
/// hot window does to events; a claim lives no longer than the window).
async fn hot_window_passes(app: &TestApp) {
    let client = async_nats::connect(app.nats.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let emptied = async {
        for stream in ["ORDERS", "INVENTORY", "NOTIFICATIONS", "KV_idempotency"] {
            loop {
                let mut handle = jetstream.get_stream(stream).await.unwrap();
                if handle.info().await.unwrap().state.messages == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
    };
    tokio::time::timeout(PATIENCE, emptied)
        .await
        .expect("the hot window should empty the event streams");
}

#[tokio::test]
async fn an_order_reads_and_lists_the_same_after_its_events_left_the_hot_log() {
    let app = app_with_a_short_hot_window().await;
    app.set_stock("MUG", 10).await;
    let first = app.place_order("alma", &[("MUG", 2)]).await;
    let second = app.place_order("alma", &[("MUG", 1)]).await;
    app.wait_for_status(&first, "confirmed").await;
    let hot = app.wait_for_notifications(&first, 1).await;
    app.wait_for_status(&second, "confirmed").await;

    hot_window_passes(&app).await;

    assert_eq!(app.order(&first).await, hot);
    assert_eq!(hot["notifications"][0]["kind"], "order_confirmed");
    assert_eq!(hot["notifications"][0]["outcome"], "sent");
    let page = app
        .get_json(&format!("{}/v1/orders?customer_id=alma", app.order_url()))
        .await;
    let ids: Vec<&str> = page["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "{page}");
}

#[tokio::test]
async fn a_confirmed_order_cancelled_after_the_hot_window_gives_its_stock_back_once() {
    let app = app_with_a_short_hot_window().await;
    app.set_stock("LAMP", 5).await;
    let order = app.place_order("bert", &[("LAMP", 3)]).await;
    app.wait_for_status(&order, "confirmed").await;
    assert_eq!(app.stock("LAMP").await, (2, 3, 0));

    hot_window_passes(&app).await;
    let cancelled = app.cancel(&order).await;
    assert_eq!(cancelled.status(), 202);
    let again = app.cancel(&order).await;

    assert_eq!(again.status(), 409, "a second cancellation is refused");
    let view = app.wait_for_status(&order, "cancelled").await;
    assert_eq!(view["history"].as_array().unwrap().len(), 3, "{view}");
    testkit::eventually("the reservation is given back", || async {
        app.stock("LAMP").await == (5, 0, 0)
    })
    .await;
    // The confirmation's notification from the archive, the cancellation's from the hot log.
    let told = app.wait_for_notifications(&order, 2).await;
    let kinds: Vec<&str> = told["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["order_confirmed", "order_cancelled"], "{told}");
}

#[tokio::test]
async fn a_key_reused_for_another_order_after_its_claim_expired_is_still_refused() {
    let app = app_with_a_short_hot_window().await;
    app.set_stock("CUP", 10).await;
    let first = app
        .post_with_key("dora-1", &testkit::order_body("dora", &[("CUP", 1)]))
        .await;
    let order = testkit::accepted_order_id(first).await;
    app.wait_for_status(&order, "confirmed").await;

    hot_window_passes(&app).await;
    let other = app
        .post_with_key("dora-1", &testkit::order_body("dora", &[("CUP", 2)]))
        .await;

    assert_eq!(other.status(), 422);
    let problem: Value = other.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains(&order),
        "{problem}"
    );
    // The refused request left no claim behind: the key still answers its own order, and
    // refuses the other request again.
    let own = app
        .post_with_key("dora-1", &testkit::order_body("dora", &[("CUP", 1)]))
        .await;
    assert_eq!(own.status(), 202);
    assert_eq!(testkit::accepted_order_id(own).await, order);
    let again = app
        .post_with_key("dora-1", &testkit::order_body("dora", &[("CUP", 2)]))
        .await;
    assert_eq!(again.status(), 422);
}

#[tokio::test]
async fn a_retried_create_after_the_hot_window_answers_the_order_it_made_and_makes_no_other() {
    let app = app_with_a_short_hot_window().await;
    app.set_stock("PEN", 10).await;
    let body = testkit::order_body("cleo", &[("PEN", 4)]);
    let first: Value = app
        .post_with_key("cleo-1", &body)
        .await
        .json()
        .await
        .unwrap();
    let order = first["order_id"].as_str().unwrap().to_owned();
    app.wait_for_status(&order, "confirmed").await;

    hot_window_passes(&app).await;
    let replay = app.post_with_key("cleo-1", &body).await;

    assert_eq!(replay.status(), 202);
    assert_eq!(replay.headers()["Idempotent-Replayed"], "true");
    let replayed: Value = replay.json().await.unwrap();
    assert_eq!(replayed["order_id"], order.as_str());
    assert_eq!(replayed["status"], "confirmed");
    // The claim now points at it again: the next retry finds it in NATS.
    let again: Value = app
        .post_with_key("cleo-1", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["order_id"], order.as_str());
    // Nothing was created again: no new event, no second reservation.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(app.stock("PEN").await, (6, 4, 0));
}

#[tokio::test]
async fn while_the_archive_is_away_orders_flow_readiness_says_so_and_archived_orders_answer_503() {
    let mut app = app_with_a_short_hot_window().await;
    app.set_stock("MUG", 10).await;
    let archived = app.place_order("alma", &[("MUG", 1)]).await;
    app.wait_for_status(&archived, "confirmed").await;
    hot_window_passes(&app).await;
    let readiness = format!("{}/readyz", app.order_url());

    app.postgres.as_mut().expect("an archive").kill();
    let placed = app.place_order("alma", &[("MUG", 1)]).await;
    app.wait_for_status(&placed, "confirmed").await;

    testkit::eventually("readiness to name the archive", || async {
        app.get_json(&readiness).await["status"] == "degraded"
    })
    .await;
    let response = testkit::http_client()
        .get(format!("{}/v1/orders/{archived}", app.order_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));

    app.postgres.as_mut().expect("an archive").start_again();
    testkit::eventually("readiness to be whole again", || async {
        app.get_json(&readiness).await["status"] == "ready"
    })
    .await;
    hot_window_passes(&app).await;
    assert_eq!(app.order(&placed).await["status"], "confirmed");
}

#[tokio::test]
async fn a_dead_letter_of_the_archive_is_folded_back_into_it_and_reaches_no_other_consumer() {
    let app = TestApp::spawn().await;
    app.set_stock("VASE", 5).await;
    let order = app.place_order("cleo", &[("VASE", 1)]).await;
    app.wait_for_status(&order, "confirmed").await;
    let owner = sqlx::PgPool::connect(&app.postgres.as_ref().expect("an archive").url())
        .await
        .unwrap();
    let row = "SELECT status, snapshot::text FROM orders WHERE order_id = $1::uuid";
    let archived: (String, String) = testkit::eventually_some("the order archived", || async {
        let row: Option<(String, String)> = sqlx::query_as(row)
            .bind(&order)
            .fetch_optional(&owner)
            .await
            .unwrap();
        row.filter(|(status, _)| status == "confirmed")
    })
    .await;
    // Someone broke the row: the cancellation cannot be folded into it, and is dead-lettered.
    sqlx::query("UPDATE orders SET snapshot = '{\"not\": \"an order\"}' WHERE order_id = $1::uuid")
        .bind(&order)
        .execute(&owner)
        .await
        .unwrap();
    assert_eq!(app.cancel(&order).await.status(), 202);
    let letters_url = format!("{}/admin/dead-letters", app.order_url());
    // The cancellation and the notification about it both find the broken row.
    let letters = testkit::eventually_some("both dead-lettered", || async {
        let page = app.admin_get_json(&letters_url).await;
        let letters = page["dead_letters"].as_array()?.clone();
        (letters.len() == 2).then_some(letters)
    })
    .await;
    let mut consumers: Vec<&str> = letters
        .iter()
        .map(|l| l["consumer"].as_str().unwrap())
        .collect();
    consumers.sort_unstable();
    assert_eq!(consumers, ["order-archive", "order-archive-notifications"]);
    let published_before = (
        stored(&app, "ORDERS").await,
        stored(&app, "NOTIFICATIONS").await,
    );

    // The row is repaired (from a backup, say); the letters are redriven.
    sqlx::query("UPDATE orders SET snapshot = $2::jsonb WHERE order_id = $1::uuid")
        .bind(&order)
        .bind(&archived.1)
        .execute(&owner)
        .await
        .unwrap();
    let redriven: serde_json::Value = app
        .as_admin(testkit::http_client().post(format!("{letters_url}/redrive?max=10")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(redriven["redriven"], 2, "{redriven}");

    let (status, snapshot): (String, String) = sqlx::query_as(row)
        .bind(&order)
        .fetch_one(&owner)
        .await
        .unwrap();
    assert_eq!(status, "cancelled", "folded into the archive");
    let snapshot: serde_json::Value = serde_json::from_str(&snapshot).unwrap();
    assert_eq!(snapshot["notifications"].as_array().unwrap().len(), 2);
    assert_eq!(
        (
            stored(&app, "ORDERS").await,
            stored(&app, "NOTIFICATIONS").await
        ),
        published_before,
        "not published again: inventory and notification never see them twice"
    );
    let page = app.admin_get_json(&letters_url).await;
    assert_eq!(
        page["dead_letters"],
        serde_json::json!([]),
        "the letters are gone"
    );
}

#[tokio::test]
async fn a_letter_that_only_claims_to_come_from_the_archive_is_neither_folded_nor_published() {
    // Inventory and notification may publish dead letters under their own consumers' subjects,
    // and write any `Dlq-*` header there: such a letter naming the archive's consumer must not
    // reach the archive (or the bus) through order-service's redrive.
    let app = TestApp::spawn().await;
    app.set_stock("BOWL", 5).await;
    let order = app.place_order("dora", &[("BOWL", 1)]).await;
    app.wait_for_status(&order, "confirmed").await;
    let before = app.wait_for_notifications(&order, 1).await;
    let forged = events::Envelope::new(
        "/forged",
        events::Event::OrderCancelled(
            events::OrderCancelled::builder()
                .order_id(events::OrderId(order.parse().unwrap()))
                .customer_id(events::CustomerId::new("dora").unwrap())
                .reason(events::CancelReason::CustomerRequested)
                .reserved(Vec::new())
                .build(),
        ),
    );
    let forged_subject = format!("orders.0.dora.{order}.cancelled");
    let headers =
        testkit::sample::dead_letter_headers(&forged_subject, "ORDERS", 1, "order-archive");
    let client = async_nats::connect(app.nats.url()).await.unwrap();
    let sequence = testkit::sample::publish_dead_letter(
        &async_nats::jetstream::new(client),
        format!("dlq.inventory.{forged_subject}"),
        headers,
        forged.to_json().unwrap(),
    )
    .await;
    let orders_before = stored(&app, "ORDERS").await;

    let url = format!("{}/admin/dead-letters/{sequence}/redrive", app.order_url());
    let refused = app
        .as_admin(testkit::http_client().post(url))
        .send()
        .await
        .unwrap();

    assert_eq!(refused.status(), 422);
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("not-redrivable"),
        "{problem}"
    );
    assert_eq!(
        stored(&app, "ORDERS").await,
        orders_before,
        "nothing published"
    );
    assert_eq!(stored(&app, "DLQ").await, 1, "kept for inspection");
    assert_eq!(app.order(&order).await, before, "the order is as it was");
}

/// How many messages `stream` holds.
async fn stored(app: &TestApp, stream: &str) -> u64 {
    let client = async_nats::connect(app.nats.url()).await.unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(stream)
        .await
        .unwrap();
    stream.info().await.unwrap().state.messages
}

/// How many of `ids` the archive holds as `status`, read as its owner.
async fn archived_as(owner: &sqlx::PgPool, ids: &[String], status: &str) -> usize {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.parse().unwrap()).collect();
    let (count,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM orders WHERE order_id = ANY($1) AND status = $2")
            .bind(&ids)
            .bind(status)
            .fetch_one(owner)
            .await
            .unwrap();
    usize::try_from(count).unwrap()
}

/// What a full disk does to the projection's writes (PostgreSQL refuses them): the saga goes
/// on, the projection stops and retries — spending no event — and catches up once writes are
/// taken again. Refused by privileges here, as a test can refuse them.
#[tokio::test]
async fn a_refused_archive_write_stops_the_projection_and_loses_nothing() {
    let app = TestApp::builder()
        .env("CONSUMER_ACK_WAIT_MS", "1000")
        .env("CONSUMER_HANDLER_TIMEOUT_MS", "1000")
        .spawn()
        .await;
    let owner = sqlx::PgPool::connect(&app.postgres.as_ref().expect("an archive").url())
        .await
        .unwrap();
    let refuse = "REVOKE INSERT, UPDATE ON orders FROM orderflow_projection";
    sqlx::query(refuse).execute(&owner).await.unwrap();

    app.set_stock("MUG", 10).await;
    let mut placed = Vec::new();
    for _ in 0..5 {
        let id = app.place_order("alma", &[("MUG", 1)]).await;
        app.wait_for_status(&id, "confirmed").await;
        placed.push(id);
    }
    // Several ack windows: the projection has retried, and archived nothing.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(archived_as(&owner, &placed, "confirmed").await, 0);
    assert_eq!(stored(&app, "DLQ").await, 0, "an event was dead-lettered");

    let take = "GRANT INSERT, UPDATE ON orders TO orderflow_projection";
    sqlx::query(take).execute(&owner).await.unwrap();
    // Each refused delivery was put back with a growing delay: the catch-up comes at the
    // latest one longest nak delay after writes are taken again.
    let longest_retry = bus::ConsumerSpec::new("ORDERS", "order-archive", &[]).max_nak_delay;
    testkit::eventually_after(longest_retry, "the projection to catch up", || async {
        archived_as(&owner, &placed, "confirmed").await == placed.len()
    })
    .await;
    assert_eq!(stored(&app, "DLQ").await, 0, "an event was dead-lettered");
}
