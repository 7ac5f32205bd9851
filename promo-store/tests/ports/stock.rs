//! One contract suite for the stock port, run on every implementation and
//! for every kind of counter (coupon policies and sales share the port).

use chrono::{Duration, Utc};
use promo_store::counters::CounterSeed;
use promo_store::stock::{
    Ask, Claim, Decision, Entry, Journal, Kind, MemoryStock, RedisStock, Release, StockPort, Window,
};
use std::sync::Arc;
use std::time::Duration as Age;
use uuid::Uuid;

async fn redis() -> Arc<dyn StockPort> {
    let conn = promo_store::cache::connect(&super::redis_url())
        .await
        .unwrap();
    Arc::new(RedisStock::new(conn))
}

fn memory() -> Arc<dyn StockPort> {
    Arc::new(MemoryStock::default())
}

fn ask(kind: Kind, id: Uuid, user: Uuid, quantity: i64, limit: i64) -> Ask {
    Ask {
        kind,
        id,
        user,
        quantity,
        per_user_limit: limit,
        window: None,
    }
}

fn windowed(id: Uuid, user: Uuid, quantity: i64, limit: i64) -> Ask {
    let now = Utc::now();
    Ask {
        window: Some(Window {
            start: now - Duration::minutes(1),
            end: now + Duration::minutes(1),
            now,
        }),
        ..ask(Kind::Sale, id, user, quantity, limit)
    }
}

fn stock(n: i64) -> CounterSeed {
    CounterSeed {
        remaining: n,
        users: vec![],
    }
}

async fn never_oversells(port: Arc<dyn StockPort>, kind: Kind) {
    let id = Uuid::new_v4();
    let first = port
        .take(&ask(kind, id, Uuid::new_v4(), 1, 1), Uuid::new_v4(), None)
        .await;
    assert_eq!(first.unwrap(), Decision::Uninitialized);
    assert!(port.seed(kind, id, &stock(50), false).await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..500 {
        let port = port.clone();
        // Mixed quantities: the stock must never go below zero.
        let q = 1 + (i % 3);
        let a = ask(kind, id, Uuid::new_v4(), q, 3);
        tasks.push(tokio::spawn(async move {
            (q, port.take(&a, Uuid::new_v4(), None).await.unwrap())
        }));
    }
    let mut taken = 0;
    for t in tasks {
        match t.await.unwrap() {
            (q, Decision::Taken { remaining, .. }) => {
                assert!(remaining >= 0);
                taken += q;
            }
            (_, other) => assert_eq!(other, Decision::SoldOut),
        }
    }
    let (left, users) = port.snapshot(kind, id).await.unwrap().unwrap();
    assert!(left >= 0);
    assert_eq!(taken + left, 50);
    assert_eq!(users.values().sum::<i64>(), taken);
}

async fn per_user_limit_holds(port: Arc<dyn StockPort>, kind: Kind) {
    let id = Uuid::new_v4();
    port.seed(kind, id, &stock(1000), false).await.unwrap();
    let user = Uuid::new_v4();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let port = port.clone();
        let a = ask(kind, id, user, 1, 3);
        tasks.push(tokio::spawn(async move {
            port.take(&a, Uuid::new_v4(), None).await.unwrap()
        }));
    }
    let mut totals = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Decision::Taken { user_total, .. } => totals.push(user_total),
            other => assert_eq!(other, Decision::LimitExceeded),
        }
    }
    // Each taking learns the user's holding after it: a coupon's user_seq.
    totals.sort();
    assert_eq!(totals, vec![1, 2, 3]);
    assert_eq!(port.remaining(kind, id).await.unwrap(), Some(997));
    // Two more units would cross the limit even though one would not.
    let other = Uuid::new_v4();
    let two = ask(kind, id, other, 2, 3);
    assert!(matches!(
        port.take(&two, Uuid::new_v4(), None).await.unwrap(),
        Decision::Taken { .. }
    ));
    assert_eq!(
        port.take(&two, Uuid::new_v4(), None).await.unwrap(),
        Decision::LimitExceeded
    );
}

