//! Webhook delivery per the Standard Webhooks scheme: each request carries `webhook-id` (stable
//! per notification, so the receiver can dedupe a redelivery), `webhook-timestamp` and
//! `webhook-signature` (HMAC-SHA256 over `id.timestamp.body`), plus `traceparent` so the
//! receiver joins the order's trace. 2xx is delivered; 408/429/5xx, timeouts and connection
//! errors are retried; 410 disables the endpoint for every replica (recorded in KV); other
//! 4xx fail for good. A circuit breaker stops hammering an endpoint that keeps failing.
//! Redirects are not followed and only addresses [`crate::egress`] allows are dialled; the
//! URL, which may carry a token, is only ever shown redacted.

use std::time::Duration;

use base64::Engine as _;
use bus::{KvStore, Secret, StoreError};
use failsafe::futures::CircuitBreaker as _;
use failsafe::{StateMachine, backoff, failure_policy};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::egress::{self, Egress};

/// Shortest accepted signing key, in bytes.
pub const MIN_SECRET_BYTES: usize = 24;

/// Why a webhook cannot be configured.
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    /// The URL is not an http(s) URL. (The URL itself is not repeated: it may hold a token.)
    #[error("WEBHOOK_URL must be an http:// or https:// URL")]
    Url,
    /// The URL names an address webhooks may not reach.
    #[error(
        "WEBHOOK_URL {0} is a private, loopback or link-local address; set WEBHOOK_ALLOW_PRIVATE=true to allow it"
    )]
    NotPublic(String),
    /// The URL is plain http, which is not allowed.
    #[error(
        "WEBHOOK_URL {0} is plain http: a notification and its signature would cross the network in clear; use https://, or set WEBHOOK_ALLOW_HTTP=true for a development receiver"
    )]
    PlainHttp(String),
    /// No secret with a URL.
    #[error("WEBHOOK_SECRET is required when WEBHOOK_URL is set")]
    MissingSecret,
    /// The secret is not base64 (optionally prefixed `whsec_`) or too short.
    #[error("WEBHOOK_SECRET must be `whsec_` + base64 of at least {MIN_SECRET_BYTES} random bytes")]
    WeakSecret,
    /// The HTTP client could not be built.
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Why a webhook was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The endpoint answered 410 Gone earlier; nothing is sent to it any more.
    #[error("webhook endpoint disabled: {0}")]
    Disabled(String),
    /// The endpoint answered 410 Gone now.
    #[error("webhook endpoint answered 410 Gone; endpoint disabled")]
    Gone,
    /// The circuit breaker is open after repeated failures.
    #[error("webhook endpoint keeps failing; circuit breaker open")]
    CircuitOpen,
    /// The endpoint refused the request for good (4xx other than 408/429/410).
    #[error("webhook endpoint refused the notification: HTTP {0}")]
    Refused(u16),
    /// Worth trying again (5xx, 408, 429, timeout, connection error).
    #[error("webhook delivery failed: {0}")]
    Retryable(String),
    /// The disabled-endpoint record could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether an endpoint may be sent to, shared by all replicas in the `webhook_endpoints` bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointState {
    /// Why it was disabled.
    pub disabled_because: String,
}

type Breaker = StateMachine<failure_policy::ConsecutiveFailures<backoff::Exponential>, ()>;

/// One configured webhook endpoint.
#[derive(Clone)]
pub struct Webhook {
    url: Url,
    /// The URL as it may be shown.
    shown: String,
    signer: std::sync::Arc<standardwebhooks::Webhook>,
    client: reqwest::Client,
    breaker: Breaker,
    endpoints: KvStore<EndpointState>,
    endpoint_key: String,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

/// Checks a webhook secret and returns its key bytes.
pub fn secret_key(secret: &Secret) -> Result<Vec<u8>, WebhookConfigError> {
    let text = secret.expose().trim();
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| WebhookConfigError::WeakSecret)?;
    if key.len() < MIN_SECRET_BYTES {
        return Err(WebhookConfigError::WeakSecret);
    }
    Ok(key)
}

/// Checks the webhook settings: an http(s) URL, with a strong secret, that does not name an
/// address `egress` refuses.
pub fn validate(
    url: Option<&str>,
    secret: Option<&Secret>,
    egress: Egress,
) -> Result<(), WebhookConfigError> {
    let Some(url) = url else { return Ok(()) };
    parse(url, egress)?;
    secret_key(secret.ok_or(WebhookConfigError::MissingSecret)?)?;
    Ok(())
}

