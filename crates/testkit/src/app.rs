//! The three services *in this process*: each one's `run(config, listener, shutdown)` on a
//! loopback listener, against a real nats-server — no binaries to build first, and a failure
//! shows where it happened in the test's own backtrace.
//!
//! The services get a runtime of their own, so a test that blocks its thread (a subprocess, a
//! sync call) cannot stall them. They are configured with the same `KEY=value` settings a
//! [`System`](crate::System) passes as environment variables, handed to each service's parser
//! as the flag that reads that variable. Telemetry is per process, so a test about metrics,
//! logs or exported spans runs the services as processes instead (`System`).

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use events::ServiceId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::nats::NatsServer;
use crate::postgres::PostgresServer;
use crate::system::{ServiceEnv, SystemBuilder, until_ready};

/// What a service's `run` returns, boxed: the services' error types differ.
type Outcome = Result<(), String>;

/// nats-server plus the three services running in this process; dereferences to an
/// [`ApiClient`] for the typed steps. Dropping it stops the services, then the server.
#[derive(Debug)]
pub struct TestApp {
    /// The NATS server.
    pub nats: NatsServer,
    /// The archive's server (`None` with [`SystemBuilder::without_archive`]).
    pub postgres: Option<PostgresServer>,
    api: ApiClient,
    shutdown: CancellationToken,
    services: Vec<Running>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// One service instance running in the services' runtime.
#[derive(Debug)]
struct Running {
    service: ServiceId,
    url: String,
    task: JoinHandle<Outcome>,
}

impl TestApp {
    /// A fresh nats-server and the three services with [`System::builder`]'s defaults: one
    /// inventory replica, notifications to the log, the admin token
    /// [`ADMIN_TOKEN`](crate::ADMIN_TOKEN).
    ///
    /// [`System::builder`]: crate::System::builder
    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }

    /// The options of a [`System`](crate::System), started in-process with
    /// [`SystemBuilder::spawn`].
    pub fn builder() -> SystemBuilder {
        crate::System::builder()
    }

    /// Stops the services (as SIGTERM would) and waits for them to finish draining.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for Running { service, task, .. } in std::mem::take(&mut self.services) {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => panic!("{service} stopped with an error: {e}"),
                Ok(Err(e)) => panic!("{service} panicked: {e}"),
                Err(_) => panic!("{service} did not stop within 30 s"),
            }
        }
    }

    /// Waits until every service answers `/readyz`; panics with how a service that stopped
    /// ended.
    async fn wait_ready(&mut self) {
        for service in &mut self.services {
            let task = &service.task;
            let stopped = || {
                task.is_finished()
                    .then(|| "stopped while starting".to_owned())
            };
            if let Err(why) = until_ready(&service.url, READY_TIMEOUT, stopped).await {
                let outcome = match service.task.is_finished() {
                    true => format!("{:?}", (&mut service.task).await),
                    false => "(set TEST_RUST_LOG=info to see its log)".to_owned(),
                };
                panic!("{} {why}: {outcome}", service.service);
            }
        }
    }
}

impl std::ops::Deref for TestApp {
    type Target = ApiClient;

