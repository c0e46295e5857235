#![allow(clippy::unwrap_used, clippy::expect_used)]

use redis::AsyncCommands;
use switchyard_testkit::{RedisOptions, RedisServer, TestkitError};

#[tokio::test]
async fn aof_server_keeps_acknowledged_writes_across_kill_9() {
    let mut redis = RedisServer::start_with(RedisOptions {
        aof: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let port = redis.port();
    let mut conn = redis.connection().await.unwrap();
    let _: () = conn.set("sy:test:spent", 42).await.unwrap();
    let _: () = conn.incr("sy:test:spent", 8).await.unwrap();

    redis.kill().await.unwrap();
    assert!(!redis.is_running());
    assert!(
        redis.connection().await.is_err(),
        "killed server still answers"
    );

    redis.restart().await.unwrap();
    assert_eq!(redis.port(), port, "restart keeps the port");
    let mut conn = redis.connection().await.unwrap();
    let spent: i64 = conn.get("sy:test:spent").await.unwrap();
    assert_eq!(spent, 50);
}

#[tokio::test]
async fn server_without_aof_loses_data_on_restart() {
    let mut redis = RedisServer::start().await.unwrap();
    assert!(!redis.aof());
    let mut conn = redis.connection().await.unwrap();
    let _: () = conn.set("sy:test:k", "v").await.unwrap();
    let present: Option<String> = conn.get("sy:test:k").await.unwrap();
    assert_eq!(present.as_deref(), Some("v"));

    redis.restart().await.unwrap();
    let mut conn = redis.connection().await.unwrap();
    let gone: Option<String> = conn.get("sy:test:k").await.unwrap();
    assert_eq!(gone, None);
}

#[tokio::test]
async fn servers_get_distinct_ports() {
    let a = RedisServer::start().await.unwrap();
    let b = RedisServer::start().await.unwrap();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.port(), 6379);
}

#[tokio::test]
async fn a_missing_binary_names_the_package_to_install() {
    let err = RedisServer::start_with(RedisOptions {
        binary: Some("/nonexistent/redis-server".into()),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, TestkitError::Missing { .. }));
    let msg = err.to_string();
    assert!(msg.contains("apt-get install -y redis-server"), "{msg}");
}
