//! The reservation engine: how every scarce thing is taken. Coupon issues
//! and time-sale orders are the same algorithm over different rows:
//!
//! 1. admission: one atomic decision of the stock port (Redis Lua), with a
//!    rebuild from PostgreSQL when the counter is missing; a keyed request
//!    claims its key in the same step (`stock::Claim`), so a retry of an
//!    attempt still running is not decided on its own;
//! 2. the answer is made final by `Answers::keyed` (a refusal is stored).
//!    A keyed reservation reads no stored answer before it runs (that read
//!    was a PostgreSQL round trip per keyed write): a retry of a request that
//!    has an answer is decided again, the batch finds its key taken
//!    (`InsertOutcome::Duplicate`), gives back what admission took, and the
//!    stored answer is replayed; a refusal finds it when it tries to record
//!    its own. The price: such a retry holds its units for a moment;
//! 3. the group commit (`batcher.rs`) stores the row with its counters,
//!    idempotency record and event; PostgreSQL's constraints are the last line;
//! 4. compensation: whatever was taken in Redis but not stored is given back,
//!    and only the part the database did not refuse as really taken;
//! 5. settlement: admission journals each taking under the id of the row it
//!    is for; the engine settles the entry after commit or compensation, and
//!    `reconcile.rs` gives back what a row that never came took (a crash
//!    between admission and commit, a lost reply), exactly once.
//!
//! A row kind plugs in through [`Reservable`]. See ARCHITECTURE.md,
//! "The reservation engine".

use crate::batcher::{BatchStore, Batcher, InsertOutcome};
use crate::ctx::Ctx;
use crate::idempotency::claim_keys;
use crate::idempotency::IdemKey;
use crate::outbox::{self, Event};
use promo_domain::{DomainError, DomainResult};
use promo_store::error::{StoreError, StoreResult};
use promo_store::stock::{Ask, Claim, Decision, Entry, Kind, Release, StockPort};
use serde::{de::DeserializeOwned, Serialize};
use sqlx::{PgConnection, PgPool};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long after admission a row may still commit, in milliseconds; a
/// batch refuses members older than this and never commits past it. The
/// reconciler's bound is twice this (`reconcile::spawn` sets both), so a
/// journal entry it finds overdue has a row or never will. Process-wide:
/// it is one process's promise to every reconciler.
static COMMIT_DEADLINE_MS: AtomicU64 = AtomicU64::new(5_000);

pub fn set_commit_deadline(d: Duration) {
    COMMIT_DEADLINE_MS.store(d.as_millis() as u64, Ordering::Relaxed);
}

pub fn commit_deadline() -> Duration {
    Duration::from_millis(COMMIT_DEADLINE_MS.load(Ordering::Relaxed))
}

/// A test-only crash point (`--features failpoints`): the process aborts at
/// the point named by `PROMO_FAILPOINT`, as a kill -9 there would.
#[cfg(feature = "failpoints")]
fn failpoint(name: &str) {
    if std::env::var("PROMO_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
fn failpoint(_: &str) {}

/// What a constraint violation of a stored row means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    SoldOut,
    LimitExceeded,
    /// A generated value collided (a coupon code); the client may retry.
    Collision,
    /// A single-use code was redeemed by another row.
    AlreadyRedeemed,
}

/// One kind of row that takes stock.
pub trait Reservable: Send + Sync + 'static {
    /// The stored row; also the answer of a successful reservation.
    type Row: Clone + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// Whose counters it takes from.
    const KIND: Kind;
    /// Names batches and errors ("coupon", "order").
    const NAME: &'static str;
    /// What a missing parent row is called in a 404 ("coupon policy").
    const PARENT: &'static str;
    /// The outcome counter (`outcome` label) and the outcome of a stored row.
    const METRIC: &'static str;
    const STORED: &'static str;
    /// Constraint names of the row's tables and what breaking them means.
    const REFUSALS: &'static [(&'static str, Refusal)];
    /// Inserts the rows and updates their counters in the batch's transaction
    /// (keys and events are written by the engine).
    fn write(
        conn: &mut PgConnection,
        rows: &[&Pending<Self::Row>],
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn event(row: &Self::Row) -> StoreResult<Event>;
}

