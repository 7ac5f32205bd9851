//! Store urls: the defaults that work with `scripts/services.sh` (promod's
//! config and promoctl's flags both start from them), and redaction for
//! messages.

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const GATEWAY_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/gateway_db";
pub const COUPON_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/coupon_db";
pub const POINT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/point_db";
pub const TIMESALE_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/timesale_db";

/// The url without its password, for messages.
pub fn redact(url: &str) -> String {
    match parse_userinfo(url) {
        Some((before, after)) => format!("{before}***@{after}"),
        None => url.to_owned(),
    }
}

/// Splits `scheme://user:pass@rest` into (`scheme://user:`, `rest`).
fn parse_userinfo(url: &str) -> Option<(&str, &str)> {
    let scheme_end = url.find("://")? + 3;
    let at = url[scheme_end..].find('@')? + scheme_end;
    let colon = url[scheme_end..at].find(':')? + scheme_end;
    Some((&url[..=colon], &url[at + 1..]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
