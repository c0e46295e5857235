//! Two policy replicas on one redis-server, watched over real gRPC: overrides and file changes
//! reach every watcher within 1 s with one shared version; an invalid file keeps the old
//! snapshot serving; issued and revoked keys; BYOK keys reach routers opened.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_policy::crypto::{MasterKey, seal};
use switchyard_policy::server::{PolicyHandle, start};
use switchyard_policy::snapshot::CompiledPolicy;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::policy_client::PolicyClient;
use switchyard_state::RedisPolicyStore;
use switchyard_testkit::RedisServer;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::Channel;

const MASTER: &str = "3q2+7w3erb7vq83erb7vq83erb7vq83erb7vq83erb4=";

fn policy(extra_workflow: &str, byok: &str) -> String {
    format!(
        r#"
orgs:
  - id: acme
    api_keys:
      - {{ id: acme-1, sha256: "0000000000000000000000000000000000000000000000000000000000000001", prefix: sk-sy-0000 }}
    byok: {byok}
    default_workflow: support
    workflows:
      - {{ id: support, models: [small] }}
{extra_workflow}
  - id: globex
    default_workflow: main
    workflows:
      - {{ id: main }}
"#
    )
}

struct Replica {
    handle: PolicyHandle,
    client: PolicyClient<Channel>,
}

async fn replica(file: &Path, redis: &RedisServer, stop: &CancellationToken) -> Replica {
    let store = Arc::new(
        RedisPolicyStore::open(&redis.url(), stop.clone())
            .await
            .unwrap(),
    );
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let master = MasterKey::from_base64(MASTER).unwrap();
    let handle = start(
        file.to_path_buf(),
        None,
        store,
        Some(master),
        grpc,
        http,
        false,
    )
    .await
    .unwrap();
    let client = PolicyClient::connect(format!("http://{}", handle.grpc_addr))
        .await
        .unwrap();
    Replica { handle, client }
}

async fn watch(client: &mut PolicyClient<Channel>) -> Streaming<pb::PolicySnapshot> {
    client
        .watch(pb::WatchPolicyRequest { known_version: 0 })
        .await
        .unwrap()
        .into_inner()
}

/// The next snapshot on a watch stream, which must come within `within`.
async fn next(stream: &mut Streaming<pb::PolicySnapshot>, within: Duration) -> pb::PolicySnapshot {
    tokio::time::timeout(within, stream.message())
        .await
        .expect("a snapshot in time")
        .unwrap()
        .unwrap()
}

fn compiled(s: &pb::PolicySnapshot) -> CompiledPolicy {
    serde_json::from_slice(&s.compiled_json).unwrap()
}

struct Env {
    _dir: tempfile::TempDir,
    file: PathBuf,
    redis: RedisServer,
    stop: CancellationToken,
}

async fn env(text: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, text).unwrap();
    Env {
        _dir: dir,
        file,
        redis: RedisServer::start().await.unwrap(),
        stop: CancellationToken::new(),
    }
}

#[tokio::test]
async fn replicas_agree_and_watchers_see_changes_within_a_second() {
    let e = env(&policy("", "[]")).await;
    let mut a = replica(&e.file, &e.redis, &e.stop).await;
    let mut b = replica(&e.file, &e.redis, &e.stop).await;
    let (mut wa, mut wb) = (watch(&mut a.client).await, watch(&mut b.client).await);
    let (sa, sb) = (
        next(&mut wa, Duration::from_secs(1)).await,
        next(&mut wb, Duration::from_secs(1)).await,
    );
    assert_eq!(sa.version, sb.version, "two replicas, one version");
    assert_eq!(sa.sha256, sb.sha256);

    // An override on replica A reaches watchers of A and B.
    let started = Instant::now();
    let o = a
        .client
        .put_override(pb::PutOverrideRequest {
            r#override: Some(pb::Override {
                kind: pb::OverrideKind::DisableProvider as i32,
                target: "openai".into(),
                reason: "incident 42".into(),
                actor: "oncall".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let (na, nb) = (
        next(&mut wa, Duration::from_secs(1)).await,
        next(&mut wb, Duration::from_secs(1)).await,
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!((na.version, nb.version), (sa.version + 1, sa.version + 1));
    let c = compiled(&nb);
    assert_eq!(
        c.workflow("acme", None).unwrap().routing.disabled_providers,
        vec!["openai".into()]
    );
    let listed = b
        .client
        .list_overrides(pb::ListOverridesRequest {})
        .await
        .unwrap()
        .into_inner()
        .overrides;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].id.as_str(),
            listed[0].actor.as_str(),
            listed[0].reason.as_str()
        ),
        (o.id.as_str(), "oncall", "incident 42")
    );

    // Removing it restores the provider.
    b.client
        .remove_override(pb::RemoveOverrideRequest {
            id: o.id.clone(),
            actor: "oncall".into(),
            reason: "resolved".into(),
        })
        .await
        .unwrap();
    let na = next(&mut wa, Duration::from_secs(1)).await;
    assert!(
        compiled(&na)
            .workflow("acme", None)
            .unwrap()
            .routing
            .disabled_providers
            .is_empty()
    );
    assert_eq!(
        next(&mut wb, Duration::from_secs(1)).await.version,
        na.version
    );
    let err = a
        .client
        .remove_override(pb::RemoveOverrideRequest {
            id: o.id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // A file change: both replicas reload it, publish the same content, serve one version.
    let started = Instant::now();
    std::fs::write(
        &e.file,
        policy("      - { id: batch, models: [large] }", "[]"),
    )
    .unwrap();
    let (na2, nb2) = (
        next(&mut wa, Duration::from_secs(1)).await,
        next(&mut wb, Duration::from_secs(1)).await,
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(na2.version, nb2.version);
    assert!(compiled(&na2).workflow("acme", Some("batch")).is_some());
    // No extra version from the second replica's identical publication.
    assert!(
        tokio::time::timeout(Duration::from_millis(700), wa.message())
            .await
            .is_err()
    );

    // An invalid file: rejected, the old version keeps serving, the failure is counted.
    std::fs::write(
        &e.file,
        "orgs:\n  - id: acme\n    default_workflow: nowhere\n    workflows: []\n    colour: red\n",
    )
    .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), wa.message())
            .await
            .is_err(),
        "no new version"
    );
    let current = a
        .client
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(current.version, na2.version);
    let metrics = reqwest_get(&format!("http://{}/metrics", a.handle.http_addr)).await;
    assert!(
        metrics.contains("switchyard_policy_reloads_total{result=\"invalid\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_policy_last_reload_ok 0"),
        "{metrics}"
    );
    assert_eq!(
        reqwest_status(&format!("http://{}/readyz", a.handle.http_addr)).await,
        200
    );

    a.handle.shutdown().await;
    b.handle.shutdown().await;
    e.stop.cancel();
}

