//! RFC 9457 problem details: every error a client sees is `application/problem+json` with a
//! stable `type`, a human `title`, the HTTP `status`, and a `detail` that says what to fix —
//! never an internal error text. Extractors here turn every rejection (malformed JSON, wrong
//! types, missing fields, unknown fields, wrong content type, oversized body, bad path or
//! query) into one.

use axum::extract::FromRequest;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every error.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Base URI of problem types; a type's slug is appended.
pub const PROBLEM_BASE: &str = "https://orderflow.dev/problems/";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// URI identifying the problem type.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, and how to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Per-field validation errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds to wait before retrying (sent as `Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<u64>,
    /// Whether to ask for a bearer token (`WWW-Authenticate`, RFC 6750).
    #[serde(skip)]
    pub bearer_challenge: bool,
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON path of the field (`items[0].quantity`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// An error on `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Problem {
    /// A problem of type `slug` with status and title.
    pub fn new(status: StatusCode, slug: &str, title: impl Into<String>) -> Self {
        Self {
            problem_type: format!("{PROBLEM_BASE}{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: None,
            errors: Vec::new(),
            retry_after: None,
            bearer_challenge: false,
        }
    }

    /// Adds the request-specific explanation.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds per-field errors.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// Asks the client to retry after `seconds`.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 422: the request is well-formed but its content is invalid.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Invalid request",
        )
        .with_detail("one or more fields are invalid; see `errors`")
        .with_errors(errors)
    }

    /// 401: no valid customer token; `WWW-Authenticate` says which scheme (RFC 6750).
    pub fn unauthenticated(detail: &str) -> Self {
        let mut problem = Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
        )
        .with_detail(detail);
        problem.bearer_challenge = true;
        problem
    }

    /// 404 for a resource that does not exist.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found").with_detail(what)
    }

    /// 503 while a dependency (NATS) is unavailable; the client should retry.
    pub fn unavailable(retry_after_seconds: u64) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service temporarily unavailable",
        )
        .with_detail("the event bus is unavailable; retry with the same Idempotency-Key")
        .with_retry_after(retry_after_seconds)
    }

    /// 503 while a store the work needs is (nearly) full: nothing was accepted; retry later.
    pub fn store_full() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-full",
            "Storage full",
        )
        .with_detail(
            "the event store is nearly full: no new orders are taken until it has room again; nothing was accepted",
        )
        .with_retry_after(30)
    }

    /// 500 with nothing internal in it; the caller logs the cause.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
        )
        .with_detail("the error was logged; retry later")
    }

    /// The status as a `StatusCode`.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let (retry_after, bearer_challenge) = (self.retry_after, self.bearer_challenge);
        let mut response = (status, axum::Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if bearer_challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            );
        }
        response
    }
}

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let (slug, title) = match status {
            StatusCode::PAYLOAD_TOO_LARGE => ("body-too-large", "Request body too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported-media-type",
                "Expected `Content-Type: application/json`",
            ),
            StatusCode::UNPROCESSABLE_ENTITY => {
                ("invalid-body", "Request body does not match the schema")
            }
            _ => ("malformed-json", "Request body is not valid JSON"),
        };
        Problem::new(status, slug, title).with_detail(rejection.body_text())
    }
}

impl From<PathRejection> for Problem {
    fn from(rejection: PathRejection) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-path",
            "Invalid path parameter",
        )
        .with_detail(rejection.body_text())
    }
}

impl From<QueryRejection> for Problem {
    fn from(rejection: QueryRejection) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            "Invalid query string",
        )
        .with_detail(rejection.body_text())
    }
}

/// A dead letter the admin API was asked to act on, and why it cannot.
impl From<bus::DeadLetterError> for Problem {
    fn from(error: bus::DeadLetterError) -> Self {
        match error {
            bus::DeadLetterError::NotADeadLetter(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not-a-dead-letter",
                "Not a dead letter",
            )
            .with_detail(error.to_string()),
            bus::DeadLetterError::NotRedrivable { .. }
            | bus::DeadLetterError::Unverified { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not-redrivable",
                "This dead letter cannot be redriven",
            )
            .with_detail(error.to_string()),
            bus::DeadLetterError::TooOld { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too-old",
                "This dead letter is too old to be redriven",
            )
            .with_detail(error.to_string()),
            bus::DeadLetterError::Publish(e) => e.into(),
            bus::DeadLetterError::Unavailable(_) => {
                tracing::warn!(error = %error, "DLQ unavailable");
                Problem::unavailable(1)
            }
        }
    }
}

impl From<bus::StoreError> for Problem {
    /// A KV failure: 503 if it may pass, else 500; the cause is logged, never shown.
    fn from(error: bus::StoreError) -> Self {
        if let bus::StoreError::Full { bucket, .. } = &error {
            tracing::warn!(error = %error, "a bucket is full; answering 503 store-full");
            Problem::store_full().with_detail(format!("the {bucket} store is full"))
        } else if error.is_transient() {
            tracing::warn!(error = %error, "KV unavailable; answering 503");
            Problem::unavailable(1)
        } else {
            tracing::error!(error = %error, "KV error");
            Problem::internal()
        }
    }
}

impl From<bus::PublishError> for Problem {
    /// A failed publish: 503 + `Retry-After` while NATS is away, else 500; the cause is logged.
    fn from(error: bus::PublishError) -> Self {
        if error.is_store_full() {
            tracing::warn!(error = %error, "a store is full; answering 503 store-full");
            Problem::store_full()
        } else if error.is_transient() {
            tracing::warn!(error = %error, "publish failed; answering 503");
            Problem::unavailable(1)
        } else {
            tracing::error!(error = %error, "publish refused");
            Problem::internal()
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header, if the request has one.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// `axum::Json` whose rejections are problem JSON.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(Problem))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Path` whose rejections are problem JSON.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Problem))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` whose rejections are problem JSON.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Problem))]
pub struct ApiQuery<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}