/// A row waiting for the group commit, with what admission decided.
#[derive(Debug, Clone)]
pub struct Pending<R> {
    pub row: R,
    /// The user's holding after this taking (a coupon's `user_seq`).
    pub user_total: i64,
    pub per_user_limit: i64,
    pub idem: Option<IdemKey>,
    /// Who the idempotency key belongs to (the caller, maybe an admin).
    pub actor: Uuid,
}

/// A pending row and when its admission was asked for.
pub struct Admitted<R> {
    pending: Pending<R>,
    at: Instant,
}

/// The group-commit store of any [`Reservable`].
pub struct Rows<K>(PhantomData<K>);

impl<K: Reservable> BatchStore for Rows<K> {
    type Item = Admitted<K::Row>;
    type Stored = ();
    const NAME: &'static str = K::NAME;

    async fn insert_batch(
        pool: &PgPool,
        batch: &[Admitted<K::Row>],
    ) -> StoreResult<Vec<InsertOutcome>> {
        let deadline = commit_deadline();
        // A member past the deadline may already have been given back by a
        // reconciler: it is refused, never stored.
        let fresh: Vec<bool> = batch.iter().map(|a| a.at.elapsed() < deadline).collect();
        let live: Vec<&Admitted<K::Row>> = batch
            .iter()
            .zip(&fresh)
            .filter_map(|(a, f)| f.then_some(a))
            .collect();
        let mut tx = pool.begin().await?;
        let (outcomes, stored) = claim_keys(&mut tx, &live, |a| {
            (a.pending.actor, a.pending.idem.as_ref(), &a.pending.row)
        })
        .await?;
        if !stored.is_empty() {
            let rows: Vec<&Pending<K::Row>> = stored.iter().map(|a| &a.pending).collect();
            K::write(&mut tx, &rows).await?;
            let events = rows
                .iter()
                .map(|p| K::event(&p.row))
                .collect::<StoreResult<Vec<_>>>()?;
            outbox::append(&mut tx, &events).await?;
        }
        if live.iter().any(|a| a.at.elapsed() >= deadline) {
            // Rolled back on drop; the batcher answers every member.
            return Err(StoreError::Invariant(format!(
                "{} batch passed its commit deadline",
                K::NAME
            )));
        }
        tx.commit().await?;
        let mut outcomes = outcomes.into_iter();
        Ok(fresh
            .into_iter()
            .map(|f| match f {
                true => outcomes.next().unwrap_or_else(|| {
                    InsertOutcome::Refused(DomainError::Internal("batch outcome missing".into()))
                }),
                false => InsertOutcome::Refused(DomainError::Unavailable(format!(
                    "{} admission expired, retry",
                    K::NAME
                ))),
            })
            .collect())
    }

    fn refusal_of(e: &StoreError) -> Option<DomainError> {
        let d = e.database()?;
        if d.code().as_deref() == Some("23503") {
            return Some(DomainError::NotFound(K::PARENT.into()));
        }
        let name = d.constraint()?;
        let (_, refusal) = K::REFUSALS.iter().find(|(c, _)| *c == name)?;
        Some(match refusal {
            Refusal::SoldOut => DomainError::SoldOut,
            Refusal::LimitExceeded => DomainError::LimitExceeded,
            Refusal::Collision => DomainError::Conflict(format!("{} collision, retry", K::NAME)),
            Refusal::AlreadyRedeemed => DomainError::AlreadyRedeemed,
        })
    }
}

/// Releases journaled for a transaction that has not committed yet.
#[must_use = "settle the releases after the commit"]
pub struct Releases {
    stock: Arc<dyn StockPort>,
    kind: Kind,
    by_parent: std::collections::BTreeMap<Uuid, Vec<Entry>>,
    at: Instant,
}

impl Releases {
    /// Journals the units of stored rows that a transaction is about to end
    /// (a cancel, an expired hold), before it commits: `rows` are (parent,
    /// row, user, quantity). Commit only if [`Releases::check_deadline`]
    /// passes, then [`Releases::settle`]. A crash between the commit and the
    /// settle leaves the entries to the reconciler, which gives back those
    /// whose row did end; one whose transaction rolled back is dropped.
    pub async fn journal(
        stock: Arc<dyn StockPort>,
        kind: Kind,
        rows: impl IntoIterator<Item = (Uuid, Uuid, Uuid, i64)>,
    ) -> DomainResult<Releases> {
        let mut by_parent: std::collections::BTreeMap<Uuid, Vec<Entry>> = Default::default();
        for (parent, row, user, quantity) in rows {
            let entry = Entry::release_of(row, user, quantity);
            by_parent.entry(parent).or_default().push(entry);
        }
        let at = Instant::now();
        for (parent, entries) in &by_parent {
            stock.journal(kind, *parent, entries).await?;
        }
        Ok(Releases {
            stock,
            kind,
            by_parent,
            at,
        })
    }

