//! What operators rely on: health, readiness, metrics, OpenAPI, `--help`, a clean exit on
//! SIGTERM (and a clean return from `run` on shutdown), and admin endpoints behind the token.

use std::process::Command;

use serde_json::{Value, json};
use testkit::{System, TestApp, service_binary};

#[tokio::test]
async fn every_service_answers_health_readiness_metrics_and_openapi() {
    let system = System::builder().start().await;
    system.set_stock("OPS", 5).await;
    let order_id = system.place_order("olga", &[("OPS", 1)]).await;
    system.wait_for_status(&order_id, "confirmed").await;

    let services = [
        (&system.order, "/v1/orders"),
        (&system.inventory[0], "/v1/stock/{sku}"),
        (&system.notification, "/v1/notifications"),
    ];
    for (service, path) in services {
        let get = |p: &str| system.http.get(format!("{}{p}", service.url())).send();
        assert_eq!(get("/healthz").await.unwrap().text().await.unwrap(), "ok");
        assert_eq!(get("/readyz").await.unwrap().status(), 200);
        let openapi: Value = get("/openapi.json").await.unwrap().json().await.unwrap();
        assert!(
            openapi["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.")),
            "{openapi}"
        );
        assert!(
            openapi["paths"][path].is_object(),
            "{path} missing from {}",
            openapi["paths"]
        );
        assert_eq!(
            openapi["components"]["securitySchemes"]["bearer"]["scheme"], "bearer",
            "the admin routes' security scheme is not declared"
        );
        let names = [
            "http_server_request_duration_seconds_bucket",
            "orderflow_events_consumed_total",
            "orderflow_handler_duration_seconds_bucket",
            "orderflow_consumer_pending",
            "orderflow_nats_connected",
            "orderflow_ready 1",
        ];
        // A handler's metrics are recorded as it finishes, just after the state it changed.
        crate::support::eventually("every metric is exported", || async {
            let metrics = get("/metrics").await.unwrap().text().await.unwrap();
            names.iter().all(|name| metrics.contains(name))
        })
        .await;
    }
    let metrics = crate::support::metrics(&system, &system.order).await;
    assert!(
        metrics.contains(
            r#"orderflow_events_published_total{type="orders.created",outcome="stored"}"#
        ),
        "{metrics}"
    );
}

#[test]
fn help_lists_every_setting_with_its_environment_variable() {
    for (binary, extra) in [
        (
            "order-service",
            &[
                "AUTH_JWKS_URL",
                "AUTH_JWKS_FILE",
                "AUTH_ISSUER",
                "AUTH_AUDIENCE",
                "AUTH_JWKS_ALLOW_HTTP",
                "AUTH_CUSTOMER_RATE_LIMIT",
            ][..],
        ),
        ("inventory-service", &[][..]),
        (
            "notification-service",
            &[
                "WEBHOOK_URL",
                "WEBHOOK_SECRET",
                "WEBHOOK_TIMEOUT_MS",
                "WEBHOOK_ALLOW_PRIVATE",
                "WEBHOOK_ALLOW_HTTP",
            ][..],
        ),
    ] {
        let output = Command::new(service_binary(binary))
            .arg("--help")
            .output()
            .unwrap();
        assert!(output.status.success());
        let help = String::from_utf8(output.stdout).unwrap();
        let common = [
            "HTTP_ADDR",
            "NATS_URL",
            "NATS_USER",
            "NATS_PASSWORD",
            "NATS_TOKEN",
            "NATS_NKEY_SEED",
            "NATS_CREDS",
            "NATS_TLS_CA",
            "NATS_TLS_CERT",
            "NATS_TLS_KEY",
            "STREAM_REPLICAS",
            "EVENTS_MAX_BYTES",
            "DLQ_MAX_BYTES",
            "DLQ_MAX_AGE",
            "IDEMPOTENCY_MAX_BYTES",
            "STOCK_MAX_BYTES",
            "ADMISSION_LIMIT",
            "HTTP_BODY_LIMIT",
            "HTTP_REQUEST_TIMEOUT_MS",
            "HTTP_HEADER_READ_TIMEOUT_MS",
            "HTTP_MAX_CONNECTIONS",
            "HTTP_MAX_HEADER_BYTES",
            "HTTP_MAX_CONNECTIONS_PER_CLIENT",
            "HTTP_WRITE_TIMEOUT_MS",
            "SHUTDOWN_GRACE_MS",
            "ADMIN_TOKEN",
            "ADMIN_TOKEN_FILE",
            "HTTP_TRUST_TRACE_CONTEXT",
            "HTTP_TRUSTED_PROXIES",
        ];
        for var in common.iter().chain(extra) {
            assert!(
                help.contains(&format!("env: {var}")),
                "{binary} --help does not mention {var}:\n{help}"
            );
        }
    }
}

