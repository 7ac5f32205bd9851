//! Coupon rules: policy validation, the discount arithmetic of API.md, and the
//! coupon state machine: AVAILABLE -> USED -> AVAILABLE, EXPIRED by time, and
//! the hold AVAILABLE -> RESERVED -> USED (confirmed) or AVAILABLE (released,
//! expired); see ARCHITECTURE.md, "Holds resolve exactly once". Also which
//! coupons may share an order and what each then takes off it (`stack`;
//! ARCHITECTURE.md, "Coupon stacking").

use crate::code::{self, CodeMode};
use crate::hold;
use crate::page::PageRequest;
use crate::{DomainError, DomainResult};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Upper bound for quantities and money amounts: keeps every product of two
/// values inside i128 and every sum inside i64.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;
pub const MAX_QUANTITY: i64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DiscountType {
    Fixed,
    Percentage,
}

impl DiscountType {
    pub fn as_str(&self) -> &'static str {
        match self {
            DiscountType::Fixed => "FIXED",
            DiscountType::Percentage => "PERCENTAGE",
        }
    }

    pub fn parse(s: &str) -> DomainResult<Self> {
        match s {
            "FIXED" => Ok(DiscountType::Fixed),
            "PERCENTAGE" => Ok(DiscountType::Percentage),
            _ => Err(DomainError::validation(
                "discount_type",
                "discount_type must be FIXED or PERCENTAGE",
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CouponStatus {
    Available,
    Used,
    Expired,
    /// Held for one order until `reserved_until` (a checkout hold).
    Reserved,
}

impl CouponStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            CouponStatus::Available => "AVAILABLE",
            CouponStatus::Used => "USED",
            CouponStatus::Expired => "EXPIRED",
            CouponStatus::Reserved => "RESERVED",
        }
    }

    pub fn parse(s: &str) -> DomainResult<Self> {
        match s {
            "AVAILABLE" => Ok(CouponStatus::Available),
            "USED" => Ok(CouponStatus::Used),
            "EXPIRED" => Ok(CouponStatus::Expired),
            "RESERVED" => Ok(CouponStatus::Reserved),
            _ => Err(DomainError::validation(
                "status",
                "status must be AVAILABLE, USED, EXPIRED or RESERVED",
            )),
        }
    }
}

/// A validated request to create a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPolicy {
    pub name: String,
    pub description: Option<String>,
    pub discount_type: DiscountType,
    pub discount_value: i64,
    pub min_order_amount: i64,
    pub max_discount_amount: Option<i64>,
    pub total_quantity: i64,
    pub per_user_limit: i64,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    /// How its coupons are handed out (API.md, "Coupon codes").
    pub code_mode: CodeMode,
    /// The public code of a SHARED policy, as given (upper-cased by
    /// `validate`); none for the other modes.
    pub shared_code: Option<String>,
    /// Whether its coupons may share an order with other stackable ones.
    pub stackable: bool,
}

fn check_range(field: &str, value: i64, min: i64, max: i64) -> DomainResult<()> {
    if value < min || value > max {
        return Err(DomainError::validation(
            field,
            format!("{field} must be between {min} and {max}"),
        ));
    }
    Ok(())
}

pub fn validate_name(name: &str) -> DomainResult<()> {
    let trimmed = name.trim();
    if trimmed.is_empty() || name.chars().count() > 200 {
        return Err(DomainError::validation(
            "name",
            "name must be 1 to 200 characters",
        ));
    }
    Ok(())
}

pub fn validate_description(d: Option<&str>) -> DomainResult<()> {
    if d.is_some_and(|d| d.chars().count() > 2000) {
        return Err(DomainError::validation(
            "description",
            "description must be at most 2000 characters",
        ));
    }
    Ok(())
}

