//! Point holds: part of a balance reserved for a checkout, then captured
//! (spent, wholly or in part), voided, or expired by the clock, exactly once.
//! The timing rules every kind of hold shares are in [`crate::hold`]; the
//! arithmetic of what a hold reserves is [`super::Funds`].

use super::{validate_amount, validate_text};
use crate::hold::HoldState;
use crate::{DomainError, DomainResult};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HoldStatus {
    Pending,
    Captured,
    Voided,
    Expired,
}

impl HoldStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            HoldStatus::Pending => "PENDING",
            HoldStatus::Captured => "CAPTURED",
            HoldStatus::Voided => "VOIDED",
            HoldStatus::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> DomainResult<Self> {
        match s {
            "PENDING" => Ok(HoldStatus::Pending),
            "CAPTURED" => Ok(HoldStatus::Captured),
            "VOIDED" => Ok(HoldStatus::Voided),
            "EXPIRED" => Ok(HoldStatus::Expired),
            _ => Err(DomainError::validation(
                "status",
                "status must be PENDING, CAPTURED, VOIDED or EXPIRED",
            )),
        }
    }
}

/// A hold as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointHold {
    pub id: Uuid,
    pub user_id: Uuid,
    /// What the hold reserves (> 0).
    pub amount: i64,
    pub status: HoldStatus,
    pub reference: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// When it was captured, voided or expired.
    pub resolved_at: Option<DateTime<Utc>>,
    /// What a capture spent (1..=amount); the rest was released.
    pub captured_amount: Option<i64>,
    /// The USE transaction a capture wrote.
    pub transaction_id: Option<Uuid>,
}

impl PointHold {
    /// Whether a caller may capture or void it at `now` ([`crate::hold`]).
    pub fn check_resolvable(&self, now: DateTime<Utc>) -> DomainResult<()> {
        let state = match self.status {
            HoldStatus::Pending => HoldState::Pending,
            HoldStatus::Expired => HoldState::Expired,
            _ => HoldState::Resolved,
        };
        crate::hold::check_resolvable(state, self.expires_at, now)
    }

    /// What a capture spends: `asked`, or the whole hold. Anything outside
    /// 1..=amount is a 400 on `amount` (capturing nothing is a void).
    pub fn capture_amount(&self, asked: Option<i64>) -> DomainResult<i64> {
        let amount = asked.unwrap_or(self.amount);
        if !(1..=self.amount).contains(&amount) {
            return Err(DomainError::validation(
                "amount",
                format!("amount must be between 1 and the held {}", self.amount),
            ));
        }
        Ok(amount)
    }
}

/// A request for a hold, as it arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewHold {
    pub user_id: Uuid,
    pub amount: i64,
    pub reference: Option<String>,
    pub hold_seconds: Option<i64>,
}

