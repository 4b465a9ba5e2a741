//! A customers' identity provider for tests: a real HTTP server on loopback serving a JWKS
//! (`keys/issuer-jwks.json`), and tokens signed with its keys (ES256 `es-1`, RS256 `rs-1`) —
//! or with a key it never published, or with no signature at all — for any claims. It can
//! rotate in a key (`es-2`), stall its answers until released, and say how often it was asked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const JWKS: &str = include_str!("../keys/issuer-jwks.json");
const ES256_ISSUER: &[u8] = include_bytes!("../keys/es256-issuer.pem");
const RS256_ISSUER: &[u8] = include_bytes!("../keys/rs256-issuer.pem");
const ES256_FORGER: &[u8] = include_bytes!("../keys/es256-forger.pem");

/// The `iss` of the provider's tokens.
pub const ISSUER: &str = "https://id.orderflow.test/";
/// The `aud` the order service expects in tests.
pub const AUDIENCE: &str = "orderflow-api";

/// Which key signs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// The provider's ES256 key (`kid` `es-1`).
    Es256,
    /// The provider's RS256 key (`kid` `rs-1`).
    Rs256,
    /// A P-256 key the provider never published, claiming to be `es-1`.
    Forger,
    /// No signature: `alg: none`.
    Unsigned,
    /// The provider's ES256 key under a new `kid`, `es-2`: published only after
    /// [`IdentityProvider::rotate`].
    Rotated,
}

/// The running provider.
#[derive(Debug, Clone)]
pub struct IdentityProvider {
    jwks_url: String,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    fetches: AtomicUsize,
    stalled: AtomicBool,
    release: tokio::sync::Notify,
    rotated: AtomicBool,
    max_age: AtomicU64,
}

/// The JWKS as `state` publishes it.
async fn jwks(state: Arc<State>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    state.fetches.fetch_add(1, Ordering::SeqCst);
    while state.stalled.load(Ordering::SeqCst) {
        let released = state.release.notified();
        if !state.stalled.load(Ordering::SeqCst) {
            break;
        }
        released.await;
    }
    let mut set: Value = serde_json::from_str(JWKS).expect("the test JWKS");
    if state.rotated.load(Ordering::SeqCst) {
        let keys = set["keys"].as_array_mut().expect("keys");
        let mut es2 = keys
            .iter()
            .find(|k| k["kid"] == "es-1")
            .cloned()
            .expect("es-1");
        es2["kid"] = json!("es-2");
        keys.push(es2);
    }
    let mut response = axum::Json(set).into_response();
    let max_age = state.max_age.load(Ordering::SeqCst);
    if max_age > 0 {
        let value = format!("max-age={max_age}")
            .parse()
            .expect("a header value");
        response.headers_mut().insert("cache-control", value);
    }
    response
}

impl IdentityProvider {
    /// Starts serving the JWKS.
    pub async fn start() -> Self {
        let state = Arc::new(State::default());
        let app = Router::new().route(
            "/.well-known/jwks.json",
            get({
                let state = state.clone();
                move || jwks(state.clone())
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind identity provider");
        let jwks_url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("address")
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { jwks_url, state }
    }

    /// The settings that make the order service trust this provider (over http: it is on
    /// loopback).
    pub fn service_env(&self) -> [(&'static str, String); 4] {
        [
            ("AUTH_JWKS_URL", self.jwks_url.clone()),
            ("AUTH_ISSUER", ISSUER.to_owned()),
            ("AUTH_AUDIENCE", AUDIENCE.to_owned()),
            ("AUTH_JWKS_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    /// How many times the JWKS was asked for (answered or not yet).
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// From now on, JWKS requests are held without an answer until [`Self::release`].
    pub fn stall(&self) {
        self.state.stalled.store(true, Ordering::SeqCst);
    }

    /// Answers the held JWKS requests, and the next ones at once.
    pub fn release(&self) {
        self.state.stalled.store(false, Ordering::SeqCst);
        self.state.release.notify_waiters();
    }

    /// Publishes the rotated key `es-2` ([`Signer::Rotated`]) beside the others.
    pub fn rotate(&self) {
        self.state.rotated.store(true, Ordering::SeqCst);
    }

    /// Answers with `Cache-Control: max-age=<seconds>` (none when 0, the default).
    pub fn cache_for(&self, seconds: u64) {
        self.state.max_age.store(seconds, Ordering::SeqCst);
    }

    /// A valid ES256 token for `customer`, for an hour.
    pub fn token(&self, customer: &str) -> String {
        self.token_with(Signer::Es256, self.claims(customer))
    }

    /// Valid claims for `customer` (`iss`, `aud`, `sub`, `iat`, `exp` in an hour), to alter.
    pub fn claims(&self, customer: &str) -> Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": customer, "iat": now, "exp": now + 3600 })
    }

    /// A token with `claims`, signed by `signer`.
    pub fn token_with(&self, signer: Signer, claims: Value) -> String {
        let (alg, kid, pem) = match signer {
            Signer::Es256 => (Algorithm::ES256, "es-1", ES256_ISSUER),
            Signer::Rs256 => (Algorithm::RS256, "rs-1", RS256_ISSUER),
            Signer::Forger => (Algorithm::ES256, "es-1", ES256_FORGER),
            Signer::Rotated => (Algorithm::ES256, "es-2", ES256_ISSUER),
            Signer::Unsigned => {
                let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
                return format!(
                    "{}.{}.",
                    part(json!({ "alg": "none", "typ": "JWT", "kid": "es-1" })),
                    part(claims)
                );
            }
        };
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
            _ => EncodingKey::from_ec_pem(pem),
        }
        .expect("test key");
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &key).expect("sign")
    }
}
