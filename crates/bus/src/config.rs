//! How to reach NATS and how hard to try: connection, auth, TLS, and the publish retry and
//! circuit-breaker policy. Plain data validated once; the services fill it from the environment.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A secret string (password, token, seed) that never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: call only where it is handed to the library that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Why a secret may not be used, if it may not: a value shipped as a demo or placeholder
    /// (anyone can read it where it was shipped), or one with too little entropy to resist
    /// guessing — estimated generously as its length times log2 of its distinct characters, so
    /// only the plainly weak are refused (32 random hex digits carry 128 bits; 16 carry 64).
    pub fn weakness(&self) -> Option<&'static str> {
        let secret = self.0.as_str();
        const DEMO_MARKERS: [&str; 5] =
            ["change-me", "changeme", "change_me", "replace-me", "demo-"];
        const LEAST_BITS: f64 = 64.0;
        let lower = secret.to_lowercase();
        if DEMO_MARKERS.iter().any(|marker| lower.contains(marker)) {
            return Some("it is a demo or placeholder value");
        }
        let distinct = secret
            .chars()
            .collect::<std::collections::HashSet<_>>()
            .len();
        let bits = secret.chars().count() as f64 * (distinct.max(1) as f64).log2();
        (bits < LEAST_BITS).then_some("it has too little entropy (use 16 or more random bytes)")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// How the connection authenticates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// `NATS_USER` / `NATS_PASSWORD`.
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// `NATS_TOKEN`.
    Token(Secret),
    /// `NATS_NKEY_SEED`: an NKey user seed (`SU...`).
    NKeySeed(Secret),
    /// `NATS_CREDS`: a `.creds` file (JWT + NKey seed).
    CredsFile(PathBuf),
}

impl NatsAuth {
    /// Picks the one auth method the given settings name, refusing ambiguous or half settings.
    pub fn from_settings(
        user: Option<String>,
        password: Option<Secret>,
        token: Option<Secret>,
        nkey_seed: Option<Secret>,
        creds: Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        let mut chosen = Vec::new();
        match (user, password) {
            (Some(user), Some(password)) => chosen.push(Self::UserPassword { user, password }),
            (None, None) => {}
            _ => return Err(ConfigError::HalfCredentials),
        }
        chosen.extend(token.map(Self::Token));
        chosen.extend(nkey_seed.map(Self::NKeySeed));
        chosen.extend(creds.map(Self::CredsFile));
        match chosen.len() {
            0 => Ok(Self::None),
            1 => Ok(chosen.remove(0)),
            _ => Err(ConfigError::SeveralAuthMethods),
        }
    }
}

/// TLS settings; any of them set turns TLS on (`NATS_TLS_CA`, `NATS_TLS_CERT`, `NATS_TLS_KEY`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// CA bundle that signed the server certificate.
    pub ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (needs `key`).
    pub cert: Option<PathBuf>,
    /// Client private key for mutual TLS (needs `cert`).
    pub key: Option<PathBuf>,
}

impl NatsTls {
    /// Whether TLS is required.
    pub fn enabled(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

/// How publishes are retried and when the circuit breaker opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishPolicy {
    /// Give up retrying a publish after this long in total.
    pub deadline: Duration,
    /// First retry delay; it doubles (with jitter) up to `max_delay`.
    pub min_delay: Duration,
    /// Longest wait between two attempts.
    pub max_delay: Duration,
    /// How long one attempt waits for its PubAck.
    pub ack_timeout: Duration,
    /// Consecutive failed attempts that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open at first (it doubles while failures continue).
    pub breaker_open_for: Duration,
}

impl Default for PublishPolicy {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(10),
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            ack_timeout: Duration::from_secs(5),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(2),
        }
    }
}

/// Everything [`crate::Bus::connect`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// One or more server URLs, comma separated (`NATS_URL`).
    pub url: String,
    /// Connection name shown by the server (the service name).
    pub name: String,
    /// Credentials.
    pub auth: NatsAuth,
    /// TLS.
    pub tls: NatsTls,
    /// Publish retries and circuit breaker.
    pub publish: PublishPolicy,
    /// Where the JetStream API is reached: `$JS.API` in the account that holds the streams, or
    /// the prefix under which a service's own account imports it (`NATS_JS_API_PREFIX`).
    pub api_prefix: String,
}

/// The JetStream API's own prefix.
pub const DEFAULT_API_PREFIX: &str = "$JS.API";

