//! Point lots: every credit is a lot with its own expiry, and a user's
//! balance is the sum of the remainders of their lots. Spending draws from
//! lots soonest expiry first (ties: oldest earn first; lots that never
//! expire last), and records each draw so that a cancel gives exactly those
//! points back. Expiry ([`expire`]) takes a due lot's remainder, but never
//! what pending holds reserve. The store decides all of it here, under the
//! balance rows' locks (ARCHITECTURE.md, "Point lots").

use super::Funds;
use crate::{DomainError, DomainResult};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;

/// A lot as stored and as `GET /points/lots` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    pub id: Uuid,
    pub user_id: Uuid,
    /// The transaction that credited it; none for a lot carried over from a
    /// balance older than lots.
    pub earn_transaction_id: Option<Uuid>,
    pub amount: i64,
    /// What is left to spend or expire (0..=amount).
    pub remaining: i64,
    /// `None`: never expires.
    pub expires_at: Option<DateTime<Utc>>,
    pub earned_at: DateTime<Utc>,
}

/// The order lots are spent in: soonest expiry first, never-expiring last,
/// then the oldest earn, then the id (so that the order is total).
pub fn spend_key(l: &Lot) -> (bool, Option<DateTime<Utc>>, DateTime<Utc>, Uuid) {
    (l.expires_at.is_none(), l.expires_at, l.earned_at, l.id)
}

/// What one debit took from one lot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draw {
    pub lot_id: Uuid,
    pub amount: i64,
}

/// A lot's remainder that is next to expire (`GET /points/balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiring {
    pub amount: i64,
    pub expires_at: DateTime<Utc>,
}

/// How many lots `GET /points/balance` lists as expiring next.
pub const EXPIRING_SHOWN: i64 = 5;

/// A page of one user's live lots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LotQuery {
    pub user_id: Uuid,
    pub page: crate::page::PageRequest,
}

/// The expiry of a new lot at `now`: the one asked for, which must be in the
/// future, or `now` plus the default lifetime (`None`: never).
pub fn expiry_of(
    asked: Option<DateTime<Utc>>,
    default_lifetime: Option<Duration>,
    now: DateTime<Utc>,
) -> DomainResult<Option<DateTime<Utc>>> {
    match asked {
        Some(at) if at <= now => Err(DomainError::validation(
            "expires_at",
            "expires_at must be in the future",
        )),
        Some(at) => Ok(Some(at)),
        None => Ok(default_lifetime.and_then(|d| now.checked_add_signed(d))),
    }
}

/// Draws `amount` from `lots`, which are in spend order: each lot gives what
/// it has until the amount is met. Nothing changes unless all of it is
/// there (it always is while balance = sum of remainders).
pub fn draw(lots: &mut [Lot], amount: i64) -> DomainResult<Vec<Draw>> {
    let mut draws = Vec::new();
    let mut left = amount;
    for l in lots.iter().filter(|l| l.remaining > 0) {
        if left == 0 {
            break;
        }
        let take = left.min(l.remaining);
        draws.push(Draw {
            lot_id: l.id,
            amount: take,
        });
        left -= take;
    }
    if left > 0 {
        return Err(DomainError::Internal(format!(
            "lots hold less than the {amount} a debit within the balance draws"
        )));
    }
    for (l, d) in lots.iter_mut().filter(|l| l.remaining > 0).zip(&draws) {
        l.remaining -= d.amount;
    }
    Ok(draws)
}

/// What a batch member does to lots (besides its balance change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LotOp {
    /// Nothing (a change that predates lots, in tests).
    None,
    /// A credit that makes a new lot of its amount (an earn): `id` is the
    /// crediting transaction's.
    Add {
        id: Uuid,
        expires_at: Option<DateTime<Utc>>,
    },
    /// A debit (a use): drawn soonest expiry first.
    Draw,
    /// A cancel of a use: gives these draws back to their lots.
    Return(Vec<Draw>),
    /// A cancel of an earn: empties its lot, only while nothing was drawn
    /// from it or expired.
    Revoke(Uuid),
}

/// A lot's new remainder, written only if it still is `was`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LotUpdate {
    pub id: Uuid,
    pub remaining: i64,
    pub was: i64,
}

/// What a batch does to lots: lots to insert and remainders to update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LotChanges {
    pub new: Vec<Lot>,
    pub updated: Vec<LotUpdate>,
}

/// The lots a batch decides on, per user in spend order: every live lot of
/// the users it draws for, and the lots it gives back to or revokes.
#[derive(Debug, Clone, Default)]
pub struct LotBook {
    by_user: HashMap<Uuid, Vec<Lot>>,
    /// The remainder of each lot read, as read.
    was: HashMap<Uuid, i64>,
}