async fn window_rules(port: Arc<dyn StockPort>) {
    let id = Uuid::new_v4();
    let user = Uuid::new_v4();
    port.seed(Kind::Sale, id, &stock(5), false).await.unwrap();
    // Outside the window nothing is taken, whatever the stock.
    let mut early = windowed(id, user, 1, 5);
    let w = early.window.as_mut().unwrap();
    w.now = w.start - Duration::milliseconds(1);
    assert_eq!(
        port.take(&early, Uuid::new_v4(), None).await.unwrap(),
        Decision::NotActive
    );
    let mut late = windowed(id, user, 1, 5);
    let w = late.window.as_mut().unwrap();
    w.now = w.end;
    assert_eq!(
        port.take(&late, Uuid::new_v4(), None).await.unwrap(),
        Decision::NotActive
    );
    let mut at_start = windowed(id, user, 1, 5);
    let w = at_start.window.as_mut().unwrap();
    w.now = w.start;
    assert!(matches!(
        port.take(&at_start, Uuid::new_v4(), None).await.unwrap(),
        Decision::Taken {
            remaining: 4,
            user_total: 1
        }
    ));
    assert_eq!(port.remaining(Kind::Sale, id).await.unwrap(), Some(4));
}

async fn release_and_seed_rules(port: Arc<dyn StockPort>, kind: Kind) {
    let id = Uuid::new_v4();
    let user = Uuid::new_v4();
    port.seed(kind, id, &stock(5), false).await.unwrap();
    assert!(matches!(
        port.take(&ask(kind, id, user, 1, 5), Uuid::new_v4(), None)
            .await
            .unwrap(),
        Decision::Taken {
            remaining: 4,
            user_total: 1
        }
    ));
    // More than is left: refused whole, nothing taken.
    let big = ask(kind, id, Uuid::new_v4(), 5, 5);
    assert_eq!(
        port.take(&big, Uuid::new_v4(), None).await.unwrap(),
        Decision::SoldOut
    );
    assert_eq!(port.remaining(kind, id).await.unwrap(), Some(4));
    assert!(matches!(
        port.take(&ask(kind, id, user, 4, 5), Uuid::new_v4(), None)
            .await
            .unwrap(),
        Decision::Taken {
            remaining: 0,
            user_total: 5
        }
    ));
    let one = ask(kind, id, Uuid::new_v4(), 1, 5);
    assert_eq!(
        port.take(&one, Uuid::new_v4(), None).await.unwrap(),
        Decision::SoldOut
    );
    port.release(kind, id, user, 4, Release::BOTH)
        .await
        .unwrap();
    let (left, users) = port.snapshot(kind, id).await.unwrap().unwrap();
    assert_eq!((left, users.get(&user).copied()), (4, Some(1)));
    let user_only = Release {
        stock: false,
        user: true,
    };
    port.release(kind, id, user, 1, user_only).await.unwrap();
    let (left, users) = port.snapshot(kind, id).await.unwrap().unwrap();
    assert_eq!((left, users.get(&user).copied()), (4, None));
    // A live counter is never overwritten without force.
    assert!(!port.seed(kind, id, &stock(99), false).await.unwrap());
    assert_eq!(port.remaining(kind, id).await.unwrap(), Some(4));
    let seed = CounterSeed {
        remaining: 2,
        users: vec![(user, 5)],
    };
    assert!(port.seed(kind, id, &seed, true).await.unwrap());
    let more = ask(kind, id, user, 1, 5);
    assert_eq!(
        port.take(&more, Uuid::new_v4(), None).await.unwrap(),
        Decision::LimitExceeded
    );
    port.adjust(kind, id, -2).await.unwrap();
    assert_eq!(
        port.take(&one, Uuid::new_v4(), None).await.unwrap(),
        Decision::SoldOut
    );
    // A release or an adjustment without a counter leaves it missing for the
    // rebuild to decide.
    let gone = Uuid::new_v4();
    port.release(kind, gone, user, 3, Release::BOTH)
        .await
        .unwrap();
    port.adjust(kind, gone, 3).await.unwrap();
    assert_eq!(port.remaining(kind, gone).await.unwrap(), None);
}

