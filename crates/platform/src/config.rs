//! Settings shared by every service, read from the environment (or flags) by clap, with
//! working local defaults and `--help` listing each variable. Secrets are wrapped on parse so
//! that `Debug` output and logs never show them.

use std::path::PathBuf;
use std::time::Duration;

use bus::{BusConfig, ConfigError, NatsAuth, NatsTls, Secret, StreamSettings};
use events::Partitions;

/// clap value parser: wraps a secret so it never prints.
pub fn secret(value: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(value))
}

/// clap value parser: a partition count.
pub fn partitions(value: &str) -> Result<Partitions, String> {
    let count = value
        .parse::<u16>()
        .map_err(|_| format!("{value:?} is not a number of partitions"))?;
    Partitions::new(count).map_err(|e| e.to_string())
}

/// clap value parser: an IP network (`10.0.0.0/8`), or one address (`127.0.0.1`).
pub fn network(value: &str) -> Result<ipnet::IpNet, String> {
    let value = value.trim();
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{value:?} is not an IP network (such as 10.0.0.0/8) or address"))
}

/// clap value parser: the hot window, a duration such as `24h` or `90m`; `0` keeps every event.
pub fn hot_window(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    if value == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(value)
        .map_err(|e| format!("{value:?} is not a duration such as `24h` or `90m` (or 0): {e}"))
}

/// clap value parser: a size in bytes as people write it (`2GiB`, `512MiB`, `65536`).
pub fn bytes(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("{value:?} is not a size such as `2GiB` or `512MiB`: {e}"))
}

/// clap value parser: a share, more than 0 and less than 1 (`0.9`).
pub fn share(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(share) if share > 0.0 && share < 1.0 => Ok(share),
        _ => Err(format!(
            "{value:?} is not a share between 0 and 1 (such as 0.9)"
        )),
    }
}

/// clap value parser: a duration given in milliseconds.
pub fn millis(value: &str) -> Result<Duration, String> {
    value
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| format!("{value:?} is not a number of milliseconds: {e}"))
}

