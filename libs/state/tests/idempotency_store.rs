//! The idempotency contract on the in-memory store and a real redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use switchyard_state::{Begin, IdempotencyStore, MemoryIdempotencyStore, RedisIdempotencyStore};
use switchyard_testkit::RedisServer;

async fn contract(s: &dyn IdempotencyStore) {
    let ttl = Duration::from_secs(60);
    assert_eq!(s.begin("acme", "k1", "h1", ttl).await.unwrap(), Begin::New);
    assert_eq!(
        s.begin("acme", "k1", "h1", ttl).await.unwrap(),
        Begin::InFlight
    );
    assert_eq!(
        s.begin("acme", "k1", "other", ttl).await.unwrap(),
        Begin::Mismatch
    );
    assert_eq!(
        s.begin("globex", "k1", "h1", ttl).await.unwrap(),
        Begin::New,
        "keys are per org"
    );
    s.complete("acme", "k1", "{\"id\":\"r1\"}", ttl)
        .await
        .unwrap();
    assert_eq!(
        s.begin("acme", "k1", "h1", ttl).await.unwrap(),
        Begin::Done("{\"id\":\"r1\"}".into())
    );
    assert_eq!(s.begin("acme", "k2", "h2", ttl).await.unwrap(), Begin::New);
    s.abandon("acme", "k2").await.unwrap();
    assert_eq!(
        s.begin("acme", "k2", "h2", ttl).await.unwrap(),
        Begin::New,
        "a failed request frees its key"
    );
    assert_eq!(
        s.begin("acme", "k3", "h3", Duration::from_millis(50))
            .await
            .unwrap(),
        Begin::New
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        s.begin("acme", "k3", "h3", ttl).await.unwrap(),
        Begin::New,
        "an abandoned claim expires"
    );
}

#[tokio::test]
async fn memory_idempotency_keeps_the_contract() {
    contract(&MemoryIdempotencyStore::default()).await;
}

#[tokio::test]
async fn redis_idempotency_keeps_the_contract() {
    let redis = RedisServer::start().await.unwrap();
    contract(&RedisIdempotencyStore::open(&redis.url()).await.unwrap()).await;
}

#[tokio::test]
async fn redis_idempotency_keeps_the_contract_on_a_redis_cluster() {
    let cluster = switchyard_testkit::RedisCluster::start(3).await.unwrap();
    contract(&RedisIdempotencyStore::open(&cluster.url()).await.unwrap()).await;
}