#[test]
fn the_provisioning_step_lists_its_settings_and_never_shows_a_secret() {
    let output = Command::new(service_binary("orderflow-admin"))
        .args(["provision", "--help"])
        .env("NATS_PASSWORD", "hunter2-operator-secret")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for var in [
        "NATS_URL",
        "NATS_USER",
        "NATS_PASSWORD",
        "NATS_PASSWORD_FILE",
        "STREAM_REPLICAS",
        "STREAM_PARTITIONS",
        "HOT_WINDOW",
        "CONSUMER_ACK_WAIT_MS",
        "ARCHIVE_CONSUMERS",
        "PROVISION_TIMEOUT",
    ] {
        assert!(help.contains(&format!("env: {var}")), "{var}:\n{help}");
    }
    assert!(!help.contains("hunter2"), "{help}");
}

#[test]
fn a_bad_setting_stops_the_service_at_start_with_a_clear_message() {
    let output = Command::new(service_binary("notification-service"))
        .env("WEBHOOK_URL", "http://127.0.0.1:9/hook")
        .env("WEBHOOK_ALLOW_PRIVATE", "true")
        .env("WEBHOOK_ALLOW_HTTP", "true")
        .env("WEBHOOK_SECRET", "whsec_c2hvcnQ=")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WEBHOOK_SECRET must be"), "{stderr}");
}

#[test]
fn a_webhook_to_a_loopback_address_stops_the_service_unless_private_networks_are_allowed() {
    let output = Command::new(service_binary("notification-service"))
        .env(
            "WEBHOOK_URL",
            "http://127.0.0.1:9/hook?token=s3cr3t-in-the-url",
        )
        .env("WEBHOOK_SECRET", format!("whsec_{}", "A".repeat(44)))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WEBHOOK_ALLOW_PRIVATE"), "{stderr}");
    assert!(!stderr.contains("s3cr3t-in-the-url"), "{stderr}");
}

#[tokio::test]
async fn every_service_exits_cleanly_on_sigterm() {
    let mut system = System::builder().start().await;
    assert!(system.order.terminate(), "order-service did not exit 0");
    assert!(
        system.inventory[0].terminate(),
        "inventory-service did not exit 0"
    );
    assert!(
        system.notification.terminate(),
        "notification-service did not exit 0"
    );
}

#[tokio::test]
async fn every_service_run_returns_cleanly_when_shut_down_after_work() {
    let app = TestApp::spawn().await;
    app.set_stock("OPS", 5).await;
    let order_id = app.place_order("omar", &[("OPS", 1)]).await;
    app.wait_for_status(&order_id, "confirmed").await;

    // Each service's `run` drains its consumers and returns Ok, as `main` relies on.
    app.stop().await;
}

#[tokio::test]
async fn stock_changes_need_the_admin_token_when_one_is_configured() {
    let system = System::builder()
        .admin_token("s3cret-admin-token")
        .start()
        .await;
    let url = format!("{}/v1/stock/DESK", system.inventory[0].url());
    let body = json!({ "available": 3 });
    let anonymous = system.http.put(&url).json(&body).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let wrong = system
        .http
        .put(&url)
        .bearer_auth("guess")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let admin = system
        .http
        .put(&url)
        .bearer_auth("s3cret-admin-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200);
    // Reading stays open.
    assert_eq!(system.http.get(&url).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn admin_endpoints_are_closed_when_no_token_is_configured() {
    let system = System::builder().without_admin_token().start().await;
    let stock = format!("{}/v1/stock/DESK", system.inventory[0].url());
    let dead_letters = format!("{}/admin/dead-letters", system.order.url());
    for request in [
        system.http.put(&stock).json(&json!({ "available": 3 })),
        system.http.get(&dead_letters),
        system
            .http
            .get(&dead_letters)
            .bearer_auth("any-token-at-all-0123"),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 403);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            problem["type"], "https://orderflow.dev/problems/admin-disabled",
            "{problem}"
        );
    }
}

#[tokio::test]
async fn the_healthcheck_subcommand_reports_a_running_service_healthy() {
    let system = System::builder().start().await;
    let port = system.order.url().rsplit(':').next().unwrap().to_owned();
    let healthy = Command::new(service_binary("order-service"))
        .arg("healthcheck")
        .env("HTTP_ADDR", format!("0.0.0.0:{port}"))
        .status()
        .unwrap();
    assert!(healthy.success());
    let nothing_there = Command::new(service_binary("order-service"))
        .arg("healthcheck")
        .env("HTTP_ADDR", format!("127.0.0.1:{}", testkit::free_port()))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!nothing_there.success());
}
