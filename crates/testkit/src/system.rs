//! The three services as real processes — the binaries `cargo build --bins` produced, next to
//! the test executable's directory — configured through their environment variables exactly
//! as an operator would, on free loopback ports, logging to files in a temp dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use events::ServiceId;

use crate::api::ApiClient;
use crate::nats::{NatsServer, free_port};
use crate::postgres::PostgresServer;

// Generous: on a fresh 3-node cluster every stream and bucket is an R3 raft group to elect,
// and in CI the first cluster starts while a score of other tests start their systems: there
// a stream creation was seen to take 5–8 s, 16 streams and buckets more than 90 s in all.
const READY_TIMEOUT: Duration = Duration::from_secs(240);

/// Path of a service binary built by `cargo build --bins` in this target directory: next to
/// the running executable (a tool in `target/<profile>/`) or one level up (a test in
/// `target/<profile>/deps/`). Under cargo (`cargo test`, `cargo run`) the binaries are built
/// first, once per process — a no-op when they are current — so plain `cargo test` works and a
/// test never runs a stale binary.
pub fn service_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let exe = std::env::current_exe().expect("current executable");
    let dir = exe.parent().expect("executable directory");
    BUILT.get_or_init(|| build_services(dir));
    [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|bin| bin.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is missing next to {}: build the services first with `cargo build --bins` (scripts/test does)",
                exe.display()
            )
        })
}

/// `cargo build --bins` for the profile and target directory the running executable is in,
/// when cargo started it.
fn build_services(exe_dir: &Path) {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return;
    };
    let profile_dir = match exe_dir.file_name() {
        Some(deps) if deps == "deps" => exe_dir.parent().unwrap_or(exe_dir),
        _ => exe_dir,
    };
    let (Some(profile), Some(target_dir)) = (
        profile_dir.file_name().and_then(|p| p.to_str()),
        profile_dir.parent(),
    ) else {
        return;
    };
    let mut command = Command::new(cargo);
    // What cargo tells the test about its own package would reach build scripts that watch it
    // (ring's watches CARGO_MANIFEST_DIR) and make them rerun: the build would not be the
    // no-op that `cargo build --bins` from the shell just made it.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| key.starts_with(prefix))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&key.as_ref())
        {
            command.env_remove(key.as_ref());
        }
    }
    command
        .args(["build", "--quiet", "--workspace", "--bins", "--target-dir"])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

/// `orderflow-admin` with `env` (as the operator would) and none of this process's NATS or
/// stream settings.
fn admin_command(env: &[(String, String)]) -> Command {
    let mut command = Command::new(service_binary("orderflow-admin"));
    for (key, _) in std::env::vars() {
        if key.starts_with("NATS_") || key.starts_with("STREAM_") || key.starts_with("HOT_") {
            command.env_remove(key);
        }
    }
    command
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null());
    command
}

