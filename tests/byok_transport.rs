//! Opened BYOK keys travel in the policy snapshot, so the policy service sends a snapshot that
//! holds them only over mutual TLS, to a loopback peer, or where the operator allowed plaintext.
//! The policy process runs in a network namespace of its own (a second host on this machine), so
//! the test is a peer that is not loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use switchyard_policy::crypto::{MasterKey, seal};
use switchyard_proto::v1 as pb;
use switchyard_testkit::{NetNs, ServiceProcess};

const MASTER: &str = "3q2+7w3erb7vq83erb7vq83erb7vq83erb7vq83erb4=";

fn policy_file(dir: &std::path::Path, byok: bool) -> std::path::PathBuf {
    let sealed = serde_json::to_string(
        &seal(
            &MasterKey::from_base64(MASTER).unwrap(),
            "acme",
            "openai",
            "sk-own-provider-key",
        )
        .unwrap(),
    )
    .unwrap();
    let byok = if byok {
        format!("    byok: [{{ provider: openai, sealed: {sealed} }}]\n")
    } else {
        String::new()
    };
    let file = dir.join(format!("policy-{}.yaml", byok.len()));
    std::fs::write(
        &file,
        format!(
            "orgs:\n  - id: acme\n{byok}    default_workflow: w\n    workflows: [{{ id: w }}]\n"
        ),
    )
    .unwrap();
    file
}

async fn policy(
    wrapper: &[&str],
    ip: &str,
    file: &std::path::Path,
    extra: &[&str],
) -> ServiceProcess {
    let (grpc, http) = (format!("{ip}:0"), format!("{ip}:0"));
    let mut args = vec![
        "policy",
        "--config",
        file.to_str().unwrap(),
        "--grpc",
        &grpc,
        "--http",
        &http,
    ];
    args.extend_from_slice(extra);
    ServiceProcess::spawn_wrapped(
        "policy",
        wrapper,
        "switchyard",
        "switchyard",
        args,
        &[("SWITCHYARD_MASTER_KEY", MASTER), ("RUST_LOG", "warn")],
    )
    .await
    .unwrap_or_else(|e| panic!("policy: {e}"))
}

async fn snapshot(p: &ServiceProcess) -> Result<pb::PolicySnapshot, tonic::Status> {
    let mut client = pb::policy_client::PolicyClient::connect(p.url("grpc"))
        .await
        .unwrap();
    client
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .map(tonic::Response::into_inner)
}

async fn watch_first(p: &ServiceProcess) -> Result<pb::PolicySnapshot, tonic::Status> {
    let mut client = pb::policy_client::PolicyClient::connect(p.url("grpc"))
        .await
        .unwrap();
    let mut stream = client
        .watch(pb::WatchPolicyRequest { known_version: 0 })
        .await?
        .into_inner();
    stream
        .message()
        .await
        .map(|m| m.expect("a snapshot or an error"))
}

#[tokio::test]
async fn byok_keys_are_not_sent_in_plaintext_off_loopback() {
    let ns = NetNs::create().unwrap_or_else(|e| panic!("a second host for the test: {e}"));
    let prefix = ns.exec_prefix();
    let dir = tempfile::tempdir().unwrap();
    let with_keys = policy_file(dir.path(), true);

    // Off loopback, no TLS: refused on both RPCs, saying why and what to do.
    let remote = policy(&prefix, &ns.ns_ip, &with_keys, &[]).await;
    for refused in [snapshot(&remote).await, watch_first(&remote).await] {
        let status = refused.expect_err("BYOK keys refused to a plaintext peer");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        let why = status.message();
        assert!(why.contains(&ns.host_ip), "names the peer: {why}");
        assert!(why.contains("mutual TLS") && why.contains("--allow-plaintext-secrets"));
        assert!(!why.contains("sk-own-provider-key"));
    }

    // The same peer gets a policy without BYOK keys.
    let plain = policy(&prefix, &ns.ns_ip, &policy_file(dir.path(), false), &[]).await;
    assert!(snapshot(&plain).await.unwrap().byok_keys.is_empty());

    // Explicitly allowed: sent.
    let allowed = policy(
        &prefix,
        &ns.ns_ip,
        &with_keys,
        &["--allow-plaintext-secrets"],
    )
    .await;
    let s = snapshot(&allowed).await.unwrap();
    assert_eq!(s.byok_keys.len(), 1);
    assert_eq!(watch_first(&allowed).await.unwrap().byok_keys.len(), 1);

    // On loopback: sent.
    let local = policy(&[], "127.0.0.1", &with_keys, &[]).await;
    assert_eq!(snapshot(&local).await.unwrap().byok_keys.len(), 1);
}
