//! The policy store contract, run against the in-memory store and a real redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use switchyard_state::{MemoryPolicyStore, PolicyStore, RedisPolicyStore};
use switchyard_testkit::RedisServer;
use tokio_util::sync::CancellationToken;

async fn contract(a: &dyn PolicyStore, b: &dyn PolicyStore) {
    assert_eq!(a.current_snapshot().await.unwrap(), None);
    let mut changes = b.subscribe();
    // Let a Redis subscriber finish subscribing before the first publish.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let v1 = a
        .publish_snapshot("aaa", Bytes::from_static(b"one"))
        .await
        .unwrap();
    // The same content from another replica keeps the version.
    assert_eq!(
        b.publish_snapshot("aaa", Bytes::from_static(b"one"))
            .await
            .unwrap(),
        v1
    );
    let v2 = b
        .publish_snapshot("bbb", Bytes::from_static(b"two"))
        .await
        .unwrap();
    assert_eq!(v2, v1 + 1);
    let current = a.current_snapshot().await.unwrap().unwrap();
    assert_eq!(
        (
            current.version,
            current.sha256.as_str(),
            current.body.as_ref()
        ),
        (v2, "bbb", &b"two"[..])
    );
    assert!(current.created_ms > 0);

    let mut seen = Vec::new();
    while seen.last() != Some(&v2) {
        let v = tokio::time::timeout(Duration::from_secs(1), changes.recv())
            .await
            .expect("announced within 1 s")
            .unwrap();
        seen.push(v);
    }
    assert_eq!(seen, vec![v1, v2]);

    a.put_doc("keys", "k2", r#"{"id":"k2"}"#).await.unwrap();
    a.put_doc("keys", "k1", r#"{"id":"k1"}"#).await.unwrap();
    assert_eq!(
        b.list_docs("keys").await.unwrap(),
        vec![
            ("k1".into(), r#"{"id":"k1"}"#.into()),
            ("k2".into(), r#"{"id":"k2"}"#.into())
        ]
    );
    assert!(b.remove_doc("keys", "k1").await.unwrap());
    assert!(!b.remove_doc("keys", "k1").await.unwrap());
    assert_eq!(a.list_docs("keys").await.unwrap().len(), 1);
    assert!(a.list_docs("other").await.unwrap().is_empty());

    for i in 0..5 {
        a.append_audit(&format!("{{\"n\":{i}}}")).await.unwrap();
    }
    assert_eq!(
        b.audit_tail(2).await.unwrap(),
        vec!["{\"n\":3}".to_string(), "{\"n\":4}".to_string()]
    );
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    let store = MemoryPolicyStore::default();
    contract(&store, &store).await;
}

async fn redis_contract(url: &str) {
    let shutdown = CancellationToken::new();
    let a = RedisPolicyStore::open(url, shutdown.clone()).await.unwrap();
    let b = RedisPolicyStore::open(url, shutdown.clone()).await.unwrap();
    contract(&a, &b).await;
    shutdown.cancel();
}

#[tokio::test]
async fn the_policy_store_keeps_the_contract_on_a_redis_cluster() {
    redis_contract(
        &switchyard_testkit::RedisCluster::start(3)
            .await
            .unwrap()
            .url(),
    )
    .await;
}

#[tokio::test]
async fn redis_store_keeps_the_contract_across_two_connections() {
    let redis = RedisServer::start().await.unwrap();
    let shutdown = CancellationToken::new();
    let a = RedisPolicyStore::open(&redis.url(), shutdown.clone())
        .await
        .unwrap();
    let b = RedisPolicyStore::open(&redis.url(), shutdown.clone())
        .await
        .unwrap();
    contract(&a, &b).await;
    shutdown.cancel();
}

#[tokio::test]
async fn redis_store_recovers_after_a_restart() {
    let mut redis = RedisServer::start_with(switchyard_testkit::RedisOptions {
        aof: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let shutdown = CancellationToken::new();
    let store = RedisPolicyStore::open(&redis.url(), shutdown.clone())
        .await
        .unwrap();
    let v = store
        .publish_snapshot("x", Bytes::from_static(b"x"))
        .await
        .unwrap();
    redis.kill().await.unwrap();
    assert!(
        store.current_snapshot().await.is_err(),
        "an outage is an error, not an empty answer"
    );
    redis.restart().await.unwrap();
    let mut changes = store.subscribe();
    // The connection and the subscription come back by themselves.
    let mut recovered = None;
    for _ in 0..50 {
        if let Ok(s) = store.current_snapshot().await {
            recovered = s;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(recovered.unwrap().version, v);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v2 = store
        .publish_snapshot("y", Bytes::from_static(b"y"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), changes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, v2);
    shutdown.cancel();
}
