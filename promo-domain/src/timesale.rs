//! Time-sale rules: product and sale validation, the sale status as a function
//! of the clock, and order quantities.

use crate::coupon::{validate_description, validate_name, MAX_AMOUNT, MAX_QUANTITY};
use crate::{DomainError, DomainResult};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SaleStatus {
    Scheduled,
    Active,
    Ended,
    Cancelled,
}

impl SaleStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            SaleStatus::Scheduled => "SCHEDULED",
            SaleStatus::Active => "ACTIVE",
            SaleStatus::Ended => "ENDED",
            SaleStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> DomainResult<Self> {
        match s {
            "SCHEDULED" => Ok(SaleStatus::Scheduled),
            "ACTIVE" => Ok(SaleStatus::Active),
            "ENDED" => Ok(SaleStatus::Ended),
            "CANCELLED" => Ok(SaleStatus::Cancelled),
            _ => Err(DomainError::validation(
                "status",
                "status must be SCHEDULED, ACTIVE, ENDED or CANCELLED",
            )),
        }
    }
}

/// The status at `now`: cancellation is sticky, otherwise the window decides.
pub fn status_at(
    cancelled: bool,
    start_at: DateTime<Utc>,
    end_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> SaleStatus {
    if cancelled {
        SaleStatus::Cancelled
    } else if now < start_at {
        SaleStatus::Scheduled
    } else if now < end_at {
        SaleStatus::Active
    } else {
        SaleStatus::Ended
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewProduct {
    pub name: String,
    pub description: Option<String>,
    pub price: i64,
}

impl NewProduct {
    pub fn validate(&self) -> DomainResult<()> {
        validate_name(&self.name)?;
        validate_description(self.description.as_deref())?;
        if !(1..=MAX_AMOUNT).contains(&self.price) {
            return Err(DomainError::validation(
                "price",
                format!("price must be between 1 and {MAX_AMOUNT}"),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSale {
    pub product_id: Uuid,
    pub total_quantity: i64,
    pub sale_price: i64,
    pub per_user_limit: i64,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
}

impl NewSale {
    pub fn validate(&self, product_price: i64, now: DateTime<Utc>) -> DomainResult<()> {
        if !(1..=MAX_QUANTITY).contains(&self.total_quantity) {
            return Err(DomainError::validation(
                "total_quantity",
                format!("total_quantity must be between 1 and {MAX_QUANTITY}"),
            ));
        }
        if self.sale_price < 0 || self.sale_price >= product_price {
            return Err(DomainError::validation(
                "sale_price",
                "sale_price must be at least 0 and below the product price",
            ));
        }
        if !(1..=1000).contains(&self.per_user_limit) {
            return Err(DomainError::validation(
                "per_user_limit",
                "per_user_limit must be between 1 and 1000",
            ));
        }
        if self.start_at >= self.end_at {
            return Err(DomainError::validation(
                "end_at",
                "end_at must be after start_at",
            ));
        }
        if self.end_at <= now {
            return Err(DomainError::validation("end_at", "end_at is already over"));
        }
        Ok(())
    }
}

pub fn validate_quantity(quantity: i64, per_user_limit: i64) -> DomainResult<()> {
    if quantity <= 0 {
        return Err(DomainError::validation(
            "quantity",
            "quantity must be greater than 0",
        ));
    }
    if quantity > per_user_limit.clamp(1, 1000) {
        return Err(DomainError::validation(
            "quantity",
            format!("quantity must be at most {per_user_limit}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn status_follows_the_clock() {
        let s = Utc::now();
        let e = s + Duration::hours(1);
        assert_eq!(
            status_at(false, s, e, s - Duration::seconds(1)),
            SaleStatus::Scheduled
        );
        assert_eq!(status_at(false, s, e, s), SaleStatus::Active);
        assert_eq!(status_at(false, s, e, e), SaleStatus::Ended);
        assert_eq!(status_at(true, s, e, s), SaleStatus::Cancelled);
    }

    #[test]
    fn sale_validation() {
        let now = Utc::now();
        let ok = NewSale {
            product_id: Uuid::nil(),
            total_quantity: 10,
            sale_price: 90,
            per_user_limit: 1,
            start_at: now,
            end_at: now + Duration::hours(1),
        };
        assert!(ok.validate(100, now).is_ok());
        assert_eq!(
            ok.validate(90, now).unwrap_err().field(),
            Some("sale_price")
        );
        let mut back = ok.clone();
        back.end_at = back.start_at;
        assert_eq!(back.validate(100, now).unwrap_err().field(), Some("end_at"));
        assert!(validate_quantity(0, 2).is_err());
        assert!(validate_quantity(3, 2).is_err());
        assert!(validate_quantity(2, 2).is_ok());
    }
}
