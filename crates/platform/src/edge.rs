//! The HTTP edge every service shares: its API routes plus `/healthz` (alive), `/readyz` (NATS
//! connected and what it needs there bound; what it runs without, if anything), `/metrics`
//! (Prometheus) and `/openapi.json`, wrapped in a server span per request (none for probes and
//! scrapes), request metrics, a body-size limit and a request timeout, with 404/405 as problem
//! JSON. [`serve`] holds at most `HTTP_MAX_CONNECTIONS`, closes a connection whose request head
//! does not arrive within `HTTP_HEADER_READ_TIMEOUT_MS` (slowloris, idle keep-alive) or is
//! larger than `HTTP_MAX_HEADER_BYTES`, stops accepting on shutdown and lets in-flight
//! requests finish.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bus::CancellationToken;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use ipnet::IpNet;
use metrics_exporter_prometheus::PrometheusHandle;
use opentelemetry::trace::TraceContextExt as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use telemetry::metric;

use crate::config::HttpArgs;
use crate::problem::Problem;
use crate::rate_limit::{Budgets, too_many_requests};

/// Tells whether the service can do its job right now.
pub type Readiness = Arc<dyn Fn() -> Health + Send + Sync>;

/// What `/readyz` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Whether the service takes work (503 otherwise).
    pub ready: bool,
    /// What it does without while it takes work — a dependency that is away but whose absence
    /// only some requests notice (say, the archive: the saga runs on, archived orders answer
    /// 503). Ready with these is still ready: taking the replica out of rotation would stop
    /// the work that does not need them.
    pub degraded: Vec<String>,
    /// Why it is not ready yet, when it knows (what it waits for).
    pub waiting: Option<String>,
}

/// What the edge serves besides the service's own API.
#[derive(Clone)]
pub struct Edge {
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Served at `/openapi.json` (see [`crate::openapi::complete`]).
    pub openapi: Arc<serde_json::Value>,
    /// Backs `/readyz`.
    pub ready: Readiness,
    /// Limits and timeouts.
    pub limits: HttpArgs,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The service's `api` plus the shared endpoints and layers.
pub fn router(api: Router, edge: Edge) -> Router {
    let timeout = edge.limits.http_request_timeout;
    let operational = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .with_state(edge.clone());
    api.merge(operational)
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            )
        })
        .layer(DefaultBodyLimit::max(edge.limits.http_body_limit))
        .layer(middleware::from_fn_with_state(
            RateLimit::new(
                edge.limits.http_rate_limit,
                edge.limits.http_trusted_proxies.clone(),
            ),
            limit_rate,
        ))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            with_timeout(timeout, request, next)
        }))
        .layer(middleware::from_fn_with_state(
            edge.limits.http_trust_trace_context,
            observe,
        ))
}

/// Serves `router` on `listener` within `limits` until `shutdown`, then waits for in-flight
/// requests (idle connections are closed at once).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpArgs,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        // Counted from when the server waits for a head: slowloris clients and idle
        // kept-alive connections alike are closed after it.
        .header_read_timeout(limits.http_header_read_timeout)
        .max_header_size(limits.http_max_header_bytes)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.http_max_connections));
    let per_client = ClientSlots::new(
        limits.http_max_connections_per_client,
        limits.http_trusted_proxies.clone(),
    );
    let connections = GracefulShutdown::new();
    metrics::gauge!(metric::HTTP_OPEN_CONNECTIONS).set(0.0);
    metrics::counter!(metric::HTTP_CONNECTIONS_REFUSED).increment(0);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: wait rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (Ok(slot), Some(client_slot)) = (
            slots.clone().try_acquire_owned(),
            per_client.take(peer.ip()),
        ) else {
            metrics::counter!(metric::HTTP_CONNECTIONS_REFUSED).increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // A client that stops reading its answer holds the connection no longer than this.
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.http_write_timeout));
        let stream = Box::pin(stream);
        // The peer address keys the per-client rate limit (axum's `ConnectInfo`).
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let connection = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let open = metrics::gauge!(metric::HTTP_OPEN_CONNECTIONS);
            open.increment(1.0);
            // A client that goes away, or times out, is its own business.
            let _ = connection.await;
            open.decrement(1.0);
            drop((slot, client_slot));
        });
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
}

