//! The hold sweeper: one task per role with holds (orders, coupon
//! reservations, point holds) that expires the holds whose `expires_at` has
//! passed by the service clock. It runs in every process of the role: each
//! sweep claims its due holds with `FOR UPDATE SKIP LOCKED` and moves them out
//! of their pending status with a conditional UPDATE in one transaction, so
//! two sweepers (or a sweeper and a confirm) never resolve one hold twice.
//! See ARCHITECTURE.md, "Holds".

use chrono::{DateTime, Utc};
use promo_domain::clock::SharedClock;
use promo_domain::DomainResult;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One kind of hold that expires.
pub trait Expire: Send + Sync + 'static {
    /// Names the metric label and logs ("order", "coupon", "point").
    const KIND: &'static str;
    /// Expires at most `limit` holds due at `now` in one transaction (each
    /// with its event, and its release where it took something); returns
    /// how many. A hold another sweeper or caller holds is skipped, never
    /// waited for.
    fn expire_due(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = DomainResult<usize>> + Send;
}

/// How often a sweeper looks, and how much one sweep transaction takes.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub every_ms: u64,
    pub batch: i64,
}

/// Runs the sweeper of `kind` until shutdown.
pub fn spawn<E: Expire>(
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
    kind: Arc<E>,
    clock: SharedClock,
    pace: Pace,
    shutdown: CancellationToken,
) {
    let every = Duration::from_millis(pace.every_ms);
    let batch = pace.batch;
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            sweep(&*kind, &clock, batch, &shutdown).await;
        }
        Ok(())
    });
}

/// Expires everything due now, a batch at a time; returns how many.
pub async fn sweep<E: Expire>(
    kind: &E,
    clock: &SharedClock,
    batch: i64,
    shutdown: &CancellationToken,
) -> usize {
    let mut total = 0;
    while !shutdown.is_cancelled() {
        match kind.expire_due(clock.now(), batch).await {
            Ok(n) => {
                metrics::counter!("promo_holds_expired_total", "kind" => E::KIND)
                    .increment(n as u64);
                total += n;
                if (n as i64) < batch {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(kind = E::KIND, error = %e, "hold sweep failed");
                break;
            }
        }
    }
    total
}