/// The URL, if it is http(s) and — when its host is an IP address, which is dialled without a
/// resolver — an address `egress` allows.
fn parse(url: &str, egress: Egress) -> Result<Url, WebhookConfigError> {
    let url = Url::parse(url).map_err(|_| WebhookConfigError::Url)?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(WebhookConfigError::Url);
    }
    let literal = url
        .host_str()
        .map(|host| host.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|host| host.parse::<std::net::IpAddr>().ok());
    if literal.is_some_and(|ip| !egress.allows(ip)) {
        return Err(WebhookConfigError::NotPublic(egress::redacted(&url)));
    }
    if url.scheme() == "http" && !egress.allow_http {
        return Err(WebhookConfigError::PlainHttp(egress::redacted(&url)));
    }
    Ok(url)
}

impl Webhook {
    /// An endpoint at `url` signing with `secret`.
    pub fn new(
        url: &Secret,
        secret: &Secret,
        timeout: Duration,
        egress: Egress,
        endpoints: KvStore<EndpointState>,
    ) -> Result<Self, WebhookConfigError> {
        // reqwest is built without a default TLS provider; the process uses ring (a no-op when
        // it is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let endpoint_key = url_key(url.expose());
        let url = parse(url.expose(), egress)?;
        let signer = standardwebhooks::Webhook::from_bytes(secret_key(secret)?)
            .map_err(|_| WebhookConfigError::WeakSecret)?;
        // A redirect would lead the request to a URL nobody configured (and past the egress
        // check of the configured one's literal address): not followed, it fails for good.
        // Nor a proxy from the environment (`HTTPS_PROXY`, `ALL_PROXY`): the proxy would
        // resolve and dial the host itself, past the egress policy.
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(egress)
            .build()?;
        let breaker = failsafe::Config::new()
            .failure_policy(failure_policy::consecutive_failures(
                5,
                backoff::exponential(Duration::from_secs(5), Duration::from_secs(60)),
            ))
            .build();
        Ok(Self {
            shown: egress::redacted(&url),
            url,
            signer: std::sync::Arc::new(signer),
            client,
            breaker,
            endpoints,
            endpoint_key,
        })
    }

    /// The endpoint as it may be shown (scheme, host, port).
    pub fn endpoint(&self) -> &str {
        &self.shown
    }

    /// Why the endpoint is disabled, if it is (a `410 Gone`, for every replica).
    pub async fn disabled(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .endpoints
            .get(&self.endpoint_key)
            .await?
            .map(|state| state.value.disabled_because))
    }

    /// Sends to the endpoint again, for every replica — once its owner has fixed it. Enabling
    /// an endpoint that is not disabled changes nothing.
    pub async fn enable(&self) -> Result<(), StoreError> {
        self.endpoints.delete(&self.endpoint_key).await?;
        tracing::info!(url = %self.shown, "webhook endpoint enabled");
        Ok(())
    }

    /// POSTs `body` as notification `id`, signed, inside a CLIENT span.
    pub async fn send(&self, id: &str, body: &[u8]) -> Result<(), SendError> {
        if let Some(because) = self.disabled().await? {
            return Err(SendError::Disabled(because));
        }
        let span = tracing::info_span!(
            "webhook",
            otel.name = "POST",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = "POST",
            url.full = %self.shown,
            http.response.status_code = tracing::field::Empty,
            webhook.id = id,
        );
        let attempt = self.attempt(id, body, &span);
        let retryable = |e: &SendError| matches!(e, SendError::Retryable(_));
        let result = match self
            .breaker
            .call_with(retryable, attempt)
            .instrument(span.clone())
            .await
        {
            Ok(()) => Ok(()),
            Err(failsafe::Error::Rejected) => Err(SendError::CircuitOpen),
            Err(failsafe::Error::Inner(e)) => Err(e),
        };
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        if let Err(SendError::Gone) = &result {
            let state = EndpointState {
                disabled_because: format!("{} answered 410 Gone", self.shown),
            };
            self.endpoints.create(&self.endpoint_key, &state).await?;
            tracing::warn!(url = %self.shown, "webhook endpoint gone; disabled");
        }
        result
    }

    async fn attempt(&self, id: &str, body: &[u8], span: &tracing::Span) -> Result<(), SendError> {
        let timestamp = chrono::Utc::now().timestamp();
        let signature = self
            .signer
            .sign(id, timestamp, body)
            .map_err(|e| SendError::Retryable(e.to_string()))?;
        let mut headers = http::HeaderMap::new();
        let value = |text: &str| {
            http::HeaderValue::from_str(text).map_err(|e| SendError::Retryable(e.to_string()))
        };
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(standardwebhooks::HEADER_WEBHOOK_ID, value(id)?);
        headers.insert(
            standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
            value(&timestamp.to_string())?,
        );
        headers.insert(
            standardwebhooks::HEADER_WEBHOOK_SIGNATURE,
            value(&signature)?,
        );
        // Trace context only: baggage is for our own services, never for a third party's
        // endpoint (it may carry what a caller or a service put there).
        opentelemetry::propagation::TextMapPropagator::inject_context(
            &opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            &span.context(),
            &mut opentelemetry_http::HeaderInjector(&mut headers),
        );
        let response = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body.to_vec())
            .send()
            .await
            // reqwest names the URL in its errors; this text reaches logs and outcome events.
            .map_err(|e| SendError::Retryable(error_text(&e.without_url())))?;
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        match status.as_u16() {
            200..=299 => Ok(()),
            410 => Err(SendError::Gone),
            408 | 429 | 500..=599 => Err(SendError::Retryable(format!("HTTP {status}"))),
            other => Err(SendError::Refused(other)),
        }
    }
}

