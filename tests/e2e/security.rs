//! The HTTP edge defends itself: a per-client rate limit (429 + Retry-After; kept per client
//! behind a trusted proxy; probes exempt), a request timeout (503, never a hang), and no
//! internal error text in any answer.

use serde_json::Value;
use testkit::TestApp;

use crate::support::order_body;

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after() {
    let app = TestApp::builder().env("HTTP_RATE_LIMIT", "5").spawn().await;
    let url = format!("{}/v1/orders?customer_id=greedy", app.order_url());
    let mut limited = None;
    for _ in 0..40 {
        let response = app.http.get(&url).send().await.unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("40 quick requests against a limit of 5/s were never limited");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "https://orderflow.dev/problems/rate-limited"
    );
}

#[tokio::test]
async fn a_request_that_cannot_finish_in_time_is_answered_503_without_internals() {
    let mut app = TestApp::builder()
        .env("HTTP_REQUEST_TIMEOUT_MS", "300")
        .spawn()
        .await;
    // With NATS gone the publish retries for seconds; the request timeout answers first.
    app.nats.kill();
    let response = app
        .http
        .post(format!("{}/v1/orders", app.order_url()))
        .json(&order_body("patient", &[("ANY", 1)]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body = response.text().await.unwrap();
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert!(
        [
            "https://orderflow.dev/problems/timeout",
            "https://orderflow.dev/problems/unavailable"
        ]
        .contains(&problem["type"].as_str().unwrap())
    );
    for internal in [
        "nats",
        "NATS:",
        "broken pipe",
        "127.0.0.1",
        "panicked",
        "src/",
    ] {
        assert!(
            !body.contains(internal),
            "internal detail {internal:?} leaked: {body}"
        );
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget_and_probes_none() {
    let app = TestApp::builder()
        .env("HTTP_RATE_LIMIT", "5")
        .env("HTTP_TRUSTED_PROXIES", "127.0.0.1/32")
        .spawn()
        .await;
    let orders = format!("{}/v1/orders?customer_id=greedy", app.order_url());
    let health = format!("{}/healthz", app.order_url());
    let from = |url: &str, client: &str| app.http.get(url).header("x-forwarded-for", client).send();
    let mut limited = false;
    for _ in 0..40 {
        if from(&orders, "198.51.100.1").await.unwrap().status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(
        limited,
        "the greedy client behind the proxy was never limited"
    );
    assert_ne!(
        from(&orders, "198.51.100.2").await.unwrap().status(),
        429,
        "another client behind the same proxy paid for the greedy one"
    );
    for _ in 0..40 {
        assert_eq!(
            from(&health, "198.51.100.1").await.unwrap().status(),
            200,
            "a probe was rate limited"
        );
    }
}

#[tokio::test]
async fn every_stream_and_bucket_the_system_creates_is_bounded() {
    let app = TestApp::builder()
        .webhook(
            testkit::WebhookReceiver::start().await.url(),
            &crate::support::webhook_secret(),
        )
        .spawn()
        .await;
    let nats = async_nats::connect(app.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let names: Vec<String> = futures::StreamExt::collect::<Vec<_>>(js.stream_names())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for expected in [
        "ORDERS",
        "DLQ",
        "KV_idempotency",
        "KV_stock",
        "KV_webhook_endpoints",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    for name in &names {
        let config = js
            .get_stream(name)
            .await
            .unwrap()
            .cached_info()
            .config
            .clone();
        assert!(
            !config.max_age.is_zero() || config.max_bytes > 0,
            "{name} keeps everything forever: {config:?}"
        );
    }
}
