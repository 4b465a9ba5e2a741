//! A customers' identity provider for tests: a real HTTP server on loopback serving a JWKS
//! (`keys/issuer-jwks.json`), and tokens signed with its keys (ES256 `es-1`, RS256 `rs-1`) —
//! or with a key it never published, or with no signature at all — for any claims.

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
}

/// The running provider.
#[derive(Debug, Clone)]
pub struct IdentityProvider {
    jwks_url: String,
}

impl IdentityProvider {
    /// Starts serving the JWKS.
    pub async fn start() -> Self {
        let app = Router::new().route(
            "/.well-known/jwks.json",
            get(|| async { ([("content-type", "application/json")], JWKS) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind identity provider");
        let jwks_url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("address")
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { jwks_url }
    }

    /// The settings that make the order service trust this provider.
    pub fn service_env(&self) -> [(&'static str, String); 3] {
        [
            ("AUTH_JWKS_URL", self.jwks_url.clone()),
            ("AUTH_ISSUER", ISSUER.to_owned()),
            ("AUTH_AUDIENCE", AUDIENCE.to_owned()),
        ]
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