impl LotBook {
    pub fn new(lots: Vec<Lot>) -> Self {
        let mut book = LotBook::default();
        for l in lots {
            book.was.insert(l.id, l.remaining);
            book.by_user.entry(l.user_id).or_default().push(l);
        }
        for lots in book.by_user.values_mut() {
            lots.sort_unstable_by_key(spend_key);
        }
        book
    }

    fn lot_mut(&mut self, user: Uuid, id: Uuid) -> DomainResult<&mut Lot> {
        self.by_user
            .get_mut(&user)
            .and_then(|lots| lots.iter_mut().find(|l| l.id == id))
            .ok_or_else(|| DomainError::Internal(format!("lot {id} of {user} was not read")))
    }

    /// Applies `op` of a change of `amount` (> 0) by `user` at `at`; the
    /// draws it made. All or nothing: a refusal changes no lot.
    pub fn apply(
        &mut self,
        user: Uuid,
        at: DateTime<Utc>,
        amount: i64,
        op: &LotOp,
    ) -> DomainResult<Vec<Draw>> {
        match op {
            LotOp::None => {}
            LotOp::Add { id, expires_at } => {
                let lot = Lot {
                    id: *id,
                    user_id: user,
                    earn_transaction_id: Some(*id),
                    amount,
                    remaining: amount,
                    expires_at: *expires_at,
                    earned_at: at,
                };
                let lots = self.by_user.entry(user).or_default();
                let at = lots.partition_point(|l| spend_key(l) < spend_key(&lot));
                lots.insert(at, lot);
            }
            LotOp::Draw => {
                let lots = self
                    .by_user
                    .get_mut(&user)
                    .map_or(&mut [][..], |v| &mut v[..]);
                return draw(lots, amount);
            }
            LotOp::Return(draws) => {
                for d in draws {
                    let l = self.lot_mut(user, d.lot_id)?;
                    if l.remaining + d.amount > l.amount {
                        return Err(DomainError::Internal(format!(
                            "giving {} back to lot {} would exceed it",
                            d.amount, l.id
                        )));
                    }
                }
                for d in draws {
                    self.lot_mut(user, d.lot_id)?.remaining += d.amount;
                }
            }
            LotOp::Revoke(id) => {
                let l = self.lot_mut(user, *id)?;
                if l.remaining != l.amount || l.amount != amount {
                    // Part of the earn was spent or expired.
                    return Err(DomainError::InsufficientBalance);
                }
                l.remaining = 0;
            }
        }
        Ok(Vec::new())
    }

    /// The lots to insert (made by this batch) and the remainders that moved.
    pub fn changes(self) -> LotChanges {
        let mut c = LotChanges::default();
        for l in self.by_user.into_values().flatten() {
            match self.was.get(&l.id) {
                None => c.new.push(l),
                Some(&was) if was != l.remaining => c.updated.push(LotUpdate {
                    id: l.id,
                    remaining: l.remaining,
                    was,
                }),
                Some(_) => {}
            }
        }
        c.new.sort_unstable_by_key(|l| l.id);
        c.updated.sort_unstable_by_key(|u| u.id);
        c
    }
}

/// A lot past its expiry with a remainder, as the sweeper read it under its
/// user's balance row lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueLot {
    pub id: Uuid,
    pub user_id: Uuid,
    pub remaining: i64,
    /// The lot's expiries so far.
    pub expiries: i32,
}

/// One EXPIRE the sweeper writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    pub lot_id: Uuid,
    pub user_id: Uuid,
    pub amount: i64,
    /// The lot's remainder after it.
    pub remaining: i64,
    /// Which expiry of the lot this is (1 for the first).
    pub number: i32,
    pub balance_after: i64,
}

/// Expires the remainders of `due` (grouped by user, each user's in spend
/// order) from the users' `funds`. Pending holds keep priority: an expiry
/// takes at most what is available (balance - held), and what it leaves in
/// a lot expires at a later sweep, once the hold is resolved. Returns the
/// expiries and each changed user's funds, by user id.
pub fn expire(funds: &HashMap<Uuid, Funds>, due: &[DueLot]) -> (Vec<Expiry>, Vec<(Uuid, Funds)>) {
    let mut now: HashMap<Uuid, Funds> = HashMap::new();
    let mut out = Vec::new();
    for l in due {
        let f = now
            .entry(l.user_id)
            .or_insert_with(|| funds.get(&l.user_id).copied().unwrap_or_default());
        let take = l.remaining.min(f.available());
        if take <= 0 {
            continue;
        }
        f.balance -= take;
        out.push(Expiry {
            lot_id: l.id,
            user_id: l.user_id,
            amount: take,
            remaining: l.remaining - take,
            number: l.expiries + 1,
            balance_after: f.balance,
        });
    }
    let mut changed: Vec<(Uuid, Funds)> = now
        .into_iter()
        .filter(|(u, f)| funds.get(u).copied().unwrap_or_default() != *f)
        .collect();
    changed.sort_unstable_by_key(|(u, _)| *u);
    (out, changed)
}

#[cfg(test)]
mod tests;