impl NewPolicy {
    pub fn validate(&mut self) -> DomainResult<()> {
        validate_name(&self.name)?;
        validate_description(self.description.as_deref())?;
        match self.discount_type {
            DiscountType::Fixed => {
                check_range("discount_value", self.discount_value, 1, MAX_AMOUNT)?
            }
            DiscountType::Percentage => check_range("discount_value", self.discount_value, 1, 100)?,
        }
        check_range("min_order_amount", self.min_order_amount, 0, MAX_AMOUNT)?;
        if let Some(cap) = self.max_discount_amount {
            check_range("max_discount_amount", cap, 0, MAX_AMOUNT)?;
        }
        check_range("total_quantity", self.total_quantity, 1, MAX_QUANTITY)?;
        check_range("per_user_limit", self.per_user_limit, 1, 1000)?;
        if self.valid_from >= self.valid_until {
            return Err(DomainError::validation(
                "valid_until",
                "valid_until must be after valid_from",
            ));
        }
        self.validate_code()
    }

    /// A SHARED policy names its code; the other modes name none. Upper-cases
    /// the shared code.
    fn validate_code(&mut self) -> DomainResult<()> {
        match (self.code_mode, self.shared_code.as_deref()) {
            (CodeMode::Shared, Some(c)) => {
                self.shared_code = Some(code::validate_shared(c)?);
                Ok(())
            }
            (CodeMode::Shared, None) => Err(DomainError::validation(
                "shared_code",
                "shared_code is required when code_mode is SHARED",
            )),
            (_, Some(_)) => Err(DomainError::validation(
                "shared_code",
                "shared_code is only for code_mode SHARED",
            )),
            (_, None) => Ok(()),
        }
    }
}

/// A policy as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub discount_type: DiscountType,
    pub discount_value: i64,
    pub min_order_amount: i64,
    pub max_discount_amount: Option<i64>,
    pub total_quantity: i64,
    pub issued_quantity: i64,
    pub per_user_limit: i64,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub code_mode: CodeMode,
    pub shared_code: Option<String>,
    pub stackable: bool,
    /// BATCH codes generated so far (never more than `total_quantity`).
    pub codes_generated: i64,
}

impl Policy {
    pub fn remaining_quantity(&self) -> i64 {
        (self.total_quantity - self.issued_quantity).max(0)
    }

    /// Whether coupons may be issued at `now`.
    pub fn check_issuable(&self, now: DateTime<Utc>) -> DomainResult<()> {
        if !self.active {
            return Err(DomainError::NotActive("policy is not active".into()));
        }
        if now < self.valid_from || now >= self.valid_until {
            return Err(DomainError::NotActive(
                "policy is outside its validity window".into(),
            ));
        }
        Ok(())
    }

    /// Issue by policy id is for GENERATED policies, redemption and code
    /// generation for the others (API.md: 409 `CONFLICT` otherwise).
    pub fn check_mode(&self, how: CodeMode) -> DomainResult<()> {
        if self.code_mode == how {
            return Ok(());
        }
        let why = match (self.code_mode, how) {
            (CodeMode::Generated, _) => "policy hands out coupons by issue, not by code",
            (_, CodeMode::Generated) => "policy hands out coupons by code: redeem one",
            (CodeMode::Shared, _) => "policy has one shared code, no generated codes",
            (CodeMode::Batch, _) => "policy has generated codes, no shared code",
        };
        Err(DomainError::Conflict(why.into()))
    }

    pub fn discount_for(&self, order_amount: i64) -> DomainResult<i64> {
        discount(
            self.discount_type,
            self.discount_value,
            self.min_order_amount,
            self.max_discount_amount,
            order_amount,
        )
    }
}

/// A use of a coupon on an order of `order_amount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponUse {
    pub id: Uuid,
    pub order_id: String,
    pub order_amount: i64,
}

/// A reservation of a coupon for an order of `order_amount`, held for
/// `hold_seconds` (the configured default when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponReserve {
    pub id: Uuid,
    pub order_id: String,
    pub order_amount: i64,
    pub hold_seconds: Option<i64>,
}

/// A page of coupons, newest first: one user's, or (`user_id: None`, admins
/// only; see `Principal::listing_scope`) every user's, each filter optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CouponQuery {
    pub user_id: Option<Uuid>,
    pub policy_id: Option<Uuid>,
    pub status: Option<CouponStatus>,
    pub page: PageRequest,
}

