//! The `otlp-sink` mode: a local OTLP/HTTP trace endpoint for benchmarks with tracing on. It
//! decodes each export (so the services pay the full cost of a real collector's protocol) and
//! counts spans; `GET /stats` answers the counts as JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

#[derive(Debug, Default)]
struct Counts {
    exports: AtomicU64,
    spans: AtomicU64,
    bytes: AtomicU64,
    rejected: AtomicU64,
}

/// Serves until interrupted.
pub async fn serve(addr: &str) -> anyhow::Result<()> {
    let counts = Arc::new(Counts::default());
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .route("/stats", get(stats))
        .with_state(counts);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    eprintln!(
        "otlp-sink on http://{} (POST /v1/traces, GET /stats)",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")
}

async fn receive(State(counts): State<Arc<Counts>>, body: Bytes) -> StatusCode {
    counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        counts.rejected.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    };
    let spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    counts.exports.fetch_add(1, Ordering::Relaxed);
    counts.spans.fetch_add(spans as u64, Ordering::Relaxed);
    StatusCode::OK
}

async fn stats(State(counts): State<Arc<Counts>>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "exports": counts.exports.load(Ordering::Relaxed),
        "spans": counts.spans.load(Ordering::Relaxed),
        "bytes": counts.bytes.load(Ordering::Relaxed),
        "rejected": counts.rejected.load(Ordering::Relaxed),
    }))
}
