//! Customer authentication for the public API. When configured (`AUTH_JWKS_URL` or
//! `AUTH_JWKS_FILE`, with `AUTH_ISSUER` and `AUTH_AUDIENCE`), a request needs a bearer JWT
//! signed with RS256 or ES256 by a key of that JWKS, issued by that issuer for that audience,
//! unexpired and not before its `nbf`; the customer is its `sub`. Any other algorithm — `none`
//! and the HMAC family included, which would let a public key serve as a shared secret — is
//! refused before a key is looked at. Off, the API takes the customer from the request: for a
//! trusted network only.
//!
//! The keys are a snapshot that requests read without waiting: a JWKS fetch (over https only,
//! unless `AUTH_JWKS_ALLOW_HTTP` says otherwise) runs outside it, one at a time — on a schedule
//! the provider's `Cache-Control: max-age` sets, and when a token names a key the snapshot
//! lacks (a rotation), at most every 10 s — and swaps the snapshot when it succeeds. A slow
//! or failing provider delays only the tokens whose keys are unknown.

use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use events::CustomerId;
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;

use platform::problem::Problem;
use platform::rate_limit::{Budgets, too_many_requests};

/// How customers are authenticated.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// JWKS URL of the customers' identity provider (`https://…/.well-known/jwks.json`); turns
    /// customer authentication on. Without it (or AUTH_JWKS_FILE) the API trusts the customer
    /// id in each request: for a trusted network only.
    #[arg(long, env = "AUTH_JWKS_URL")]
    pub auth_jwks_url: Option<String>,
    /// A JWKS file instead of a URL (read at start).
    #[arg(long, env = "AUTH_JWKS_FILE")]
    pub auth_jwks_file: Option<PathBuf>,
    /// The `iss` every customer token must carry (required with a JWKS).
    #[arg(long, env = "AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// The `aud` every customer token must carry (required with a JWKS).
    #[arg(long, env = "AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// Accept an `http://` AUTH_JWKS_URL (a development provider): the keys would travel
    /// unprotected, and whoever can change them can sign in as any customer.
    #[arg(long, env = "AUTH_JWKS_ALLOW_HTTP")]
    pub auth_jwks_allow_http: bool,
    /// Requests per second one authenticated customer may make, whatever addresses they come
    /// from, bursts up to twice that; beyond it, 429 with `Retry-After`. 0 turns it off.
    #[arg(long, env = "AUTH_CUSTOMER_RATE_LIMIT", default_value_t = 100)]
    pub auth_customer_rate_limit: u32,
}

/// Customer authentication cannot be set up as configured.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// Both key sources were given.
    #[error("set AUTH_JWKS_URL or AUTH_JWKS_FILE, not both")]
    TwoSources,
    /// A JWKS without the claims to check.
    #[error("customer authentication needs AUTH_ISSUER and AUTH_AUDIENCE with its JWKS")]
    MissingClaims,
    /// Issuer or audience without a JWKS.
    #[error("AUTH_ISSUER and AUTH_AUDIENCE need AUTH_JWKS_URL or AUTH_JWKS_FILE")]
    NoKeys,
    /// The URL is not https (or http with AUTH_JWKS_ALLOW_HTTP).
    #[error(
        "AUTH_JWKS_URL must be an https:// URL (http:// only with AUTH_JWKS_ALLOW_HTTP=true, for a development provider)"
    )]
    BadUrl,
    /// The file cannot be read or is not a JWKS.
    #[error("cannot load the JWKS file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Why a token was refused; logged, and never more precise than "invalid" towards the caller.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    Missing,
    /// Not RS256 or ES256, or not a JWT at all.
    #[error("algorithm not accepted or malformed token: {0}")]
    Algorithm(String),
    /// No published key has the token's `kid`.
    #[error("no key {0:?} in the JWKS")]
    UnknownKey(Option<String>),
    /// Signature, expiry, issuer, audience or a required claim.
    #[error("{0}")]
    Invalid(jsonwebtoken::errors::Error),
    /// `sub` is not a customer id.
    #[error("the subject is not a customer id")]
    Subject,
}

/// Verifies customer tokens; cheap to clone.
#[derive(Clone)]
pub struct Customers(Arc<Inner>);

