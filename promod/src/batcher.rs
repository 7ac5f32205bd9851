//! Group commit, shared by the roles that store many small writes (coupon
//! issues, time-sale orders, point changes): requests queue here and are
//! stored many per transaction. Each caller waits for its own commit, so a
//! response is never sent before the data is durable.

use promo_domain::DomainError;
use promo_store::error::{StoreError, StoreResult};
use sqlx::PgPool;
use std::future::Future;
use std::marker::PhantomData;
use tokio::sync::{mpsc, oneshot};

pub const MAX_BATCH: usize = 256;

/// Why one member of a batch was or was not stored. `S` is what a stored
/// member learns from the database (nothing for coupons and orders, the
/// balance for point changes).
#[derive(Debug, Clone, PartialEq)]
pub enum InsertOutcome<S = ()> {
    Stored(S),
    /// Another request with the same idempotency key was stored first.
    Duplicate,
    Refused(DomainError),
}

/// How one kind of row is stored in batches.
pub trait BatchStore: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    /// What a stored member answers with.
    type Stored: Send + 'static;
    /// Names the batch-size metric and the "writer stopped" error.
    const NAME: &'static str;
    /// Stores a batch in one transaction. A constraint violation fails the
    /// whole statement; the batcher then retries the members one by one. A
    /// deadlock or serialization failure rolled everything back, so the
    /// batcher runs the whole batch again.
    fn insert_batch(
        pool: &PgPool,
        batch: &[Self::Item],
    ) -> impl Future<Output = StoreResult<Vec<InsertOutcome<Self::Stored>>>> + Send;
    /// The refusal a constraint violation means, if it is one.
    fn refusal_of(e: &StoreError) -> Option<DomainError>;
}

type Job<T, S> = (T, oneshot::Sender<Result<InsertOutcome<S>, DomainError>>);

pub struct Batcher<S: BatchStore> {
    tx: mpsc::Sender<Job<S::Item, S::Stored>>,
    _store: PhantomData<S>,
}

impl<S: BatchStore> Clone for Batcher<S> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
            _store: PhantomData,
        }
    }
}

impl<S: BatchStore> Batcher<S> {
    /// Starts `workers` committers; more than one overlaps a commit's fsync with
    /// the next batch's statements.
    pub fn start(pool: PgPool, workers: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Job<S::Item, S::Stored>>(MAX_BATCH * 16);
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
                    commit::<S>(&pool, jobs).await;
                }
            });
        }
        Batcher {
            tx,
            _store: PhantomData,
        }
    }

    pub async fn submit(&self, item: S::Item) -> Result<InsertOutcome<S::Stored>, DomainError> {
        let stopped = || DomainError::Unavailable(format!("{} writer stopped", S::NAME));
        let (tx, rx) = oneshot::channel();
        self.tx.send((item, tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// How many times a batch that lost a deadlock or a serialization check is
/// run again before its callers get the error.
const RETRIES: usize = 3;

/// Runs a batch, again after a transient failure: nothing of a rolled-back
/// attempt is visible, so a rerun cannot apply anything twice.
async fn insert_retrying<S: BatchStore>(
    pool: &PgPool,
    batch: &[S::Item],
) -> StoreResult<Vec<InsertOutcome<S::Stored>>> {
    let mut attempt = 0;
    loop {
        match S::insert_batch(pool, batch).await {
            Err(e) if e.is_transient() && attempt < RETRIES => {
                attempt += 1;
                metrics::counter!("promo_batch_retries_total", "kind" => S::NAME).increment(1);
                // PostgreSQL aborted only this side of a deadlock; the rerun
                // queues behind the winner's locks instead of meeting it again.
                tracing::debug!(kind = S::NAME, attempt, error = %e, "batch rolled back, running it again");
            }
            other => return other,
        }
    }
}

async fn commit<S: BatchStore>(pool: &PgPool, jobs: Vec<Job<S::Item, S::Stored>>) {
    let (pending, replies): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
    metrics::histogram!("promo_batch_size", "kind" => S::NAME).record(pending.len() as f64);
    match insert_retrying::<S>(pool, &pending).await {
        Ok(outcomes) => {
            for (reply, o) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(o));
            }
        }
        Err(e) if pending.len() > 1 && S::refusal_of(&e).is_some() => {
            // One member broke a constraint; find it by storing them one by one.
            for (p, reply) in pending.into_iter().zip(replies) {
                let _ = reply.send(single::<S>(pool, p).await);
            }
        }
        Err(e) => {
            let err = S::refusal_of(&e).unwrap_or_else(|| e.into());
            for reply in replies {
                let _ = reply.send(Ok(InsertOutcome::Refused(err.clone())));
            }
        }
    }
}

async fn single<S: BatchStore>(
    pool: &PgPool,
    p: S::Item,
) -> Result<InsertOutcome<S::Stored>, DomainError> {
    match insert_retrying::<S>(pool, std::slice::from_ref(&p)).await {
        Ok(mut o) => o.pop().ok_or_else(|| {
            DomainError::Internal(format!("{} batch of one answered nothing", S::NAME))
        }),
        Err(e) => Ok(InsertOutcome::Refused(
            S::refusal_of(&e).unwrap_or_else(|| e.into()),
        )),
    }
}
