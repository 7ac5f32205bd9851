//! Time-sale rules: product and sale validation, the sale status as a function
//! of the clock, and order quantities.

use crate::coupon::{validate_description, validate_name, MAX_AMOUNT, MAX_QUANTITY};
use crate::page::PageRequest;
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

/// A product as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub price: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A sale as stored, with `status` as seen at the time it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sale {
    pub id: Uuid,
    pub product_id: Uuid,
    pub total_quantity: i64,
    /// Confirmed units (PostgreSQL's count, changed with the orders).
    pub sold_quantity: i64,
    /// The live stock when read through the service, else the synced copy.
    pub remaining_quantity: i64,
    pub sale_price: i64,
    pub per_user_limit: i64,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub status: SaleStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Sale {
    pub fn is_cancelled(&self) -> bool {
        self.status == SaleStatus::Cancelled
    }

    pub fn status_at(&self, now: DateTime<Utc>) -> SaleStatus {
        status_at(self.is_cancelled(), self.start_at, self.end_at, now)
    }

    /// The sale with its status recomputed at `now`.
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.status = self.status_at(now);
        self
    }

    /// What PostgreSQL says is left; the fallback when the live stock is unknown.
    pub fn stored_remaining(&self) -> i64 {
        (self.total_quantity - self.sold_quantity).max(0)
    }

    /// An order is possible only inside the window of a sale that is not cancelled.
    pub fn check_orderable(&self, now: DateTime<Utc>) -> DomainResult<()> {
        match self.status_at(now) {
            SaleStatus::Active => Ok(()),
            SaleStatus::Scheduled => Err(DomainError::NotActive("sale has not started".into())),
            SaleStatus::Ended => Err(DomainError::NotActive("sale has ended".into())),
            SaleStatus::Cancelled => Err(DomainError::NotActive("sale is cancelled".into())),
        }
    }

    /// The price of `quantity` units, refused rather than wrapped on overflow.
    pub fn total_price(&self, quantity: i64) -> DomainResult<i64> {
        self.sale_price
            .checked_mul(quantity)
            .ok_or_else(|| DomainError::validation("quantity", "quantity is too large"))
    }
}

/// PATCH of a sale: extend (or move) the end, or cancel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalePatch {
    pub end_at: Option<DateTime<Utc>>,
    pub status: Option<SaleStatus>,
}

impl SalePatch {
    pub fn validate_against(&self, sale: &Sale, now: DateTime<Utc>) -> DomainResult<()> {
        if self.end_at.is_none() && self.status.is_none() {
            return Err(DomainError::validation(
                "body",
                "nothing to change: give end_at or status",
            ));
        }
        if let Some(s) = self.status {
            if s != SaleStatus::Cancelled {
                return Err(DomainError::validation(
                    "status",
                    "status can only be set to CANCELLED",
                ));
            }
        }
        match sale.status_at(now) {
            SaleStatus::Cancelled => return Err(DomainError::AlreadyCancelled),
            SaleStatus::Ended => {
                return Err(DomainError::Conflict("sale has already ended".into()))
            }
            SaleStatus::Scheduled | SaleStatus::Active => {}
        }
        if let Some(end) = self.end_at {
            if end <= sale.start_at {
                return Err(DomainError::validation(
                    "end_at",
                    "end_at must be after start_at",
                ));
            }
            if end <= now {
                return Err(DomainError::validation("end_at", "end_at is already over"));
            }
        }
        Ok(())
    }
}

/// A page of sales, optionally of one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleQuery {
    pub status: Option<SaleStatus>,
    pub page: PageRequest,
}

/// A page of orders, newest first: one user's, or (`user_id: None`, admins
/// only; see `Principal::listing_scope`) every user's, each filter optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderQuery {
    pub user_id: Option<Uuid>,
    pub time_sale_id: Option<Uuid>,
    pub status: Option<OrderStatus>,
    pub page: PageRequest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// A hold: the units are taken until it is confirmed, cancelled or expires.
    Pending,
    Confirmed,
    Cancelled,
    /// A hold that reached its `expires_at`; its units came back.
    Expired,
}

impl OrderStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> DomainResult<Self> {
        match s {
            "PENDING" => Ok(OrderStatus::Pending),
            "CONFIRMED" => Ok(OrderStatus::Confirmed),
            "CANCELLED" => Ok(OrderStatus::Cancelled),
            "EXPIRED" => Ok(OrderStatus::Expired),
            _ => Err(DomainError::validation(
                "status",
                "status must be PENDING, CONFIRMED, CANCELLED or EXPIRED",
            )),
        }
    }

    /// Whether the order's units are taken (it counts against the stock).
    pub fn holds_stock(&self) -> bool {
        matches!(self, OrderStatus::Pending | OrderStatus::Confirmed)
    }
}

