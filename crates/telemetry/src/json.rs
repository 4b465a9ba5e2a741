//! The JSON log line: timestamp, level, target, message and fields, the names of the spans in
//! scope, and the OpenTelemetry `trace_id`/`span_id` of the current span — the key that joins a
//! log line to its trace (where the span attributes live) in Jaeger or any OTLP backend.
//!
//! Span fields are deliberately not formatted for logs: the fmt layer would render every span's
//! fields to a string when the span is created and again on every `record`, whether or not a log
//! line is ever written inside it — about a tenth of a service's CPU under load (see
//! BENCHMARKS.md). [`NoSpanFields`] makes that a no-op.

use std::fmt;

use opentelemetry::trace::TraceContextExt as _;
use serde::Serialize;
use serde::ser::SerializeMap as _;
use serde_json::Value;
use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as one JSON object per line, with trace ids.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JsonWithTraceIds;

/// One log line, serialized straight from borrowed parts: a line is written for every logged
/// event on the hot path, and building a `serde_json::Map` first cost an allocation per key.
#[derive(Serialize)]
struct Line<'a> {
    timestamp: String,
    level: &'a str,
    target: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Value>,
    #[serde(skip_serializing_if = "Fields::is_empty")]
    fields: Fields,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    spans: Vec<SpanName<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    span_id: Option<String>,
}

#[derive(Serialize)]
struct SpanName<'a> {
    name: &'a str,
}

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields.take("message");
        let spans = ctx
            .event_scope()
            .map(|scope| {
                scope
                    .from_root()
                    .map(|span| SpanName { name: span.name() })
                    .collect()
            })
            .unwrap_or_default();
        // The current span's OpenTelemetry context is active while the span is entered.
        let cx = opentelemetry::Context::current();
        let span_context = cx.span().span_context().clone();
        let valid = span_context.is_valid();
        let line = Line {
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            level: meta.level().as_str(),
            target: meta.target(),
            message,
            fields,
            spans,
            trace_id: valid.then(|| span_context.trace_id().to_string()),
            span_id: valid.then(|| span_context.span_id().to_string()),
        };
        let json = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{json}")
    }
}

/// Formats no span fields (see the module docs); events format their own fields.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NoSpanFields;

impl<'writer> FormatFields<'writer> for NoSpanFields {
    fn format_fields<R: RecordFields>(&self, _writer: Writer<'writer>, _fields: R) -> fmt::Result {
        Ok(())
    }
}

/// An event's fields as JSON values, in the order they were recorded (names are `'static`).
#[derive(Default)]
struct Fields(Vec<(&'static str, Value)>);

impl Fields {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes the field `name` and returns its value.
    fn take(&mut self, name: &str) -> Option<Value> {
        let index = self.0.iter().position(|(n, _)| *n == name)?;
        Some(self.0.remove(index).1)
    }

    fn insert(&mut self, field: &Field, value: Value) {
        self.0.push((field.name(), value));
    }
}

impl Serialize for Fields {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl tracing::field::Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field, format!("{value:?}").into());
    }
}
