//! Every conversion between protobuf messages and domain values, written
//! once: `From` towards the wire, `TryFrom` back (a malformed field is a
//! `VALIDATION_ERROR` naming it). Request messages convert without their
//! caller, which [`super::Caller`] takes out first.

use super::{coupon, opt_ts, opt_uuid, parse_ts, point, timesale, ts, uuid};
use promo_domain::coupon::{Coupon, CouponStatus, DiscountType, NewPolicy, Policy, PolicyPatch};
use promo_domain::page::Page;
use promo_domain::point::{Balance, PointChange, Transaction, TxType};
use promo_domain::timesale::{
    NewProduct, NewSale, Order, OrderStatus, Product, Sale, SalePatch, SaleStatus,
};
use promo_domain::{DomainError, DomainResult};

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
    point::TransactionPage => Transaction,
    timesale::ProductPage => Product,
    timesale::SalePage => Sale,
    timesale::OrderPage => Order,
}

impl From<Policy> for coupon::Policy {
    fn from(p: Policy) -> Self {
        coupon::Policy {
            id: p.id.to_string(),
            name: p.name,
            description: p.description,
            discount_type: p.discount_type.as_str().to_owned(),
            discount_value: p.discount_value,
            min_order_amount: p.min_order_amount,
            max_discount_amount: p.max_discount_amount,
            total_quantity: p.total_quantity,
            issued_quantity: p.issued_quantity,
            per_user_limit: p.per_user_limit,
            valid_from: ts(p.valid_from),
            valid_until: ts(p.valid_until),
            active: p.active,
            created_at: ts(p.created_at),
            updated_at: ts(p.updated_at),
        }
    }
}

impl TryFrom<coupon::Policy> for Policy {
    type Error = DomainError;
    fn try_from(p: coupon::Policy) -> DomainResult<Self> {
        Ok(Policy {
            id: uuid("id", &p.id)?,
            name: p.name,
            description: p.description,
            discount_type: DiscountType::parse(&p.discount_type)?,
            discount_value: p.discount_value,
            min_order_amount: p.min_order_amount,
            max_discount_amount: p.max_discount_amount,
            total_quantity: p.total_quantity,
            issued_quantity: p.issued_quantity,
            per_user_limit: p.per_user_limit,
            valid_from: parse_ts("valid_from", &p.valid_from)?,
            valid_until: parse_ts("valid_until", &p.valid_until)?,
            active: p.active,
            created_at: parse_ts("created_at", &p.created_at)?,
            updated_at: parse_ts("updated_at", &p.updated_at)?,
        })
    }
}

impl From<NewPolicy> for coupon::CreatePolicyRequest {
    fn from(p: NewPolicy) -> Self {
        coupon::CreatePolicyRequest {
            meta: None,
            name: p.name,
            description: p.description,
            discount_type: p.discount_type.as_str().to_owned(),
            discount_value: p.discount_value,
            min_order_amount: p.min_order_amount,
            max_discount_amount: p.max_discount_amount,
            total_quantity: p.total_quantity,
            per_user_limit: p.per_user_limit,
            valid_from: ts(p.valid_from),
            valid_until: ts(p.valid_until),
        }
    }
}

impl TryFrom<coupon::CreatePolicyRequest> for NewPolicy {
    type Error = DomainError;
    fn try_from(r: coupon::CreatePolicyRequest) -> DomainResult<Self> {
        Ok(NewPolicy {
            name: r.name,
            description: r.description,
            discount_type: DiscountType::parse(&r.discount_type)?,
            discount_value: r.discount_value,
            min_order_amount: r.min_order_amount,
            max_discount_amount: r.max_discount_amount,
            total_quantity: r.total_quantity,
            per_user_limit: r.per_user_limit,
            valid_from: parse_ts("valid_from", &r.valid_from)?,
            valid_until: parse_ts("valid_until", &r.valid_until)?,
        })
    }
}

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

impl From<Coupon> for coupon::Coupon {
    fn from(c: Coupon) -> Self {
        coupon::Coupon {
            id: c.id.to_string(),
            code: c.code,
            policy_id: c.policy_id.to_string(),
            user_id: c.user_id.to_string(),
            status: c.status.as_str().to_owned(),
            order_id: c.order_id,
            discount_amount: c.discount_amount,
            used_at: c.used_at.map(ts),
            expires_at: ts(c.expires_at),
            issued_at: ts(c.issued_at),
        }
    }
}