/// How to reach NATS and how to shape the streams.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// User for user/password auth (with NATS_PASSWORD).
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,
    /// Password for user/password auth (with NATS_USER).
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true, value_parser = secret)]
    pub nats_password: Option<Secret>,
    /// File holding the password (a Docker or Kubernetes secret), instead of NATS_PASSWORD.
    #[arg(long, env = "NATS_PASSWORD_FILE")]
    pub nats_password_file: Option<PathBuf>,
    /// Token auth.
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true, value_parser = secret)]
    pub nats_token: Option<Secret>,
    /// NKey user seed auth.
    #[arg(long, env = "NATS_NKEY_SEED", hide_env_values = true, value_parser = secret)]
    pub nats_nkey_seed: Option<Secret>,
    /// Credentials file (JWT + NKey seed).
    #[arg(long, env = "NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// CA bundle of the server certificate; turns TLS on.
    #[arg(long, env = "NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (with NATS_TLS_KEY).
    #[arg(long, env = "NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    /// Client key for mutual TLS (with NATS_TLS_CERT).
    #[arg(long, env = "NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
    /// Where this connection reaches the JetStream API: `$JS.API` in the account that holds
    /// the streams; the prefix its own account imports the API under when each service has
    /// an account of its own (`JS.ORDERFLOW.API`, deploy/nats/permissions.conf).
    #[arg(long, env = "NATS_JS_API_PREFIX", default_value = bus::DEFAULT_API_PREFIX)]
    pub nats_js_api_prefix: String,
    /// Replicas of every stream and bucket: 1 locally, 3 in a production cluster.
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// Partitions each event stream is split into (1–64); every service of a deployment must
    /// agree on it. 1 keeps one stream per domain (`ORDERS`, …).
    #[arg(long, env = "STREAM_PARTITIONS", default_value = "1", value_parser = partitions)]
    pub stream_partitions: Partitions,
    /// How long NATS waits for a consumer to settle a message before redelivering it, ms.
    #[arg(long, env = "CONSUMER_ACK_WAIT_MS", default_value = "30000", value_parser = millis)]
    pub consumer_ack_wait: Duration,
    /// Longest a handler may work on one delivery, ms: progress acks keep its message that
    /// long, past the ack window, before the attempt counts as failed. The hot window must
    /// outlast it on every delivery.
    #[arg(long, env = "CONSUMER_HANDLER_TIMEOUT_MS", default_value = "60000", value_parser = millis)]
    pub consumer_handler_timeout: Duration,
    /// Deliveries of a message before it is dead-lettered (the default retries a failing
    /// message for about 6.5 minutes).
    #[arg(long, env = "CONSUMER_MAX_DELIVER", default_value_t = bus::DEFAULT_MAX_DELIVER)]
    pub consumer_max_deliver: i64,
    /// How long the event streams keep each event (`24h`, `90m`): NATS memory grows with order
    /// rate × window, history lives in the archive. It must outlast every retry of a message
    /// and the longest outage of a consumer you mean to ride out. 0 keeps every event in NATS
    /// for ever (no archive needed; memory grows with history).
    #[arg(long, env = "HOT_WINDOW", default_value = "24h", value_parser = hot_window)]
    pub hot_window: Duration,
    /// How long nats-server remembers a `Nats-Msg-Id` to drop a repeated publish (`2m`; at
    /// least 15 s, a publisher's retries; at most the hot window). It holds an entry per event
    /// for that long: a shorter window costs nats-server less memory at high rates.
    #[arg(long, env = "DEDUPE_WINDOW", default_value = "2m", value_parser = hot_window)]
    pub dedupe_window: Duration,
    /// Most bytes each event domain's streams hold together (split among its partitions): at
    /// the bound new events are refused, none stored is dropped. With the defaults below, about
    /// 8 GiB in all — keep the sum inside NATS's JetStream store.
    #[arg(long, env = "EVENTS_MAX_BYTES", default_value = "2GiB", value_parser = bytes)]
    pub events_max_bytes: u64,
    /// Most bytes of dead letters kept (`DLQ`).
    #[arg(long, env = "DLQ_MAX_BYTES", default_value = "1GiB", value_parser = bytes)]
    pub dlq_max_bytes: u64,
    /// How long dead letters are kept (`DLQ`, and the max-deliveries advisories).
    #[arg(long, env = "DLQ_MAX_AGE", default_value = "30days", value_parser = hot_window)]
    pub dlq_max_age: Duration,
    /// Most bytes of captured max-deliveries advisories (`ADVISORIES`).
    #[arg(long, env = "ADVISORIES_MAX_BYTES", default_value = "128MiB", value_parser = bytes)]
    pub advisories_max_bytes: u64,
    /// Most bytes of `Idempotency-Key` claims (KV `idempotency`; they expire).
    #[arg(long, env = "IDEMPOTENCY_MAX_BYTES", default_value = "512MiB", value_parser = bytes)]
    pub idempotency_max_bytes: u64,
    /// Most bytes of stock records (KV `stock`, one per SKU).
    #[arg(long, env = "STOCK_MAX_BYTES", default_value = "256MiB", value_parser = bytes)]
    pub stock_max_bytes: u64,
    /// Most bytes of disabled webhook endpoints (KV `webhook_endpoints`).
    #[arg(long, env = "WEBHOOK_ENDPOINTS_MAX_BYTES", default_value = "1MiB", value_parser = bytes)]
    pub webhook_endpoints_max_bytes: u64,
    /// Above this share of any byte bound the saga writes to, order-service refuses new orders
    /// (503 `store-full`, `Retry-After`): the rest is room for the orders already accepted.
    #[arg(long, env = "ADMISSION_LIMIT", default_value = "0.9", value_parser = share)]
    pub admission_limit: f64,
}