impl BusConfig {
    /// Where this connection receives replies ([`events::names::inbox_prefix`]).
    pub fn inbox_prefix(&self) -> String {
        events::names::inbox_prefix(&self.name)
    }

    /// Local defaults: `nats://127.0.0.1:4222`, no auth, no TLS.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            name: name.into(),
            auth: NatsAuth::None,
            tls: NatsTls::default(),
            publish: PublishPolicy::default(),
            api_prefix: DEFAULT_API_PREFIX.to_owned(),
        }
    }

    /// Sets the server URL(s).
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Checks the settings hang together, so start-up fails with a clear message.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.url.trim().is_empty() {
            return Err(ConfigError::EmptyUrl);
        }
        let token = |t: &str| !t.is_empty() && !t.contains(['*', '>', ' ']);
        if !self.api_prefix.split('.').all(token) {
            return Err(ConfigError::ApiPrefix);
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::HalfClientCertificate);
        }
        let p = &self.publish;
        if p.min_delay.is_zero() || p.max_delay < p.min_delay || p.deadline < p.min_delay {
            return Err(ConfigError::PublishPolicy(
                "need 0 < min_delay <= max_delay and min_delay <= deadline",
            ));
        }
        if p.breaker_failures == 0 || p.breaker_open_for.is_zero() || p.ack_timeout.is_zero() {
            return Err(ConfigError::PublishPolicy(
                "breaker_failures, breaker_open_for and ack_timeout must be positive",
            ));
        }
        Ok(())
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `NATS_URL` is empty.
    #[error("NATS_URL is empty")]
    EmptyUrl,
    /// Only one of user and password is set.
    #[error("NATS_USER and NATS_PASSWORD must be set together")]
    HalfCredentials,
    /// More than one auth method is set.
    #[error("set only one of NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY_SEED, NATS_CREDS")]
    SeveralAuthMethods,
    /// Only one of client certificate and key is set.
    #[error("NATS_TLS_CERT and NATS_TLS_KEY must be set together")]
    HalfClientCertificate,
    /// The JetStream API prefix is not a plain subject.
    #[error("NATS_JS_API_PREFIX must be a subject without wildcards (such as JS.ORDERFLOW.API)")]
    ApiPrefix,
    /// The publish policy is inconsistent.
    #[error("invalid publish policy: {0}")]
    PublishPolicy(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connection_receives_replies_under_its_own_inbox_prefix() {
        assert_eq!(
            BusConfig::new("order-service").inbox_prefix(),
            "_INBOX_order-service"
        );
        // Whatever the name, the prefix is one subject token.
        assert_eq!(BusConfig::new("a.b >*").inbox_prefix(), "_INBOX_a_b___");
    }

    #[test]
    fn no_credentials_means_no_auth() {
        assert_eq!(
            NatsAuth::from_settings(None, None, None, None, None),
            Ok(NatsAuth::None)
        );
    }

    #[test]
    fn a_user_without_a_password_is_refused() {
        let err = NatsAuth::from_settings(Some("u".into()), None, None, None, None).unwrap_err();
        assert_eq!(err, ConfigError::HalfCredentials);
    }

    #[test]
    fn two_auth_methods_are_refused() {
        let err = NatsAuth::from_settings(
            None,
            None,
            Some(Secret::new("t")),
            Some(Secret::new("SU")),
            None,
        )
        .unwrap_err();
        assert_eq!(err, ConfigError::SeveralAuthMethods);
    }

    #[test]
    fn demo_values_and_guessable_secrets_are_refused_and_random_ones_taken() {
        for weak in [
            "demo-admin-token-change-me",
            "demo-order-nats-password-change-me",
            "aaaaaaaaaaaaaaaaaaaaaaaa",
            "abababababababababab",
            "order-secret-1",
        ] {
            assert!(Secret::new(weak).weakness().is_some(), "{weak}");
        }
        for strong in [
            "0123456789abcdef",
            "5f0c2a9e7d41b3c86a2e9f10d7c4b8a3",
            "testkit-admin-token-0123456789",
        ] {
            assert_eq!(Secret::new(strong).weakness(), None, "{strong}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let auth = NatsAuth::Token(Secret::new("hunter2"));
        assert!(!format!("{auth:?}").contains("hunter2"));
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let mut config = BusConfig::new("t");
        config.tls.cert = Some("c.pem".into());
        assert_eq!(config.validate(), Err(ConfigError::HalfClientCertificate));
    }
}
