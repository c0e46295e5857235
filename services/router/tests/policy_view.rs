//! Routers keep their policy through a policy-service outage and start from the state store
//! during one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_policy::crypto::{MasterKey, seal};
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::policy_client::PolicyClient;
use switchyard_router::policy_view::PolicyWatcher;
use switchyard_state::{PolicyStore, RedisPolicyStore};
use switchyard_testkit::RedisServer;
use tokio_util::sync::CancellationToken;

const MASTER: &str = "3q2+7w3erb7vq83erb7vq83erb7vq83erb7vq83erb4=";

async fn start_policy(
    file: &std::path::Path,
    redis: &str,
    port: u16,
    stop: &CancellationToken,
) -> switchyard_policy::server::PolicyHandle {
    let store: Arc<dyn PolicyStore> =
        Arc::new(RedisPolicyStore::open(redis, stop.clone()).await.unwrap());
    let grpc = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    switchyard_policy::server::start(
        file.to_path_buf(),
        None,
        store,
        Some(MasterKey::from_base64(MASTER).unwrap()),
        grpc,
        http,
        false,
    )
    .await
    .unwrap()
}

async fn until(
    w: &PolicyWatcher,
    what: impl Fn(&PolicyWatcher) -> bool,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    while !what(w) {
        assert!(started.elapsed() < limit, "not within {limit:?}: {w:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn the_policy_survives_an_outage_and_a_router_can_start_during_one() {
    let redis = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    let sealed = serde_json::to_string(
        &seal(
            &MasterKey::from_base64(MASTER).unwrap(),
            "acme",
            "openai",
            "sk-own",
        )
        .unwrap(),
    )
    .unwrap();
    std::fs::write(&file, format!("orgs:\n  - id: acme\n    byok: [{{ provider: openai, sealed: {sealed} }}]\n    default_workflow: w\n    workflows: [{{ id: w }}]\n")).unwrap();
    let port = switchyard_testkit::free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let stop = CancellationToken::new();
    let policy = start_policy(&file, &redis.url(), port, &stop).await;

    let fallback: Arc<dyn PolicyStore> = Arc::new(
        RedisPolicyStore::open(&redis.url(), stop.clone())
            .await
            .unwrap(),
    );
    let w1 = PolicyWatcher::spawn(url.clone(), Some(fallback.clone()), stop.clone());
    until(
        &w1,
        |w| w.current().is_some() && !w.is_stale(),
        Duration::from_secs(2),
    )
    .await;
    let v = w1.current().unwrap().version;
    assert_eq!(w1.current().unwrap().byok.len(), 1);

    let mut client = PolicyClient::connect(url.clone()).await.unwrap();
    client
        .put_override(pb::PutOverrideRequest {
            r#override: Some(pb::Override {
                kind: pb::OverrideKind::DisableProvider as i32,
                target: "openai".into(),
                reason: "test".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let took = until(
        &w1,
        |w| w.current().is_some_and(|p| p.version > v),
        Duration::from_secs(1),
    )
    .await;
    assert!(took < Duration::from_secs(1));
    let v2 = w1.current().unwrap().version;

    // The policy service goes away: the router keeps its policy, marked stale.
    policy.shutdown().await;
    until(&w1, PolicyWatcher::is_stale, Duration::from_secs(3)).await;
    assert_eq!(w1.current().unwrap().version, v2);

    // A router started during the outage loads the published snapshot from the store.
    let w2 = PolicyWatcher::spawn(url.clone(), Some(fallback), stop.clone());
    until(&w2, |w| w.current().is_some(), Duration::from_secs(3)).await;
    let p = w2.current().unwrap();
    assert_eq!((p.version, p.from_store, p.byok.len()), (v2, true, 0));
    assert!(w2.is_stale());

    // The service returns: both follow it again; the second gets its BYOK keys.
    let policy = start_policy(&file, &redis.url(), port, &stop).await;
    until(&w1, |w| !w.is_stale(), Duration::from_secs(5)).await;
    until(
        &w2,
        |w| {
            w.current()
                .is_some_and(|p| !p.from_store && p.byok.len() == 1)
        },
        Duration::from_secs(5),
    )
    .await;
    policy.shutdown().await;
    stop.cancel();
}