impl NatsArgs {
    /// The bus configuration for the connection named `service`.
    pub fn bus_config(&self, service: &str) -> Result<BusConfig, NatsConfigError> {
        let password =
            match (&self.nats_password, &self.nats_password_file) {
                (Some(_), Some(_)) => return Err(NatsConfigError::BothPasswords),
                (Some(password), None) => Some(password.clone()),
                (None, Some(path)) => Some(read_secret_file(path).map_err(|source| {
                    NatsConfigError::PasswordFile {
                        path: path.clone(),
                        source,
                    }
                })?),
                (None, None) => None,
            };
        for (setting, secret) in [
            ("NATS_PASSWORD", &password),
            ("NATS_TOKEN", &self.nats_token),
        ] {
            if let Some(why) = secret.as_ref().and_then(Secret::weakness) {
                return Err(NatsConfigError::Weak { setting, why });
            }
        }
        let auth = NatsAuth::from_settings(
            self.nats_user.clone(),
            password,
            self.nats_token.clone(),
            self.nats_nkey_seed.clone(),
            self.nats_creds.clone(),
        )?;
        let config = BusConfig {
            auth,
            tls: NatsTls {
                ca: self.nats_tls_ca.clone(),
                cert: self.nats_tls_cert.clone(),
                key: self.nats_tls_key.clone(),
            },
            api_prefix: self.nats_js_api_prefix.clone(),
            ..BusConfig::new(service).with_url(&self.nats_url)
        };
        config.validate()?;
        Ok(config)
    }

    /// `spec` with the configured ack window and delivery limit (progress acks at a third of
    /// the window, so a long handler never loses its message to a redelivery).
    pub fn tune(&self, spec: bus::ConsumerSpec) -> bus::ConsumerSpec {
        bus::ConsumerSpec {
            ack_wait: self.consumer_ack_wait,
            progress_every: self.consumer_ack_wait / 3,
            handler_timeout: self.consumer_handler_timeout,
            max_deliver: self.consumer_max_deliver,
            ..spec
        }
    }

    /// Each of `specs` [tuned](NatsArgs::tune): a service's consumers as it runs them, and as
    /// the provisioning step creates them.
    pub fn tune_all(&self, specs: Vec<bus::ConsumerSpec>) -> Vec<bus::ConsumerSpec> {
        specs.into_iter().map(|spec| self.tune(spec)).collect()
    }

    /// Stream settings with the configured replicas, partitions and hot window, or why the
    /// window is too short: a message must stay in its stream through every delivery a
    /// consumer may make of it, or it expires while still being retried and is lost.
    pub fn stream_settings(&self) -> Result<StreamSettings, NatsConfigError> {
        let defaults = StreamSettings::default();
        let window = self.hot_window;
        if !window.is_zero() {
            let spec = self.tune(bus::ConsumerSpec::new("-", "-", &[]));
            let deliveries = u32::try_from(spec.max_deliver).unwrap_or(u32::MAX);
            // A delivery stays pending for the ack window if its handler dies, for the handler
            // timeout if it works on (progress acks extend the window meanwhile).
            let per_delivery = spec.ack_wait.max(spec.handler_timeout);
            let needed = per_delivery.saturating_mul(deliveries) + spec.retry_budget();
            // Within it, `Nats-Msg-Id` dedupe must outlast a publisher's retries.
            let needed = needed.max(MIN_DEDUPE_WINDOW);
            if window < needed {
                return Err(NatsConfigError::HotWindow { window, needed });
            }
        }
        if self.dedupe_window < MIN_DEDUPE_WINDOW {
            return Err(NatsConfigError::DedupeWindow(self.dedupe_window));
        }
        let bounds = bus::Bounds {
            events: self.events_max_bytes,
            dlq: self.dlq_max_bytes,
            advisories: self.advisories_max_bytes,
            idempotency: self.idempotency_max_bytes,
            stock: self.stock_max_bytes,
            webhook_endpoints: self.webhook_endpoints_max_bytes,
            admission: self.admission_limit,
        };
        bounds.validate().map_err(NatsConfigError::Bounds)?;
        if self.dlq_max_age.is_zero() {
            return Err(NatsConfigError::Bounds("DLQ_MAX_AGE must be positive"));
        }
        Ok(StreamSettings {
            replicas: self.stream_replicas,
            partitions: self.stream_partitions,
            bounds,
            dlq_max_age: self.dlq_max_age,
            max_age: window,
            duplicate_window: if window.is_zero() {
                self.dedupe_window
            } else {
                self.dedupe_window.min(window)
            },
            ..defaults
        })
    }
}

