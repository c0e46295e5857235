//! The stored-response contract on the in-memory store and a real redis-server.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use switchyard_state::{MemoryResponseStore, RedisResponseStore, ResponseStore};
use switchyard_testkit::RedisServer;

async fn contract(s: &dyn ResponseStore) {
    let day = Duration::from_secs(86_400);
    assert_eq!(s.get("acme", "resp_1").await.unwrap(), None);
    s.put("acme", "resp_1", r#"{"a":1}"#, day).await.unwrap();
    assert_eq!(
        s.get("acme", "resp_1").await.unwrap().as_deref(),
        Some(r#"{"a":1}"#)
    );
    // Another org never sees it.
    assert_eq!(s.get("beta", "resp_1").await.unwrap(), None);
    assert!(!s.delete("beta", "resp_1").await.unwrap());
    // Replaced, then deleted once.
    s.put("acme", "resp_1", r#"{"a":2}"#, day).await.unwrap();
    assert_eq!(
        s.get("acme", "resp_1").await.unwrap().as_deref(),
        Some(r#"{"a":2}"#)
    );
    assert!(s.delete("acme", "resp_1").await.unwrap());
    assert!(!s.delete("acme", "resp_1").await.unwrap());
    assert_eq!(s.get("acme", "resp_1").await.unwrap(), None);
    // It expires.
    s.put("acme", "resp_2", "x", Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(s.get("acme", "resp_2").await.unwrap(), None);
}

#[tokio::test]
async fn memory_responses_keep_the_contract() {
    contract(&MemoryResponseStore::default()).await;
}

#[tokio::test]
async fn redis_responses_keep_the_contract() {
    let redis = RedisServer::start().await.unwrap();
    contract(&RedisResponseStore::open(&redis.url()).await.unwrap()).await;
}

#[tokio::test]
async fn redis_responses_keep_the_contract_on_a_redis_cluster() {
    let cluster = switchyard_testkit::RedisCluster::start(3).await.unwrap();
    contract(&RedisResponseStore::open(&cluster.url()).await.unwrap()).await;
}
