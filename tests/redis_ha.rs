//! The cluster of real processes on a highly available Redis: a 3-primary Redis Cluster and a
//! Sentinel-managed primary with two replicas. Routing, health sharing, budgets and billing work
//! the same on both, and a primary failover under load loses no settled spend.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Cluster, Ha, KEY, RedisKind, Spec, hi, provider, summary};
use serde_json::json;

/// Ejects after 2 passive failures; probes rarely.
const PROBER: &str = "probe: { interval_ms: 10000 }
thresholds: { min_volume: 2, eject_consecutive_failures: 2, base_ejection_ms: 60000 }
evaluate_ms: 200
";

/// Requests are served and billed, and an endpoint failing on one router is ejected for both
/// (passive outcomes and the prober's records shared through this Redis, announcements by
/// pub/sub), with identical plans for a route seed.
async fn routes_bills_and_shares_health(kind: RedisKind) {
    let c = Cluster::start(Spec {
        routers: 2,
        prober: Some(PROBER.into()),
        redis: kind,
        ..Spec::default()
    })
    .await;
    for i in 0..10 {
        let (status, v) = c.chat(i % 2, &hi(json!({}))).await;
        assert_eq!(status, 200, "{kind:?}: {v}");
    }
    c.break_provider("fast", 500).await;
    let body = hi(json!({"provider": {"order": ["fast"]}}));
    for i in 0..10 {
        let (status, v) = c.chat(i % 2, &body).await;
        assert_eq!(status, 200, "{kind:?}: {v}");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, a) = c.explain(0, &body, 7).await;
        let (_, b) = c.explain(1, &body, 7).await;
        let excluded = |x: &serde_json::Value| {
            x["excluded"].as_array().is_some_and(|e| {
                e.iter()
                    .any(|e| e["endpoint"] == "m@fast" && e["reason"] == "unhealthy")
            })
        };
        if excluded(&a) && excluded(&b) {
            assert_eq!(a["plan"], b["plan"], "{kind:?}");
            assert_eq!(a["health_version"], b["health_version"], "{kind:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?}: never ejected everywhere: {a} {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, v) = c.chat(0, &body).await;
    assert_eq!(status, 200, "{v}");
    assert_ne!(provider(&v), "fast");
    let ledger = c.ledger_at_least(21, Duration::from_secs(10)).await;
    assert_eq!(ledger.len(), 21, "{kind:?}");
    let b = c.ctl(&["budgets", "--org", "acme"]).await;
    assert_eq!(b.code, 0, "{b:?}");
}

#[tokio::test]
async fn on_a_redis_cluster_requests_are_routed_billed_and_health_is_shared() {
    routes_bills_and_shares_health(RedisKind::Cluster).await;
}

#[tokio::test]
async fn under_sentinel_requests_are_routed_billed_and_health_is_shared() {
    routes_bills_and_shares_health(RedisKind::Sentinel).await;
}

#[tokio::test]
async fn a_primary_failover_under_load_loses_no_settled_spend() {
    let mut c = Cluster::start(Spec {
        routers: 2,
        redis: RedisKind::Sentinel,
        ..Spec::default()
    })
    .await;
    let load = c.load(20, KEY, hi(json!({})));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let Some(Ha::Sentinel(ha)) = c.ha.as_mut() else {
        panic!("no sentinel setup")
    };
    let old = ha.primary_port().await.unwrap();
    ha.server(old).unwrap().kill().await.unwrap();
    let killed = Instant::now();
    let new = ha
        .wait_for_failover(old, Duration::from_secs(30))
        .await
        .unwrap();
    let failover = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let samples = load.finish().await;
    eprintln!(
        "failover {old} -> {new} after {failover:?}: {}",
        summary(&samples)
    );
    // Every request was answered; refusals only while the primary was gone (acme fails closed).
    assert!(
        samples.iter().all(|s| s.status != 0),
        "{}",
        summary(&samples)
    );
    let mut codes: BTreeMap<u16, usize> = BTreeMap::new();
    for s in &samples {
        *codes.entry(s.status).or_default() += 1;
    }
    assert!(codes.keys().all(|c| [200, 402].contains(c)), "{codes:?}");
    let tail: Vec<_> = samples
        .iter()
        .filter(|s| s.sent > Duration::from_secs(3) + failover + Duration::from_secs(2))
        .collect();
    assert!(
        !tail.is_empty() && tail.iter().all(|s| s.status == 200),
        "not recovered: {}",
        summary(&samples)
    );
    // Every served request is in the ledger exactly once: nothing settled was lost.
    let served: Vec<&str> = samples
        .iter()
        .filter_map(|s| s.request_id.as_deref())
        .collect();
    let ledger = c
        .ledger_at_least(served.len(), Duration::from_secs(20))
        .await;
    let mut ids: Vec<String> = ledger
        .iter()
        .map(|e| e.record.as_ref().unwrap().request_id.clone())
        .collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "a request settled twice");
    for id in &served {
        assert!(
            ids.binary_search(&id.to_string()).is_ok(),
            "served {id} missing from the ledger"
        );
    }
    assert_eq!(
        ids.len(),
        served.len(),
        "ledger entries for requests never served"
    );
}