impl TryFrom<coupon::Coupon> for Coupon {
    type Error = DomainError;
    fn try_from(c: coupon::Coupon) -> DomainResult<Self> {
        Ok(Coupon {
            id: uuid("id", &c.id)?,
            code: c.code,
            policy_id: uuid("policy_id", &c.policy_id)?,
            user_id: uuid("user_id", &c.user_id)?,
            status: CouponStatus::parse(&c.status)?,
            order_id: c.order_id,
            discount_amount: c.discount_amount,
            used_at: opt_ts("used_at", c.used_at.as_deref())?,
            expires_at: parse_ts("expires_at", &c.expires_at)?,
            issued_at: parse_ts("issued_at", &c.issued_at)?,
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

impl From<Transaction> for point::Transaction {
    fn from(t: Transaction) -> Self {
        point::Transaction {
            id: t.id.to_string(),
            user_id: t.user_id.to_string(),
            r#type: t.tx_type.as_str().to_owned(),
            amount: t.amount,
            delta: t.delta,
            balance_after: t.balance_after,
            reference: t.reference,
            description: t.description,
            cancelled_transaction_id: t.cancelled_transaction_id.map(|u| u.to_string()),
            created_at: ts(t.created_at),
        }
    }
}

impl TryFrom<point::Transaction> for Transaction {
    type Error = DomainError;
    fn try_from(t: point::Transaction) -> DomainResult<Self> {
        Ok(Transaction {
            id: uuid("id", &t.id)?,
            user_id: uuid("user_id", &t.user_id)?,
            tx_type: TxType::parse(&t.r#type)?,
            amount: t.amount,
            delta: t.delta,
            balance_after: t.balance_after,
            reference: t.reference,
            description: t.description,
            cancelled_transaction_id: opt_uuid(
                "cancelled_transaction_id",
                t.cancelled_transaction_id.as_deref(),
            )?,
            created_at: parse_ts("created_at", &t.created_at)?,
        })
    }
}

/// Earn and use carry the same change.
macro_rules! point_changes {
    ($($pb:ty),*) => {$(
        impl From<PointChange> for $pb {
            fn from(c: PointChange) -> Self {
                Self {
                    meta: None,
                    user_id: c.user_id.to_string(),
                    amount: c.amount,
                    reference: c.reference,
                    description: c.description,
                }
            }
        }

        impl TryFrom<$pb> for PointChange {
            type Error = DomainError;
            fn try_from(r: $pb) -> DomainResult<Self> {
                Ok(PointChange {
                    user_id: uuid("user_id", &r.user_id)?,
                    amount: r.amount,
                    reference: r.reference,
                    description: r.description,
                })
            }
        }
    )*};
}

point_changes!(point::EarnRequest, point::UseRequest);

impl From<Balance> for point::Balance {
    fn from(b: Balance) -> Self {
        point::Balance {
            user_id: b.user_id.to_string(),
            balance: b.balance,
        }
    }
}

impl TryFrom<point::Balance> for Balance {
    type Error = DomainError;
    fn try_from(b: point::Balance) -> DomainResult<Self> {
        Ok(Balance {
            user_id: uuid("user_id", &b.user_id)?,
            balance: b.balance,
        })
    }
}

impl From<Product> for timesale::Product {
    fn from(p: Product) -> Self {
        timesale::Product {
            id: p.id.to_string(),
            name: p.name,
            description: p.description,
            price: p.price,
            created_at: ts(p.created_at),
            updated_at: ts(p.updated_at),
        }
    }
}

impl TryFrom<timesale::Product> for Product {
    type Error = DomainError;
    fn try_from(p: timesale::Product) -> DomainResult<Self> {
        Ok(Product {
            id: uuid("id", &p.id)?,
            name: p.name,
            description: p.description,
            price: p.price,
            created_at: parse_ts("created_at", &p.created_at)?,
            updated_at: parse_ts("updated_at", &p.updated_at)?,
        })
    }
}

impl From<NewProduct> for timesale::CreateProductRequest {
    fn from(p: NewProduct) -> Self {
        timesale::CreateProductRequest {
            meta: None,
            name: p.name,
            description: p.description,
            price: p.price,
        }
    }
}

impl From<timesale::CreateProductRequest> for NewProduct {
    fn from(r: timesale::CreateProductRequest) -> Self {
        NewProduct {
            name: r.name,
            description: r.description,
            price: r.price,
        }
    }
}

impl From<Sale> for timesale::Sale {
    fn from(s: Sale) -> Self {
        timesale::Sale {
            id: s.id.to_string(),
            product_id: s.product_id.to_string(),
            total_quantity: s.total_quantity,
            remaining_quantity: s.remaining_quantity,
            sale_price: s.sale_price,
            per_user_limit: s.per_user_limit,
            start_at: ts(s.start_at),
            end_at: ts(s.end_at),
            status: s.status.as_str().to_owned(),
            created_at: ts(s.created_at),
            sold_quantity: s.sold_quantity,
            updated_at: ts(s.updated_at),
        }
    }
}

impl TryFrom<timesale::Sale> for Sale {
    type Error = DomainError;
    fn try_from(s: timesale::Sale) -> DomainResult<Self> {
        Ok(Sale {
            id: uuid("id", &s.id)?,
            product_id: uuid("product_id", &s.product_id)?,
            total_quantity: s.total_quantity,
            sold_quantity: s.sold_quantity,
            remaining_quantity: s.remaining_quantity,
            sale_price: s.sale_price,
            per_user_limit: s.per_user_limit,
            start_at: parse_ts("start_at", &s.start_at)?,
            end_at: parse_ts("end_at", &s.end_at)?,
            status: SaleStatus::parse(&s.status)?,
            created_at: parse_ts("created_at", &s.created_at)?,
            updated_at: parse_ts("updated_at", &s.updated_at)?,
        })
    }
}

impl From<NewSale> for timesale::CreateSaleRequest {
    fn from(s: NewSale) -> Self {
        timesale::CreateSaleRequest {
            meta: None,
            product_id: s.product_id.to_string(),
            total_quantity: s.total_quantity,
            sale_price: s.sale_price,
            per_user_limit: s.per_user_limit,
            start_at: ts(s.start_at),
            end_at: ts(s.end_at),
        }
    }
}

impl TryFrom<timesale::CreateSaleRequest> for NewSale {
    type Error = DomainError;
    fn try_from(r: timesale::CreateSaleRequest) -> DomainResult<Self> {
        Ok(NewSale {
            product_id: uuid("product_id", &r.product_id)?,
            total_quantity: r.total_quantity,
            sale_price: r.sale_price,
            per_user_limit: r.per_user_limit,
            start_at: parse_ts("start_at", &r.start_at)?,
            end_at: parse_ts("end_at", &r.end_at)?,
        })
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

impl From<Order> for timesale::Order {
    fn from(o: Order) -> Self {
        timesale::Order {
            id: o.id.to_string(),
            time_sale_id: o.time_sale_id.to_string(),
            user_id: o.user_id.to_string(),
            quantity: o.quantity,
            unit_price: o.unit_price,
            total_price: o.total_price,
            status: o.status.as_str().to_owned(),
            created_at: ts(o.created_at),
            cancelled_at: o.cancelled_at.map(ts),
        }
    }
}

impl TryFrom<timesale::Order> for Order {
    type Error = DomainError;
    fn try_from(o: timesale::Order) -> DomainResult<Self> {
        Ok(Order {
            id: uuid("id", &o.id)?,
            time_sale_id: uuid("time_sale_id", &o.time_sale_id)?,
            user_id: uuid("user_id", &o.user_id)?,
            quantity: o.quantity,
            unit_price: o.unit_price,
            total_price: o.total_price,
            status: OrderStatus::parse(&o.status)?,
            created_at: parse_ts("created_at", &o.created_at)?,
            cancelled_at: opt_ts("cancelled_at", o.cancelled_at.as_deref())?,
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
            created_at: t(1),
        });
        round_trip::<_, point::Balance>(Balance {
            user_id: Uuid::new_v4(),
            balance: 42,
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
        };
        round_trip::<_, coupon::CreatePolicyRequest>(p);
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
        let p = NewProduct {
            name: "p".into(),
            description: Some("d".into()),
            price: 3,
        };
        assert_eq!(
            NewProduct::from(timesale::CreateProductRequest::from(p.clone())),
            p
        );
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
