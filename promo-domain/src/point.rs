//! Point ledger rules: amounts, balance transitions and cancellation.
//! The ledger is append-only; a correction is a CANCEL row. Holds reserve
//! part of a balance for a checkout ([`hold`]); every change spends only what
//! they leave available ([`Funds`]).

pub mod hold;
pub mod lot;

use crate::page::PageRequest;
use crate::{DomainError, DomainResult};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TxType {
    Earn,
    Use,
    Cancel,
    /// An expired lot's remainder leaving the balance (the sweeper's).
    Expire,
}

impl TxType {
    pub fn as_str(&self) -> &'static str {
        match self {
            TxType::Earn => "EARN",
            TxType::Use => "USE",
            TxType::Cancel => "CANCEL",
            TxType::Expire => "EXPIRE",
        }
    }

    pub fn parse(s: &str) -> DomainResult<Self> {
        match s {
            "EARN" => Ok(TxType::Earn),
            "USE" => Ok(TxType::Use),
            "CANCEL" => Ok(TxType::Cancel),
            "EXPIRE" => Ok(TxType::Expire),
            _ => Err(DomainError::validation(
                "type",
                "type must be EARN, USE, CANCEL or EXPIRE",
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub id: Uuid,
    pub user_id: Uuid,
    #[serde(rename = "type")]
    pub tx_type: TxType,
    /// The magnitude, as requested (always > 0).
    pub amount: i64,
    /// The signed effect on the balance: + for EARN and for cancelling a USE.
    pub delta: i64,
    pub balance_after: i64,
    pub reference: Option<String>,
    pub description: Option<String>,
    pub cancelled_transaction_id: Option<Uuid>,
    /// The hold a USE captured, if it is a capture.
    #[serde(default)]
    pub hold_id: Option<Uuid>,
    /// The lot an EXPIRE expired.
    #[serde(default)]
    pub lot_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

pub fn validate_amount(amount: i64, max: i64) -> DomainResult<()> {
    if amount <= 0 {
        return Err(DomainError::validation(
            "amount",
            "amount must be greater than 0",
        ));
    }
    if amount > max {
        return Err(DomainError::validation(
            "amount",
            format!("amount must be at most {max}"),
        ));
    }
    Ok(())
}

pub fn validate_text(field: &str, v: Option<&str>, max: usize) -> DomainResult<()> {
    if v.is_some_and(|v| v.chars().count() > max) {
        return Err(DomainError::validation(
            field,
            format!("{field} must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// The balance after applying `delta`, or the refusal.
pub fn apply(balance: i64, delta: i64) -> DomainResult<i64> {
    let next = balance
        .checked_add(delta)
        .ok_or_else(|| DomainError::validation("amount", "amount would overflow the balance"))?;
    if next < 0 {
        return Err(DomainError::InsufficientBalance);
    }
    Ok(next)
}

/// A user's points as holds see them: the balance and the part of it that
/// pending holds reserve. Invariant (also a CHECK of the balance row):
/// `0 <= held <= balance`, so `available` is never negative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Funds {
    pub balance: i64,
    pub held: i64,
}

impl Funds {
    pub fn available(&self) -> i64 {
        self.balance - self.held
    }

    /// A ledger change (earn, use, cancel): a debit may take only what is
    /// available, so no change can spend points a hold reserved.
    pub fn apply(self, delta: i64) -> DomainResult<Funds> {
        let balance = apply(self.balance, delta)?;
        if balance < self.held {
            return Err(DomainError::InsufficientBalance);
        }
        Ok(Funds { balance, ..self })
    }

    /// Reserves `amount` (> 0) of what is available.
    pub fn hold(self, amount: i64) -> DomainResult<Funds> {
        if amount > self.available() {
            return Err(DomainError::InsufficientBalance);
        }
        Ok(Funds {
            held: self.held + amount,
            ..self
        })
    }

    /// Resolves a hold of `held` points, spending `spent` of them (a capture;
    /// 0 for a void or an expiry); the rest becomes available again. Fails
    /// only on data that breaks the invariant, which no request can cause.
    pub fn release(self, held: i64, spent: i64) -> DomainResult<Funds> {
        if !(0..=held).contains(&spent) || held > self.held {
            return Err(DomainError::Internal(format!(
                "release of {held} (spending {spent}) from {self:?}"
            )));
        }
        Ok(Funds {
            balance: self.balance - spent,
            held: self.held - held,
        })
    }
}

/// The signed delta of cancelling `original`; a CANCEL cannot itself be
/// cancelled, nor can an EXPIRE (an expiry is final).
pub fn cancel_delta(original: &Transaction) -> DomainResult<i64> {
    match original.tx_type {
        TxType::Cancel | TxType::Expire => Err(DomainError::Conflict(format!(
            "a {} transaction cannot be cancelled",
            original.tx_type.as_str().to_lowercase()
        ))),
        _ => Ok(-original.delta),
    }
}

/// One change of a group-committed batch, as its decision sees it. `K` is
/// the idempotency key (with its owner): any value that compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMember<K> {
    pub user_id: Uuid,
    pub delta: i64,
    /// The transaction this change cancels, if it is a CANCEL.
    pub cancels: Option<Uuid>,
    pub key: Option<K>,
    pub at: DateTime<Utc>,
    /// What it does to the user's lots.
    pub lot: lot::LotOp,
}

/// A balance row as the batch read it under its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceRow {
    pub balance: i64,
    /// The sum of the user's pending holds; a batch never changes it, and no
    /// hold can change while the batch holds the row's lock.
    pub held: i64,
    pub version: i64,
}

/// What was committed before the batch, read under the balance rows' locks.
#[derive(Debug, Clone)]
pub struct Committed<K> {
    /// The rows that exist; a user without one starts at balance and version 0.
    pub rows: HashMap<Uuid, BalanceRow>,
    /// Transactions that already have a CANCEL.
    pub cancelled: HashSet<Uuid>,
    /// Idempotency keys already used.
    pub keys: HashSet<K>,
    /// The lots the members draw from, give back to or revoke.
    pub lots: lot::LotBook,
}

/// The decision on one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Stored: the balance after it, what holds reserve of it, and the
    /// row's version at that point.
    Applied {
        balance: i64,
        held: i64,
        version: i64,
    },
    /// Its key was used before (committed, or by an earlier member).
    Duplicate,
    Refused(DomainError),
}

/// A balance row the batch moved, to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowChange {
    pub user_id: Uuid,
    /// The version read under the lock (the write is conditional on it), or
    /// `None` when the row is new.
    pub was: Option<i64>,
    pub balance: i64,
    pub version: i64,
    /// The latest time of the changes applied to it.
    pub at: DateTime<Utc>,
}

/// The decisions of a batch, one per member in batch order, and the rows
/// they moved, sorted by user (so that concurrent writers meet in one order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchDecision {
    pub decisions: Vec<Decision>,
    pub rows: Vec<RowChange>,
    /// What each member drew from lots, in batch order (empty unless it
    /// applied and drew).
    pub draws: Vec<Vec<lot::Draw>>,
    /// The lots the applied members made and moved.
    pub lots: lot::LotChanges,
}

impl BatchDecision {
    /// Whether any member is to be stored.
    pub fn applies_any(&self) -> bool {
        self.decisions
            .iter()
            .any(|d| matches!(d, Decision::Applied { .. }))
    }
}

/// Decides a batch: members apply in batch order, each on the balance the
/// previous ones left, exactly as if they had committed one by one. A refused
/// or duplicate member changes nothing, and never claims its key, so the
/// client may retry.
pub fn decide_batch<K: Eq + Hash + Clone>(
    committed: Committed<K>,
    members: &[BatchMember<K>],
) -> BatchDecision {
    let Committed {
        rows,
        mut cancelled,
        mut keys,
        mut lots,
    } = committed;
    let mut moved: HashMap<Uuid, RowChange> = HashMap::new();
    let mut draws = Vec::with_capacity(members.len());
    let decisions = members
        .iter()
        .map(|m| {
            draws.push(Vec::new());
            if m.key.as_ref().is_some_and(|k| keys.contains(k)) {
                return Decision::Duplicate;
            }
            if m.cancels.is_some_and(|orig| cancelled.contains(&orig)) {
                return Decision::Refused(DomainError::AlreadyCancelled);
            }
            let held = rows.get(&m.user_id).map_or(0, |r| r.held);
            let (balance, version) = match moved.get(&m.user_id) {
                Some(r) => (r.balance, r.version),
                None => rows
                    .get(&m.user_id)
                    .map_or((0, 0), |r| (r.balance, r.version)),
            };
            let balance = match (Funds { balance, held }).apply(m.delta) {
                Ok(f) => f.balance,
                Err(e) => return Decision::Refused(e),
            };
            // The lots move with the balance, or the member is refused.
            match lots.apply(m.user_id, m.at, m.delta.abs(), &m.lot) {
                Ok(d) => *draws.last_mut().expect("pushed above") = d,
                Err(e) => return Decision::Refused(e),
            }
            let row = moved.entry(m.user_id).or_insert_with(|| RowChange {
                user_id: m.user_id,
                was: rows.get(&m.user_id).map(|r| r.version),
                balance,
                version,
                at: m.at,
            });
            row.balance = balance;
            row.version = version + 1;
            row.at = row.at.max(m.at);
            if let Some(k) = &m.key {
                keys.insert(k.clone());
            }
            if let Some(orig) = m.cancels {
                cancelled.insert(orig);
            }
            Decision::Applied {
                balance,
                held,
                version: row.version,
            }
        })
        .collect();
    let mut rows: Vec<RowChange> = moved.into_values().collect();
    rows.sort_unstable_by_key(|r| r.user_id);
    BatchDecision {
        decisions,
        rows,
        draws,
        lots: lots.changes(),
    }
}

/// A request to earn or use points, as it arrives; the service validates it
/// against its configured maximum with [`PointChange::validate`].
/// A page of one user's transactions, optionally of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    pub user_id: Uuid,
    pub kind: Option<TxType>,
    pub page: PageRequest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointChange {
    pub user_id: Uuid,
    pub amount: i64,
    pub reference: Option<String>,
    pub description: Option<String>,
}

impl PointChange {
    pub fn validate(&self, max_amount: i64) -> DomainResult<()> {
        validate_amount(self.amount, max_amount)?;
        validate_text("reference", self.reference.as_deref(), 200)?;
        validate_text("description", self.description.as_deref(), 500)
    }

    /// The signed delta of this change as `kind` (EARN credits, USE debits).
    pub fn delta(&self, kind: TxType) -> i64 {
        match kind {
            TxType::Use => -self.amount,
            _ => self.amount,
        }
    }
}

/// A user's balance, what pending holds reserve of it, and the lots that
/// expire next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub user_id: Uuid,
    pub balance: i64,
    pub held: i64,
    /// The remainders of the next lots to expire, soonest first.
    #[serde(default)]
    pub expiring: Vec<lot::Expiring>,
}

impl Balance {
    /// What a use or a new hold may spend.
    pub fn available(&self) -> i64 {
        Funds {
            balance: self.balance,
            held: self.held,
        }
        .available()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert!(validate_amount(0, 10).is_err());
        assert!(validate_amount(-1, 10).is_err());
        assert!(validate_amount(11, 10).is_err());
        assert!(validate_amount(10, 10).is_ok());
    }

    #[test]
    fn balance_never_negative_nor_overflows() {
        assert_eq!(apply(10, -10).unwrap(), 0);
        assert_eq!(
            apply(10, -11).unwrap_err(),
            DomainError::InsufficientBalance
        );
        assert_eq!(apply(i64::MAX, 1).unwrap_err().field(), Some("amount"));
    }

    fn tx(kind: TxType, delta: i64) -> Transaction {
        Transaction {
            id: Uuid::nil(),
            user_id: Uuid::nil(),
            tx_type: kind,
            amount: delta.abs(),
            delta,
            balance_after: 0,
            reference: None,
            description: None,
            cancelled_transaction_id: None,
            hold_id: None,
            lot_id: None,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn cancelling_reverses_the_effect_and_cancels_are_final() {
        assert_eq!(cancel_delta(&tx(TxType::Earn, 30)).unwrap(), -30);
        assert_eq!(cancel_delta(&tx(TxType::Use, -30)).unwrap(), 30);
        for final_kind in [TxType::Cancel, TxType::Expire] {
            let e = cancel_delta(&tx(final_kind, -30)).unwrap_err();
            assert_eq!(e.code(), "CONFLICT");
        }
    }

    #[test]
    fn changes_are_validated_and_signed() {
        let u = Uuid::nil();
        let mut c = PointChange {
            user_id: u,
            amount: 5,
            reference: None,
            description: None,
        };
        assert!(c.validate(10).is_ok());
        assert_eq!(c.delta(TxType::Earn), 5);
        assert_eq!(c.delta(TxType::Use), -5);
        assert_eq!(c.validate(4).unwrap_err().field(), Some("amount"));
        c.reference = Some("x".repeat(201));
        assert_eq!(c.validate(10).unwrap_err().field(), Some("reference"));
    }

    mod batch {
        use super::super::*;
        use proptest::prelude::*;

        type Key = u8;

        fn user(i: u8) -> Uuid {
            Uuid::from_u128(u128::from(i) + 1)
        }

        fn member() -> impl Strategy<Value = BatchMember<Key>> {
            let delta = prop_oneof![
                8 => -50i64..50,
                1 => Just(i64::MAX),
                1 => Just(i64::MIN + 1),
            ];
            (
                0u8..3,
                delta,
                proptest::option::weighted(0.3, 0u8..4),
                proptest::option::weighted(0.5, 0u8..4),
                0i64..1000,
            )
                .prop_map(|(u, delta, cancels, key, ms)| BatchMember {
                    user_id: user(u),
                    delta,
                    cancels: cancels.map(|c| Uuid::from_u128(1000 + u128::from(c))),
                    key,
                    at: DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::milliseconds(ms),
                    lot: lot::LotOp::None,
                })
        }

        fn committed() -> impl Strategy<Value = Committed<Key>> {
            (
                proptest::collection::hash_map(0u8..3, (0i64..100, 0i64..100, 1i64..10), 0..3),
                proptest::collection::hash_set(0u8..4, 0..2),
                proptest::collection::hash_set(0u8..4, 0..2),
            )
                .prop_map(|(rows, cancelled, keys)| Committed {
                    rows: rows
                        .into_iter()
                        .map(|(u, (balance, held, version))| {
                            // Any held amount the row's CHECK allows.
                            let held = held.min(balance);
                            (
                                user(u),
                                BalanceRow {
                                    balance,
                                    held,
                                    version,
                                },
                            )
                        })
                        .collect(),
                    cancelled: cancelled
                        .into_iter()
                        .map(|c| Uuid::from_u128(1000 + u128::from(c)))
                        .collect(),
                    keys,
                    lots: Default::default(),
                })
        }

        fn start(c: &Committed<Key>, u: Uuid) -> BalanceRow {
            c.rows.get(&u).copied().unwrap_or(BalanceRow {
                balance: 0,
                held: 0,
                version: 0,
            })
        }

        proptest! {
            #[test]
            fn balances_chain_and_never_go_negative(
                c in committed(),
                members in proptest::collection::vec(member(), 0..24),
            ) {
                let d = decide_batch(c.clone(), &members);
                prop_assert_eq!(d.decisions.len(), members.len());
                let mut now: HashMap<Uuid, BalanceRow> = HashMap::new();
                for (m, decision) in members.iter().zip(&d.decisions) {
                    let prev = now.get(&m.user_id).copied().unwrap_or(start(&c, m.user_id));
                    match decision {
                        Decision::Applied { balance, held, version } => {
                            // Never below what holds reserve, so never negative.
                            prop_assert_eq!(*held, prev.held);
                            prop_assert!(*balance >= *held && *held >= 0);
                            prop_assert_eq!(Some(*balance), prev.balance.checked_add(m.delta));
                            prop_assert_eq!(*version, prev.version + 1);
                            now.insert(m.user_id, BalanceRow { balance: *balance, held: *held, version: *version });
                        }
                        Decision::Refused(DomainError::InsufficientBalance) => {
                            prop_assert!(prev.balance.checked_add(m.delta).is_some_and(|b| b < prev.held));
                        }
                        Decision::Refused(DomainError::Validation { .. }) => {
                            prop_assert!(prev.balance.checked_add(m.delta).is_none());
                        }
                        Decision::Refused(DomainError::AlreadyCancelled) => {
                            prop_assert!(m.cancels.is_some());
                        }
                        Decision::Duplicate => prop_assert!(m.key.is_some()),
                        Decision::Refused(e) => prop_assert!(false, "unexpected refusal {e:?}"),
                    }
                }
                // The rows to write are exactly the users moved, at their last balance.
                let mut users: Vec<&Uuid> = now.keys().collect();
                users.sort();
                prop_assert_eq!(d.rows.iter().map(|r| &r.user_id).collect::<Vec<_>>(), users);
                for r in &d.rows {
                    let last = now[&r.user_id];
                    prop_assert_eq!((r.balance, r.version), (last.balance, last.version));
                    prop_assert_eq!(r.was, c.rows.get(&r.user_id).map(|s| s.version));
                    prop_assert!(r.balance >= 0);
                }
            }

            #[test]
            fn cancels_and_keys_take_effect_at_most_once(
                c in committed(),
                members in proptest::collection::vec(member(), 0..24),
            ) {
                let d = decide_batch(c.clone(), &members);
                let applied = || members.iter().zip(&d.decisions)
                    .filter(|(_, d)| matches!(d, Decision::Applied { .. }))
                    .map(|(m, _)| m);
                let mut cancelled = c.cancelled.clone();
                for orig in applied().filter_map(|m| m.cancels) {
                    prop_assert!(cancelled.insert(orig), "{orig} cancelled twice");
                }
                let mut keys = c.keys.clone();
                for (m, decision) in members.iter().zip(&d.decisions) {
                    let Some(k) = m.key else { continue };
                    // A key is a duplicate exactly when it was used before.
                    prop_assert_eq!(keys.contains(&k), *decision == Decision::Duplicate);
                    if matches!(decision, Decision::Applied { .. }) {
                        keys.insert(k);
                    }
                }
            }

            #[test]
            fn refusals_change_nothing(
                c in committed(),
                members in proptest::collection::vec(member(), 0..24),
            ) {
                let d = decide_batch(c.clone(), &members);
                let kept: Vec<BatchMember<Key>> = members.iter().zip(&d.decisions)
                    .filter(|(_, d)| matches!(d, Decision::Applied { .. }))
                    .map(|(m, _)| m.clone())
                    .collect();
                let alone = decide_batch(c, &kept);
                let applied: Vec<&Decision> = d.decisions.iter()
                    .filter(|d| matches!(d, Decision::Applied { .. }))
                    .collect();
                prop_assert_eq!(alone.decisions.iter().collect::<Vec<_>>(), applied);
                prop_assert_eq!(&alone.rows, &d.rows);
                prop_assert_eq!(alone.applies_any(), !kept.is_empty());
            }
        }

        #[test]
        fn a_batch_decides_in_order_on_the_running_balance() {
            let u = user(0);
            let at = DateTime::<Utc>::UNIX_EPOCH;
            let m = |delta, cancels, key| BatchMember {
                user_id: u,
                delta,
                cancels,
                key,
                at,
                lot: lot::LotOp::None,
            };
            let orig = Uuid::from_u128(7);
            let c = Committed {
                rows: HashMap::from([(
                    u,
                    BalanceRow {
                        balance: 12,
                        held: 2,
                        version: 3,
                    },
                )]),
                cancelled: HashSet::new(),
                keys: HashSet::from([9]),
                lots: Default::default(),
            };
            let d = decide_batch(
                c,
                &[
                    m(-15, None, Some(1)),
                    m(20, None, Some(1)),
                    m(-15, None, Some(1)),
                    m(-15, Some(orig), None),
                    m(-1, Some(orig), None),
                    m(1, None, Some(9)),
                ],
            );
            assert_eq!(
                d.decisions,
                vec![
                    Decision::Refused(DomainError::InsufficientBalance),
                    Decision::Applied {
                        balance: 32,
                        held: 2,
                        version: 4
                    },
                    Decision::Duplicate,
                    Decision::Applied {
                        balance: 17,
                        held: 2,
                        version: 5
                    },
                    Decision::Refused(DomainError::AlreadyCancelled),
                    Decision::Duplicate,
                ]
            );
            assert_eq!(
                d.rows,
                vec![RowChange {
                    user_id: u,
                    was: Some(3),
                    balance: 17,
                    version: 5,
                    at
                }]
            );
        }
    }
}
