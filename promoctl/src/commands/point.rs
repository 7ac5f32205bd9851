//! point commands.

use super::{page_query, rfc3339, Body, Ctx};
use crate::cli::{HoldCmd, PointChange, PointCmd};
use crate::client::Client;
use crate::error::CtlResult;
use serde_json::Value;

const TX_COLUMNS: &[&str] = &[
    "id",
    "user_id",
    "type",
    "amount",
    "balance_after",
    "cancelled_transaction_id",
    "hold_id",
    "reference",
    "created_at",
];

const BALANCE_COLUMNS: &[&str] = &["user_id", "balance", "available", "held", "expiring"];

const LOT_COLUMNS: &[&str] = &[
    "id",
    "amount",
    "remaining",
    "expires_at",
    "earned_at",
    "earn_transaction_id",
];

const HOLD_COLUMNS: &[&str] = &[
    "id",
    "user_id",
    "amount",
    "status",
    "expires_at",
    "captured_amount",
    "transaction_id",
    "reference",
    "created_at",
    "resolved_at",
];

fn change(body: Body, ch: PointChange) -> Body {
    body.set("amount", ch.amount)
        .opt("reference", ch.reference)
        .opt("description", ch.description)
}

pub async fn point(ctx: &Ctx, cmd: PointCmd) -> CtlResult<()> {
    let c = ctx.authed().await?;
    let mut columns = TX_COLUMNS;
    let v = match cmd {
        PointCmd::Earn {
            user,
            change: ch,
            expires_at,
        } => {
            let body = change(Body::new().set("user_id", user.to_string()), ch)
                .opt("expires_at", expires_at.map(rfc3339));
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
            columns = BALANCE_COLUMNS;
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
        PointCmd::Lots { user, page } => {
            let mut q = page_query(&page);
            if let Some(u) = user {
                q.push(("user_id", u.to_string()));
            }
            columns = LOT_COLUMNS;
            c.get("/points/lots", &q).await?
        }
        PointCmd::Hold(cmd) => {
            let (v, is_hold) = hold(&c, cmd).await?;
            if is_hold {
                columns = HOLD_COLUMNS;
            }
            v
        }
    };
    ctx.print(&v, columns);
    Ok(())
}

/// One hold call: its answer, and whether that is a hold (a capture
/// answers with its USE transaction).
async fn hold(c: &Client, cmd: HoldCmd) -> CtlResult<(Value, bool)> {
    let path = |id: uuid::Uuid, verb: &str| format!("/points/holds/{id}/{verb}");
    Ok(match cmd {
        HoldCmd::Create {
            user,
            amount,
            reference,
            hold_seconds,
        } => {
            let body = Body::new()
                .set("amount", amount)
                .opt("reference", reference)
                .opt("hold_seconds", hold_seconds)
                .opt("user_id", user.map(|u| u.to_string()));
            (c.post("/points/holds", body.into_value()).await?, true)
        }
        HoldCmd::Capture { id, amount } => {
            let body = Body::new().opt("amount", amount);
            (
                c.post(&path(id, "capture"), body.into_value()).await?,
                false,
            )
        }
        HoldCmd::Void { id } => (
            c.post(&path(id, "void"), serde_json::json!({})).await?,
            true,
        ),
        HoldCmd::Get { id } => (c.get(&format!("/points/holds/{id}"), &[]).await?, true),
    })
}
