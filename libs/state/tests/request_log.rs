//! The request-record contract on the in-memory log, a real redis-server and a 3-primary Redis
//! Cluster: found by id in its org only (or in any org when none is named), listed newest first
//! with the query's org, time and filter, bounded per org and minute, and gone after the
//! retention.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use switchyard_core::clock::now_ms;
use switchyard_state::request_log::request_id;
use switchyard_state::{
    MemoryRequestLog, RecordQuery, RedisRequestLog, RequestLog, RequestRecord, Retention,
};
use switchyard_testkit::{RedisCluster, RedisServer};

fn record(org: &str, at_ms: u64, n: u64, outcome: &str) -> RequestRecord {
    RequestRecord {
        id: request_id(at_ms, n),
        created_ms: at_ms,
        org: org.into(),
        key_id: "k1".into(),
        api: "chat_completions".into(),
        stream: false,
        workflow: "default".into(),
        requested_model: "gpt".into(),
        model: Some("gpt".into()),
        provider: Some("p".into()),
        endpoint: Some("gpt@p".into()),
        attempts: vec![],
        retries: 0,
        fallbacks: 0,
        prompt_tokens: 3,
        completion_tokens: 4,
        cost_nano_usd: 10,
        cost_usd: "0.00000001".into(),
        latency_ms: 1.5,
        ttft_ms: None,
        policy_version: 1,
        health_version: 2,
        catalog_version: "c".into(),
        route_seed: "9".into(),
        outcome: outcome.into(),
    }
}

fn query(org: Option<&str>, since_ms: u64, limit: usize) -> RecordQuery {
    RecordQuery {
        org: org.map(str::to_string),
        since_ms,
        limit,
    }
}

async fn contract(log: &dyn RequestLog) {
    let now = now_ms();
    let early = now - 120_000;
    let a1 = record("acme", early, 1, "ok");
    let a2 = record("acme", now - 1, 2, "rate_limited");
    let b1 = record("beta", now, 3, "ok");
    assert_eq!(
        log.put(&[a1.clone(), a2.clone(), b1.clone()])
            .await
            .unwrap(),
        0
    );
    // Written twice (a batch resent): kept once.
    assert_eq!(log.put(std::slice::from_ref(&a2)).await.unwrap(), 0);

    assert_eq!(
        log.get(Some("acme"), &a1.id).await.unwrap(),
        Some(a1.clone())
    );
    assert_eq!(log.get(Some("beta"), &a1.id).await.unwrap(), None);
    assert_eq!(log.get(None, &b1.id).await.unwrap(), Some(b1.clone()));
    assert_eq!(log.get(Some("acme"), "req_unknown").await.unwrap(), None);
    assert_eq!(
        log.get(Some("acme"), &request_id(now, 77)).await.unwrap(),
        None
    );

    let all = log.list(&query(None, 0, 10), &|_| true).await.unwrap();
    assert_eq!(all, vec![b1.clone(), a2.clone(), a1.clone()]);
    let acme = log
        .list(&query(Some("acme"), 0, 10), &|_| true)
        .await
        .unwrap();
    assert_eq!(acme, vec![a2.clone(), a1.clone()]);
    let recent = log
        .list(&query(None, now - 60_000, 10), &|_| true)
        .await
        .unwrap();
    assert_eq!(recent, vec![b1.clone(), a2.clone()]);
    let failed = log
        .list(&query(None, 0, 10), &|r| r.outcome != "ok")
        .await
        .unwrap();
    assert_eq!(failed, vec![a2.clone()]);
    let newest = log.list(&query(None, 0, 1), &|_| true).await.unwrap();
    assert_eq!(newest, vec![b1.clone()]);
}

async fn bounded(log: &dyn RequestLog) {
    let now = now_ms();
    let batch: Vec<RequestRecord> = (0..5).map(|n| record("acme", now, n, "ok")).collect();
    assert_eq!(log.put(&batch).await.unwrap(), 2);
    let other = record("beta", now, 9, "ok");
    assert_eq!(log.put(std::slice::from_ref(&other)).await.unwrap(), 0);
    let kept = log
        .list(&query(Some("acme"), 0, 10), &|_| true)
        .await
        .unwrap();
    assert_eq!(kept.len(), 3);
}

async fn expiring(log: &dyn RequestLog) {
    // Of a minute that ended longer ago than the retention.
    let old = record("acme", now_ms() - 180_000, 1, "ok");
    log.put(std::slice::from_ref(&old)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(log.get(Some("acme"), &old.id).await.unwrap(), None);
    assert!(
        log.list(&query(None, 0, 10), &|_| true)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn flush(redis: &RedisServer) {
    let mut conn = redis.connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
}

fn small() -> Retention {
    Retention {
        ttl: Duration::from_secs(86_400),
        per_minute: 3,
    }
}

fn short() -> Retention {
    Retention {
        ttl: Duration::from_secs(1),
        per_minute: 100,
    }
}

#[tokio::test]
async fn memory_records_keep_the_contract() {
    contract(&MemoryRequestLog::new(Retention::default())).await;
    bounded(&MemoryRequestLog::new(small())).await;
    expiring(&MemoryRequestLog::new(short())).await;
}

#[tokio::test]
async fn redis_records_keep_the_contract() {
    let redis = RedisServer::start().await.unwrap();
    let url = redis.url();
    contract(
        &RedisRequestLog::open(&url, Retention::default())
            .await
            .unwrap(),
    )
    .await;
    flush(&redis).await;
    bounded(&RedisRequestLog::open(&url, small()).await.unwrap()).await;
    flush(&redis).await;
    expiring(&RedisRequestLog::open(&url, short()).await.unwrap()).await;
}

#[tokio::test]
async fn redis_records_keep_the_contract_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3).await.unwrap();
    contract(
        &RedisRequestLog::open(&cluster.url(), Retention::default())
            .await
            .unwrap(),
    )
    .await;
}
