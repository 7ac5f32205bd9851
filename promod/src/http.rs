//! REST plumbing shared by every role: authentication, extractors that turn
//! bad input into `VALIDATION_ERROR` naming the field, health and metrics routes.

use crate::ctx::{Ctx, IdemKey};
use crate::error::ApiError;
use crate::idempotency::hash_request;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use promo_domain::page::Page;
use promo_domain::principal::Principal;
use promo_domain::DomainError;
use promo_store::auth::JwtKeys;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Verifies the bearer token and stores the principal in the request.
pub async fn require_auth(
    State(keys): State<Arc<JwtKeys>>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match token.map(|t| keys.verify(t.trim())) {
        Some(Ok(p)) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        _ => ApiError(DomainError::Unauthorized).into_response(),
    }
}

/// Admin-only routes: refused before the body is even read, so a user learns
/// nothing from validation errors.
pub async fn require_admin(req: Request, next: Next) -> Response {
    match req.extensions().get::<Principal>() {
        Some(p) if p.is_admin() => next.run(req).await,
        Some(_) => ApiError(DomainError::Forbidden("admin only".into())).into_response(),
        None => ApiError(DomainError::Unauthorized).into_response(),
    }
}

/// The authenticated caller.
pub struct Auth(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .copied()
            .map(Auth)
            .ok_or(ApiError(DomainError::Unauthorized))
    }
}

fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> DomainError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let msg = inner.to_string();
    // The path ends in `?` where the parser failed before it read a key.
    let known = if path == "." {
        ""
    } else {
        path.split('?')
            .next()
            .unwrap_or_default()
            .trim_end_matches('.')
    };
    let field = if !known.is_empty() {
        known.to_owned()
    } else if inner.classify() == serde_json::error::Category::Data {
        // serde names a missing field in its message, not in the path.
        msg.split('`')
            .nth(1)
            .map(str::to_owned)
            .unwrap_or_else(|| "body".into())
    } else {
        "body".into()
    };
    DomainError::validation(field, format!("invalid json: {msg}"))
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DomainError> {
    let bytes = if bytes.is_empty() {
        b"{}".as_slice()
    } else {
        bytes
    };
    // serde would also read a struct from an array of its fields in order;
    // the contract knows only objects.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(DomainError::validation(
            "body",
            "request body must be a json object",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(json_error)?;
    de.end()
        .map_err(|e| DomainError::validation("body", format!("invalid json: {e}")))?;
    if let Some(field) = nul_field(bytes) {
        return Err(DomainError::validation(
            field,
            "text must not contain NUL characters",
        ));
    }
    Ok(value)
}

/// The field holding a string with a NUL character, if any. PostgreSQL text
/// cannot store NUL, so such a value would fail deep in a query; it is
/// refused here, once for every route. JSON can only carry NUL escaped, so
/// bodies without the escape skip the walk.
fn nul_field(bytes: &[u8]) -> Option<String> {
    if !bytes.windows(6).any(|w| w == br"\u0000") {
        return None;
    }
    fn walk(v: &serde_json::Value, path: &str) -> Option<String> {
        let at = |key: &str| {
            if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            }
        };
        match v {
            serde_json::Value::String(s) => s.contains('\0').then(|| path.to_owned()),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, x)| walk(x, &format!("{path}[{i}]"))),
            serde_json::Value::Object(map) => map.iter().find_map(|(k, x)| {
                if k.contains('\0') {
                    Some(at(k))
                } else {
                    walk(x, &at(k))
                }
            }),
            _ => None,
        }
    }
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    walk(&v, "").map(|f| if f.is_empty() { "body".into() } else { f })
}

/// An authenticated write: the caller, the parsed body and the idempotency key
/// (hashed with the method, path and body, so a different request is detected).
pub struct Write<T> {
    pub ctx: Ctx,
    pub body: T,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Write<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let Auth(principal) = Auth::from_request_parts(&mut parts, state).await?;
        let key = parts
            .headers
            .get("idempotency-key")
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| DomainError::validation("Idempotency-Key", "not valid text"))
            })
            .transpose()?;
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    DomainError::TooLarge
                } else {
                    DomainError::validation("body", "cannot read request body")
                }
            })?;
        let body: T = parse_json(&bytes)?;
        let idem = key
            .map(|k| {
                let hash = hash_request(&[
                    parts.method.as_str().as_bytes(),
                    parts.uri.path().as_bytes(),
                    &bytes,
                ]);
                IdemKey::parse(&k, hash)
            })
            .transpose()?;
        Ok(Write {
            ctx: Ctx { principal, idem },
            body,
        })
    }
}

/// A UUID path segment; anything else is `VALIDATION_ERROR` on `id`.
pub struct PathId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| DomainError::validation("id", "missing id"))?;
        Uuid::parse_str(&raw)
            .map(PathId)
            .map_err(|_| ApiError(DomainError::validation("id", "id must be a uuid")))
    }
}

/// Query parameters with errors naming the parameter.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(q));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let field = e.path().to_string();
                ApiError(DomainError::validation(
                    if field == "." { "query".into() } else { field },
                    format!("invalid query: {}", e.into_inner()),
                ))
            })
    }
}

fn form_urlencoded_parse(q: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(q.as_bytes())
}

pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// `/healthz`, `/readyz` and `/metrics` for one role.
pub fn ops_routes(ready: ReadyCheck) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => (StatusCode::OK, Json(serde_json::json!({"status": "ready"}))),
                        Err(e) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            Json(serde_json::json!({"status": "unready", "reason": e})),
                        ),
                    }
                }
            }),
        )
        .route("/metrics", get(crate::metrics::render))
}

/// Responses made by layers rather than handlers (the body limit, the request
/// timeout, axum's own extractor rejections) come as plain text or empty;
/// this gives them the contract's error body.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let err = match resp.status() {
        StatusCode::PAYLOAD_TOO_LARGE => DomainError::TooLarge,
        StatusCode::SERVICE_UNAVAILABLE => DomainError::Unavailable("request timed out".into()),
        _ => return resp,
    };
    ApiError(err).into_response()
}

/// A request's deadline: `gateway.request_timeout_ms`, or
/// `gateway.bulk_timeout_ms` for bulk writes (code generation answers once
/// up to a million codes are committed). Past it the answer is 503, made a
/// JSON error by [`json_errors`]; a detached write still finishes.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub normal: Duration,
    pub bulk: Duration,
}

/// Whether a request is a bulk write: `POST /coupon-policies/{id}/codes`.
fn is_bulk(req: &Request) -> bool {
    let path = req.uri().path();
    req.method() == axum::http::Method::POST
        && path.starts_with("/api/v1/coupon-policies/")
        && path.ends_with("/codes")
}

pub async fn deadline(State(d): State<Deadlines>, req: Request, next: Next) -> Response {
    let limit = if is_bulk(&req) { d.bulk } else { d.normal };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// Fallback for unknown routes, in the contract's error format.
pub async fn not_found() -> ApiError {
    ApiError(DomainError::NotFound("route".into()))
}

/// A body-less write (cancel routes); any JSON object is accepted and ignored.
#[derive(Debug, Deserialize, ToSchema, Default)]
pub struct EmptyBody {}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PageView<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub size: u32,
    pub total: i64,
}

impl<T> PageView<T> {
    pub fn from_page<D>(p: Page<D>, f: impl FnMut(D) -> T) -> Self {
        let p = p.map(f);
        PageView {
            items: p.items,
            page: p.page,
            size: p.size,
            total: p.total,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    pub page: Option<i64>,
    pub size: Option<i64>,
}