async fn kinds_do_not_share_counters(port: Arc<dyn StockPort>) {
    let id = Uuid::new_v4();
    port.seed(Kind::Coupon, id, &stock(1), false).await.unwrap();
    assert_eq!(port.remaining(Kind::Sale, id).await.unwrap(), None);
    let sale = ask(Kind::Sale, id, Uuid::new_v4(), 1, 1);
    assert_eq!(
        port.take(&sale, Uuid::new_v4(), None).await.unwrap(),
        Decision::Uninitialized
    );
}

async fn journal_of(port: &dyn StockPort, kind: Kind, id: Uuid, older_than: Age) -> Journal {
    let mut js = port.journals(kind, &[id], older_than).await.unwrap();
    assert_eq!(js.len(), 1);
    js.pop().unwrap()
}

/// A taking is journaled with it; settling a stored row only removes the
/// entry; a refused or missing counter journals nothing.
async fn takings_are_journaled(port: Arc<dyn StockPort>, kind: Kind) {
    let id = Uuid::new_v4();
    let user = Uuid::new_v4();
    // A missing counter takes nothing and journals nothing.
    let cold = ask(kind, id, user, 1, 2);
    let took = port.take(&cold, Uuid::new_v4(), None).await.unwrap();
    assert_eq!(took, Decision::Uninitialized);
    assert_eq!(
        journal_of(&*port, kind, id, Age::ZERO).await,
        Journal::default()
    );
    port.seed(kind, id, &stock(3), false).await.unwrap();
    let a = ask(kind, id, user, 2, 2);
    let (stored, lost) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(matches!(
        port.take(&a, stored, None).await.unwrap(),
        Decision::Taken { .. }
    ));
    // Over the limit: refused, not journaled.
    assert_eq!(
        port.take(&a, lost, None).await.unwrap(),
        Decision::LimitExceeded
    );
    let j = journal_of(&*port, kind, id, Age::ZERO).await;
    assert_eq!(j.size, 1);
    assert_eq!(j.overdue, vec![Entry::of(&a, stored)]);
    // Nothing is that old yet.
    let young = journal_of(&*port, kind, id, Age::from_secs(3600)).await;
    assert_eq!((young.size, young.overdue.len()), (1, 0));
    let entry = Entry::of(&a, stored);
    assert!(port.settle(kind, id, &entry, Release::NONE).await.unwrap());
    assert_eq!(
        journal_of(&*port, kind, id, Age::ZERO).await,
        Journal::default()
    );
    // Settled once: a second settle gives nothing back.
    assert!(!port.settle(kind, id, &entry, Release::BOTH).await.unwrap());
    let (left, users) = port.snapshot(kind, id).await.unwrap().unwrap();
    assert_eq!((left, users.get(&user).copied()), (1, Some(2)));
    // A set without a journal reads as empty.
    let none = journal_of(&*port, kind, Uuid::new_v4(), Age::ZERO).await;
    assert_eq!(none, Journal::default());
}

/// Many settlers of one entry (the engine's compensation, reconcilers in
/// several processes): exactly one gives its units back.
async fn settle_gives_back_exactly_once(port: Arc<dyn StockPort>, kind: Kind) {
    let id = Uuid::new_v4();
    port.seed(kind, id, &stock(10), false).await.unwrap();
    let mut entries = Vec::new();
    for _ in 0..20 {
        let a = ask(kind, id, Uuid::new_v4(), 1 + (entries.len() as i64 % 2), 2);
        let reservation = Uuid::new_v4();
        if let Decision::Taken { .. } = port.take(&a, reservation, None).await.unwrap() {
            entries.push(Entry::of(&a, reservation));
        }
    }
    let taken: i64 = entries.iter().map(|e| e.quantity).sum();
    assert_eq!(taken, 10);
    let mut tasks = Vec::new();
    for &entry in &entries {
        for _ in 0..4 {
            let port = port.clone();
            tasks.push(tokio::spawn(async move {
                port.settle(kind, id, &entry, Release::BOTH).await.unwrap()
            }));
        }
    }
    let mut won = 0;
    for t in tasks {
        won += t.await.unwrap() as usize;
    }
    assert_eq!(won, entries.len());
    let (left, users) = port.snapshot(kind, id).await.unwrap().unwrap();
    assert_eq!(left, 10);
    assert!(users.is_empty(), "{users:?}");
    assert_eq!(journal_of(&*port, kind, id, Age::ZERO).await.size, 0);
}

