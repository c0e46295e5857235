//! The catalog in the policy snapshot: two replicas reading the same catalog file publish one
//! version; a change is announced to watchers within 1 s; an invalid change publishes nothing,
//! keeps the old version and is reported with its paths.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchyard_policy::server::{PolicyHandle, start};
use switchyard_policy::snapshot::CompiledPolicy;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::policy_client::PolicyClient;
use switchyard_state::RedisPolicyStore;
use switchyard_testkit::RedisServer;
use tokio_util::sync::CancellationToken;

const POLICY: &str =
    "orgs:\n  - id: acme\n    default_workflow: main\n    workflows:\n      - { id: main }\n";

fn catalog(prompt_price: &str) -> String {
    format!(
        "providers:\n  - {{ id: p, format: openai, base_url: \"http://127.0.0.1:9\", data_policy: {{ retains_prompts: false, trains_on_data: false, zero_retention: true }} }}\nmodels:\n  - {{ id: m, context_length: 8000, max_output: 500 }}\nendpoints:\n  - {{ model: m, provider: p, upstream_model: x, price: {{ prompt: {prompt_price}, completion: 2 }} }}\n"
    )
}

async fn replica(
    dir: &Path,
    redis: &RedisServer,
    stop: &CancellationToken,
) -> (PolicyHandle, PolicyClient<tonic::transport::Channel>) {
    let store = Arc::new(
        RedisPolicyStore::open(&redis.url(), stop.clone())
            .await
            .unwrap(),
    );
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = start(
        dir.join("policy.yaml"),
        Some(dir.join("catalog.yaml")),
        store,
        None,
        grpc,
        http,
        false,
    )
    .await
    .unwrap();
    let client = PolicyClient::connect(format!("http://{}", handle.grpc_addr))
        .await
        .unwrap();
    (handle, client)
}

fn carried(s: &pb::PolicySnapshot) -> (String, String) {
    let c: CompiledPolicy = serde_json::from_slice(&s.compiled_json).unwrap();
    let c = c.catalog.expect("a catalog in the snapshot");
    (c.version, c.yaml)
}

#[tokio::test]
async fn the_catalog_rides_in_one_shared_snapshot_version() {
    let redis = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    std::fs::write(dir.path().join("catalog.yaml"), catalog("1")).unwrap();
    let stop = CancellationToken::new();
    let (a, mut ca) = replica(dir.path(), &redis, &stop).await;
    let (b, mut cb) = replica(dir.path(), &redis, &stop).await;
    let sa = ca
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let sb = cb
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((sa.version, &sa.sha256), (sb.version, &sb.sha256));
    let (v1, yaml) = carried(&sa);
    assert!(yaml.contains("upstream_model: x"), "{yaml}");
    let status = cb
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.catalog_version, v1);

    // A price change: announced to a watcher of the other replica within 1 s.
    let mut watch = cb
        .watch(pb::WatchPolicyRequest {
            known_version: sb.version,
        })
        .await
        .unwrap()
        .into_inner();
    std::fs::write(dir.path().join("catalog.yaml"), catalog("4")).unwrap();
    let s = tokio::time::timeout(Duration::from_secs(1), watch.message())
        .await
        .expect("announced within 1 s")
        .unwrap()
        .unwrap();
    let (v2, yaml) = carried(&s);
    assert_ne!(v2, v1);
    assert!(yaml.contains("prompt: 4"), "{yaml}");

    // An invalid change: nothing published, the old version serves, the error names its path.
    std::fs::write(
        dir.path().join("catalog.yaml"),
        catalog("4").replace("provider: p,", "provider: nowhere,"),
    )
    .unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(1200), watch.message()).await;
    assert!(
        quiet.is_err(),
        "an invalid catalog was published: {quiet:?}"
    );
    let status = ca
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.catalog_version, v2);
    assert!(
        status.catalog_error.contains("endpoints[0].provider")
            && status.catalog_error.contains("nowhere"),
        "{}",
        status.catalog_error
    );
    // Fixed: the error is gone.
    std::fs::write(dir.path().join("catalog.yaml"), catalog("5")).unwrap();
    let s = tokio::time::timeout(Duration::from_secs(1), watch.message())
        .await
        .expect("announced within 1 s")
        .unwrap()
        .unwrap();
    assert!(carried(&s).1.contains("prompt: 5"));
    let status = ca
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.catalog_error.is_empty(), "{}", status.catalog_error);
    a.shutdown().await;
    b.shutdown().await;
    stop.cancel();
}
