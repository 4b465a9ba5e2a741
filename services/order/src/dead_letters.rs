//! Dead letters as an operator feature, behind the admin token: list them, inspect one, and
//! redrive — one, or the oldest N at a bounded rate so a redrive cannot flood the consumers it
//! feeds. A redriven letter is published again on its original subject — only if it is a true
//! copy of a message still in its stream, with that message's event and trace headers — and
//! removed from the DLQ; repeating a redrive is harmless. Two exceptions, both because a
//! published copy reaches *every* consumer of its subject: a letter whose order is older than
//! most of the hot window is refused (the others would take it for new), and the letters of a
//! consumer this service takes back itself ([`Reprocess`]) go only to it.

use std::future::Future;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use bus::{Bus, DeadLetter, Secret, StoredDeadLetter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::{IntoParams, ToSchema};

use platform::openapi::{integer_schema, parameter};
use platform::problem::{ApiPath, ApiQuery, Problem};

/// Most letters one list or bulk redrive handles.
pub const MAX_BATCH: usize = 1000;

/// A consumer of this service whose dead letters it takes back in-process on redrive, instead
/// of publishing them again where every other consumer of the subject would see them too.
pub trait Reprocess: Send + Sync + 'static {
    /// Whether the letters `consumer` gave up are taken back here.
    fn handles(&self, consumer: &str) -> bool;

    /// Handles the letter's event as its consumer would have; `Ok` once it is done (the letter
    /// is then removed).
    fn reprocess(&self, letter: DeadLetter) -> BoxedReprocess<'_>;
}

/// What [`Reprocess::reprocess`] returns.
pub type BoxedReprocess<'a> = Pin<Box<dyn Future<Output = Result<(), Problem>> + Send + 'a>>;

/// How this service redrives: the bus, the hot window (events older than most of it are not
/// published again) and the consumers it takes letters back for.
#[derive(Clone)]
pub struct Redrive {
    bus: Bus,
    hot_window: Option<Duration>,
    local: Option<Arc<dyn Reprocess>>,
}

impl std::fmt::Debug for Redrive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redrive")
            .field("hot_window", &self.hot_window)
            .field("local", &self.local.is_some())
            .finish_non_exhaustive()
    }
}

impl Redrive {
    /// Redrives on `bus`, refusing events older than 90% of `hot_window` (zero: none).
    pub fn new(bus: Bus, hot_window: Duration) -> Self {
        Self {
            bus,
            hot_window: (!hot_window.is_zero()).then_some(hot_window),
            local: None,
        }
    }

    /// Takes the letters of the consumers `local` handles back in-process.
    pub fn taking_back(self, local: impl Reprocess) -> Self {
        Self {
            local: Some(Arc::new(local)),
            ..self
        }
    }

    /// Redrives letter `sequence`; `false` if it is no longer there.
    async fn one(&self, sequence: u64) -> Result<bool, Problem> {
        let Some(stored) = self.bus.dead_letter(sequence).await? else {
            return Ok(false);
        };
        if let Some(local) = &self.local
            && local.handles(&stored.letter.consumer)
        {
            // Claiming one of our consumers is not enough: another service may publish
            // such headers under its own consumers' subjects. Taken back only if it was
            // stored under that consumer's own subject, or is a true copy of its original
            // (letters stored before subjects named their consumer); else neither taken
            // back nor published.
            if !stored.is_from_its_consumer() && !self.bus.is_verified(&stored).await? {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "not-redrivable",
                    "This dead letter cannot be redriven",
                )
                .with_detail(format!(
                    "DLQ message {sequence} claims consumer {:?} but was not published under \
                         its subject, and is no copy of a message still in its stream: it is \
                         kept for inspection",
                    stored.letter.consumer
                )));
            }
            local.reprocess(stored.letter).await?;
            self.bus.discard_dead_letter(sequence).await?;
            tracing::info!(sequence, "dead letter taken back by its consumer");
            return Ok(true);
        }
        self.bus.redrive_stored(stored, self.hot_window).await?;
        Ok(true)
    }
}