struct Inner {
    url: Option<String>,
    issuer: String,
    audience: String,
    /// What a token must satisfy, per accepted algorithm (same order as [`ALGORITHMS`]).
    validations: [Validation; 2],
    /// The keys requests verify with: read, never waited for.
    keys: RwLock<Arc<Keys>>,
    /// Held while the JWKS is fetched, so one fetch is in flight; when the last one began.
    fetching: Mutex<Option<Instant>>,
    http: reqwest::Client,
    /// Each customer's request budget (`None`: no limit).
    per_customer: Option<Arc<Budgets<String>>>,
}

/// The published keys, parsed once per JWKS load rather than once per request.
#[derive(Default)]
struct Keys {
    usable: Vec<Key>,
    /// How many keys the JWKS published (a token without `kid` needs exactly one).
    published: usize,
}

struct Key {
    kid: Option<String>,
    /// The algorithm it was published for; `None`: any accepted one.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// The keys of `set` a token may be verified with, parsed.
fn usable_keys(set: &JwkSet) -> Vec<Key> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let alg = match jwk.common.key_algorithm {
                None => None,
                Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
                Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
                // Published for an algorithm we do not accept: never this token's key.
                Some(_) => return None,
            };
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            })
        })
        .collect()
}

impl Keys {
    /// The key `kid` names (or the only key, when the token names none), if it is meant for
    /// `alg`.
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&DecodingKey> {
        let key = match kid {
            Some(kid) => self.usable.iter().find(|k| k.kid.as_deref() == Some(kid))?,
            None if self.published == 1 => self.usable.first()?,
            None => return None,
        };
        key.alg.is_none_or(|a| a == alg).then_some(&key.key)
    }
}

impl std::fmt::Debug for Customers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Customers")
            .field("issuer", &self.0.issuer)
            .field("audience", &self.0.audience)
            .finish_non_exhaustive()
    }
}

/// A fetch of the JWKS is not repeated more often than this, whatever tokens arrive.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(10);
/// How often the JWKS is fetched on schedule when the provider says nothing
/// (`Cache-Control: max-age`), and the bounds put on what it says.
const SCHEDULE_DEFAULT: Duration = Duration::from_secs(15 * 60);
const SCHEDULE_BOUNDS: (Duration, Duration) =
    (REFRESH_AT_MOST_EVERY, Duration::from_secs(24 * 3600));
