//! Appending to a database's audit log, for promod's admin writes and
//! promoctl's own (a role change): one statement, in the caller's
//! transaction, so an entry commits exactly with its change.

use crate::error::StoreResult;
use promo_domain::audit::AuditEntry;
use sqlx::PgConnection;

/// Appends `entries`, however many, in one statement.
pub async fn insert(db: &mut PgConnection, entries: &[AuditEntry]) -> StoreResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO audit_log
         SELECT * FROM jsonb_populate_recordset(NULL::audit_log, $1::jsonb)",
    )
    .bind(sqlx::types::Json(entries))
    .execute(db)
    .await?;
    Ok(())
}
