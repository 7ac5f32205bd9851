//! PostgreSQL access for coupon codes: bulk generation through COPY, the
//! paged listing, the streamed CSV export and the redemption lookup. See
//! ARCHITECTURE.md, "Coupon codes".

use crate::batcher::{BatchStore, Batcher, InsertOutcome};
use crate::db::{page_of, Arg, Listing};
use crate::error::from_sqlx;
use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::TryStreamExt;
use promo_domain::code::{self, Code, CodeQuery, CodeStatus};
use promo_domain::page::Page;
use promo_domain::{DomainError, DomainResult};
use promo_store::error::{StoreError, StoreResult};
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::HashMap;
use uuid::Uuid;

/// A policy's codes as CSV, streamed in chunks of whole lines.
pub type CsvStream = BoxStream<'static, DomainResult<Bytes>>;

/// Codes per COPY chunk: bounds the generator's memory whatever the count.
const CHUNK: usize = 8192;
/// How many rounds of regeneration a batch may need before giving up: each
/// round only redraws the codes that collided, and with 49 random bits a
/// second round is already rare.
const ROUNDS: usize = 8;

/// Stores `count` fresh codes for `policy` with `prefix` in `tx` (whose
/// caller holds the policy's codes lock, `store::lock_codes`) and returns
/// how many it stored.
/// Codes are drawn from the OS-seeded ChaCha generator (`ThreadRng`, a
/// CSPRNG), copied into a staging table and inserted with ON CONFLICT DO
/// NOTHING, so a collision (with any policy's code, shared ones included,
/// or within the batch) is drawn again, never a failure.
pub async fn generate(
    tx: &mut Transaction<'_, Postgres>,
    policy: Uuid,
    count: i64,
    prefix: &str,
    now: DateTime<Utc>,
) -> DomainResult<i64> {
    sqlx::query("CREATE TEMP TABLE staged_codes (code text) ON COMMIT DROP")
        .execute(&mut **tx)
        .await
        .map_err(from_sqlx)?;
    let mut stored = 0;
    for _ in 0..ROUNDS {
        stage(tx, (count - stored) as usize, prefix).await?;
        stored += sqlx::query(
            "INSERT INTO coupon_codes (code, policy_id, shared, created_at)
             SELECT code, $1, false, $2 FROM staged_codes ON CONFLICT (code) DO NOTHING",
        )
        .bind(policy)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(from_sqlx)?
        .rows_affected() as i64;
        if stored == count {
            return Ok(stored);
        }
        sqlx::query("TRUNCATE staged_codes")
            .execute(&mut **tx)
            .await
            .map_err(from_sqlx)?;
    }
    Err(DomainError::Internal(format!(
        "codes kept colliding: {stored} of {count} stored after {ROUNDS} rounds"
    )))
}

/// Copies `n` freshly drawn codes into the staging table.
async fn stage(tx: &mut Transaction<'_, Postgres>, n: usize, prefix: &str) -> DomainResult<()> {
    let mut copy = tx
        .copy_in_raw("COPY staged_codes (code) FROM STDIN")
        .await
        .map_err(from_sqlx)?;
    let mut left = n;
    while left > 0 {
        let k = left.min(CHUNK);
        let buf = draw(k, prefix);
        copy.send(buf).await.map_err(from_sqlx)?;
        left -= k;
    }
    copy.finish().await.map_err(from_sqlx)?;
    Ok(())
}

/// `n` codes, one a line (COPY text format: they hold no special characters).
fn draw(n: usize, prefix: &str) -> BytesMut {
    let mut rng = rand::thread_rng();
    let mut buf = BytesMut::with_capacity(n * (prefix.len() + code::RANDOM_CHARS + 2));
    for _ in 0..n {
        buf.put_slice(code::generate(prefix, || rand::Rng::gen(&mut rng)).as_bytes());
        buf.put_u8(b'\n');
    }
    buf
}

/// The one join that tells a BATCH code's redemption: the coupon that
/// carries it (`coupons_redeemed_once`).
const CODES_FROM: &str = "FROM coupon_codes k
    LEFT JOIN coupons c ON c.redeemed_code = k.code AND NOT c.redeemed_shared
    WHERE k.policy_id = $1 AND NOT k.shared";

#[derive(sqlx::FromRow)]
struct CodeRow {
    code: String,
    coupon_id: Option<Uuid>,
    redeemed_at: Option<DateTime<Utc>>,
}

impl CodeRow {
    fn into_domain(self) -> DomainResult<Code> {
        Ok(Code {
            status: match self.coupon_id {
                Some(_) => CodeStatus::Redeemed,
                None => CodeStatus::Unredeemed,
            },
            code: self.code,
            coupon_id: self.coupon_id,
            redeemed_at: self.redeemed_at,
        })
    }
}

pub async fn list(pool: &PgPool, q: CodeQuery) -> DomainResult<Page<Code>> {
    let filter = match q.status {
        None => "",
        Some(CodeStatus::Redeemed) => " AND c.id IS NOT NULL",
        Some(CodeStatus::Unredeemed) => " AND c.id IS NULL",
    };
    let from = format!("{CODES_FROM}{filter}");
    let l = Listing {
        columns: "k.code, c.id AS coupon_id, c.issued_at AS redeemed_at",
        from: &from,
        order_by: "k.code",
    };
    page_of(
        pool,
        l,
        &[Arg::Id(q.policy_id)],
        q.page,
        CodeRow::into_domain,
    )
    .await
}

