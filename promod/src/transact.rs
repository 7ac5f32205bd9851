//! The idempotent write that every non-batched service write is: replay the
//! stored answer of the request's key, or run the change, record its answer
//! and append its events in one transaction, then commit. Written once so
//! that no write can forget a step (the answer recorded with the effect is
//! what makes a retry after any crash safe, see ARCHITECTURE.md).
//!
//! ```ignore
//! let mut w = begin!(&pool, ctx); // a replay returns its answer here
//! let policy = store::insert_policy(w.tx(), ..).await?;
//! w.commit(&policy, &[event]).await?;
//! ```
//!
//! (A closure taking the transaction would read better, but an async
//! closure borrowing it is not provably `Send` inside `async_trait` methods.)

use crate::audit;
use crate::ctx::Ctx;
use crate::error::from_sqlx;
use crate::idempotency;
use crate::outbox::{self, Event};
use chrono::{DateTime, Utc};
use promo_domain::DomainResult;
use serde::{de::DeserializeOwned, Serialize};
use sqlx::{PgPool, Postgres, Transaction};

/// How a keyed write starts.
pub enum Begun<'c, T> {
    /// The key's stored answer: nothing may run again (no follow-up work
    /// such as giving stock back either).
    Replayed(T),
    /// A fresh attempt, inside its transaction.
    Fresh(Write<'c>),
}

/// One write's transaction. Dropped without [`Write::commit`] (a refusal,
/// an error), it rolls back and stores nothing.
pub struct Write<'c> {
    tx: Transaction<'static, Postgres>,
    ctx: &'c Ctx,
}

impl<'c> Write<'c> {
    pub async fn begin<T: DeserializeOwned>(
        pool: &PgPool,
        ctx: &'c Ctx,
    ) -> DomainResult<Begun<'c, T>> {
        if let Some(answer) = idempotency::replay(pool, ctx).await? {
            return Ok(Begun::Replayed(answer));
        }
        let tx = pool.begin().await.map_err(from_sqlx)?;
        Ok(Begun::Fresh(Write { tx, ctx }))
    }

    pub fn tx(&mut self) -> &mut Transaction<'static, Postgres> {
        &mut self.tx
    }

    /// Records `change` as this caller's admin write, in this transaction:
    /// it commits with the change or not at all.
    pub async fn audit(&mut self, at: DateTime<Utc>, change: audit::Change) -> DomainResult<()> {
        let entry = change.entry(Some(self.ctx.principal.user_id), at);
        Ok(audit::insert(&mut self.tx, &[entry]).await?)
    }

    /// Records `answer` under the request's key, appends `events`, commits.
    pub async fn commit<T: Serialize>(mut self, answer: &T, events: &[Event]) -> DomainResult<()> {
        idempotency::record_answer(&mut self.tx, self.ctx, answer).await?;
        outbox::append(&mut self.tx, events).await?;
        self.tx.commit().await.map_err(from_sqlx)
    }
}

/// `let mut w = begin!(pool, ctx);`: [`Write::begin`], where a replay
/// returns its stored answer from the calling function (as `?` returns an
/// error), so that nothing after it can run twice.
macro_rules! begin {
    ($pool:expr, $ctx:expr) => {
        match $crate::transact::Write::begin($pool, $ctx).await? {
            $crate::transact::Begun::Replayed(answer) => return Ok(answer),
            $crate::transact::Begun::Fresh(w) => w,
        }
    };
}
pub(crate) use begin;