/// A validated policy patch. `total_quantity` may never drop below what is issued;
/// that is checked here against the current state and again by the database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub total_quantity: Option<i64>,
    pub valid_until: Option<DateTime<Utc>>,
    pub active: Option<bool>,
}

impl PolicyPatch {
    pub fn validate_against(&self, current: &Policy) -> DomainResult<()> {
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        validate_description(self.description.as_deref())?;
        if let Some(q) = self.total_quantity {
            check_range("total_quantity", q, 1, MAX_QUANTITY)?;
            // Never below what is spoken for: coupons issued, codes generated.
            for (floor, what) in [
                (current.codes_generated, "the codes generated"),
                (current.issued_quantity, "the issued quantity"),
            ] {
                if q < floor {
                    return Err(DomainError::validation(
                        "total_quantity",
                        format!("total_quantity must be at least {what} ({floor})"),
                    ));
                }
            }
        }
        if let Some(until) = self.valid_until {
            if until <= current.valid_from {
                return Err(DomainError::validation(
                    "valid_until",
                    "valid_until must be after valid_from",
                ));
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self == &PolicyPatch::default()
    }
}

/// The discount of API.md, in integer arithmetic only:
/// FIXED gives `min(value, order_amount)`; PERCENTAGE gives
/// `floor(order_amount * value / 100)` capped by `max_discount_amount`.
pub fn discount(
    kind: DiscountType,
    value: i64,
    min_order_amount: i64,
    cap: Option<i64>,
    order_amount: i64,
) -> DomainResult<i64> {
    if !(0..=MAX_AMOUNT).contains(&order_amount) {
        return Err(DomainError::validation(
            "order_amount",
            format!("order_amount must be between 0 and {MAX_AMOUNT}"),
        ));
    }
    if order_amount < min_order_amount {
        return Err(DomainError::validation(
            "order_amount",
            format!("order_amount must be at least {min_order_amount}"),
        ));
    }
    let d = match kind {
        DiscountType::Fixed => value.min(order_amount),
        DiscountType::Percentage => {
            // i128 so that MAX_AMOUNT * 100 cannot overflow.
            let raw = (order_amount as i128 * value as i128) / 100;
            let raw = raw.min(order_amount as i128) as i64;
            match cap {
                Some(cap) => raw.min(cap),
                None => raw,
            }
        }
    };
    Ok(d.max(0))
}

/// A coupon as stored, with the status derived at read time: an AVAILABLE coupon
/// past its expiry reads as EXPIRED.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    pub id: Uuid,
    pub code: String,
    pub policy_id: Uuid,
    pub user_id: Uuid,
    pub status: CouponStatus,
    pub order_id: Option<String>,
    pub discount_amount: Option<i64>,
    pub used_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
    /// The order holding it while RESERVED, else none. (`serde(default)`:
    /// answers stored before holds existed lack these fields.)
    #[serde(default)]
    pub reserved_order_id: Option<String>,
    /// When the hold lapses, while RESERVED; after the sweeper expired it,
    /// the deadline that lapsed (until the next reserve or use), which tells
    /// a late confirm `HOLD_EXPIRED` from a second one's `ALREADY_RESOLVED`.
    #[serde(default)]
    pub reserved_until: Option<DateTime<Utc>>,
    /// The order whose hold was resolved last (confirmed, released or
    /// expired), until the next reserve, direct use or undone use: a use for
    /// that order is a second or late confirm of a resolved hold
    /// (`ALREADY_RESOLVED`), not a fresh use.
    #[serde(default)]
    pub released_order_id: Option<String>,
    /// The code (normalized) it was redeemed with, if it was.
    #[serde(default)]
    pub redeemed_code: Option<String>,
    /// Whether that code is a SHARED policy's.
    #[serde(default)]
    pub redeemed_shared: bool,
}

/// What a use of a coupon is, by its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseKind {
    /// An AVAILABLE coupon used at once.
    Direct,
    /// The confirm of the order's own reservation.
    Confirm,
}

