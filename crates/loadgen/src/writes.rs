//! Counts the acknowledged writes the system makes, on the server: the sum of every stream's
//! last sequence (events and KV entries alike; a publish the server dropped as a duplicate does
//! not count). The difference across a run, divided by its orders, is the "acked writes per
//! order" of the R ratio — measured, so it stays true when the services change.

use anyhow::Context as _;
use async_nats::jetstream;
use futures::TryStreamExt as _;

/// Reads stream sequences from one server.
pub struct WriteCounter(jetstream::Context);

impl WriteCounter {
    /// A counter over `client`'s account.
    pub fn new(client: &async_nats::Client) -> Self {
        Self(jetstream::new(client.clone()))
    }

    /// Σ last sequence over all streams now.
    pub async fn total(&self) -> anyhow::Result<u64> {
        let streams: Vec<_> = self
            .0
            .streams()
            .try_collect()
            .await
            .context("listing streams")?;
        Ok(streams.iter().map(|s| s.state.last_sequence).sum())
    }
}
