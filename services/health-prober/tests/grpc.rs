//! gRPC `Health` over a running prober: list, watch, manual eject and restore, probe now.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use switchyard_config::Catalog;
use switchyard_health_prober::config::ProberConfig;
use switchyard_health_prober::prober::Prober;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::health_client::HealthClient;
use switchyard_providers::{ClientOptions, ProviderClient};
use switchyard_state::MemoryHealthStore;
use switchyard_testkit::start_sim;

#[tokio::test]
async fn list_watch_eject_restore_and_probe_now() {
    let sim =
        start_sim("providers:\n  - { id: a, format: openai }\n  - { id: b, format: openai }\n")
            .await
            .unwrap();
    let text = format!(
        "providers:\n  - {{ id: a, format: openai, base_url: \"{}\", data_policy: {{ retains_prompts: false, trains_on_data: false, zero_retention: true }} }}\n  - {{ id: b, format: openai, base_url: \"{}\", data_policy: {{ retains_prompts: false, trains_on_data: false, zero_retention: true }} }}\nmodels:\n  - {{ id: m, context_length: 100, max_output: 10 }}\nendpoints:\n  - {{ model: m, provider: a, upstream_model: x, price: {{ prompt: 1, completion: 1 }} }}\n  - {{ model: m, provider: b, upstream_model: x, price: {{ prompt: 1, completion: 1 }} }}\n",
        sim.base_url("a").unwrap(),
        sim.base_url("b").unwrap()
    );
    let catalog = Catalog::from_yaml("c", &text).unwrap();
    let mut cfg = ProberConfig::default();
    cfg.probe.interval_ms = 60_000;
    cfg.lease_ttl_ms = 120_000;
    let prober = Prober::new(
        &catalog,
        Arc::new(MemoryHealthStore::default()),
        None,
        ProviderClient::new(ClientOptions::default()).unwrap(),
        cfg,
        "p".into(),
    );
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = switchyard_health_prober::run::start(prober, grpc, http)
        .await
        .unwrap();
    let mut client = HealthClient::connect(format!("http://{}", handle.grpc_addr))
        .await
        .unwrap();

    let mut watch = client
        .watch(pb::WatchHealthRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(1), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.endpoints.len(), 2);

    let ejected = client
        .eject(pb::EjectRequest {
            endpoint: "m@a".into(),
            duration_s: 60,
            reason: "bad answers".into(),
            actor: "oncall".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ejected.state, pb::EndpointState::Ejected as i32);
    assert!(
        ejected.reason.contains("bad answers (oncall)"),
        "{}",
        ejected.reason
    );
    // Watchers see it within a second.
    let seen = loop {
        let change = tokio::time::timeout(Duration::from_secs(1), watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(e) = change
            .endpoints
            .iter()
            .find(|e| e.endpoint == "m@a" && e.state == pb::EndpointState::Ejected as i32)
        {
            break e.clone();
        }
    };
    assert!(seen.ejected_until_unix_ms > 0);

    let restored = client
        .restore(pb::RestoreRequest {
            endpoint: "m@a".into(),
            actor: "oncall".into(),
            reason: "fixed upstream".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restored.state, pb::EndpointState::Healthy as i32);
    assert!(
        restored.reason.contains("fixed upstream (oncall)"),
        "{}",
        restored.reason
    );
    let probed = client
        .probe_now(pb::ProbeNowRequest {
            endpoint: "m@b".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probed.state, pb::EndpointState::Healthy as i32);
    assert!(probed.latency_ms_ewma > 0.0);
    let list = client
        .list_endpoints(pb::ListEndpointsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(list.version >= 3);
    let err = client
        .eject(pb::EjectRequest {
            endpoint: "nope".into(),
            duration_s: 1,
            reason: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // An ejection without a reason is refused: the audit trail needs one.
    let err = client
        .eject(pb::EjectRequest {
            endpoint: "m@a".into(),
            duration_s: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = client
        .eject(pb::EjectRequest {
            endpoint: "m@a".into(),
            duration_s: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    drop(watch);
    handle.shutdown().await;
}
