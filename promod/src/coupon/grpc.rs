//! The coupon role's gRPC server and the client that implements [`CouponApi`]
//! for a gateway in another process.

use super::CouponApi;
use crate::ctx::Ctx;
use crate::error::to_status;
use crate::gateway::breaker::Breaker;
use crate::proto::coupon as pb;
use crate::proto::{self, opt_ts, parse_ts, ts, uuid};
use async_trait::async_trait;
use pb::coupon_service_client::CouponServiceClient;
use pb::coupon_service_server::CouponService as GrpcService;
use promo_domain::coupon::{Coupon, CouponStatus, DiscountType, NewPolicy, Policy, PolicyPatch};
use promo_domain::page::{Page, PageRequest};
use promo_domain::{DomainError, DomainResult};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;

fn policy_pb(p: Policy) -> pb::Policy {
    pb::Policy {
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

fn policy_dom(p: pb::Policy) -> DomainResult<Policy> {
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

fn coupon_pb(c: Coupon) -> pb::Coupon {
    pb::Coupon {
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

fn coupon_dom(c: pb::Coupon) -> DomainResult<Coupon> {
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

/// Serves a [`CouponApi`] over gRPC.
pub struct Server(pub Arc<dyn CouponApi>);

type R<T> = Result<Response<T>, Status>;

fn ok<T>(r: DomainResult<T>) -> R<T> {
    r.map(Response::new).map_err(to_status)
}

#[async_trait]
impl GrpcService for Server {
    async fn create_policy(&self, req: Request<pb::CreatePolicyRequest>) -> R<pb::Policy> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::write_ctx(r.meta)?;
            let p = NewPolicy {
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
            };
            self.0.create_policy(&ctx, p).await.map(policy_pb)
        }
        .await)
    }

    async fn get_policy(&self, req: Request<pb::GetByIdRequest>) -> R<pb::Policy> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::read_ctx(r.actor)?;
            self.0
                .get_policy(&ctx, uuid("id", &r.id)?)
                .await
                .map(policy_pb)
        }
        .await)
    }

    async fn list_policies(&self, req: Request<pb::ListPoliciesRequest>) -> R<pb::PolicyPage> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::read_ctx(r.actor)?;
            let p = self
                .0
                .list_policies(&ctx, proto::from_page_req(r.page)?)
                .await?;
            Ok(pb::PolicyPage {
                page: p.page,
                size: p.size,
                total: p.total,
                items: p.items.into_iter().map(policy_pb).collect(),
            })
        }
        .await)
    }

    async fn update_policy(&self, req: Request<pb::UpdatePolicyRequest>) -> R<pb::Policy> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::write_ctx(r.meta)?;
            let patch = PolicyPatch {
                name: r.name,
                description: r.description,
                total_quantity: r.total_quantity,
                valid_until: opt_ts("valid_until", r.valid_until.as_deref())?,
                active: r.active,
            };
            self.0
                .update_policy(&ctx, uuid("id", &r.id)?, patch)
                .await
                .map(policy_pb)
        }
        .await)
    }

    async fn issue_coupon(&self, req: Request<pb::IssueCouponRequest>) -> R<pb::Coupon> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::write_ctx(r.meta)?;
            self.0
                .issue(
                    &ctx,
                    uuid("policy_id", &r.policy_id)?,
                    uuid("user_id", &r.user_id)?,
                )
                .await
                .map(coupon_pb)
        }
        .await)
    }

    async fn use_coupon(&self, req: Request<pb::UseCouponRequest>) -> R<pb::UseCouponResponse> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::write_ctx(r.meta)?;
            let (c, d) = self
                .0
                .use_coupon(&ctx, uuid("id", &r.coupon_id)?, r.order_id, r.order_amount)
                .await?;
            Ok(pb::UseCouponResponse {
                coupon: Some(coupon_pb(c)),
                discount_amount: d,
            })
        }
        .await)
    }

    async fn cancel_coupon_use(&self, req: Request<pb::CancelCouponUseRequest>) -> R<pb::Coupon> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::write_ctx(r.meta)?;
            self.0
                .cancel_use(&ctx, uuid("id", &r.coupon_id)?)
                .await
                .map(coupon_pb)
        }
        .await)
    }

    async fn get_coupon(&self, req: Request<pb::GetByIdRequest>) -> R<pb::Coupon> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::read_ctx(r.actor)?;
            self.0
                .get_coupon(&ctx, uuid("id", &r.id)?)
                .await
                .map(coupon_pb)
        }
        .await)
    }

    async fn list_coupons(&self, req: Request<pb::ListCouponsRequest>) -> R<pb::CouponPage> {
        let r = req.into_inner();
        ok(async {
            let ctx = proto::read_ctx(r.actor)?;
            let status = r.status.as_deref().map(CouponStatus::parse).transpose()?;
            let p = self
                .0
                .list_coupons(
                    &ctx,
                    uuid("user_id", &r.user_id)?,
                    status,
                    proto::from_page_req(r.page)?,
                )
                .await?;
            Ok(pb::CouponPage {
                page: p.page,
                size: p.size,
                total: p.total,
                items: p.items.into_iter().map(coupon_pb).collect(),
            })
        }
        .await)
    }
}

