//! Users and tokens in `gateway_db`: argon2id passwords, short-lived access
//! JWTs, and refresh tokens stored hashed that rotate on every use. Reusing a
//! rotated refresh token revokes its whole family.

use crate::error::from_sqlx;
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::Engine;
use chrono::{Duration, Utc};
use promo_domain::principal::Role;
use promo_domain::{DomainError, DomainResult};
use promo_store::auth::JwtKeys;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: String,
    pub expires_in: i64,
}

#[derive(Clone)]
pub struct Users {
    pool: PgPool,
    keys: std::sync::Arc<JwtKeys>,
    refresh_ttl_secs: i64,
}

fn hash_password(password: &str) -> DomainResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| DomainError::Internal(format!("argon2: {e}")))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn validate_email(email: &str) -> DomainResult<String> {
    let e = email.trim();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        })
        && !e.chars().any(char::is_whitespace);
    if !ok {
        return Err(DomainError::validation(
            "email",
            "email must be a valid address",
        ));
    }
    Ok(e.to_owned())
}

pub fn validate_password(p: &str) -> DomainResult<()> {
    if p.chars().count() < 8 || p.len() > 1024 {
        return Err(DomainError::validation(
            "password",
            "password must be 8 to 1024 characters",
        ));
    }
    Ok(())
}

impl Users {
    pub fn new(pool: PgPool, keys: std::sync::Arc<JwtKeys>, refresh_ttl_secs: i64) -> Self {
        Users {
            pool,
            keys,
            refresh_ttl_secs,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn register(
        &self,
        email: &str,
        password: &str,
        name: &str,
        role: Role,
    ) -> DomainResult<UserView> {
        let email = validate_email(email)?;
        validate_password(password)?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(DomainError::validation(
                "name",
                "name must be 1 to 200 characters",
            ));
        }
        let hash = {
            let p = password.to_owned();
            tokio::task::spawn_blocking(move || hash_password(&p))
                .await
                .map_err(|e| DomainError::Internal(e.to_string()))??
        };
        let id = Uuid::now_v7();
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let res = sqlx::query(
            "INSERT INTO users (id, email, password_hash, name, role) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(&email)
        .bind(&hash)
        .bind(name)
        .bind(role.as_str())
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        if res.rows_affected() == 0 {
            return Err(DomainError::Conflict("email is already registered".into()));
        }
        if role == Role::Admin {
            let entry = promo_domain::audit::role_change(id, None, chrono::Utc::now());
            promo_store::audit::insert(&mut tx, &[entry]).await?;
        }
        tx.commit().await.map_err(from_sqlx)?;
        Ok(UserView {
            id,
            email,
            name: name.to_owned(),
            role: role.as_str().to_owned(),
        })
    }

    /// Creates the configured admin if no user has that email yet.
    pub async fn bootstrap_admin(&self, email: &str, password: &str) -> DomainResult<()> {
        match self.register(email, password, "admin", Role::Admin).await {
            Ok(u) => {
                tracing::info!(user_id = %u.id, email = %u.email, "bootstrap admin created");
                Ok(())
            }
            Err(DomainError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn login(&self, email: &str, password: &str) -> DomainResult<TokenPair> {
        let row: Option<(Uuid, String, String)> = sqlx::query_as(
            "SELECT id, password_hash, role FROM users WHERE lower(email) = lower($1)",
        )
        .bind(email.trim())
        .fetch_optional(&self.pool)
        .await
        .map_err(from_sqlx)?;
        let p = password.to_owned();
        let (ok, row) = tokio::task::spawn_blocking(move || match row {
            Some(r) => (verify_password(&p, &r.1), Some(r)),
            None => {
                // Same work for unknown emails, so timing does not reveal them.
                let _ = hash_password(&p);
                (false, None)
            }
        })
        .await
        .map_err(|e| DomainError::Internal(e.to_string()))?;
        let Some((id, _, role)) = row.filter(|_| ok) else {
            return Err(DomainError::Unauthorized);
        };
        let role = Role::parse(&role).unwrap_or(Role::User);
        self.issue_pair(id, role, Uuid::now_v7()).await
    }

    async fn issue_pair(&self, user: Uuid, role: Role, family: Uuid) -> DomainResult<TokenPair> {
        let access = self.keys.issue(user, role)?;
        let mut raw = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut raw);
        let refresh = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        sqlx::query(
            "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(Uuid::now_v7())
        .bind(family)
        .bind(user)
        .bind(token_hash(&refresh))
        .bind(Utc::now() + Duration::seconds(self.refresh_ttl_secs))
        .execute(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(TokenPair {
            access_token: access,
            refresh_token: refresh,
            token_type: "Bearer".into(),
            expires_in: self.keys.access_ttl_secs,
        })
    }

    pub async fn refresh(&self, token: &str) -> DomainResult<TokenPair> {
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let row: Option<(Uuid, Uuid, Uuid, bool, bool, String)> = sqlx::query_as(
            "SELECT t.id, t.family_id, t.user_id, t.rotated_at IS NOT NULL OR t.revoked_at IS NOT NULL,
                    t.expires_at <= now(), u.role
             FROM refresh_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = $1 FOR UPDATE OF t",
        )
        .bind(token_hash(token))
        .fetch_optional(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let Some((id, family, user, spent, expired, role)) = row else {
            return Err(DomainError::Unauthorized);
        };
        if spent {
            // Reuse of a rotated token: someone holds a copy. Revoke the family.
            sqlx::query("UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL")
                .bind(family)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            tx.commit().await.map_err(from_sqlx)?;
            tracing::warn!(user_id = %user, family_id = %family, "refresh token reuse, family revoked");
            return Err(DomainError::Unauthorized);
        }
        if expired {
            return Err(DomainError::Unauthorized);
        }
        sqlx::query("UPDATE refresh_tokens SET rotated_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        self.issue_pair(user, Role::parse(&role).unwrap_or(Role::User), family)
            .await
    }

    pub async fn logout(&self, token: &str) -> DomainResult<()> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = now()
             WHERE family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)
               AND revoked_at IS NULL",
        )
        .bind(token_hash(token))
        .execute(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(())
    }

    pub async fn profile(&self, id: Uuid) -> DomainResult<UserView> {
        let row: Option<(Uuid, String, String, String)> =
            sqlx::query_as("SELECT id, email, name, role FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(from_sqlx)?;
        row.map(|(id, email, name, role)| UserView {
            id,
            email,
            name,
            role,
        })
        .ok_or_else(|| DomainError::NotFound("user".into()))
    }
}
