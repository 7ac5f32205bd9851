//! Point ledger rules: amounts, balance transitions and cancellation.
//! The ledger is append-only; a correction is a CANCEL row.

use crate::{DomainError, DomainResult};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TxType {
    Earn,
    Use,
    Cancel,
}

impl TxType {
    pub fn as_str(&self) -> &'static str {
        match self {
            TxType::Earn => "EARN",
            TxType::Use => "USE",
            TxType::Cancel => "CANCEL",
        }
    }

    pub fn parse(s: &str) -> DomainResult<Self> {
        match s {
            "EARN" => Ok(TxType::Earn),
            "USE" => Ok(TxType::Use),
            "CANCEL" => Ok(TxType::Cancel),
            _ => Err(DomainError::validation(
                "type",
                "type must be EARN, USE or CANCEL",
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

/// The signed delta of cancelling `original`; a CANCEL cannot itself be cancelled.
pub fn cancel_delta(original: &Transaction) -> DomainResult<i64> {
    match original.tx_type {
        TxType::Cancel => Err(DomainError::Conflict(
            "a cancel transaction cannot be cancelled".into(),
        )),
        _ => Ok(-original.delta),
    }
}

/// A request to earn or use points, as it arrives; the service validates it
/// against its configured maximum with [`PointChange::validate`].
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

/// A user's balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub user_id: Uuid,
    pub balance: i64,
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
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn cancelling_reverses_the_effect_and_cancels_are_final() {
        assert_eq!(cancel_delta(&tx(TxType::Earn, 30)).unwrap(), -30);
        assert_eq!(cancel_delta(&tx(TxType::Use, -30)).unwrap(), 30);
        assert_eq!(
            cancel_delta(&tx(TxType::Cancel, 30)).unwrap_err().code(),
            "CONFLICT"
        );
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
}
