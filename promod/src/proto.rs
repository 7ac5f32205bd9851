//! Generated gRPC code, and the conversions shared by every service's gRPC
//! layer (the one place where proto and domain values meet).

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod promo {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("promo.common.v1");
        }
    }
    pub mod coupon {
        pub mod v1 {
            tonic::include_proto!("promo.coupon.v1");
        }
    }
    pub mod point {
        pub mod v1 {
            tonic::include_proto!("promo.point.v1");
        }
    }
    pub mod timesale {
        pub mod v1 {
            tonic::include_proto!("promo.timesale.v1");
        }
    }
}
pub use promo::common::v1 as common;
pub use promo::coupon::v1 as coupon;
pub use promo::point::v1 as point;
pub use promo::timesale::v1 as timesale;

use crate::ctx::Ctx;
use crate::ctx::IdemKey;
use chrono::{DateTime, Utc};
use promo_domain::page::{Page, PageRequest};
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

pub fn actor(p: &Principal) -> common::Actor {
    common::Actor {
        user_id: p.user_id.to_string(),
        role: p.role.as_str().to_owned(),
    }
}

pub fn principal(a: Option<common::Actor>) -> DomainResult<Principal> {
    let a = a.ok_or(DomainError::Unauthorized)?;
    Ok(Principal {
        user_id: Uuid::parse_str(&a.user_id).map_err(|_| DomainError::Unauthorized)?,
        role: Role::parse(&a.role).ok_or(DomainError::Unauthorized)?,
    })
}

pub fn meta(ctx: &Ctx) -> common::WriteMeta {
    common::WriteMeta {
        actor: Some(actor(&ctx.principal)),
        idempotency_key: ctx.idem.as_ref().map(|k| k.key.clone()).unwrap_or_default(),
        request_hash: ctx
            .idem
            .as_ref()
            .map(|k| k.request_hash.clone())
            .unwrap_or_default(),
    }
}

pub fn read_ctx(a: Option<common::Actor>) -> DomainResult<Ctx> {
    Ok(Ctx {
        principal: principal(a)?,
        idem: None,
    })
}

pub fn write_ctx(m: Option<common::WriteMeta>) -> DomainResult<Ctx> {
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

pub fn page_req(p: PageRequest) -> common::PageRequest {
    common::PageRequest {
        page: p.page,
        size: p.size,
    }
}

pub fn from_page_req(p: Option<common::PageRequest>) -> DomainResult<PageRequest> {
    match p {
        Some(p) => PageRequest::parse(Some(p.page as i64), Some(p.size as i64)),
        None => Ok(PageRequest::default()),
    }
}

/// Rebuilds a domain page from the (items, page, size, total) of a proto page.
pub fn page<T>(items: Vec<T>, page: u32, size: u32, total: i64) -> Page<T> {
    Page {
        items,
        page,
        size,
        total,
    }
}

/// Sends the request id along with a gRPC call.
pub fn request<T>(msg: T, timeout: std::time::Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    if let Some(id) = crate::request_id::current() {
        if let Ok(v) = tonic::metadata::MetadataValue::try_from(id.as_str()) {
            req.metadata_mut().insert("x-request-id", v);
        }
    }
    req
}

/// What every gRPC client of a service role shares: the call timeout and the
/// service's circuit breaker, which sees transport faults but not refusals.
#[derive(Clone)]
pub struct Remote {
    timeout: std::time::Duration,
    breaker: std::sync::Arc<crate::gateway::breaker::Breaker>,
}

impl Remote {
    pub fn new(
        timeout: std::time::Duration,
        breaker: std::sync::Arc<crate::gateway::breaker::Breaker>,
    ) -> Self {
        Remote { timeout, breaker }
    }

    /// Runs one call through the breaker and maps its status back to the domain.
    pub async fn call<T>(
        &self,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> DomainResult<T> {
        self.breaker
            .call(async {
                call.await
                    .map(tonic::Response::into_inner)
                    .map_err(crate::error::from_status)
            })
            .await
    }

    /// A request with the timeout and the request id.
    pub fn req<T>(&self, msg: T) -> tonic::Request<T> {
        request(msg, self.timeout)
    }
}
