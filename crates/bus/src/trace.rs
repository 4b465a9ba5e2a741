//! W3C trace context in NATS headers, so one order is one trace across services: the producer
//! injects its PRODUCER span, the consumer's CONSUMER span takes it as parent.
//!
//! The propagator is the global one that `telemetry::init` installs (trace context + baggage).

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};

/// Writes propagation fields into NATS message headers.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// Reads propagation fields from NATS message headers.
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Injects the context of `span` into `headers` with the global propagator.
pub(crate) fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut HeaderInjector(headers));
    });
}

/// Makes the context carried in `headers` (if any) the parent of `span`.
pub(crate) fn set_parent_from(span: &tracing::Span, headers: Option<&HeaderMap>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let Some(headers) = headers else { return };
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    // Fails only when no OpenTelemetry layer is installed, in which case there is no trace.
    let _ = span.set_parent(parent);
}