/// The shortest `Nats-Msg-Id` dedupe window: longer than a publisher retries one publish
/// (its deadline, 10 s by default) with room to spare.
pub const MIN_DEDUPE_WINDOW: Duration = Duration::from_secs(15);

/// The NATS settings cannot make a connection configuration.
#[derive(Debug, thiserror::Error)]
pub enum NatsConfigError {
    /// Both ways of giving the password were used.
    #[error("set NATS_PASSWORD or NATS_PASSWORD_FILE, not both")]
    BothPasswords,
    /// The password file could not be read.
    #[error("cannot read NATS_PASSWORD_FILE {path}: {source}")]
    PasswordFile {
        /// The file named.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The settings contradict each other.
    #[error(transparent)]
    Bus(#[from] ConfigError),
    /// A store's bound cannot work.
    #[error("{0}")]
    Bounds(&'static str),
    /// A NATS credential is a demo value or easy to guess.
    #[error("{setting} is refused: {why}")]
    Weak {
        /// The setting.
        setting: &'static str,
        /// Why.
        why: &'static str,
    },
    /// A dedupe window shorter than a publisher retries.
    #[error(
        "DEDUPE_WINDOW {} is too short: a publisher retries one publish for up to 10 s; give at least 15s",
        humantime::format_duration(*.0)
    )]
    DedupeWindow(Duration),
    /// The hot window is shorter than a message may need to stay in its stream.
    #[error(
        "HOT_WINDOW {} is too short: a message may stay pending for {} (CONSUMER_MAX_DELIVER deliveries of the longer of CONSUMER_ACK_WAIT_MS and CONSUMER_HANDLER_TIMEOUT_MS each, plus the retry delays between them) and would expire while still being retried; lengthen HOT_WINDOW, or shorten the ack wait, the handler timeout or the deliveries",
        humantime::format_duration(*.window),
        humantime::format_duration(*.needed)
    )]
    HotWindow {
        /// The configured window.
        window: Duration,
        /// The least it must be.
        needed: Duration,
    },
}

/// A secret from a file (a Docker or Kubernetes secret): its text without one trailing newline.
fn read_secret_file(path: &std::path::Path) -> Result<Secret, std::io::Error> {
    let text = std::fs::read_to_string(path)?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(Secret::new(text.strip_suffix('\r').unwrap_or(text)))
}

