//! The physical limit of the machine: raw pipelined, acknowledged JetStream publishes per second
//! (a window of in-flight acks, small payloads, file storage, one replica) and pull consume + ack
//! per second, on a scratch stream of the same nats-server the system uses. Every end-to-end
//! figure is reported against it.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use serde::Serialize;

const STREAM: &str = "LOADGEN_CEILING";
const SUBJECT: &str = "loadgen.ceiling";

/// How to measure the ceiling.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// How long to publish.
    #[arg(long, default_value_t = 3.0)]
    pub ceiling_seconds: f64,
    /// Publishes awaiting their ack at once.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 128)]
    pub payload: usize,
}

/// What the ceiling run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub window: usize,
    pub payload_bytes: usize,
    pub acked_publishes: u64,
    pub acked_publishes_per_sec: f64,
    pub consumed: u64,
    pub consume_acks_per_sec: f64,
}

impl Ceiling {
    /// Human-readable lines.
    pub fn print(&self) {
        println!(
            "ceiling: raw acked publishes {:.0}/s (window {}, {} B, file, R1); pull consume + ack {:.0}/s",
            self.acked_publishes_per_sec,
            self.window,
            self.payload_bytes,
            self.consume_acks_per_sec
        );
    }
}

/// Publishes for `options.seconds`, then consumes everything back; the scratch stream is removed.
pub async fn measure(client: &async_nats::Client, options: &Options) -> anyhow::Result<Ceiling> {
    let js = jetstream::new(client.clone());
    let _ = js.delete_stream(STREAM).await;
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECT.into()],
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .context("creating the scratch stream")?;
    let result = publish_then_consume(&js, options).await;
    let _ = js.delete_stream(STREAM).await;
    result
}

async fn publish_then_consume(
    js: &jetstream::Context,
    options: &Options,
) -> anyhow::Result<Ceiling> {
    let duration = Duration::from_secs_f64(options.ceiling_seconds.max(0.1));
    let window = options.window.max(1);

    // Publish: keep `window` acks in flight, count the acks that arrive within the time.
    let body = bytes::Bytes::from(vec![b'x'; options.payload]);
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut acked: u64 = 0;
    while started.elapsed() < duration {
        while in_flight.len() < window {
            in_flight.push(
                js.publish(SUBJECT, body.clone())
                    .await
                    .context("publishing")?
                    .into_future(),
            );
        }
        if let Some(ack) = in_flight.next().await {
            ack.context("waiting for a publish ack")?;
            acked += 1;
        }
    }
    while let Some(ack) = in_flight.next().await {
        ack.context("waiting for a publish ack")?;
        acked += 1;
    }
    let publish_secs = started.elapsed().as_secs_f64();

    // Consume: pull everything back and ack each message.
    let consumer = js
        .get_stream(STREAM)
        .await?
        .create_consumer(pull::Config {
            durable_name: Some("ceiling".into()),
            ..Default::default()
        })
        .await
        .context("creating the scratch consumer")?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(256)
        // Short pulls: a pull whose messages went missing (seen once on a loaded box) is
        // replaced within a second instead of after the default 30 s.
        .expires(Duration::from_secs(1))
        .messages()
        .await?;
    let started = Instant::now();
    let mut consumed: u64 = 0;
    // Bounded, but generously: a debug build on a loaded machine consumes far slower than it
    // published.
    while consumed < acked && started.elapsed() < (duration * 4).max(Duration::from_secs(60)) {
        match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
            Ok(Some(Ok(message))) => {
                message
                    .ack()
                    .await
                    .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
                consumed += 1;
            }
            Ok(Some(Err(e))) => anyhow::bail!("pulling: {e}"),
            Ok(None) => break,
            // Nothing for a while: keep pulling until the bound above.
            Err(_) => {}
        }
    }
    let consume_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        consumed == acked,
        "consumed {consumed} of {acked} published messages"
    );
    Ok(Ceiling {
        window,
        payload_bytes: options.payload,
        acked_publishes: acked,
        acked_publishes_per_sec: (acked as f64 / publish_secs).round(),
        consumed,
        consume_acks_per_sec: (consumed as f64 / consume_secs).round(),
    })
}
