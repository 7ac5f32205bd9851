//! point commands.

use super::{page_query, Body, Ctx};
use crate::cli::{PointChange, PointCmd};
use crate::error::CtlResult;

const TX_COLUMNS: &[&str] = &[
    "id",
    "user_id",
    "type",
    "amount",
    "balance_after",
    "cancelled_transaction_id",
    "reference",
    "created_at",
];

fn change(body: Body, ch: PointChange) -> Body {
    body.set("amount", ch.amount)
        .opt("reference", ch.reference)
        .opt("description", ch.description)
}

pub async fn point(ctx: &Ctx, cmd: PointCmd) -> CtlResult<()> {
    let c = ctx.authed().await?;
    let v = match cmd {
        PointCmd::Earn { user, change: ch } => {
            let body = change(Body::new().set("user_id", user.to_string()), ch);
            c.post("/points/earn", body.into_value()).await?
        }
        PointCmd::Use { user, change: ch } => {
            let body = change(Body::new().opt("user_id", user.map(|u| u.to_string())), ch);
            c.post("/points/use", body.into_value()).await?
        }
        PointCmd::Cancel { transaction_id } => {
            c.post(
                &format!("/points/transactions/{transaction_id}/cancel"),
                serde_json::json!({}),
            )
            .await?
        }
        PointCmd::Balance { user } => {
            let q: Vec<(&str, String)> = user
                .map(|u| ("user_id", u.to_string()))
                .into_iter()
                .collect();
            c.get("/points/balance", &q).await?
        }
        PointCmd::History { user, kind, page } => {
            let mut q = page_query(&page);
            if let Some(u) = user {
                q.push(("user_id", u.to_string()));
            }
            if let Some(k) = kind {
                q.push(("type", k.to_uppercase()));
            }
            c.get("/points/history", &q).await?
        }
    };
    ctx.print(&v, TX_COLUMNS);
    Ok(())
}
