//! Admin endpoints (setting stock, reading and redriving dead letters) need `Authorization:
//! Bearer <ADMIN_TOKEN>`: 401 without credentials, 403 with wrong ones — and 403 for everyone
//! when the service was started without a token. Closed is the default: an operator who forgot
//! the token finds an admin API that says so, not one that anybody can use.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bus::Secret;

use crate::config::{AdminTokenError, HttpArgs};
use crate::problem::Problem;

/// The admin token of a service with admin endpoints, resolved from its settings; says at
/// start when there is none, so an operator learns why the admin API refuses.
pub fn token(http: &HttpArgs) -> Result<Option<Secret>, AdminTokenError> {
    let token = http.admin_credential()?;
    if token.is_none() {
        tracing::warn!(
            "ADMIN_TOKEN (or ADMIN_TOKEN_FILE) is not set: the admin endpoints refuse every request"
        );
    }
    Ok(token)
}

/// Middleware: lets the request through only if a token is configured and the bearer token
/// matches it.
pub async fn require_token(
    State(token): State<Option<Secret>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = token else {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "admin-disabled",
            "Admin endpoints are closed",
        )
        .with_detail("this service was started without ADMIN_TOKEN (or ADMIN_TOKEN_FILE)")
        .into_response();
    };
    match crate::problem::bearer_token(request.headers()) {
        None => {
            let mut response = Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required",
            )
            .with_detail("admin endpoints need `Authorization: Bearer <ADMIN_TOKEN>`")
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
        Some(presented) if constant_time_eq(presented.as_bytes(), expected.expose().as_bytes()) => {
            next.run(request).await
        }
        Some(_) => {
            Problem::new(StatusCode::FORBIDDEN, "forbidden", "Invalid admin token").into_response()
        }
    }
}

/// Compares without returning early, so timing does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
