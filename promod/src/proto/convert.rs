//! Every conversion between protobuf messages and domain values, written
//! once: `From` towards the wire, `TryFrom` back (a malformed field is a
//! `VALIDATION_ERROR` naming it). Request messages convert without their
//! caller, which [`super::Caller`] takes out first.
//!
//! A message that mirrors a domain struct field by field is declared with
//! [`mirror!`]: each field converts by its type through [`Wire`], so a
//! field list is all there is to write.

use super::{
    audit, common, coupon, from_page_req, opt_ts, page_req, parse_ts, point, timesale, ts, uuid,
};
use chrono::{DateTime, Utc};
use promo_domain::audit::{AuditEntry, AuditQuery, Head};
use promo_domain::code::{Code, CodeBatch, CodeMode, CodeQuery, CodeStatus, NewCodes, Redeem};
use promo_domain::coupon::{
    Coupon, CouponQuery, CouponReserve, CouponStatus, CouponUse, DiscountType, NewPolicy, Policy,
    PolicyPatch,
};
use promo_domain::page::{Page, PageRequest};
use promo_domain::point::hold::{HoldStatus, NewHold, PointHold};
use promo_domain::point::lot::{Expiring, Lot, LotQuery};
use promo_domain::point::{Balance, HistoryQuery, PointChange, Transaction, TxType};
use promo_domain::timesale::{
    NewOrder, NewProduct, NewSale, Order, OrderQuery, OrderStatus, Product, Sale, SalePatch,
    SaleQuery, SaleStatus,
};
use promo_domain::{DomainError, DomainResult};
use uuid::Uuid;

/// A domain field's form on the wire: ids and times as strings (RFC 3339
/// with microseconds), enums as their names, the rest as they are.
trait Wire: Sized {
    type Pb;
    fn to_pb(self) -> Self::Pb;
    /// `field` names the field in a validation error.
    fn from_pb(field: &str, pb: Self::Pb) -> DomainResult<Self>;
}

macro_rules! wire_as_is {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            type Pb = $t;
            fn to_pb(self) -> $t {
                self
            }
            fn from_pb(_: &str, pb: $t) -> DomainResult<$t> {
                Ok(pb)
            }
        }
    )*};
}

wire_as_is!(String, i64, bool);

/// A JSON document travels as its text.
impl Wire for serde_json::Value {
    type Pb = String;
    fn to_pb(self) -> String {
        self.to_string()
    }
    fn from_pb(field: &str, pb: String) -> DomainResult<Self> {
        serde_json::from_str(&pb)
            .map_err(|_| DomainError::validation(field, format!("{field} must be json")))
    }
}

/// Enums travel as the names their `as_str` and `parse` agree on.
macro_rules! wire_by_name {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            type Pb = String;
            fn to_pb(self) -> String {
                self.as_str().to_owned()
            }
            fn from_pb(_: &str, pb: String) -> DomainResult<$t> {
                <$t>::parse(&pb)
            }
        }
    )*};
}

wire_by_name!(
    CodeMode,
    CodeStatus,
    DiscountType,
    CouponStatus,
    TxType,
    SaleStatus,
    OrderStatus,
    HoldStatus
);

impl Wire for Uuid {
    type Pb = String;
    fn to_pb(self) -> String {
        self.to_string()
    }
    fn from_pb(field: &str, pb: String) -> DomainResult<Uuid> {
        uuid(field, &pb)
    }
}

impl Wire for DateTime<Utc> {
    type Pb = String;
    fn to_pb(self) -> String {
        ts(self)
    }
    fn from_pb(field: &str, pb: String) -> DomainResult<Self> {
        parse_ts(field, &pb)
    }
}

/// An absent page is the default page.
impl Wire for PageRequest {
    type Pb = Option<common::PageRequest>;
    fn to_pb(self) -> Self::Pb {
        page_req(self)
    }
    fn from_pb(_: &str, pb: Self::Pb) -> DomainResult<Self> {
        from_page_req(pb)
    }
}

impl<T: Wire> Wire for Option<T> {
    type Pb = Option<T::Pb>;
    fn to_pb(self) -> Self::Pb {
        self.map(T::to_pb)
    }
    fn from_pb(field: &str, pb: Self::Pb) -> DomainResult<Self> {
        pb.map(|pb| T::from_pb(field, pb)).transpose()
    }
}

