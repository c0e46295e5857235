//! The rate slice contract on the in-memory store, a real redis-server and a 3-primary Redis
//! Cluster: a slice is granted whole or not at all, per scope; it counts in the minute's window
//! as the requests holding one by one do (each sees the other); the next minute starts from zero.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use switchyard_core::Money;
use switchyard_state::{
    BudgetStore, HoldOutcome, HoldRequest, LimitCheck, LimitKind, MemoryBudgetStore, RateAsk,
    RedisBudgetStore, Scope,
};
use switchyard_testkit::{RedisCluster, RedisServer};

fn ask(scope: Scope, rpm: Option<u64>, tpm: Option<u64>, requests: u64, tokens: u64) -> RateAsk {
    RateAsk {
        scope,
        rpm,
        tpm,
        requests,
        tokens,
    }
}

fn hold(org: &str, id: &str, now_ms: u64, tokens: u64, rpm: u64) -> HoldRequest {
    HoldRequest {
        org: org.into(),
        hold_id: id.into(),
        amount: Money::from_nanos(1),
        scopes: vec![Scope::org()],
        now_ms,
        ttl_ms: 60_000,
        tokens,
        limits: vec![LimitCheck {
            scope: Scope::key("k1"),
            rpm: Some(rpm),
            tpm: None,
            concurrent: None,
        }],
    }
}

async fn contract(s: &dyn BudgetStore, org: &str) {
    // Early in a minute, so the whole test falls in one window and the next.
    let t = (switchyard_core::clock::now_ms() / 60_000) * 60_000 + 1_000;
    let key = || Scope::key("k1");
    let g = s
        .grant_rate(
            org,
            t,
            &[
                ask(key(), Some(10), None, 6, 600),
                ask(Scope::org(), None, Some(1_000), 6, 600),
            ],
        )
        .await
        .unwrap();
    assert!(g[0].granted && g[1].granted, "{g:?}");
    assert_eq!((g[0].requests_left, g[0].tokens_left), (Some(4), None));
    assert_eq!((g[1].requests_left, g[1].tokens_left), (None, Some(400)));
    // 6 more requests do not fit the key's 10: nothing is counted; the org's tokens do.
    let g = s
        .grant_rate(
            org,
            t + 1,
            &[
                ask(key(), Some(10), None, 6, 0),
                ask(Scope::org(), None, Some(1_000), 1, 400),
            ],
        )
        .await
        .unwrap();
    assert!(!g[0].granted && g[1].granted, "{g:?}");
    assert_eq!(g[0].requests_left, Some(4));
    assert_eq!(g[1].tokens_left, Some(0));
    // Requests holding one by one see the slice, and the slices see them.
    for i in 0..4 {
        let h = hold(org, &format!("h{i}"), t + 2, 10, 10);
        assert_eq!(s.hold(&h).await.unwrap(), HoldOutcome::Held);
    }
    match s.hold(&hold(org, "h4", t + 2, 10, 10)).await.unwrap() {
        HoldOutcome::Limited {
            kind, limit, used, ..
        } => {
            assert_eq!((kind, limit, used), (LimitKind::Requests, 10, 10));
        }
        other => panic!("{other:?}"),
    }
    let g = s
        .grant_rate(org, t + 3, &[ask(key(), Some(10), None, 1, 0)])
        .await
        .unwrap();
    assert!(!g[0].granted, "{g:?}");
    // The next minute starts from zero.
    let g = s
        .grant_rate(org, t + 60_000, &[ask(key(), Some(10), None, 10, 0)])
        .await
        .unwrap();
    assert!(g[0].granted, "{g:?}");
    assert_eq!(g[0].requests_left, Some(0));
    // What a router did not use it gives back, within the minute; a give-back for a minute
    // that has ended changes nothing.
    let unused = [ask(key(), None, None, 3, 0)];
    s.return_rate(org, t + 60_001, &unused).await.unwrap();
    s.return_rate(org, t + 2, &unused).await.unwrap();
    let g = s
        .grant_rate(org, t + 60_002, &[ask(key(), Some(10), None, 3, 0)])
        .await
        .unwrap();
    assert!(g[0].granted, "{g:?}");
    assert_eq!(g[0].requests_left, Some(0));
}

#[tokio::test]
async fn the_memory_store_keeps_the_rate_slice_contract() {
    contract(&MemoryBudgetStore::default(), "acme").await;
}

#[tokio::test]
async fn the_redis_store_keeps_the_rate_slice_contract() {
    let redis = RedisServer::start().await.unwrap();
    contract(&RedisBudgetStore::open(&redis.url()).await.unwrap(), "acme").await;
}

#[tokio::test]
async fn the_rate_slice_contract_holds_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3).await.unwrap();
    contract(
        &RedisBudgetStore::open(&cluster.url()).await.unwrap(),
        "acme",
    )
    .await;
}
