//! The budget store contract on the in-memory store and a real redis-server, a 3-primary Redis
//! Cluster and a Sentinel-managed primary; concurrency across four separate connections on each;
//! durability of settled spend across kill -9 with AOF and across a Sentinel failover.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::sync::Arc;

use switchyard_core::Money;
use switchyard_state::{
    BudgetDef, BudgetStore, HoldOutcome, HoldRequest, LedgerEntry, LimitCheck, LimitKind,
    MemoryBudgetStore, Period, RedisBudgetStore, Scope, SettleOutcome,
};
use switchyard_testkit::{RedisCluster, RedisOptions, RedisSentinels, RedisServer};

/// "Now" for the contract: noon UTC of a day whose next day is in the same month, today or at
/// most a few days ahead. It follows the real clock because stores expire hold records by it
/// (a fixed date stops working once it is older than the hold retention).
fn now() -> u64 {
    static NOW: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NOW.get_or_init(|| {
        let mut now = switchyard_core::clock::now_ms() / DAY * DAY + DAY / 2;
        while Period::Month.key(now) != Period::Month.key(now + DAY + DAY / 2) {
            now += DAY;
        }
        now
    })
}
const DAY: u64 = 86_400_000;

fn usd(cents: i64) -> Money {
    Money::from_nanos(cents * 10_000_000)
}

fn hold(id: &str, cents: i64, now: u64) -> HoldRequest {
    HoldRequest {
        org: "acme".into(),
        hold_id: id.into(),
        amount: usd(cents),
        scopes: vec![Scope::org(), Scope::key("k1")],
        now_ms: now,
        ttl_ms: 60_000,
        tokens: 0,
        limits: Vec::new(),
    }
}

fn entry(id: &str, cents: i64) -> LedgerEntry {
    LedgerEntry {
        request_id: id.into(),
        org: "acme".into(),
        api_key: "k1".into(),
        model: "m".into(),
        provider: "p".into(),
        cost: usd(cents),
        finished_ms: now(),
        ..Default::default()
    }
}

async fn spent_held(s: &dyn BudgetStore, period: Period, now: u64) -> (Money, Money) {
    let b = s.budgets("acme", now).await.unwrap();
    let v = b
        .iter()
        .find(|v| v.scope == Scope::org() && v.period == period)
        .unwrap();
    (v.spent, v.held)
}

