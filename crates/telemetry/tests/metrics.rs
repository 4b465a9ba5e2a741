//! Metrics recorded through the `metrics` facade come out as a Prometheus exposition, with
//! latency histograms as real histograms (buckets), not summaries.

#[test]
fn recorded_metrics_appear_in_the_prometheus_exposition_with_histogram_buckets() {
    let handle = telemetry::metrics_handle();
    metrics::counter!("orderflow_test_events_total", "type" => "orders.created").increment(2);
    metrics::histogram!("orderflow_test_duration_seconds").record(0.003);
    let text = handle.render();
    assert!(
        text.contains(r#"orderflow_test_events_total{type="orders.created"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"orderflow_test_duration_seconds_bucket{le="0.005"} 1"#),
        "{text}"
    );
}
