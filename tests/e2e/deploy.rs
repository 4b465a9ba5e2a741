//! The deployment artefacts against the real thing: the Grafana dashboard and the alerting
//! rules ask only for metrics the services export (or the rules record), every binary says the
//! version the manifests deploy, and the Docker-free run (`scripts/dev`) works end to end —
//! through the README's flow as `scripts/demo-flow` checks it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::{System, free_port, http_client, service_binary};

use crate::support::eventually;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Metric names in PromQL or in rule files: ours all start with `orderflow_` or
/// `http_server_`, and the series our rules record are named `slo:<what>:<how>` (rule groups
/// and labels are named `slo:<name>` and `slo`, and are skipped).
fn metric_names(promql: &str) -> BTreeSet<String> {
    promql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| {
            token.starts_with("orderflow_")
                || token.starts_with("http_server_")
                || (token.starts_with("slo:") && token.matches(':').count() == 2)
        })
        .map(str::to_owned)
        .collect()
}

/// The alerting and recording rules, as text.
fn rules() -> String {
    ["slos.rules.yaml", "causes.rules.yaml"]
        .iter()
        .map(|file| {
            std::fs::read_to_string(repo().join("deploy/prometheus/rules").join(file)).unwrap()
        })
        .collect()
}

/// Of `names`, those recorded by a rule are checked against the rules, and the others are
/// scraped from a running system that has just confirmed (and notified) an order until all
/// show up. Returns the names nobody produces.
async fn unproduced(names: &BTreeSet<String>) -> Vec<String> {
    let rules = rules();
    let recorded: BTreeSet<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- record: "))
        .map(str::trim)
        .collect();
    let system = System::builder().start().await;
    system.set_stock("DASH", 1).await;
    let confirmed = system.place_order("dana", &[("DASH", 1)]).await;
    system.wait_for_status(&confirmed, "confirmed").await;
    // Metrics are recorded just after the state they describe changes: scrape until every
    // name shows up, or report the ones that never do.
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    loop {
        let mut exported = String::new();
        for service in [&system.order, &system.inventory[0], &system.notification] {
            exported += &crate::support::metrics(&system, service).await;
        }
        let exported: BTreeSet<&str> = exported
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split(['{', ' ']).next())
            .collect();
        let missing: Vec<String> = names
            .iter()
            .filter(|name| !exported.contains(name.as_str()) && !recorded.contains(name.as_str()))
            .cloned()
            .collect();
        if missing.is_empty() || tokio::time::Instant::now() > deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_grafana_dashboard_queries_only_metrics_the_services_export() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/dashboards/orderflow.json")).unwrap(),
    )
    .unwrap();
    let queried: BTreeSet<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap())
        .flat_map(|target| metric_names(target["expr"].as_str().unwrap()))
        .collect();
    assert!(
        queried.len() >= 8 && queried.iter().any(|name| name.starts_with("slo:")),
        "the dashboard queries too little: {queried:?}"
    );
    let missing = unproduced(&queried).await;
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics nobody exports: {missing:?}"
    );
}

#[tokio::test]
async fn the_alerting_rules_read_only_metrics_the_services_export() {
    let read = metric_names(&rules());
    assert!(read.len() >= 8, "the rules read too little: {read:?}");
    let missing = unproduced(&read).await;
    assert!(
        missing.is_empty(),
        "the alerting rules read metrics nobody exports: {missing:?}"
    );
}

/// Every binary an operator runs: each service's, and orderflow-admin.
fn binaries() -> impl Iterator<Item = &'static str> {
    let services = events::ServiceId::ALL.map(events::ServiceId::name);
    services.into_iter().chain(["orderflow-admin"])
}

#[test]
fn every_binary_says_the_version_the_manifests_deploy() {
    let version = env!("CARGO_PKG_VERSION");
    let base = std::fs::read_to_string(repo().join("deploy/k8s/base/kustomization.yaml")).unwrap();
    for binary in binaries() {
        let output = Command::new(service_binary(binary))
            .arg("--version")
            .output()
            .unwrap();
        assert!(output.status.success(), "{binary} --version failed");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            format!("{binary} {version}")
        );
        let deployed = format!("- name: ghcr.io/orderflow/{binary}\n    newTag: {version}\n");
        assert!(
            base.contains(&deployed),
            "the Kubernetes base does not deploy {binary}:{version}"
        );
    }
}