/// `mirror!(Domain => pb::Message { a, b, c as c_on_wire, .. })`: `From`
/// the domain value to the message and `TryFrom` back, field by field. A
/// trailing `..` leaves the message's other fields (its caller, an id the
/// client sets) at their defaults.
macro_rules! mirror {
    ($dom:ty => $pb:ty { $($fields:tt)* }) => { mirror!(@pairs $dom, $pb, [] $($fields)*); };
    // Each field becomes `(domain_name wire_name)`.
    (@pairs $dom:ty, $pb:ty, [$($p:tt)*] $f:ident as $pf:ident $(, $($t:tt)*)?) => {
        mirror!(@pairs $dom, $pb, [$($p)* ($f $pf)] $($($t)*)?);
    };
    (@pairs $dom:ty, $pb:ty, [$($p:tt)*] $f:ident $(, $($t:tt)*)?) => {
        mirror!(@pairs $dom, $pb, [$($p)* ($f $f)] $($($t)*)?);
    };
    (@pairs $dom:ty, $pb:ty, [$($p:tt)*] ..) => {
        mirror!(@impl $dom, $pb, [$($p)*] ..Default::default());
    };
    (@pairs $dom:ty, $pb:ty, [$($p:tt)*]) => { mirror!(@impl $dom, $pb, [$($p)*]); };
    (@impl $dom:ty, $pb:ty, [$(($f:ident $pf:ident))*] $($rest:tt)*) => {
        impl From<$dom> for $pb {
            fn from(d: $dom) -> Self {
                Self { $($pf: Wire::to_pb(d.$f),)* $($rest)* }
            }
        }

        impl TryFrom<$pb> for $dom {
            type Error = DomainError;
            fn try_from(m: $pb) -> DomainResult<Self> {
                Ok(Self { $($f: Wire::from_pb(stringify!($f), m.$pf)?,)* })
            }
        }
    };
}

/// A page message for each entity, to and from a domain page.
macro_rules! pages {
    ($($pb:ty => $dom:ty),* $(,)?) => {$(
        impl From<Page<$dom>> for $pb {
            fn from(p: Page<$dom>) -> Self {
                let p = p.map(Into::into);
                Self { items: p.items, page: p.page, size: p.size, total: p.total }
            }
        }

        impl TryFrom<$pb> for Page<$dom> {
            type Error = DomainError;
            fn try_from(p: $pb) -> DomainResult<Self> {
                Ok(Page {
                    items: p.items.into_iter().map(TryInto::try_into).collect::<DomainResult<_>>()?,
                    page: p.page,
                    size: p.size,
                    total: p.total,
                })
            }
        }
    )*};
}

pages! {
    coupon::PolicyPage => Policy,
    coupon::CouponPage => Coupon,
    coupon::CodePage => Code,
    point::TransactionPage => Transaction,
    point::LotPage => Lot,
    timesale::ProductPage => Product,
    timesale::SalePage => Sale,
    timesale::OrderPage => Order,
}

mirror!(Policy => coupon::Policy {
    id, name, description, discount_type, discount_value, min_order_amount, max_discount_amount,
    total_quantity, issued_quantity, per_user_limit, valid_from, valid_until, active,
    created_at, updated_at, code_mode, shared_code, stackable, codes_generated
});

mirror!(NewPolicy => coupon::CreatePolicyRequest {
    name, description, discount_type, discount_value, min_order_amount, max_discount_amount,
    total_quantity, per_user_limit, valid_from, valid_until, code_mode, shared_code, stackable, ..
});

mirror!(CouponUse => coupon::UseCouponRequest { id as coupon_id, order_id, order_amount, .. });

mirror!(CouponReserve => coupon::ReserveCouponRequest {
    id as coupon_id, order_id, order_amount, hold_seconds, ..
});

mirror!(AuditQuery => audit::AuditQuery {
    actor_id, action, target_id, since, until, page, ..
});

mirror!(AuditEntry => audit::AuditEntry {
    id, at, actor_id, action, target_type, target_id, request_id, before, after
});

impl From<Head> for audit::AuditHead {
    fn from(h: Head) -> Self {
        let entries = h.entries.into_iter().map(Into::into).collect();
        Self {
            entries,
            total: h.total,
        }
    }
}

impl TryFrom<audit::AuditHead> for Head {
    type Error = DomainError;
    fn try_from(h: audit::AuditHead) -> DomainResult<Self> {
        let entries = h.entries.into_iter().map(TryInto::try_into);
        Ok(Head {
            entries: entries.collect::<DomainResult<_>>()?,
            total: h.total,
        })
    }
}

