//! The shared Redis connection: multiplexed, reconnecting, with short timeouts
//! so that a dead Redis fails requests fast instead of hanging them.

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

pub type Redis = ConnectionManager;

pub async fn connect(url: &str) -> anyhow::Result<Redis> {
    connect_waiting(url, Duration::from_millis(1000)).await
}

/// [`connect`] for a batch tool (`promoctl check`): a reply may take up to
/// `response` (reading the per-user hash of a sale with a million buyers takes
/// longer than a request may wait).
pub async fn connect_waiting(url: &str, response: Duration) -> anyhow::Result<Redis> {
    let client = redis::Client::open(url).with_context(|| format!("invalid redis url {url}"))?;
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_millis(1000))
        .set_response_timeout(response)
        // No reconnect retries inside a request: the crate's backoff waits
        // at least 1 s (plus jitter) before a retry, so a request meeting a
        // dead Redis took ~1.5 s to get its 503. The next request tries a
        // fresh connection anyway.
        .set_number_of_retries(0);
    tokio::time::timeout(
        Duration::from_secs(3),
        ConnectionManager::new_with_config(client, cfg),
    )
    .await
    .map_err(|_| anyhow::anyhow!("redis at {url} did not answer within 3s"))?
    .with_context(|| format!("cannot connect to redis at {url}"))
}