    fn deref(&self) -> &ApiClient {
        &self.api
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // Dropping a runtime waits for its tasks, which an async test's thread may not do;
        // the services were told to stop, and the server goes right after.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Generous: a loaded CI machine starts a score of test systems at once.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl SystemBuilder {
    /// Starts nats-server (unless given one) and the three services in this process, and waits
    /// until every service is ready. Exporting spans ([`SystemBuilder::otlp`]) needs a
    /// process of its own per service: use [`SystemBuilder::start`] for that.
    pub async fn spawn(mut self) -> TestApp {
        assert!(
            !self.exports_spans(),
            "telemetry is per process: run the services as processes (`start`) to export spans"
        );
        install_telemetry();
        let nats = self.take_nats();
        let postgres = self.take_postgres().await;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("testapp")
            .enable_all()
            .build()
            .expect("a runtime for the services");
        let shutdown = CancellationToken::new();
        provision(&self.provisioning_env(&nats, postgres.as_ref())).await;
        let mut services = Vec::new();
        let instances = self.service_envs(&nats, postgres.as_ref());
        let mut read = HashSet::new();
        for ServiceEnv { service, env, .. } in &instances {
            let service = *service;
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
            listener
                .set_nonblocking(true)
                .expect("a non-blocking listener");
            let url = format!("http://{}", listener.local_addr().expect("its address"));
            let task = match service {
                ServiceId::Order => {
                    let config = parse::<order_service::Config>(service.name(), env, &mut read);
                    runtime.spawn(serve(listener, shutdown.clone(), move |listener, stop| {
                        order_service::run(config, listener, stop)
                    }))
                }
                ServiceId::Inventory => {
                    let config = parse::<inventory_service::Config>(service.name(), env, &mut read);
                    runtime.spawn(serve(listener, shutdown.clone(), move |listener, stop| {
                        inventory_service::run(config, listener, stop)
                    }))
                }
                ServiceId::Notification => {
                    let config =
                        parse::<notification_service::Config>(service.name(), env, &mut read);
                    runtime.spawn(serve(listener, shutdown.clone(), move |listener, stop| {
                        notification_service::run(config, listener, stop)
                    }))
                }
            };
            services.push(Running { service, url, task });
        }
        // A setting no service reads is a typo, not a setting for someone else.
        for (key, _) in instances.iter().flat_map(|i| &i.env) {
            assert!(read.contains(key), "no service reads the setting {key}");
        }
        let url_of = |service: ServiceId| {
            services
                .iter()
                .find(|s| s.service == service)
                .map(|s| s.url.clone())
                .expect("every service has a URL")
        };
        let api = ApiClient::new(
            [
                url_of(ServiceId::Order),
                url_of(ServiceId::Inventory),
                url_of(ServiceId::Notification),
            ],
            self.token().map(str::to_owned),
            "the services run in the test process: set TEST_RUST_LOG=info to see their log".into(),
        );
        let mut app = TestApp {
            nats,
            postgres,
            api,
            shutdown,
            services,
            runtime: Some(runtime),
        };
        app.wait_ready().await;
        app
    }
}

/// The provisioning step, in this process: `orderflow-admin provision` with `env`.
async fn provision(env: &[(String, String)]) {
    #[derive(clap::Parser)]
    struct Provision {
        #[command(flatten)]
        args: orderflow_admin::ProvisionArgs,
    }
    let Provision { args } = parse::<Provision>("orderflow-admin", env, &mut HashSet::new());
    if let Err(e) = orderflow_admin::provision_deployment(&args).await {
        panic!("orderflow-admin provision failed: {e}");
    }
}

/// Binds the listener inside the services' runtime and runs the service on it.
async fn serve<F, Fut, E>(
    listener: std::net::TcpListener,
    shutdown: CancellationToken,
    run: F,
) -> Outcome
where
    F: FnOnce(tokio::net::TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
    run(listener, shutdown).await.map_err(|e| e.to_string())
}

/// A service's configuration from `KEY=value` settings: each becomes the flag that reads the
/// environment variable `KEY` (a switch when the flag takes no value), so the in-process
/// service is configured exactly as the binary would be from its environment. Like a process,
/// a service ignores settings it does not read; their keys are added to `read` otherwise.
fn parse<C: CommandFactory + FromArgMatches>(
    program: &str,
    env: &[(String, String)],
    read: &mut HashSet<String>,
) -> C {
    let command = C::command();
    let mut args = vec![program.to_owned()];
    for (key, value) in env {
        let Some(arg) = command
            .get_arguments()
            .find(|arg| arg.get_env().is_some_and(|name| name == key.as_str()))
        else {
            continue;
        };
        read.insert(key.clone());
        let flag = format!("--{}", arg.get_long().expect("settings are long flags"));
        if arg.get_action().takes_values() {
            args.extend([flag, value.clone()]);
        } else if value == "true" {
            args.push(flag);
        }
    }
    let matches = command
        .try_get_matches_from(&args)
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    C::from_arg_matches(&matches).unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
}

/// Spans need a subscriber for their ids (the trace context the services pass on in message
/// and webhook headers); one per process, for every app of the test binary. Logs are dropped
/// unless `TEST_RUST_LOG` asks for them (on stderr).
fn install_telemetry() {
    static TELEMETRY: OnceLock<Option<telemetry::Telemetry>> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        let filter = std::env::var("TEST_RUST_LOG").ok();
        let writer = match filter {
            Some(_) => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
            None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::sink),
        };
        telemetry::init_with(telemetry::Settings {
            service_name: "orderflow-tests".into(),
            log_format: telemetry::LogFormat::Json,
            log_filter: filter.unwrap_or_else(|| "off".into()),
            log_writer: writer,
            otlp: None,
        })
        // Another subscriber of the test binary's own: spans still get ids from it or none.
        .ok()
    });
}