mirror!(CouponQuery => coupon::ListCouponsRequest { user_id, policy_id, status, page, .. });

mirror!(Coupon => coupon::Coupon {
    id, code, policy_id, user_id, status, order_id, discount_amount, used_at, expires_at,
    issued_at, reserved_order_id, reserved_until, released_order_id, redeemed_code,
    redeemed_shared
});

mirror!(NewCodes => coupon::GenerateCodesRequest { policy_id, count, prefix, .. });

mirror!(CodeBatch => coupon::CodeBatch { policy_id, generated, total_codes });

mirror!(Code => coupon::Code { code, status, coupon_id, redeemed_at });

mirror!(CodeQuery => coupon::ListCodesRequest { policy_id, status, page, .. });

mirror!(Redeem => coupon::RedeemCodeRequest { code, user_id, .. });

mirror!(Transaction => point::Transaction {
    id, user_id, tx_type as r#type, amount, delta, balance_after, reference, description,
    cancelled_transaction_id, hold_id, lot_id, created_at
});

// Earn and use carry the same change.
mirror!(PointChange => point::EarnRequest { user_id, amount, reference, description, .. });
mirror!(PointChange => point::UseRequest { user_id, amount, reference, description, .. });

mirror!(Expiring => point::Expiring { amount, expires_at });

mirror!(Lot => point::Lot {
    id, user_id, earn_transaction_id, amount, remaining, expires_at, earned_at
});

mirror!(LotQuery => point::LotsRequest { user_id, page, .. });

