//! audit list.

use super::{page_query, rfc3339, Ctx};
use crate::cli::AuditCmd;
use crate::error::CtlResult;

/// `before` and `after` show with `-o json` or `-o yaml`.
const AUDIT_COLUMNS: &[&str] = &[
    "at",
    "action",
    "target_type",
    "target_id",
    "actor_id",
    "request_id",
    "id",
];

pub async fn audit(ctx: &Ctx, cmd: AuditCmd) -> CtlResult<()> {
    let AuditCmd::List {
        actor,
        action,
        target,
        since,
        until,
        page,
    } = cmd;
    let mut q = page_query(&page);
    q.extend(actor.map(|a| ("actor_id", a.to_string())));
    q.extend(action.map(|a| ("action", a)));
    q.extend(target.map(|t| ("target_id", t)));
    q.extend(since.map(|t| ("since", rfc3339(t))));
    q.extend(until.map(|t| ("until", rfc3339(t))));
    let v = ctx.authed().await?.get("/audit", &q).await?;
    ctx.print(&v, AUDIT_COLUMNS);
    Ok(())
}