/// The connections each client (an IPv4 address, an IPv6 /64) holds, capped, so that one
/// client cannot take every slot; trusted proxies, which carry many clients, are not capped
/// (nor anyone with a limit of 0).
#[derive(Clone)]
struct ClientSlots {
    open: Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>>,
    limit: usize,
    trusted_proxies: Arc<[IpNet]>,
}

/// One connection of a client, given back when dropped.
struct ClientSlot {
    slots: ClientSlots,
    client: Option<IpAddr>,
}

impl ClientSlots {
    fn new(limit: usize, trusted_proxies: Vec<IpNet>) -> Self {
        Self {
            open: Arc::default(),
            limit,
            trusted_proxies: trusted_proxies.into(),
        }
    }

    /// A slot for a connection from `peer`, or `None` if it holds its share already.
    fn take(&self, peer: IpAddr) -> Option<ClientSlot> {
        if self.limit == 0 || self.trusted_proxies.iter().any(|net| net.contains(&peer)) {
            return Some(ClientSlot {
                slots: self.clone(),
                client: None,
            });
        }
        let client = budget_key(peer);
        let mut open = self.open.lock().ok()?;
        let count = open.entry(client).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            slots: self.clone(),
            client: Some(client),
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let Some(client) = self.client else {
            return;
        };
        if let Ok(mut open) = self.slots.open.lock()
            && let Some(count) = open.get_mut(&client)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&client);
            }
        }
    }
}

/// A per-client (IP) request budget; `None` when turned off.
#[derive(Clone)]
struct RateLimit(Option<Arc<Budget>>);

/// The budgets, and whom to believe about who the client is.
struct Budget {
    per_client: Arc<Budgets<IpAddr>>,
    /// Proxies whose `X-Forwarded-For` is believed.
    trusted_proxies: Vec<IpNet>,
}

/// Probes and scrapes. They are never rate-limited: an orchestrator or Prometheus behind the
/// same proxy as the customers must not be locked out by them. They are never traced: a
/// trace per scrape and per probe (several a second across replicas) would bury the orders'
/// traces and cost the exporter more than the orders do. They are still counted in the
/// request metrics.
const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

impl RateLimit {
    fn new(per_second: u32, trusted_proxies: Vec<IpNet>) -> Self {
        Self(Budgets::new(per_second).map(|per_client| {
            Arc::new(Budget {
                per_client,
                trusted_proxies,
            })
        }))
    }
}

/// Every `X-Forwarded-For` header, in order, as one list: a proxy may add its hop as a header
/// line of its own, and reading only the first would take the client's word for the rest. A
/// value that is not text counts as a hop that is not an address.
fn forwarded_for(headers: &axum::http::HeaderMap) -> Option<String> {
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|value| value.to_str().unwrap_or("unknown"))
        .collect();
    (!hops.is_empty()).then(|| hops.join(","))
}

/// Whose budget a request spends: the client's IPv4 address, or its IPv6 /64 — one host
/// usually holds a whole /64, and per-address budgets would let it rotate through them.
fn budget_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    }
}

/// The client a request comes from: the peer, unless the peer is a trusted proxy — then the
/// right-most `X-Forwarded-For` address that is not a trusted proxy itself (addresses left of
/// it were written by the client and prove nothing).
fn client_address(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in header.rsplit(',') {
        let Ok(hop) = hop.trim().parse::<IpAddr>() else {
            // A hop that is not an address: stop at the last one known.
            return client;
        };
        client = hop;
        if !is_trusted(&hop) {
            return hop;
        }
    }
    client
}

async fn limit_rate(State(limit): State<RateLimit>, request: Request, next: Next) -> Response {
    let (Some(budget), Some(ConnectInfo(peer))) = (
        &limit.0,
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .copied(),
    ) else {
        return next.run(request).await;
    };
    if PROBES.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let forwarded_for = forwarded_for(request.headers());
    let client = client_address(peer.ip(), forwarded_for.as_deref(), &budget.trusted_proxies);
    match budget.per_client.check(&budget_key(client)) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            metrics::counter!(metric::HTTP_RATE_LIMITED).increment(1);
            too_many_requests("this client", wait).into_response()
        }
    }
}
async fn readyz(State(edge): State<Edge>) -> Response {
    let health = (edge.ready)();
    if health.ready {
        let body = if health.degraded.is_empty() {
            serde_json::json!({ "status": "ready" })
        } else {
            serde_json::json!({ "status": "degraded", "degraded": health.degraded })
        };
        axum::Json(body).into_response()
    } else {
        let why = health
            .waiting
            .unwrap_or_else(|| "not connected to NATS".to_owned());
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready")
            .with_detail(why)
            .into_response()
    }
}