impl From<Balance> for point::Balance {
    fn from(b: Balance) -> Self {
        point::Balance {
            user_id: b.user_id.to_pb(),
            balance: b.balance,
            held: b.held,
            expiring: b.expiring.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<point::Balance> for Balance {
    type Error = DomainError;
    fn try_from(m: point::Balance) -> DomainResult<Self> {
        Ok(Balance {
            user_id: Wire::from_pb("user_id", m.user_id)?,
            balance: m.balance,
            held: m.held,
            expiring: m
                .expiring
                .into_iter()
                .map(TryInto::try_into)
                .collect::<DomainResult<_>>()?,
        })
    }
}

mirror!(PointHold => point::Hold {
    id, user_id, amount, status, reference, expires_at, created_at, resolved_at,
    captured_amount, transaction_id
});

mirror!(NewHold => point::CreateHoldRequest { user_id, amount, reference, hold_seconds, .. });

mirror!(HistoryQuery => point::HistoryRequest { kind as r#type, user_id, page, .. });

mirror!(Product => timesale::Product { id, name, description, price, created_at, updated_at });

mirror!(NewProduct => timesale::CreateProductRequest { name, description, price, .. });

mirror!(Sale => timesale::Sale {
    id, product_id, total_quantity, sold_quantity, remaining_quantity, sale_price,
    per_user_limit, start_at, end_at, status, created_at, updated_at
});

mirror!(NewSale => timesale::CreateSaleRequest {
    product_id, total_quantity, sale_price, per_user_limit, start_at, end_at, ..
});

mirror!(SaleQuery => timesale::ListSalesRequest { status, page, .. });

mirror!(OrderQuery => timesale::ListOrdersRequest { user_id, time_sale_id, status, page, .. });

mirror!(Order => timesale::Order {
    id, time_sale_id, user_id, quantity, unit_price, total_price, status, created_at,
    expires_at, resolved_at, cancelled_at
});

mirror!(NewOrder => timesale::CreateOrderRequest { quantity, hold, hold_seconds, .. });

/// The patch only; the client sets the policy id.
impl From<PolicyPatch> for coupon::UpdatePolicyRequest {
    fn from(p: PolicyPatch) -> Self {
        coupon::UpdatePolicyRequest {
            meta: None,
            id: String::new(),
            name: p.name,
            description: p.description,
            total_quantity: p.total_quantity,
            valid_until: p.valid_until.map(ts),
            active: p.active,
        }
    }
}

impl TryFrom<&mut coupon::UpdatePolicyRequest> for PolicyPatch {
    type Error = DomainError;
    fn try_from(r: &mut coupon::UpdatePolicyRequest) -> DomainResult<Self> {
        Ok(PolicyPatch {
            name: r.name.take(),
            description: r.description.take(),
            total_quantity: r.total_quantity,
            valid_until: opt_ts("valid_until", r.valid_until.as_deref())?,
            active: r.active,
        })
    }
}

/// A used coupon and the discount it gave.
impl From<(Coupon, i64)> for coupon::UseCouponResponse {
    fn from((c, discount_amount): (Coupon, i64)) -> Self {
        coupon::UseCouponResponse {
            coupon: Some(c.into()),
            discount_amount,
        }
    }
}

impl TryFrom<coupon::UseCouponResponse> for (Coupon, i64) {
    type Error = DomainError;
    fn try_from(r: coupon::UseCouponResponse) -> DomainResult<Self> {
        let c = r
            .coupon
            .ok_or_else(|| DomainError::Internal("use response without coupon".into()))?;
        Ok((c.try_into()?, r.discount_amount))
    }
}

/// The patch only; the client sets the sale id.
impl From<SalePatch> for timesale::UpdateSaleRequest {
    fn from(p: SalePatch) -> Self {
        timesale::UpdateSaleRequest {
            meta: None,
            id: String::new(),
            end_at: p.end_at.map(ts),
            status: p.status.map(|s| s.as_str().to_owned()),
        }
    }
}

impl TryFrom<&timesale::UpdateSaleRequest> for SalePatch {
    type Error = DomainError;
    fn try_from(r: &timesale::UpdateSaleRequest) -> DomainResult<Self> {
        Ok(SalePatch {
            end_at: opt_ts("end_at", r.end_at.as_deref())?,
            status: r.status.as_deref().map(SaleStatus::parse).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};
    use std::fmt::Debug;
    use uuid::Uuid;

    /// Distinct instants, each with microseconds (what the wire keeps).
    fn t(n: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + n, 123_456_000).unwrap()
    }

    /// Every field survives the trip to the wire and back.
    fn round_trip<D, P>(d: D)
    where
        D: Clone + PartialEq + Debug + TryFrom<P, Error = DomainError>,
        P: From<D>,
    {
        assert_eq!(D::try_from(P::from(d.clone())), Ok(d));
    }

    fn policy() -> Policy {
        Policy {
            id: Uuid::new_v4(),
            name: "spring".into(),
            description: Some("ten off".into()),
            discount_type: DiscountType::Percentage,
            discount_value: 10,
            min_order_amount: 1_000,
            max_discount_amount: Some(500),
            total_quantity: 100,
            issued_quantity: 7,
            per_user_limit: 2,
            valid_from: t(1),
            valid_until: t(2),
            active: true,
            created_at: t(3),
            updated_at: t(4),
            code_mode: CodeMode::Shared,
            shared_code: Some("SPRING-10".into()),
            stackable: true,
            codes_generated: 0,
        }
    }

    fn coupon() -> Coupon {
        Coupon {
            id: Uuid::new_v4(),
            code: "ABC".into(),
            policy_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            status: CouponStatus::Used,
            order_id: Some("o-1".into()),
            discount_amount: Some(300),
            used_at: Some(t(1)),
            expires_at: t(2),
            issued_at: t(3),
            reserved_order_id: None,
            reserved_until: None,
            released_order_id: Some("o-0".into()),
            redeemed_code: Some("SPRING10".into()),
            redeemed_shared: true,
        }
    }

    fn reserved_coupon() -> Coupon {
        Coupon {
            status: CouponStatus::Reserved,
            order_id: None,
            discount_amount: None,
            used_at: None,
            reserved_order_id: Some("o-2".into()),
            reserved_until: Some(t(4)),
            released_order_id: None,
            ..coupon()
        }
    }

    fn sale() -> Sale {
        Sale {
            id: Uuid::new_v4(),
            product_id: Uuid::new_v4(),
            total_quantity: 10,
            sold_quantity: 3,
            remaining_quantity: 6,
            sale_price: 900,
            per_user_limit: 2,
            start_at: t(1),
            end_at: t(2),
            status: SaleStatus::Active,
            created_at: t(3),
            updated_at: t(4),
        }
    }

    #[test]
    fn entities_round_trip() {
        round_trip::<_, coupon::Policy>(policy());
        round_trip::<_, coupon::Coupon>(coupon());
        round_trip::<_, coupon::UseCouponResponse>((coupon(), 300));
        round_trip::<_, coupon::Coupon>(reserved_coupon());
        round_trip::<_, point::Transaction>(Transaction {
            id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            tx_type: TxType::Cancel,
            amount: 50,
            delta: 40,
            balance_after: 30,
            reference: Some("r".into()),
            description: Some("d".into()),
            cancelled_transaction_id: Some(Uuid::new_v4()),
            hold_id: Some(Uuid::new_v4()),
            lot_id: Some(Uuid::new_v4()),
            created_at: t(1),
        });
        round_trip::<_, point::Balance>(Balance {
            user_id: Uuid::new_v4(),
            balance: 42,
            held: 40,
            expiring: vec![Expiring {
                amount: 2,
                expires_at: t(5),
            }],
        });
        for expires_at in [Some(t(2)), None] {
            round_trip::<_, point::Lot>(Lot {
                id: Uuid::new_v4(),
                user_id: Uuid::new_v4(),
                earn_transaction_id: Some(Uuid::new_v4()),
                amount: 9,
                remaining: 4,
                expires_at,
                earned_at: t(1),
            });
        }
        round_trip::<_, point::Hold>(PointHold {
            id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            amount: 30,
            status: HoldStatus::Captured,
            reference: Some("r".into()),
            expires_at: t(1),
            created_at: t(2),
            resolved_at: Some(t(3)),
            captured_amount: Some(20),
            transaction_id: Some(Uuid::new_v4()),
        });
        round_trip::<_, timesale::Product>(Product {
            id: Uuid::new_v4(),
            name: "mug".into(),
            description: None,
            price: 1_000,
            created_at: t(1),
            updated_at: t(2),
        });
        round_trip::<_, timesale::Sale>(sale());
        round_trip::<_, timesale::Order>(Order {
            id: Uuid::new_v4(),
            time_sale_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            quantity: 2,
            unit_price: 900,
            total_price: 1_800,
            status: OrderStatus::Cancelled,
            created_at: t(1),
            expires_at: Some(t(3)),
            resolved_at: Some(t(2)),
            cancelled_at: Some(t(2)),
        });
        round_trip::<_, coupon::PolicyPage>(Page {
            items: vec![policy(), policy()],
            page: 2,
            size: 3,
            total: 8,
        });
    }

    #[test]
    fn request_arguments_round_trip() {
        let p = NewPolicy {
            name: "n".into(),
            description: None,
            discount_type: DiscountType::Fixed,
            discount_value: 100,
            min_order_amount: 10,
            max_discount_amount: None,
            total_quantity: 5,
            per_user_limit: 1,
            valid_from: t(1),
            valid_until: t(2),
            code_mode: CodeMode::Batch,
            shared_code: None,
            stackable: true,
        };
        round_trip::<_, coupon::CreatePolicyRequest>(p);
        for prefix in [None, Some("SPR".to_owned())] {
            let n = NewCodes {
                policy_id: Uuid::new_v4(),
                count: 1_000_000,
                prefix,
            };
            round_trip::<_, coupon::GenerateCodesRequest>(n);
        }
        round_trip::<_, coupon::CodeBatch>(CodeBatch {
            policy_id: Uuid::new_v4(),
            generated: 10,
            total_codes: 30,
        });
        let redeemed = Code {
            code: "ABCD".into(),
            status: CodeStatus::Redeemed,
            coupon_id: Some(Uuid::new_v4()),
            redeemed_at: Some(t(5)),
        };
        round_trip::<_, coupon::Code>(redeemed);
        round_trip::<_, coupon::ListCodesRequest>(CodeQuery {
            policy_id: Uuid::new_v4(),
            status: Some(CodeStatus::Unredeemed),
            page: PageRequest { page: 2, size: 50 },
        });
        round_trip::<_, coupon::RedeemCodeRequest>(Redeem {
            code: "spring-10".into(),
            user_id: Uuid::new_v4(),
        });
        for hold_seconds in [None, Some(60)] {
            round_trip::<_, coupon::ReserveCouponRequest>(CouponReserve {
                id: Uuid::new_v4(),
                order_id: "o-1".into(),
                order_amount: 20_000,
                hold_seconds,
            });
        }
        let patch = PolicyPatch {
            name: Some("m".into()),
            description: Some("d".into()),
            total_quantity: Some(9),
            valid_until: Some(t(3)),
            active: Some(false),
        };
        let mut msg = coupon::UpdatePolicyRequest::from(patch.clone());
        assert_eq!(PolicyPatch::try_from(&mut msg), Ok(patch));
        let c = PointChange {
            user_id: Uuid::new_v4(),
            amount: 7,
            reference: Some("r".into()),
            description: None,
        };
        round_trip::<_, point::EarnRequest>(c.clone());
        round_trip::<_, point::UseRequest>(c);
        round_trip::<_, point::CreateHoldRequest>(NewHold {
            user_id: Uuid::new_v4(),
            amount: 9,
            reference: None,
            hold_seconds: Some(60),
        });
        let p = NewProduct {
            name: "p".into(),
            description: Some("d".into()),
            price: 3,
        };
        round_trip::<_, timesale::CreateProductRequest>(p);
        round_trip::<_, timesale::CreateSaleRequest>(NewSale {
            product_id: Uuid::new_v4(),
            total_quantity: 4,
            sale_price: 5,
            per_user_limit: 6,
            start_at: t(1),
            end_at: t(2),
        });
        let patch = SalePatch {
            end_at: Some(t(5)),
            status: Some(SaleStatus::Cancelled),
        };
        let msg = timesale::UpdateSaleRequest::from(patch.clone());
        assert_eq!(SalePatch::try_from(&msg), Ok(patch));
    }

    /// An audit search and its head cross the wire with every optional
    /// field absent or set; a JSON document stays the same document.
    #[test]
    fn audit_searches_and_heads_round_trip() {
        for some in [false, true] {
            round_trip::<_, audit::AuditQuery>(AuditQuery {
                actor_id: some.then(Uuid::new_v4),
                action: some.then(|| "coupon_policy.updated".into()),
                target_id: some.then(|| "x".into()),
                since: some.then(|| t(1)),
                until: some.then(|| t(2)),
                page: PageRequest { page: 3, size: 7 },
            });
            let entry = AuditEntry {
                id: Uuid::new_v4(),
                at: t(3),
                actor_id: some.then(Uuid::new_v4),
                action: "point.earned".into(),
                target_type: "user".into(),
                target_id: Uuid::new_v4().to_string(),
                request_id: some.then(|| "r-1".into()),
                before: some.then(|| serde_json::json!({"total_quantity": 10, "name": null})),
                after: Some(serde_json::json!({"nested": {"list": [1, "two"]}})),
            };
            round_trip::<_, audit::AuditHead>(Head {
                entries: vec![entry.clone(), entry],
                total: 41,
            });
        }
        let mut bad = audit::AuditEntry::from(AuditEntry {
            id: Uuid::new_v4(),
            at: t(1),
            actor_id: None,
            action: "a".into(),
            target_type: "t".into(),
            target_id: "x".into(),
            request_id: None,
            before: None,
            after: None,
        });
        bad.after = Some("{not json".into());
        match AuditEntry::try_from(bad) {
            Err(DomainError::Validation { field, .. }) => assert_eq!(field, "after"),
            other => panic!("{other:?}"),
        }
    }

    /// An admin's search crosses the wire with every filter absent or set:
    /// an absent user stays "every user", not some empty id.
    #[test]
    fn searches_survive_the_wire_with_and_without_filters() {
        let page = PageRequest { page: 3, size: 7 };
        for some in [false, true] {
            let id = some.then(Uuid::new_v4);
            round_trip::<_, coupon::ListCouponsRequest>(CouponQuery {
                user_id: id,
                policy_id: some.then(Uuid::new_v4),
                status: some.then_some(CouponStatus::Expired),
                page,
            });
            round_trip::<_, timesale::ListOrdersRequest>(OrderQuery {
                user_id: id,
                time_sale_id: some.then(Uuid::new_v4),
                status: some.then_some(OrderStatus::Pending),
                page,
            });
        }
        let mut msg = coupon::ListCouponsRequest::from(CouponQuery {
            user_id: None,
            policy_id: None,
            status: None,
            page,
        });
        msg.policy_id = Some("nope".into());
        match CouponQuery::try_from(msg) {
            Err(DomainError::Validation { field, .. }) => assert_eq!(field, "policy_id"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_malformed_field_is_named() {
        let mut msg = coupon::Coupon::from(coupon());
        msg.policy_id = "nope".into();
        match Coupon::try_from(msg) {
            Err(DomainError::Validation { field, .. }) => assert_eq!(field, "policy_id"),
            other => panic!("{other:?}"),
        }
    }
}