/// A partial settle gives back only what it names; a settle of a forgotten
/// counter set removes the entry and leaves the counter missing.
async fn settle_follows_release(port: Arc<dyn StockPort>, kind: Kind) {
    let id = Uuid::new_v4();
    let user = Uuid::new_v4();
    port.seed(kind, id, &stock(5), false).await.unwrap();
    let a = ask(kind, id, user, 2, 5);
    let r = Uuid::new_v4();
    port.take(&a, r, None).await.unwrap();
    let user_only = Release {
        stock: false,
        user: true,
    };
    assert!(port
        .settle(kind, id, &Entry::of(&a, r), user_only)
        .await
        .unwrap());
    let (left, users) = port.snapshot(kind, id).await.unwrap().unwrap();
    assert_eq!((left, users.get(&user).copied()), (3, None));
    let gone = Uuid::new_v4();
    let orphan = Entry::of(&ask(kind, gone, user, 1, 1), Uuid::new_v4());
    assert!(!port
        .settle(kind, gone, &orphan, Release::BOTH)
        .await
        .unwrap());
    assert_eq!(port.remaining(kind, gone).await.unwrap(), None);
}

/// An installed seed counts every stored row and frees the rest, so it
/// clears the journal with the swap; a kept live counter keeps its journal.
async fn a_rebuild_clears_the_journal(port: Arc<dyn StockPort>, kind: Kind) {
    let id = Uuid::new_v4();
    port.seed(kind, id, &stock(5), false).await.unwrap();
    let a = ask(kind, id, Uuid::new_v4(), 1, 5);
    let r = Uuid::new_v4();
    port.take(&a, r, None).await.unwrap();
    assert!(!port.seed(kind, id, &stock(5), false).await.unwrap());
    assert_eq!(journal_of(&*port, kind, id, Age::ZERO).await.size, 1);
    assert!(port.seed(kind, id, &stock(5), true).await.unwrap());
    assert_eq!(
        journal_of(&*port, kind, id, Age::ZERO).await,
        Journal::default()
    );
    // The entry is gone: settling it now cannot give a unit back twice.
    assert!(!port
        .settle(kind, id, &Entry::of(&a, r), Release::BOTH)
        .await
        .unwrap());
    assert_eq!(port.remaining(kind, id).await.unwrap(), Some(5));
}

/// A stored row's entry is removed off the caller's path (batched): soon
/// gone from the journal, and nothing given back.
async fn stored_settles_remove_only_the_entry(port: Arc<dyn StockPort>, kind: Kind) {
    let id = Uuid::new_v4();
    port.seed(kind, id, &stock(10), false).await.unwrap();
    let mut entries = Vec::new();
    for _ in 0..50 {
        let a = ask(kind, id, Uuid::new_v4(), 1, 1);
        let reservation = Uuid::new_v4();
        if let Decision::Taken { .. } = port.take(&a, reservation, None).await.unwrap() {
            entries.push(Entry::of(&a, reservation));
        }
    }
    assert_eq!(entries.len(), 10);
    for e in &entries[..7] {
        port.settle_stored(kind, id, e);
    }
    let mut size = u64::MAX;
    for _ in 0..100 {
        size = journal_of(&*port, kind, id, Age::ZERO).await.size;
        if size == 3 {
            break;
        }
        tokio::time::sleep(Age::from_millis(20)).await;
    }
    assert_eq!(size, 3, "the seven stored entries are gone, the rest stay");
    let (left, users) = port.snapshot(kind, id).await.unwrap().unwrap();
    assert_eq!((left, users.len()), (0, 10), "nothing given back");
    // Their settle, had the reconciler got there, finds nothing to give back.
    assert!(!port
        .settle(kind, id, &entries[0], Release::BOTH)
        .await
        .unwrap());
    assert!(port
        .settle(kind, id, &entries[9], Release::BOTH)
        .await
        .unwrap());
    assert_eq!(port.remaining(kind, id).await.unwrap(), Some(1));
}

