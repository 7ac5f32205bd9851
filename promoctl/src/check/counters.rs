//! Live counters in Redis (one key per policy or sale, holding what is left)
//! against PostgreSQL, and the per-user hashes beside them. A row without a
//! key is not loaded yet (promod rebuilds it on demand), which is no
//! violation. Beside each counter, its journal of reservations not yet
//! settled: promod's reconciler settles every entry within its bound (10 s by
//! default), so an entry older than [`OVERDUE`] is a taking nobody gave back.

use super::{redis_err, settle, users, CheckResult, Redis};
use crate::error::CtlResult;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// promod's default `reservation.bound_ms` plus its reconcile interval, with
/// room for a slow pass.
pub const OVERDUE: Duration = Duration::from_secs(30);

pub struct Counters {
    pub check: &'static str,
    /// One row per counter: id, total, taken (issued or confirmed).
    pub rows: &'static str,
    pub key: fn(Uuid) -> String,
    /// The violation of a counter whose value is not total - taken:
    /// (id, value, total, taken).
    pub describe: fn(Uuid, i64, i64, i64) -> String,
    pub users_key: fn(Uuid) -> String,
    /// Per user of the loaded ids (`$1`): columns `id`, `user_id`, `n`.
    pub per_user: &'static str,
    /// The journal of reservations not yet settled (`promo_store::stock`).
    pub journal_key: fn(Uuid) -> String,
}

impl Counters {
    pub async fn check(&self, pool: &PgPool, redis: &mut Redis) -> CtlResult<CheckResult> {
        let mut r = CheckResult::new(self.check);
        let rows: Vec<(Uuid, i64, i64)> = match sqlx::query_as(self.rows).fetch_all(pool).await {
            Ok(rows) => rows,
            Err(e) => return settle(r, e),
        };
        r.examined = rows.len() as i64;
        let mut loaded = Vec::new();
        for chunk in rows.chunks(500) {
            let mut pipe = redis::pipe();
            for (id, _, _) in chunk {
                pipe.get((self.key)(*id));
            }
            let live: Vec<Option<i64>> = pipe.query_async(redis).await.map_err(redis_err)?;
            for ((id, total, taken), value) in chunk.iter().zip(live) {
                let Some(value) = value else { continue };
                loaded.push(*id);
                if value != total - taken {
                    r.violation((self.describe)(*id, value, *total, *taken));
                }
            }
        }
        self.overdue(redis, &loaded, &mut r).await?;
        let detailed =
            users::compare(pool, redis, &loaded, self.users_key, self.per_user, &mut r).await?;
        r.note = users::note(rows.len() - loaded.len(), rows.len(), detailed);
        Ok(r)
    }

    /// Journal entries older than [`OVERDUE`] by Redis's clock, the one
    /// that scored them.
    async fn overdue(&self, redis: &mut Redis, ids: &[Uuid], r: &mut CheckResult) -> CtlResult<()> {
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(redis)
            .await
            .map_err(redis_err)?;
        let cutoff = secs * 1000 + micros / 1000 - OVERDUE.as_millis() as i64;
        for chunk in ids.chunks(500) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.zcount((self.journal_key)(*id), "-inf", cutoff);
            }
            let counts: Vec<i64> = pipe.query_async(redis).await.map_err(redis_err)?;
            for (id, n) in chunk.iter().zip(counts).filter(|(_, n)| *n > 0) {
                r.violation(format!(
                    "{id} {n} reservations unsettled for over {}s",
                    OVERDUE.as_secs()
                ));
            }
        }
        Ok(())
    }
}
