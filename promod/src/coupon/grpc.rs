//! The coupon role's gRPC server and the client that implements [`CouponApi`]
//! for a gateway in another process.

use super::CouponApi;
use crate::ctx::Ctx;
use crate::proto::coupon as pb;
use crate::proto::{self, uuid};
use crate::rpc::{call, serve, Remote};
use async_trait::async_trait;
use pb::coupon_service_client::CouponServiceClient;
use pb::coupon_service_server::CouponService as GrpcService;
use promo_domain::coupon::{
    Coupon, CouponQuery, CouponReserve, CouponUse, NewPolicy, Policy, PolicyPatch,
};
use promo_domain::page::{Page, PageRequest};
use promo_domain::DomainResult;
use std::sync::Arc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// Serves a [`CouponApi`] over gRPC.
pub struct Server(pub Arc<dyn CouponApi>);

type R<T> = Result<Response<T>, Status>;

#[async_trait]
impl GrpcService for Server {
    async fn create_policy(&self, req: Request<pb::CreatePolicyRequest>) -> R<pb::Policy> {
        serve(req, |ctx, r| async move {
            self.0.create_policy(&ctx, r.try_into()?).await
        })
        .await
    }

    async fn get_policy(&self, req: Request<pb::GetByIdRequest>) -> R<pb::Policy> {
        serve(req, |ctx, r| async move {
            self.0.get_policy(&ctx, uuid("id", &r.id)?).await
        })
        .await
    }

    async fn list_policies(&self, req: Request<pb::ListPoliciesRequest>) -> R<pb::PolicyPage> {
        serve(req, |ctx, r| async move {
            let page = proto::from_page_req(r.page)?;
            self.0.list_policies(&ctx, page).await
        })
        .await
    }

    async fn update_policy(&self, req: Request<pb::UpdatePolicyRequest>) -> R<pb::Policy> {
        serve(req, |ctx, mut r| async move {
            let patch = PolicyPatch::try_from(&mut r)?;
            self.0.update_policy(&ctx, uuid("id", &r.id)?, patch).await
        })
        .await
    }

    async fn issue_coupon(&self, req: Request<pb::IssueCouponRequest>) -> R<pb::Coupon> {
        serve(req, |ctx, r| async move {
            let policy_id = uuid("policy_id", &r.policy_id)?;
            self.0
                .issue(&ctx, policy_id, uuid("user_id", &r.user_id)?)
                .await
        })
        .await
    }

    async fn use_coupon(&self, req: Request<pb::UseCouponRequest>) -> R<pb::UseCouponResponse> {
        serve(req, |ctx, r| async move {
            self.0.use_coupon(&ctx, r.try_into()?).await
        })
        .await
    }

    async fn reserve_coupon(
        &self,
        req: Request<pb::ReserveCouponRequest>,
    ) -> R<pb::UseCouponResponse> {
        serve(req, |ctx, r| async move {
            self.0.reserve(&ctx, r.try_into()?).await
        })
        .await
    }

    async fn cancel_coupon_use(&self, req: Request<pb::CancelCouponUseRequest>) -> R<pb::Coupon> {
        serve(req, |ctx, r| async move {
            self.0.cancel_use(&ctx, uuid("id", &r.coupon_id)?).await
        })
        .await
    }

    async fn get_coupon(&self, req: Request<pb::GetByIdRequest>) -> R<pb::Coupon> {
        serve(req, |ctx, r| async move {
            self.0.get_coupon(&ctx, uuid("id", &r.id)?).await
        })
        .await
    }

    async fn list_coupons(&self, req: Request<pb::ListCouponsRequest>) -> R<pb::CouponPage> {
        serve(req, |ctx, r| async move {
            self.0.list_coupons(&ctx, r.try_into()?).await
        })
        .await
    }
}

pub fn server(api: Arc<dyn CouponApi>) -> pb::coupon_service_server::CouponServiceServer<Server> {
    pb::coupon_service_server::CouponServiceServer::new(Server(api))
}

/// [`CouponApi`] over gRPC.
pub type Client = Remote<CouponServiceClient<Channel>>;

/// A read of one thing by id.
fn by_id(ctx: &Ctx, id: Uuid) -> pb::GetByIdRequest {
    pb::GetByIdRequest {
        actor: proto::actor(ctx),
        id: id.to_string(),
    }
}

#[async_trait]
impl CouponApi for Client {
    async fn create_policy(&self, ctx: &Ctx, p: NewPolicy) -> DomainResult<Policy> {
        let msg = pb::CreatePolicyRequest {
            meta: proto::meta(ctx),
            ..p.into()
        };
        call!(self, create_policy, msg)
    }

    async fn get_policy(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Policy> {
        call!(self, get_policy, by_id(ctx, id))
    }

    async fn list_policies(&self, ctx: &Ctx, page: PageRequest) -> DomainResult<Page<Policy>> {
        let msg = pb::ListPoliciesRequest {
            actor: proto::actor(ctx),
            page: proto::page_req(page),
        };
        call!(self, list_policies, msg)
    }

    async fn update_policy(&self, ctx: &Ctx, id: Uuid, patch: PolicyPatch) -> DomainResult<Policy> {
        let msg = pb::UpdatePolicyRequest {
            meta: proto::meta(ctx),
            id: id.to_string(),
            ..patch.into()
        };
        call!(self, update_policy, msg)
    }

    async fn issue(&self, ctx: &Ctx, policy_id: Uuid, user_id: Uuid) -> DomainResult<Coupon> {
        let msg = pb::IssueCouponRequest {
            meta: proto::meta(ctx),
            policy_id: policy_id.to_string(),
            user_id: user_id.to_string(),
        };
        call!(self, issue_coupon, msg)
    }

    async fn use_coupon(&self, ctx: &Ctx, u: CouponUse) -> DomainResult<(Coupon, i64)> {
        let msg = pb::UseCouponRequest {
            meta: proto::meta(ctx),
            ..u.into()
        };
        call!(self, use_coupon, msg)
    }

    async fn reserve(&self, ctx: &Ctx, r: CouponReserve) -> DomainResult<(Coupon, i64)> {
        let msg = pb::ReserveCouponRequest {
            meta: proto::meta(ctx),
            ..r.into()
        };
        call!(self, reserve_coupon, msg)
    }

    async fn cancel_use(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Coupon> {
        let msg = pb::CancelCouponUseRequest {
            meta: proto::meta(ctx),
            coupon_id: id.to_string(),
        };
        call!(self, cancel_coupon_use, msg)
    }

    async fn get_coupon(&self, ctx: &Ctx, id: Uuid) -> DomainResult<Coupon> {
        call!(self, get_coupon, by_id(ctx, id))
    }

    async fn list_coupons(&self, ctx: &Ctx, q: CouponQuery) -> DomainResult<Page<Coupon>> {
        let msg = pb::ListCouponsRequest {
            actor: proto::actor(ctx),
            ..q.into()
        };
        call!(self, list_coupons, msg)
    }
}
