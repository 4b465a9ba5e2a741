//! Stream snapshots, JetStream's own backup: the server streams a stream's messages — with
//! their sequences, timestamps and headers — as one compressed archive, and restores it into
//! a server where the stream does not exist yet. async-nats has no client for it, so this is
//! one, over plain requests (the protocol of `$JS.API.STREAM.SNAPSHOT` / `.RESTORE`).
//!
//! A snapshot holds the messages up to the stream's last sequence when it was asked for (newer
//! servers) or a little later (older ones): ingest is never paused. It is not a copy of a KV
//! bucket under writes — a record rewritten while the snapshot runs can be missed altogether
//! — so buckets are copied record by record instead (see `orderflow-admin backup`).

use std::io::{Read, Write};
use std::time::Duration;

use async_nats::{Client, Request};
use bytes::Bytes;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Bus;

/// Bytes per chunk the server sends (its default).
const SNAPSHOT_CHUNK: usize = 128 * 1024;
/// Bytes per chunk sent on restore: below every server's maximum payload.
const RESTORE_CHUNK: usize = 64 * 1024;
/// How long a snapshot may go without a chunk before it counts as lost.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may take to start a restore (a cluster picks a peer and elects first).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server may take to finish a restore after the last chunk.
const FINISH_TIMEOUT: Duration = Duration::from_secs(600);

/// A stream's configuration and state when its snapshot was taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamSnapshot {
    /// The stream's configuration (what a restore creates it with, after any change).
    pub config: Value,
    /// Its state at the start of the snapshot (`last_seq`, `messages`, …).
    pub state: Value,
    /// Bytes of archive written.
    pub bytes: u64,
}

impl StreamSnapshot {
    /// The stream's last sequence when the snapshot started.
    pub fn last_sequence(&self) -> u64 {
        self.state
            .get("last_seq")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }
}

