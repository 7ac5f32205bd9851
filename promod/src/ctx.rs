//! The input of every service call, whichever transport it came over (REST,
//! gRPC, in process): who acts, and the idempotency key of a write. It sits
//! below both `http` and `idempotency` so neither has to import the other.

use futures::future::{BoxFuture, FutureExt, Shared};
use promo_domain::principal::Principal;
use promo_domain::{DomainError, DomainResult};
use serde::{Deserialize, Serialize};
use std::future::Future;

/// Who acts, the idempotency key of a write, and the gate it must pass.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub principal: Principal,
    pub idem: Option<IdemKey>,
    pub gate: Option<Gate>,
}

impl Ctx {
    /// Waits until the call's gate, if it has one, lets it through.
    pub async fn passed(&self) -> DomainResult<()> {
        match &self.gate {
            Some(g) => g.passed().await,
            None => Ok(()),
        }
    }
}

/// The context of a read: the caller, no idempotency key.
pub fn read_ctx(p: Principal) -> Ctx {
    Ctx {
        principal: p,
        idem: None,
        gate: None,
    }
}

/// A check that a route's middleware started (the code guard's, in
/// `code_guard.rs`) and that must pass before the call takes anything or
/// answers. It runs while the service does its reads: a service whose call
/// has a gate awaits [`Ctx::passed`] before its first write, and the
/// middleware awaits it again before the answer leaves.
#[derive(Clone)]
pub struct Gate(Shared<BoxFuture<'static, DomainResult<()>>>);

impl Gate {
    pub fn new(check: impl Future<Output = DomainResult<()>> + Send + 'static) -> Self {
        Gate(check.boxed().shared())
    }

    /// The check's answer, once it has one (each caller gets the same).
    pub async fn passed(&self) -> DomainResult<()> {
        self.0.clone().await
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
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
