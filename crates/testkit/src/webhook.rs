//! A webhook receiver: a real HTTP server on loopback that records every request and answers
//! with a status the test chooses, plus a Standard Webhooks signature check written here from
//! the specification — independent of the implementation the service signs with.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One received webhook.
#[derive(Debug, Clone)]
pub struct ReceivedWebhook {
    /// Lower-cased header names and their values.
    pub headers: HashMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl ReceivedWebhook {
    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    /// Checks `webhook-signature` against HMAC-SHA256(key, "{id}.{timestamp}.{body}").
    pub fn signature_is_valid(&self, key: &[u8]) -> bool {
        let (Some(id), Some(timestamp), Some(signatures)) = (
            self.header("webhook-id"),
            self.header("webhook-timestamp"),
            self.header("webhook-signature"),
        ) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length works for HMAC");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        signatures
            .split(' ')
            .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
    }
}

#[derive(Debug, Default)]
struct Shared {
    received: Vec<ReceivedWebhook>,
    /// Statuses to answer with, in order; 200 once exhausted.
    script: VecDeque<u16>,
}

/// A recording webhook endpoint on a loopback port.
#[derive(Debug, Clone)]
pub struct WebhookReceiver {
    url: String,
    shared: Arc<Mutex<Shared>>,
}

impl WebhookReceiver {
    /// Starts a receiver that answers 200.
    pub async fn start() -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, shared }
    }

    /// Where to send webhooks.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers the next requests with these statuses (then 200).
    pub fn respond_with(&self, statuses: &[u16]) {
        self.shared.lock().unwrap().script.extend(statuses);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<ReceivedWebhook> {
        self.shared.lock().unwrap().received.clone()
    }
}

async fn receive(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let mut shared = shared.lock().unwrap();
    shared.received.push(ReceivedWebhook {
        headers,
        body: body.to_vec(),
    });
    let status = shared.script.pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}
