//! Logs correlate with traces: every JSON line logged inside a span carries that span's
//! OpenTelemetry ids, and a quiet log filter never switches trace context off.

// Helpers outside `#[test]` fns are test code too: a panic here is a failed test with a message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use opentelemetry::trace::TraceContextExt as _;
use telemetry::{LogFormat, Settings, Telemetry};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One init per process (it installs globals), logging at `warn` and above only.
fn captured() -> &'static Captured {
    static INIT: OnceLock<(Captured, Telemetry)> = OnceLock::new();
    &INIT
        .get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            let telemetry = telemetry::init_with(Settings {
                service_name: "telemetry-test".into(),
                log_format: LogFormat::Json,
                log_filter: "warn".into(),
                log_writer: BoxMakeWriter::new(move || writer.clone()),
                otlp: None,
            })
            .unwrap();
            (captured, telemetry)
        })
        .0
}

fn lines_containing(needle: &str) -> Vec<serde_json::Value> {
    let bytes = captured().0.lock().unwrap().clone();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn log_lines_carry_the_trace_and_span_ids_of_the_current_span() {
    captured();
    // At `warn` so the log layer (filtered at warn) records the span and its fields too.
    let span = tracing::warn_span!("reserve", order_id = "o-1");
    let cx = span.context();
    let ids = cx.span().span_context().clone();
    span.in_scope(|| tracing::warn!(sku = "SKU-1", "stock is low"));

    let lines = lines_containing("stock is low");
    let [line] = lines.as_slice() else {
        panic!("expected one line, got {lines:?}")
    };
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["fields"]["sku"], "SKU-1");
    assert_eq!(line["trace_id"], ids.trace_id().to_string());
    assert_eq!(line["span_id"], ids.span_id().to_string());
    assert_eq!(line["spans"][0]["name"], "reserve");
    // Span fields live on the trace, not in every log line (formatting them costs CPU).
    assert!(line["spans"][0].get("order_id").is_none(), "{line}");
}

#[test]
fn a_quiet_log_filter_does_not_switch_trace_context_off() {
    captured();
    // info_span is below the `warn` log filter, yet must still carry a context to propagate.
    let span = tracing::info_span!("publish");
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&span.context(), &mut carrier)
    });
    let traceparent = carrier.get("traceparent").expect("no traceparent injected");
    assert!(traceparent.starts_with("00-"), "{traceparent}");
}

#[test]
fn info_lines_are_filtered_out_by_a_warn_filter() {
    captured();
    tracing::info!("this should not be written");
    assert!(lines_containing("this should not be written").is_empty());
}