/// A snapshot or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The server refused or could not be asked.
    #[error("{operation} of stream {stream}: {reason}")]
    Refused {
        /// `snapshot` or `restore`.
        operation: &'static str,
        /// The stream.
        stream: String,
        /// What the server (or the connection) said.
        reason: String,
    },
    /// Writing or reading the archive failed.
    #[error("{operation} of stream {stream}: the archive: {source}")]
    Archive {
        /// `snapshot` or `restore`.
        operation: &'static str,
        /// The stream.
        stream: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The server's answer to a snapshot or restore request.
#[derive(Debug, Deserialize)]
struct ApiResponse {
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    state: Option<Value>,
    #[serde(default)]
    deliver_subject: Option<String>,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    description: String,
    #[serde(default)]
    err_code: u64,
}

impl Bus {
    /// Streams a snapshot of `stream` (its messages; no consumers: they are recreated where it
    /// is restored) into `archive`, acknowledging each chunk as it is written.
    pub async fn snapshot_stream(
        &self,
        stream: &str,
        archive: &mut impl Write,
    ) -> Result<StreamSnapshot, SnapshotError> {
        let refused = |reason: String| SnapshotError::Refused {
            operation: "snapshot",
            stream: stream.to_owned(),
            reason,
        };
        let client = self.client();
        let inbox = client.new_inbox();
        // Subscribed before asking: the server sends the first chunk right after its answer.
        let mut chunks = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| refused(e.to_string()))?;
        let request = serde_json::json!({
            "deliver_subject": inbox,
            "no_consumers": true,
            "chunk_size": SNAPSHOT_CHUNK,
        });
        let answer = api_request(
            client,
            format!("{}.STREAM.SNAPSHOT.{stream}", self.api_prefix()),
            &request,
            CHUNK_TIMEOUT,
        )
        .await
        .map_err(refused)?;
        let (Some(config), Some(state)) = (answer.config, answer.state) else {
            return Err(refused("the answer names no configuration".into()));
        };
        let mut bytes = 0u64;
        loop {
            let chunk = tokio::time::timeout(CHUNK_TIMEOUT, chunks.next())
                .await
                .map_err(|_| refused(format!("no chunk within {CHUNK_TIMEOUT:?}")))?
                .ok_or_else(|| refused("the subscription ended".into()))?;
            if chunk.payload.is_empty() {
                // The end: a status says how it went (none, or 204, when it went well).
                return match chunk.status.map(u16::from) {
                    None | Some(204) => Ok(StreamSnapshot {
                        config,
                        state,
                        bytes,
                    }),
                    Some(code) => Err(refused(format!(
                        "ended with {code} {}",
                        chunk.description.unwrap_or_default()
                    ))),
                };
            }
            archive
                .write_all(&chunk.payload)
                .map_err(|source| SnapshotError::Archive {
                    operation: "snapshot",
                    stream: stream.to_owned(),
                    source,
                })?;
            bytes += chunk.payload.len() as u64;
            if let Some(reply) = chunk.reply {
                client
                    .publish(reply, Bytes::new())
                    .await
                    .map_err(|e| refused(e.to_string()))?;
            }
        }
    }

    /// Restores a snapshot of a stream, created with `config` (its name must be the
    /// snapshot's; replicas, placement and limits may differ), from `archive`. The stream must
    /// not exist. Returns the restored stream's state.
    pub async fn restore_stream(
        &self,
        config: &Value,
        archive: &mut impl Read,
    ) -> Result<Value, SnapshotError> {
        let stream = config
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let refused = |reason: String| SnapshotError::Refused {
            operation: "restore",
            stream: stream.clone(),
            reason,
        };
        // The server would refuse too, but it may first say its storage cannot hold a second
        // copy — this says what is wrong.
        if self.jetstream().get_stream(&stream).await.is_ok() {
            return Err(refused(
                "the stream exists (in use): a restore never overwrites a stream".into(),
            ));
        }
        let client = self.client();
        let answer = api_request(
            client,
            format!("{}.STREAM.RESTORE.{stream}", self.api_prefix()),
            &serde_json::json!({ "config": config, "state": {} }),
            START_TIMEOUT,
        )
        .await
        .map_err(&refused)?;
        let deliver = answer
            .deliver_subject
            .ok_or_else(|| refused("the answer names no subject to send to".into()))?;
        let mut buffer = vec![0u8; RESTORE_CHUNK];
        loop {
            let read =
                read_full(archive, &mut buffer).map_err(|source| SnapshotError::Archive {
                    operation: "restore",
                    stream: stream.clone(),
                    source,
                })?;
            if read == 0 {
                break;
            }
            // Each chunk is a request: the server answers once it has taken it (an error, or
            // nothing), which paces the upload. It gives up after 5 s without one.
            let ack = client
                .send_request(
                    deliver.clone(),
                    Request::new()
                        .payload(Bytes::copy_from_slice(&buffer[..read]))
                        .timeout(Some(CHUNK_TIMEOUT)),
                )
                .await
                .map_err(|e| refused(e.to_string()))?;
            if !ack.payload.is_empty() {
                return Err(refused(describe(&ack.payload)));
            }
        }
        // An empty chunk says "that was all"; the answer is the restored stream's info.
        let done = client
            .send_request(
                deliver,
                Request::new()
                    .payload(Bytes::new())
                    .timeout(Some(FINISH_TIMEOUT)),
            )
            .await
            .map_err(|e| refused(e.to_string()))?;
        let info: ApiResponse =
            serde_json::from_slice(&done.payload).map_err(|_| refused(describe(&done.payload)))?;
        if let Some(error) = info.error {
            return Err(refused(format!(
                "{} ({})",
                error.description, error.err_code
            )));
        }
        info.state
            .ok_or_else(|| refused("the answer has no stream state".into()))
    }
}

/// Sends one JetStream API request and reads its answer; the server's error as text.
async fn api_request(
    client: &Client,
    subject: String,
    body: &Value,
    timeout: Duration,
) -> Result<ApiResponse, String> {
    let answer = client
        .send_request(
            subject,
            Request::new()
                .payload(Bytes::from(body.to_string()))
                .timeout(Some(timeout)),
        )
        .await
        .map_err(|e| e.to_string())?;
    let answer: ApiResponse =
        serde_json::from_slice(&answer.payload).map_err(|_| describe(&answer.payload))?;
    match answer.error {
        Some(error) => Err(format!("{} ({})", error.description, error.err_code)),
        None => Ok(answer),
    }
}

/// A server answer that is not what was expected, as text to report.
fn describe(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    let text = text.trim();
    match serde_json::from_str::<ApiResponse>(text) {
        Ok(ApiResponse {
            error: Some(error), ..
        }) => format!("{} ({})", error.description, error.err_code),
        _ => format!(
            "unexpected answer: {}",
            text.chars().take(200).collect::<String>()
        ),
    }
}

/// Fills `buffer` as far as `reader` goes; how much was read (0: the end).
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