/// Fewest characters an admin token may have: a guessable token is an open door.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// The admin token is set in a way the service cannot use.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    /// Both ways of giving the token were used.
    #[error("set ADMIN_TOKEN or ADMIN_TOKEN_FILE, not both")]
    Both,
    /// The token file could not be read.
    #[error("cannot read ADMIN_TOKEN_FILE {path}: {source}")]
    Unreadable {
        /// The file named.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The token is too short to keep anyone out.
    #[error("the admin token must have at least {MIN_ADMIN_TOKEN_LEN} characters (it has {0})")]
    TooShort(usize),
    /// The token is a demo value or easy to guess.
    #[error("the admin token is refused: {0}")]
    Weak(&'static str),
}

/// The HTTP edge's limits and the admin token.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Bearer token the admin endpoints require (at least 16 characters). Without it (or
    /// ADMIN_TOKEN_FILE) the admin endpoints are closed: they refuse every request.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true, value_parser = secret)]
    pub admin_token: Option<Secret>,
    /// File holding the admin token (a Docker or Kubernetes secret), instead of ADMIN_TOKEN.
    #[arg(long, env = "ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "HTTP_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub http_body_limit: usize,
    /// Requests running longer are answered 503, in milliseconds.
    #[arg(long, env = "HTTP_REQUEST_TIMEOUT_MS", default_value = "10000", value_parser = millis)]
    pub http_request_timeout: Duration,
    /// How long a client has to send a request's head (line and headers), from when the
    /// server starts waiting for it — so also how long a kept-alive connection may sit idle
    /// between requests — in milliseconds; then the connection is closed. Slow clients
    /// (slowloris) cannot hold connections longer.
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT_MS", default_value = "10000", value_parser = millis)]
    pub http_header_read_timeout: Duration,
    /// Most connections open at once; a connection beyond it is closed at once (and counted in
    /// `http_server_connections_refused_total`). Bounds the memory clients can hold.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub http_max_connections: usize,
    /// Most connections one client (an IPv4 address, an IPv6 /64) holds at once; beyond it a
    /// new one is closed at once. Trusted proxies (HTTP_TRUSTED_PROXIES) are not capped; 0
    /// turns the cap off (load tests from one machine).
    #[arg(long, env = "HTTP_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 64)]
    pub http_max_connections_per_client: usize,
    /// How long writing an answer may stall (a client that stops reading), in milliseconds;
    /// then the connection is closed.
    #[arg(long, env = "HTTP_WRITE_TIMEOUT_MS", default_value = "15000", value_parser = millis)]
    pub http_write_timeout: Duration,
    /// Largest request head (line and headers) accepted, in bytes; beyond it, 431.
    #[arg(long, env = "HTTP_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub http_max_header_bytes: usize,
    /// Requests per second one client (IP address) may make, bursts up to twice that; beyond
    /// it, 429 with `Retry-After`. 0 turns the limit off (load tests from one machine).
    #[arg(long, env = "HTTP_RATE_LIMIT", default_value_t = 1000)]
    pub http_rate_limit: u32,
    /// Proxies (IP networks, comma separated, e.g. `10.0.0.0/8,127.0.0.1/32`) whose
    /// `X-Forwarded-For` names the client: the rate limit is then kept per client behind them,
    /// not per proxy. Empty: the peer address is the client.
    #[arg(long, env = "HTTP_TRUSTED_PROXIES", value_delimiter = ',', value_parser = network)]
    pub http_trusted_proxies: Vec<ipnet::IpNet>,
    /// Callers' `traceparent` and `baggage` are trusted: the request joins the caller's trace
    /// (and its sampling decision). Off (the default, for a public edge), the request starts
    /// its own trace, sampled at the configured ratio, linked to the caller's.
    #[arg(long, env = "HTTP_TRUST_TRACE_CONTEXT")]
    pub http_trust_trace_context: bool,
    /// How long shutdown waits for in-flight work, in milliseconds.
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value = "20000", value_parser = millis)]
    pub shutdown_grace: Duration,
}

impl HttpArgs {
    /// Refuses limits that cannot work, saying which.
    pub fn validate(&self) -> Result<(), String> {
        if self.http_header_read_timeout.is_zero() {
            return Err("HTTP_HEADER_READ_TIMEOUT_MS must be positive".into());
        }
        if self.http_max_connections == 0 {
            return Err("HTTP_MAX_CONNECTIONS must be at least 1".into());
        }
        if self.http_write_timeout.is_zero() {
            return Err("HTTP_WRITE_TIMEOUT_MS must be positive".into());
        }
        if !(1024..=1 << 20).contains(&self.http_max_header_bytes) {
            return Err("HTTP_MAX_HEADER_BYTES must be between 1024 and 1048576".into());
        }
        Ok(())
    }

