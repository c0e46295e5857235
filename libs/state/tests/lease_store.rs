//! The budget lease contract on the in-memory store, a real redis-server and a 3-primary Redis
//! Cluster: a grant reserves a slice in every scope (or nothing), requests settle against it, a
//! renewal records what was admitted and gives back, and an expired lease charges only what its
//! router admitted and never settled, giving the rest back; plus four routers racing leases and
//! holds on one budget.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use switchyard_core::Money;
use switchyard_state::{
    BudgetDef, BudgetStore, HoldOutcome, HoldRequest, LeaseGrant, LeaseOutcome, LeaseRenewal,
    LeaseStanding, LeasedReport, LedgerEntry, MemoryBudgetStore, Period, RedisBudgetStore,
    RenewOutcome, Scope, SettleOutcome,
};
use switchyard_testkit::{RedisCluster, RedisServer};

fn usd(cents: i64) -> Money {
    Money::from_nanos(cents * 10_000_000)
}

fn now() -> u64 {
    switchyard_core::clock::now_ms()
}

fn scopes() -> Vec<Scope> {
    vec![Scope::org(), Scope::key("k1"), Scope::workflow("w")]
}

fn grant(org: &str, id: &str, cents: i64, at: u64) -> LeaseGrant {
    LeaseGrant {
        org: org.into(),
        lease_id: format!("lease:{id}"),
        scopes: scopes(),
        amount: usd(cents),
        created_ms: at,
        now_ms: at,
        ttl_ms: 5_000,
        number: GRANTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    }
}

/// Grant numbers: every grant in these tests is a new one.
static GRANTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn renewal(org: &str, id: &str, give: i64, admitted: i64, released: i64, at: u64) -> LeaseRenewal {
    LeaseRenewal {
        org: org.into(),
        lease_id: format!("lease:{id}"),
        scopes: scopes(),
        created_ms: at,
        give_back: usd(give),
        admitted: usd(admitted),
        released: usd(released),
        now_ms: at,
        ttl_ms: 5_000,
        close: false,
    }
}

/// A report under a lease: admitted after `seq`, its router's report number `number` (0: none).
fn numbered(seq: u64, number: u64, entry: LedgerEntry) -> LeasedReport {
    LeasedReport { seq, number, entry }
}

fn served(org: &str, id: &str, max: i64, cost: i64) -> LedgerEntry {
    LedgerEntry {
        request_id: id.into(),
        org: org.into(),
        api_key: "k1".into(),
        workflow: "w".into(),
        cost: usd(cost),
        max_cost: usd(max),
        finished_ms: now(),
        ..Default::default()
    }
}

async fn standing(s: &dyn BudgetStore, org: &str) -> (i64, i64) {
    let b = s.budgets(org, now()).await.unwrap();
    let v = b.iter().find(|v| v.scope == Scope::org()).unwrap();
    (v.spent.nanos() / 10_000_000, v.held.nanos() / 10_000_000)
}

async fn day_budget(s: &dyn BudgetStore, org: &str, cents: i64) {
    let def = BudgetDef {
        limit: usd(cents),
        hard: true,
        thresholds: vec![],
    };
    s.set_budget(org, &Scope::org(), Period::Day, &def)
        .await
        .unwrap();
}

