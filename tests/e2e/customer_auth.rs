//! Customers authenticated: with a JWKS configured, the order API needs a bearer JWT from that
//! provider (RS256 or ES256, right issuer and audience, unexpired); the customer is the token's
//! subject; each customer sees and cancels only their own orders, and owns their
//! Idempotency-Keys. The provider is a real JWKS server on loopback (testkit).

use serde_json::{Value, json};
use testkit::{IdentityProvider, Signer, TestApp};

use crate::support::accepted_order_id;

async fn app_trusting(provider: &IdentityProvider) -> TestApp {
    let mut builder = TestApp::builder();
    for (key, value) in provider.service_env() {
        builder = builder.env(key, &value);
    }
    let app = builder.spawn().await;
    app.set_stock("SKU-AUTH", 100).await;
    app
}

/// An order of one SKU-AUTH, naming no customer: the token does.
fn order() -> Value {
    json!({ "items": [{ "sku": "SKU-AUTH", "quantity": 1, "unit_price_cents": 100 }], "currency": "EUR" })
}

async fn place_as(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/orders", app.order_url()))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn get_as(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.http
        .get(format!("{}{path}", app.order_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_customers_token_places_reads_and_lists_their_own_orders() {
    let provider = IdentityProvider::start().await;
    let app = app_trusting(&provider).await;
    let token = provider.token("carol");

    let order_id = accepted_order_id(place_as(&app, &token, &order()).await).await;
    let view: Value = get_as(&app, &token, &format!("/v1/orders/{order_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["customer_id"], "carol");
    let page: Value = get_as(&app, &token, "/v1/orders")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["orders"][0]["order_id"], order_id.as_str());
}

#[tokio::test]
async fn another_customers_orders_do_not_exist_for_you() {
    let provider = IdentityProvider::start().await;
    let app = app_trusting(&provider).await;
    let order_id = accepted_order_id(place_as(&app, &provider.token("dave"), &order()).await).await;
    let eve = provider.token("eve");

    let read = get_as(&app, &eve, &format!("/v1/orders/{order_id}")).await;
    assert_eq!(read.status(), 404);
    let cancel = app
        .http
        .post(format!("{}/v1/orders/{order_id}/cancel", app.order_url()))
        .bearer_auth(&eve)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 404);
    let listed = get_as(&app, &eve, "/v1/orders?customer_id=dave").await;
    assert_eq!(listed.status(), 403, "eve listed dave's orders");
    let own: Value = get_as(&app, &eve, "/v1/orders").await.json().await.unwrap();
    assert_eq!(own["orders"], json!([]));
}

#[tokio::test]
async fn an_order_for_another_customer_id_than_the_tokens_is_refused() {
    let provider = IdentityProvider::start().await;
    let app = app_trusting(&provider).await;
    let mut body = order();
    body["customer_id"] = json!("mallory");
    let response = place_as(&app, &provider.token("frank"), &body).await;
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn idempotency_keys_belong_to_one_customer() {
    let provider = IdentityProvider::start().await;
    let app = app_trusting(&provider).await;
    let mut ids = Vec::new();
    for (customer, quantity) in [("gina", 1), ("hank", 2)] {
        let mut body = order();
        body["items"][0]["quantity"] = json!(quantity);
        let response = app
            .http
            .post(format!("{}/v1/orders", app.order_url()))
            .bearer_auth(provider.token(customer))
            .header("Idempotency-Key", "checkout-1")
            .json(&body)
            .send()
            .await
            .unwrap();
        ids.push(accepted_order_id(response).await);
    }
    assert_ne!(ids[0], ids[1], "one customer's key answered for another");
}

#[tokio::test]
async fn an_rs256_token_is_accepted_too() {
    let provider = IdentityProvider::start().await;
    let app = app_trusting(&provider).await;
    let token = provider.token_with(Signer::Rs256, provider.claims("ivy"));
    assert_eq!(place_as(&app, &token, &order()).await.status(), 202);
}

#[tokio::test]
async fn missing_expired_misaddressed_forged_and_unsigned_tokens_are_refused() {
    let provider = IdentityProvider::start().await;
    let app = app_trusting(&provider).await;
    let claims = provider.claims("judy");
    let altered = |key: &str, value: Value| {
        let mut claims = claims.clone();
        claims[key] = value;
        claims
    };
    let now = claims["iat"].as_u64().unwrap();
    let refused = [
        (
            "expired",
            provider.token_with(Signer::Es256, altered("exp", json!(now - 3600))),
        ),
        (
            "a not-before in an hour",
            provider.token_with(Signer::Es256, altered("nbf", json!(now + 3600))),
        ),
        (
            "wrong audience",
            provider.token_with(Signer::Es256, altered("aud", json!("another-api"))),
        ),
        (
            "wrong issuer",
            provider.token_with(Signer::Es256, altered("iss", json!("https://evil.test/"))),
        ),
        (
            "wrong key",
            provider.token_with(Signer::Forger, claims.clone()),
        ),
        (
            "alg none",
            provider.token_with(Signer::Unsigned, claims.clone()),
        ),
        (
            "not a customer id",
            provider.token_with(Signer::Es256, altered("sub", json!("a.b"))),
        ),
        ("not a JWT", "definitely-not-a-jwt".to_owned()),
    ];
    for (what, token) in refused {
        let response = place_as(&app, &token, &order()).await;
        assert_eq!(
            response.status(),
            401,
            "a token with {what} was not refused"
        );
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{what}"
        );
    }
    let anonymous = app
        .http
        .get(format!("{}/v1/orders?customer_id=judy", app.order_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn the_document_declares_the_customer_scheme_when_it_is_on() {
    let provider = IdentityProvider::start().await;
    let app = app_trusting(&provider).await;
    let openapi = app.order_openapi().await;
    assert_eq!(
        openapi["components"]["securitySchemes"]["customer"]["bearerFormat"],
        "JWT"
    );
    let create = &openapi["paths"]["/v1/orders"]["post"];
    assert_eq!(create["security"][0]["customer"], json!([]));
    assert!(create["responses"]["401"].is_object());
    let required = openapi["components"]["schemas"]["CreateOrder"]["required"].clone();
    assert!(!required.as_array().unwrap().contains(&json!("customer_id")));
}

#[tokio::test]
async fn a_slow_jwks_server_delays_only_the_token_whose_key_is_unknown() {
    let provider = IdentityProvider::start().await;
    let app = app_trusting(&provider).await;
    let known = provider.token("kim");
    let asked = provider.fetches();
    provider.stall();
    // A token under a key rotated in since the last fetch sends the service to the provider
    // (once 10 s have passed since the last fetch: until then it is refused at once), which
    // does not answer...
    let rotated = provider.token_with(Signer::Rotated, provider.claims("lee"));
    let send = || {
        let (http, url) = (app.http.clone(), format!("{}/v1/orders", app.order_url()));
        let token = rotated.clone();
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .json(&order())
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let mut waiting = send();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    while provider.fetches() == asked {
        assert!(
            std::time::Instant::now() < deadline,
            "the service never asked again"
        );
        if waiting.is_finished() {
            assert_eq!(
                waiting.await.unwrap(),
                401,
                "an unknown key before any fetch"
            );
            waiting = send();
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // ...and meanwhile tokens under known keys are verified as ever.
    for _ in 0..3 {
        assert_eq!(get_as(&app, &known, "/v1/orders").await.status(), 200);
    }
    assert!(!waiting.is_finished(), "the fetch was answered already");
    // Once the provider answers with the rotated key, the waiting request goes through.
    provider.rotate();
    provider.release();
    assert_eq!(waiting.await.unwrap(), 202);
}

#[tokio::test]
async fn the_keys_are_fetched_again_on_the_schedule_the_provider_sets() {
    let provider = IdentityProvider::start().await;
    // At most every 10 s, however short the provider asks for.
    provider.cache_for(1);
    let app = app_trusting(&provider).await;
    let asked = provider.fetches();
    crate::support::eventually("a scheduled fetch", || async { provider.fetches() > asked }).await;
    // The rotated key was picked up by the schedule: no token had to ask for it.
    provider.rotate();
    let fetched = provider.fetches();
    crate::support::eventually("another scheduled fetch", || async {
        provider.fetches() > fetched
    })
    .await;
    let token = provider.token_with(Signer::Rotated, provider.claims("max"));
    assert_eq!(place_as(&app, &token, &order()).await.status(), 202);
}

#[tokio::test]
async fn an_authenticated_customer_over_their_rate_gets_429_while_others_go_on() {
    let provider = IdentityProvider::start().await;
    let mut builder = TestApp::builder()
        .service_env(events::ServiceId::Order, "AUTH_CUSTOMER_RATE_LIMIT", "3")
        // One address for every customer here: the per-address limit would mix them.
        .env("HTTP_RATE_LIMIT", "0");
    for (key, value) in provider.service_env() {
        builder = builder.env(key, &value);
    }
    let app = builder.spawn().await;
    let greedy = provider.token("nia");
    let mut limited = None;
    for _ in 0..40 {
        let response = get_as(&app, &greedy, "/v1/orders").await;
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("40 quick requests against 3/s were never limited");
    assert!(response.headers().contains_key("retry-after"));
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("this customer"),
        "{problem}"
    );
    let patient = provider.token("oli");
    assert_eq!(get_as(&app, &patient, "/v1/orders").await.status(), 200);
}
