//! Point holds (API.md "Holds"): reserve part of a balance, then capture,
//! void or let it expire, exactly once. Each is one transaction
//! (`transact::Write`) that moves the hold and the `held` column of the
//! user's locked balance row together, with its events; the sweeper expires
//! due holds ([`Expire`]). See ARCHITECTURE.md, "Point holds".

use super::{hold_store, lot_store, store, PointService};
use crate::ctx::Ctx;
use crate::error::from_sqlx;
use crate::outbox::{self, Event};
use crate::sweep::Expire;
use crate::transact::{begin, Write};
use chrono::{DateTime, Utc};
use promo_domain::point::hold::{HoldStatus, NewHold, PointHold};
use promo_domain::point::{Funds, Transaction, TxType};
use promo_domain::{DomainError, DomainResult};
use promo_store::keys::CachedBalance;
use promo_store::topics;
use std::collections::BTreeMap;
use uuid::Uuid;

/// A hold's event: the hold as `GET /points/holds/{id}` shows it after the
/// change, keyed by its user like every point event (docs/events.md).
fn hold_event(topic: &str, h: &PointHold, at: DateTime<Utc>) -> DomainResult<Event> {
    Ok(Event::of(topic, h.user_id, Some(h.user_id), at, h)?)
}

fn hold_metric(op: &'static str, outcome: &DomainResult<impl Sized>) {
    let outcome = match outcome {
        Ok(_) => "ok",
        Err(e) if e.is_business_refusal() => "refused",
        Err(_) => "error",
    };
    metrics::counter!("promo_point_hold_ops_total", "op" => op, "outcome" => outcome).increment(1);
}

impl PointService {
    pub(super) async fn create_hold_once(
        &self,
        ctx: &Ctx,
        ask: NewHold,
    ) -> DomainResult<PointHold> {
        let now = self.clock.now();
        let (max, secs) = (self.limits.max_amount, self.limits.hold_seconds);
        let hold = ask.pending(Uuid::now_v7(), max, secs, now)?;
        let mut w = begin!(&self.pool, ctx);
        let funds =
            hold_store::move_funds(w.tx(), hold.user_id, now, |f| f.hold(hold.amount)).await?;
        hold_store::insert(w.tx(), &hold).await?;
        let ev = hold_event(topics::POINT_HELD, &hold, now)?;
        w.commit(&hold, &[ev]).await?;
        self.cache.put(hold.user_id, funds).await;
        Ok(hold)
    }

    /// Spends `asked` (default: all) of the hold as a USE row naming it and
    /// releases the rest.
    pub(super) async fn capture_once(
        &self,
        ctx: &Ctx,
        id: Uuid,
        asked: Option<i64>,
    ) -> DomainResult<Transaction> {
        let now = self.clock.now();
        let mut w = begin!(&self.pool, ctx);
        let (mut hold, funds) = settle(&mut w, ctx, id, Settle::Capture(asked), now).await?;
        let spent = hold.captured_amount.unwrap_or(hold.amount);
        let tx = Transaction {
            id: Uuid::now_v7(),
            user_id: hold.user_id,
            tx_type: TxType::Use,
            amount: spent,
            delta: -spent,
            balance_after: funds.balance,
            reference: hold.reference.clone(),
            description: Some(format!("capture of hold {id}")),
            cancelled_transaction_id: None,
            hold_id: Some(id),
            lot_id: None,
            created_at: now,
        };
        // The balance row is still locked (`settle`): draw as a use does.
        let draws = lot_store::draw_for(w.tx(), &tx).await?;
        hold_store::insert_transaction(w.tx(), &tx, &draws).await?;
        hold.transaction_id = Some(tx.id);
        // The ledger row's event, as for every USE, then the hold's.
        let evs = [
            store::event(&tx),
            hold_event(topics::POINT_HOLD_CAPTURED, &hold, now)?,
        ];
        w.commit(&tx, &evs).await?;
        self.cache.put(hold.user_id, funds).await;
        Ok(tx)
    }

