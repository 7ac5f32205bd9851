use super::*;
use proptest::prelude::*;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

fn lot(n: u128, remaining: i64, expires: Option<i64>, earned: i64) -> Lot {
    Lot {
        id: Uuid::from_u128(n),
        user_id: Uuid::nil(),
        earn_transaction_id: Some(Uuid::from_u128(n)),
        amount: remaining.max(1),
        remaining,
        expires_at: expires.map(t),
        earned_at: t(earned),
    }
}

#[test]
fn a_new_lot_expires_when_asked_in_the_future_or_by_default() {
    let day = Duration::days(1);
    assert_eq!(expiry_of(None, None, t(0)), Ok(None));
    assert_eq!(expiry_of(None, Some(day), t(0)), Ok(Some(t(86_400))));
    assert_eq!(expiry_of(Some(t(1)), Some(day), t(0)), Ok(Some(t(1))));
    for past in [t(0), t(-1)] {
        let e = expiry_of(Some(past), None, t(0)).unwrap_err();
        assert_eq!(e.field(), Some("expires_at"));
    }
}

#[test]
fn spending_takes_the_soonest_expiry_then_the_oldest_earn_and_never_expiring_last() {
    let mut lots = vec![
        lot(1, 10, None, 0),
        lot(2, 10, Some(50), 5),
        lot(3, 10, Some(50), 1),
        lot(4, 10, Some(20), 9),
    ];
    lots.sort_by_key(spend_key);
    let ids: Vec<u128> = lots.iter().map(|l| l.id.as_u128()).collect();
    assert_eq!(ids, [4, 3, 2, 1]);
    let d = draw(&mut lots, 25).unwrap();
    let got: Vec<(u128, i64)> = d.iter().map(|d| (d.lot_id.as_u128(), d.amount)).collect();
    assert_eq!(got, [(4, 10), (3, 10), (2, 5)]);
    assert_eq!(draw(&mut lots, 16).unwrap_err().code(), "INTERNAL");
    assert_eq!(lots[2].remaining, 5, "a failed draw changes nothing");
}

#[test]
fn an_earn_is_revoked_only_while_its_lot_is_untouched() {
    let u = Uuid::nil();
    let mut book = LotBook::new(vec![lot(1, 10, Some(5), 0)]);
    let earn = Uuid::from_u128(9);
    let add = LotOp::Add {
        id: earn,
        expires_at: Some(t(1)),
    };
    book.apply(u, t(0), 7, &add).unwrap();
    // The new lot expires first, so a use draws from it.
    let d = book.apply(u, t(0), 2, &LotOp::Draw).unwrap();
    assert_eq!(
        d,
        [Draw {
            lot_id: earn,
            amount: 2
        }]
    );
    let revoke = LotOp::Revoke(earn);
    assert_eq!(
        book.apply(u, t(0), 7, &revoke),
        Err(DomainError::InsufficientBalance)
    );
    book.apply(u, t(0), 2, &LotOp::Return(d)).unwrap();
    book.apply(u, t(0), 7, &revoke).unwrap();
    let c = book.changes();
    assert_eq!(c.new.len(), 1);
    assert_eq!((c.new[0].id, c.new[0].remaining), (earn, 0));
    assert!(c.updated.is_empty(), "lot 1 never moved");
}

#[test]
fn expiry_leaves_what_holds_reserve() {
    let (u, v) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let due = |id, user, remaining| DueLot {
        id: Uuid::from_u128(id),
        user_id: user,
        remaining,
        expiries: 0,
    };
    let funds = HashMap::from([
        (
            u,
            Funds {
                balance: 30,
                held: 25,
            },
        ),
        (
            v,
            Funds {
                balance: 10,
                held: 10,
            },
        ),
    ]);
    let (out, changed) = expire(&funds, &[due(10, u, 3), due(11, u, 20), due(12, v, 10)]);
    let got: Vec<(u128, i64, i64, i64)> = out
        .iter()
        .map(|e| (e.lot_id.as_u128(), e.amount, e.remaining, e.balance_after))
        .collect();
    assert_eq!(got, [(10, 3, 0, 27), (11, 2, 18, 25)]);
    assert_eq!(
        changed,
        [(
            u,
            Funds {
                balance: 25,
                held: 25
            }
        )]
    );
}

fn lots_strategy() -> impl Strategy<Value = Vec<Lot>> {
    proptest::collection::vec(
        (0i64..20, proptest::option::weighted(0.8, 0i64..5), 0i64..5),
        0..8,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (rem, exp, earned))| lot(i as u128 + 1, rem, exp, earned))
            .collect()
    })
}

