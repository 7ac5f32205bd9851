//! The storage error: what went wrong below the domain, with its cause kept
//! (`source()`), until it becomes a `DomainError` at the one conversion here.

use promo_domain::DomainError;
use std::error::Error as _;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("postgres")]
    Postgres(#[from] sqlx::Error),
    #[error("redis")]
    Redis(#[from] redis::RedisError),
    /// A value the code does not know (a status string, an enum tag) came
    /// out of the database: an error, never a silent default.
    #[error("unknown {what} {value:?} in the database")]
    Corrupt { what: &'static str, value: String },
    #[error("cannot serialize {what}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// Our own reasoning about the data failed (a row changed under a lock,
    /// a batch kept losing a race): the write is refused, never guessed.
    #[error("{0}")]
    Invariant(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// A stored value this code does not know (written by a newer version,
    /// or by hand).
    pub fn corrupt(what: &'static str, value: &str) -> Self {
        StoreError::Corrupt {
            what,
            value: value.to_owned(),
        }
    }

    /// The error and its causes, `: `-separated, for logs and messages.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cause = self.source();
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }

    /// A dead or slow dependency, as opposed to a fault of ours or the data's.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Postgres(e) => matches!(
                e,
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
            ),
            StoreError::Redis(_) => true,
            StoreError::Corrupt { .. }
            | StoreError::Serialize { .. }
            | StoreError::Invariant(_) => false,
        }
    }

    /// The database's own error (a constraint, a deadlock), if it is one.
    pub fn database(&self) -> Option<&dyn sqlx::error::DatabaseError> {
        match self {
            StoreError::Postgres(sqlx::Error::Database(d)) => Some(&**d),
            _ => None,
        }
    }

    /// A failure that rolled the whole transaction back and may pass when
    /// run again (a deadlock, a serialization failure).
    pub fn is_transient(&self) -> bool {
        self.database()
            .is_some_and(|d| matches!(d.code().as_deref(), Some("40P01") | Some("40001")))
    }
}

/// A dead or slow dependency is 503, never a 500 or a hang.
impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        let chain = e.chain();
        let unavailable = e.is_unavailable();
        // The domain error keeps only a message, so the cause chain is
        // logged here, the last place that has it. An outage fails every
        // request alike, so it is not worth a warning each.
        if unavailable {
            tracing::debug!(error = %chain, "store unavailable");
        } else if !matches!(e, StoreError::Postgres(sqlx::Error::RowNotFound)) {
            tracing::warn!(error = %chain, "store failure");
        }
        match e {
            StoreError::Postgres(sqlx::Error::RowNotFound) => DomainError::NotFound("row".into()),
            StoreError::Postgres(_) if unavailable => {
                DomainError::Unavailable("database unavailable".into())
            }
            StoreError::Postgres(other) => DomainError::Internal(format!("database: {other}")),
            StoreError::Redis(r) => {
                DomainError::Unavailable(format!("redis unavailable: {r}").to_lowercase())
            }
            StoreError::Corrupt { .. }
            | StoreError::Serialize { .. }
            | StoreError::Invariant(_) => DomainError::Internal(chain),
        }
    }
}

/// `value` as JSON for a column; a value that cannot be serialized is an
/// error naming it, never a `null` in the database.
pub fn to_json<T: serde::Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> StoreResult<serde_json::Value> {
    serde_json::to_value(value).map_err(|source| StoreError::Serialize { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_unavailable_and_the_rest_internal() {
        let d = |e: StoreError| DomainError::from(e);
        assert_eq!(
            d(sqlx::Error::PoolTimedOut.into()),
            DomainError::Unavailable("database unavailable".into())
        );
        assert_eq!(
            d(sqlx::Error::RowNotFound.into()),
            DomainError::NotFound("row".into())
        );
        assert!(matches!(
            d(sqlx::Error::Protocol("bad".into()).into()),
            DomainError::Internal(m) if m.contains("bad")
        ));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(matches!(
            d(redis::RedisError::from(io).into()),
            DomainError::Unavailable(m) if m.starts_with("redis unavailable: ")
        ));
        assert!(matches!(
            d(StoreError::Corrupt { what: "sale status", value: "LOST".into() }),
            DomainError::Internal(m) if m.contains("LOST")
        ));
    }

    #[test]
    fn the_chain_keeps_the_cause() {
        let source = serde_json::from_str::<u8>("x").unwrap_err();
        let e = StoreError::Serialize {
            what: "event",
            source,
        };
        let chain = e.chain();
        assert!(chain.starts_with("cannot serialize event: "), "{chain}");
        assert!(chain.len() > "cannot serialize event: ".len());
    }
}
