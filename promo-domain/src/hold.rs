//! Holds: a reservation made now and resolved once later (confirmed,
//! released, or expired by the clock). The rules every kind of hold shares
//! (an order, a coupon reservation, a point hold); each kind keeps its own
//! statuses. See ARCHITECTURE.md, "Holds".

use crate::{DomainError, DomainResult};
use chrono::{DateTime, Duration, Utc};

/// The longest hold anyone may ask for (API.md: 1..=86400 seconds).
pub const MAX_HOLD_SECONDS: i64 = 86_400;

/// When a hold asked for at `now` expires: `asked` seconds, else the
/// configured default. Out of range is a 400 naming `hold_seconds`.
pub fn expires_at(
    asked: Option<i64>,
    default_seconds: i64,
    now: DateTime<Utc>,
) -> DomainResult<DateTime<Utc>> {
    let secs = asked.unwrap_or(default_seconds);
    if !(1..=MAX_HOLD_SECONDS).contains(&secs) {
        return Err(DomainError::validation(
            "hold_seconds",
            format!("hold_seconds must be between 1 and {MAX_HOLD_SECONDS}"),
        ));
    }
    Ok(now + Duration::seconds(secs))
}

/// Where a hold stands, as far as a caller resolving it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldState {
    Pending,
    /// Expired by the sweeper.
    Expired,
    /// Confirmed, captured, cancelled or voided.
    Resolved,
}

/// Whether a hold may still be resolved by a caller at `now`. A hold past
/// its `expires_at` is `HOLD_EXPIRED` whatever the caller asks (confirm or
/// release), swept or not: from that instant only the sweeper resolves it,
/// so the answer follows the clock, not the race between a late caller and
/// the sweeper. A hold resolved otherwise is `ALREADY_RESOLVED`.
pub fn check_resolvable(
    state: HoldState,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DomainResult<()> {
    match state {
        HoldState::Resolved => Err(DomainError::AlreadyResolved),
        HoldState::Expired => Err(DomainError::HoldExpired),
        HoldState::Pending if now >= expires_at => Err(DomainError::HoldExpired),
        HoldState::Pending => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn the_default_applies_and_the_range_is_enforced() {
        assert_eq!(
            expires_at(None, 900, t0()).unwrap(),
            t0() + Duration::seconds(900)
        );
        assert_eq!(
            expires_at(Some(1), 900, t0()).unwrap(),
            t0() + Duration::seconds(1)
        );
        for bad in [0, -1, MAX_HOLD_SECONDS + 1] {
            let e = expires_at(Some(bad), 900, t0()).unwrap_err();
            assert_eq!(e.field(), Some("hold_seconds"), "{bad}");
        }
    }

    #[test]
    fn a_resolved_hold_is_already_resolved_and_an_expired_one_expired() {
        let (early, later) = (t0() - Duration::seconds(10), t0() + Duration::seconds(10));
        for now in [early, later] {
            assert_eq!(
                check_resolvable(HoldState::Resolved, t0(), now),
                Err(DomainError::AlreadyResolved)
            );
            assert_eq!(
                check_resolvable(HoldState::Expired, t0(), now),
                Err(DomainError::HoldExpired)
            );
        }
    }

    proptest! {
        /// A pending hold is resolvable exactly before its expiry.
        #[test]
        fn pending_is_resolvable_only_before_expiry(secs in 1i64..=MAX_HOLD_SECONDS, at in 0i64..=2 * MAX_HOLD_SECONDS) {
            let expires = expires_at(Some(secs), 900, t0()).unwrap();
            let now = t0() + Duration::seconds(at);
            let r = check_resolvable(HoldState::Pending, expires, now);
            prop_assert_eq!(r.is_ok(), at < secs);
            if at >= secs {
                prop_assert_eq!(r, Err(DomainError::HoldExpired));
            }
        }
    }
}
