//! The input of every service call, whichever transport it came over (REST,
//! gRPC, in process): who acts, and the idempotency key of a write. It sits
//! below both `http` and `idempotency` so neither has to import the other.

use promo_domain::principal::Principal;
use promo_domain::{DomainError, DomainResult};
use serde::{Deserialize, Serialize};

/// Who acts, and the idempotency key of a write.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub principal: Principal,
    pub idem: Option<IdemKey>,
}

/// The context of a read: the caller, no idempotency key.
pub fn read_ctx(p: Principal) -> Ctx {
    Ctx {
        principal: p,
        idem: None,
    }
}

/// A client's key and the hash of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdemKey {
    pub key: String,
    pub request_hash: String,
}

impl IdemKey {
    pub fn parse(key: &str, request_hash: String) -> DomainResult<Self> {
        if key.is_empty() || key.len() > 255 || key.chars().any(|c| c.is_control()) {
            return Err(DomainError::validation(
                "Idempotency-Key",
                "Idempotency-Key must be 1 to 255 printable characters",
            ));
        }
        Ok(IdemKey {
            key: key.to_owned(),
            request_hash,
        })
    }
}
