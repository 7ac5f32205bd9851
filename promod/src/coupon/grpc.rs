//! The coupon role's gRPC server and the client that implements [`CouponApi`]
//! for a gateway in another process.

use super::codes::CsvStream;
use super::CouponApi;
use crate::ctx::Ctx;
use crate::proto::coupon as pb;
use crate::proto::{self, uuid};
use crate::rpc::{call, serve, Remote};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use pb::coupon_service_client::CouponServiceClient;
use pb::coupon_service_server::CouponService as GrpcService;
use promo_domain::code::{Code, CodeBatch, CodeQuery, NewCodes, Redeem};
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

type CsvChunks = futures::stream::BoxStream<'static, Result<pb::CsvChunk, Status>>;

#[async_trait]
impl GrpcService for Server {
    type ExportCodesStream = CsvChunks;

    async fn generate_codes(&self, req: Request<pb::GenerateCodesRequest>) -> R<pb::CodeBatch> {
        serve(req, |ctx, r| async move {
            self.0.generate_codes(&ctx, r.try_into()?).await
        })
        .await
    }

    async fn list_codes(&self, req: Request<pb::ListCodesRequest>) -> R<pb::CodePage> {
        serve(req, |ctx, r| async move {
            self.0.list_codes(&ctx, r.try_into()?).await
        })
        .await
    }

    async fn export_codes(&self, req: Request<pb::ExportCodesRequest>) -> R<CsvChunks> {
        serve(req, |ctx, r| async move {
            let csv = self
                .0
                .export_codes(&ctx, uuid("policy_id", &r.policy_id)?)
                .await?;
            Ok(Chunks(csv))
        })
        .await
    }

    async fn redeem_code(&self, req: Request<pb::RedeemCodeRequest>) -> R<pb::Coupon> {
        serve(req, |ctx, r| async move {
            self.0.redeem(&ctx, r.try_into()?).await
        })
        .await
    }

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

/// An export on the wire: each chunk a message, an error the stream's status.
struct Chunks(CsvStream);

impl From<Chunks> for CsvChunks {
    fn from(c: Chunks) -> Self {
        c.0.map(|r| {
            r.map(|data| pb::CsvChunk {
                data: data.to_vec(),
            })
            .map_err(crate::error::to_status)
        })
        .boxed()
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

    async fn generate_codes(&self, ctx: &Ctx, n: NewCodes) -> DomainResult<CodeBatch> {
        let msg = pb::GenerateCodesRequest {
            meta: proto::meta(ctx),
            ..n.into()
        };
        // A million codes take longer than a call: the REST edge's bulk
        // deadline bounds this one.
        let mut req = self.req(msg);
        req.set_timeout(BULK_CALL_TIMEOUT);
        self.call(self.stub().generate_codes(req)).await
    }

    async fn list_codes(&self, ctx: &Ctx, q: CodeQuery) -> DomainResult<Page<Code>> {
        let msg = pb::ListCodesRequest {
            actor: proto::actor(ctx),
            ..q.into()
        };
        call!(self, list_codes, msg)
    }

    async fn export_codes(&self, ctx: &Ctx, policy_id: Uuid) -> DomainResult<CsvStream> {
        let msg = pb::ExportCodesRequest {
            actor: proto::actor(ctx),
            policy_id: policy_id.to_string(),
        };
        let mut req = self.req(msg);
        req.set_timeout(BULK_CALL_TIMEOUT);
        let stream = self.call_raw(self.stub().export_codes(req)).await?;
        Ok(stream
            .map_ok(|c| bytes::Bytes::from(c.data))
            .map_err(crate::error::from_status)
            .boxed())
    }

    async fn redeem(&self, ctx: &Ctx, r: Redeem) -> DomainResult<Coupon> {
        let msg = pb::RedeemCodeRequest {
            meta: proto::meta(ctx),
            ..r.into()
        };
        call!(self, redeem_code, msg)
    }
}

/// The gRPC deadline of bulk calls (code generation and export), which the
/// REST edge bounds with `gateway.bulk_timeout_ms` anyway.
const BULK_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);
