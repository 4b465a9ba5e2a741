//! One order, one trace: spans from all three services reach an OTLP receiver with the trace
//! id of the POST, and form one tree under it. A caller's trace context is joined only when
//! the edge trusts it; an untrusted caller cannot force sampling, and no caller's baggage
//! reaches a webhook. Probes and scrapes make no spans at all.

use std::collections::{HashMap, HashSet};

use testkit::{OtlpReceiver, System, WebhookReceiver};

use crate::support::{eventually, order_body, webhook_secret};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn an_order_is_one_trace_across_all_three_services() {
    let otlp = OtlpReceiver::start().await;
    let webhooks = WebhookReceiver::start().await;
    let system = System::builder()
        .otlp(otlp.endpoint())
        .webhook(webhooks.url(), &webhook_secret())
        .env("HTTP_TRUST_TRACE_CONTEXT", "true")
        .start()
        .await;
    system.set_stock("TRACED", 5).await;

    let response = system
        .http
        .post(format!("{}/v1/orders", system.order.url()))
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"))
        .header("baggage", "planted=by-the-caller")
        .json(&order_body("tracy", &[("TRACED", 1)]))
        .send()
        .await
        .unwrap();
    let order_id = crate::support::accepted_order_id(response).await;
    system.wait_for_status(&order_id, "confirmed").await;
    eventually("the webhook was sent", || async {
        !webhooks.received().is_empty()
    })
    .await;
    assert!(
        webhooks.received()[0]
            .header("traceparent")
            .is_some_and(|t| t.contains(TRACE_ID))
    );
    assert_eq!(
        webhooks.received()[0].header("baggage"),
        None,
        "baggage left for a third party's endpoint"
    );

    // Each service exports in its own batches, so a child may arrive before its parent: wait
    // for the last span of the saga and for every parent it hangs from.
    eventually(
        "spans from every service arrive and close the tree",
        || async {
            let spans = otlp.trace(TRACE_ID);
            let services: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
            ["order-service", "inventory-service", "notification-service"]
                .iter()
                .all(|s| services.contains(*s))
                && spans.iter().any(|s| s.name == "send notifications.sent")
                && orphans(&spans).is_empty()
        },
    )
    .await;

    let spans = otlp.trace(TRACE_ID);
    assert_eq!(
        orphans(&spans),
        Vec::<String>::new(),
        "spans outside the tree"
    );
    let ids: HashMap<&str, &testkit::ReceivedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id == CLIENT_SPAN_ID)
        .collect();
    assert_eq!(
        roots.len(),
        1,
        "one server span should hang under the client: {roots:?}"
    );
    assert_eq!(roots[0].name, "POST /v1/orders");
    assert_eq!(roots[0].service, "order-service");
    // Each hop is a producer span with a consumer span under it.
    for (service, name) in [
        ("inventory-service", "process orders.created"),
        ("order-service", "process inventory.reserved"),
        ("notification-service", "process orders.confirmed"),
    ] {
        let consumer = spans
            .iter()
            .find(|s| s.service == service && s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {service}: {spans:#?}"));
        assert_eq!(consumer.kind, 5, "{name} is not a CONSUMER span");
        assert_eq!(
            ids[consumer.parent_span_id.as_str()].kind,
            4,
            "{name}'s parent is not a PRODUCER span"
        );
    }
}

/// Places an order as a caller whose `traceparent` says *sampled*, on a system that samples
/// nothing of its own (ratio 0), and returns how many spans of the caller's trace arrive.
async fn spans_of_a_sampled_caller(trust_callers: bool) -> usize {
    let otlp = OtlpReceiver::start().await;
    let system = System::builder()
        .otlp(otlp.endpoint())
        .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
        .env("OTEL_TRACES_SAMPLER_ARG", "0")
        .env("HTTP_TRUST_TRACE_CONTEXT", &trust_callers.to_string())
        .start()
        .await;
    system.set_stock("RATIO", 1).await;
    let response = system
        .http
        .post(format!("{}/v1/orders", system.order.url()))
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"))
        .json(&order_body("sam", &[("RATIO", 1)]))
        .send()
        .await
        .unwrap();
    let order_id = crate::support::accepted_order_id(response).await;
    system.wait_for_status(&order_id, "confirmed").await;
    // Spans are exported within 100 ms of their end (OTEL_BSP_SCHEDULE_DELAY in the testkit).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    otlp.trace(TRACE_ID).len()
}

#[tokio::test]
async fn a_trusted_callers_sampled_trace_is_joined_even_at_a_zero_ratio() {
    assert!(spans_of_a_sampled_caller(true).await > 0);
}

#[tokio::test]
async fn an_untrusted_caller_cannot_force_sampling_beyond_the_configured_ratio() {
    assert_eq!(spans_of_a_sampled_caller(false).await, 0);
}

#[tokio::test]
async fn probes_and_scrapes_create_no_spans_but_are_still_counted() {
    let otlp = OtlpReceiver::start().await;
    let system = System::builder().otlp(otlp.endpoint()).start().await;
    let services = [
        system.order.url(),
        system.inventory[0].url(),
        system.notification.url(),
    ];
    for _ in 0..3 {
        for url in &services {
            for path in PROBES {
                let response = system
                    .http
                    .get(format!("{url}{path}"))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{url}{path}");
            }
        }
    }
    // An order's spans prove the exporter works and has flushed what came before them.
    system.set_stock("PROBED", 1).await;
    let response = system
        .http
        .post(format!("{}/v1/orders", system.order.url()))
        .json(&order_body("pat", &[("PROBED", 1)]))
        .send()
        .await
        .unwrap();
    let order_id = crate::support::accepted_order_id(response).await;
    system.wait_for_status(&order_id, "confirmed").await;
    eventually("the order's server span arrives", || async {
        otlp.span_names().iter().any(|n| n == "POST /v1/orders")
    })
    .await;

    let traced: Vec<String> = otlp
        .span_names()
        .into_iter()
        .filter(|name| PROBES.iter().any(|path| name.ends_with(path)))
        .collect();
    assert_eq!(traced, Vec::<String>::new(), "probes were traced");
    let metrics = crate::support::metrics(&system, &system.order).await;
    for path in PROBES {
        assert!(
            metrics.contains(&format!("route=\"{path}\"")),
            "{path} is missing from the request metrics"
        );
    }
}

const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The spans whose parent is neither the client's span nor another span of the trace.
fn orphans(spans: &[testkit::ReceivedSpan]) -> Vec<String> {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    spans
        .iter()
        .filter(|s| s.parent_span_id != CLIENT_SPAN_ID && !ids.contains(s.parent_span_id.as_str()))
        .map(|s| format!("{} of {} (parent {})", s.name, s.service, s.parent_span_id))
        .collect()
}