    pub(super) async fn void_once(&self, ctx: &Ctx, id: Uuid) -> DomainResult<PointHold> {
        let now = self.clock.now();
        let mut w = begin!(&self.pool, ctx);
        let (hold, funds) = settle(&mut w, ctx, id, Settle::Void, now).await?;
        let ev = hold_event(topics::POINT_HOLD_VOIDED, &hold, now)?;
        w.commit(&hold, &[ev]).await?;
        self.cache.put(hold.user_id, funds).await;
        Ok(hold)
    }

    pub(super) async fn get_hold_of(&self, ctx: &Ctx, id: Uuid) -> DomainResult<PointHold> {
        let hold = hold_store::get(&self.pool, id).await?;
        ctx.principal.require_owner(hold.user_id)?;
        Ok(hold)
    }

    /// Runs a hold write under its key, counting the outcome.
    pub(super) async fn hold_op<T: serde::de::DeserializeOwned>(
        &self,
        op: &'static str,
        ctx: &Ctx,
        work: impl std::future::Future<Output = DomainResult<T>>,
    ) -> DomainResult<T> {
        let res = self.answers.keyed(ctx, work).await;
        hold_metric(op, &res);
        res
    }
}

/// How a caller resolves a hold.
enum Settle {
    /// Spend this much of it (default: all); the rest is released.
    Capture(Option<i64>),
    Void,
}

/// Resolves hold `id` for its owner (or an admin) at `now`. The hold's
/// conditional UPDATE comes first and decides the race; the user's funds
/// then release the hold, less what a capture spends. Returns the hold and
/// the funds as written.
async fn settle(
    w: &mut Write<'_>,
    ctx: &Ctx,
    id: Uuid,
    how: Settle,
    now: DateTime<Utc>,
) -> DomainResult<(PointHold, CachedBalance)> {
    let hold = hold_store::get(&mut **w.tx(), id).await?;
    ctx.principal.require_owner(hold.user_id)?;
    // Bad input is refused whatever the hold's state, before anything moves.
    let (to, spent) = match how {
        Settle::Capture(asked) => (HoldStatus::Captured, Some(hold.capture_amount(asked)?)),
        Settle::Void => (HoldStatus::Voided, None),
    };
    hold.check_resolvable(now)?;
    let Some(hold) = hold_store::resolve(w.tx(), id, to, spent, now).await? else {
        // Lost to a concurrent resolution: report what it is now.
        hold_store::get(&mut **w.tx(), id)
            .await?
            .check_resolvable(now)?;
        return Err(DomainError::AlreadyResolved);
    };
    let (held, spent) = (hold.amount, spent.unwrap_or(0));
    let funds =
        hold_store::move_funds(w.tx(), hold.user_id, now, |f| f.release(held, spent)).await?;
    Ok((hold, funds))
}

/// The sweeper's work (`crate::sweep`): one transaction expires a batch of
/// due holds, releases their points and appends their events.
impl Expire for PointService {
    const KIND: &'static str = "point";

    async fn expire_due(&self, now: DateTime<Utc>, limit: i64) -> DomainResult<usize> {
        let mut db = self.pool.begin().await.map_err(from_sqlx)?;
        let holds = hold_store::expire_due(&mut db, now, limit).await?;
        if holds.is_empty() {
            return Ok(0);
        }
        // Sorted by user, so the rows lock in the order every writer uses.
        let mut released: BTreeMap<Uuid, i64> = BTreeMap::new();
        for h in &holds {
            *released.entry(h.user_id).or_default() += h.amount;
        }
        let users: Vec<Uuid> = released.keys().copied().collect();
        let funds = hold_store::lock_funds(&mut db, &users).await?;
        let next = released
            .iter()
            .map(|(u, amount)| {
                let f: Funds = funds.get(u).copied().unwrap_or_default();
                f.release(*amount, 0).map(|f| (*u, f))
            })
            .collect::<DomainResult<Vec<_>>>()?;
        let written = hold_store::write_funds(&mut db, &next, now).await?;
        let events = holds
            .iter()
            .map(|h| hold_event(topics::POINT_HOLD_EXPIRED, h, now))
            .collect::<DomainResult<Vec<_>>>()?;
        outbox::append(&mut db, &events).await?;
        db.commit().await.map_err(from_sqlx)?;
        for (user, c) in written {
            self.cache.put(user, c).await;
        }
        Ok(holds.len())
    }
}
