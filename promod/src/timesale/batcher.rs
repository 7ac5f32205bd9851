//! Group commit for time-sale orders: orders admitted by Redis queue here and
//! are stored many per transaction. Each caller waits for its own commit, so a
//! response is never sent before the data is durable.

use super::store::{self, InsertOutcome, PendingOrder};
use promo_domain::DomainError;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

pub const MAX_BATCH: usize = 256;

type Job = (
    PendingOrder,
    oneshot::Sender<Result<InsertOutcome, DomainError>>,
);

#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts `workers` committers; more than one overlaps a commit's fsync with
    /// the next batch's statements.
    pub fn start(pool: PgPool, workers: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(MAX_BATCH * 16);
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..workers.max(1) {
            let rx = rx.clone();
            let pool = pool.clone();
            tokio::spawn(async move {
                loop {
                    let mut jobs = Vec::with_capacity(MAX_BATCH);
                    {
                        let mut rx = rx.lock().await;
                        if rx.recv_many(&mut jobs, MAX_BATCH).await == 0 {
                            return;
                        }
                    }
                    commit(&pool, jobs).await;
                }
            });
        }
        Batcher { tx }
    }

    pub async fn submit(&self, p: PendingOrder) -> Result<InsertOutcome, DomainError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((p, tx))
            .await
            .map_err(|_| DomainError::Unavailable("order writer stopped".into()))?;
        rx.await
            .map_err(|_| DomainError::Unavailable("order writer stopped".into()))?
    }
}

async fn commit(pool: &PgPool, jobs: Vec<Job>) {
    let (pending, replies): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
    metrics::histogram!("promo_timesale_batch_size").record(pending.len() as f64);
    match store::insert_batch(pool, &pending).await {
        Ok(outcomes) => {
            for (reply, o) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(o));
            }
        }
        Err(e) if pending.len() > 1 && store::refusal_of(&e).is_some() => {
            // One member broke a constraint; find it by storing them one by one.
            for (p, reply) in pending.into_iter().zip(replies) {
                let _ = reply.send(single(pool, p).await);
            }
        }
        Err(e) => {
            let err = store::refusal_of(&e).unwrap_or_else(|| crate::error::from_sqlx(e));
            for reply in replies {
                let _ = reply.send(Ok(InsertOutcome::Refused(err.clone())));
            }
        }
    }
}

async fn single(pool: &PgPool, p: PendingOrder) -> Result<InsertOutcome, DomainError> {
    match store::insert_batch(pool, std::slice::from_ref(&p)).await {
        Ok(mut o) => Ok(o.pop().unwrap_or(InsertOutcome::Stored)),
        Err(e) => Ok(InsertOutcome::Refused(
            store::refusal_of(&e).unwrap_or_else(|| crate::error::from_sqlx(e)),
        )),
    }
}