async fn contract(s: &dyn BudgetStore) {
    let day = BudgetDef {
        limit: usd(100),
        hard: true,
        thresholds: vec![50, 80, 100],
    };
    s.set_budget("acme", &Scope::org(), Period::Day, &day)
        .await
        .unwrap();
    s.set_budget(
        "acme",
        &Scope::org(),
        Period::Month,
        &BudgetDef {
            limit: usd(1_000),
            hard: true,
            thresholds: vec![],
        },
    )
    .await
    .unwrap();

    assert_eq!(
        s.hold(&hold("r1", 40, now())).await.unwrap(),
        HoldOutcome::Held
    );
    assert_eq!(
        s.hold(&hold("r2", 40, now())).await.unwrap(),
        HoldOutcome::Held
    );
    match s.hold(&hold("r3", 40, now())).await.unwrap() {
        HoldOutcome::Denied {
            scope,
            period,
            limit,
            held,
            ..
        } => {
            assert_eq!(
                (scope, period, limit, held),
                (Scope::org(), Period::Day, usd(100), usd(80))
            );
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    assert_eq!(
        s.hold(&hold("r1", 40, now())).await.unwrap(),
        HoldOutcome::Duplicate("held".into()),
        "a repeated hold counts once"
    );
    assert_eq!(spent_held(s, Period::Day, now()).await, (usd(0), usd(80)));

    // Settling below the hold frees the difference for the next request.
    assert!(matches!(
        s.settle("acme", "r1", &entry("r1", 10)).await.unwrap(),
        SettleOutcome::Done(Some(_))
    ));
    for _ in 0..2 {
        assert_eq!(
            s.settle("acme", "r1", &entry("r1", 10)).await.unwrap(),
            SettleOutcome::Duplicate("settled".into())
        );
    }
    assert_eq!(spent_held(s, Period::Day, now()).await, (usd(10), usd(40)));
    assert_eq!(
        s.hold(&hold("r3", 40, now())).await.unwrap(),
        HoldOutcome::Held
    );
    assert_eq!(
        s.release("acme", "r3").await.unwrap(),
        SettleOutcome::Done(None)
    );
    assert_eq!(
        s.release("acme", "r3").await.unwrap(),
        SettleOutcome::Duplicate("released".into())
    );
    assert_eq!(
        s.settle("acme", "never", &entry("x", 1)).await.unwrap(),
        SettleOutcome::Unknown
    );

    // Usage without a hold, reported three times, counts once.
    let first = s
        .charge("acme", &[Scope::org()], now(), &entry("r9", 5))
        .await
        .unwrap();
    assert!(matches!(first, SettleOutcome::Done(Some(_))));
    for _ in 0..2 {
        assert_eq!(
            s.charge("acme", &[Scope::org()], now(), &entry("r9", 5))
                .await
                .unwrap(),
            SettleOutcome::Duplicate("reported".into())
        );
    }
    assert_eq!(spent_held(s, Period::Day, now()).await, (usd(15), usd(40)));

    let ledger = s.ledger("acme", "", 10).await.unwrap();
    assert_eq!(
        ledger
            .iter()
            .map(|(_, e)| e.request_id.as_str())
            .collect::<Vec<_>>(),
        ["r1", "r9"]
    );
    let rest = s.ledger("acme", &ledger[0].0, 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    let usage = s
        .usage(
            "acme",
            &[
                switchyard_state::day_of(now()),
                switchyard_state::day_of(now() + DAY),
            ],
        )
        .await
        .unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].1["cost|model|m"], usd(15).nanos());
    assert_eq!(usage[0].1["req|day|"], 2);

    // The next UTC day starts at zero; the month keeps counting.
    assert_eq!(
        spent_held(s, Period::Day, now() + DAY).await,
        (usd(0), usd(0))
    );
    assert_eq!(spent_held(s, Period::Month, now() + DAY).await.0, usd(15));

    // Soft budgets never deny.
    s.set_budget(
        "acme",
        &Scope::workflow("batch"),
        Period::Day,
        &BudgetDef {
            limit: usd(1),
            hard: false,
            thresholds: vec![],
        },
    )
    .await
    .unwrap();
    let mut big = hold("r10", 50, now() + DAY);
    big.scopes.push(Scope::workflow("batch"));
    assert_eq!(s.hold(&big).await.unwrap(), HoldOutcome::Held);

    // A removed definition no longer limits; set again, it finds its period's spend still
    // counted (a change of limit never resets what was spent).
    let spent_before = s.budgets("acme", now() + DAY).await.unwrap();
    let batch = |views: &[switchyard_state::BudgetView]| {
        views
            .iter()
            .find(|b| b.scope == Scope::workflow("batch"))
            .map(|b| b.spent)
    };
    assert!(
        s.remove_budget("acme", &Scope::workflow("batch"), Period::Day)
            .await
            .unwrap()
    );
    assert!(
        !s.remove_budget("acme", &Scope::workflow("batch"), Period::Day)
            .await
            .unwrap()
    );
    assert_eq!(batch(&s.budgets("acme", now() + DAY).await.unwrap()), None);
    s.set_budget(
        "acme",
        &Scope::workflow("batch"),
        Period::Day,
        &BudgetDef {
            limit: usd(2),
            hard: false,
            thresholds: vec![],
        },
    )
    .await
    .unwrap();
    assert_eq!(
        batch(&s.budgets("acme", now() + DAY).await.unwrap()),
        batch(&spent_before)
    );

    // A hold nobody settles shows up as expired after its TTL.
    let mut lost = hold("lost", 1, now() + DAY);
    lost.ttl_ms = 10;
    s.hold(&lost).await.unwrap();
    let expired = s.expired_holds(now() + DAY + 11, 100).await.unwrap();
    assert!(
        expired.contains(&("acme".to_string(), "lost".to_string(), usd(1))),
        "{expired:?}"
    );
}

fn limited_hold(org: &str, id: &str, now: u64, tokens: u64, limit: LimitCheck) -> HoldRequest {
    HoldRequest {
        org: org.into(),
        hold_id: id.into(),
        amount: usd(1),
        scopes: vec![Scope::org(), Scope::key("k1")],
        now_ms: now,
        ttl_ms: 60_000,
        tokens,
        limits: vec![limit],
    }
}

fn used(tokens: u64) -> LedgerEntry {
    LedgerEntry {
        prompt_tokens: tokens / 2,
        completion_tokens: tokens - tokens / 2,
        ..entry("x", 1)
    }
}

/// Client limits, counted in the hold's atomic step: requests and tokens per minute (tokens
/// reconciled to what was used at settlement, given back on release), requests in flight.
async fn limits_contract(s: &dyn BudgetStore, tag: &str) {
    // Mid-minute, so the window does not turn during the test.
    let now = switchyard_state::minute_of(now()) * 60_000 + 10_000;
    let reset = (switchyard_state::minute_of(now) + 1) * 60_000;
    let key = |rpm, tpm, concurrent| LimitCheck {
        scope: Scope::key("k1"),
        rpm,
        tpm,
        concurrent,
    };
    let org = format!("rpm-{tag}");
    for i in 0..3 {
        let h = limited_hold(&org, &format!("r{i}"), now, 10, key(Some(3), None, None));
        assert_eq!(s.hold(&h).await.unwrap(), HoldOutcome::Held);
    }
    let h = limited_hold(&org, "r3", now, 10, key(Some(3), None, None));
    assert_eq!(
        s.hold(&h).await.unwrap(),
        HoldOutcome::Limited {
            scope: Scope::key("k1"),
            kind: LimitKind::Requests,
            limit: 3,
            used: 3,
            reset_ms: reset,
        }
    );
    // The next minute is a new window.
    let h = limited_hold(&org, "r4", now + 60_000, 10, key(Some(3), None, None));
    assert_eq!(s.hold(&h).await.unwrap(), HoldOutcome::Held);

    let org = format!("tpm-{tag}");
    let tpm = || key(None, Some(250), None);
    assert_eq!(
        s.hold(&limited_hold(&org, "t0", now, 100, tpm()))
            .await
            .unwrap(),
        HoldOutcome::Held
    );
    assert_eq!(
        s.hold(&limited_hold(&org, "t1", now, 100, tpm()))
            .await
            .unwrap(),
        HoldOutcome::Held
    );
    let third = s
        .hold(&limited_hold(&org, "t2", now, 100, tpm()))
        .await
        .unwrap();
    assert!(
        matches!(
            third,
            HoldOutcome::Limited {
                kind: LimitKind::Tokens,
                used: 200,
                ..
            }
        ),
        "{third:?}"
    );
    // t0 used 20 of its 100: 120 counted, and another 100 fits.
    s.settle(&org, "t0", &used(20)).await.unwrap();
    assert_eq!(
        s.hold(&limited_hold(&org, "t3", now, 100, tpm()))
            .await
            .unwrap(),
        HoldOutcome::Held
    );
    // A released hold gives its reservation back.
    s.release(&org, "t1").await.unwrap();
    assert_eq!(
        s.hold(&limited_hold(&org, "t4", now, 100, tpm()))
            .await
            .unwrap(),
        HoldOutcome::Held
    );
    // A request larger than the limit on its own never fits.
    let big = s
        .hold(&limited_hold(&org, "t5", now, 300, tpm()))
        .await
        .unwrap();
    assert!(
        matches!(
            big,
            HoldOutcome::Limited {
                kind: LimitKind::Tokens,
                ..
            }
        ),
        "{big:?}"
    );

    let org = format!("conc-{tag}");
    let conc = || key(None, None, Some(2));
    for id in ["c0", "c1"] {
        assert_eq!(
            s.hold(&limited_hold(&org, id, now, 1, conc()))
                .await
                .unwrap(),
            HoldOutcome::Held
        );
    }
    let third = s
        .hold(&limited_hold(&org, "c2", now, 1, conc()))
        .await
        .unwrap();
    assert!(
        matches!(
            third,
            HoldOutcome::Limited {
                kind: LimitKind::Concurrent,
                used: 2,
                reset_ms: 0,
                ..
            }
        ),
        "{third:?}"
    );
    s.settle(&org, "c0", &used(2)).await.unwrap();
    assert_eq!(
        s.hold(&limited_hold(&org, "c3", now, 1, conc()))
            .await
            .unwrap(),
        HoldOutcome::Held
    );
    s.release(&org, "c1").await.unwrap();
    assert_eq!(
        s.hold(&limited_hold(&org, "c4", now, 1, conc()))
            .await
            .unwrap(),
        HoldOutcome::Held
    );
    // A budget refusal counts nothing against the limits.
    let org = format!("both-{tag}");
    s.set_budget(
        &org,
        &Scope::org(),
        Period::Day,
        &BudgetDef {
            limit: usd(1),
            hard: true,
            thresholds: vec![],
        },
    )
    .await
    .unwrap();
    let mut h = limited_hold(&org, "b0", now, 1, key(Some(1), None, Some(1)));
    h.amount = usd(2);
    assert!(matches!(
        s.hold(&h).await.unwrap(),
        HoldOutcome::Denied { .. }
    ));
    let h = limited_hold(&org, "b1", now, 1, key(Some(1), None, Some(1)));
    assert_eq!(s.hold(&h).await.unwrap(), HoldOutcome::Held);
}

#[tokio::test]
async fn memory_budget_store_keeps_the_limits_contract() {
    limits_contract(&MemoryBudgetStore::default(), "memory").await;
}

#[tokio::test]
async fn redis_budget_store_keeps_the_limits_contract() {
    let redis = RedisServer::start().await.unwrap();
    let store = RedisBudgetStore::open(&redis.url()).await.unwrap();
    limits_contract(&store, "redis").await;
}

/// 4 routers × 256 concurrent requests against 100 requests per minute: exactly 100 admitted.
#[tokio::test]
async fn four_routers_admit_no_more_than_the_rpm() {
    let redis = RedisServer::start().await.unwrap();
    let mut routers = Vec::new();
    for _ in 0..4 {
        routers.push(std::sync::Arc::new(
            RedisBudgetStore::open(&redis.url()).await.unwrap(),
        ));
    }
    let now = switchyard_state::minute_of(now()) * 60_000 + 10_000;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1024 {
        let store = routers[i % 4].clone();
        tasks.spawn(async move {
            let limit = LimitCheck {
                scope: Scope::key("k1"),
                rpm: Some(100),
                tpm: None,
                concurrent: None,
            };
            let h = limited_hold("race", &format!("q{i}"), now, 10, limit);
            store.hold(&h).await.unwrap()
        });
    }
    let (mut held, mut limited) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            HoldOutcome::Held => held += 1,
            HoldOutcome::Limited {
                kind: LimitKind::Requests,
                limit: 100,
                ..
            } => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((held, limited), (100, 924));
}

#[tokio::test]
async fn memory_budget_store_keeps_the_contract() {
    contract(&MemoryBudgetStore::default()).await;
}

#[tokio::test]
async fn redis_budget_store_keeps_the_contract() {
    let redis = RedisServer::start().await.unwrap();
    contract(&RedisBudgetStore::open(&redis.url()).await.unwrap()).await;
}

#[tokio::test]
async fn four_routers_never_overshoot_and_reuse_freed_budget() {
    let redis = RedisServer::start().await.unwrap();
    four_routers(&redis.url()).await;
}

#[tokio::test]
async fn a_redis_cluster_keeps_the_contract() {
    // The scripts' keys share a slot per org: no CROSSSLOT.
    let cluster = RedisCluster::start(3).await.unwrap();
    contract(&RedisBudgetStore::open(&cluster.url()).await.unwrap()).await;
}

#[tokio::test]
async fn four_routers_never_overshoot_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3).await.unwrap();
    four_routers(&cluster.url()).await;
}

