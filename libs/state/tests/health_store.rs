//! The health store contract, on the in-memory store, a real redis-server, a 3-primary Redis
//! Cluster (announcements cross nodes) and a Sentinel-managed primary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use switchyard_core::{AttemptOutcome, EndpointId, EndpointState, ErrorClass};
use switchyard_state::{
    CapacityRecord, CapacityUse, CapacityWindow, HealthRecord, HealthStore, MemoryHealthStore,
    Outcomes, RedisHealthStore, Tier,
};
use switchyard_testkit::{RedisCluster, RedisSentinels, RedisServer};
use tokio_util::sync::CancellationToken;

async fn contract(a: &dyn HealthStore, b: &dyn HealthStore) {
    let ep = EndpointId::from("m@p");
    let mut changes = b.subscribe();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rec = HealthRecord {
        state: EndpointState::Ejected,
        reason: "probe failed twice".into(),
        updated_ms: 5,
        ..Default::default()
    };
    let written = Instant::now();
    let v = a.put_record(&ep, &rec).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(1), changes.recv())
        .await
        .expect("announced within 1 s")
        .unwrap();
    assert_eq!(seen, v);
    assert!(written.elapsed() < Duration::from_secs(1));
    let (version, records) = b.records().await.unwrap();
    assert_eq!(version, v);
    assert_eq!(records.get("m@p"), Some(&rec));
    let v2 = b
        .put_record(&EndpointId::from("m@q"), &HealthRecord::default())
        .await
        .unwrap();
    assert_eq!(v2, v + 1);

    // A conditional write lands only on the record its writer read.
    let stale = HealthRecord {
        reason: "decided from an older record".into(),
        updated_ms: 9,
        ..Default::default()
    };
    assert_eq!(b.replace_record(&ep, 4, &stale).await.unwrap(), None);
    assert_eq!(b.records().await.unwrap().1.get("m@p"), Some(&rec));
    let v3 = b.replace_record(&ep, 5, &stale).await.unwrap();
    assert_eq!(v3, Some(v2 + 1));
    assert_eq!(a.records().await.unwrap().1.get("m@p"), Some(&stale));
    let fresh = EndpointId::from("m@new");
    assert_eq!(b.replace_record(&fresh, 7, &stale).await.unwrap(), None);
    assert!(b.replace_record(&fresh, 0, &stale).await.unwrap().is_some());

    let mut o = Outcomes {
        ok: 3,
        failed: 1,
        latency_ms_sum: 400,
        ..Default::default()
    };
    o.by_class.insert("timeout".into(), 1);
    a.add_outcomes(&[
        (ep.clone(), 100, o.clone()),
        (ep.clone(), 101, o.clone()),
        (EndpointId::from("m@q"), 100, o.clone()),
    ])
    .await
    .unwrap();
    let sum = b.outcomes(&ep, 99, 101).await.unwrap();
    assert_eq!(
        (
            sum.ok,
            sum.failed,
            sum.latency_ms_sum,
            sum.by_class.get("timeout").copied()
        ),
        (6, 2, 800, Some(2))
    );
    assert_eq!(
        b.outcomes(&ep, 102, 105).await.unwrap(),
        Outcomes::default()
    );
    assert_eq!(
        b.outcomes(&ep, 105, 104).await.unwrap(),
        Outcomes::default(),
        "an empty range is empty, not an error"
    );

    // The same counters in the history: buckets 100 and 101 (10 s each) are both in minute
    // 16 and hour 0; the hour keeps only what uptime needs; the histograms survive the store.
    let mut timed = Outcomes::default();
    timed.count(AttemptOutcome::Ok, 400, 100, Some(150));
    timed.count(AttemptOutcome::Failed(ErrorClass::Timeout), 2000, 0, None);
    a.add_outcomes(&[(ep.clone(), 100, timed.clone())])
        .await
        .unwrap();
    let minutes = b.tier_outcomes(&ep, Tier::Minute, 15, 17).await.unwrap();
    assert_eq!(minutes.len(), 3);
    assert_eq!((minutes[0].ok, minutes[2].ok), (0, 0));
    assert_eq!((minutes[1].ok, minutes[1].failed), (6 + 1, 2 + 1));
    assert_eq!(minutes[1].latency_hist, timed.latency_hist);
    assert_eq!(minutes[1].ttft_hist, timed.ttft_hist);
    assert_eq!(minutes[1].tps_hist, timed.tps_hist);
    let hours = b.tier_outcomes(&ep, Tier::Hour, 0, 0).await.unwrap();
    assert_eq!((hours[0].ok, hours[0].failed), (7, 3));
    assert!(hours[0].latency_hist.is_empty());

    let ttl = Duration::from_millis(300);
    assert!(a.lease("m@p", "prober-1", ttl).await.unwrap());
    assert!(
        !b.lease("m@p", "prober-2", ttl).await.unwrap(),
        "held by another"
    );
    assert!(
        a.lease("m@p", "prober-1", ttl).await.unwrap(),
        "the holder extends"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        b.lease("m@p", "prober-2", ttl).await.unwrap(),
        "taken over after the TTL"
    );
    assert!(!a.lease("m@p", "prober-1", ttl).await.unwrap());
    // Cooldowns: shared, the later end wins, announced with a new version, gone once over.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut changes = b.subscribe();
    let v1 = a.put_cooldown(&ep, now + 60_000).await.unwrap();
    let v2 = a.put_cooldown(&ep, now + 30_000).await.unwrap();
    assert!(v2 > v1);
    let seen = tokio::time::timeout(Duration::from_secs(1), changes.recv())
        .await
        .expect("a cooldown is announced")
        .unwrap();
    assert!(seen >= v1);
    assert_eq!(
        b.cooldowns(now).await.unwrap().get(&ep),
        Some(&(now + 60_000))
    );
    assert!(b.cooldowns(now + 60_000).await.unwrap().is_empty());
    // Capacity: the newest observation wins, whoever writes last; an exhaustion is announced.
    let rec = |observed_ms, remaining| CapacityRecord {
        requests: Some(CapacityWindow {
            limit: Some(10),
            remaining,
            reset_ms: now + 5_000,
            window_ms: 5_000,
        }),
        tokens: None,
        observed_ms,
    };
    let mut announced = b.subscribe_capacity();
    a.put_capacity(&[("m@p".into(), rec(now, 0))], true)
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(1), announced.recv())
        .await
        .expect("an exhaustion is announced")
        .unwrap();
    assert_eq!(
        *got,
        [("m@p".to_string(), rec(now, 0))],
        "whole, without a read"
    );
    b.put_capacity(
        &[
            ("m@p".into(), rec(now - 1, 7)),
            ("m@q@org".into(), rec(now, 3)),
        ],
        false,
    )
    .await
    .unwrap();
    let shared = a.capacity().await.unwrap();
    assert_eq!(
        shared.get("m@p"),
        Some(&rec(now, 0)),
        "an older observation loses"
    );
    assert_eq!(shared.get("m@q@org"), Some(&rec(now, 3)));
    b.put_capacity(&[("m@p".into(), rec(now + 1, 9))], false)
        .await
        .unwrap();
    assert_eq!(
        a.capacity().await.unwrap().get("m@p"),
        Some(&rec(now + 1, 9))
    );
    // Declared capacity: every writer's use adds up per minute; adding zero reads.
    let minute = now / 60_000;
    let used = |requests, tokens| CapacityUse { requests, tokens };
    let got = a
        .count_capacity(
            minute,
            &[("m@p".into(), used(2, 300)), ("m@q".into(), used(1, 10))],
        )
        .await
        .unwrap();
    assert_eq!(got, [used(2, 300), used(1, 10)]);
    let got = b
        .count_capacity(
            minute,
            &[("m@p".into(), used(1, 50)), ("m@q".into(), used(0, 0))],
        )
        .await
        .unwrap();
    assert_eq!(got, [used(3, 350), used(1, 10)]);
    let got = b
        .count_capacity(minute + 1, &[("m@p".into(), used(0, 0))])
        .await
        .unwrap();
    assert_eq!(got, [used(0, 0)], "a new minute starts from zero");
    // Only the holder can give it back; then another replica takes it at once.
    a.release("m@p", "prober-1").await.unwrap();
    assert!(
        !a.lease("m@p", "prober-1", ttl).await.unwrap(),
        "released by a non-holder"
    );
    b.release("m@p", "prober-2").await.unwrap();
    assert!(
        a.lease("m@p", "prober-1", ttl).await.unwrap(),
        "taken at once after a release"
    );
    let _: BTreeMap<_, _> = records;
}

#[tokio::test]
async fn memory_health_store_keeps_the_contract() {
    let s = MemoryHealthStore::default();
    contract(&s, &s).await;
}

#[tokio::test]
async fn redis_health_store_keeps_the_contract_across_connections() {
    let redis = RedisServer::start().await.unwrap();
    let stop = CancellationToken::new();
    let a = RedisHealthStore::open(&redis.url(), stop.clone())
        .await
        .unwrap();
    let b = RedisHealthStore::open(&redis.url(), stop.clone())
        .await
        .unwrap();
    contract(&a, &b).await;
    stop.cancel();
}

async fn redis_contract(url: &str) {
    let stop = CancellationToken::new();
    let a = RedisHealthStore::open(url, stop.clone()).await.unwrap();
    let b = RedisHealthStore::open(url, stop.clone()).await.unwrap();
    contract(&a, &b).await;
    stop.cancel();
}

#[tokio::test]
async fn the_health_store_keeps_the_contract_on_a_redis_cluster() {
    redis_contract(&RedisCluster::start(3).await.unwrap().url()).await;
}

#[tokio::test]
async fn the_health_store_keeps_the_contract_under_sentinel() {
    redis_contract(&RedisSentinels::start(1).await.unwrap().url()).await;
}
