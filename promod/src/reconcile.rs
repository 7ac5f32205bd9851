//! The reservation reconciler: one task per coupon or timesale role that
//! gives back the takings whose row never came (a kill -9 between admission
//! and commit, a lost Redis reply, a batch that failed for good), by
//! `promo_store::stock::reconcile`. It runs in every process of the role;
//! the settle script lets only one of them give an entry back. See
//! ARCHITECTURE.md, "The reservation engine".

use crate::config::ReservationConfig;
use promo_store::stock::{self, Kind, StockPort};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Counter sets closed for longer than this are visited only by the full
/// pass a reconciler makes when it starts.
const LOOKBACK: Duration = Duration::from_secs(24 * 3600);

/// Sets the engine's commit deadline to half the bound and runs the
/// reconciler of `kind` until shutdown.
pub fn spawn(
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
    pool: PgPool,
    stock: Arc<dyn StockPort>,
    kind: Kind,
    cfg: &ReservationConfig,
    shutdown: CancellationToken,
) {
    let bound = Duration::from_millis(cfg.bound_ms);
    crate::reserve::set_commit_deadline(bound / 2);
    let every = Duration::from_millis(cfg.reconcile_every_ms);
    tasks.spawn(async move {
        run(pool, stock, kind, bound, every, shutdown).await;
        Ok(())
    });
}

async fn run(
    pool: PgPool,
    stock: Arc<dyn StockPort>,
    kind: Kind,
    bound: Duration,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lookback = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match pass(&pool, &*stock, kind, bound, lookback).await {
            // After one full pass, only counter sets open recently.
            Ok(()) => lookback = Some(LOOKBACK),
            Err(e) => {
                tracing::warn!(kind = kind.as_str(), error = %e, "reservation reconciliation failed")
            }
        }
    }
}

async fn pass(
    pool: &PgPool,
    stock: &dyn StockPort,
    kind: Kind,
    bound: Duration,
    lookback: Option<Duration>,
) -> promo_domain::DomainResult<()> {
    let ids = stock::journaled_sets(pool, kind, lookback).await?;
    let done = stock::reconcile(pool, stock, kind, &ids, bound).await?;
    let k = kind.as_str();
    metrics::gauge!("promo_reservation_journal_size", "kind" => k).set(done.journaled as f64);
    metrics::counter!("promo_reservations_released_total", "kind" => k).increment(done.released);
    metrics::counter!("promo_reservations_cleared_total", "kind" => k).increment(done.cleared);
    if done.released > 0 {
        tracing::warn!(
            kind = k,
            released = done.released,
            "unsettled reservations given back"
        );
    }
    Ok(())
}