/// What `POST /time-sales/{id}/orders` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    pub quantity: i64,
    /// A hold: PENDING until confirmed, cancelled or expired.
    pub hold: bool,
    /// The hold's lifetime (default from configuration); only with `hold`.
    pub hold_seconds: Option<i64>,
}

impl NewOrder {
    /// An order's status and expiry when made at `now`.
    pub fn start(
        &self,
        default_hold_seconds: i64,
        now: DateTime<Utc>,
    ) -> DomainResult<(OrderStatus, Option<DateTime<Utc>>)> {
        if !self.hold {
            if self.hold_seconds.is_some() {
                return Err(DomainError::validation(
                    "hold_seconds",
                    "hold_seconds needs hold: true",
                ));
            }
            return Ok((OrderStatus::Confirmed, None));
        }
        let expires = crate::hold::expires_at(self.hold_seconds, default_hold_seconds, now)?;
        Ok((OrderStatus::Pending, Some(expires)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: Uuid,
    pub time_sale_id: Uuid,
    pub user_id: Uuid,
    pub quantity: i64,
    pub unit_price: i64,
    pub total_price: i64,
    pub status: OrderStatus,
    pub created_at: DateTime<Utc>,
    /// When a hold expires; none for an order confirmed at once.
    pub expires_at: Option<DateTime<Utc>>,
    /// When a hold left PENDING (confirmed, cancelled or expired).
    pub resolved_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

impl Order {
    fn check_pending(&self, now: DateTime<Utc>) -> DomainResult<()> {
        use crate::hold::HoldState;
        let state = match self.status {
            OrderStatus::Pending => HoldState::Pending,
            OrderStatus::Expired => HoldState::Expired,
            _ => HoldState::Resolved,
        };
        // A PENDING order always has an expiry (a database CHECK); a missing
        // one reads as already due rather than as a hold for ever.
        crate::hold::check_resolvable(state, self.expires_at.unwrap_or(now), now)
    }

    /// Confirm: only a PENDING order before its expiry.
    pub fn check_confirmable(&self, now: DateTime<Utc>) -> DomainResult<()> {
        self.check_pending(now)
    }

    /// Cancel: a CONFIRMED order (v1), or a PENDING one before its expiry.
    /// A hold that a cancel released is resolved (`ALREADY_RESOLVED`, as a
    /// second void); a cancelled confirmed order is `ALREADY_CANCELLED` (v1).
    pub fn check_cancellable(&self, now: DateTime<Utc>) -> DomainResult<()> {
        match self.status {
            OrderStatus::Confirmed => Ok(()),
            OrderStatus::Cancelled
                if self.expires_at.is_some() && self.resolved_at == self.cancelled_at =>
            {
                Err(DomainError::AlreadyResolved)
            }
            OrderStatus::Cancelled => Err(DomainError::AlreadyCancelled),
            OrderStatus::Pending | OrderStatus::Expired => self.check_pending(now),
        }
    }
}

/// The `?status=` filter of the sale list.
pub fn parse_status_filter(s: Option<&str>) -> DomainResult<Option<SaleStatus>> {
    s.filter(|s| !s.is_empty())
        .map(SaleStatus::parse)
        .transpose()
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
    fn sale(now: DateTime<Utc>) -> Sale {
        Sale {
            id: Uuid::nil(),
            product_id: Uuid::nil(),
            total_quantity: 10,
            sold_quantity: 3,
            remaining_quantity: 7,
            sale_price: 90,
            per_user_limit: 2,
            start_at: now,
            end_at: now + Duration::hours(1),
            status: SaleStatus::Scheduled,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn orders_only_inside_the_window_of_a_live_sale() {
        let now = Utc::now();
        let s = sale(now);
        assert!(s.check_orderable(now).is_ok());
        assert_eq!(
            s.check_orderable(now - Duration::seconds(1))
                .unwrap_err()
                .code(),
            "NOT_ACTIVE"
        );
        assert_eq!(
            s.check_orderable(s.end_at).unwrap_err().code(),
            "NOT_ACTIVE"
        );
        let mut c = s.clone();
        c.status = SaleStatus::Cancelled;
        assert_eq!(c.check_orderable(now).unwrap_err().code(), "NOT_ACTIVE");
        assert_eq!(c.clone().at(now).status, SaleStatus::Cancelled);
        assert_eq!(s.clone().at(now).status, SaleStatus::Active);
        assert_eq!(s.stored_remaining(), 7);
        assert!(s.total_price(i64::MAX).is_err());
        assert_eq!(s.total_price(2).unwrap(), 180);
    }

    #[test]
    fn sale_patch_rules() {
        let now = Utc::now();
        let s = sale(now);
        let empty = SalePatch::default();
        assert_eq!(
            empty.validate_against(&s, now).unwrap_err().field(),
            Some("body")
        );
        let extend = SalePatch {
            end_at: Some(s.end_at + Duration::hours(1)),
            status: None,
        };
        assert!(extend.validate_against(&s, now).is_ok());
        let backwards = SalePatch {
            end_at: Some(s.start_at),
            status: None,
        };
        assert_eq!(
            backwards.validate_against(&s, now).unwrap_err().field(),
            Some("end_at")
        );
        let past = SalePatch {
            end_at: Some(now + Duration::minutes(1)),
            status: None,
        };
        assert_eq!(
            past.validate_against(&s, now + Duration::minutes(2))
                .unwrap_err()
                .field(),
            Some("end_at")
        );
        let reopen = SalePatch {
            end_at: None,
            status: Some(SaleStatus::Active),
        };
        assert_eq!(
            reopen.validate_against(&s, now).unwrap_err().field(),
            Some("status")
        );
        let cancel = SalePatch {
            end_at: None,
            status: Some(SaleStatus::Cancelled),
        };
        assert!(cancel.validate_against(&s, now).is_ok());
        let mut c = s.clone();
        c.status = SaleStatus::Cancelled;
        assert_eq!(
            cancel.validate_against(&c, now).unwrap_err(),
            DomainError::AlreadyCancelled
        );
        assert_eq!(
            extend
                .validate_against(&s, s.end_at + Duration::seconds(1))
                .unwrap_err()
                .code(),
            "CONFLICT"
        );
    }

    #[test]
    fn quantities_and_filters() {
        assert!(validate_quantity(-1, 2).is_err());
        assert!(validate_quantity(1_000_000, 1_000_000).is_err());
        assert_eq!(
            parse_status_filter(Some("ACTIVE")).unwrap(),
            Some(SaleStatus::Active)
        );
        assert_eq!(parse_status_filter(None).unwrap(), None);
        assert!(parse_status_filter(Some("bogus")).is_err());
        let o = Order {
            id: Uuid::nil(),
            time_sale_id: Uuid::nil(),
            user_id: Uuid::nil(),
            quantity: 1,
            unit_price: 1,
            total_price: 1,
            status: OrderStatus::Cancelled,
            created_at: Utc::now(),
            expires_at: None,
            resolved_at: None,
            cancelled_at: Some(Utc::now()),
        };
        assert_eq!(
            o.check_cancellable(Utc::now()).unwrap_err(),
            DomainError::AlreadyCancelled
        );
    }

    fn hold(status: OrderStatus, expires_in: i64) -> (Order, DateTime<Utc>) {
        let now = Utc::now();
        let o = Order {
            id: Uuid::nil(),
            time_sale_id: Uuid::nil(),
            user_id: Uuid::nil(),
            quantity: 1,
            unit_price: 1,
            total_price: 1,
            status,
            created_at: now,
            expires_at: Some(now + Duration::seconds(expires_in)),
            resolved_at: None,
            cancelled_at: None,
        };
        (o, now)
    }

    #[test]
    fn a_hold_resolves_only_while_pending_and_before_expiry() {
        let (o, now) = hold(OrderStatus::Pending, 10);
        assert!(o.check_confirmable(now).is_ok());
        assert!(o.check_cancellable(now).is_ok());
        let late = now + Duration::seconds(10);
        assert_eq!(o.check_confirmable(late), Err(DomainError::HoldExpired));
        assert_eq!(o.check_cancellable(late), Err(DomainError::HoldExpired));
        let (o, now) = hold(OrderStatus::Confirmed, 10);
        assert_eq!(o.check_confirmable(now), Err(DomainError::AlreadyResolved));
        // Swept or not, a late caller hears that the hold expired.
        let (o, now) = hold(OrderStatus::Expired, -10);
        assert_eq!(o.check_confirmable(now), Err(DomainError::HoldExpired));
        assert_eq!(o.check_cancellable(now), Err(DomainError::HoldExpired));
        // A confirmed order stays cancellable as in v1.
        let (o, now) = hold(OrderStatus::Confirmed, -10);
        assert!(o.check_cancellable(now).is_ok());
    }

    #[test]
    fn only_a_hold_takes_hold_seconds() {
        let now = Utc::now();
        let plain = NewOrder {
            quantity: 1,
            hold: false,
            hold_seconds: None,
        };
        assert_eq!(
            plain.start(900, now).unwrap(),
            (OrderStatus::Confirmed, None)
        );
        let stray = NewOrder {
            hold_seconds: Some(5),
            ..plain
        };
        assert_eq!(
            stray.start(900, now).unwrap_err().field(),
            Some("hold_seconds")
        );
        let held = NewOrder {
            hold: true,
            ..plain
        };
        assert_eq!(
            held.start(900, now).unwrap(),
            (OrderStatus::Pending, Some(now + Duration::seconds(900)))
        );
        let bad = NewOrder {
            hold: true,
            hold_seconds: Some(0),
            ..plain
        };
        assert_eq!(
            bad.start(900, now).unwrap_err().field(),
            Some("hold_seconds")
        );
    }
}