    /// A transaction may commit its releases only within the commit
    /// deadline of their journaling, as a batch may commit its rows: past
    /// it a reconciler may already have judged them by the uncommitted
    /// state and dropped them.
    pub fn check_deadline(&self) -> DomainResult<()> {
        if self.at.elapsed() >= commit_deadline() {
            return Err(DomainError::Unavailable(
                "release took too long, retry".into(),
            ));
        }
        Ok(())
    }

    /// Gives back the journaled units once their transaction committed. A
    /// failure is left to the reconciler (it under-sells until then, never
    /// oversells).
    pub async fn settle(self) {
        for (parent, entries) in self.by_parent {
            let res = self
                .stock
                .settle_many(self.kind, parent, &entries, Release::BOTH)
                .await;
            if let Err(e) = res {
                tracing::warn!(kind = self.kind.as_str(), id = %parent, rows = entries.len(), error = %e, "stock release failed, left to the reconciler");
            }
        }
    }
}

pub struct Engine<K: Reservable> {
    pool: PgPool,
    stock: Arc<dyn StockPort>,
    batcher: Batcher<Rows<K>>,
}

impl<K: Reservable> Engine<K> {
    pub fn new(pool: PgPool, stock: Arc<dyn StockPort>) -> Self {
        // Two committers overlap one batch's commit with the next's statements.
        let batcher = Batcher::start(pool.clone(), 2);
        Engine {
            pool,
            stock,
            batcher,
        }
    }

    pub fn stock(&self) -> &Arc<dyn StockPort> {
        &self.stock
    }

    /// Takes `ask` and stores the row `make` builds from its id (the
    /// reservation the taking is journaled under: the row must carry it).
    /// Call it inside `Answers::keyed`, which makes its answer final.
    pub async fn take(
        &self,
        ctx: &Ctx,
        ask: Ask,
        make: impl FnOnce(Uuid) -> K::Row,
    ) -> DomainResult<K::Row> {
        let reservation = Uuid::now_v7();
        let at = Instant::now();
        let claim = ctx.idem.as_ref().map(|k| Claim {
            actor: ctx.principal.user_id,
            key: &k.key,
            // Past the reconciler's bound the taking is settled whatever
            // became of its holder.
            ttl: commit_deadline() * 2,
        });
        let user_total = self
            .admit(&ask, reservation, claim.as_ref())
            .await
            .inspect_err(|e| {
                outcome(
                    K::METRIC,
                    match e {
                        DomainError::SoldOut => "sold_out",
                        DomainError::LimitExceeded => "limit_exceeded",
                        DomainError::NotActive(_) => "not_active",
                        _ => "error",
                    },
                )
            })?;
        failpoint("after_admission");
        let entry = Entry::of(&ask, reservation);
        let pending = Pending {
            row: make(reservation),
            user_total,
            per_user_limit: ask.per_user_limit,
            idem: ctx.idem.clone(),
            actor: ctx.principal.user_id,
        };
        let row = pending.row.clone();
        let stored = self.batcher.submit(Admitted { pending, at }).await;
        // Settled whichever way: a retry now finds the stored answer, or
        // (refused, failed) is decided anew.
        if let Some(c) = &claim {
            self.stock.release_claim(K::KIND, ask.id, c.actor, c.key);
        }
        match stored {
            Ok(InsertOutcome::Stored(())) => {
                outcome(K::METRIC, K::STORED);
                self.stock.settle_stored(K::KIND, ask.id, &entry);
                Ok(row)
            }
            Ok(InsertOutcome::Duplicate) => {
                // Another attempt stored this key's answer first;
                // `Answers::keyed` replays it for any error of this one.
                self.settle(ask.id, &entry, Release::BOTH).await;
                Err(DomainError::Conflict("idempotent request in flight".into()))
            }
            Ok(InsertOutcome::Refused(e)) => {
                // The database refused what Redis admitted, so Redis was ahead
                // of the truth. Give back only what was not really taken: a
                // full counter keeps its stock at zero, a user at the limit
                // keeps theirs.
                let what = Release {
                    stock: e != DomainError::SoldOut,
                    user: e != DomainError::LimitExceeded,
                };
                self.settle(ask.id, &entry, what).await;
                outcome(K::METRIC, "refused_by_db");
                Err(match e {
                    // Not a rule the request broke but a write that failed:
                    // the client may retry, and nothing was kept.
                    DomainError::Internal(detail) => {
                        tracing::warn!(kind = K::NAME, id = %ask.id, error = %detail, "row not stored");
                        DomainError::Unavailable(format!("{} not stored, retry", K::NAME))
                    }
                    other => other,
                })
            }
            Err(e) => {
                self.settle(ask.id, &entry, Release::BOTH).await;
                outcome(K::METRIC, "error");
                Err(e)
            }
        }
    }

