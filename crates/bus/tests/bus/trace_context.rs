//! One order, one trace: the consumer's span is the child of the producer's span, across the
//! wire, with the W3C context carried in the NATS headers.

use std::sync::OnceLock;
use std::time::Duration;

use bus::MsgId;
use events::{EventKind, OrderId};
use opentelemetry::trace::{SpanKind, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

use crate::support::{Harness, PATIENCE, Running, fast_spec, next, order_created, recorder};

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|KeyValue { key: k, .. }| k.as_str() == key)
        .map(|kv| &kv.value)
}

/// The exporter behind a process-wide subscriber. Global, not thread-local: tracing caches
/// per-callsite interest process-wide, so a span first hit by a parallel test without a
/// subscriber would otherwise stay disabled here.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bus-test")));
        tracing::subscriber::set_global_default(subscriber).unwrap();
        exporter
    })
}

async fn finished_span(trace_id: TraceId, name: &str) -> SpanData {
    let exporter = exporter();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let spans = exporter.get_finished_spans().unwrap();
        if let Some(span) = spans
            .into_iter()
            .find(|s| s.name == name && s.span_context.trace_id() == trace_id)
        {
            return span;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "span {name:?} was never exported; got {:?}",
            exporter
                .get_finished_spans()
                .unwrap()
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_consumer_span_is_a_child_of_the_producer_span_across_the_wire() {
    exporter();
    let h = Harness::start().await;
    let (handler, mut rx) = recorder();
    let run = Running::start(
        &h.bus,
        fast_spec(crate::support::ORDERS, "traced", &[]),
        handler,
    )
    .await;

    let request = tracing::info_span!("POST /v1/orders");
    let trace_id = request.context().span().span_context().trace_id();
    let envelope = order_created(OrderId::new());
    h.bus
        .publisher()
        .publish(
            &crate::support::subject_of(&envelope),
            &envelope,
            &MsgId::new(EventKind::OrderCreated, envelope.correlation_id),
        )
        .instrument(request)
        .await
        .unwrap();
    next(&mut rx).await;

    let producer = finished_span(trace_id, "send orders.created").await;
    let consumer = finished_span(trace_id, "process orders.created").await;
    assert_eq!(producer.span_kind, SpanKind::Producer);
    assert_eq!(consumer.span_kind, SpanKind::Consumer);
    assert_eq!(consumer.parent_span_id, producer.span_context.span_id());
    assert!(
        consumer.parent_span_is_remote,
        "the parent should have come from the headers"
    );
    assert_eq!(
        attribute(&consumer, "messaging.nats.message.delivery_count"),
        Some(&Value::I64(1))
    );
    assert_eq!(
        attribute(&consumer, "messaging.consumer.group.name"),
        Some(&Value::from("traced"))
    );
    assert_eq!(
        attribute(&producer, "messaging.destination.name"),
        Some(&Value::from(crate::support::subject_of(&envelope)))
    );

    run.stop().await;
}