#[tokio::test]
async fn a_sentinel_managed_primary_keeps_the_contract() {
    let ha = RedisSentinels::start(1).await.unwrap();
    contract(&RedisBudgetStore::open(&ha.url()).await.unwrap()).await;
}

#[tokio::test]
async fn four_routers_never_overshoot_under_sentinel() {
    let ha = RedisSentinels::start(1).await.unwrap();
    four_routers(&ha.url()).await;
}

/// 400 holds from four connections (two waves) against one org budget at `url`.
async fn four_routers(url: &str) {
    let mut routers = Vec::new();
    for _ in 0..4 {
        routers.push(Arc::new(RedisBudgetStore::open(url).await.unwrap()));
    }
    let limit = usd(500);
    routers[0]
        .set_budget(
            "acme",
            &Scope::org(),
            Period::Day,
            &BudgetDef {
                limit,
                hard: true,
                thresholds: vec![],
            },
        )
        .await
        .unwrap();
    let max_cost = usd(7);
    let wave = |offset: usize| {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200 {
            let store = routers[i % 4].clone();
            tasks.spawn(async move {
                let id = format!("req-{}", offset + i);
                let amount = Money::from_nanos(max_cost.nanos() - (i as i64 % 5) * 10_000_000);
                match store
                    .hold(&HoldRequest {
                        org: "acme".into(),
                        hold_id: id.clone(),
                        amount,
                        scopes: vec![Scope::org()],
                        now_ms: now(),
                        ttl_ms: 60_000,
                        tokens: 0,
                        limits: Vec::new(),
                    })
                    .await
                    .unwrap()
                {
                    HoldOutcome::Held => {
                        // The request costs a third of its maximum.
                        let cost = Money::from_nanos(amount.nanos() / 3);
                        store
                            .settle("acme", &id, &entry(&id, 0).clone_with_cost(cost))
                            .await
                            .unwrap();
                        1
                    }
                    HoldOutcome::Denied { .. } => 0,
                    HoldOutcome::Duplicate(_) => panic!("unique ids"),
                    HoldOutcome::Limited { .. } => panic!("no limits"),
                }
            });
        }
        tasks
    };
    let mut admitted = 0;
    let mut first = wave(0);
    while let Some(n) = first.join_next().await {
        admitted += n.unwrap();
    }
    let (spent, held) = spent_held(routers[1].as_ref(), Period::Day, now()).await;
    assert_eq!(held, usd(0));
    assert!(spent <= limit, "spent {spent} over limit {limit}");
    // Settling at a third freed budget: a second wave still gets through, and the total stays within
    // one request's maximum cost of the limit.
    let mut second = wave(1_000);
    let mut admitted2 = 0;
    while let Some(n) = second.join_next().await {
        admitted2 += n.unwrap();
    }
    let (spent, _) = spent_held(routers[2].as_ref(), Period::Day, now()).await;
    assert!(
        admitted > 0 && admitted2 > 0,
        "first {admitted}, second {admitted2}"
    );
    assert!(
        spent.nanos() <= limit.nanos() + max_cost.nanos(),
        "spent {spent} vs limit {limit}"
    );
    eprintln!(
        "400 concurrent requests over 4 connections: {admitted} + {admitted2} admitted, spent {spent} USD of {limit}"
    );
    let ledger = routers[3].ledger("acme", "", 10_000).await.unwrap();
    assert_eq!(
        ledger.len(),
        admitted + admitted2,
        "one ledger entry per admitted request"
    );
    let ledger_sum: i64 = ledger.iter().map(|(_, e)| e.cost.nanos()).sum();
    assert_eq!(
        ledger_sum,
        spent.nanos(),
        "the ledger accounts for every nano-USD spent"
    );
}

