//! Mutual TLS between the services: a cluster whose every service has a certificate from one CA
//! serves requests (router → policy and billing over mTLS) and is operated with `ctl`; a client
//! without a certificate, or with one from another CA, is refused; a rotated certificate is used
//! for new connections without a restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cluster, Spec, hi};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use serde_json::json;
use switchyard_proto::v1 as pb;

/// A certificate authority for the test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `name`, valid for 127.0.0.1 and localhost, as server and client: (cert,
    /// key) PEM.
    fn issue(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A gRPC client of the policy service with this TLS setting (`None`: plain HTTP/2).
async fn policy_status(
    addr: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<pb::PolicyStatus, String> {
    let url = match tls {
        Some(_) => format!("https://{addr}"),
        None => format!("http://{addr}"),
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    pb::policy_client::PolicyClient::new(channel)
        .get_status(pb::GetStatusRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("{s:?}"))
}

fn client_tls(ca: &str, identity: Option<&(String, String)>) -> tonic::transport::ClientTlsConfig {
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca));
    if let Some((cert, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    tls
}

/// The certificate the server at `addr` presents now (DER), seen by a client with a valid one.
async fn served_certificate(addr: &str, ca: &str, client: &(String, String)) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(client.0.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(client.1.as_bytes()).unwrap(),
        )
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn only_clients_with_a_certificate_from_the_ca_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("switchyard test CA");
    let service = ca.issue("switchyard-service");
    let env = vec![
        (
            "SWITCHYARD_TLS_CERT".to_string(),
            write(dir.path(), "service.crt", &service.0),
        ),
        (
            "SWITCHYARD_TLS_KEY".to_string(),
            write(dir.path(), "service.key", &service.1),
        ),
        (
            "SWITCHYARD_TLS_CA".to_string(),
            write(dir.path(), "ca.crt", &ca.pem),
        ),
        ("SWITCHYARD_TLS_RELOAD_MS".to_string(), "100".to_string()),
    ];
    let c = Cluster::start(Spec {
        env: env.clone(),
        prober: Some("probe: { interval_ms: 30000 }\nlease_ttl_ms: 60000\n".into()),
        ..Spec::default()
    })
    .await;

    // Routers reached policy (they are ready with its snapshot) and billing, over mutual TLS.
    let (status, v) = c.chat(0, &hi(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let usage = c.ctl(&["usage", "--org", "acme"]).await.ok();
        if usage["rows"][0]["requests"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never billed: {usage}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ctl with the certificate reaches policy, billing and the prober.
    c.ctl(&["policy", "version"]).await.ok();
    c.ctl(&["budgets"]).await.ok();
    c.ctl(&["health"]).await.ok();

    let policy = c.policy.addr("grpc").unwrap().to_string();
    // Served with a certificate signed by the CA.
    let with_cert = policy_status(&policy, Some(client_tls(&ca.pem, Some(&service)))).await;
    assert!(with_cert.is_ok(), "{with_cert:?}");
    // Refused: plain HTTP/2, TLS without a client certificate, a certificate from another CA.
    let plain = policy_status(&policy, None).await;
    assert!(plain.is_err(), "a plain client was served: {plain:?}");
    let anonymous = policy_status(&policy, Some(client_tls(&ca.pem, None))).await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate was served"
    );
    let rogue = Ca::new("someone else");
    let stranger = rogue.issue("intruder");
    let foreign = policy_status(&policy, Some(client_tls(&ca.pem, Some(&stranger)))).await;
    assert!(foreign.is_err(), "a certificate from another CA was served");
    // ctl without a certificate: one clear line.
    let out = tokio::process::Command::new(
        switchyard_testkit::workspace_bin("switchyard", "switchyard").unwrap(),
    )
    .args(["ctl", "--policy", &policy, "policy", "version"])
    .env_remove("SWITCHYARD_TLS_CERT")
    .output()
    .await
    .unwrap();
    let line = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{line}");
    assert!(line.starts_with("error: policy service at "), "{line}");
    assert!(c.policy.log().contains("TLS handshake refused"));

    // Rotation: new files, and new connections get the new certificate without a restart.
    let before = served_certificate(&policy, &ca.pem, &service).await;
    let rotated = ca.issue("switchyard-service-rotated");
    write(dir.path(), "service.key", &rotated.1);
    write(dir.path(), "service.crt", &rotated.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = served_certificate(&policy, &ca.pem, &service).await;
        if now != before {
            assert_eq!(now, pem_der(&rotated.0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was never served"
        );
    }
    // The cluster still works on the rotated certificate.
    let (status, v) = c.chat(0, &hi(json!({}))).await;
    assert_eq!(status, 200, "{v}");
}

/// The DER bytes of a one-certificate PEM.
fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}
