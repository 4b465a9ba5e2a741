//! Bad input gets a clear 4xx problem and loses nothing — and publishes nothing.

use serde_json::{Value, json};
use testkit::TestApp;

async fn post_json(app: &TestApp, body: Value) -> (u16, Value, String) {
    app.post_order_raw("application/json", serde_json::to_vec(&body).unwrap())
        .await
}

fn valid() -> Value {
    json!({ "customer_id": "c-1", "items": [{ "sku": "S-1", "quantity": 1, "unit_price_cents": 100 }], "currency": "EUR" })
}

#[tokio::test]
async fn bad_orders_get_problem_json_4xx_and_publish_nothing() {
    let app = TestApp::builder().spawn().await;
    let mut cases: Vec<(&str, u16, (u16, Value, String))> = Vec::new();

    cases.push((
        "malformed JSON",
        400,
        app.post_order_raw("application/json", "{\"customer_id\": ")
            .await,
    ));
    cases.push((
        "not JSON at all",
        415,
        app.post_order_raw("text/plain", "hello").await,
    ));
    // Over the 64 KiB limit, yet small enough to sit in loopback socket buffers: the service
    // answers 413 without reading it all, and a larger body races that answer with a broken pipe.
    cases.push((
        "huge body",
        413,
        app.post_order_raw("application/json", vec![b' '; 80 * 1024])
            .await,
    ));
    let mut wrong_type = valid();
    wrong_type["items"][0]["quantity"] = json!("two");
    cases.push(("wrong type", 422, post_json(&app, wrong_type).await));
    let mut negative = valid();
    negative["items"][0]["quantity"] = json!(-1);
    cases.push(("negative quantity", 422, post_json(&app, negative).await));
    let mut missing = valid();
    missing.as_object_mut().unwrap().remove("currency");
    cases.push(("missing field", 422, post_json(&app, missing).await));
    let mut unknown = valid();
    unknown["gift_wrap"] = json!(true);
    cases.push(("unknown field", 422, post_json(&app, unknown).await));
    let mut unsafe_sku = valid();
    unsafe_sku["items"][0]["sku"] = json!("a.*>");
    cases.push(("unsafe sku", 422, post_json(&app, unsafe_sku).await));
    let mut unsafe_customer = valid();
    unsafe_customer["customer_id"] = json!("bob smith");
    cases.push((
        "unsafe customer id",
        422,
        post_json(&app, unsafe_customer).await,
    ));
    let mut no_items = valid();
    no_items["items"] = json!([]);
    cases.push(("no items", 422, post_json(&app, no_items).await));
    let mut currency = valid();
    currency["currency"] = json!("XYZ");
    cases.push(("unknown currency", 422, post_json(&app, currency).await));

    for (case, expected, (status, problem, content_type)) in &cases {
        assert_eq!(status, expected, "{case}: {problem}");
        assert_eq!(content_type, "application/problem+json", "{case}");
        assert_eq!(problem["status"], *expected, "{case}: {problem}");
        assert!(
            problem["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("https://orderflow.dev/problems/")),
            "{case}: {problem}"
        );
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{case}: {problem}"
        );
    }
    let unsafe_sku = &cases.iter().find(|c| c.0 == "unsafe sku").unwrap().2.1;
    assert_eq!(unsafe_sku["errors"][0]["field"], "items[0].sku");

    let bus = bus::Bus::connect(&bus::BusConfig::new("observer").with_url(app.nats.url()))
        .await
        .unwrap();
    let info = bus
        .jetstream()
        .get_stream("ORDERS")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.state.messages, 0, "bad input was published");
}

#[tokio::test]
async fn unknown_routes_and_bad_ids_are_problem_json_too() {
    let app = TestApp::builder().spawn().await;
    for (path, expected) in [
        ("/v1/nothing", 404),
        ("/v1/orders/not-a-uuid", 400),
        ("/v1/orders/0194a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", 404),
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.order_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let response = app
        .http
        .delete(format!("{}/v1/orders", app.order_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
}
