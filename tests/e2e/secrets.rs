//! Secrets stay secret: a webhook URL that carries a token never shows up in a log line, a
//! span, a stored event or record, an API answer or `--help` — checked by grepping all of them
//! after a run that makes the notifier talk about its endpoint (a retry, then a 410 that
//! disables it).

use std::path::Path;
use std::process::Command;

use testkit::{OtlpReceiver, System, WebhookReceiver, service_binary};

use crate::support::{eventually, webhook_secret};

const TOKEN: &str = "s3cr3t-webhook-token-4f1d";

/// Every file under `dir` (recursively) whose bytes hold `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[tokio::test]
async fn the_webhook_url_shows_up_in_no_log_span_event_answer_or_help() {
    let receiver = WebhookReceiver::start().await;
    let otlp = OtlpReceiver::start().await;
    let url = format!("{}?token={TOKEN}", receiver.url());
    receiver.respond_with(&[500, 410]);
    let system = System::builder()
        .webhook(&url, &webhook_secret())
        .otlp(otlp.endpoint())
        .start()
        .await;
    system.set_stock("HUSH", 3).await;
    let mut answers = Vec::new();
    for _ in 0..2 {
        let order_id = system.place_order("hannah", &[("HUSH", 1)]).await;
        let notifications = format!(
            "{}/v1/notifications?order_id={order_id}",
            system.notification.url()
        );
        eventually("the notification has an outcome", || async {
            system
                .get_json(&notifications)
                .await
                .as_array()
                .is_some_and(|n| n.first().is_some_and(|n| n["status"] == "failed"))
        })
        .await;
        answers.push(system.get_json(&notifications).await);
        answers.push(
            system
                .get_json(&format!("{}/v1/orders/{order_id}", system.order.url()))
                .await,
        );
    }
    assert_eq!(receiver.received().len(), 2, "a retry, then 410 Gone");
    // The endpoint was talked about: the second order's failure says where, redacted.
    let failure = answers[2][0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(failure.contains("127.0.0.1"), "{failure}");

    for answer in &answers {
        assert!(
            !answer.to_string().contains(TOKEN),
            "an API answer: {answer}"
        );
    }
    eventually("spans are exported", || async { otlp.exports() > 0 }).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!otlp.exports_contain(TOKEN), "a span");
    let logs = files_containing(system.log_dir(), TOKEN);
    assert!(logs.is_empty(), "service logs: {logs:?}");
    // Every stream and bucket the server stores: events, records, dead letters.
    let stored = files_containing(system.nats.dir(), TOKEN);
    assert!(stored.is_empty(), "stored by nats-server: {stored:?}");
    let help = Command::new(service_binary("notification-service"))
        .arg("--help")
        .env("WEBHOOK_URL", &url)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("WEBHOOK_URL"), "{help}");
    assert!(!help.contains(TOKEN), "--help: {help}");
}