/// The accepted algorithms.
const ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Customers {
    /// The verifier `args` configure, or `None` when customer authentication is off.
    pub async fn from_args(args: &AuthArgs) -> Result<Option<Self>, AuthConfigError> {
        let (issuer, audience) = (args.auth_issuer.clone(), args.auth_audience.clone());
        let set = match (&args.auth_jwks_url, &args.auth_jwks_file) {
            (Some(_), Some(_)) => return Err(AuthConfigError::TwoSources),
            (None, None) if issuer.is_some() || audience.is_some() => {
                return Err(AuthConfigError::NoKeys);
            }
            (None, None) => return Ok(None),
            (Some(url), None)
                if !(url.starts_with("https://")
                    || (args.auth_jwks_allow_http && url.starts_with("http://"))) =>
            {
                return Err(AuthConfigError::BadUrl);
            }
            (Some(_), None) => None,
            (None, Some(path)) => Some(read_file(path)?),
        };
        let (Some(issuer), Some(audience)) = (issuer, audience) else {
            return Err(AuthConfigError::MissingClaims);
        };
        // The JWKS is fetched over HTTPS; one process-wide TLS provider (a no-op when set).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let validations = ALGORITHMS.map(|alg| {
            let mut validation = Validation::new(alg);
            validation.set_issuer(&[&issuer]);
            validation.set_audience(&[&audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.validate_nbf = true;
            validation.leeway = 30;
            validation
        });
        let customers = Self(Arc::new(Inner {
            url: args.auth_jwks_url.clone(),
            issuer,
            audience,
            validations,
            keys: RwLock::new(Arc::new(Keys {
                usable: set.as_ref().map(usable_keys).unwrap_or_default(),
                published: set.as_ref().map_or(0, |set| set.keys.len()),
            })),
            fetching: Mutex::new(None),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                // Whatever the environment says: the provider is reached directly.
                .no_proxy()
                .build()
                .unwrap_or_default(),
            per_customer: Budgets::new(args.auth_customer_rate_limit),
        }));
        // A provider that is down at start must not keep the API down: the keys are fetched
        // again on schedule, and when a token names one we do not have.
        if customers.0.url.is_some() {
            let first = customers.refresh().await.unwrap_or(SCHEDULE_DEFAULT);
            tokio::spawn(refresh_on_schedule(Arc::downgrade(&customers.0), first));
        }
        Ok(Some(customers))
    }

    /// The customer `headers` authenticate.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<CustomerId, Refusal> {
        let token = platform::problem::bearer_token(headers).ok_or(Refusal::Missing)?;
        self.verify(token.trim()).await
    }

    /// The customer `token` names, if it is valid.
    pub async fn verify(&self, token: &str) -> Result<CustomerId, Refusal> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| Refusal::Algorithm(e.to_string()))?;
        let Some(validation) = ALGORITHMS
            .iter()
            .position(|alg| *alg == header.alg)
            .map(|i| &self.0.validations[i])
        else {
            return Err(Refusal::Algorithm(format!("{:?}", header.alg)));
        };
        let kid = header.kid.as_deref();
        let decode = |keys: &Keys| {
            keys.find(kid, header.alg)
                .map(|key| jsonwebtoken::decode::<Claims>(token, key, validation))
        };
        let decoded = match decode(&self.keys()) {
            Some(decoded) => decoded,
            None => {
                // A key we do not know: perhaps rotated in since the last fetch.
                self.refresh().await;
                decode(&self.keys()).ok_or_else(|| Refusal::UnknownKey(header.kid.clone()))?
            }
        };
        let claims = decoded.map_err(Refusal::Invalid)?.claims;
        CustomerId::new(claims.sub).map_err(|_| Refusal::Subject)
    }

    /// The keys as last loaded.
    fn keys(&self) -> Arc<Keys> {
        self.0
            .keys
            .read()
            .map(|keys| keys.clone())
            .unwrap_or_default()
    }

    /// Fetches the JWKS again (from a URL only; waiting for a fetch already in flight, and
    /// not again within [`REFRESH_AT_MOST_EVERY`] of the last) and swaps the keys in. What the
    /// provider's `Cache-Control: max-age` says, if it answered.
    async fn refresh(&self) -> Option<Duration> {
        let url = self.0.url.as_ref()?;
        let mut last = self.0.fetching.lock().await;
        if last.is_some_and(|at| at.elapsed() < REFRESH_AT_MOST_EVERY) {
            return None;
        }
        *last = Some(Instant::now());
        let fetched = async {
            let response = self.0.http.get(url).send().await?.error_for_status()?;
            let max_age = max_age(response.headers());
            Ok::<_, reqwest::Error>((response.json::<JwkSet>().await?, max_age))
        };
        match fetched.await {
            Ok((set, max_age)) => {
                let keys = Keys {
                    usable: usable_keys(&set),
                    published: set.keys.len(),
                };
                tracing::info!(
                    keys = keys.published,
                    usable = keys.usable.len(),
                    "customer JWKS loaded"
                );
                if let Ok(mut current) = self.0.keys.write() {
                    *current = Arc::new(keys);
                }
                Some(max_age.unwrap_or(SCHEDULE_DEFAULT))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the customer JWKS; keeping the keys we have");
                None
            }
        }
    }
}

/// Fetches the JWKS every `every` (then as the provider says) while the verifier lives.
async fn refresh_on_schedule(verifier: Weak<Inner>, mut every: Duration) {
    loop {
        tokio::time::sleep(every.clamp(SCHEDULE_BOUNDS.0, SCHEDULE_BOUNDS.1)).await;
        let Some(inner) = verifier.upgrade() else {
            return;
        };
        every = Customers(inner)
            .refresh()
            .await
            .unwrap_or(REFRESH_AT_MOST_EVERY);
    }
}

/// `max-age` of a `Cache-Control` header (zero for `no-cache`/`no-store`).
fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').map(str::trim).find_map(|directive| {
        if directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store")
        {
            return Some(Duration::ZERO);
        }
        let (name, seconds) = directive.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| seconds.trim().parse().ok().map(Duration::from_secs))?
    })
}

fn read_file(path: &PathBuf) -> Result<JwkSet, AuthConfigError> {
    let error = |reason: String| AuthConfigError::File {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| error(e.to_string()))
}

