//! login, logout, user create.

use super::{Body, Ctx};
use crate::cli::{LoginArgs, UserCmd};
use crate::config::StoredToken;
use crate::error::{CtlError, CtlResult};
use anyhow::Context;
use std::io::BufRead;

pub async fn login(ctx: &Ctx, a: LoginArgs) -> CtlResult<()> {
    let email = a
        .email
        .or_else(|| ctx.file.email.clone())
        .ok_or_else(|| CtlError::usage("--email is required (or PROMOCTL_EMAIL)"))?;
    let password = match a.password.or_else(|| ctx.file.password.clone()) {
        Some(p) => p,
        None => {
            // Read from stdin so the password stays out of the shell history.
            eprint!("password: ");
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the password from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let client = ctx.client()?;
    ctx.session().login(&client, &email, &password).await?;
    eprintln!(
        "logged in to {} as {email}; token stored in {}",
        ctx.gateway_url,
        StoredToken::path(&ctx.dir).display()
    );
    Ok(())
}

pub async fn logout(ctx: &Ctx) -> CtlResult<()> {
    if let Some(t) = StoredToken::load(&ctx.dir)? {
        // Best effort: the local token goes away even if the server is down.
        if let Ok(c) = ctx.client() {
            let _ = c
                .post(
                    "/auth/logout",
                    serde_json::json!({"refresh_token": t.refresh_token}),
                )
                .await;
        }
    }
    StoredToken::remove(&ctx.dir)?;
    eprintln!("logged out");
    Ok(())
}

pub async fn user(ctx: &Ctx, cmd: UserCmd) -> CtlResult<()> {
    let UserCmd::Create(a) = cmd;
    // Reach gateway_db before registering, so that an unreachable database
    // does not leave a half-made admin behind.
    let admin_db = if a.admin {
        let url = crate::config::pick(
            a.database_url.as_deref(),
            ctx.file.gateway_database_url.as_deref(),
            promo_store::urls::GATEWAY_DATABASE_URL,
        );
        Some((crate::check::connect_pg(&url).await?, url))
    } else {
        None
    };
    let body = Body::new()
        .set("email", a.email.clone())
        .set("password", a.password.clone())
        .set("name", a.name.clone())
        .into_value();
    let mut user = ctx.client()?.post("/auth/register", body).await?;
    if let Some((pool, url)) = admin_db {
        let id = user
            .get("id")
            .and_then(|v| v.as_str())
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .ok_or_else(|| CtlError::Other(anyhow::anyhow!("register answered no user id")))?;
        promote(&pool, &url, id).await?;
        pool.close().await;
        user["role"] = "admin".into();
    }
    ctx.print(&user, &["id", "email", "name", "role"]);
    Ok(())
}

/// The API has no route to make an admin, on purpose; an operator with
/// database access does it here, and the audit log records it (with no
/// actor: the operator is not a user) in the same transaction.
async fn promote(pool: &sqlx::PgPool, url: &str, id: uuid::Uuid) -> CtlResult<()> {
    let what = "cannot promote the user in gateway_db";
    let mut tx = pool.begin().await.context(what)?;
    let done = sqlx::query("UPDATE users SET role = 'admin' WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .context(what)?;
    if done.rows_affected() != 1 {
        return Err(CtlError::Other(anyhow::anyhow!(
            "user {id} is not in the gateway_db at {}; is --database-url the gateway's?",
            promo_store::urls::redact(url)
        )));
    }
    let entry = promo_domain::audit::role_change(id, Some("user"), chrono::Utc::now());
    promo_store::audit::insert(&mut tx, &[entry])
        .await
        .context(what)?;
    tx.commit().await.context(what)?;
    Ok(())
}