/// Lines per chunk of the export: about 128 KiB.
const EXPORT_LINES: usize = 4096;

/// A policy's codes as CSV (`code,status` then one line each, in code
/// order), read by one streaming query on a connection of its own and
/// handed over through a small bounded channel: memory stays constant
/// whatever the count, and a client that stops reading stops the query.
pub fn export(pool: PgPool, policy: Uuid) -> CsvStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<DomainResult<Bytes>>(2);
    tokio::spawn(async move {
        let sql =
            format!("SELECT k.code, c.id IS NOT NULL AS redeemed {CODES_FROM} ORDER BY k.code");
        let mut rows = sqlx::query_as::<_, (String, bool)>(&sql)
            .bind(policy)
            .fetch(&pool);
        let mut buf = BytesMut::from(&b"code,status\n"[..]);
        let mut lines = 0;
        loop {
            match rows.try_next().await {
                Ok(Some((code, redeemed))) => {
                    buf.put_slice(code.as_bytes());
                    let status = if redeemed { "REDEEMED" } else { "UNREDEEMED" };
                    buf.put_u8(b',');
                    buf.put_slice(status.as_bytes());
                    buf.put_u8(b'\n');
                    lines += 1;
                    if lines % EXPORT_LINES == 0 && !handed(&tx, buf.split().freeze()).await {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(StoreError::from(e).into())).await;
                    return;
                }
            }
        }
        handed(&tx, buf.freeze()).await;
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// How long an export waits for its reader to take a chunk: a client that
/// keeps its socket open but stops reading must not hold a connection (and
/// an old snapshot) for ever.
const READER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Hands a chunk to the reader; false when it is gone or stalled.
async fn handed(tx: &tokio::sync::mpsc::Sender<DomainResult<Bytes>>, chunk: Bytes) -> bool {
    let send = tokio::time::timeout(READER_PATIENCE, tx.send(Ok(chunk)));
    matches!(send.await, Ok(Ok(())))
}

/// A code as stored, found by its normalized form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub code: String,
    pub policy_id: Uuid,
    pub shared: bool,
    /// A BATCH code some coupon already carries.
    pub redeemed: bool,
}

/// The codes of `$1` as stored, and whether a coupon carries each. A
/// lateral probe, not EXISTS: the statement's plan is cached, and a plan
/// made while `coupons` was empty hashed an EXISTS by scanning the whole
/// table, for every lookup of the sale (redemptions from fresh tables ran
/// at about half speed; perf/results/2026-12-07-redeem-plan.md).
pub const LOOKUP: &str = "SELECT k.code, k.policy_id, k.shared, r.one IS NOT NULL
     FROM coupon_codes k
     LEFT JOIN LATERAL (SELECT 1 AS one FROM coupons c
                        WHERE c.redeemed_code = k.code AND NOT c.redeemed_shared
                        LIMIT 1) r ON true
     WHERE k.code = ANY($1)";

/// Redemption lookups, many per query: under a flash of redemptions each
/// would otherwise be a round trip and a statement of its own, which cost
/// more than the rest of the redemption. Group-executed like the commits
/// (`batcher.rs`): callers wait for their own answer.
pub struct Lookups;

impl BatchStore for Lookups {
    type Item = String;
    type Stored = Option<Found>;
    const NAME: &'static str = "code lookup";

    async fn insert_batch(
        pool: &PgPool,
        batch: &[String],
    ) -> StoreResult<Vec<InsertOutcome<Option<Found>>>> {
        let rows: Vec<(String, Uuid, bool, bool)> =
            sqlx::query_as(LOOKUP).bind(batch).fetch_all(pool).await?;
        let found: HashMap<String, Found> = rows
            .into_iter()
            .map(|(code, policy_id, shared, redeemed)| {
                let f = Found {
                    code: code.clone(),
                    policy_id,
                    shared,
                    redeemed,
                };
                (code, f)
            })
            .collect();
        // Two redemptions of one code in a batch both hear of it.
        Ok(batch
            .iter()
            .map(|c| InsertOutcome::Stored(found.get(c).cloned()))
            .collect())
    }

    fn refusal_of(_: &StoreError) -> Option<DomainError> {
        None
    }
}

/// The code stored under `normalized`, if any, through the lookup batcher.
pub async fn lookup(lookups: &Batcher<Lookups>, normalized: &str) -> DomainResult<Option<Found>> {
    match lookups.submit(normalized.to_owned()).await? {
        InsertOutcome::Stored(found) => Ok(found),
        InsertOutcome::Refused(e) => Err(e),
        InsertOutcome::Duplicate => Err(DomainError::Internal(
            "code lookup answered a duplicate".into(),
        )),
    }
}

/// Every shared code (normalized) and its policy: the few codes that carry
/// no check character, so that a mistyped code is refused without a query.
/// Read from the policies, a small table.
pub async fn shared_codes(pool: &PgPool) -> DomainResult<HashMap<String, Uuid>> {
    let rows: Vec<(String, Uuid)> =
        sqlx::query_as("SELECT shared_code, id FROM coupon_policies WHERE code_mode = 'SHARED'")
            .fetch_all(pool)
            .await
            .map_err(from_sqlx)?;
    rows.into_iter()
        .map(|(c, id)| Ok((code::normalize(&c)?, id)))
        .collect()
}