trait WithCost {
    fn clone_with_cost(&self, cost: Money) -> LedgerEntry;
}

impl WithCost for LedgerEntry {
    fn clone_with_cost(&self, cost: Money) -> LedgerEntry {
        LedgerEntry {
            cost,
            ..self.clone()
        }
    }
}

#[tokio::test]
async fn settled_spend_survives_kill_9_with_aof() {
    let mut redis = RedisServer::start_with(RedisOptions {
        aof: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let store = RedisBudgetStore::open(&redis.url()).await.unwrap();
    store
        .set_budget(
            "acme",
            &Scope::org(),
            Period::Total,
            &BudgetDef {
                limit: usd(10_000),
                hard: true,
                thresholds: vec![],
            },
        )
        .await
        .unwrap();
    for i in 0..50 {
        let id = format!("r{i}");
        store.hold(&hold(&id, 3, now())).await.unwrap();
        store.settle("acme", &id, &entry(&id, 2)).await.unwrap();
    }
    let before = spent_held(&store, Period::Total, now()).await;
    assert_eq!(before, (usd(100), usd(0)));
    redis.kill().await.unwrap();
    redis.restart().await.unwrap();
    let store = RedisBudgetStore::open(&redis.url()).await.unwrap();
    assert_eq!(spent_held(&store, Period::Total, now()).await, before);
    assert_eq!(store.ledger("acme", "", 100).await.unwrap().len(), 50);
}

/// Settling under load on two connections to `url`, like billing with routers' usage reports.
struct SettleLoad {
    stores: Vec<Arc<RedisBudgetStore>>,
    stop: tokio_util::sync::CancellationToken,
    tasks: tokio::task::JoinSet<(Vec<(String, Money)>, u32)>,
}

async fn settle_load(url: &str) -> SettleLoad {
    let stores: Vec<Arc<RedisBudgetStore>> = vec![
        Arc::new(RedisBudgetStore::open(url).await.unwrap()),
        Arc::new(RedisBudgetStore::open(url).await.unwrap()),
    ];
    stores[0]
        .set_budget(
            "acme",
            &Scope::org(),
            Period::Day,
            &BudgetDef {
                limit: usd(1_000_000),
                hard: true,
                thresholds: vec![],
            },
        )
        .await
        .unwrap();
    // Like billing with a router's usage reports: hold, then settle until acknowledged (an
    // error means "not acknowledged": retried, as a report would be).
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (store, stop) = (stores[w % 2].clone(), stop.clone());
        tasks.spawn(async move {
            let mut acknowledged = Vec::new();
            let mut errors = 0u32;
            let mut n = 0;
            while !stop.is_cancelled() {
                n += 1;
                let id = format!("w{w}-{n}");
                let amount = usd(3);
                if !matches!(
                    store
                        .hold(&HoldRequest {
                            hold_id: id.clone(),
                            ..hold(&id, 3, now())
                        })
                        .await,
                    Ok(HoldOutcome::Held | HoldOutcome::Duplicate(_))
                ) {
                    errors += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
                let cost = Money::from_nanos(amount.nanos() / 3);
                for attempt in 0.. {
                    assert!(attempt < 300, "{id}: settlement never acknowledged");
                    match store
                        .settle("acme", &id, &entry(&id, 0).clone_with_cost(cost))
                        .await
                    {
                        Ok(SettleOutcome::Done(_) | SettleOutcome::Duplicate(_)) => break,
                        // The hold was lost with the old primary: charge it, as billing does.
                        Ok(SettleOutcome::Unknown) => {
                            match store
                                .charge(
                                    "acme",
                                    &[Scope::org(), Scope::key("k1")],
                                    now(),
                                    &entry(&id, 0).clone_with_cost(cost),
                                )
                                .await
                            {
                                Ok(_) => break,
                                Err(_) => errors += 1,
                            }
                        }
                        Err(_) => errors += 1,
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                acknowledged.push((id, cost));
            }
            (acknowledged, errors)
        });
    }
    SettleLoad {
        stores,
        stop,
        tasks,
    }
}

impl SettleLoad {
    /// Stops, and checks that every acknowledged settlement is in the ledger exactly once and
    /// the spent counter is their sum.
    async fn check(self, what: &str) {
        let SettleLoad {
            stores,
            stop,
            mut tasks,
        } = self;
        stop.cancel();
        let mut acknowledged = Vec::new();
        let mut errors = 0;
        while let Some(r) = tasks.join_next().await {
            let (a, e) = r.unwrap();
            acknowledged.extend(a);
            errors += e;
        }
        let expected: i64 = acknowledged.iter().map(|(_, c)| c.nanos()).sum();
        let ledger = stores[1].ledger("acme", "", 1_000_000).await.unwrap();
        let mut ids: Vec<&str> = ledger.iter().map(|(_, e)| e.request_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let (spent, held) = spent_held(stores[1].as_ref(), Period::Day, now()).await;
        eprintln!(
            "{what}: {} settlements acknowledged ({errors} errors retried), ledger {} entries, spent {spent} USD, held {held}",
            acknowledged.len(),
            ledger.len()
        );
        assert!(
            acknowledged.len() > 50,
            "too little load: {}",
            acknowledged.len()
        );
        for (id, _) in &acknowledged {
            assert!(
                ids.binary_search(&id.as_str()).is_ok(),
                "acknowledged {id} lost in the failover"
            );
        }
        assert_eq!(ids.len(), ledger.len(), "a settlement was recorded twice");
        assert_eq!(
            spent.nanos(),
            expected,
            "spent differs from what was acknowledged"
        );
    }
}

#[tokio::test]
async fn a_sentinel_failover_under_load_loses_no_settled_spend() {
    let mut ha = RedisSentinels::start(2).await.unwrap();
    let load = settle_load(&ha.url()).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let old = ha.primary_port().await.unwrap();
    ha.server(old).unwrap().kill().await.unwrap();
    let killed = std::time::Instant::now();
    let new = ha
        .wait_for_failover(old, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let failover = killed.elapsed();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    load.check(&format!("sentinel failover {old} -> {new} in {failover:?}"))
        .await;
}

#[tokio::test]
async fn a_redis_cluster_failover_under_load_loses_no_settled_spend() {
    // Two replicas each: after the failover the new primary still has one to wait for.
    let mut cluster = RedisCluster::start_with_replicas(3, 2).await.unwrap();
    let load = settle_load(&format!("{}?wait_replicas=1", cluster.url())).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    // The primary that owns org acme's slot.
    let key = "sy:{org:acme}:ctr";
    let old = cluster.primary_for(key).await.unwrap();
    cluster.server(old).unwrap().kill().await.unwrap();
    let killed = std::time::Instant::now();
    let new = cluster
        .wait_for_failover(key, old, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let failover = killed.elapsed();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    load.check(&format!("cluster failover {old} -> {new} in {failover:?}"))
        .await;
}
