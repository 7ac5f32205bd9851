//! The one error type of the domain layer. Transport layers map it to HTTP and
//! gRPC statuses in exactly one place each (`promod::error`).

use thiserror::Error;

pub type DomainResult<T> = Result<T, DomainError>;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    #[error("{message}")]
    Validation { field: String, message: String },
    #[error("request body is too large")]
    TooLarge,
    #[error("authentication required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("sold out")]
    SoldOut,
    #[error("limit per user exceeded")]
    LimitExceeded,
    #[error("already used")]
    AlreadyUsed,
    #[error("already cancelled")]
    AlreadyCancelled,
    #[error("insufficient balance")]
    InsufficientBalance,
    /// A hold's `expires_at` passed before it was confirmed or released.
    #[error("hold expired")]
    HoldExpired,
    /// The hold is no longer pending: confirmed, released or expired already.
    #[error("hold already resolved")]
    AlreadyResolved,
    /// A single-use coupon code was redeemed already.
    #[error("code already redeemed")]
    AlreadyRedeemed,
    /// An order may carry several coupons only if every one is stackable.
    #[error("{0}")]
    NotStackable(String),
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotActive(String),
    #[error("rate limited, retry in {retry_after_secs}s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("circuit open for {0}")]
    CircuitOpen(String),
    #[error("internal error")]
    Internal(String),
}

const SHED_MESSAGE: &str = "server overloaded, retry later";

