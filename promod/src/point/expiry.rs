//! The lot sweeper: turns the remainder of each expired lot into one EXPIRE
//! transaction with its `point.expired` event, by the service clock. It runs
//! `point.lots.sweepers` tasks in every point process, each over its share of
//! the users; a sweep claims users by locking their balance rows with SKIP
//! LOCKED in user id order, so sweepers and batches never wait in a cycle,
//! and decides and writes a whole batch of lots in one statement. Each EXPIRE
//! is unique per lot and expiry count, so a lot expires exactly once (again
//! once more only if a cancel gave it points back). See ARCHITECTURE.md,
//! "Point lots".

use super::{lot_store, PointService};
use crate::config::LotConfig;
use crate::error::from_sqlx;
use crate::sweep::{Expire, Pace};
use chrono::{DateTime, Utc};
use promo_domain::clock::SharedClock;
use promo_domain::point::lot;
use promo_domain::DomainResult;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One sweeper task: the users whose id's last byte is `part` modulo `parts`.
pub struct LotSweeper {
    pub svc: Arc<PointService>,
    pub part: i32,
    pub parts: i32,
}

impl Expire for LotSweeper {
    const KIND: &'static str = "point_lot";

    async fn expire_due(&self, now: DateTime<Utc>, limit: i64) -> DomainResult<usize> {
        self.svc
            .expire_lots(now, limit, (self.part, self.parts))
            .await
    }
}

impl PointService {
    /// Expires the lots due at `now` of the users of up to `limit` of them in
    /// `share`, in one transaction; returns how many lots it expired.
    pub async fn expire_lots(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        share: (i32, i32),
    ) -> DomainResult<usize> {
        let mut db = self.pool.begin().await.map_err(from_sqlx)?;
        let funds = lot_store::claim_due(&mut db, now, limit, share).await?;
        if funds.is_empty() {
            return Ok(0);
        }
        let users: Vec<Uuid> = funds.iter().map(|(u, _)| *u).collect();
        let due = lot_store::due_lots(&mut db, &users, now).await?;
        let funds: HashMap<Uuid, _> = funds.into_iter().collect();
        let (expiries, changed) = lot::expire(&funds, &due);
        if expiries.is_empty() {
            return Ok(0);
        }
        let written = lot_store::write_expiries(&mut db, &expiries, &changed, now).await?;
        db.commit().await.map_err(from_sqlx)?;
        self.cache.put_many(&written).await;
        Ok(expiries.len())
    }
}

/// Runs the lot sweepers of this process until shutdown.
pub fn spawn(
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
    svc: Arc<PointService>,
    clock: SharedClock,
    cfg: &LotConfig,
    shutdown: CancellationToken,
) {
    let pace = Pace {
        every_ms: cfg.sweep_every_ms,
        batch: cfg.sweep_batch,
    };
    let parts = i32::from(cfg.sweepers.max(1));
    for part in 0..parts {
        let sweeper = Arc::new(LotSweeper {
            svc: svc.clone(),
            part,
            parts,
        });
        crate::sweep::spawn(tasks, sweeper, clock.clone(), pace, shutdown.clone());
    }
}
