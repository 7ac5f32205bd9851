//! Per-user counters in a Redis hash (field = user id, value = count) against
//! PostgreSQL, without moving every user to the client: Redis and PostgreSQL
//! each reduce a hash to (users, sum, checksum) and only the hashes whose
//! digests differ are compared user by user.

use super::{redis_err, settle, CheckResult, Redis};
use crate::error::CtlResult;
use redis::Script;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::LazyLock;
use uuid::Uuid;

/// The checksum weighs each count by the first 24 bits of the user id, so
/// that moving a unit from one user to another changes it. Read only.
static DIGEST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('HGETALL', KEYS[1])
local users, sum, chk, bad = 0, 0, 0, 0
for i = 1, #t, 2 do
  local v = tonumber(t[i + 1])
  local h = tonumber(string.sub(t[i], 1, 6), 16)
  if v == nil or h == nil or v ~= math.floor(v) then
    bad = bad + 1
  elseif v ~= 0 then
    users = users + 1
    sum = sum + v
    chk = (chk + (v % 1000000007) * h) % 1000000007
  end
end
return {users, sum, chk, bad}
"#,
    )
});

/// The same digest in SQL, over `per_user` (columns `id`, `user_id`, `n`;
/// `$1` is the array of ids).
fn digest_sql(per_user: &str) -> String {
    format!(
        "SELECT id, count(*)::bigint, sum(n)::bigint,
                (sum((n % 1000000007) * ('x' || substr(user_id::text, 1, 6))::bit(24)::int::bigint)
                 % 1000000007)::bigint
         FROM ({per_user}) u WHERE n <> 0 GROUP BY id"
    )
}

/// Compares the hash `key(id)` of every id with `per_user`, counting each
/// user that differs as a violation of `r`. Returns how many hashes had to be
/// compared user by user (their digests differed).
pub async fn compare(
    pool: &PgPool,
    redis: &mut Redis,
    ids: &[Uuid],
    key: fn(Uuid) -> String,
    per_user: &str,
    r: &mut CheckResult,
) -> CtlResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let pg: HashMap<Uuid, (i64, i64, i64)> = match sqlx::query_as(&digest_sql(per_user))
        .bind(ids)
        .fetch_all(pool)
        .await
    {
        Ok(rows) => rows
            .into_iter()
            .map(|(id, u, s, c): (Uuid, i64, i64, i64)| (id, (u, s, c)))
            .collect(),
        Err(e) => {
            *r = settle(std::mem::take(r), e)?;
            return Ok(0);
        }
    };
    let differ = differing(redis, ids, key, &pg).await?;
    if differ.is_empty() {
        return Ok(0);
    }
    let rows: Vec<(Uuid, Uuid, i64)> =
        match sqlx::query_as(&format!("SELECT id, user_id, n FROM ({per_user}) u"))
            .bind(&differ)
            .fetch_all(pool)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                *r = settle(std::mem::take(r), e)?;
                return Ok(differ.len());
            }
        };
    let mut want: HashMap<Uuid, HashMap<Uuid, i64>> = HashMap::new();
    for (id, user, n) in rows {
        want.entry(id).or_default().insert(user, n);
    }
    let empty = HashMap::new();
    for id in &differ {
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(key(*id))
            .query_async(redis)
            .await
            .map_err(redis_err)?;
        diff(r, *id, &hash, want.get(id).unwrap_or(&empty));
    }
    Ok(differ.len())
}

/// The ids whose hash digest in Redis is not PostgreSQL's (`pg`; an id it
/// lacks has no users), or that hold a value that is not a count.
async fn differing(
    redis: &mut Redis,
    ids: &[Uuid],
    key: fn(Uuid) -> String,
    pg: &HashMap<Uuid, (i64, i64, i64)>,
) -> CtlResult<Vec<Uuid>> {
    // Loaded once so that the pipelined EVALSHAs find it.
    let _: String = DIGEST.load_async(redis).await.map_err(redis_err)?;
    let mut differ = Vec::new();
    for chunk in ids.chunks(200) {
        let invocations: Vec<_> = chunk
            .iter()
            .map(|id| {
                let mut inv = DIGEST.prepare_invoke();
                inv.key(key(*id));
                inv
            })
            .collect();
        let mut pipe = redis::pipe();
        for inv in &invocations {
            pipe.invoke_script(inv);
        }
        let digests: Vec<(i64, i64, i64, i64)> =
            pipe.query_async(redis).await.map_err(redis_err)?;
        for (id, got) in chunk.iter().zip(digests) {
            let want = pg.get(id).copied().unwrap_or((0, 0, 0));
            if got.3 > 0 || (got.0, got.1, got.2) != want {
                differ.push(*id);
            }
        }
    }
    Ok(differ)
}

/// User by user; a missing field and 0 are the same.
fn diff(r: &mut CheckResult, id: Uuid, redis: &HashMap<String, String>, pg: &HashMap<Uuid, i64>) {
    let mut fields: Vec<_> = redis.iter().collect();
    fields.sort();
    for (user, raw) in fields {
        let want = Uuid::parse_str(user)
            .ok()
            .and_then(|u| pg.get(&u).copied())
            .unwrap_or(0);
        if raw.parse::<i64>().ok() != Some(want) {
            r.violation(format!("{id}/{user} {raw} in redis, {want} in postgres"));
        }
    }
    let mut users: Vec<_> = pg.iter().collect();
    users.sort();
    for (user, want) in users {
        if *want != 0 && !redis.contains_key(&user.to_string()) {
            r.violation(format!("{id}/{user} 0 in redis, {want} in postgres"));
        }
    }
}

/// The note of a counter check: what was not loaded, what needed a detailed
/// comparison.
pub fn note(missing: usize, total: usize, detailed: usize) -> Option<String> {
    let mut parts = Vec::new();
    if missing > 0 {
        parts.push(format!("{missing} of {total} not loaded"));
    }
    if detailed > 0 {
        parts.push(format!("{detailed} compared user by user"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}