/// The customer a request is made for: the token's subject when authentication is on; else
/// `claimed`, the id the request itself names (a trusted network's caller).
pub async fn customer(
    customers: Option<&Customers>,
    headers: &HeaderMap,
    claimed: Option<&str>,
) -> Result<Option<CustomerId>, Problem> {
    let Some(customers) = customers else {
        return Ok(None);
    };
    match customers.authenticate(headers).await {
        Ok(customer) => {
            if let Some(Err(wait)) = customers
                .0
                .per_customer
                .as_ref()
                .map(|budgets| budgets.check(&customer.as_str().to_owned()))
            {
                metrics::counter!(telemetry::metric::HTTP_RATE_LIMITED).increment(1);
                return Err(too_many_requests("this customer", wait));
            }
            match claimed {
                Some(claimed) if claimed != customer.as_str() => Err(Problem::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "not-your-customer-id",
                    "The request names another customer",
                )
                .with_detail("leave customer_id out, or give the one your token is for")),
                _ => Ok(Some(customer)),
            }
        }
        Err(refusal) => {
            tracing::info!(reason = %refusal, "customer token refused");
            Err(Problem::unauthenticated(match refusal {
                Refusal::Missing => {
                    "send `Authorization: Bearer <token>` from the identity provider"
                }
                _ => "the bearer token is invalid or expired",
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: Option<&str>, file: Option<&str>, issuer: bool, audience: bool) -> AuthArgs {
        AuthArgs {
            auth_jwks_url: url.map(str::to_owned),
            auth_jwks_file: file.map(PathBuf::from),
            auth_issuer: issuer.then(|| "https://id.example/".to_owned()),
            auth_audience: audience.then(|| "orderflow-api".to_owned()),
            auth_jwks_allow_http: false,
            auth_customer_rate_limit: 0,
        }
    }

    async fn setup(args: AuthArgs) -> Result<bool, String> {
        Customers::from_args(&args)
            .await
            .map(|c| c.is_some())
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn without_a_jwks_authentication_is_off() {
        assert_eq!(setup(args(None, None, false, false)).await, Ok(false));
    }

    #[tokio::test]
    async fn an_issuer_or_audience_without_keys_is_refused() {
        assert!(setup(args(None, None, true, true)).await.is_err());
        assert!(setup(args(None, None, false, true)).await.is_err());
    }

    #[tokio::test]
    async fn a_jwks_needs_both_issuer_and_audience() {
        let url = Some("https://id.example/jwks.json");
        assert!(setup(args(url, None, true, false)).await.is_err());
        assert!(setup(args(url, None, false, true)).await.is_err());
    }

    #[tokio::test]
    async fn a_url_and_a_file_together_or_a_non_http_url_are_refused() {
        let file = Some("keys.json");
        assert!(
            setup(args(Some("https://id.example/jwks.json"), file, true, true))
                .await
                .is_err()
        );
        assert!(
            setup(args(Some("ftp://id.example/jwks.json"), None, true, true))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn an_http_jwks_url_is_refused_unless_allowed_for_development() {
        let http = Some("http://127.0.0.1:9/jwks.json");
        let error = setup(args(http, None, true, true)).await.unwrap_err();
        assert!(error.contains("AUTH_JWKS_ALLOW_HTTP"), "{error}");
        let allowed = AuthArgs {
            auth_jwks_allow_http: true,
            ..args(http, None, true, true)
        };
        assert_eq!(setup(allowed).await, Ok(true));
    }

    #[test]
    fn the_schedule_follows_the_providers_max_age() {
        let headers = |value: &str| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::CACHE_CONTROL, value.parse().unwrap());
            headers
        };
        assert_eq!(
            max_age(&headers("public, max-age=600")),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age(&headers("no-store")), Some(Duration::ZERO));
        assert_eq!(max_age(&headers("public")), None);
        assert_eq!(max_age(&reqwest::header::HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn a_jwks_file_is_read_at_start() {
        let jwks = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../crates/testkit/keys/issuer-jwks.json"
        );
        assert_eq!(setup(args(None, Some(jwks), true, true)).await, Ok(true));
        let error = setup(args(None, Some("/nonexistent/jwks.json"), true, true)).await;
        assert!(error.unwrap_err().contains("/nonexistent/jwks.json"));
    }

    #[tokio::test]
    async fn an_unsigned_or_hmac_token_is_refused_before_any_key_is_looked_at() {
        let jwks = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../crates/testkit/keys/issuer-jwks.json"
        );
        let Ok(Some(customers)) = Customers::from_args(&args(None, Some(jwks), true, true)).await
        else {
            panic!("no verifier");
        };
        // {"alg":"none"} and {"alg":"HS256","kid":"es-1"}, each with a payload and a signature.
        for token in [
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
            "eyJhbGciOiJIUzI1NiIsImtpZCI6ImVzLTEifQ.eyJzdWIiOiJ4In0.c2ln",
        ] {
            assert!(matches!(
                customers.verify(token).await,
                Err(Refusal::Algorithm(_))
            ));
        }
    }
}
