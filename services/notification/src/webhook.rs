//! Webhook delivery per the Standard Webhooks scheme: each request carries `webhook-id` (stable
//! per notification, so the receiver can dedupe a redelivery), `webhook-timestamp` and
//! `webhook-signature` (HMAC-SHA256 over `id.timestamp.body`), plus `traceparent` so the
//! receiver joins the order's trace. 2xx is delivered; 408/429/5xx, timeouts and connection
//! errors are retried; 410 disables the endpoint for every replica (recorded in KV); other
//! 4xx fail for good. A circuit breaker stops hammering an endpoint that keeps failing.

use std::time::Duration;

use base64::Engine as _;
use bus::{KvStore, Secret, StoreError};
use failsafe::futures::CircuitBreaker as _;
use failsafe::{StateMachine, backoff, failure_policy};
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Shortest accepted signing key, in bytes.
pub const MIN_SECRET_BYTES: usize = 24;

/// Why a webhook cannot be configured.
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    /// The URL is not http(s).
    #[error("WEBHOOK_URL {0:?} must be an http:// or https:// URL")]
    Url(String),
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
    url: String,
    signer: std::sync::Arc<standardwebhooks::Webhook>,
    client: reqwest::Client,
    breaker: Breaker,
    endpoints: KvStore<EndpointState>,
    endpoint_key: String,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
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

/// Checks the webhook settings: a URL needs a strong secret.
pub fn validate(url: Option<&str>, secret: Option<&Secret>) -> Result<(), WebhookConfigError> {
    let Some(url) = url else { return Ok(()) };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(WebhookConfigError::Url(url.to_owned()));
    }
    secret_key(secret.ok_or(WebhookConfigError::MissingSecret)?)?;
    Ok(())
}

impl Webhook {
    /// An endpoint at `url` signing with `secret`.
    pub fn new(
        url: &str,
        secret: &Secret,
        timeout: Duration,
        endpoints: KvStore<EndpointState>,
    ) -> Result<Self, WebhookConfigError> {
        validate(Some(url), Some(secret))?;
        let signer = standardwebhooks::Webhook::from_bytes(secret_key(secret)?)
            .map_err(|_| WebhookConfigError::WeakSecret)?;
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let breaker = failsafe::Config::new()
            .failure_policy(failure_policy::consecutive_failures(
                5,
                backoff::exponential(Duration::from_secs(5), Duration::from_secs(60)),
            ))
            .build();
        let endpoint_key = url_key(url);
        Ok(Self {
            url: url.to_owned(),
            signer: std::sync::Arc::new(signer),
            client,
            breaker,
            endpoints,
            endpoint_key,
        })
    }

    /// POSTs `body` as notification `id`, signed, inside a CLIENT span.
    pub async fn send(&self, id: &str, body: &[u8]) -> Result<(), SendError> {
        if let Some(state) = self.endpoints.get(&self.endpoint_key).await? {
            return Err(SendError::Disabled(state.value.disabled_because));
        }
        let span = tracing::info_span!(
            "webhook",
            otel.name = "POST",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = "POST",
            url.full = %self.url,
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
                disabled_because: format!("{} answered 410 Gone", self.url),
            };
            self.endpoints.create(&self.endpoint_key, &state).await?;
            tracing::warn!(url = %self.url, "webhook endpoint gone; disabled");
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
        let cx = span.context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&cx, &mut opentelemetry_http::HeaderInjector(&mut headers));
        });
        let response = self
            .client
            .post(&self.url)
            .headers(headers)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| SendError::Retryable(e.to_string()))?;
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

    #[test]
    fn a_short_secret_is_refused() {
        let short = Secret::new(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 16])
        ));
        assert!(matches!(
            validate(Some("http://x"), Some(&short)),
            Err(WebhookConfigError::WeakSecret)
        ));
    }

    #[test]
    fn a_url_without_a_secret_is_refused() {
        assert!(matches!(
            validate(Some("http://x"), None),
            Err(WebhookConfigError::MissingSecret)
        ));
    }

    #[test]
    fn a_strong_secret_with_or_without_prefix_is_accepted() {
        let encoded = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(
            validate(
                Some("https://x"),
                Some(&Secret::new(format!("whsec_{encoded}")))
            )
            .is_ok()
        );
        assert!(validate(Some("https://x"), Some(&Secret::new(encoded))).is_ok());
    }
}
