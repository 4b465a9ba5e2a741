//! The HTTP contracts hold: schemathesis fuzzes each service against the OpenAPI document it
//! serves — examples, coverage, fuzzing and the stateful phase, with `--checks all`, a bounded
//! number of cases — and finds nothing; a client generated from the order service's document
//! by openapi-python-client runs the README's flow. Then what the fuzzer found once, kept as
//! regression tests. The tools are pinned in `tests/contract/requirements.txt`; scripts/test
//! installs them and names their directory in `CONTRACT_TOOLS_BIN`.

use std::path::{Path, PathBuf};

use serde_json::json;
use testkit::{ADMIN_TOKEN, TestApp, answer};

/// Cases per operation and phase: enough to cover every constraint, bounded for CI.
const EXAMPLES: &str = "25";

fn contract_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contract")
}

/// A contract tool: from `CONTRACT_TOOLS_BIN` when set, else from `PATH`.
fn tool(name: &str) -> std::process::Command {
    let path = std::env::var_os("CONTRACT_TOOLS_BIN")
        .map(|dir| PathBuf::from(dir).join(name))
        .unwrap_or_else(|| name.into());
    let mut command = std::process::Command::new(path);
    if let Some(dir) = std::env::var_os("CONTRACT_TOOLS_BIN") {
        // The client generator formats its output with the venv's ruff.
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![PathBuf::from(dir)];
        dirs.extend(std::env::split_paths(&path));
        command.env("PATH", std::env::join_paths(dirs).unwrap());
    }
    command
}

/// Runs `command` off the runtime's thread (the test's own tasks keep running) and fails
/// with its output unless it succeeds.
async fn succeeds(mut command: std::process::Command, what: &str) -> String {
    let shown = format!("{command:?}");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {shown} ({e}): run scripts/test, or \
                 `pip install -r tests/contract/requirements.txt`"
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what}:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs schemathesis against `service` and fails with its report when it finds anything.
async fn fuzz(service: fn(&TestApp) -> &str) {
    let app = TestApp::builder().spawn().await;
    app.set_stock("0", 1_000_000).await;
    let url = service(&app);
    let mut command = tool("schemathesis");
    command
        .current_dir(contract_dir())
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", contract_dir())
        .env("NO_COLOR", "1")
        .args(["run", &format!("{url}/openapi.json"), "--checks", "all"])
        .args(["--max-examples", EXAMPLES])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")]);
    succeeds(
        command,
        &format!("schemathesis found contract failures on {url}"),
    )
    .await;
}

#[tokio::test]
async fn schemathesis_finds_nothing_on_the_order_service() {
    fuzz(|app| app.order_url()).await;
}

#[tokio::test]
async fn schemathesis_finds_nothing_on_the_inventory_service() {
    fuzz(|app| app.inventory_url()).await;
}

#[tokio::test]
async fn schemathesis_finds_nothing_on_the_notification_service() {
    fuzz(|app| app.notification_url()).await;
}

#[tokio::test]
async fn a_client_generated_from_the_order_document_runs_the_readme_flow() {
    let app = TestApp::builder().spawn().await;
    app.set_stock("SKU-MUG", 10).await;
    let dir = tempfile::tempdir().unwrap();
    let document = app.order_openapi().await;
    std::fs::write(dir.path().join("openapi.json"), document.to_string()).unwrap();

    let mut generate = tool("openapi-python-client");
    generate.current_dir(dir.path()).args([
        "generate",
        "--path",
        "openapi.json",
        "--output-path",
        "client",
    ]);
    succeeds(generate, "openapi-python-client cannot generate a client").await;
    let mut flow = tool("python3");
    flow.env("PYTHONPATH", dir.path().join("client"))
        .arg(contract_dir().join("readme_flow.py"))
        .args([app.order_url(), "SKU-MUG"]);
    let said = succeeds(flow, "the generated client's README flow failed").await;
    assert!(
        said.contains("history: pending, confirmed, cancelled"),
        "{said}"
    );
}

#[tokio::test]
async fn a_quantity_written_with_a_zero_fraction_is_a_whole_number() {
    let app = TestApp::builder().spawn().await;
    app.set_stock("WHOLE", 5).await;
    let body = json!({
        "customer_id": "fay",
        "currency": "EUR",
        "items": [{"sku": "WHOLE", "quantity": 2.0, "unit_price_cents": 100.0}],
    });
    let request = app
        .http
        .post(format!("{}/v1/orders", app.order_url()))
        .json(&body);
    let (status, _, _) = answer(request).await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn a_malformed_order_id_is_a_documented_400_problem() {
    let app = TestApp::builder().spawn().await;
    let request = app
        .http
        .post(format!("{}/v1/orders/0/cancel", app.order_url()));
    let (status, problem, media) = answer(request).await;
    assert_eq!((status, media.as_str()), (400, "application/problem+json"));
    assert_eq!(
        problem["type"],
        "https://orderflow.dev/problems/invalid-path"
    );
}

#[tokio::test]
async fn dead_letter_zero_does_not_exist_rather_than_failing() {
    let app = TestApp::builder().spawn().await;
    let request = app
        .http
        .get(format!("{}/admin/dead-letters/0", app.order_url()))
        .bearer_auth(ADMIN_TOKEN);
    let (status, _, media) = answer(request).await;
    assert_eq!((status, media.as_str()), (404, "application/problem+json"));
}

#[tokio::test]
async fn a_dead_letter_page_after_the_largest_sequence_is_refused() {
    let app = TestApp::builder().spawn().await;
    let request = app
        .http
        .get(format!(
            "{}/admin/dead-letters?after=9223372036854775808",
            app.order_url()
        ))
        .bearer_auth(ADMIN_TOKEN);
    let (status, problem, _) = answer(request).await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["field"], "after");
}

#[tokio::test]
async fn every_documented_error_is_problem_json_with_its_headers() {
    let app = TestApp::builder().spawn().await;
    let openapi = app.order_openapi().await;
    let create = &openapi["paths"]["/v1/orders"]["post"]["responses"];
    for status in ["400", "413", "415", "422", "429", "500", "503"] {
        assert!(
            create[status]["content"]["application/problem+json"].is_object(),
            "POST /v1/orders {status} is not declared as problem JSON: {create}"
        );
    }
    assert!(create["429"]["headers"]["Retry-After"].is_object());
    assert!(create["202"]["headers"]["Location"].is_object());
    assert!(create["202"]["headers"]["Idempotent-Replayed"].is_object());
    let list = &openapi["paths"]["/admin/dead-letters"]["get"]["responses"];
    for status in ["401", "403"] {
        assert!(list[status]["content"]["application/problem+json"].is_object());
    }
}