async fn contract(s: &dyn BudgetStore, org: &str) {
    let t = now();
    day_budget(s, org, 100).await;
    // A slice of 30: held in the org (and the key and workflow scopes), 70 left.
    let first = grant(org, "a", 30, t);
    let granted = LeaseOutcome::Granted(LeaseStanding {
        amount: usd(30),
        headroom: Some(usd(70)),
    });
    assert_eq!(s.grant_lease(&first).await.unwrap(), granted);
    // Its answer lost, the router asks again with the same number: applied once, same answer.
    assert_eq!(s.grant_lease(&first).await.unwrap(), granted);
    assert_eq!(standing(s, org).await, (0, 30));
    // 80 more does not fit: nothing changes, and the answer says what is left.
    match s.grant_lease(&grant(org, "a", 80, t)).await.unwrap() {
        LeaseOutcome::Denied { headroom, .. } => assert_eq!(headroom, usd(70)),
        other => panic!("{other:?}"),
    }
    // A per-request hold sees the lease as held.
    let hold = HoldRequest {
        org: org.into(),
        hold_id: "h1".into(),
        amount: usd(71),
        scopes: vec![Scope::org()],
        now_ms: t,
        ttl_ms: 60_000,
        tokens: 0,
        limits: vec![],
    };
    assert!(matches!(
        s.hold(&hold).await.unwrap(),
        HoldOutcome::Denied { .. }
    ));
    // r1 (max 10, cost 4) settles before any renewal recorded it.
    let r1 = s
        .settle_leased(org, "lease:a", &numbered(0, 1, served(org, "r1", 10, 4)))
        .await
        .unwrap();
    assert!(matches!(r1, SettleOutcome::Done(Some(_))), "{r1:?}");
    assert_eq!(
        s.settle_leased(org, "lease:a", &numbered(0, 1, served(org, "r1", 10, 4)))
            .await
            .unwrap(),
        SettleOutcome::Duplicate("reported".into())
    );
    assert_eq!(standing(s, org).await, (4, 20));
    // The router admitted r1, r2 (10 each) and r3 (5, released); it gives 2 back.
    match s
        .renew_lease(&renewal(org, "a", 2, 25, 5, t))
        .await
        .unwrap()
    {
        RenewOutcome::Renewed(st) => {
            assert_eq!(st.amount, usd(18));
            assert_eq!(st.headroom, Some(usd(100 - 4 - 18)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(standing(s, org).await, (4, 18));
    // r2 settles after the renewal. r4 (max 3) was admitted after it and is never reported.
    s.settle_leased(org, "lease:a", &numbered(10, 2, served(org, "r2", 10, 10)))
        .await
        .unwrap();
    assert_eq!(standing(s, org).await, (14, 8));
    // Not expired yet.
    assert!(s.expired_leases(t, 10).await.unwrap().is_empty());
    assert_eq!(s.expire_lease(org, "lease:a", t).await.unwrap(), None);
    // After its TTL: r1 and r2 were settled, r3 released, so nothing is charged; the 8 left
    // go back.
    let later = t + 5_001;
    assert!(
        s.expired_leases(later, 10)
            .await
            .unwrap()
            .contains(&(org.to_string(), "lease:a".to_string()))
    );
    assert_eq!(
        s.expire_lease(org, "lease:a", later).await.unwrap(),
        Some(Money::ZERO)
    );
    assert_eq!(standing(s, org).await, (14, 0));
    assert_eq!(s.expire_lease(org, "lease:a", later).await.unwrap(), None);
    assert_eq!(
        s.grant_lease(&grant(org, "a", 1, t)).await.unwrap(),
        LeaseOutcome::Gone
    );

    // A second lease whose router dies with requests in flight: 12 admitted by the last
    // renewal (one of 5 settled), so 7 are charged at their maximum cost; the rest returns.
    s.grant_lease(&grant(org, "b", 20, t)).await.unwrap();
    s.renew_lease(&renewal(org, "b", 0, 12, 0, t))
        .await
        .unwrap();
    s.settle_leased(org, "lease:b", &numbered(0, 1, served(org, "r5", 5, 2)))
        .await
        .unwrap();
    assert_eq!(standing(s, org).await, (16, 15));
    assert_eq!(
        s.expire_lease(org, "lease:b", later).await.unwrap(),
        Some(usd(7))
    );
    assert_eq!(standing(s, org).await, (23, 0));
    let ledger = s.ledger(org, "", 100).await.unwrap();
    let last = &ledger.last().unwrap().1;
    assert!(last.unreconciled, "{last:?}");
    assert_eq!(last.cost, usd(7));
    assert_eq!(last.hold_id, "lease:b");
    // A late report of a settled-by-expiry lease is still charged (never under-charged).
    s.settle_leased(org, "lease:b", &numbered(5, 2, served(org, "r6", 7, 3)))
        .await
        .unwrap();
    assert_eq!(standing(s, org).await, (26, 0));
    // An unknown lease is Unknown (billing then charges the report).
    assert_eq!(
        s.settle_leased(org, "lease:nope", &numbered(0, 1, served(org, "r7", 1, 1)))
            .await
            .unwrap(),
        SettleOutcome::Unknown
    );

    // Closing: everything given back and nothing outstanding.
    s.grant_lease(&grant(org, "c", 10, t)).await.unwrap();
    let mut close = renewal(org, "c", 10, 0, 0, t);
    close.close = true;
    assert_eq!(s.renew_lease(&close).await.unwrap(), RenewOutcome::Closed);
    assert_eq!(standing(s, org).await, (26, 0));
    assert_eq!(
        s.renew_lease(&renewal(org, "c", 0, 0, 0, t)).await.unwrap(),
        RenewOutcome::Gone
    );
}

#[tokio::test]
async fn the_memory_store_keeps_the_lease_contract() {
    contract(&MemoryBudgetStore::default(), "acme").await;
}

#[tokio::test]
async fn the_redis_store_keeps_the_lease_contract() {
    let redis = RedisServer::start().await.unwrap();
    contract(&RedisBudgetStore::open(&redis.url()).await.unwrap(), "acme").await;
}

#[tokio::test]
async fn the_lease_contract_holds_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3).await.unwrap();
    contract(
        &RedisBudgetStore::open(&cluster.url()).await.unwrap(),
        "acme",
    )
    .await;
}

/// Four connections grant slices of 7 and hold requests of 3 against a budget of 1000 at once:
/// never more reserved than the limit. Each grant is of its own lease: a router asks one lease's
/// grants one after another (a lower number than the lease's last is the answer to a retry).
#[tokio::test]
async fn racing_grants_and_holds_never_reserve_past_the_limit() {
    let redis = RedisServer::start().await.unwrap();
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(Arc::new(
            RedisBudgetStore::open(&redis.url()).await.unwrap(),
        ));
    }
    day_budget(stores[0].as_ref(), "race", 1000).await;
    let t = now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..400 {
        let s = stores[i % 4].clone();
        tasks.spawn(async move {
            if i % 2 == 0 {
                matches!(
                    s.grant_lease(&grant("race", &format!("r{i}"), 7, t))
                        .await
                        .unwrap(),
                    LeaseOutcome::Granted(_)
                )
                .then_some(7)
            } else {
                let h = HoldRequest {
                    org: "race".into(),
                    hold_id: format!("h{i}"),
                    amount: usd(3),
                    scopes: vec![Scope::org()],
                    now_ms: t,
                    ttl_ms: 60_000,
                    tokens: 0,
                    limits: vec![],
                };
                (s.hold(&h).await.unwrap() == HoldOutcome::Held).then_some(3)
            }
        });
    }
    let mut reserved = 0;
    while let Some(r) = tasks.join_next().await {
        reserved += r.unwrap().unwrap_or(0);
    }
    let (spent, held) = standing(stores[0].as_ref(), "race").await;
    assert_eq!((spent, held), (0, reserved));
    assert!((990..=1000).contains(&reserved), "{reserved}");
}

/// A batch under one lease settles exactly as its requests would one by one: counters, ledger,
/// usage aggregates and idempotency.
async fn batch_contract(s: &dyn BudgetStore, org: &str) {
    let t = now();
    day_budget(s, org, 100).await;
    s.grant_lease(&grant(org, "x", 50, t)).await.unwrap();
    s.renew_lease(&renewal(org, "x", 0, 20, 0, t))
        .await
        .unwrap();
    s.settle_leased(org, "lease:x", &numbered(0, 0, served(org, "b0", 10, 5)))
        .await
        .unwrap();
    let items = vec![
        numbered(0, 0, served(org, "b0", 10, 5)),
        numbered(10, 0, served(org, "b1", 10, 6)),
        numbered(20, 0, served(org, "b2", 10, 7)),
    ];
    let out = s.settle_leased_batch(org, "lease:x", &items).await.unwrap();
    assert_eq!(out[0], SettleOutcome::Duplicate("reported".into()));
    assert!(matches!(out[1], SettleOutcome::Done(Some(_))), "{out:?}");
    assert!(matches!(out[2], SettleOutcome::Done(Some(_))), "{out:?}");
    // 30 of the lease's 50 settled (18 spent), 20 still reserved.
    assert_eq!(standing(s, org).await, (18, 20));
    assert_eq!(s.ledger(org, "", 100).await.unwrap().len(), 3);
    let day = switchyard_state::day_of(now());
    let usage = s.usage(org, &[day]).await.unwrap();
    assert_eq!(usage[0].1["req|day|"], 3);
    assert_eq!(usage[0].1["cost|day|"], usd(18).nanos());
    // b2 was admitted after the renewal: once a renewal covers it, it counts, so an expiry
    // charges nothing for the settled requests.
    s.renew_lease(&renewal(org, "x", 0, 30, 0, t))
        .await
        .unwrap();
    assert_eq!(
        s.expire_lease(org, "lease:x", t + 5_001).await.unwrap(),
        Some(Money::ZERO)
    );
    assert_eq!(standing(s, org).await, (18, 0));
    assert_eq!(
        s.settle_leased_batch(
            org,
            "lease:none",
            &[numbered(0, 1, served(org, "b9", 1, 1))]
        )
        .await
        .unwrap(),
        vec![SettleOutcome::Unknown]
    );
}

/// Numbered reports (as routers send them): a batch sent again, whole or in part, and a report
/// numbered below the lease's highest count once, with no marker per request; one batch may
/// finish across midnight, each report's usage on its own day.
async fn numbered_contract(s: &dyn BudgetStore, org: &str) {
    let t = now();
    day_budget(s, org, 100).await;
    s.grant_lease(&grant(org, "y", 50, t)).await.unwrap();
    s.renew_lease(&renewal(org, "y", 0, 30, 0, t))
        .await
        .unwrap();
    let mut yesterday = served(org, "n1", 10, 5);
    yesterday.finished_ms = t - 86_400_000;
    let first = vec![
        numbered(0, 1, yesterday),
        numbered(10, 2, served(org, "n2", 10, 6)),
    ];
    let out = s.settle_leased_batch(org, "lease:y", &first).await.unwrap();
    assert!(
        out.iter()
            .all(|o| matches!(o, SettleOutcome::Done(Some(_)))),
        "{out:?}"
    );
    assert_eq!(standing(s, org).await, (11, 30));
    // Its acknowledgement lost, the router sends the batch again: nothing counts twice.
    let again = s.settle_leased_batch(org, "lease:y", &first).await.unwrap();
    assert_eq!(again, vec![SettleOutcome::Duplicate("reported".into()); 2]);
    // The next batch overlaps nothing, but a stray report numbered below the highest does.
    let next = vec![
        numbered(0, 1, served(org, "n1", 10, 5)),
        numbered(20, 3, served(org, "n3", 10, 7)),
    ];
    let out = s.settle_leased_batch(org, "lease:y", &next).await.unwrap();
    assert_eq!(out[0], SettleOutcome::Duplicate("reported".into()));
    assert!(matches!(out[1], SettleOutcome::Done(Some(_))), "{out:?}");
    assert_eq!(standing(s, org).await, (18, 20));
    assert_eq!(s.ledger(org, "", 100).await.unwrap().len(), 3);
    let days = [
        switchyard_state::day_of(t - 86_400_000),
        switchyard_state::day_of(t),
    ];
    let usage = s.usage(org, &days).await.unwrap();
    assert_eq!(usage[0].1["req|day|"], 1);
    assert_eq!(usage[0].1["cost|day|"], usd(5).nanos());
    assert_eq!(usage[1].1["req|day|"], 2);
    assert_eq!(usage[1].1["cost|day|"], usd(13).nanos());
}

#[tokio::test]
async fn numbered_reports_count_once_in_memory() {
    numbered_contract(&MemoryBudgetStore::default(), "acme").await;
}

#[tokio::test]
async fn numbered_reports_count_once_in_redis() {
    let redis = RedisServer::start().await.unwrap();
    numbered_contract(&RedisBudgetStore::open(&redis.url()).await.unwrap(), "acme").await;
}

#[tokio::test]
async fn numbered_reports_count_once_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3).await.unwrap();
    numbered_contract(
        &RedisBudgetStore::open(&cluster.url()).await.unwrap(),
        "acme",
    )
    .await;
}

#[tokio::test]
async fn a_batch_settles_like_one_by_one_in_memory() {
    batch_contract(&MemoryBudgetStore::default(), "acme").await;
}

#[tokio::test]
async fn a_batch_settles_like_one_by_one_in_redis() {
    let redis = RedisServer::start().await.unwrap();
    batch_contract(&RedisBudgetStore::open(&redis.url()).await.unwrap(), "acme").await;
}

#[tokio::test]
async fn a_batch_settles_like_one_by_one_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3).await.unwrap();
    batch_contract(
        &RedisBudgetStore::open(&cluster.url()).await.unwrap(),
        "acme",
    )
    .await;
}
