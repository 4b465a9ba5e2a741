//! The quickstart example (`crates/bus/examples/quickstart.rs`) runs against a real server and
//! does what it prints: cargo builds examples before it runs a package's tests.

use std::process::Command;

use testkit::NatsServer;

#[tokio::test]
async fn the_quickstart_example_appends_refuses_a_second_create_consumes_and_counts() {
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("quickstart"))
        .unwrap();
    assert!(
        example.is_file(),
        "{} is missing: run the test through cargo, which builds examples",
        example.display()
    );
    let server = NatsServer::start();

    let output = tokio::task::spawn_blocking(move || {
        Command::new(example)
            .env("NATS_URL", server.url())
            .output()
            .unwrap()
    })
    .await
    .unwrap();

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "second create refused; history has 1 event(s)",
        "consumed orders.0.ada.",
        "orders counted: 1",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
}
