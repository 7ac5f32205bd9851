//! The gateway role: the public REST front door on :4000. It authenticates,
//! then calls the service roles in process or over gRPC (through a circuit
//! breaker per service).

pub mod openapi;
pub mod rate_limit;
pub mod users;

use crate::error::ApiError;
use crate::http::Auth;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use promo_domain::principal::Role;
use serde::Deserialize;
use users::{TokenPair, UserView, Users};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterBody {
    pub email: String,
    pub password: String,
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginBody {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshBody {
    pub refresh_token: String,
}

/// Routes that need no token.
pub fn public_routes(users: Users) -> Router {
    Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
        .with_state(users)
}

pub fn private_routes(users: Users) -> Router {
    Router::new()
        .route("/api/v1/auth/profile", get(profile))
        .with_state(users)
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    crate::http::parse_json(bytes).map_err(ApiError)
}

#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterBody,
    responses((status = 201, body = UserView), (status = 409, body = crate::error::ErrorBody)))]
pub async fn register(
    State(users): State<Users>,
    raw: axum::body::Bytes,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let b: RegisterBody = body(&raw)?;
    let u = users
        .register(&b.email, &b.password, &b.name, Role::User)
        .await?;
    Ok((StatusCode::CREATED, Json(u)))
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginBody,
    responses((status = 200, body = TokenPair), (status = 401, body = crate::error::ErrorBody)))]
pub async fn login(
    State(users): State<Users>,
    raw: axum::body::Bytes,
) -> Result<Json<TokenPair>, ApiError> {
    let b: LoginBody = body(&raw)?;
    Ok(Json(users.login(&b.email, &b.password).await?))
}

#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshBody,
    responses((status = 200, body = TokenPair), (status = 401, body = crate::error::ErrorBody)))]
pub async fn refresh(
    State(users): State<Users>,
    raw: axum::body::Bytes,
) -> Result<Json<TokenPair>, ApiError> {
    let b: RefreshBody = body(&raw)?;
    Ok(Json(users.refresh(&b.refresh_token).await?))
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshBody,
    responses((status = 204)))]
pub async fn logout(
    State(users): State<Users>,
    raw: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let b: RefreshBody = body(&raw)?;
    users.logout(&b.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/auth/profile", tag = "auth",
    responses((status = 200, body = UserView), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn profile(
    State(users): State<Users>,
    Auth(p): Auth,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(users.profile(p.user_id).await?))
}
