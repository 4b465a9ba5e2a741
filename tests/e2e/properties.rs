//! Generated bad orders against the real API: whatever is wrong with them, the answer is a 4xx
//! problem document — never a 5xx, never a crash — and nothing reaches the bus.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use testkit::TestApp;

/// One thing that makes an order invalid.
#[derive(Debug, Clone)]
enum Flaw {
    CustomerId(String),
    Sku(String),
    Quantity(Value),
    Price(Value),
    Currency(String),
    NoItems,
    TooManyItems(usize),
    UnknownField(String),
    Missing(&'static str),
    NotAnObject(Value),
    Garbage(Vec<u8>),
}

fn flaw() -> impl Strategy<Value = Flaw> {
    let unsafe_id = "[a-z]{0,5}[ .*>/\\\\ü\\x00-\\x1f]{1,3}[a-z]{0,5}";
    prop_oneof![
        unsafe_id.prop_map(Flaw::CustomerId),
        "[a-z]{65,80}".prop_map(Flaw::CustomerId),
        unsafe_id.prop_map(Flaw::Sku),
        prop_oneof![
            Just(json!(0)),
            (1001u64..u64::MAX).prop_map(|n| json!(n)),
            (i64::MIN..0).prop_map(|n| json!(n)),
            "[a-z]{1,8}".prop_map(|s| json!(s)),
            Just(json!(1.5)),
            Just(Value::Null),
        ]
        .prop_map(Flaw::Quantity),
        prop_oneof![
            Just(json!(0)),
            (100_000_001u64..u64::MAX).prop_map(|n| json!(n)),
            Just(json!("ten"))
        ]
        .prop_map(Flaw::Price),
        "[A-Za-z]{0,6}"
            .prop_filter("not a supported currency", |c| !orderflow_currency(c))
            .prop_map(Flaw::Currency),
        Just(Flaw::NoItems),
        (101usize..140).prop_map(Flaw::TooManyItems),
        "[a-z_]{1,12}"
            .prop_filter("not a known field", |f| ![
                "customer_id",
                "items",
                "currency"
            ]
            .contains(&f.as_str()))
            .prop_map(Flaw::UnknownField),
        prop_oneof![Just("customer_id"), Just("items"), Just("currency")].prop_map(Flaw::Missing),
        prop_oneof![
            Just(json!([])),
            Just(json!(42)),
            Just(json!("order")),
            Just(Value::Null)
        ]
        .prop_map(Flaw::NotAnObject),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Flaw::Garbage),
    ]
}

fn orderflow_currency(code: &str) -> bool {
    [
        "EUR", "USD", "GBP", "CHF", "JPY", "SEK", "NOK", "DKK", "PLN", "CZK", "CAD", "AUD",
    ]
    .contains(&code)
}

fn body(flaw: &Flaw) -> Vec<u8> {
    let mut order = json!({
        "customer_id": "prop",
        "items": [{ "sku": "PROP-1", "quantity": 1, "unit_price_cents": 100 }],
        "currency": "EUR",
    });
    match flaw.clone() {
        Flaw::CustomerId(id) => order["customer_id"] = json!(id),
        Flaw::Sku(sku) => order["items"][0]["sku"] = json!(sku),
        Flaw::Quantity(q) => order["items"][0]["quantity"] = q,
        Flaw::Price(p) => order["items"][0]["unit_price_cents"] = p,
        Flaw::Currency(c) => order["currency"] = json!(c),
        Flaw::NoItems => order["items"] = json!([]),
        Flaw::TooManyItems(n) => {
            order["items"] = (0..n)
                .map(|i| json!({ "sku": format!("S{i}"), "quantity": 1, "unit_price_cents": 1 }))
                .collect()
        }
        Flaw::UnknownField(field) => order[field] = json!(true),
        Flaw::Missing(field) => {
            order.as_object_mut().unwrap().remove(field);
        }
        Flaw::NotAnObject(value) => order = value,
        Flaw::Garbage(bytes) => return bytes,
    }
    serde_json::to_vec(&order).unwrap()
}

#[test]
fn generated_bad_orders_get_4xx_problems_and_publish_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(
        TestApp::builder()
            .env("HTTP_RATE_LIMIT", "0")
            .env("HTTP_MAX_CONNECTIONS_PER_CLIENT", "0")
            .spawn(),
    );
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&flaw(), |flaw| {
            let (status, problem, content_type) =
                runtime.block_on(app.post_order_raw("application/json", body(&flaw)));
            prop_assert!(
                (400..500).contains(&status),
                "{flaw:?} answered {status}: {problem}"
            );
            prop_assert_eq!(content_type, "application/problem+json");
            prop_assert_eq!(problem["status"].as_u64(), Some(u64::from(status)));
            Ok(())
        })
        .unwrap();

    runtime.block_on(async {
        let health = app
            .http
            .get(format!("{}/healthz", app.order_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            health.status(),
            200,
            "order-service did not survive the bad input"
        );
        let nats = async_nats::connect(app.nats.url()).await.unwrap();
        let mut orders = async_nats::jetstream::new(nats)
            .get_stream("ORDERS")
            .await
            .unwrap();
        assert_eq!(
            orders.info().await.unwrap().state.messages,
            0,
            "a bad order was published"
        );
    });
}
