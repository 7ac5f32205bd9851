//! One contract suite for the timesale inventory port, run on every
//! implementation.

use chrono::{Duration, Utc};
use promo_store::inventory::{
    Ask, CounterSeed, InventoryPort, MemoryInventory, RedisInventory, Release, Reservation,
};
use std::sync::Arc;
use uuid::Uuid;

async fn redis() -> Arc<dyn InventoryPort> {
    let conn = promo_store::cache::connect(&super::redis_url())
        .await
        .unwrap();
    Arc::new(RedisInventory::new(conn))
}

fn memory() -> Arc<dyn InventoryPort> {
    Arc::new(MemoryInventory::default())
}

fn ask(sale: Uuid, user: Uuid, quantity: i64, limit: i64) -> Ask {
    let now = Utc::now();
    Ask {
        sale,
        user,
        quantity,
        per_user_limit: limit,
        start_at: now - Duration::minutes(1),
        end_at: now + Duration::minutes(1),
        now,
    }
}

fn stock(n: i64) -> CounterSeed {
    CounterSeed {
        remaining: n,
        users: vec![],
    }
}

async fn never_oversells(port: Arc<dyn InventoryPort>) {
    let sale = Uuid::new_v4();
    assert_eq!(
        port.try_reserve(ask(sale, Uuid::new_v4(), 1, 1))
            .await
            .unwrap(),
        Reservation::Uninitialized
    );
    assert!(port.seed(sale, &stock(50), false).await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..500 {
        let port = port.clone();
        // Mixed quantities: the stock must never go below zero.
        let q = 1 + (i % 3);
        tasks.push(tokio::spawn(async move {
            (
                q,
                port.try_reserve(ask(sale, Uuid::new_v4(), q, 3))
                    .await
                    .unwrap(),
            )
        }));
    }
    let mut taken = 0;
    for t in tasks {
        let (q, r) = t.await.unwrap();
        match r {
            Reservation::Reserved { remaining } => {
                assert!(remaining >= 0);
                taken += q;
            }
            other => assert_eq!(other, Reservation::SoldOut),
        }
    }
    let left = port.remaining(sale).await.unwrap().unwrap();
    assert!(left >= 0);
    assert_eq!(taken + left, 50);
    let (_, users) = port.snapshot(sale).await.unwrap().unwrap();
    assert_eq!(users.values().sum::<i64>(), taken);
}

async fn per_user_limit_holds(port: Arc<dyn InventoryPort>) {
    let sale = Uuid::new_v4();
    port.seed(sale, &stock(1000), false).await.unwrap();
    let user = Uuid::new_v4();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let port = port.clone();
        tasks.push(tokio::spawn(async move {
            port.try_reserve(ask(sale, user, 1, 3)).await.unwrap()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Reservation::Reserved { .. } => ok += 1,
            other => assert_eq!(other, Reservation::LimitExceeded),
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(port.remaining(sale).await.unwrap(), Some(997));
    // Two more units would cross the limit even though one would not.
    let other = Uuid::new_v4();
    assert!(matches!(
        port.try_reserve(ask(sale, other, 2, 3)).await.unwrap(),
        Reservation::Reserved { .. }
    ));
    assert_eq!(
        port.try_reserve(ask(sale, other, 2, 3)).await.unwrap(),
        Reservation::LimitExceeded
    );
}

async fn window_release_and_seed_rules(port: Arc<dyn InventoryPort>) {
    let sale = Uuid::new_v4();
    let user = Uuid::new_v4();
    port.seed(sale, &stock(5), false).await.unwrap();
    // Outside the window nothing is taken, whatever the stock.
    let mut early = ask(sale, user, 1, 5);
    early.now = early.start_at - Duration::milliseconds(1);
    assert_eq!(
        port.try_reserve(early).await.unwrap(),
        Reservation::NotActive
    );
    let mut late = ask(sale, user, 1, 5);
    late.now = late.end_at;
    assert_eq!(
        port.try_reserve(late).await.unwrap(),
        Reservation::NotActive
    );
    let mut at_start = ask(sale, user, 1, 5);
    at_start.now = at_start.start_at;
    assert!(matches!(
        port.try_reserve(at_start).await.unwrap(),
        Reservation::Reserved { remaining: 4 }
    ));
    // More than is left: refused whole, nothing taken.
    assert_eq!(
        port.try_reserve(ask(sale, Uuid::new_v4(), 5, 5))
            .await
            .unwrap(),
        Reservation::SoldOut
    );
    assert_eq!(port.remaining(sale).await.unwrap(), Some(4));
    assert_eq!(
        port.try_reserve(ask(sale, user, 4, 5)).await.unwrap(),
        Reservation::Reserved { remaining: 0 }
    );
    assert_eq!(
        port.try_reserve(ask(sale, Uuid::new_v4(), 1, 5))
            .await
            .unwrap(),
        Reservation::SoldOut
    );
    port.release(sale, user, 4, Release::BOTH).await.unwrap();
    let (left, users) = port.snapshot(sale).await.unwrap().unwrap();
    assert_eq!((left, users.get(&user).copied()), (4, Some(1)));
    port.release(
        sale,
        user,
        1,
        Release {
            stock: false,
            user: true,
        },
    )
    .await
    .unwrap();
    let (left, users) = port.snapshot(sale).await.unwrap().unwrap();
    assert_eq!((left, users.get(&user).copied()), (4, None));
    // A live counter is never overwritten without force.
    assert!(!port.seed(sale, &stock(99), false).await.unwrap());
    assert_eq!(port.remaining(sale).await.unwrap(), Some(4));
    let seed = CounterSeed {
        remaining: 2,
        users: vec![(user, 5)],
    };
    assert!(port.seed(sale, &seed, true).await.unwrap());
    assert_eq!(
        port.try_reserve(ask(sale, user, 1, 5)).await.unwrap(),
        Reservation::LimitExceeded
    );
    assert_eq!(port.remaining(sale).await.unwrap(), Some(2));
    // A release without a counter leaves it missing for the rebuild to decide.
    let gone = Uuid::new_v4();
    port.release(gone, user, 3, Release::BOTH).await.unwrap();
    assert_eq!(port.remaining(gone).await.unwrap(), None);
}

macro_rules! contract {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn never_oversells_under_concurrency() {
                never_oversells($make).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn per_user_limit_holds_under_concurrency() {
                per_user_limit_holds($make).await;
            }
            #[tokio::test]
            async fn window_release_and_seed_follow_the_contract() {
                window_release_and_seed_rules($make).await;
            }
        }
    };
}

contract!(redis_impl, redis().await);
contract!(memory_impl, memory());