impl NewHold {
    /// Validates the request and makes the pending hold it asks for at `now`
    /// (`default_seconds` when it names no lifetime).
    pub fn pending(
        self,
        id: Uuid,
        max_amount: i64,
        default_seconds: i64,
        now: DateTime<Utc>,
    ) -> DomainResult<PointHold> {
        validate_amount(self.amount, max_amount)?;
        validate_text("reference", self.reference.as_deref(), 200)?;
        let expires_at = crate::hold::expires_at(self.hold_seconds, default_seconds, now)?;
        Ok(PointHold {
            id,
            user_id: self.user_id,
            amount: self.amount,
            status: HoldStatus::Pending,
            reference: self.reference,
            expires_at,
            created_at: now,
            resolved_at: None,
            captured_amount: None,
            transaction_id: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Funds;
    use super::*;
    use chrono::Duration;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn ask(amount: i64, secs: Option<i64>) -> NewHold {
        NewHold {
            user_id: Uuid::nil(),
            amount,
            reference: None,
            hold_seconds: secs,
        }
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            HoldStatus::Pending,
            HoldStatus::Captured,
            HoldStatus::Voided,
            HoldStatus::Expired,
        ] {
            assert_eq!(HoldStatus::parse(s.as_str()), Ok(s));
        }
        assert_eq!(HoldStatus::parse("x").unwrap_err().field(), Some("status"));
    }

    #[test]
    fn a_new_hold_is_validated_and_pending() {
        let h = ask(50, None).pending(Uuid::nil(), 100, 900, t0()).unwrap();
        assert_eq!(h.status, HoldStatus::Pending);
        assert_eq!(h.expires_at, t0() + Duration::seconds(900));
        for (bad, field) in [
            (ask(0, None), "amount"),
            (ask(101, None), "amount"),
            (ask(5, Some(0)), "hold_seconds"),
            (ask(5, Some(86_401)), "hold_seconds"),
        ] {
            let e = bad.pending(Uuid::nil(), 100, 900, t0()).unwrap_err();
            assert_eq!(e.field(), Some(field));
        }
        let mut long = ask(5, None);
        long.reference = Some("r".repeat(201));
        let e = long.pending(Uuid::nil(), 100, 900, t0()).unwrap_err();
        assert_eq!(e.field(), Some("reference"));
    }

    #[test]
    fn a_capture_takes_one_to_all_of_the_hold() {
        let h = ask(50, None).pending(Uuid::nil(), 100, 900, t0()).unwrap();
        assert_eq!(h.capture_amount(None), Ok(50));
        assert_eq!(h.capture_amount(Some(1)), Ok(1));
        for bad in [0, -1, 51] {
            assert_eq!(
                h.capture_amount(Some(bad)).unwrap_err().field(),
                Some("amount")
            );
        }
    }

    #[test]
    fn only_a_pending_hold_before_its_expiry_resolves() {
        let mut h = ask(50, Some(10))
            .pending(Uuid::nil(), 100, 900, t0())
            .unwrap();
        assert_eq!(h.check_resolvable(t0()), Ok(()));
        let late = t0() + Duration::seconds(10);
        assert_eq!(h.check_resolvable(late), Err(DomainError::HoldExpired));
        h.status = HoldStatus::Voided;
        assert_eq!(h.check_resolvable(t0()), Err(DomainError::AlreadyResolved));
    }

    #[test]
    fn holds_spend_only_what_is_available() {
        let f = Funds {
            balance: 100,
            held: 0,
        };
        let f = f.hold(70).unwrap();
        assert_eq!((f.balance, f.held, f.available()), (100, 70, 30));
        assert_eq!(f.hold(31), Err(DomainError::InsufficientBalance));
        // A use, or cancelling an earn, may not dip into what is held.
        assert_eq!(f.apply(-31), Err(DomainError::InsufficientBalance));
        assert_eq!(f.apply(-30).unwrap().available(), 0);
        // A partial capture spends part and releases the rest.
        let f = f.release(70, 20).unwrap();
        assert_eq!((f.balance, f.held), (80, 0));
        assert!(f.release(1, 0).is_err(), "nothing is held");
    }

    /// An operation on funds, as a sequence a user could cause.
    #[derive(Debug, Clone)]
    enum Op {
        Apply(i64),
        Hold(i64),
        /// Resolves the n-th live hold, spending this share of it (‰).
        Resolve(usize, i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (-80i64..80).prop_map(Op::Apply),
            (1i64..80).prop_map(Op::Hold),
            (0usize..8, 0i64..=1000).prop_map(|(i, p)| Op::Resolve(i, p)),
        ]
    }

    proptest! {
        /// Whatever the order of changes, holds and resolutions: `held` is
        /// the sum of the live holds, available never goes negative, and a
        /// refusal changes nothing.
        #[test]
        fn held_stays_the_sum_of_live_holds_within_the_balance(
            ops in proptest::collection::vec(op(), 0..40),
        ) {
            let mut f = Funds::default();
            let mut live: Vec<i64> = Vec::new();
            for o in ops {
                let before = f;
                let next = match o {
                    Op::Apply(d) => f.apply(d),
                    Op::Hold(a) => f.hold(a).inspect(|_| live.push(a)),
                    Op::Resolve(i, p) if !live.is_empty() => {
                        let held = live.remove(i % live.len());
                        f.release(held, held * p / 1000)
                    }
                    Op::Resolve(..) => continue,
                };
                match next {
                    Ok(n) => f = n,
                    Err(e) => {
                        prop_assert_eq!(e, DomainError::InsufficientBalance);
                        prop_assert_eq!(f, before);
                    }
                }
                prop_assert_eq!(f.held, live.iter().sum::<i64>());
                prop_assert!(f.held >= 0 && f.available() >= 0);
            }
        }
    }
}
