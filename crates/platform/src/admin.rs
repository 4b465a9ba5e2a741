//! Admin endpoints (setting stock, redriving dead letters) need `Authorization: Bearer
//! <ADMIN_TOKEN>` when a token is configured: 401 without credentials, 403 with wrong ones.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bus::Secret;

use crate::problem::Problem;

/// Middleware: lets the request through if no token is configured or the bearer token matches.
pub async fn require_token(
    State(token): State<Option<Secret>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
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