impl DomainError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The stable error code of the REST contract (API.md).
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::Validation { .. } => "VALIDATION_ERROR",
            DomainError::TooLarge => "PAYLOAD_TOO_LARGE",
            DomainError::Unauthorized => "UNAUTHORIZED",
            DomainError::Forbidden(_) => "FORBIDDEN",
            DomainError::NotFound(_) => "NOT_FOUND",
            DomainError::SoldOut => "SOLD_OUT",
            DomainError::LimitExceeded => "LIMIT_EXCEEDED",
            DomainError::AlreadyUsed => "ALREADY_USED",
            DomainError::AlreadyCancelled => "ALREADY_CANCELLED",
            DomainError::InsufficientBalance => "INSUFFICIENT_BALANCE",
            DomainError::HoldExpired => "HOLD_EXPIRED",
            DomainError::AlreadyResolved => "ALREADY_RESOLVED",
            DomainError::AlreadyRedeemed => "ALREADY_REDEEMED",
            DomainError::NotStackable(_) => "NOT_STACKABLE",
            DomainError::IdempotencyMismatch => "IDEMPOTENCY_MISMATCH",
            DomainError::Conflict(_) => "CONFLICT",
            DomainError::NotActive(_) => "NOT_ACTIVE",
            DomainError::RateLimited { .. } => "RATE_LIMITED",
            DomainError::Unavailable(_) => "UNAVAILABLE",
            DomainError::CircuitOpen(_) => "CIRCUIT_OPEN",
            DomainError::Internal(_) => "INTERNAL",
        }
    }

    /// Rebuilds an error from its wire form (code, message, field), the inverse of
    /// [`DomainError::code`]. Unknown codes become `Internal`.
    pub fn from_parts(code: &str, message: &str, field: Option<&str>) -> Self {
        let m = message.to_string();
        match code {
            "VALIDATION_ERROR" => DomainError::Validation {
                field: field.unwrap_or_default().to_string(),
                message: m,
            },
            "PAYLOAD_TOO_LARGE" => DomainError::TooLarge,
            "UNAUTHORIZED" => DomainError::Unauthorized,
            "FORBIDDEN" => DomainError::Forbidden(m),
            "NOT_FOUND" => DomainError::NotFound(m.trim_end_matches(" not found").to_string()),
            "SOLD_OUT" => DomainError::SoldOut,
            "LIMIT_EXCEEDED" => DomainError::LimitExceeded,
            "ALREADY_USED" => DomainError::AlreadyUsed,
            "ALREADY_CANCELLED" => DomainError::AlreadyCancelled,
            "INSUFFICIENT_BALANCE" => DomainError::InsufficientBalance,
            "HOLD_EXPIRED" => DomainError::HoldExpired,
            "ALREADY_RESOLVED" => DomainError::AlreadyResolved,
            "ALREADY_REDEEMED" => DomainError::AlreadyRedeemed,
            "NOT_STACKABLE" => DomainError::NotStackable(m),
            "IDEMPOTENCY_MISMATCH" => DomainError::IdempotencyMismatch,
            "CONFLICT" => DomainError::Conflict(m),
            "NOT_ACTIVE" => DomainError::NotActive(m),
            "UNAVAILABLE" => DomainError::Unavailable(m),
            "CIRCUIT_OPEN" => DomainError::CircuitOpen(m),
            _ => DomainError::Internal(m),
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            DomainError::Validation { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Whether a keyed request refused with this error keeps it as its stored
    /// answer (API.md, Conventions), so that a replay is refused the same way
    /// even after the stock came back. A request refused before it started
    /// (validation, authentication, size, rate), one still running
    /// (`CONFLICT`), a mismatching key and a fault store nothing.
    pub fn is_stored_answer(&self) -> bool {
        matches!(
            self,
            DomainError::NotFound(_)
                | DomainError::SoldOut
                | DomainError::LimitExceeded
                | DomainError::AlreadyUsed
                | DomainError::AlreadyCancelled
                | DomainError::InsufficientBalance
                | DomainError::HoldExpired
                | DomainError::AlreadyResolved
                | DomainError::AlreadyRedeemed
                | DomainError::NotStackable(_)
                | DomainError::NotActive(_)
        )
    }

    /// A server shedding load: the answer every port gives when its bound on
    /// work in flight is reached. It crosses gRPC unchanged (the message is
    /// the mark), so a caller's circuit breaker can tell a busy role, which
    /// is protecting itself, from a failing one.
    pub fn shed() -> Self {
        DomainError::Unavailable(SHED_MESSAGE.into())
    }

    pub fn is_shed(&self) -> bool {
        matches!(self, DomainError::Unavailable(m) if m == SHED_MESSAGE)
    }

    /// Business refusals are answers, not faults: a circuit breaker must not count them.
    pub fn is_business_refusal(&self) -> bool {
        !matches!(
            self,
            DomainError::Unavailable(_) | DomainError::CircuitOpen(_) | DomainError::Internal(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::DomainError;

    /// A stored refusal is kept as its code and message; replaying it must
    /// give back the same error.
    #[test]
    fn stored_answers_round_trip_through_their_wire_form() {
        let all = [
            DomainError::NotFound("coupon policy".into()),
            DomainError::SoldOut,
            DomainError::LimitExceeded,
            DomainError::AlreadyUsed,
            DomainError::AlreadyCancelled,
            DomainError::InsufficientBalance,
            DomainError::HoldExpired,
            DomainError::AlreadyResolved,
            DomainError::AlreadyRedeemed,
            DomainError::NotStackable("coupon is not stackable".into()),
            DomainError::NotActive("time sale is not active".into()),
        ];
        for e in all {
            assert!(e.is_stored_answer(), "{e:?}");
            assert_eq!(DomainError::from_parts(e.code(), &e.to_string(), None), e);
        }
    }

    #[test]
    fn refusals_before_the_work_and_faults_are_not_stored() {
        let none = [
            DomainError::validation("quantity", "must be positive"),
            DomainError::TooLarge,
            DomainError::Unauthorized,
            DomainError::Forbidden("admin only".into()),
            DomainError::RateLimited {
                retry_after_secs: 1,
            },
            DomainError::Conflict("in flight".into()),
            DomainError::IdempotencyMismatch,
            DomainError::Unavailable("redis".into()),
            DomainError::CircuitOpen("coupon".into()),
            DomainError::Internal("bug".into()),
        ];
        for e in none {
            assert!(!e.is_stored_answer(), "{e:?}");
        }
    }
}
