//! Generated gRPC code, and where proto and domain values meet: the scalar
//! helpers and the call context here, every message conversion in `convert`.

/// The generated module of each `promo.<name>.v1` package, nested as its
/// package path (generated code refers to `super::super::common::v1`) and
/// re-exported as `proto::<name>`.
macro_rules! generated {
    ($($pkg:ident),*) => {
        #[allow(clippy::all, clippy::pedantic, missing_docs)]
        pub mod promo {
            $(pub mod $pkg {
                pub mod v1 {
                    include!(concat!(env!("OUT_DIR"), "/promo.", stringify!($pkg), ".v1.rs"));
                }
            })*
        }
        $(pub use promo::$pkg::v1 as $pkg;)*
    };
}

generated!(common, audit, coupon, point, timesale);

mod convert;

use crate::ctx::{Ctx, IdemKey};
use chrono::{DateTime, Utc};
use promo_domain::page::PageRequest;
use promo_domain::principal::{Principal, Role};
use promo_domain::{DomainError, DomainResult};
use uuid::Uuid;

pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub fn parse_ts(field: &str, s: &str) -> DomainResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| DomainError::validation(field, format!("{field} must be an rfc 3339 time")))
}

pub fn opt_ts(field: &str, s: Option<&str>) -> DomainResult<Option<DateTime<Utc>>> {
    s.map(|s| parse_ts(field, s)).transpose()
}

pub fn uuid(field: &str, s: &str) -> DomainResult<Uuid> {
    Uuid::parse_str(s)
        .map_err(|_| DomainError::validation(field, format!("{field} must be a uuid")))
}

/// The caller of a read, as a request carries it.
pub fn actor(ctx: &Ctx) -> Option<common::Actor> {
    Some(common::Actor {
        user_id: ctx.principal.user_id.to_string(),
        role: ctx.principal.role.as_str().to_owned(),
    })
}

/// The caller and idempotency key of a write, as a request carries them.
pub fn meta(ctx: &Ctx) -> Option<common::WriteMeta> {
    Some(common::WriteMeta {
        actor: actor(ctx),
        idempotency_key: ctx.idem.as_ref().map(|k| k.key.clone()).unwrap_or_default(),
        request_hash: ctx
            .idem
            .as_ref()
            .map(|k| k.request_hash.clone())
            .unwrap_or_default(),
    })
}

fn principal(a: Option<common::Actor>) -> DomainResult<Principal> {
    let a = a.ok_or(DomainError::Unauthorized)?;
    Ok(Principal {
        user_id: Uuid::parse_str(&a.user_id).map_err(|_| DomainError::Unauthorized)?,
        role: Role::parse(&a.role).ok_or(DomainError::Unauthorized)?,
    })
}

fn read_ctx(a: Option<common::Actor>) -> DomainResult<Ctx> {
    principal(a).map(crate::ctx::read_ctx)
}

fn write_ctx(m: Option<common::WriteMeta>) -> DomainResult<Ctx> {
    let m = m.ok_or(DomainError::Unauthorized)?;
    let idem = (!m.idempotency_key.is_empty()).then_some(IdemKey {
        key: m.idempotency_key,
        request_hash: m.request_hash,
    });
    Ok(Ctx {
        principal: principal(m.actor)?,
        idem,
    })
}

/// A request that carries its caller: `actor` on reads, `meta` on writes.
pub trait Caller {
    /// Takes the caller out, leaving the arguments; a request without a
    /// valid caller is unauthorized.
    fn take_ctx(&mut self) -> DomainResult<Ctx>;
}

macro_rules! callers {
    (reads: $($r:ty),* ; writes: $($w:ty),* $(,)?) => {
        $(impl Caller for $r {
            fn take_ctx(&mut self) -> DomainResult<Ctx> {
                read_ctx(self.actor.take())
            }
        })*
        $(impl Caller for $w {
            fn take_ctx(&mut self) -> DomainResult<Ctx> {
                write_ctx(self.meta.take())
            }
        })*
    };
}

callers! {
    reads:
        audit::AuditQuery,
        coupon::GetByIdRequest, coupon::ListPoliciesRequest, coupon::ListCouponsRequest,
        coupon::ListCodesRequest, coupon::ExportCodesRequest,
        point::BalanceRequest, point::HistoryRequest, point::GetHoldRequest, point::LotsRequest,
        timesale::GetByIdRequest, timesale::ListRequest, timesale::ListSalesRequest,
        timesale::ListOrdersRequest;
    writes:
        coupon::CreatePolicyRequest, coupon::UpdatePolicyRequest, coupon::IssueCouponRequest,
        coupon::UseCouponRequest, coupon::ReserveCouponRequest, coupon::CancelCouponUseRequest,
        coupon::GenerateCodesRequest, coupon::RedeemCodeRequest,
        point::EarnRequest, point::UseRequest, point::CancelRequest,
        point::CreateHoldRequest, point::CaptureHoldRequest, point::VoidHoldRequest,
        timesale::CreateProductRequest, timesale::CreateSaleRequest,
        timesale::UpdateSaleRequest, timesale::CreateOrderRequest, timesale::CancelOrderRequest,
        timesale::ConfirmOrderRequest,
}

pub fn page_req(p: PageRequest) -> Option<common::PageRequest> {
    Some(common::PageRequest {
        page: p.page,
        size: p.size,
    })
}

pub fn from_page_req(p: Option<common::PageRequest>) -> DomainResult<PageRequest> {
    match p {
        Some(p) => PageRequest::parse(Some(p.page as i64), Some(p.size as i64)),
        None => Ok(PageRequest::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_and_key_cross_the_wire_and_a_missing_caller_is_unauthorized() {
        let ctx = Ctx {
            principal: Principal {
                user_id: Uuid::new_v4(),
                role: Role::Admin,
            },
            idem: Some(IdemKey {
                key: "k".into(),
                request_hash: "h".into(),
            }),
        };
        let mut w = coupon::IssueCouponRequest {
            meta: meta(&ctx),
            ..Default::default()
        };
        let got = w.take_ctx().unwrap();
        assert_eq!((got.principal, got.idem), (ctx.principal, ctx.idem.clone()));
        let mut r = coupon::GetByIdRequest {
            actor: actor(&ctx),
            ..Default::default()
        };
        let got = r.take_ctx().unwrap();
        assert_eq!((got.principal, got.idem), (ctx.principal, None));
        assert_eq!(
            w.take_ctx().map(|_| ()),
            Err(DomainError::Unauthorized),
            "taken once"
        );
        let mut no_key = point::CancelRequest {
            meta: meta(&Ctx {
                idem: None,
                ..ctx.clone()
            }),
            ..Default::default()
        };
        assert_eq!(no_key.take_ctx().unwrap().idem, None);
    }
}
