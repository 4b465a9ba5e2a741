//! The load generator runs and reports (smoke tests: no timing is asserted; figures belong in
//! BENCHMARKS.md).

use std::process::Command;

use testkit::{ADMIN_TOKEN, NatsServer, System, free_port, service_binary};

fn run_loadgen(args: &[&str]) -> serde_json::Value {
    let output = Command::new(service_binary("loadgen"))
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn loadgen_ceiling_reports_acked_publishes_and_consumes_them_all() {
    let server = NatsServer::start();
    let report = run_loadgen(&[
        "ceiling",
        "--ceiling-seconds",
        "1",
        "--json",
        "--nats-url",
        &server.url(),
    ]);
    assert_eq!(report["mode"], "ceiling");
    let acked = report["acked_publishes"].as_u64().unwrap();
    assert!(acked > 0, "{report}");
    assert_eq!(report["consumed"].as_u64(), Some(acked), "{report}");
}

#[test]
fn loadgen_footprint_counts_four_subjects_per_order_and_reports_the_memory_they_take() {
    let monitor_port = free_port();
    let server = NatsServer::builder()
        .config(&format!("http: 127.0.0.1:{monitor_port}"))
        .start();
    let report = run_loadgen(&[
        "footprint",
        "--orders",
        "200",
        "--json",
        "--nats-url",
        &server.url(),
        "--nats-monitor-url",
        &format!("http://127.0.0.1:{monitor_port}"),
    ]);
    assert_eq!(report["messages"].as_u64(), Some(800), "{report}");
    assert_eq!(report["subjects"].as_u64(), Some(800), "{report}");
    assert!(report["stream_bytes"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["server_rss_after_mb"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_flash_sells_exactly_the_units_there_are_and_cancels_the_rest() {
    let system = System::builder().start().await;
    let (nats, order, inventory) = (
        system.nats.url(),
        system.order.url(),
        system.inventory[0].url(),
    );
    let report = tokio::task::spawn_blocking(move || {
        run_loadgen(&[
            "flash",
            "--units",
            "40",
            "--orders",
            "150",
            "--max-in-flight",
            "32",
            "--json",
            "--nats-url",
            &nats,
            "--order-url",
            &order,
            "--inventory-url",
            &inventory,
        ])
    })
    .await
    .unwrap();

    assert_eq!(report["mode"], "flash", "{report}");
    assert_eq!(report["exact"], true, "{report}");
    assert_eq!(report["oversold"], false, "{report}");
    assert_eq!(report["saga"]["accepted"].as_u64(), Some(150), "{report}");
    assert_eq!(report["saga"]["confirmed"].as_u64(), Some(40), "{report}");
    assert_eq!(report["saga"]["cancelled"].as_u64(), Some(110), "{report}");
    assert_eq!(
        report["stock_after"],
        serde_json::json!([0, 40, 0]),
        "{report}"
    );
    assert!(
        report["sell_out_seconds"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_saga_every_second_reports_latency_memory_and_the_archives_lag() {
    let system = System::builder().start().await;
    let pids = format!(
        "nats-server={},order-service={}",
        system.nats.pid().unwrap(),
        system.order.pid().unwrap()
    );
    let args = [
        "saga",
        "--rate",
        "50",
        "--seconds",
        "3",
        "--every",
        "1",
        "--no-ceiling",
        "--skus",
        "4",
        "--json",
        "--nats-url",
        &system.nats.url(),
        "--order-url",
        &system.order.url(),
        "--inventory-url",
        &system.inventory[0].url(),
        "--system-pids",
        &pids,
    ]
    .map(str::to_owned);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(service_binary("loadgen"))
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();

    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["accepted"].as_u64(), Some(150), "{report}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("t=")).collect();
    assert!(lines.len() >= 2, "{stderr}");
    for line in &lines {
        assert!(line.contains("confirmed p50"), "{line}");
        assert!(
            line.contains("nats-server ") && line.contains(" MB"),
            "{line}"
        );
        assert!(line.contains("archive behind"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_saga_follows_every_order_to_its_end_and_reports_r() {
    let monitor_port = free_port();
    let nats = NatsServer::builder()
        .config(&format!("http: 127.0.0.1:{monitor_port}"))
        .start();
    let system = System::builder().nats(nats).start().await;
    let (nats, order, inventory) = (
        system.nats.url(),
        system.order.url(),
        system.inventory[0].url(),
    );
    let monitor = format!("http://127.0.0.1:{monitor_port}");
    let report = tokio::task::spawn_blocking(move || {
        run_loadgen(&[
            "saga",
            "--rate",
            "100",
            "--seconds",
            "2",
            "--warmup",
            "0.5",
            "--ceiling-seconds",
            "0.5",
            "--skus",
            "8",
            "--json",
            "--nats-url",
            &nats,
            "--order-url",
            &order,
            "--inventory-url",
            &inventory,
            "--nats-monitor-url",
            &monitor,
        ])
    })
    .await
    .unwrap();

    assert_eq!(report["mode"], "saga", "{report}");
    assert_eq!(report["load"]["open"]["rate"], 100.0, "{report}");
    let sent = report["sent"].as_u64().unwrap();
    assert_eq!(sent, 200, "{report}");
    // Stock was seeded, so every order is confirmed and notified, and nothing failed.
    assert_eq!(report["accepted"].as_u64(), Some(sent), "{report}");
    assert_eq!(report["confirmed"].as_u64(), Some(sent), "{report}");
    assert_eq!(report["notified"].as_u64(), Some(sent), "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    for latency in ["accept", "confirmed", "notified"] {
        let summary = &report["latency_ms"][latency];
        assert!(summary["count"].as_u64().unwrap() > 0, "{report}");
        assert!(
            summary["p50"].as_f64().unwrap() <= summary["max"].as_f64().unwrap(),
            "{report}"
        );
    }
    // Every order writes events and KV entries; the ratio to the ceiling is reported.
    assert!(
        report["writes_per_order"].as_f64().unwrap() >= 4.0,
        "{report}"
    );
    assert!(
        report["ceiling"]["acked_publishes_per_sec"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(report["r"].as_f64().unwrap() > 0.0, "{report}");
    // Every stored write reached the server as a message, and every order was answered.
    let messages = &report["server_messages_per_order"];
    assert!(
        messages["inbound"].as_f64().unwrap() >= report["writes_per_order"].as_f64().unwrap(),
        "{report}"
    );
    assert!(messages["outbound"].as_f64().unwrap() > 0.0, "{report}");
}

#[test]
fn loadgen_sweep_writes_its_curve_as_csv_and_svg() {
    // The curve needs no services to be written: against a system that is not there, the first
    // step fails every request, is called saturated, and the CSV still has its header and row.
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("sweep.csv");
    let svg = dir.path().join("sweep.svg");
    let report = run_loadgen(&[
        "sweep",
        "--from",
        "20",
        "--seconds",
        "0.5",
        "--warmup",
        "0",
        "--drain-seconds",
        "0.5",
        "--stock",
        "0",
        "--no-ceiling",
        "--json",
        "--nats-url",
        &server.url(),
        "--order-url",
        "http://127.0.0.1:9",
        "--csv",
        csv.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(report["mode"], "sweep", "{report}");
    assert_eq!(report["steps"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["max_sustained_offered"], 0.0, "{report}");
    assert!(
        report["steps"][0]["errors"]["http_connect"]
            .as_u64()
            .unwrap()
            > 0
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("offered_per_sec,ended_per_sec"),
        "{text}"
    );
    assert!(lines[1].starts_with("20,"), "{text}");
    let drawing = std::fs::read_to_string(&svg).unwrap();
    assert!(
        drawing.starts_with("<svg") && drawing.contains("sweep"),
        "{drawing}"
    );
}
