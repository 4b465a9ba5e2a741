//! The load generator runs and reports (a smoke test: no timing is asserted; figures belong in
//! BENCHMARKS.md).

use std::process::Command;

use testkit::{NatsServer, service_binary};

#[test]
fn loadgen_ceiling_reports_acked_publishes_and_consumes_them_all() {
    let server = NatsServer::start();
    let output = Command::new(service_binary("loadgen"))
        .args([
            "ceiling",
            "--ceiling-seconds",
            "1",
            "--json",
            "--nats-url",
            &server.url(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["mode"], "ceiling");
    let acked = report["acked_publishes"].as_u64().unwrap();
    assert!(acked > 0, "{report}");
    assert_eq!(report["consumed"].as_u64(), Some(acked), "{report}");
}
