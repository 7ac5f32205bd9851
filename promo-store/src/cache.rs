//! The shared Redis connection: multiplexed, reconnecting, with short timeouts
//! so that a dead Redis fails requests fast instead of hanging them.

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::path::Path;
use std::time::Duration;

pub type Redis = ConnectionManager;

/// Where Redis is: a `redis://` or `rediss://` url and, for `rediss://`, the
/// PEM file of the CA that signed the server's certificate when the system's
/// trust store does not hold it (a private or self-signed CA).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub url: &'a str,
    pub ca_file: Option<&'a Path>,
}

impl<'a> Target<'a> {
    pub fn new(url: &'a str, ca_file: Option<&'a Path>) -> Self {
        Target { url, ca_file }
    }

    /// The client, without connecting: a bad url or ca file fails here.
    pub fn client(&self) -> anyhow::Result<redis::Client> {
        let Some(ca) = self.ca_file else {
            return redis::Client::open(self.url)
                .with_context(|| format!("invalid redis url {}", self.url));
        };
        let pem = std::fs::read(ca)
            .with_context(|| format!("cannot read the redis ca file {}", ca.display()))?;
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        };
        redis::Client::build_with_tls(self.url, certs)
            .with_context(|| format!("invalid redis url or ca file {}", self.url))
    }
}

impl<'a> From<&'a str> for Target<'a> {
    fn from(url: &'a str) -> Self {
        Target::new(url, None)
    }
}

impl<'a> From<&'a String> for Target<'a> {
    fn from(url: &'a String) -> Self {
        Target::new(url, None)
    }
}

pub async fn connect<'a>(target: impl Into<Target<'a>>) -> anyhow::Result<Redis> {
    let target = target.into();
    connect_client(target.client()?, target.url, Duration::from_millis(1000)).await
}

/// [`connect`] with a client already made (from [`Target::client`]), for a
/// batch tool (`promoctl check`) whose replies may take up to `response`
/// (reading the per-user hash of a sale with a million buyers takes longer
/// than a request may wait). `url` only names Redis in errors.
pub async fn connect_client(
    client: redis::Client,
    url: &str,
    response: Duration,
) -> anyhow::Result<Redis> {
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
