//! The one error type of promoctl and its exit codes: 0 ok, 1 refused by the
//! server (or a check found a violation), 2 usage, 3 server unreachable.

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

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("refused: {0}")]
    Refused(ApiErrorBody),
    #[error("{0}")]
    Usage(String),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("{0} check(s) failed")]
    CheckFailed(usize),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub const EXIT_OK: u8 = 0;
pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Refused(_) | CtlError::CheckFailed(_) | CtlError::Other(_) => EXIT_REFUSED,
            CtlError::Usage(_) => EXIT_USAGE,
            CtlError::Unreachable(_) => EXIT_UNREACHABLE,
        }
    }

    pub fn usage(msg: impl Into<String>) -> Self {
        CtlError::Usage(msg.into())
    }
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
        assert_eq!(CtlError::usage("bad flag").exit_code(), 2);
        assert_eq!(CtlError::Unreachable("x".into()).exit_code(), 3);
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
}
