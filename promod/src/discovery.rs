//! Service discovery. Service roles register their gRPC endpoint in etcd under
//! a lease kept alive while they run; the gateway watches the prefix and
//! balances over the live instances. Without etcd, static addresses are used.

use anyhow::Context;
use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use std::time::Duration;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

pub async fn connect(endpoints: &[String]) -> anyhow::Result<Client> {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(3));
    tokio::time::timeout(
        Duration::from_secs(3),
        Client::connect(endpoints, Some(opts)),
    )
    .await
    .map_err(|_| anyhow::anyhow!("etcd at {} did not answer within 3s", endpoints.join(",")))?
    .with_context(|| format!("cannot connect to etcd at {}", endpoints.join(",")))
}

fn key(prefix: &str, service: &str, instance: &str) -> String {
    format!("{prefix}/{service}/{instance}")
}

/// Registers `url` for `service` and keeps the lease alive until shutdown,
/// then revokes it so the gateway drops the instance at once.
pub async fn register(
    mut client: Client,
    prefix: String,
    service: &'static str,
    url: String,
    ttl: i64,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let instance = uuid::Uuid::new_v4().to_string();
    let k = key(&prefix, service, &instance);
    let lease = client.lease_grant(ttl, None).await?.id();
    client
        .put(
            k.clone(),
            url.clone(),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await?;
    tracing::info!(service, url = %url, key = %k, "registered in etcd");
    Ok(tokio::spawn(async move {
        let mut lease = lease;
        // On a lost lease (etcd restarted, long pause) register again.
        while let Err(e) = keep_alive(&mut client, lease, ttl, &shutdown).await {
            tracing::warn!(service, error = %e, "etcd keep-alive lost, re-registering");
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if let Ok(l) = client.lease_grant(ttl, None).await {
                let opts = PutOptions::new().with_lease(l.id());
                if client.put(k.clone(), url.clone(), Some(opts)).await.is_ok() {
                    lease = l.id();
                }
            }
        }
        let _ = client.lease_revoke(lease).await;
    }))
}

async fn keep_alive(
    client: &mut Client,
    lease: i64,
    ttl: i64,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
    let period = Duration::from_millis((ttl.max(1) as u64 * 1000) / 3);
    loop {
        keeper.keep_alive().await?;
        match stream.message().await? {
            Some(r) if r.ttl() > 0 => {}
            _ => anyhow::bail!("lease {lease} expired"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(period) => {}
        }
    }
}

fn endpoint(url: &str, timeout: Duration) -> Option<Endpoint> {
    Endpoint::from_shared(url.to_owned()).ok().map(|e| {
        e.connect_timeout(Duration::from_secs(1))
            .timeout(timeout)
            .tcp_nodelay(true)
    })
}

/// A channel to a static address, connected lazily so that the gateway starts
/// even when the service is not up yet (its breaker covers the gap).
pub fn static_channel(url: &str, timeout: Duration) -> anyhow::Result<Channel> {
    endpoint(url, timeout)
        .map(|e| e.connect_lazy())
        .ok_or_else(|| anyhow::anyhow!("invalid grpc address `{url}`"))
}

/// A channel balanced over the live instances of `service` in etcd, kept in
/// step by a watch until shutdown.
pub async fn watched_channel(
    mut client: Client,
    prefix: &str,
    service: &'static str,
    timeout: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<Channel> {
    let (channel, tx) = Channel::balance_channel::<String>(64);
    let dir = format!("{prefix}/{service}/");
    let resp = client
        .get(dir.clone(), Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    for kv in resp.kvs() {
        insert(
            &tx,
            service,
            kv.key_str().unwrap_or_default(),
            kv.value_str().unwrap_or_default(),
            timeout,
        )
        .await;
    }
    tokio::spawn(async move {
        let mut from = revision + 1;
        loop {
            let opts = WatchOptions::new().with_prefix().with_start_revision(from);
            let watch = client.watch(dir.clone(), Some(opts)).await;
            let Ok((_watcher, mut stream)) = watch else {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            };
            loop {
                let msg = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = stream.message() => m,
                };
                let Ok(Some(resp)) = msg else { break };
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    from = from.max(kv.mod_revision() + 1);
                    let k = kv.key_str().unwrap_or_default().to_owned();
                    match ev.event_type() {
                        EventType::Put => {
                            insert(
                                &tx,
                                service,
                                &k,
                                kv.value_str().unwrap_or_default(),
                                timeout,
                            )
                            .await
                        }
                        EventType::Delete => {
                            tracing::info!(service, key = %k, "instance left");
                            let _ = tx.send(Change::Remove(k)).await;
                        }
                    }
                }
            }
        }
    });
    Ok(channel)
}

async fn insert(
    tx: &Sender<Change<String, Endpoint>>,
    service: &'static str,
    key: &str,
    url: &str,
    timeout: Duration,
) {
    match endpoint(url, timeout) {
        Some(e) => {
            tracing::info!(service, key, url, "instance joined");
            let _ = tx.send(Change::Insert(key.to_owned(), e)).await;
        }
        None => tracing::warn!(service, key, url, "ignoring invalid endpoint in etcd"),
    }
}