/// A claimed taking refuses another under the same key until released (or
/// its TTL); a refused taking sets no claim; other keys and users are free.
async fn claims_stop_a_second_attempt(port: Arc<dyn StockPort>, kind: Kind) {
    let id = Uuid::new_v4();
    let (user, actor) = (Uuid::new_v4(), Uuid::new_v4());
    port.seed(kind, id, &stock(2), false).await.unwrap();
    let claim = |key| Claim {
        actor,
        key,
        ttl: Age::from_secs(60),
    };
    let a = ask(kind, id, user, 1, 5);
    let k = claim("k");
    let took = |d: Decision| matches!(d, Decision::Taken { .. });
    assert!(took(port.take(&a, Uuid::new_v4(), Some(&k)).await.unwrap()));
    assert_eq!(
        port.take(&a, Uuid::new_v4(), Some(&k)).await.unwrap(),
        Decision::InFlight
    );
    let other = claim("other");
    assert!(took(
        port.take(&a, Uuid::new_v4(), Some(&other)).await.unwrap()
    ));
    // Sold out now: a refusal holds no claim.
    let late = claim("late");
    assert_eq!(
        port.take(&a, Uuid::new_v4(), Some(&late)).await.unwrap(),
        Decision::SoldOut
    );
    port.release(kind, id, user, 1, Release::BOTH)
        .await
        .unwrap();
    assert!(took(
        port.take(&a, Uuid::new_v4(), Some(&late)).await.unwrap()
    ));
    // Released claims free their key (the release is deferred: wait).
    port.release(kind, id, user, 1, Release::BOTH)
        .await
        .unwrap();
    port.release_claim(kind, id, actor, "k");
    let mut d = Decision::InFlight;
    for _ in 0..100 {
        d = port.take(&a, Uuid::new_v4(), Some(&k)).await.unwrap();
        if d != Decision::InFlight {
            break;
        }
        tokio::time::sleep(Age::from_millis(20)).await;
    }
    assert!(took(d), "{d:?}");
    // A short TTL lapses by itself (a holder that crashed).
    port.release(kind, id, user, 1, Release::BOTH)
        .await
        .unwrap();
    let brief = Claim {
        ttl: Age::from_millis(50),
        ..claim("brief")
    };
    assert!(took(
        port.take(&a, Uuid::new_v4(), Some(&brief)).await.unwrap()
    ));
    port.release(kind, id, user, 1, Release::BOTH)
        .await
        .unwrap();
    if port.take(&a, Uuid::new_v4(), Some(&brief)).await.unwrap() == Decision::InFlight {
        tokio::time::sleep(Age::from_millis(120)).await;
        assert!(took(
            port.take(&a, Uuid::new_v4(), Some(&brief)).await.unwrap()
        ));
    }
}

/// Releases journaled before a row ends: settled in one step they give back
/// once each, beside a taking of the same row that stays journaled; a second
/// settle of any gives nothing.
async fn releases_settle_once(port: Arc<dyn StockPort>, kind: Kind) {
    let id = Uuid::new_v4();
    port.seed(kind, id, &stock(10), false).await.unwrap();
    let mut takings = Vec::new();
    for _ in 0..4 {
        let a = ask(kind, id, Uuid::new_v4(), 2, 2);
        let row = Uuid::new_v4();
        assert!(matches!(
            port.take(&a, row, None).await.unwrap(),
            Decision::Taken { .. }
        ));
        takings.push(Entry::of(&a, row));
    }
    let releases: Vec<Entry> = takings
        .iter()
        .map(|t| Entry::release_of(t.reservation, t.user, t.quantity))
        .collect();
    port.journal(kind, id, &releases).await.unwrap();
    let j = journal_of(&*port, kind, id, Age::ZERO).await;
    assert_eq!(j.size, 8);
    assert!(releases.iter().all(|r| j.overdue.contains(r)), "{j:?}");
    let n = port
        .settle_many(kind, id, &releases[..3], Release::BOTH)
        .await
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(
        port.settle_many(kind, id, &releases, Release::BOTH)
            .await
            .unwrap(),
        1
    );
    let (left, users) = port.snapshot(kind, id).await.unwrap().unwrap();
    assert_eq!((left, users.len()), (10, 0));
    // The takings are still journaled, apart from the releases.
    let j = journal_of(&*port, kind, id, Age::ZERO).await;
    assert_eq!(j.size, 4);
    assert!(takings.iter().all(|t| j.overdue.contains(t)), "{j:?}");
}