async fn metrics(State(edge): State<Edge>) -> Response {
    // Readiness as of this scrape, so "up but not ready" can alert without probing.
    metrics::gauge!(metric::READY).set(if (edge.ready)().ready { 1.0 } else { 0.0 });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        edge.metrics.render(),
    )
        .into_response()
}

async fn openapi(State(edge): State<Edge>) -> Response {
    axum::Json(edge.openapi.as_ref()).into_response()
}

async fn with_timeout(timeout: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "Request timed out",
        )
        .with_detail(format!(
            "no answer within {timeout:?}; retry with the same Idempotency-Key"
        ))
        .with_retry_after(1)
        .into_response(),
    }
}

/// A SERVER span per request (OTel HTTP conventions; none for [`PROBES`]) and the
/// `http_server_request_duration_seconds` histogram.
///
/// A trusted caller's `traceparent` is the span's parent, and its `baggage` rides along. An
/// untrusted caller (the default: the public internet) could otherwise force every request
/// to be sampled by sending the sampled flag, and plant baggage that travels to every service
/// — so its context is only *linked*: the request starts a trace of its own, sampled at the
/// configured ratio, that still points at the caller's.
async fn observe(State(trusted): State<bool>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    if PROBES.contains(&route.as_str()) {
        let response = next.run(request).await;
        record_request(&method, route, response.status(), started);
        return response;
    }
    let span = tracing::info_span!(
        "http request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    let caller = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&opentelemetry_http::HeaderExtractor(request.headers()))
    });
    if trusted {
        let _ = span.set_parent(caller);
    } else {
        let linked = caller.span().span_context().clone();
        if linked.is_valid() {
            span.add_link(linked);
        }
    }
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    record_request(&method, route, status, started);
    response
}

fn record_request(
    method: &axum::http::Method,
    route: String,
    status: StatusCode,
    started: Instant,
) {
    metrics::histogram!(
        metric::HTTP_REQUEST_DURATION,
        "method" => method.to_string(),
        "route" => route,
        "status" => status.as_u16().to_string(),
    )
    .record(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|n| crate::config::network(n).unwrap())
            .collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(
            client_address(ip("203.0.113.9"), Some("198.51.100.1"), &[]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_forwarded_client_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_address(ip("10.1.1.1"), Some("198.51.100.1"), &trusted),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn addresses_a_client_wrote_itself_are_not_believed() {
        // The client sent "X-Forwarded-For: 1.2.3.4"; the trusted proxy appended the real one.
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_address(ip("10.1.1.1"), Some("1.2.3.4, 198.51.100.1"), &trusted),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_back_to_the_client() {
        let trusted = nets(&["10.0.0.0/8", "192.0.2.7"]);
        assert_eq!(
            client_address(
                ip("10.1.1.1"),
                Some("198.51.100.1, 192.0.2.7, 10.2.2.2"),
                &trusted
            ),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn every_forwarded_for_header_is_read_in_order() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(forwarded_for(&headers), None);
        headers.append("x-forwarded-for", "1.2.3.4".parse().unwrap());
        headers.append("x-forwarded-for", "198.51.100.1, 10.2.2.2".parse().unwrap());
        let joined = forwarded_for(&headers).unwrap();
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_address(ip("10.1.1.1"), Some(&joined), &trusted),
            ip("198.51.100.1"),
            "the proxy's own line is believed, not the client's first one"
        );
    }

    #[test]
    fn an_ipv6_client_spends_the_budget_of_its_64() {
        assert_eq!(
            budget_key(ip("2001:db8:1:2:aaaa::1")),
            budget_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            budget_key(ip("2001:db8:1:2::1")),
            budget_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(budget_key(ip("::ffff:203.0.113.9")), ip("203.0.113.9"));
        assert_eq!(budget_key(ip("203.0.113.9")), ip("203.0.113.9"));
    }

    #[test]
    fn a_header_that_is_not_an_address_leaves_the_last_known_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_address(ip("10.1.1.1"), Some("unknown"), &trusted),
            ip("10.1.1.1")
        );
    }
}
