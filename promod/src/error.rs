//! The one place where domain errors become HTTP responses and gRPC statuses,
//! and where gRPC statuses become domain errors again.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use promo_domain::DomainError;
use promo_store::StoreError;
use serde::Serialize;
use tonic::metadata::MetadataValue;

/// A domain error on its way out through REST.
#[derive(Debug)]
pub struct ApiError(pub DomainError);

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError(e)
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

pub fn http_status(e: &DomainError) -> StatusCode {
    match e {
        DomainError::Validation { .. } => StatusCode::BAD_REQUEST,
        DomainError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        DomainError::Unauthorized => StatusCode::UNAUTHORIZED,
        DomainError::Forbidden(_) => StatusCode::FORBIDDEN,
        DomainError::NotFound(_) => StatusCode::NOT_FOUND,
        DomainError::SoldOut
        | DomainError::LimitExceeded
        | DomainError::AlreadyUsed
        | DomainError::AlreadyCancelled
        | DomainError::InsufficientBalance
        | DomainError::HoldExpired
        | DomainError::AlreadyResolved
        | DomainError::AlreadyRedeemed
        | DomainError::NotStackable(_)
        | DomainError::IdempotencyMismatch
        | DomainError::Conflict(_) => StatusCode::CONFLICT,
        DomainError::NotActive(_) => StatusCode::UNPROCESSABLE_ENTITY,
        DomainError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        DomainError::Unavailable(_) | DomainError::CircuitOpen(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        DomainError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub fn error_body(e: &DomainError) -> ErrorBody {
    let message = match e {
        // Internal details stay in the logs.
        DomainError::Internal(_) => "internal error".to_owned(),
        other => other.to_string(),
    };
    ErrorBody {
        error: ErrorDetail {
            code: e.code().to_owned(),
            message,
            field: e.field().map(str::to_owned),
        },
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let DomainError::Internal(detail) = &self.0 {
            tracing::error!(error = %detail, "internal error");
        }
        let mut resp = (http_status(&self.0), Json(error_body(&self.0))).into_response();
        // Every 503 says when to come back, whichever layer gave it up (a
        // shedding role behind the gateway, an open circuit, a store down):
        // clients that honour it spread their retries instead of hammering.
        let retry_after = match self.0 {
            DomainError::RateLimited { retry_after_secs } => Some(retry_after_secs),
            DomainError::Unavailable(_) | DomainError::CircuitOpen(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        resp
    }
}

const CODE_KEY: &str = "x-promo-code";
const FIELD_KEY: &str = "x-promo-field";

/// Domain error to gRPC status; the exact code and field ride in metadata so
/// that the client side rebuilds the same error.
pub fn to_status(e: DomainError) -> tonic::Status {
    use tonic::Code;
    let code = match &e {
        DomainError::Validation { .. } | DomainError::TooLarge => Code::InvalidArgument,
        DomainError::Unauthorized => Code::Unauthenticated,
        DomainError::Forbidden(_) => Code::PermissionDenied,
        DomainError::NotFound(_) => Code::NotFound,
        DomainError::NotActive(_) => Code::FailedPrecondition,
        DomainError::RateLimited { .. } => Code::ResourceExhausted,
        DomainError::Unavailable(_) | DomainError::CircuitOpen(_) => Code::Unavailable,
        DomainError::Internal(_) => Code::Internal,
        _ => Code::Aborted,
    };
    let message = match &e {
        DomainError::NotFound(what) => what.clone(),
        other => other.to_string(),
    };
    let mut status = tonic::Status::new(code, message);
    if let Ok(v) = MetadataValue::try_from(e.code()) {
        status.metadata_mut().insert(CODE_KEY, v);
    }
    if let Some(field) = e.field().and_then(|f| MetadataValue::try_from(f).ok()) {
        status.metadata_mut().insert(FIELD_KEY, field);
    }
    status
}

/// gRPC status back to a domain error. Transport failures become `Unavailable`.
pub fn from_status(s: tonic::Status) -> DomainError {
    let meta = s.metadata();
    match meta.get(CODE_KEY).and_then(|v| v.to_str().ok()) {
        Some(code) => {
            let field = meta.get(FIELD_KEY).and_then(|v| v.to_str().ok());
            DomainError::from_parts(code, s.message(), field)
        }
        None => match s.code() {
            tonic::Code::DeadlineExceeded => DomainError::Unavailable("service timed out".into()),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                DomainError::Unavailable(format!("service unavailable: {}", s.message()))
            }
            _ => DomainError::Internal(s.message().to_owned()),
        },
    }
}

/// Storage failures, through `StoreError`'s one mapping (a dead or slow
/// dependency is 503, never a 500 or a hang); a shorthand for `map_err`.
pub fn from_sqlx(e: sqlx::Error) -> DomainError {
    StoreError::from(e).into()
}

pub fn from_redis(e: redis::RedisError) -> DomainError {
    StoreError::from(e).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_round_trip_keeps_code_and_field() {
        for e in [
            DomainError::validation("quantity", "quantity must be > 0"),
            DomainError::SoldOut,
            DomainError::NotActive("sale ended".into()),
            DomainError::NotFound("coupon".into()),
            DomainError::Forbidden("not yours".into()),
        ] {
            let back = from_status(to_status(e.clone()));
            assert_eq!(back, e);
        }
    }

    /// A shedding role behind the gateway answers its gRPC call with
    /// `Unavailable`; the gateway's 503 must still say when to come back.
    #[test]
    fn every_503_carries_retry_after() {
        let shed = from_status(to_status(DomainError::Unavailable("overloaded".into())));
        for e in [shed, DomainError::CircuitOpen("coupon".into())] {
            let resp = ApiError(e).into_response();
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(resp.headers()["retry-after"], "1");
        }
        let refused = ApiError(DomainError::SoldOut).into_response();
        assert!(refused.headers().get("retry-after").is_none());
    }
}