/// An error with its causes (reqwest's own text is only "error sending request").
fn error_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A KV key for an endpoint URL (URLs hold characters keys may not).
fn url_key(url: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(url.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC_ONLY: Egress = Egress {
        allow_private: false,
        allow_http: true,
    };

    #[test]
    fn a_short_secret_is_refused() {
        let short = Secret::new(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 16])
        ));
        assert!(matches!(
            validate(Some("http://x"), Some(&short), PUBLIC_ONLY),
            Err(WebhookConfigError::WeakSecret)
        ));
    }

    #[test]
    fn a_url_without_a_secret_is_refused() {
        assert!(matches!(
            validate(Some("http://x"), None, PUBLIC_ONLY),
            Err(WebhookConfigError::MissingSecret)
        ));
    }

    #[test]
    fn a_strong_secret_with_or_without_prefix_is_accepted() {
        let encoded = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(
            validate(
                Some("https://x"),
                Some(&Secret::new(format!("whsec_{encoded}"))),
                PUBLIC_ONLY
            )
            .is_ok()
        );
        assert!(validate(Some("https://x"), Some(&Secret::new(encoded)), PUBLIC_ONLY).is_ok());
    }

    fn strong() -> Secret {
        Secret::new(base64::engine::general_purpose::STANDARD.encode([7u8; 32]))
    }

    #[test]
    fn a_url_with_a_metadata_or_loopback_address_is_refused_without_saying_its_path() {
        for url in [
            "http://169.254.169.254/latest/meta-data?token=s3cr3t",
            "http://127.0.0.1:9000/hook?token=s3cr3t",
            "http://[::1]/hook",
        ] {
            let error = validate(Some(url), Some(&strong()), PUBLIC_ONLY).unwrap_err();
            assert!(matches!(error, WebhookConfigError::NotPublic(_)), "{error}");
            assert!(!error.to_string().contains("s3cr3t"), "{error}");
        }
        let allowed = Egress {
            allow_private: true,
            allow_http: true,
        };
        assert!(validate(Some("http://127.0.0.1:9000/hook"), Some(&strong()), allowed).is_ok());
    }

    #[test]
    fn plain_http_is_refused_unless_allowed_for_development_without_saying_its_path() {
        let https_only = Egress {
            allow_http: false,
            ..PUBLIC_ONLY
        };
        let error = validate(
            Some("http://hooks.example.com/t/s3cr3t"),
            Some(&strong()),
            https_only,
        )
        .unwrap_err();
        assert!(matches!(error, WebhookConfigError::PlainHttp(_)), "{error}");
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
        assert!(
            validate(
                Some("https://hooks.example.com/t"),
                Some(&strong()),
                https_only
            )
            .is_ok()
        );
        assert!(
            validate(
                Some("http://hooks.example.com/t"),
                Some(&strong()),
                PUBLIC_ONLY
            )
            .is_ok()
        );
    }

    #[test]
    fn a_url_that_is_not_http_is_refused_without_repeating_it() {
        let error = validate(Some("ftp://s3cr3t@x"), Some(&strong()), PUBLIC_ONLY).unwrap_err();
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
    }
}