    /// Compensation of a row that was not stored: gives back `what` of its
    /// taking unless a reconciler already gave it all back. A lost settle
    /// leaves the entry for the reconciler, which gives back all of it.
    async fn settle(&self, id: Uuid, entry: &Entry, what: Release) {
        if let Err(e) = self.stock.settle(K::KIND, id, entry, what).await {
            tracing::warn!(kind = K::NAME, %id, reservation = %entry.reservation, error = %e, "stock settle failed, left to the reconciler");
        }
    }

    /// The admission decision; a missing counter is rebuilt once.
    async fn admit(
        &self,
        ask: &Ask,
        reservation: Uuid,
        claim: Option<&Claim<'_>>,
    ) -> DomainResult<i64> {
        for _ in 0..2 {
            match self.stock.take(ask, reservation, claim).await? {
                Decision::Taken { user_total, .. } => return Ok(user_total),
                Decision::SoldOut => return Err(DomainError::SoldOut),
                Decision::LimitExceeded => return Err(DomainError::LimitExceeded),
                Decision::NotActive => {
                    return Err(DomainError::NotActive(format!(
                        "{} is not active",
                        K::PARENT
                    )))
                }
                Decision::Uninitialized => {
                    self.rebuild(ask.id, false).await?;
                }
                Decision::InFlight => {
                    // `Answers::keyed` answers with the stored answer if
                    // there is one by then; else "ask again".
                    return Err(DomainError::Conflict(
                        "a request with this idempotency key is in flight".into(),
                    ));
                }
            }
        }
        Err(DomainError::Unavailable(format!(
            "{} counters unavailable",
            K::KIND.as_str()
        )))
    }

    /// [`Releases::journal`] on this engine's stock.
    pub async fn journal_releases(
        &self,
        rows: impl IntoIterator<Item = (Uuid, Uuid, Uuid, i64)>,
    ) -> DomainResult<Releases> {
        Releases::journal(self.stock.clone(), K::KIND, rows).await
    }

    /// Seeds the counters of a just-created parent with its whole `total`
    /// and no holders; a live counter is kept. A failure is only logged:
    /// the first reservation rebuilds the counters from PostgreSQL.
    pub async fn seed_new(&self, id: Uuid, total: i64) {
        let seed = promo_store::counters::CounterSeed {
            remaining: total,
            users: Vec::new(),
        };
        if let Err(e) = self.stock.seed(K::KIND, id, &seed, false).await {
            tracing::warn!(kind = K::NAME, %id, error = %e, "counters of a new parent not seeded");
        }
    }

    /// Rebuilds one counter set from PostgreSQL; without `force` a live
    /// counter is kept. Returns whether it was installed.
    pub async fn rebuild(&self, id: Uuid, force: bool) -> DomainResult<bool> {
        promo_store::stock::rebuild(&self.pool, &*self.stock, K::KIND, id, force).await
    }

    /// Rebuilds every counter set of this kind (missing ones, or all with
    /// `force`); returns how many were installed.
    pub async fn rebuild_all(&self, force: bool) -> DomainResult<usize> {
        promo_store::stock::rebuild_all(&self.pool, &*self.stock, K::KIND, force).await
    }
}

fn outcome(metric: &'static str, outcome: &'static str) {
    metrics::counter!(metric, "outcome" => outcome).increment(1);
}
