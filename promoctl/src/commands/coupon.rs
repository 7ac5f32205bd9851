//! policy and coupon commands.

use super::{page_query, rfc3339, search_query, Body, Ctx};
use crate::cli::{CouponCmd, PolicyCmd};
use crate::error::{CtlError, CtlResult};

const POLICY_COLUMNS: &[&str] = &[
    "id",
    "name",
    "discount_type",
    "discount_value",
    "total_quantity",
    "issued_quantity",
    "remaining_quantity",
    "per_user_limit",
    "valid_from",
    "valid_until",
    "active",
    "code_mode",
    "shared_code",
    "stackable",
    "codes_generated",
];

const COUPON_COLUMNS: &[&str] = &[
    "id",
    "code",
    "policy_id",
    "user_id",
    "status",
    "order_id",
    "reserved_order_id",
    "reserved_until",
    "expires_at",
    "issued_at",
];

pub async fn policy(ctx: &Ctx, cmd: PolicyCmd) -> CtlResult<()> {
    let c = ctx.authed().await?;
    let v = match cmd {
        PolicyCmd::Create(a) => {
            let body = Body::new()
                .set("name", a.name)
                .opt("description", a.description)
                .set("discount_type", a.discount_type.api())
                .set("discount_value", a.discount_value)
                .opt("min_order_amount", a.min_order_amount)
                .opt("max_discount_amount", a.max_discount_amount)
                .set("total_quantity", a.total_quantity)
                .opt("per_user_limit", a.per_user_limit)
                .set("valid_from", rfc3339(a.valid_from))
                .set("valid_until", rfc3339(a.valid_until))
                .opt("code_mode", a.code_mode.map(|m| m.api()))
                .opt("shared_code", a.shared_code)
                .opt("stackable", a.stackable.then_some(true));
            c.post("/coupon-policies", body.into_value()).await?
        }
        PolicyCmd::List(p) => c.get("/coupon-policies", &page_query(&p)).await?,
        PolicyCmd::Get { id } => c.get(&format!("/coupon-policies/{id}"), &[]).await?,
        PolicyCmd::Update(a) => {
            let body = Body::new()
                .opt("name", a.name)
                .opt("description", a.description)
                .opt("total_quantity", a.total_quantity)
                .opt("valid_until", a.valid_until.map(rfc3339))
                .opt("active", a.active);
            if body.is_empty() {
                return Err(CtlError::usage(
                    "nothing to update: pass at least one field",
                ));
            }
            c.patch(&format!("/coupon-policies/{}", a.id), body.into_value())
                .await?
        }
    };
    ctx.print(&v, POLICY_COLUMNS);
    Ok(())
}

pub async fn coupon(ctx: &Ctx, cmd: CouponCmd) -> CtlResult<()> {
    let c = ctx.authed().await?;
    let v = match cmd {
        CouponCmd::Issue { policy, user } => {
            let body = Body::new()
                .set("policy_id", policy.to_string())
                .opt("user_id", user.map(|u| u.to_string()));
            c.post("/coupons/issue", body.into_value()).await?
        }
        CouponCmd::Use {
            id,
            order_id,
            order_amount,
        } => {
            let body = Body::new()
                .set("order_id", order_id)
                .set("order_amount", order_amount);
            c.post(&format!("/coupons/{id}/use"), body.into_value())
                .await?
        }
        CouponCmd::Reserve {
            id,
            order_id,
            order_amount,
            hold_seconds,
        } => {
            let body = Body::new()
                .set("order_id", order_id)
                .set("order_amount", order_amount)
                .opt("hold_seconds", hold_seconds);
            c.post(&format!("/coupons/{id}/reserve"), body.into_value())
                .await?
        }
        CouponCmd::Cancel { id } => {
            c.post(&format!("/coupons/{id}/cancel"), serde_json::json!({}))
                .await?
        }
        CouponCmd::Redeem { code, user } => {
            let body = Body::new()
                .set("code", code)
                .opt("user_id", user.map(|u| u.to_string()));
            c.post("/coupons/redeem", body.into_value()).await?
        }
        CouponCmd::Get { id } => c.get(&format!("/coupons/{id}"), &[]).await?,
        CouponCmd::List {
            status,
            policy,
            user,
            page,
        } => {
            let q = search_query(&page, status, [("policy_id", policy), ("user_id", user)]);
            c.get("/coupons", &q).await?
        }
    };
    ctx.print(&v, COUPON_COLUMNS);
    Ok(())
}