pub fn server(api: Arc<dyn CouponApi>) -> pb::coupon_service_server::CouponServiceServer<Server> {
    pb::coupon_service_server::CouponServiceServer::new(Server(api))
}

/// [`CouponApi`] over gRPC.
#[derive(Clone)]
pub struct Client {
    inner: CouponServiceClient<Channel>,
    remote: proto::Remote,
}

impl Client {
    pub fn new(channel: Channel, timeout: Duration, breaker: Arc<Breaker>) -> Self {
        Client {
            inner: CouponServiceClient::new(channel),
            remote: proto::Remote::new(timeout, breaker),
        }
    }
}

#[async_trait]
impl CouponApi for Client {
    async fn create_policy(&self, ctx: &Ctx, p: NewPolicy) -> DomainResult<Policy> {
        let msg = pb::CreatePolicyRequest {
            meta: Some(proto::meta(ctx)),
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
        };
        let r = self
            .remote
            .call(self.inner.clone().create_policy(self.remote.req(msg)))
            .await?;
        policy_dom(r)
    }

    async fn get_policy(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Policy> {
        let msg = pb::GetByIdRequest {
            actor: Some(proto::actor(&ctx.principal)),
            id: id.to_string(),
        };
        let r = self
            .remote
            .call(self.inner.clone().get_policy(self.remote.req(msg)))
            .await?;
        policy_dom(r)
    }

    async fn list_policies(&self, ctx: &Ctx, page: PageRequest) -> DomainResult<Page<Policy>> {
        let msg = pb::ListPoliciesRequest {
            actor: Some(proto::actor(&ctx.principal)),
            page: Some(proto::page_req(page)),
        };
        let r = self
            .remote
            .call(self.inner.clone().list_policies(self.remote.req(msg)))
            .await?;
        let items = r
            .items
            .into_iter()
            .map(policy_dom)
            .collect::<DomainResult<_>>()?;
        Ok(proto::page(items, r.page, r.size, r.total))
    }

    async fn update_policy(&self, ctx: &Ctx, id: Uuid, patch: PolicyPatch) -> DomainResult<Policy> {
        let msg = pb::UpdatePolicyRequest {
            meta: Some(proto::meta(ctx)),
            id: id.to_string(),
            name: patch.name,
            description: patch.description,
            total_quantity: patch.total_quantity,
            valid_until: patch.valid_until.map(ts),
            active: patch.active,
        };
        let r = self
            .remote
            .call(self.inner.clone().update_policy(self.remote.req(msg)))
            .await?;
        policy_dom(r)
    }

    async fn issue(&self, ctx: &Ctx, policy_id: Uuid, user_id: Uuid) -> DomainResult<Coupon> {
        let msg = pb::IssueCouponRequest {
            meta: Some(proto::meta(ctx)),
            policy_id: policy_id.to_string(),
            user_id: user_id.to_string(),
        };
        let r = self
            .remote
            .call(self.inner.clone().issue_coupon(self.remote.req(msg)))
            .await?;
        coupon_dom(r)
    }

    async fn use_coupon(
        &self,
        ctx: &Ctx,
        id: Uuid,
        order_id: String,
        order_amount: i64,
    ) -> DomainResult<(Coupon, i64)> {
        let msg = pb::UseCouponRequest {
            meta: Some(proto::meta(ctx)),
            coupon_id: id.to_string(),
            order_id,
            order_amount,
        };
        let r = self
            .remote
            .call(self.inner.clone().use_coupon(self.remote.req(msg)))
            .await?;
        let c = r
            .coupon
            .ok_or_else(|| DomainError::Internal("use response without coupon".into()))?;
        Ok((coupon_dom(c)?, r.discount_amount))
    }

    async fn cancel_use(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Coupon> {
        let msg = pb::CancelCouponUseRequest {
            meta: Some(proto::meta(ctx)),
            coupon_id: id.to_string(),
        };
        let r = self
            .remote
            .call(self.inner.clone().cancel_coupon_use(self.remote.req(msg)))
            .await?;
        coupon_dom(r)
    }

    async fn get_coupon(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Coupon> {
        let msg = pb::GetByIdRequest {
            actor: Some(proto::actor(&ctx.principal)),
            id: id.to_string(),
        };
        let r = self
            .remote
            .call(self.inner.clone().get_coupon(self.remote.req(msg)))
            .await?;
        coupon_dom(r)
    }

    async fn list_coupons(
        &self,
        ctx: &Ctx,
        user_id: Uuid,
        status: Option<CouponStatus>,
        page: PageRequest,
    ) -> DomainResult<Page<Coupon>> {
        let msg = pb::ListCouponsRequest {
            actor: Some(proto::actor(&ctx.principal)),
            user_id: user_id.to_string(),
            status: status.map(|s| s.as_str().to_owned()),
            page: Some(proto::page_req(page)),
        };
        let r = self
            .remote
            .call(self.inner.clone().list_coupons(self.remote.req(msg)))
            .await?;
        let items = r
            .items
            .into_iter()
            .map(coupon_dom)
            .collect::<DomainResult<_>>()?;
        Ok(proto::page(items, r.page, r.size, r.total))
    }
}