async fn reqwest_get(url: &str) -> String {
    raw_http(url).await.1
}

async fn reqwest_status(url: &str) -> u16 {
    raw_http(url).await.0
}

/// A minimal HTTP/1.1 GET over a TCP socket (the ops listener is plain HTTP).
async fn raw_http(url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(
        format!("GET /{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, out)
}

#[tokio::test]
async fn issued_keys_authenticate_until_revoked() {
    let e = env(&policy("", "[]")).await;
    let mut a = replica(&e.file, &e.redis, &e.stop).await;
    let mut w = watch(&mut a.client).await;
    next(&mut w, Duration::from_secs(1)).await;
    let issued = a
        .client
        .issue_api_key(pb::IssueApiKeyRequest {
            org_id: "acme".into(),
            scopes: vec!["chat".into()],
            actor: "admin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(issued.secret.starts_with("sk-sy-"));
    let key = issued.key.unwrap();
    assert!(issued.secret.starts_with(&key.prefix));
    let s = next(&mut w, Duration::from_secs(1)).await;
    let who = compiled(&s)
        .authenticate(&issued.secret)
        .map(|k| (k.id.to_string(), k.org.to_string()));
    assert_eq!(who, Some((key.id.clone(), "acme".to_string())));
    assert!(
        !String::from_utf8_lossy(&s.compiled_json).contains(&issued.secret),
        "only the hash is published"
    );

    a.client
        .revoke_api_key(pb::RevokeApiKeyRequest {
            key_id: key.id.clone(),
            actor: "admin".into(),
            reason: "leaked".into(),
        })
        .await
        .unwrap();
    let s = next(&mut w, Duration::from_secs(1)).await;
    assert!(
        compiled(&s).authenticate(&issued.secret).is_none(),
        "revoked on the next snapshot"
    );
    // Configured keys can be revoked too; unknown ones are reported.
    a.client
        .revoke_api_key(pb::RevokeApiKeyRequest {
            key_id: "acme-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = a
        .client
        .revoke_api_key(pb::RevokeApiKeyRequest {
            key_id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = a
        .client
        .issue_api_key(pb::IssueApiKeyRequest {
            org_id: "nobody".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    a.handle.shutdown().await;
    e.stop.cancel();
}

#[tokio::test]
async fn byok_keys_reach_routers_opened_and_a_moved_ciphertext_is_refused() {
    let master = MasterKey::from_base64(MASTER).unwrap();
    let sealed = seal(&master, "acme", "openai", "sk-acme-own-openai-key").unwrap();
    let entry = format!(
        "[{{ provider: openai, sealed: {} }}]",
        serde_json::to_string(&sealed).unwrap()
    );
    let e = env(&policy("", &entry)).await;
    let mut a = replica(&e.file, &e.redis, &e.stop).await;
    let s = a
        .client
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.byok_keys.len(), 1);
    assert_eq!(
        (
            s.byok_keys[0].org_id.as_str(),
            s.byok_keys[0].provider.as_str(),
            s.byok_keys[0].key.as_str()
        ),
        ("acme", "openai", "sk-acme-own-openai-key")
    );
    assert!(
        !String::from_utf8_lossy(&s.compiled_json).contains("sk-acme-own"),
        "stored sealed only"
    );

    // The same ciphertext moved to another org's file: rejected, the old snapshot keeps serving.
    let moved = policy("", "[]").replace(
        "workflows:\n      - { id: main }",
        &format!("byok: {entry}\n    workflows:\n      - {{ id: main }}"),
    );
    std::fs::write(&e.file, &moved).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = a
        .client
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.version, s.version);
    a.handle.shutdown().await;
    e.stop.cancel();
}