    /// The admin token, from `ADMIN_TOKEN` or the file `ADMIN_TOKEN_FILE` names (one trailing
    /// newline dropped); `None` if neither is set, and the admin endpoints stay closed.
    pub fn admin_credential(&self) -> Result<Option<Secret>, AdminTokenError> {
        let token = match (&self.admin_token, &self.admin_token_file) {
            (Some(_), Some(_)) => return Err(AdminTokenError::Both),
            (Some(token), None) => token.clone(),
            (None, Some(path)) => {
                read_secret_file(path).map_err(|source| AdminTokenError::Unreadable {
                    path: path.clone(),
                    source,
                })?
            }
            (None, None) => return Ok(None),
        };
        let length = token.expose().chars().count();
        if length < MIN_ADMIN_TOKEN_LEN {
            return Err(AdminTokenError::TooShort(length));
        }
        if let Some(why) = token.weakness() {
            return Err(AdminTokenError::Weak(why));
        }
        Ok(Some(token))
    }
}

impl Default for HttpArgs {
    fn default() -> Self {
        Self {
            admin_token: None,
            admin_token_file: None,
            http_body_limit: 64 * 1024,
            http_request_timeout: Duration::from_secs(10),
            http_header_read_timeout: Duration::from_secs(10),
            http_max_connections: 1024,
            http_max_connections_per_client: 64,
            http_write_timeout: Duration::from_secs(15),
            http_max_header_bytes: 16 * 1024,
            http_rate_limit: 1000,
            http_trusted_proxies: Vec::new(),
            http_trust_trace_context: false,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

impl Default for NatsArgs {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_user: None,
            nats_password: None,
            nats_password_file: None,
            nats_token: None,
            nats_nkey_seed: None,
            nats_creds: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            nats_js_api_prefix: bus::DEFAULT_API_PREFIX.to_owned(),
            stream_replicas: 1,
            stream_partitions: Partitions::ONE,
            consumer_ack_wait: Duration::from_secs(30),
            consumer_handler_timeout: Duration::from_secs(60),
            consumer_max_deliver: bus::DEFAULT_MAX_DELIVER,
            hot_window: Duration::from_secs(24 * 3600),
            dedupe_window: Duration::from_secs(120),
            events_max_bytes: bus::Bounds::default().events,
            dlq_max_bytes: bus::Bounds::default().dlq,
            dlq_max_age: bus::StreamSettings::default().dlq_max_age,
            advisories_max_bytes: bus::Bounds::default().advisories,
            idempotency_max_bytes: bus::Bounds::default().idempotency,
            stock_max_bytes: bus::Bounds::default().stock,
            webhook_endpoints_max_bytes: bus::Bounds::default().webhook_endpoints,
            admission_limit: bus::Bounds::default().admission,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(token: Option<&str>, file: Option<PathBuf>) -> HttpArgs {
        HttpArgs {
            admin_token: token.map(Secret::new),
            admin_token_file: file,
            ..HttpArgs::default()
        }
    }

    #[test]
    fn the_defaults_of_the_flags_and_of_the_settings_agree() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            nats: NatsArgs,
        }
        let parsed = Flags::try_parse_from(["test"]).unwrap().nats;
        assert_eq!(
            parsed.stream_settings().unwrap(),
            NatsArgs::default().stream_settings().unwrap()
        );
        assert_eq!(
            parsed.stream_settings().unwrap().bounds,
            bus::Bounds::default()
        );
        assert_eq!(bytes("2GiB"), Ok(2 << 30));
        assert!(share("1").is_err() && share("0.9") == Ok(0.9));
    }

    #[test]
    fn no_admin_token_means_none_and_the_admin_endpoints_stay_closed() {
        assert!(http(None, None).admin_credential().unwrap().is_none());
    }

    #[test]
    fn the_admin_token_can_come_from_a_file_without_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-token");
        std::fs::write(&path, "0123456789abcdef-from-a-file\n").unwrap();
        let token = http(None, Some(path)).admin_credential().unwrap().unwrap();
        assert_eq!(token.expose(), "0123456789abcdef-from-a-file");
    }

    #[test]
    fn a_demo_admin_token_is_refused() {
        let error = http(Some("demo-admin-token-change-me"), None)
            .admin_credential()
            .unwrap_err();
        assert!(error.to_string().contains("demo"), "{error}");
    }

