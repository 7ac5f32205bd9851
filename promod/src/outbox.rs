//! The transactional outbox: events are written in the same transaction as the
//! change they describe, and a relay publishes them to Kafka afterwards.
//!
//! Delivery is at least once with a stable event id. The relay marks a row
//! published only after the broker acknowledged it; a crash in between
//! republishes the row, and consumers dedupe by `id`.

use chrono::{DateTime, Utc};
use promo_store::error::{to_json, StoreResult};
use promo_store::kafka::KafkaSecurity;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The envelope of API.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u32,
    pub aggregate_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    pub data: Value,
}

impl Event {
    pub fn new(
        event_type: &str,
        aggregate_id: impl ToString,
        user_id: Option<Uuid>,
        occurred_at: DateTime<Utc>,
        data: Value,
    ) -> Self {
        Event {
            id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            version: 1,
            aggregate_id: aggregate_id.to_string(),
            user_id,
            occurred_at,
            data,
        }
    }

    /// An event whose data is `data` serialized; a value that cannot be
    /// serialized is an error, never a `null` payload.
    pub fn of<T: Serialize>(
        event_type: &str,
        aggregate_id: impl ToString,
        user_id: Option<Uuid>,
        occurred_at: DateTime<Utc>,
        data: &T,
    ) -> StoreResult<Self> {
        let data = to_json("event data", data)?;
        Ok(Event::new(
            event_type,
            aggregate_id,
            user_id,
            occurred_at,
            data,
        ))
    }
}

/// Appends events inside the caller's transaction, in one statement.
pub async fn append(tx: &mut Transaction<'_, Postgres>, events: &[Event]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(events.len());
    let mut topics = Vec::with_capacity(events.len());
    let mut keys = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    for e in events {
        ids.push(e.id);
        topics.push(e.event_type.clone());
        keys.push(e.aggregate_id.clone());
        // A payload that cannot be encoded fails the write; it is never stored as null.
        payloads.push(to_json("event", e)?);
    }
    sqlx::query(
        "INSERT INTO outbox (id, topic, aggregate_id, payload)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[])",
    )
    .bind(ids)
    .bind(topics)
    .bind(keys)
    .bind(payloads)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub service: &'static str,
    pub brokers: String,
    pub security: KafkaSecurity,
    pub batch_size: i64,
    pub poll_interval: Duration,
}

pub fn producer(brokers: &str, security: &KafkaSecurity) -> anyhow::Result<FutureProducer> {
    security
        .client(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "10000")
        .set("socket.timeout.ms", "5000")
        .set("log_level", "3")
        .create()
        .map_err(|e| anyhow::anyhow!("cannot create kafka producer for {brokers}: {e}"))
}

/// A batch the broker did not acknowledge in full; its unacknowledged rows
/// stay pending.
#[derive(Debug, thiserror::Error)]
#[error("{unacknowledged} of {total} events not acknowledged (first error: {first_error})")]
pub struct Unacknowledged {
    pub unacknowledged: usize,
    pub total: usize,
    pub first_error: String,
}

#[derive(sqlx::FromRow)]
struct Pending {
    seq: i64,
    topic: String,
    aggregate_id: String,
    payload: Value,
}