/// What a cancel of a coupon is, by its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelKind {
    /// A USED coupon back to AVAILABLE.
    UndoUse,
    /// A RESERVED coupon released back to AVAILABLE.
    Release,
}

impl Coupon {
    pub fn effective_status(&self, now: DateTime<Utc>) -> CouponStatus {
        if self.status == CouponStatus::Available && now >= self.expires_at {
            CouponStatus::Expired
        } else {
            self.status
        }
    }

    /// Whether `order_id` may reserve it at `now`: only an AVAILABLE coupon
    /// (API.md: 409 `ALREADY_USED` otherwise, 422 once expired).
    pub fn check_reservable(&self, now: DateTime<Utc>) -> DomainResult<()> {
        match self.effective_status(now) {
            CouponStatus::Available => Ok(()),
            CouponStatus::Used | CouponStatus::Reserved => Err(DomainError::AlreadyUsed),
            CouponStatus::Expired => Err(DomainError::NotActive("coupon expired".into())),
        }
    }

    /// When a hold asked for at `now` lapses: `hold_seconds` (validated by
    /// `hold::expires_at`), cut to the coupon's own expiry, so that a
    /// reservation never outlives the coupon and a confirm in time is always
    /// a use of a live coupon.
    pub fn reservation_until(
        &self,
        hold_seconds: Option<i64>,
        default_seconds: i64,
        now: DateTime<Utc>,
    ) -> DomainResult<DateTime<Utc>> {
        Ok(hold::expires_at(hold_seconds, default_seconds, now)?.min(self.expires_at))
    }

    /// What a use for `order_id` at `now` is. On a RESERVED coupon only the
    /// holding order may use it (another: `CONFLICT`), and only before the
    /// hold lapses (`HOLD_EXPIRED`, from `hold::check_resolvable`). A use
    /// for the order whose hold was resolved (confirmed, released or
    /// expired) is a confirm of a resolved hold: `ALREADY_RESOLVED`, a
    /// second confirm included, whether or not the sweeper ran.
    pub fn check_use(&self, order_id: &str, now: DateTime<Utc>) -> DomainResult<UseKind> {
        if self.released_order_id.as_deref() == Some(order_id) {
            return Err(self.resolved_hold());
        }
        match self.effective_status(now) {
            CouponStatus::Available => Ok(UseKind::Direct),
            CouponStatus::Reserved => {
                if self.reserved_order_id.as_deref() != Some(order_id) {
                    return Err(DomainError::Conflict(
                        "coupon is reserved for another order".into(),
                    ));
                }
                hold::check_resolvable(hold::HoldState::Pending, self.hold_deadline()?, now)?;
                Ok(UseKind::Confirm)
            }
            CouponStatus::Used => Err(DomainError::AlreadyUsed),
            CouponStatus::Expired => Err(DomainError::NotActive("coupon expired".into())),
        }
    }

    /// What a cancel at `now` is: a USED coupon's use is undone; a RESERVED
    /// one is released before its hold lapses (`HOLD_EXPIRED` after); a
    /// coupon whose hold was released already is `ALREADY_RESOLVED`; any
    /// other is `ALREADY_CANCELLED` (v1).
    pub fn check_cancel(&self, now: DateTime<Utc>) -> DomainResult<CancelKind> {
        match self.status {
            CouponStatus::Used => Ok(CancelKind::UndoUse),
            CouponStatus::Reserved => {
                hold::check_resolvable(hold::HoldState::Pending, self.hold_deadline()?, now)?;
                Ok(CancelKind::Release)
            }
            _ if self.released_order_id.is_some() => Err(self.resolved_hold()),
            _ => Err(DomainError::AlreadyCancelled),
        }
    }

    /// What a caller resolving the hold that already ended hears: it
    /// expired (the sweeper keeps the lapsed `reserved_until`), or it was
    /// confirmed or released.
    fn resolved_hold(&self) -> DomainError {
        match self.reserved_until {
            Some(_) => DomainError::HoldExpired,
            None => DomainError::AlreadyResolved,
        }
    }