/// Runs the provisioning step, `orderflow-admin provision`, with `env` (as the operator would),
/// logging to `log_dir`; panics with its output if it fails.
pub fn provision(env: &[(String, String)], log_dir: &Path) {
    let log = log_dir.join("orderflow-admin.log");
    let file = std::fs::File::create(&log).expect("provisioning log");
    let status = admin_command(env)
        .arg("provision")
        .stdout(file.try_clone().expect("log handle"))
        .stderr(file)
        .status()
        .expect("run orderflow-admin");
    assert!(
        status.success(),
        "orderflow-admin provision failed ({status}):\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Runs `orderflow-admin <args>` with `env`; what it printed, or a panic with what it said.
pub fn admin(args: &[&str], env: &[(String, String)]) -> String {
    let output = admin_command(env)
        .args(args)
        .output()
        .expect("run orderflow-admin");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "orderflow-admin {args:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Polls `url`'s `/readyz` until it answers 200. Fails with why not: what `gone` says once the
/// service stopped, or the time waited.
pub(crate) async fn until_ready(
    url: &str,
    timeout: Duration,
    mut gone: impl FnMut() -> Option<String>,
) -> Result<(), String> {
    let client = crate::api::http_client();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(why) = gone() {
            return Err(why);
        }
        let ready = client.get(format!("{url}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("was not ready within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A service running as a child process.
#[derive(Debug)]
pub struct ServiceProcess {
    name: String,
    bin: PathBuf,
    env: Vec<(String, String)>,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl ServiceProcess {
    /// Starts `name` with `env` (plus `HTTP_ADDR` on a free port), logging to `log_dir`.
    pub fn start(name: &str, env: Vec<(String, String)>, log_dir: &Path, instance: usize) -> Self {
        let mut process = Self {
            name: name.to_owned(),
            bin: service_binary(name),
            env,
            port: free_port(),
            log: log_dir.join(format!("{name}-{instance}.log")),
            child: None,
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let mut command = Command::new(&self.bin);
        // Nothing from the developer's environment leaks in: the test sets what it means.
        for (key, _) in std::env::vars() {
            if key.starts_with("OTEL_") || key.starts_with("NATS_") || key.starts_with("WEBHOOK_") {
                command.env_remove(key);
            }
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("HTTP_ADDR", format!("127.0.0.1:{}", self.port))
            .env("LOG_FORMAT", "json")
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        self.child = Some(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display())),
        );
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits until `/readyz` answers 200; panics with the log if it never does.
    pub async fn wait_ready(&mut self) {
        let url = self.url();
        let child = &mut self.child;
        let exited = || match child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(format!("exited with {status}")),
            _ => None,
        };
        if let Err(why) = until_ready(&url, READY_TIMEOUT, exited).await {
            panic!("{} {why}:\n{}", self.name, self.logs());
        }
    }

    /// Sends SIGTERM and waits for the exit; returns whether it exited with status 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process freezes (its connections stay open, nothing is acked).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg(signal)
                .arg(pid.to_string())
                .status();
        }
    }

    /// Starts it again on the same port after [`Self::kill`] or [`Self::terminate`].
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() && std::env::var_os("TEST_SHOW_LOGS").is_some() {
            eprintln!("--- {} log ---\n{}", self.name, self.logs());
        }
    }
}

/// nats-server, the archive's PostgreSQL and the three services as processes; dereferences to
/// an [`ApiClient`] for the typed steps.
#[derive(Debug)]
pub struct System {
    /// The NATS server.
    pub nats: NatsServer,
    /// The archive's server (`None` with [`SystemBuilder::without_archive`]).
    pub postgres: Option<PostgresServer>,
    /// order-service.
    pub order: ServiceProcess,
    /// inventory-service replicas.
    pub inventory: Vec<ServiceProcess>,
    /// notification-service.
    pub notification: ServiceProcess,
    api: ApiClient,
    logs: Option<tempfile::TempDir>,
    log_path: PathBuf,
}

impl Drop for System {
    fn drop(&mut self) {
        // A failed test keeps its logs for the post-mortem.
        if std::thread::panicking()
            && let Some(logs) = self.logs.take()
        {
            eprintln!("service logs kept in {}", logs.keep().display());
        }
    }
}

/// Options for a [`System`].
#[derive(Debug, Default)]
pub struct SystemBuilder {
    inventory_replicas: usize,
    webhook: Option<(String, String)>,
    otlp_endpoint: Option<String>,
    admin_token: Option<String>,
    nats: Option<NatsServer>,
    nats_url: Option<String>,
    env: Vec<(String, String)>,
    service_env: Vec<(ServiceId, String, String)>,
    without_archive: bool,
    postgres: Option<PostgresServer>,
    provisioner_env: Vec<(String, String)>,
}

/// The admin token a [`System`] gives its services unless told otherwise: admin endpoints are
/// closed without one, as shipped.
pub const ADMIN_TOKEN: &str = "testkit-admin-token-0123456789";

impl System {
    /// Options: one inventory replica, notifications to the log, [`ADMIN_TOKEN`].
    pub fn builder() -> SystemBuilder {
        SystemBuilder {
            inventory_replicas: 1,
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            ..SystemBuilder::default()
        }
    }

    /// Keeps the log directory after the system is gone (for a post-mortem) and returns it.
    pub fn keep_logs(&mut self) -> PathBuf {
        if let Some(logs) = self.logs.take() {
            return logs.keep();
        }
        self.log_path.clone()
    }

    /// The directory with every service's log.
    pub fn log_dir(&self) -> &Path {
        &self.log_path
    }
}

impl std::ops::Deref for System {
    type Target = ApiClient;

    fn deref(&self) -> &ApiClient {
        &self.api
    }
}

/// Whether a system runs `subscription`'s consumer: all of them, but the archive's projection
/// only when the system archives.
pub(crate) fn consumes(subscription: &events::topology::Subscription, archiving: bool) -> bool {
    archiving || !events::topology::ARCHIVE.contains(subscription)
}

/// The settings of one service instance, as the environment variables a process gets.
pub(crate) struct ServiceEnv {
    pub(crate) service: ServiceId,
    pub(crate) instance: usize,
    pub(crate) env: Vec<(String, String)>,
}

impl SystemBuilder {
    /// Runs `n` inventory replicas on one durable consumer.
    pub fn inventory_replicas(mut self, n: usize) -> Self {
        self.inventory_replicas = n;
        self
    }

    /// Sends notifications to `url`, signed with `secret`.
    pub fn webhook(mut self, url: &str, secret: &str) -> Self {
        self.webhook = Some((url.to_owned(), secret.to_owned()));
        self
    }

    /// Exports spans over OTLP/HTTP to `endpoint` (a base URL; `/v1/traces` is appended).
    pub fn otlp(mut self, endpoint: &str) -> Self {
        self.otlp_endpoint = Some(endpoint.to_owned());
        self
    }

    /// Protects admin endpoints with `token` instead of [`ADMIN_TOKEN`].
    pub fn admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.to_owned());
        self
    }

    /// Starts the services without an admin token: their admin endpoints are closed.
    pub fn without_admin_token(mut self) -> Self {
        self.admin_token = None;
        self
    }

    /// Sets an environment variable for every service.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets an environment variable for one service.
    pub fn service_env(mut self, service: ServiceId, key: &str, value: &str) -> Self {
        self.service_env
            .push((service, key.to_owned(), value.to_owned()));
        self
    }

    /// Sets an environment variable for the provisioning step only (`orderflow-admin
    /// provision`, run before the services start): the operator's credentials.
    pub fn provisioner_env(mut self, key: &str, value: &str) -> Self {
        self.provisioner_env
            .push((key.to_owned(), value.to_owned()));
        self
    }

    /// Services connect here instead of the server's own URL (a proxy, or a cluster's URLs).
    pub fn nats_url(mut self, url: &str) -> Self {
        self.nats_url = Some(url.to_owned());
        self
    }

    /// Uses this server instead of a fresh one.
    pub fn nats(mut self, server: NatsServer) -> Self {
        self.nats = Some(server);
        self
    }

    /// Archives into this (migrated or fresh) PostgreSQL server instead of a fresh one.
    pub fn postgres(mut self, server: PostgresServer) -> Self {
        self.postgres = Some(server);
        self
    }

    /// Runs without an archive: every event stays in NATS (`HOT_WINDOW=0`, `ARCHIVE_URL=none`).
    pub fn without_archive(mut self) -> Self {
        self.without_archive = true;
        self
    }

    /// Starts everything as processes and waits until every service is ready.
    pub async fn start(mut self) -> System {
        let nats = self.take_nats();
        let postgres = self.take_postgres().await;
        let logs = tempfile::Builder::new()
            .prefix("orderflow-logs-")
            .tempdir()
            .expect("log dir");
        provision(
            &self.provisioning_env(&nats, postgres.as_ref()),
            logs.path(),
        );
        let mut processes: Vec<(ServiceId, ServiceProcess)> = self
            .service_envs(&nats, postgres.as_ref())
            .into_iter()
            .map(
                |ServiceEnv {
                     service,
                     instance,
                     mut env,
                 }| {
                    if let Some(endpoint) = &self.otlp_endpoint {
                        env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone()));
                        env.push(("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/protobuf".into()));
                        env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()));
                    }
                    let process = ServiceProcess::start(service.name(), env, logs.path(), instance);
                    (service, process)
                },
            )
            .collect();
        for (_, process) in &mut processes {
            process.wait_ready().await;
        }
        let mut instances_of = |wanted: ServiceId| -> Vec<ServiceProcess> {
            let (of, others) = std::mem::take(&mut processes)
                .into_iter()
                .partition(|(service, _)| *service == wanted);
            processes = others;
            of.into_iter().map(|(_, process)| process).collect()
        };
        let order = instances_of(ServiceId::Order).remove(0);
        let inventory = instances_of(ServiceId::Inventory);
        let notification = instances_of(ServiceId::Notification).remove(0);
        let log_path = logs.path().to_path_buf();
        let api = ApiClient::new(
            [order.url(), inventory[0].url(), notification.url()],
            self.admin_token.clone(),
            format!("logs in {}", log_path.display()),
        );
        System {
            nats,
            postgres,
            order,
            inventory,
            notification,
            api,
            logs: Some(logs),
            log_path,
        }
    }

    /// The server given, or a fresh one.
    pub(crate) fn take_nats(&mut self) -> NatsServer {
        self.nats.take().unwrap_or_else(NatsServer::start)
    }

    /// The archive's server given, or a fresh one, migrated as `order-service archive
    /// migrate` would; `None` without an archive.
    pub(crate) async fn take_postgres(&mut self) -> Option<PostgresServer> {
        if self.without_archive {
            return None;
        }
        let server = self.postgres.take().unwrap_or_else(PostgresServer::start);
        crate::sample::archive(&server).await.close().await;
        Some(server)
    }

    /// Whether spans are to be exported (which needs a process per service).
    pub(crate) fn exports_spans(&self) -> bool {
        self.otlp_endpoint.is_some()
    }

    /// The admin token the services get.
    pub(crate) fn token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// The provisioning step's settings: the services' shared ones (stream shapes, consumer
    /// tuning, TLS), whether order-service archives, and [`SystemBuilder::provisioner_env`].
    pub(crate) fn provisioning_env(
        &self,
        nats: &NatsServer,
        postgres: Option<&PostgresServer>,
    ) -> Vec<(String, String)> {
        let mut env = self.common_env(nats, postgres);
        env.retain(|(key, _)| key != "ADMIN_TOKEN");
        env.push(("ARCHIVE_CONSUMERS".into(), postgres.is_some().to_string()));
        env.extend(self.provisioner_env.iter().cloned());
        env
    }

    /// The settings every service gets.
    fn common_env(
        &self,
        nats: &NatsServer,
        postgres: Option<&PostgresServer>,
    ) -> Vec<(String, String)> {
        let mut common = vec![(
            "NATS_URL".to_owned(),
            self.nats_url.clone().unwrap_or_else(|| nats.url()),
        )];
        if postgres.is_none() {
            common.push(("HOT_WINDOW".into(), "0".into()));
        }
        common.extend(self.env.iter().cloned());
        if let Some(token) = &self.admin_token {
            common.push(("ADMIN_TOKEN".into(), token.clone()));
        }
        common
    }

    /// Every instance to start, in order (order, the inventory replicas, notification), with
    /// its settings.
    pub(crate) fn service_envs(
        &self,
        nats: &NatsServer,
        postgres: Option<&PostgresServer>,
    ) -> Vec<ServiceEnv> {
        let common = self.common_env(nats, postgres);
        let env_of = |service: ServiceId, instance: usize| {
            let mut env = common.clone();
            if service == ServiceId::Order {
                // Least privilege, as deployed: the projection writes, the API reads.
                let url = postgres.map_or_else(
                    || "none".to_owned(),
                    |server| server.url_as(crate::sample::ARCHIVE_WRITER),
                );
                env.push(("ARCHIVE_URL".into(), url));
                if postgres.is_some() {
                    let reader = crate::sample::ARCHIVE_READER.to_owned();
                    env.push(("ARCHIVE_READER_USER".into(), reader));
                }
            }
            if let (ServiceId::Notification, Some((url, secret))) = (service, &self.webhook) {
                env.push(("WEBHOOK_URL".into(), url.clone()));
                env.push(("WEBHOOK_SECRET".into(), secret.clone()));
                // Test receivers listen on loopback, which webhooks may not reach by default.
                env.push(("WEBHOOK_ALLOW_PRIVATE".into(), "true".into()));
                env.push(("WEBHOOK_ALLOW_HTTP".into(), "true".into()));
            }
            env.extend(
                self.service_env
                    .iter()
                    .filter(|(s, _, _)| *s == service)
                    .map(|(_, k, v)| (k.clone(), v.clone())),
            );
            ServiceEnv {
                service,
                instance,
                env,
            }
        };
        let replicas = 0..self.inventory_replicas.max(1);
        let mut instances = vec![env_of(ServiceId::Order, 0)];
        instances.extend(replicas.map(|i| env_of(ServiceId::Inventory, i)));
        instances.push(env_of(ServiceId::Notification, 0));
        instances
    }
}
