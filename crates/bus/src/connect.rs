//! The connection to NATS: authenticated, optionally TLS, reconnecting forever with backoff,
//! every connection event logged, and readiness read straight from the client's state.

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, jetstream};

use telemetry::metric;

use crate::config::{BusConfig, ConfigError, NatsAuth};
use crate::event_log::EventLog;
use crate::publish::Publisher;

/// A connected bus: the NATS client, its JetStream context and the shared [`Publisher`].
/// Cheap to clone; every clone shares one connection and one circuit breaker.
#[derive(Debug, Clone)]
pub struct Bus {
    client: Client,
    jetstream: jetstream::Context,
    publisher: Publisher,
    events: EventLog,
    api_prefix: std::sync::Arc<str>,
}

/// Why the bus could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The credentials file could not be read.
    #[error("cannot read NATS credentials file {path}: {source}")]
    CredsFile {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A server URL does not parse.
    #[error("invalid NATS_URL entry {url:?}: {source}")]
    Url {
        /// The entry.
        url: String,
        /// The parser's complaint.
        #[source]
        source: std::io::Error,
    },
    /// The client refused the options (bad TLS files, ...).
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The URL(s) tried.
        url: String,
        /// The client error.
        #[source]
        source: async_nats::ConnectError,
    },
}

impl Bus {
    /// Connects to NATS. The connection is retried in the background — forever, with backoff —
    /// both at start-up and after every disconnect, so this returns as soon as the options are
    /// valid; [`Bus::is_connected`] tells whether the server is reachable right now.
    pub async fn connect(config: &BusConfig) -> Result<Self, ConnectError> {
        config.validate()?;
        let options = options(config).await?;
        // A cluster is given as a comma-separated list; the client takes a list of addresses.
        let servers = config
            .url
            .split(',')
            .map(|url| {
                url.trim()
                    .parse::<async_nats::ServerAddr>()
                    .map_err(|source| ConnectError::Url {
                        url: url.trim().to_owned(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client = options
            .connect(servers)
            .await
            .map_err(|source| ConnectError::Connect {
                url: config.url.clone(),
                source,
            })?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(config.publish.ack_timeout)
            .api_prefix(&config.api_prefix)
            .build(client.clone());
        let publisher = Publisher::new(jetstream.clone(), config.publish.clone());
        let events = EventLog::new(jetstream.clone(), publisher.clone(), &config.api_prefix);
        Ok(Self {
            client,
            jetstream,
            publisher,
            events,
            api_prefix: config.api_prefix.as_str().into(),
        })
    }

    /// The subject prefix of the JetStream API this connection uses.
    pub fn api_prefix(&self) -> &str {
        &self.api_prefix
    }

    /// Whether the connection is up (the readiness signal).
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// The core NATS client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The publisher shared by everything using this bus.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The event store over this connection.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// Flushes what is buffered and closes the connection after in-flight requests finish.
    pub async fn drain(&self) {
        if let Err(e) = self.client.drain().await {
            tracing::warn!(error = %e, "draining the NATS connection failed");
        }
    }
}

async fn options(config: &BusConfig) -> Result<ConnectOptions, ConnectError> {
    let name = config.name.clone();
    let mut options = ConnectOptions::new()
        .name(&config.name)
        .custom_inbox_prefix(config.inbox_prefix())
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(move |event| {
            let name = name.clone();
            async move { log_event(&name, event) }
        });
    options = match &config.auth {
        NatsAuth::None => options,
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.expose().to_owned())
        }
        NatsAuth::Token(token) => options.token(token.expose().to_owned()),
        NatsAuth::NKeySeed(seed) => options.nkey(seed.expose().to_owned()),
        NatsAuth::CredsFile(path) => {
            options
                .credentials_file(path)
                .await
                .map_err(|source| ConnectError::CredsFile {
                    path: path.display().to_string(),
                    source,
                })?
        }
    };
    if config.tls.enabled() {
        options = options.require_tls(true);
        if let Some(ca) = &config.tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    Ok(options)
}

fn log_event(connection: &str, event: Event) {
    let connected = match &event {
        Event::Connected => {
            tracing::info!(connection, "connected to NATS");
            Some(true)
        }
        Event::Disconnected => {
            tracing::warn!(connection, "disconnected from NATS; reconnecting");
            Some(false)
        }
        Event::Closed => {
            tracing::info!(connection, "NATS connection closed");
            Some(false)
        }
        Event::ServerError(e) => {
            tracing::error!(connection, error = %e, "NATS server error");
            None
        }
        Event::ClientError(e) => {
            tracing::error!(connection, error = %e, "NATS client error");
            None
        }
        other => {
            tracing::warn!(connection, event = %other, "NATS connection event");
            None
        }
    };
    if let Some(up) = connected {
        metrics::gauge!(metric::NATS_CONNECTED, "connection" => connection.to_owned()).set(if up {
            1.0
        } else {
            0.0
        });
    }
}
