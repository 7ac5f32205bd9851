//! One contract suite for the admission port, run on every implementation.

use promo_store::admission::{
    Admission, AdmissionPort, CounterSeed, MemoryAdmission, RedisAdmission, Release,
};
use std::sync::Arc;
use uuid::Uuid;

async fn redis() -> Arc<dyn AdmissionPort> {
    let conn = promo_store::cache::connect(&super::redis_url())
        .await
        .unwrap();
    Arc::new(RedisAdmission::new(conn))
}

fn memory() -> Arc<dyn AdmissionPort> {
    Arc::new(MemoryAdmission::default())
}

async fn never_oversells(port: Arc<dyn AdmissionPort>) {
    let policy = Uuid::new_v4();
    assert_eq!(
        port.try_reserve(policy, Uuid::new_v4(), 1).await.unwrap(),
        Admission::Uninitialized
    );
    assert!(port
        .seed(
            policy,
            &CounterSeed {
                remaining: 50,
                users: vec![]
            },
            false
        )
        .await
        .unwrap());
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let port = port.clone();
        tasks.push(tokio::spawn(async move {
            port.try_reserve(policy, Uuid::new_v4(), 1).await.unwrap()
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        if let Admission::Admitted { .. } = t.await.unwrap() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 50);
    assert_eq!(port.snapshot(policy).await.unwrap().unwrap().0, 0);
}

async fn per_user_limit_holds(port: Arc<dyn AdmissionPort>) {
    let policy = Uuid::new_v4();
    port.seed(
        policy,
        &CounterSeed {
            remaining: 1000,
            users: vec![],
        },
        false,
    )
    .await
    .unwrap();
    let user = Uuid::new_v4();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let port = port.clone();
        tasks.push(tokio::spawn(async move {
            port.try_reserve(policy, user, 3).await.unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Admission::Admitted { user_seq } => seqs.push(user_seq),
            other => assert_eq!(other, Admission::LimitExceeded),
        }
    }
    seqs.sort();
    assert_eq!(seqs, vec![1, 2, 3]);
}

async fn release_and_seed_rules(port: Arc<dyn AdmissionPort>) {
    let policy = Uuid::new_v4();
    let user = Uuid::new_v4();
    port.seed(
        policy,
        &CounterSeed {
            remaining: 1,
            users: vec![],
        },
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        port.try_reserve(policy, user, 1).await.unwrap(),
        Admission::Admitted { user_seq: 1 }
    );
    assert_eq!(
        port.try_reserve(policy, Uuid::new_v4(), 1).await.unwrap(),
        Admission::SoldOut
    );
    port.release(policy, user, Release::BOTH).await.unwrap();
    assert_eq!(
        port.try_reserve(policy, user, 1).await.unwrap(),
        Admission::Admitted { user_seq: 1 }
    );
    // A live counter is never overwritten without force.
    let stale = CounterSeed {
        remaining: 99,
        users: vec![],
    };
    assert!(!port.seed(policy, &stale, false).await.unwrap());
    assert_eq!(port.snapshot(policy).await.unwrap().unwrap().0, 0);
    assert!(port
        .seed(
            policy,
            &CounterSeed {
                remaining: 5,
                users: vec![(user, 1)]
            },
            true
        )
        .await
        .unwrap());
    let (rem, users) = port.snapshot(policy).await.unwrap().unwrap();
    assert_eq!((rem, users.get(&user).copied()), (5, Some(1)));
    assert_eq!(
        port.try_reserve(policy, user, 1).await.unwrap(),
        Admission::LimitExceeded
    );
    port.adjust_remaining(policy, -5).await.unwrap();
    assert_eq!(
        port.try_reserve(policy, Uuid::new_v4(), 1).await.unwrap(),
        Admission::SoldOut
    );
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
            async fn release_and_seed_follow_the_contract() {
                release_and_seed_rules($make).await;
            }
        }
    };
}

contract!(redis_impl, redis().await);
contract!(memory_impl, memory());
