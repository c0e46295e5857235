//! The policy binary at debug log level, driven through every path that touches a secret (the
//! master key, a BYOK key, an issued client key, a rejected file quoting a key): none of them
//! appears in anything it prints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use switchyard_policy::crypto::{MasterKey, seal};
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::policy_client::PolicyClient;
use switchyard_testkit::RedisServer;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let redis = RedisServer::start().await.unwrap();
    let master_b64 = MasterKey::generate_base64();
    let master = MasterKey::from_base64(&master_b64).unwrap();
    let byok_plain = "sk-byok-PLAINTEXT-7f3a9c";
    let sealed =
        serde_json::to_string(&seal(&master, "acme", "openai", byok_plain).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    let good = format!(
        "orgs:\n  - id: acme\n    byok: [{{ provider: openai, sealed: {sealed} }}]\n    default_workflow: w\n    workflows: [{{ id: w }}]\n"
    );
    std::fs::write(&file, &good).unwrap();
    let log_path = dir.path().join("policy.log");
    let log = std::fs::File::create(&log_path).unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard-policy"))
        .args([
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--redis",
            &redis.url(),
            "--config",
        ])
        .arg(&file)
        .env("SWITCHYARD_MASTER_KEY", &master_b64)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let mut client = PolicyClient::connect(format!("http://{}", ready["grpc"].as_str().unwrap()))
        .await
        .unwrap();

    let issued = client
        .issue_api_key(pb::IssueApiKeyRequest {
            org_id: "acme".into(),
            scopes: vec![],
            actor: "admin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let snapshot = client
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        snapshot.byok_keys[0].key, byok_plain,
        "the router does get the key"
    );
    let mut watch = client
        .watch(pb::WatchPolicyRequest { known_version: 0 })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap();
    client
        .revoke_api_key(pb::RevokeApiKeyRequest {
            key_id: issued.key.unwrap().id,
            actor: "admin".into(),
            reason: "test".into(),
        })
        .await
        .unwrap();
    // A file that wrongly holds a key where its hash belongs is rejected without quoting it.
    let leaked = "sk-sy-LEAKEDINTOCONFIG000000000000000";
    std::fs::write(&file, good.replace("workflows: [{ id: w }]", &format!("workflows: [{{ id: w }}]\n    api_keys: [{{ id: k, sha256: {leaked}, prefix: sk-sy-LEAK }}]"))).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;

    child.kill().await.unwrap();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains("serving policy snapshot"),
        "logs were captured:\n{logs}"
    );
    assert!(
        logs.contains("policy file rejected"),
        "the bad file was seen:\n{logs}"
    );
    for (what, secret) in [
        ("master key", master_b64.as_str()),
        ("byok key", byok_plain),
        ("issued client key", issued.secret.as_str()),
        ("key pasted into the file", leaked),
    ] {
        assert!(!logs.contains(secret), "the {what} appears in the logs");
    }
}