proptest! {
    /// A draw sums to the amount, takes no lot below zero, and takes from a
    /// lot only once every lot before it in spend order is empty.
    #[test]
    fn draws_sum_to_the_amount_within_each_lot_in_spend_order(
        lots in lots_strategy(),
        amount in 1i64..100,
    ) {
        let mut sorted = lots.clone();
        sorted.sort_by_key(spend_key);
        let before = sorted.clone();
        let total: i64 = sorted.iter().map(|l| l.remaining).sum();
        match draw(&mut sorted, amount) {
            Err(_) => {
                prop_assert!(total < amount);
                prop_assert_eq!(&sorted, &before);
            }
            Ok(draws) => {
                prop_assert_eq!(draws.iter().map(|d| d.amount).sum::<i64>(), amount);
                for (b, a) in before.iter().zip(&sorted) {
                    let took = draws.iter().find(|d| d.lot_id == b.id).map_or(0, |d| d.amount);
                    prop_assert!(took >= 0 && took <= b.remaining);
                    prop_assert_eq!(a.remaining, b.remaining - took);
                }
                // Only the last lot drawn may keep a remainder.
                for d in &draws[..draws.len() - 1] {
                    let a = sorted.iter().find(|l| l.id == d.lot_id).unwrap();
                    prop_assert_eq!(a.remaining, 0);
                }
                let last = sorted.iter().position(|l| l.id == draws.last().unwrap().lot_id).unwrap();
                prop_assert!(before[..last].iter().zip(&sorted).all(|(_, a)| a.remaining == 0));
            }
        }
    }

    /// Expiry takes each due lot at most once, never more than its
    /// remainder, and never what holds reserve.
    #[test]
    fn expiry_takes_no_more_than_the_lot_nor_the_available(
        lots in lots_strategy(),
        balance in 0i64..100,
        held in 0i64..100,
    ) {
        let u = Uuid::nil();
        let held = held.min(balance);
        let funds = HashMap::from([(u, Funds { balance, held })]);
        let due: Vec<DueLot> = lots.iter().map(|l| DueLot {
            id: l.id, user_id: u, remaining: l.remaining, expiries: 0,
        }).collect();
        let (out, changed) = expire(&funds, &due);
        let taken: i64 = out.iter().map(|e| e.amount).sum();
        prop_assert!(taken <= balance - held);
        for e in &out {
            let l = due.iter().find(|d| d.id == e.lot_id).unwrap();
            prop_assert!(e.amount > 0 && e.amount <= l.remaining);
            prop_assert_eq!(e.remaining, l.remaining - e.amount);
            prop_assert_eq!(e.number, 1);
        }
        let mut ids: Vec<Uuid> = out.iter().map(|e| e.lot_id).collect();
        ids.dedup();
        prop_assert_eq!(ids.len(), out.len());
        let after = changed.first().map_or(balance, |(_, f)| f.balance);
        prop_assert_eq!(after, balance - taken);
    }
}

proptest! {
    /// Earns and uses decided in one batch keep the balance the sum of the
    /// lots' remainders, and each applied use's draws sum to its amount.
    #[test]
    fn a_batch_keeps_each_balance_the_sum_of_its_lots(
        start in lots_strategy(),
        ops in proptest::collection::vec(
            (any::<bool>(), 1i64..30, proptest::option::of(0i64..5)), 0..20),
    ) {
        use crate::point::{decide_batch, BalanceRow, BatchMember, Committed, Decision};
        let u = Uuid::nil();
        let balance: i64 = start.iter().map(|l| l.remaining).sum();
        let committed = Committed::<u8> {
            rows: HashMap::from([(u, BalanceRow { balance, held: 0, version: 1 })]),
            cancelled: Default::default(),
            keys: Default::default(),
            lots: LotBook::new(start.clone()),
        };
        let members: Vec<BatchMember<u8>> = ops.iter().enumerate().map(|(i, (earn, a, exp))| {
            let (delta, lot) = if *earn {
                let id = Uuid::from_u128(1000 + i as u128);
                (*a, LotOp::Add { id, expires_at: exp.map(t) })
            } else {
                (-a, LotOp::Draw)
            };
            BatchMember { user_id: u, delta, cancels: None, key: None, at: t(i as i64), lot }
        }).collect();
        let d = decide_batch(committed, &members);
        let after = d.rows.first().map_or(balance, |r| r.balance);
        let kept: i64 = start.iter().map(|l| {
            d.lots.updated.iter().find(|u| u.id == l.id).map_or(l.remaining, |u| u.remaining)
        }).sum();
        let new: i64 = d.lots.new.iter().map(|l| l.remaining).sum();
        prop_assert_eq!(kept + new, after);
        for ((m, dec), drawn) in members.iter().zip(&d.decisions).zip(&d.draws) {
            let sum: i64 = drawn.iter().map(|d| d.amount).sum();
            let applied_use = m.delta < 0 && matches!(dec, Decision::Applied { .. });
            prop_assert_eq!(sum, if applied_use { -m.delta } else { 0 });
        }
    }
}