/// A reconciler drops an entry it judged not owed only if nobody journaled
/// the same member again since it read it.
async fn drops_only_what_stayed_overdue(port: Arc<dyn StockPort>, kind: Kind) {
    let id = Uuid::new_v4();
    port.seed(kind, id, &stock(3), false).await.unwrap();
    let entry = Entry::release_of(Uuid::new_v4(), Uuid::new_v4(), 1);
    port.journal(kind, id, &[entry]).await.unwrap();
    tokio::time::sleep(Age::from_millis(60)).await;
    // Journaled again (a retried release) after the reconciler's read.
    port.journal(kind, id, &[entry]).await.unwrap();
    let dropped = port
        .drop_overdue(kind, id, &entry, Age::from_millis(50))
        .await
        .unwrap();
    assert!(!dropped, "a fresh entry stays");
    assert_eq!(journal_of(&*port, kind, id, Age::ZERO).await.size, 1);
    tokio::time::sleep(Age::from_millis(60)).await;
    assert!(port
        .drop_overdue(kind, id, &entry, Age::from_millis(50))
        .await
        .unwrap());
    assert!(!port
        .drop_overdue(kind, id, &entry, Age::ZERO)
        .await
        .unwrap());
    assert_eq!(
        port.remaining(kind, id).await.unwrap(),
        Some(3),
        "nothing given back"
    );
}

macro_rules! contract {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn never_oversells_under_concurrency() {
                never_oversells($make, Kind::Coupon).await;
                never_oversells($make, Kind::Sale).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn per_user_limit_holds_under_concurrency() {
                per_user_limit_holds($make, Kind::Coupon).await;
                per_user_limit_holds($make, Kind::Sale).await;
            }
            #[tokio::test]
            async fn a_window_refuses_outside_it() {
                window_rules($make).await;
            }
            #[tokio::test]
            async fn release_and_seed_follow_the_contract() {
                release_and_seed_rules($make, Kind::Coupon).await;
                release_and_seed_rules($make, Kind::Sale).await;
            }
            #[tokio::test]
            async fn takings_are_journaled_until_settled() {
                takings_are_journaled($make, Kind::Coupon).await;
                takings_are_journaled($make, Kind::Sale).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_settlers_give_back_exactly_once() {
                settle_gives_back_exactly_once($make, Kind::Coupon).await;
                settle_gives_back_exactly_once($make, Kind::Sale).await;
            }
            #[tokio::test]
            async fn a_settle_gives_back_what_it_names() {
                settle_follows_release($make, Kind::Coupon).await;
                settle_follows_release($make, Kind::Sale).await;
            }
            #[tokio::test]
            async fn an_installed_seed_clears_the_journal() {
                a_rebuild_clears_the_journal($make, Kind::Coupon).await;
                a_rebuild_clears_the_journal($make, Kind::Sale).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn stored_settles_remove_only_the_entry_soon() {
                stored_settles_remove_only_the_entry($make, Kind::Coupon).await;
                stored_settles_remove_only_the_entry($make, Kind::Sale).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_claimed_key_refuses_a_second_attempt() {
                claims_stop_a_second_attempt($make, Kind::Coupon).await;
                claims_stop_a_second_attempt($make, Kind::Sale).await;
            }
            #[tokio::test]
            async fn journaled_releases_settle_once() {
                releases_settle_once($make, Kind::Coupon).await;
                releases_settle_once($make, Kind::Sale).await;
            }
            #[tokio::test]
            async fn an_entry_journaled_again_is_not_dropped() {
                drops_only_what_stayed_overdue($make, Kind::Coupon).await;
                drops_only_what_stayed_overdue($make, Kind::Sale).await;
            }
            #[tokio::test]
            async fn kinds_keep_their_own_counters() {
                kinds_do_not_share_counters($make).await;
            }
        }
    };
}

contract!(redis_impl, redis().await);
contract!(memory_impl, memory());