    /// A RESERVED coupon's deadline; the database ties the two (CHECK), so
    /// its absence is corrupt data, not bad input.
    fn hold_deadline(&self) -> DomainResult<DateTime<Utc>> {
        self.reserved_until.ok_or_else(|| {
            DomainError::Internal(format!("reserved coupon {} without deadline", self.id))
        })
    }
}

/// A coupon already on an order (USED for it, or RESERVED for it), as a
/// stacking decision reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnOrder {
    /// Its policy's `stackable`.
    pub stackable: bool,
    /// The `order_amount` it was used or reserved with.
    pub order_amount: i64,
    /// The discount it took (already cut, if it was).
    pub discount: i64,
}

/// The discount a coupon gets on an order that already carries `others`
/// (API.md "Stacking"): `own` is its uncut discount for `order_amount`.
/// Alone, it keeps `own`. With others, every coupon must be stackable
/// (`NOT_STACKABLE`) and name the same amount (400 `order_amount`), and it
/// gets at most what the others left of the amount, possibly 0. The
/// caller must hold the order's lock, so that `others` stays what it read.
pub fn stack(
    stackable: bool,
    own: i64,
    order_amount: i64,
    others: &[OnOrder],
) -> DomainResult<i64> {
    if others.is_empty() {
        return Ok(own);
    }
    if !stackable {
        return Err(DomainError::NotStackable(
            "coupon is not stackable and the order carries another coupon".into(),
        ));
    }
    if others.iter().any(|o| !o.stackable) {
        return Err(DomainError::NotStackable(
            "the order carries a coupon that is not stackable".into(),
        ));
    }
    if let Some(o) = others.iter().find(|o| o.order_amount != order_amount) {
        return Err(DomainError::validation(
            "order_amount",
            format!(
                "order_amount must be {}, as on the order's other coupons",
                o.order_amount
            ),
        ));
    }
    // Saturating: stored data is trusted to keep the sum within the amount,
    // but a corrupt row must not overflow into a negative "taken".
    let taken = others
        .iter()
        .fold(0i64, |sum, o| sum.saturating_add(o.discount.max(0)));
    Ok(own.min(order_amount.saturating_sub(taken)).max(0))
}

pub fn validate_order_id(order_id: &str) -> DomainResult<()> {
    if order_id.trim().is_empty() || order_id.len() > 255 {
        return Err(DomainError::validation(
            "order_id",
            "order_id must be 1 to 255 characters",
        ));
    }
    Ok(())
}

const CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// A human-readable code from 60 random bits: `XXXX-XXXX-XXXX`, Crockford-like
/// alphabet without 0/O/1/I. Uniqueness is still enforced by the database.
pub fn coupon_code(random: u64) -> String {
    let mut out = String::with_capacity(14);
    let mut r = random;
    for i in 0..12 {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(CODE_ALPHABET[(r & 31) as usize] as char);
        r >>= 5;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use DiscountType::*;

    #[test]
    fn fixed_discount_never_exceeds_the_order() {
        assert_eq!(discount(Fixed, 500, 0, None, 300).unwrap(), 300);
        assert_eq!(discount(Fixed, 500, 0, None, 1000).unwrap(), 500);
    }

    #[test]
    fn percentage_floors_and_caps() {
        assert_eq!(discount(Percentage, 10, 0, None, 999).unwrap(), 99);
        assert_eq!(discount(Percentage, 10, 0, Some(50), 999).unwrap(), 50);
        assert_eq!(discount(Percentage, 100, 0, None, 1234).unwrap(), 1234);
    }

    #[test]
    fn a_zero_cap_gives_no_discount() {
        assert_eq!(discount(Percentage, 50, 0, Some(0), 1000).unwrap(), 0);
    }

    #[test]
    fn below_minimum_is_refused_naming_the_field() {
        let e = discount(Fixed, 100, 1000, None, 999).unwrap_err();
        assert_eq!(e.field(), Some("order_amount"));
        assert!(discount(Fixed, 100, 1000, None, 1000).is_ok());
    }

    #[test]
    fn huge_amounts_do_not_overflow() {
        assert_eq!(
            discount(Percentage, 100, 0, None, MAX_AMOUNT).unwrap(),
            MAX_AMOUNT
        );
        assert_eq!(
            discount(Percentage, 99, 0, None, MAX_AMOUNT).unwrap(),
            MAX_AMOUNT / 100 * 99
        );
        assert!(discount(Percentage, 99, 0, None, i64::MAX).is_err());
        assert!(discount(Fixed, 1, 0, None, -1).is_err());
    }

    fn policy() -> NewPolicy {
        let now = Utc::now();
        NewPolicy {
            name: "p".into(),
            description: None,
            discount_type: Percentage,
            discount_value: 10,
            min_order_amount: 0,
            max_discount_amount: None,
            total_quantity: 100,
            per_user_limit: 1,
            valid_from: now,
            valid_until: now + chrono::Duration::days(1),
            code_mode: CodeMode::Generated,
            shared_code: None,
            stackable: false,
        }
    }

    #[test]
    fn policy_validation_names_fields() {
        assert!(policy().validate().is_ok());
        let mut p = policy();
        p.discount_value = 101;
        assert_eq!(p.validate().unwrap_err().field(), Some("discount_value"));
        let mut p = policy();
        p.valid_until = p.valid_from;
        assert_eq!(p.validate().unwrap_err().field(), Some("valid_until"));
        let mut p = policy();
        p.total_quantity = 0;
        assert_eq!(p.validate().unwrap_err().field(), Some("total_quantity"));
    }

    #[test]
    fn only_a_shared_policy_names_a_shared_code() {
        let mut p = policy();
        p.code_mode = CodeMode::Shared;
        assert_eq!(p.validate().unwrap_err().field(), Some("shared_code"));
        p.shared_code = Some("spring-10".into());
        assert!(p.validate().is_ok());
        assert_eq!(p.shared_code.as_deref(), Some("SPRING-10"));
        p.code_mode = CodeMode::Batch;
        assert_eq!(p.validate().unwrap_err().field(), Some("shared_code"));
    }

    #[test]
    fn each_mode_hands_out_coupons_its_own_way() {
        let mut p = stored(CodeMode::Batch);
        assert!(p.check_mode(CodeMode::Batch).is_ok());
        for other in [CodeMode::Generated, CodeMode::Shared] {
            assert!(matches!(p.check_mode(other), Err(DomainError::Conflict(_))));
        }
        p.code_mode = CodeMode::Generated;
        assert!(p.check_mode(CodeMode::Generated).is_ok());
        assert!(p.check_mode(CodeMode::Batch).is_err());
    }

    #[test]
    fn a_total_below_the_codes_generated_is_refused() {
        let mut p = stored(CodeMode::Batch);
        p.codes_generated = 50;
        let patch = PolicyPatch {
            total_quantity: Some(49),
            ..PolicyPatch::default()
        };
        let e = patch.validate_against(&p).unwrap_err();
        assert_eq!(e.field(), Some("total_quantity"));
    }

    fn stored(code_mode: CodeMode) -> Policy {
        let n = policy();
        Policy {
            id: Uuid::nil(),
            name: n.name,
            description: None,
            discount_type: n.discount_type,
            discount_value: n.discount_value,
            min_order_amount: 0,
            max_discount_amount: None,
            total_quantity: 100,
            issued_quantity: 0,
            per_user_limit: 1,
            valid_from: n.valid_from,
            valid_until: n.valid_until,
            active: true,
            created_at: n.valid_from,
            updated_at: n.valid_from,
            code_mode,
            shared_code: None,
            stackable: false,
            codes_generated: 0,
        }
    }

    #[test]
    fn codes_are_readable_and_distinct() {
        let a = coupon_code(1);
        let b = coupon_code(2);
        assert_eq!(a.len(), 14);
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c == '-' || CODE_ALPHABET.contains(&(c as u8))));
    }

    fn available(now: DateTime<Utc>, lifetime: chrono::Duration) -> Coupon {
        Coupon {
            id: Uuid::nil(),
            code: "x".into(),
            policy_id: Uuid::nil(),
            user_id: Uuid::nil(),
            status: CouponStatus::Available,
            order_id: None,
            discount_amount: None,
            used_at: None,
            expires_at: now + lifetime,
            issued_at: now,
            reserved_order_id: None,
            reserved_until: None,
            released_order_id: None,
            redeemed_code: None,
            redeemed_shared: false,
        }
    }

    /// `c` reserved for order "o" until `until`.
    fn reserved(mut c: Coupon, until: DateTime<Utc>) -> Coupon {
        c.status = CouponStatus::Reserved;
        c.reserved_order_id = Some("o".into());
        c.reserved_until = Some(until);
        c
    }

    #[test]
    fn coupon_states() {
        let now = Utc::now();
        let mut c = available(now, chrono::Duration::seconds(1));
        assert_eq!(c.check_use("o", now), Ok(UseKind::Direct));
        assert_eq!(c.check_cancel(now), Err(DomainError::AlreadyCancelled));
        assert_eq!(
            c.effective_status(now + chrono::Duration::seconds(2)),
            CouponStatus::Expired
        );
        c.status = CouponStatus::Used;
        assert_eq!(c.check_use("o", now), Err(DomainError::AlreadyUsed));
        assert_eq!(c.check_cancel(now), Ok(CancelKind::UndoUse));
    }

    #[test]
    fn only_an_available_coupon_is_reservable() {
        let now = Utc::now();
        let c = available(now, chrono::Duration::hours(1));
        assert_eq!(c.check_reservable(now), Ok(()));
        let later = now + chrono::Duration::hours(2);
        assert!(matches!(
            c.check_reservable(later),
            Err(DomainError::NotActive(_))
        ));
        let held = reserved(c.clone(), now + chrono::Duration::minutes(1));
        assert_eq!(held.check_reservable(now), Err(DomainError::AlreadyUsed));
        let mut used = c;
        used.status = CouponStatus::Used;
        assert_eq!(used.check_reservable(now), Err(DomainError::AlreadyUsed));
    }

    #[test]
    fn a_hold_never_outlives_its_coupon() {
        let now = Utc::now();
        let c = available(now, chrono::Duration::seconds(60));
        let until = |s| c.reservation_until(Some(s), 900, now);
        assert_eq!(until(10), Ok(now + chrono::Duration::seconds(10)));
        assert_eq!(until(600), Ok(c.expires_at));
        assert_eq!(c.reservation_until(None, 900, now), Ok(c.expires_at));
        assert_eq!(until(0).unwrap_err().field(), Some("hold_seconds"));
    }

    #[test]
    fn a_reservation_is_confirmed_by_its_order_before_it_lapses() {
        let now = Utc::now();
        let until = now + chrono::Duration::seconds(30);
        let c = reserved(available(now, chrono::Duration::hours(1)), until);
        assert_eq!(c.check_use("o", now), Ok(UseKind::Confirm));
        assert!(matches!(
            c.check_use("p", now),
            Err(DomainError::Conflict(_))
        ));
        assert_eq!(c.check_use("o", until), Err(DomainError::HoldExpired));
        assert_eq!(c.check_cancel(now), Ok(CancelKind::Release));
        assert_eq!(c.check_cancel(until), Err(DomainError::HoldExpired));
    }

    #[test]
    fn a_released_hold_is_resolved_for_its_order_only() {
        let now = Utc::now();
        let mut c = available(now, chrono::Duration::hours(1));
        c.released_order_id = Some("o".into());
        assert_eq!(c.check_use("o", now), Err(DomainError::AlreadyResolved));
        assert_eq!(c.check_cancel(now), Err(DomainError::AlreadyResolved));
        assert_eq!(c.check_use("p", now), Ok(UseKind::Direct));
        assert_eq!(c.check_reservable(now), Ok(()));
    }

    fn on(stackable: bool, order_amount: i64, discount: i64) -> OnOrder {
        OnOrder {
            stackable,
            order_amount,
            discount,
        }
    }

    #[test]
    fn a_coupon_alone_keeps_its_discount() {
        assert_eq!(stack(false, 300, 1000, &[]), Ok(300));
        assert_eq!(stack(true, 300, 1000, &[]), Ok(300));
    }

    #[test]
    fn either_side_not_stackable_refuses() {
        let refused = |r: DomainResult<i64>| matches!(r, Err(DomainError::NotStackable(_)));
        assert!(refused(stack(false, 300, 1000, &[on(true, 1000, 100)])));
        assert!(refused(stack(true, 300, 1000, &[on(false, 1000, 100)])));
        let others = [on(true, 1000, 100), on(false, 1000, 100)];
        assert!(refused(stack(true, 300, 1000, &others)));
    }

    #[test]
    fn stackability_is_decided_before_the_amount() {
        let r = stack(false, 300, 1000, &[on(true, 900, 100)]);
        assert!(matches!(r, Err(DomainError::NotStackable(_))), "{r:?}");
    }

    #[test]
    fn every_coupon_names_the_same_amount() {
        let e = stack(true, 300, 1000, &[on(true, 900, 100)]).unwrap_err();
        assert_eq!(e.field(), Some("order_amount"));
    }

    #[test]
    fn a_later_coupon_gets_what_is_left() {
        let others = [on(true, 1000, 600), on(true, 1000, 300)];
        assert_eq!(stack(true, 300, 1000, &others), Ok(100));
        assert_eq!(stack(true, 50, 1000, &others), Ok(50));
        let full = [on(true, 1000, 1000)];
        assert_eq!(stack(true, 300, 1000, &full), Ok(0));
    }

    fn uncut() -> impl Strategy<Value = (DiscountType, i64, Option<i64>)> {
        prop_oneof![
            (1i64..=5_000).prop_map(|v| (Fixed, v, None)),
            (1i64..=100, proptest::option::of(0i64..=5_000)).prop_map(|(v, c)| (Percentage, v, c)),
        ]
    }

    proptest! {
        /// Stackable coupons applied one by one to one order: each gets at
        /// most its own discount, exactly what was left when that is less,
        /// and together they never exceed the order.
        #[test]
        fn stacked_discounts_never_exceed_the_order(
            amount in 0i64..=10_000,
            coupons in proptest::collection::vec(uncut(), 0..12),
        ) {
            let mut on_order: Vec<OnOrder> = Vec::new();
            for (kind, value, cap) in coupons {
                let own = discount(kind, value, 0, cap, amount).unwrap();
                let taken: i64 = on_order.iter().map(|o| o.discount).sum();
                let got = stack(true, own, amount, &on_order).unwrap();
                prop_assert!((0..=own).contains(&got));
                prop_assert_eq!(got, own.min(amount - taken));
                on_order.push(on(true, amount, got));
                let total: i64 = on_order.iter().map(|o| o.discount).sum();
                prop_assert!(total <= amount, "{} > {}", total, amount);
            }
        }

        /// With another coupon on the order, any non-stackable one among
        /// them refuses; otherwise a different amount refuses.
        #[test]
        fn mixed_orders_are_refused(
            own_stackable: bool,
            others in proptest::collection::vec((any::<bool>(), 999i64..=1001), 1..5),
        ) {
            let others: Vec<OnOrder> = others.into_iter().map(|(s, a)| on(s, a, 0)).collect();
            let r = stack(own_stackable, 10, 1000, &others);
            if !own_stackable || others.iter().any(|o| !o.stackable) {
                prop_assert!(matches!(r, Err(DomainError::NotStackable(_))), "{:?}", r);
            } else if others.iter().any(|o| o.order_amount != 1000) {
                let e = r.unwrap_err();
                prop_assert_eq!(e.field(), Some("order_amount"));
            } else {
                prop_assert_eq!(r, Ok(10));
            }
        }
    }
}