/// A dead letter as the admin API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterView {
    /// Its id: the sequence in the `DLQ` stream.
    pub dlq_sequence: u64,
    /// The subject it was first published on.
    pub subject: String,
    /// The stream and sequence it came from.
    pub stream: String,
    /// Sequence in that stream.
    pub stream_sequence: u64,
    /// The consumer that gave up.
    pub consumer: String,
    /// Deliveries made.
    pub deliveries: u64,
    /// `permanent`, `retries_exhausted` or `ack_timeout`.
    pub reason: String,
    /// The error.
    pub error: String,
    /// When it was dead-lettered.
    pub time: String,
    /// The payload: JSON when it parses, else its text (lossy).
    #[schema(value_type = Value)]
    pub payload: Value,
}

impl From<StoredDeadLetter> for DeadLetterView {
    fn from(stored: StoredDeadLetter) -> Self {
        let letter = stored.letter;
        let payload = serde_json::from_slice(&letter.payload).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&letter.payload).into_owned())
        });
        Self {
            dlq_sequence: stored.dlq_sequence,
            subject: letter.subject,
            stream: letter.stream,
            stream_sequence: letter.sequence,
            consumer: letter.consumer,
            deliveries: letter.deliveries,
            reason: letter.reason.as_str().to_owned(),
            error: letter.error,
            time: letter.time,
            payload,
        }
    }
}

/// A page of dead letters.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterPage {
    /// Oldest first.
    pub dead_letters: Vec<DeadLetterView>,
    /// Pass as `after` for the next page.
    pub next_after: Option<u64>,
}

/// Query of the list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only letters after this DLQ sequence.
    pub after: Option<u64>,
    /// Page size, 1–1000 (default 50).
    pub limit: Option<usize>,
}

/// The highest DLQ sequence the API takes: 2^53, exact in every JSON number and far beyond
/// any stream's.
const MAX_SEQUENCE: u64 = 1 << 53;

impl IntoParams for ListQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            parameter(
                "after",
                ParameterIn::Query,
                false,
                "Only letters after this DLQ sequence",
                integer_schema(0, MAX_SEQUENCE),
            ),
            parameter(
                "limit",
                ParameterIn::Query,
                false,
                "Page size (default 50)",
                batch_schema(),
            ),
        ]
    }
}

/// Query of a bulk redrive.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveQuery {
    /// How many of the oldest letters, 1–1000 (default 100).
    pub max: Option<usize>,
    /// Letters per second, 1–1000 (default 20).
    pub per_second: Option<u32>,
}

impl IntoParams for RedriveQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            parameter(
                "max",
                ParameterIn::Query,
                false,
                "How many of the oldest letters (default 100)",
                batch_schema(),
            ),
            parameter(
                "per_second",
                ParameterIn::Query,
                false,
                "Letters per second (default 20)",
                batch_schema(),
            ),
        ]
    }
}

fn batch_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    integer_schema(1, MAX_BATCH as u64)
}

/// What a redrive did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Redriven {
    /// Letters published again and removed from the DLQ.
    pub redriven: usize,
    /// Letters left in the DLQ that cannot be redriven: not a true copy of a message of their
    /// stream (forged, or its original is gone), or of an order older than most of the hot
    /// window.
    pub not_redrivable: usize,
    /// Letters left in the DLQ for now: what they need did not answer (retry the redrive).
    pub retry_later: usize,
}

/// The dead-letter admin routes, behind `admin_token` when one is set.
pub fn routes(redrive: Redrive, admin_token: Option<Secret>) -> Router {
    Router::new()
        .route("/admin/dead-letters", get(list))
        .route("/admin/dead-letters/redrive", post(redrive_oldest))
        .route("/admin/dead-letters/{sequence}", get(inspect))
        .route("/admin/dead-letters/{sequence}/redrive", post(redrive_one))
        .route_layer(middleware::from_fn_with_state(
            admin_token,
            platform::admin::require_token,
        ))
        .with_state(redrive)
}

/// A batch size: `value` or `default`, 1 to [`MAX_BATCH`].
fn bounded(value: Option<usize>, default: usize, field: &str) -> Result<usize, Problem> {
    within(value.unwrap_or(default), 1..=MAX_BATCH, field)
}

/// `value`, if `range` holds it; else a 422 naming `field`.
fn within<T>(value: T, range: RangeInclusive<T>, field: &str) -> Result<T, Problem>
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(Problem::validation(vec![
            platform::problem::FieldError::new(
                field,
                format!("must be {} to {}", range.start(), range.end()),
            ),
        ]))
    }
}

/// List dead letters, oldest first.
#[utoipa::path(get, path = "/admin/dead-letters", tag = "admin", operation_id = "list_dead_letters",
    params(ListQuery), security(("bearer" = [])),
    responses((status = 200, description = "A page of dead letters", body = DeadLetterPage)))]
