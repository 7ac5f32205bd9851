//! product, sale and order commands.

use super::{page_query, rfc3339, search_query, Body, Ctx};
use crate::cli::{OrderCmd, ProductCmd, SaleCmd};
use crate::error::{CtlError, CtlResult};

const PRODUCT_COLUMNS: &[&str] = &["id", "name", "price", "description", "created_at"];
const SALE_COLUMNS: &[&str] = &[
    "id",
    "product_id",
    "status",
    "total_quantity",
    "remaining_quantity",
    "sale_price",
    "per_user_limit",
    "start_at",
    "end_at",
];
const ORDER_COLUMNS: &[&str] = &[
    "id",
    "time_sale_id",
    "user_id",
    "quantity",
    "unit_price",
    "total_price",
    "status",
    "created_at",
    "expires_at",
];

pub async fn product(ctx: &Ctx, cmd: ProductCmd) -> CtlResult<()> {
    let c = ctx.authed().await?;
    let v = match cmd {
        ProductCmd::Create {
            name,
            description,
            price,
        } => {
            let body = Body::new()
                .set("name", name)
                .opt("description", description)
                .set("price", price);
            c.post("/products", body.into_value()).await?
        }
        ProductCmd::List(p) => c.get("/products", &page_query(&p)).await?,
        ProductCmd::Get { id } => c.get(&format!("/products/{id}"), &[]).await?,
    };
    ctx.print(&v, PRODUCT_COLUMNS);
    Ok(())
}

pub async fn sale(ctx: &Ctx, cmd: SaleCmd) -> CtlResult<()> {
    let c = ctx.authed().await?;
    let v = match cmd {
        SaleCmd::Create {
            product,
            total_quantity,
            sale_price,
            per_user_limit,
            start,
            end,
        } => {
            if end <= start {
                return Err(CtlError::usage("--end must be after --start"));
            }
            let body = Body::new()
                .set("product_id", product.to_string())
                .set("total_quantity", total_quantity)
                .set("sale_price", sale_price)
                .opt("per_user_limit", per_user_limit)
                .set("start_at", rfc3339(start))
                .set("end_at", rfc3339(end));
            c.post("/time-sales", body.into_value()).await?
        }
        SaleCmd::List { status, page } => {
            let mut q = page_query(&page);
            if let Some(s) = status {
                q.push(("status", s.to_uppercase()));
            }
            c.get("/time-sales", &q).await?
        }
        SaleCmd::Get { id } => c.get(&format!("/time-sales/{id}"), &[]).await?,
        SaleCmd::Update { id, end, cancel } => {
            let body = Body::new()
                .opt("end_at", end.map(rfc3339))
                .opt("status", cancel.then_some("CANCELLED"));
            if body.is_empty() {
                return Err(CtlError::usage("nothing to update: pass --end or --cancel"));
            }
            c.patch(&format!("/time-sales/{id}"), body.into_value())
                .await?
        }
    };
    ctx.print(&v, SALE_COLUMNS);
    Ok(())
}

pub async fn order(ctx: &Ctx, cmd: OrderCmd) -> CtlResult<()> {
    let c = ctx.authed().await?;
    let v = match cmd {
        OrderCmd::Create {
            sale,
            quantity,
            hold,
            hold_seconds,
        } => {
            let mut body = serde_json::json!({ "quantity": quantity });
            if hold {
                body["hold"] = true.into();
                body["hold_seconds"] = hold_seconds.into();
            }
            c.post(&format!("/time-sales/{sale}/orders"), body).await?
        }
        OrderCmd::Confirm { id } => {
            c.post(&format!("/orders/{id}/confirm"), serde_json::json!({}))
                .await?
        }
        OrderCmd::Cancel { id } => {
            c.post(&format!("/orders/{id}/cancel"), serde_json::json!({}))
                .await?
        }
        OrderCmd::Get { id } => c.get(&format!("/orders/{id}"), &[]).await?,
        OrderCmd::List {
            status,
            sale,
            user,
            page,
        } => {
            let q = search_query(&page, status, [("time_sale_id", sale), ("user_id", user)]);
            c.get("/orders", &q).await?
        }
    };
    ctx.print(&v, ORDER_COLUMNS);
    Ok(())
}
