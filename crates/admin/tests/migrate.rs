//! `orderflow-admin migrate`: one command brings a deployment's stored data up to this build —
//! the archive's schema, then the streams, buckets and consumers — and changes nothing when
//! run again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::Parser as _;
use orderflow_admin::{Cli, Command};
use testkit::{NatsServer, PostgresServer};

fn migrate_args(nats: &NatsServer, postgres: &PostgresServer) -> orderflow_admin::MigrateArgs {
    let (nats, postgres) = (nats.url(), postgres.url());
    let argv = [
        "orderflow-admin",
        "migrate",
        "--nats-url",
        &nats,
        "--archive-url",
        &postgres,
    ];
    let Command::Migrate(args) = Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    args
}

#[tokio::test]
async fn migrate_brings_an_empty_archive_and_nats_to_this_build_and_again_changes_nothing() {
    let (nats, postgres) = (NatsServer::start(), PostgresServer::start());
    let args = migrate_args(&nats, &postgres);
    let first = orderflow_admin::migrate(&args).await.unwrap();
    let newest = archive::MIGRATOR.iter().map(|m| m.version).max().unwrap();
    assert_eq!(first.archive_schema, Some(newest));
    assert_eq!(first.provisioned.layout, events::layout::LAYOUT_VERSION);
    assert!(first.provisioned.streams.contains(&"ORDERS".to_owned()));

    let again = orderflow_admin::migrate(&args).await.unwrap();
    assert_eq!(again.archive_schema, Some(newest));
    assert_eq!(again.provisioned, first.provisioned);
}

/// Makes the deployment on `nats` look like one of layout 2 with one confirmed order, notified
/// on layout 2's subject; the order's id.
async fn layout_2_deployment_with_a_notified_order(nats: &NatsServer) -> events::OrderId {
    use events::{
        Channel, Currency, CustomerId, Envelope, Event, LineItem, NotificationKind,
        NotificationSent, OrderConfirmed, OrderCreated, OrderId,
    };
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let order = OrderId::new();
    let customer = CustomerId::new("ann").unwrap();
    let created = OrderCreated::builder()
        .order_id(order)
        .customer_id(customer.clone())
        .items(vec![LineItem {
            sku: events::Sku::new("MUG").unwrap(),
            quantity: 1,
            unit_price_cents: 500,
        }])
        .currency(Currency::new("EUR").unwrap())
        .build()
        .unwrap();
    let created = Envelope::new("/test", Event::OrderCreated(created));
    let confirmed = Envelope::new(
        "/test",
        Event::OrderConfirmed(
            OrderConfirmed::builder()
                .order_id(order)
                .customer_id(customer)
                .total_cents(500)
                .currency(Currency::new("EUR").unwrap())
                .build(),
        ),
    )
    .caused_by(&created);
    let sent = Envelope::new(
        "/test",
        Event::NotificationSent(
            NotificationSent::builder()
                .notification_id(uuid::Uuid::now_v7())
                .order_id(order)
                .kind(NotificationKind::OrderConfirmed)
                .channel(Channel::Log)
                .attempts(1)
                .build(),
        ),
    )
    .caused_by(&confirmed);
    for (subject, envelope) in [
        (format!("orders.0.ann.{order}.created"), &created),
        (format!("orders.0.ann.{order}.confirmed"), &confirmed),
        (
            format!("notifications.0.ann.{order}.order_confirmed.sent"),
            &sent,
        ),
    ] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", envelope.id.to_string().as_str());
        js.publish_with_headers(subject, headers, envelope.to_json().unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut names = js.stream_names();
    use futures::StreamExt as _;
    while let Some(name) = names.next().await {
        let stream = js.get_stream(name.unwrap()).await.unwrap();
        let mut config = stream.cached_info().config.clone();
        config
            .metadata
            .insert(events::layout::LAYOUT_METADATA.to_owned(), "2".to_owned());
        js.update_stream(&config).await.unwrap();
    }
    order
}

/// Hands every pending message of `durable` on `stream` its ack, as its service would have.
async fn drain(nats: &NatsServer, stream: &str, durable: &str) {
    use futures::StreamExt as _;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let consumer: async_nats::jetstream::consumer::PullConsumer =
        js.get_consumer_from_stream(durable, stream).await.unwrap();
    let mut messages = consumer
        .fetch()
        .max_messages(100)
        .expires(std::time::Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    while let Some(message) = messages.next().await {
        message.unwrap().double_ack().await.unwrap();
    }
}

#[tokio::test]
async fn migrate_upgrades_layout_2_moving_notification_outcomes_to_their_new_subjects() {
    let (nats, postgres) = (NatsServer::start(), PostgresServer::start());
    let args = migrate_args(&nats, &postgres);
    orderflow_admin::migrate(&args).await.unwrap();
    let order = layout_2_deployment_with_a_notified_order(&nats).await;

    // The archive's projection has not handled the outcome: moving it now would lose track.
    let refused = orderflow_admin::migrate(&args)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("order-archive-notifications"), "{refused}");
    drain(&nats, "NOTIFICATIONS", "order-archive-notifications").await;

    let migrated = orderflow_admin::migrate(&args).await.unwrap();
    assert_eq!(migrated.layout.from, Some(2));
    assert_eq!(migrated.layout.moved.get("NOTIFICATIONS"), Some(&1));
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let notifications = js.get_stream("NOTIFICATIONS").await.unwrap();
    assert_eq!(
        notifications
            .cached_info()
            .config
            .metadata
            .get(events::layout::LAYOUT_METADATA),
        Some(&"3".to_owned())
    );
    assert!(
        notifications
            .get_last_raw_message_by_subject(&format!("notifications.0.ann.{order}.confirmed.sent"))
            .await
            .is_ok()
    );
    assert!(
        notifications
            .get_last_raw_message_by_subject(&format!(
                "notifications.0.ann.{order}.order_confirmed.sent"
            ))
            .await
            .is_err()
    );
    // The consumer that handled it starts after it: nothing to handle again.
    let stream = js.get_stream("NOTIFICATIONS").await.unwrap();
    let consumer = stream
        .consumer_info("order-archive-notifications")
        .await
        .unwrap();
    assert_eq!(consumer.num_pending, 0);

    // This build reads the order, and what its customer was told, from the moved events.
    let url = nats.url();
    let argv = [
        "orderflow-admin",
        "order",
        "--nats-url",
        &url,
        "--archive-url",
        "none",
    ];
    let Command::Order(lookup) =
        Cli::try_parse_from(argv.iter().copied().chain([order.to_string().as_str()]))
            .unwrap()
            .command
    else {
        unreachable!()
    };
    let view = serde_json::to_value(orderflow_admin::order(&lookup).await.unwrap()).unwrap();
    assert_eq!(view["status"], "confirmed");
    assert_eq!(
        view["notifications"][0]["kind"], "order_confirmed",
        "{view}"
    );
    assert_eq!(
        orderflow_admin::migrate(&args).await.unwrap().layout.from,
        None
    );
}
