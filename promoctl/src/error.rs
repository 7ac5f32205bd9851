//! The one error type of promoctl and its exit codes: 0 ok, 1 refused by the
//! server (or a check found a violation), 2 usage, 3 server or store
//! unreachable, 4 a `load` threshold broken (k6 gives thresholds a code of
//! their own too, so CI tells a slow run from a broken one).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiErrorBody {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

impl fmt::Display for ApiErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)?;
        if let Some(field) = &self.field {
            write!(f, " [field: {field}]")?;
        }
        Ok(())
    }
}

/// The cause of an error, kept for `source()` whatever its type.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The variant decides the exit code; nothing looks at the message.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("refused: {0}")]
    Refused(ApiErrorBody),
    #[error("{0}")]
    Usage(String),
    /// The gateway, a database, Redis or Kafka did not answer. The message
    /// ends with the innermost cause (a refused connection, a timeout), which
    /// is what an operator acts on; the whole chain stays in `source`.
    #[error("unreachable: {what}: {}", root_cause(.source.as_ref()))]
    Unreachable {
        what: String,
        #[source]
        source: Cause,
    },
    #[error("{0} check(s) failed")]
    CheckFailed(usize),
    #[error("{0} threshold(s) broken")]
    ThresholdsBroken(usize),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub const EXIT_OK: u8 = 0;
pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;
pub const EXIT_THRESHOLDS: u8 = 4;

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Refused(_) | CtlError::CheckFailed(_) | CtlError::Other(_) => EXIT_REFUSED,
            CtlError::Usage(_) => EXIT_USAGE,
            CtlError::Unreachable { .. } => EXIT_UNREACHABLE,
            CtlError::ThresholdsBroken(_) => EXIT_THRESHOLDS,
        }
    }

    pub fn usage(msg: impl Into<String>) -> Self {
        CtlError::Usage(msg.into())
    }

    pub fn unreachable(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        CtlError::Unreachable {
            what: what.into(),
            source: source.into(),
        }
    }

    /// Any other failure, with what was being done as its context.
    pub fn other<E>(context: impl fmt::Display + Send + Sync + 'static, source: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        CtlError::Other(anyhow::Error::new(source).context(context))
    }

    /// A PostgreSQL error: a store that is gone is unreachable, anything
    /// else (a bad query, a constraint) is a failure of its own.
    pub fn postgres(what: impl fmt::Display + Send + Sync + 'static, e: sqlx::Error) -> Self {
        if pg_unreachable(&e) {
            CtlError::unreachable(what.to_string(), e)
        } else {
            CtlError::other(what, e)
        }
    }

    pub fn redis(what: impl fmt::Display + Send + Sync + 'static, e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
        {
            CtlError::unreachable(what.to_string(), e)
        } else {
            CtlError::other(what, e)
        }
    }

    /// Adds what was being done to an `Other` failure; the variants that
    /// set the exit code by themselves pass through unchanged.
    pub fn context(self, context: impl fmt::Display + Send + Sync + 'static) -> Self {
        match self {
            CtlError::Other(e) => CtlError::Other(e.context(context)),
            e => e,
        }
    }
}

/// A query failure that means the store is gone, rather than a broken query.
pub fn pg_unreachable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
    )
}

/// The innermost cause, lowercased like the rest of our messages.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string().to_lowercase()
}

pub type CtlResult<T> = Result<T, CtlError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_contract() {
        let refused = CtlError::Refused(ApiErrorBody {
            status: 409,
            code: "SOLD_OUT".into(),
            message: "sold out".into(),
            field: None,
        });
        assert_eq!(refused.exit_code(), 1);
        assert_eq!(CtlError::CheckFailed(2).exit_code(), 1);
        assert_eq!(CtlError::ThresholdsBroken(1).exit_code(), 4);
        assert_eq!(CtlError::usage("bad flag").exit_code(), 2);
        let refused_conn = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(CtlError::unreachable("x", refused_conn).exit_code(), 3);
        assert_eq!(CtlError::Other(anyhow::anyhow!("internal")).exit_code(), 1);
    }

    #[test]
    fn refusals_name_code_message_and_field() {
        let e = CtlError::Refused(ApiErrorBody {
            status: 400,
            code: "VALIDATION_ERROR".into(),
            message: "must be positive".into(),
            field: Some("amount".into()),
        });
        assert_eq!(
            e.to_string(),
            "refused: VALIDATION_ERROR (400): must be positive [field: amount]"
        );
    }

    #[test]
    fn unreachable_names_the_peer_and_keeps_the_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = CtlError::unreachable(
            "redis at redis://h:1",
            anyhow::Error::new(io).context("connect"),
        );
        assert_eq!(
            e.to_string(),
            "unreachable: redis at redis://h:1: connection refused"
        );
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(source.to_string(), "connect");
    }

    #[test]
    fn store_errors_are_classified_by_kind() {
        assert_eq!(
            CtlError::postgres("postgres", sqlx::Error::PoolTimedOut).exit_code(),
            3
        );
        assert_eq!(
            CtlError::postgres("postgres", sqlx::Error::RowNotFound).exit_code(),
            1
        );
        let e = CtlError::other("kafka", std::fmt::Error).context("tail");
        assert_eq!(
            format!("{e:#}"),
            "tail: kafka: an error occurred when formatting an argument"
        );
        assert_eq!(CtlError::usage("x").context("y").exit_code(), 2);
    }
}