/// Every binary's `--help`, and its subcommands' (recursively): what an operator can set.
fn help_texts(binary: &str) -> Vec<(String, String)> {
    let mut texts = Vec::new();
    let mut pending = vec![Vec::<String>::new()];
    while let Some(command) = pending.pop() {
        let output = Command::new(service_binary(binary))
            .args(&command)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&output.stdout).into_owned();
        // "Commands:" lists the subcommands, two spaces in, until the next blank line.
        if let Some(commands) = help.split("Commands:\n").nth(1) {
            for line in commands.lines().take_while(|l| !l.trim().is_empty()) {
                let name = line.split_whitespace().next().unwrap_or_default();
                if line.starts_with("  ") && !line.starts_with("   ") && name != "help" {
                    pending.push([command.clone(), vec![name.to_owned()]].concat());
                }
            }
        }
        texts.push((
            format!("{binary} {}", command.join(" ")).trim().to_owned(),
            help,
        ));
    }
    texts
}

/// `(name, default)` of every `[env: NAME=…]` a help text shows.
fn settings_in(help: &str) -> Vec<(String, Option<String>)> {
    // clap writes each argument's help on the lines under it, ending in `[env: …]` and
    // `[default: …]`; join the lines so a bracket broken over two is whole.
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    help.split("[env: ")
        .skip(1)
        .map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let default = rest
                .split(']')
                .nth(1)
                .and_then(|after| after.trim_start().strip_prefix("[default: "))
                .map(|d| d.split(']').next().unwrap_or_default().to_owned());
            (name, default)
        })
        .collect()
}

