//! Live counters in Redis (one key per policy or sale, holding what is left)
//! against PostgreSQL, and the per-user hashes beside them. A row without a
//! key is not loaded yet (promod rebuilds it on demand), which is no
//! violation.

use super::{redis_err, settle, users, CheckResult, Redis};
use crate::error::CtlResult;
use sqlx::PgPool;
use uuid::Uuid;

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
        let detailed =
            users::compare(pool, redis, &loaded, self.users_key, self.per_user, &mut r).await?;
        r.note = users::note(rows.len() - loaded.len(), rows.len(), detailed);
        Ok(r)
    }
}