async fn list(
    State(Redrive { bus, .. }): State<Redrive>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<axum::Json<DeadLetterPage>, Problem> {
    let limit = bounded(query.limit, 50, "limit")?;
    let after = within(query.after.unwrap_or(0), 0..=MAX_SEQUENCE, "after")?;
    let letters = bus.dead_letters(after, limit).await?;
    let next_after = (letters.len() == limit)
        .then(|| letters.last().map(|l| l.dlq_sequence))
        .flatten();
    Ok(axum::Json(DeadLetterPage {
        dead_letters: letters.into_iter().map(Into::into).collect(),
        next_after,
    }))
}

/// Inspect one dead letter.
#[utoipa::path(get, path = "/admin/dead-letters/{sequence}", tag = "admin", operation_id = "get_dead_letter", security(("bearer" = [])),
    params(("sequence" = u64, Path, minimum = 1, description = "DLQ sequence")),
    responses((status = 200, description = "The dead letter", body = DeadLetterView),
              (status = 404, description = "No such dead letter (or already redriven)")))]
async fn inspect(
    State(Redrive { bus, .. }): State<Redrive>,
    ApiPath(sequence): ApiPath<u64>,
) -> Result<axum::Json<DeadLetterView>, Problem> {
    bus.dead_letter(sequence)
        .await?
        .map(|l| axum::Json(l.into()))
        .ok_or_else(|| Problem::not_found(format!("no dead letter {sequence}")))
}

/// Redrive one dead letter.
#[utoipa::path(post, path = "/admin/dead-letters/{sequence}/redrive", tag = "admin", operation_id = "redrive_dead_letter", security(("bearer" = [])),
    params(("sequence" = u64, Path, minimum = 1, description = "DLQ sequence")),
    responses((status = 200, description = "Published again", body = Redriven),
              (status = 404, description = "No such dead letter (or already redriven)"),
              (status = 422, description = "Not a dead letter, not a true copy of a message still in its stream, or of an order older than most of the hot window")))]
async fn redrive_one(
    State(redrive): State<Redrive>,
    ApiPath(sequence): ApiPath<u64>,
) -> Result<axum::Json<Redriven>, Problem> {
    if redrive.one(sequence).await? {
        Ok(axum::Json(Redriven {
            redriven: 1,
            not_redrivable: 0,
            retry_later: 0,
        }))
    } else {
        Err(Problem::not_found(format!(
            "no dead letter {sequence} (already redriven?)"
        )))
    }
}

/// Redrive the oldest dead letters at a bounded rate.
#[utoipa::path(post, path = "/admin/dead-letters/redrive", tag = "admin", operation_id = "redrive_dead_letters",
    params(RedriveQuery), security(("bearer" = [])),
    responses((status = 200, description = "How many were published again", body = Redriven)))]
async fn redrive_oldest(
    State(redrive): State<Redrive>,
    ApiQuery(query): ApiQuery<RedriveQuery>,
) -> Result<axum::Json<Redriven>, Problem> {
    let max = bounded(query.max, 100, "max")?;
    let per_second = bounded(query.per_second.map(|n| n as usize), 20, "per_second")?;
    let mut pace = tokio::time::interval(Duration::from_secs(1) / per_second as u32);
    let (mut redriven, mut not_redrivable, mut retry_later) = (0, 0, 0);
    for stored in redrive.bus.dead_letters(0, max).await? {
        pace.tick().await;
        // One letter that cannot go, or not yet, must not block the ones after it.
        match redrive.one(stored.dlq_sequence).await {
            Ok(true) => redriven += 1,
            Ok(false) => {}
            Err(problem) if problem.status_code() == StatusCode::UNPROCESSABLE_ENTITY => {
                not_redrivable += 1
            }
            Err(problem) if problem.status_code() == StatusCode::SERVICE_UNAVAILABLE => {
                retry_later += 1
            }
            Err(problem) => return Err(problem),
        }
    }
    Ok(axum::Json(Redriven {
        redriven,
        not_redrivable,
        retry_later,
    }))
}

/// The OpenAPI document of the dead-letter routes, merged into the serving service's.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    paths(list, inspect, redrive_one, redrive_oldest),
    components(schemas(DeadLetterView, DeadLetterPage, Redriven))
)]
pub struct ApiDoc;
