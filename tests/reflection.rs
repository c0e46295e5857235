//! Server reflection that stock tools speak: every service's gRPC port answers both
//! `grpc.reflection.v1` (grpcurl, tonic) and `grpc.reflection.v1alpha` (the official Python
//! `grpcio-reflection` client, installed from PyPI into a virtualenv under target/ when missing),
//! lists exactly the services that port serves (its own, `grpc.health.v1.Health` and reflection)
//! and describes each of them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::collections::BTreeSet;

use common::{Cluster, Spec};
use prost::Message;
use tonic_reflection::pb::v1 as refl;

/// The services a port should list.
fn expected(own: &str) -> BTreeSet<String> {
    switchyard_runtime::grpc::served_services(own)
        .iter()
        .map(ToString::to_string)
        .collect()
}

async fn v1(
    addr: &str,
    request: refl::server_reflection_request::MessageRequest,
) -> refl::server_reflection_response::MessageResponse {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = refl::server_reflection_client::ServerReflectionClient::new(channel);
    let req = refl::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    answers
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
}

/// Lists and describes over v1 (as grpcurl does).
async fn v1_services(addr: &str) -> BTreeSet<String> {
    use refl::server_reflection_request::MessageRequest;
    use refl::server_reflection_response::MessageResponse;
    let MessageResponse::ListServicesResponse(list) =
        v1(addr, MessageRequest::ListServices(String::new())).await
    else {
        panic!("no service list from {addr}");
    };
    let names: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
    for name in &names {
        let MessageResponse::FileDescriptorResponse(files) =
            v1(addr, MessageRequest::FileContainingSymbol(name.clone())).await
        else {
            panic!("{name} is listed on {addr} but not described");
        };
        let (package, service) = name.rsplit_once('.').unwrap();
        let found = files.file_descriptor_proto.iter().any(|raw| {
            let f = prost_types::FileDescriptorProto::decode(raw.as_slice()).unwrap();
            f.package() == package && f.service.iter().any(|s| s.name() == service)
        });
        assert!(found, "{name} described on {addr}");
    }
    names
}

const PYTHON: &str = r#"
import json, sys
import grpc
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

out = {}
for addr in sys.argv[1:]:
    channel = grpc.insecure_channel(addr)
    db = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(db)
    services = sorted(db.get_services())
    out[addr] = {name: [m.name for m in pool.FindServiceByName(name).methods] for name in services}
print(json.dumps(out))
"#;

#[tokio::test]
async fn every_port_lists_and_describes_exactly_what_it_serves_on_v1_and_v1alpha() {
    let c = Cluster::start(Spec {
        prober: Some(common::QUIET_PROBER.into()),
        ..Spec::default()
    })
    .await;
    let ports = [
        (
            "switchyard.v1.Router",
            c.routers[0].addr("grpc").unwrap().to_string(),
        ),
        (
            "switchyard.v1.Policy",
            c.policy.addr("grpc").unwrap().to_string(),
        ),
        (
            "switchyard.v1.Billing",
            c.billing.addr("grpc").unwrap().to_string(),
        ),
        (
            "switchyard.v1.Health",
            c.prober.as_ref().unwrap().addr("grpc").unwrap().to_string(),
        ),
    ];
    for (own, addr) in &ports {
        assert_eq!(v1_services(addr).await, expected(own), "v1 on {own}'s port");
    }

    let python = switchyard_testkit::python_with("grpc_reflection", "grpcio-reflection").unwrap();
    let addrs: Vec<&str> = ports.iter().map(|(_, a)| a.as_str()).collect();
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg(PYTHON)
        .args(&addrs)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "grpcio-reflection: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let described: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("grpcio-reflection (v1alpha): {described}");
    for (own, addr) in &ports {
        let services = described[addr.as_str()].as_object().unwrap();
        let names: BTreeSet<String> = services.keys().cloned().collect();
        assert_eq!(names, expected(own), "v1alpha on {own}'s port");
        for (name, methods) in services {
            assert!(
                !methods.as_array().unwrap().is_empty(),
                "{name} on {addr} described with its methods"
            );
        }
    }
    assert!(
        described[ports[0].1.as_str()]["switchyard.v1.Router"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("ChatStream"))
    );
}
