//! `loadgen`: measures orderflow against the ceiling of the machine it runs on.
//!
//! So far the `ceiling` mode: raw pipelined, acknowledged JetStream publishes per second
//! (a window of in-flight acks, small payloads, file storage, one replica) and pull
//! consume + ack per second, against the same nats-server the system uses — the physical limit
//! every end-to-end figure is compared with. (`saga` and `sweep` modes: issue 5, next.)

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, stream};
use clap::Parser as _;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

#[derive(Debug, clap::Parser)]
#[command(name = "loadgen", version, about = "orderflow load generator")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// Raw acked publishes/s and pull consume+ack/s on a scratch stream.
    Ceiling {
        /// NATS server.
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// How long to publish.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Publishes awaiting their ack at once.
        #[arg(long, default_value_t = 256)]
        window: usize,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 128)]
        payload: usize,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

const STREAM: &str = "LOADGEN_CEILING";
const SUBJECT: &str = "loadgen.ceiling";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().mode {
        Mode::Ceiling {
            nats_url,
            seconds,
            window,
            payload,
            json,
        } => {
            ceiling(
                &nats_url,
                Duration::from_secs_f64(seconds),
                window.max(1),
                payload,
                json,
            )
            .await
        }
    }
}

async fn ceiling(
    url: &str,
    duration: Duration,
    window: usize,
    payload: usize,
    json: bool,
) -> anyhow::Result<()> {
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let js = jetstream::new(client);
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

    // Publish: keep `window` acks in flight, count the acks that arrive within the time.
    let body = bytes::Bytes::from(vec![b'x'; payload]);
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
        .messages()
        .await?;
    let started = Instant::now();
    let mut consumed: u64 = 0;
    while consumed < acked && started.elapsed() < duration * 4 {
        match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
            Ok(Some(Ok(message))) => {
                message
                    .ack()
                    .await
                    .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
                consumed += 1;
            }
            Ok(Some(Err(e))) => anyhow::bail!("pulling: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    let consume_secs = started.elapsed().as_secs_f64();
    let _ = js.delete_stream(STREAM).await;

    let publish_rate = acked as f64 / publish_secs;
    let consume_rate = consumed as f64 / consume_secs;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "mode": "ceiling", "window": window, "payload_bytes": payload,
                "acked_publishes": acked, "acked_publishes_per_sec": publish_rate.round(),
                "consumed": consumed, "consume_acks_per_sec": consume_rate.round(),
            })
        );
    } else {
        println!(
            "raw acked publishes: {acked} in {publish_secs:.2} s = {publish_rate:.0}/s (window {window}, {payload} B, file, R1)"
        );
        println!("pull consume + ack:  {consumed} in {consume_secs:.2} s = {consume_rate:.0}/s");
    }
    anyhow::ensure!(
        consumed == acked,
        "consumed {consumed} of {acked} published messages"
    );
    Ok(())
}