/// Publishes one batch. Only one relay per database publishes at a time (a
/// transaction-scoped advisory lock), which keeps per-key order and avoids
/// double publishing in normal operation; `SKIP LOCKED` keeps a stuck peer
/// from blocking.
///
/// The transaction stays open while the broker acknowledges the batch (at most
/// `message.timeout.ms`, 10 s): it is what makes the lock and the marking one
/// unit. It locks only the batch's rows, which writers never touch (they only
/// insert), so a slow broker delays events, never requests.
pub async fn publish_batch(
    pool: &PgPool,
    producer: &FutureProducer,
    batch_size: i64,
    service: &'static str,
) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let (leader,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock(7250001)")
        .fetch_one(&mut *tx)
        .await?;
    if !leader {
        return Ok(0);
    }
    let rows: Vec<Pending> = sqlx::query_as(
        "SELECT seq, topic, aggregate_id, payload FROM outbox
         WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(batch_size)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let bodies: Vec<String> = rows.iter().map(|r| r.payload.to_string()).collect();
    let sends = rows.iter().zip(&bodies).map(|(r, body)| {
        producer.send(
            FutureRecord::to(&r.topic)
                .key(r.aggregate_id.as_str())
                .payload(body.as_str()),
            Duration::from_secs(10),
        )
    });
    let results = futures::future::join_all(sends).await;
    // Only the acknowledged prefix is marked, so order survives a partial failure.
    let acked: Vec<i64> = rows
        .iter()
        .zip(&results)
        .take_while(|(_, r)| r.is_ok())
        .map(|(row, _)| row.seq)
        .collect();
    let failed = results.iter().filter(|r| r.is_err()).count();
    let first_error = results
        .iter()
        .find_map(|r| r.as_ref().err().map(|(e, _)| e.to_string().to_lowercase()));
    if failed > 0 {
        metrics::counter!("promo_outbox_publish_failures_total", "service" => service)
            .increment(failed as u64);
    }
    if !acked.is_empty() {
        sqlx::query("UPDATE outbox SET published_at = now() WHERE seq = ANY($1)")
            .bind(&acked)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    metrics::counter!("promo_outbox_published_total", "service" => service)
        .increment(acked.len() as u64);
    if acked.len() < rows.len() {
        return Err(Unacknowledged {
            unacknowledged: rows.len() - acked.len(),
            total: rows.len(),
            first_error: first_error.unwrap_or_default(),
        }
        .into());
    }
    Ok(acked.len())
}

/// Backlog size and the age of the oldest pending row, as gauges.
pub async fn observe_backlog(pool: &PgPool, service: &'static str) -> sqlx::Result<(i64, f64)> {
    let (count, oldest): (i64, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT count(*), min(created_at) FROM outbox WHERE published_at IS NULL")
            .fetch_one(pool)
            .await?;
    let age = oldest
        .map(|t| (Utc::now() - t).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0);
    metrics::gauge!("promo_outbox_backlog", "service" => service).set(count as f64);
    metrics::gauge!("promo_outbox_oldest_age_seconds", "service" => service).set(age);
    Ok((count, age))
}

/// One service's publisher: the pool, the config and a producer that is made
/// on demand and replaced when it can no longer be trusted to deliver.
pub struct Relay {
    pool: PgPool,
    cfg: RelayConfig,
    producer: Option<FutureProducer>,
}

impl Relay {
    pub fn new(pool: PgPool, cfg: RelayConfig) -> Self {
        Relay {
            pool,
            cfg,
            producer: None,
        }
    }

    /// The current producer; `None` until the first publish and after one
    /// was dropped.
    pub fn producer(&self) -> Option<&FutureProducer> {
        self.producer.as_ref()
    }

    /// Publishes one batch, then drops the producer if it failed fatally or
    /// left part of the batch unacknowledged; the next call makes a fresh one.
    ///
    /// Why not keep it: an idempotent producer with a fatal error (e.g. a
    /// sequence desynchronisation) refuses every later send. And a broker
    /// that lost its producer state (restarted with memory storage, or a new
    /// cluster on the same address) answers UNKNOWN_PRODUCER_ID for ever:
    /// librdkafka bumps the epoch locally and retries without asking for a
    /// new producer id, so every message times out and no fatal error is
    /// ever raised. A new producer asks the broker for a new id. The rows
    /// stay pending with their ids, so the cost is a reconnect and, at
    /// worst, a duplicate of a message whose ack was lost.
    pub async fn publish_once(&mut self) -> anyhow::Result<usize> {
        if self.producer.is_none() {
            self.producer = Some(producer(&self.cfg.brokers, &self.cfg.security)?);
        }
        let p = self.producer.as_ref().expect("just made");
        let res = publish_batch(&self.pool, p, self.cfg.batch_size, self.cfg.service).await;
        let service = self.cfg.service;
        let fatal = p.client().fatal_error();
        let reason = if let Some((code, reason)) = &fatal {
            let reason = reason.to_lowercase();
            tracing::error!(service, code = ?code, reason = %reason, "kafka producer failed fatally, recreating it");
            "fatal"
        } else if res
            .as_ref()
            .is_err_and(|e| e.downcast_ref::<Unacknowledged>().is_some())
        {
            tracing::info!(
                service,
                "recreating the kafka producer after an unacknowledged batch"
            );
            "unacknowledged"
        } else {
            return res;
        };
        metrics::counter!("promo_outbox_producer_recreated_total", "service" => service, "reason" => reason)
            .increment(1);
        if let Some(old) = self.producer.take() {
            // Dropping purges and joins the producer's thread: keep that off the runtime.
            let _ = tokio::task::spawn_blocking(move || drop(old)).await;
        }
        match (res, fatal) {
            (Ok(_), Some((_, reason))) => Err(anyhow::anyhow!(
                "kafka producer failed fatally: {}",
                reason.to_lowercase()
            )),
            (res, _) => res,
        }
    }
}

/// The relay loop of one service. Without brokers it only observes the backlog.
pub async fn run_relay(pool: PgPool, cfg: RelayConfig, shutdown: CancellationToken) {
    let publishing = !cfg.brokers.is_empty();
    if !publishing {
        tracing::info!(
            service = cfg.service,
            "kafka not configured, events stay in the outbox"
        );
    }
    let service = cfg.service;
    let poll_interval = cfg.poll_interval;
    let batch_size = cfg.batch_size;
    let mut relay = Relay::new(pool.clone(), cfg);
    let mut backoff = poll_interval;
    let mut last_observe = Instant::now() - Duration::from_secs(10);
    loop {
        if last_observe.elapsed() >= Duration::from_secs(1) {
            last_observe = Instant::now();
            if let Err(e) = observe_backlog(&pool, service).await {
                tracing::debug!(service, error = %e, "outbox backlog query failed");
            }
        }
        let mut sleep = poll_interval;
        if publishing {
            match relay.publish_once().await {
                Ok(n) if n as i64 >= batch_size => sleep = Duration::ZERO,
                Ok(_) => backoff = poll_interval,
                Err(e) => {
                    tracing::warn!(service, error = %e, backoff_ms = backoff.as_millis() as u64, "outbox relay retrying");
                    sleep = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(sleep) => {}
        }
    }
    if publishing {
        // One last pass so rows committed just before shutdown go out now
        // rather than at the next start; it waits for its own acks.
        if let Err(e) = relay.publish_once().await {
            tracing::debug!(service, error = %e, "outbox final publish failed");
        }
    }
}

/// How a pruning pass deletes: `size` rows per statement, `pause` between
/// statements, so no statement holds many locks or much WAL and concurrent
/// writers and vacuum get their turn.
#[derive(Debug, Clone, Copy)]
pub struct Chunks {
    pub size: i64,
    pub pause: Duration,
}

impl Default for Chunks {
    fn default() -> Self {
        Chunks {
            size: 5000,
            pause: Duration::from_millis(50),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PruneConfig {
    pub service: &'static str,
    pub retention_secs: i64,
    pub interval: Duration,
    pub chunks: Chunks,
}

impl PruneConfig {
    pub fn new(service: &'static str, retention_secs: i64) -> Self {
        PruneConfig {
            service,
            retention_secs,
            interval: Duration::from_secs(60),
            chunks: Chunks::default(),
        }
    }
}

/// The database's time minus `secs`: rows are stamped by the database clock,
/// and one cutoff per pass lets the pass end while writes go on.
async fn cutoff(pool: &PgPool, secs: i64) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar("SELECT now() - make_interval(secs => $1)")
        .bind(secs as f64)
        .fetch_one(pool)
        .await
}

/// Runs `sql` (binding the cutoff and the chunk size, returning the rows it
/// deleted) until a chunk comes back short. Each statement must find its rows
/// through an index range scan and `LIMIT`, so its cost depends on the chunk,
/// not on the table.
pub(crate) async fn delete_in_chunks(
    pool: &PgPool,
    sql: &'static str,
    secs: i64,
    chunks: Chunks,
) -> sqlx::Result<u64> {
    let before = cutoff(pool, secs).await?;
    let mut total = 0;
    loop {
        let n = sqlx::query(sql)
            .bind(before)
            .bind(chunks.size)
            .execute(pool)
            .await?
            .rows_affected();
        total += n;
        if (n as i64) < chunks.size {
            return Ok(total);
        }
        tokio::time::sleep(chunks.pause).await;
    }
}

/// Deletes published rows older than `retention_secs`, in chunks on the
/// `outbox_published` index; pending rows are never touched. `SKIP LOCKED`
/// lets two pruners on one database share the work instead of queueing.
pub async fn prune_outbox(pool: &PgPool, retention_secs: i64, chunks: Chunks) -> sqlx::Result<u64> {
    delete_in_chunks(
        pool,
        "DELETE FROM outbox WHERE seq = ANY(ARRAY(
             SELECT seq FROM outbox
             WHERE published_at IS NOT NULL AND published_at < $1
             ORDER BY published_at LIMIT $2 FOR UPDATE SKIP LOCKED))",
        retention_secs,
        chunks,
    )
    .await
}

/// One pass over both tables, with metrics; failures are logged and the next
/// pass tries again.
pub async fn prune_once(pool: &PgPool, cfg: &PruneConfig) {
    let service = cfg.service;
    let start = Instant::now();
    let outbox = prune_outbox(pool, cfg.retention_secs, cfg.chunks).await;
    record_prune(service, "outbox", start, outbox);
    let start = Instant::now();
    let keys = crate::idempotency::prune(pool, cfg.retention_secs, cfg.chunks).await;
    record_prune(service, "idempotency_keys", start, keys);
}

fn record_prune(
    service: &'static str,
    table: &'static str,
    start: Instant,
    res: sqlx::Result<u64>,
) {
    metrics::histogram!("promo_prune_duration_seconds", "service" => service, "table" => table)
        .record(start.elapsed().as_secs_f64());
    match res {
        Ok(n) => {
            metrics::counter!("promo_pruned_rows_total", "service" => service, "table" => table)
                .increment(n);
            if n > 0 {
                tracing::debug!(service, table, rows = n, "pruned");
            }
        }
        Err(e) => tracing::warn!(service, table, error = %e, "prune failed"),
    }
}

/// The pruning loop of one service database: a pass at start, then one per
/// interval. It is its own task, not part of the relay loop, so a long pass
/// (a day's worth of rows after downtime, a lock wait) never delays
/// publishing.
pub async fn run_pruner(pool: PgPool, cfg: PruneConfig, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = prune_once(&pool, &cfg) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(cfg.interval) => {}
        }
    }
}