#[test]
fn the_configuration_guide_documents_every_setting_the_binaries_read_with_their_defaults() {
    let guide = std::fs::read_to_string(repo().join("docs/configuration.md")).unwrap();
    // The table's rows: the variables of the first cell, and the default cell.
    let rows: Vec<(Vec<String>, String)> = guide
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split(" | ").collect();
            let names = cells[0]
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            (names, cells.get(1).copied().unwrap_or_default().to_owned())
        })
        .collect();
    let mut read = BTreeSet::new();
    let mut missing = Vec::new();
    for binary in binaries() {
        for (command, help) in help_texts(binary) {
            for (name, default) in settings_in(&help) {
                read.insert(name.clone());
                match rows.iter().find(|(names, _)| names.contains(&name)) {
                    None => missing.push(format!("{name} ({command})")),
                    Some((_, documented)) => {
                        if let Some(default) = default
                            && !documented.contains(&default)
                        {
                            missing.push(format!(
                                "{name} ({command}) defaults to {default}, the guide says {documented}"
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document these as the binaries read them: {missing:?}"
    );
    // And nothing documented that no binary reads, but what the libraries read themselves.
    let read_elsewhere = [
        "LOG_FORMAT",
        "RUST_LOG",
        "TOKIO_WORKER_THREADS",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_SERVICE_NAME",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_EXPORTER",
        "OTEL_SDK_DISABLED",
        "OTEL_BSP_*",
    ];
    let stale: Vec<&String> = rows
        .iter()
        .flat_map(|(names, _)| names)
        .filter(|name| {
            name.chars()
                .all(|c| c.is_ascii_uppercase() || "_*".contains(c))
        })
        .filter(|name| !read.contains(*name) && !read_elsewhere.contains(&name.as_str()))
        .collect();
    assert!(
        stale.is_empty(),
        "docs/configuration.md documents settings no binary reads: {stale:?}"
    );
}

/// The last lines of every log in `dir`, for a failure message.
fn logs_of(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        out.push_str(&format!("== {}\n{tail}\n", entry.path().display()));
    }
    out
}

#[tokio::test]
async fn scripts_dev_runs_the_system_locally_and_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let (nats, monitor, postgres, order, inventory, notification) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    // A test runner started as a background job inherits SIGINT *ignored*, and a shell cannot
    // trap a signal ignored on entry; a user's Ctrl-C at a terminal always finds it at its
    // default. Start the script the way a terminal would (GNU env resets the disposition).
    let mut dev = Command::new("env")
        .arg("--default-signal=INT")
        .arg("bash")
        .arg(repo().join("scripts/dev"))
        .env("DEV_DIR", dir.path())
        .env("DEV_SKIP_BUILD", "1")
        .env("NATS_PORT", nats.to_string())
        .env("NATS_MONITOR_PORT", monitor.to_string())
        .env("POSTGRES_PORT", postgres.to_string())
        .env("ORDER_PORT", order.to_string())
        .env("INVENTORY_PORT", inventory.to_string())
        .env("NOTIFICATION_PORT", notification.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    // A failed assertion below still stops what the script started.
    let interrupt_on_failure = InterruptOnDrop(Some(dev.id()));

    let http = http_client();
    let order_api = format!("http://127.0.0.1:{order}");
    // A first run makes its PostgreSQL cluster (initdb) and migrates it before the services
    // start: on a loaded CI machine that is more than the usual patience.
    let seeded = async {
        loop {
            let stock = http
                .get(format!("http://127.0.0.1:{inventory}/v1/stock/SKU-MUG"))
                .send()
                .await;
            if stock.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(120), seeded)
        .await
        .is_err()
    {
        panic!(
            "scripts/dev is not up and seeded within 2 minutes; it said:\n{}\nits logs:\n{}",
            std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default(),
            logs_of(&dir.path().join("logs"))
        );
    }
    // Closed by default: the stock admin API wants the token scripts/dev made and kept.
    let stock_url = format!("http://127.0.0.1:{inventory}/v1/stock/SKU-DEV");
    let body = serde_json::json!({ "available": 1 });
    let anonymous = http.put(&stock_url).json(&body).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    let admin = http
        .put(&stock_url)
        .bearer_auth(token.trim())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200);
    // NATS is closed as well: no login, no connection.
    let anonymous_nats = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(format!("nats://127.0.0.1:{nats}"))
        .await;
    assert!(
        anonymous_nats.is_err(),
        "scripts/dev's NATS let an anonymous client in"
    );
    let response = http
        .post(format!("{order_api}/v1/orders"))
        .json(&crate::support::order_body("devin", &[("SKU-MUG", 2)]))
        .send()
        .await
        .unwrap();
    let order_id = crate::support::accepted_order_id(response).await;
    eventually("the order is confirmed", || async {
        let order: serde_json::Value = http
            .get(format!("{order_api}/v1/orders/{order_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        order["status"] == "confirmed"
    })
    .await;

    // The README's flow, as scripts/e2e-compose and scripts/e2e-kind run it against Docker
    // and Kubernetes: the script they share works against a real system.
    let flow = Command::new("python3")
        .arg(repo().join("scripts/demo-flow"))
        .env("ORDER_URL", &order_api)
        .env("INVENTORY_URL", format!("http://127.0.0.1:{inventory}"))
        .env(
            "NOTIFICATION_URL",
            format!("http://127.0.0.1:{notification}"),
        )
        .env("ADMIN_TOKEN_FILE", dir.path().join("admin-token"))
        .output()
        .unwrap();
    assert!(
        flow.status.success(),
        "scripts/demo-flow failed against scripts/dev:\n{}{}",
        String::from_utf8_lossy(&flow.stdout),
        String::from_utf8_lossy(&flow.stderr)
    );

    // And loadgen logs in to a NATS that wants one (as the operator, as scripts/e2e-compose
    // runs it against the compose demo): every order it places ends.
    let load = Command::new(service_binary("loadgen"))
        .args([
            "--json",
            "saga",
            "--rate",
            "20",
            "--seconds",
            "2",
            "--no-ceiling",
        ])
        .env("NATS_URL", format!("nats://127.0.0.1:{nats}"))
        .env("NATS_USER", "operator")
        .env(
            "NATS_PASSWORD_FILE",
            dir.path().join("nats-operator-password"),
        )
        .env("ORDER_URL", &order_api)
        .env("INVENTORY_URL", format!("http://127.0.0.1:{inventory}"))
        .env("ADMIN_TOKEN", token.trim())
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "loadgen failed against scripts/dev: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&load.stdout).unwrap();
    let accepted = report["accepted"].as_u64().unwrap();
    assert!(accepted > 0, "loadgen placed no order: {report}");
    assert_eq!(
        report["confirmed"].as_u64().unwrap() + report["cancelled"].as_u64().unwrap(),
        accepted,
        "not every order loadgen placed ended: {report}"
    );

    // Ctrl-C reaches the script as SIGINT; it must stop every process it started.
    Command::new("kill")
        .arg("-INT")
        .arg(dev.id().to_string())
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dev.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "scripts/dev did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    interrupt_on_failure.disarm();
    for port in [nats, order, inventory, notification] {
        eventually("every port is released", || async {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        })
        .await;
    }
    // Nor does anything it started outlive it — its log view included.
    let dir_name = dir.path().to_string_lossy().into_owned();
    eventually("no process of scripts/dev is left", || async {
        processes_mentioning(&dir_name).is_empty()
    })
    .await;
}

/// Sends SIGINT to a process when dropped, unless disarmed once the process was reaped (its
/// pid may then be another process's).
struct InterruptOnDrop(Option<u32>);

impl InterruptOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The command lines of running processes that mention `text`.
fn processes_mentioning(text: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(text))
        .collect()
}