    #[test]
    fn a_short_admin_token_is_refused() {
        let error = http(Some("too-short"), None)
            .admin_credential()
            .unwrap_err();
        assert!(matches!(error, AdminTokenError::TooShort(9)), "{error}");
    }

    #[test]
    fn the_admin_token_and_a_token_file_together_are_refused() {
        let error = http(Some("0123456789abcdef"), Some("/dev/null".into()))
            .admin_credential()
            .unwrap_err();
        assert!(matches!(error, AdminTokenError::Both), "{error}");
    }

    #[test]
    fn a_missing_token_file_is_an_error_that_names_it() {
        let error = http(None, Some("/nonexistent/admin-token".into()))
            .admin_credential()
            .unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/admin-token"),
            "{error}"
        );
    }

    #[test]
    fn the_nats_password_can_come_from_a_file_without_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nats-password");
        std::fs::write(&path, "from-a-secret-file\n").unwrap();
        let nats = NatsArgs {
            nats_user: Some("order-service".into()),
            nats_password_file: Some(path),
            ..NatsArgs::default()
        };
        let config = nats.bus_config("order-service").unwrap();
        match config.auth {
            NatsAuth::UserPassword { user, password } => {
                assert_eq!(user, "order-service");
                assert_eq!(password.expose(), "from-a-secret-file");
            }
            other => panic!("not user/password auth: {other:?}"),
        }
    }

    #[test]
    fn the_hot_window_becomes_the_streams_max_age_and_bounds_the_dedupe_window() {
        let nats = NatsArgs {
            hot_window: hot_window("90s").unwrap(),
            consumer_ack_wait: Duration::from_secs(1),
            consumer_handler_timeout: Duration::from_secs(1),
            consumer_max_deliver: 3,
            ..NatsArgs::default()
        };
        let settings = nats.stream_settings().unwrap();
        assert_eq!(settings.max_age, Duration::from_secs(90));
        assert_eq!(settings.duplicate_window, Duration::from_secs(90));
        let forever = NatsArgs {
            hot_window: hot_window("0").unwrap(),
            ..NatsArgs::default()
        };
        assert!(forever.stream_settings().unwrap().max_age.is_zero());
        let short_dedupe = NatsArgs {
            dedupe_window: hot_window("20s").unwrap(),
            ..nats
        };
        assert_eq!(
            short_dedupe.stream_settings().unwrap().duplicate_window,
            Duration::from_secs(20)
        );
        let too_short = NatsArgs {
            dedupe_window: hot_window("5s").unwrap(),
            ..NatsArgs::default()
        };
        assert!(too_short.stream_settings().is_err());
    }

    #[test]
    fn a_hot_window_shorter_than_a_messages_retries_is_refused_with_what_it_needs() {
        // 20 deliveries, each pending up to the 60 s a handler may work on it (progress acks
        // keep it past the 30 s ack window), plus 6.5 minutes of nak delays between them.
        let nats = NatsArgs {
            hot_window: hot_window("10m").unwrap(),
            ..NatsArgs::default()
        };
        let error = nats.stream_settings().unwrap_err().to_string();
        assert!(error.contains("HOT_WINDOW 10m is too short"), "{error}");
        assert!(error.contains("26m 31s"), "{error}");
        // Handlers cut off at the ack window: the ack window per delivery.
        let quick_handlers = NatsArgs {
            consumer_handler_timeout: Duration::from_secs(30),
            ..nats
        };
        let error = quick_handlers.stream_settings().unwrap_err().to_string();
        assert!(error.contains("16m 31s"), "{error}");
        assert!(hot_window("soon").is_err());
    }

    #[test]
    fn a_nats_password_and_a_password_file_together_are_refused() {
        let nats = NatsArgs {
            nats_user: Some("order-service".into()),
            nats_password: Some(Secret::new("inline")),
            nats_password_file: Some("/dev/null".into()),
            ..NatsArgs::default()
        };
        let error = nats.bus_config("order-service").unwrap_err();
        assert!(matches!(error, NatsConfigError::BothPasswords), "{error}");
    }
}
