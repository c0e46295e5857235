//! Mutual TLS between the services. With `SWITCHYARD_TLS_CERT`, `SWITCHYARD_TLS_KEY` and
//! `SWITCHYARD_TLS_CA` set (PEM files), every gRPC listener asks for a client certificate signed
//! by the CA and refuses connections without one, and every internal client (router → policy,
//! router → billing, `switchyard ctl` → all) presents its certificate and checks the server's
//! against the same CA. Unset, everything is plain HTTP/2 (the default, as in `switchyard up`).
//!
//! Certificates are re-read when their files change: a listener checks the files' modification
//! times at most every `SWITCHYARD_TLS_RELOAD_MS` (default 5000) as connections arrive, and new
//! connections get the new certificate; established ones keep theirs. A change that does not load
//! (a half-written file) is logged and the previous certificate stays in use. Clients read the
//! files whenever they connect.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use futures::Stream;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The service's certificate chain (PEM).
pub const CERT_ENV: &str = "SWITCHYARD_TLS_CERT";
/// Its private key (PEM).
pub const KEY_ENV: &str = "SWITCHYARD_TLS_KEY";
/// The CA that signs every service's and client's certificate (PEM).
pub const CA_ENV: &str = "SWITCHYARD_TLS_CA";
/// How often, at most, a listener looks for changed files (milliseconds).
pub const RELOAD_ENV: &str = "SWITCHYARD_TLS_RELOAD_MS";

/// Where the certificate, key and CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// CA.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// From the three paths, all or none; a partial set is an error naming what is missing.
    pub fn from_parts(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
    ) -> Result<Option<Self>, String> {
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles { cert, key, ca })),
            (cert, key, ca) => {
                let missing: Vec<&str> = [
                    (cert.is_none(), CERT_ENV),
                    (key.is_none(), KEY_ENV),
                    (ca.is_none(), CA_ENV),
                ]
                .into_iter()
                .filter_map(|(gone, name)| gone.then_some(name))
                .collect();
                Err(format!(
                    "mutual TLS needs a certificate, its key and the CA; missing {}",
                    missing.join(", ")
                ))
            }
        }
    }

    /// From `SWITCHYARD_TLS_CERT`, `SWITCHYARD_TLS_KEY` and `SWITCHYARD_TLS_CA`.
    pub fn from_env() -> Result<Option<Self>, String> {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        TlsFiles::from_parts(var(CERT_ENV), var(KEY_ENV), var(CA_ENV))
    }

    fn stamps(&self) -> [Option<SystemTime>; 3] {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        [m(&self.cert), m(&self.key), m(&self.ca)]
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the TLS {what} {}: {e}", path.display()))
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the TLS {what} {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the TLS {what} {} holds no certificate",
            path.display()
        ));
    }
    Ok(certs)
}

fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certificates(&files.ca, "CA")? {
        roots
            .add(ca)
            .map_err(|e| format!("the TLS CA {} is unusable: {e}", files.ca.display()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("client verifier: {e}"))?;
    let chain = certificates(&files.cert, "certificate")?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key, "key")?).map_err(|e| {
        format!(
            "the TLS key {} is not a PEM private key: {e}",
            files.key.display()
        )
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("the TLS certificate does not match its key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The loaded TLS setting of this process.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    reload_every: Duration,
    server: RwLock<Arc<rustls::ServerConfig>>,
    /// When the files were last looked at, and their modification times then.
    checked: Mutex<(Instant, [Option<SystemTime>; 3])>,
}

impl Tls {
    /// Loads `files` (an error names the file and what is wrong with it).
    pub fn load(files: TlsFiles, reload_every: Duration) -> Result<Self, String> {
        let server = server_config(&files)?;
        let stamps = files.stamps();
        Ok(Tls {
            files,
            reload_every,
            server: RwLock::new(Arc::new(server)),
            checked: Mutex::new((Instant::now(), stamps)),
        })
    }

    /// The server configuration for a new connection, re-read first if the files changed.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let changed = {
            let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked.0.elapsed() < self.reload_every {
                false
            } else {
                let stamps = self.files.stamps();
                checked.0 = Instant::now();
                let changed = stamps != checked.1;
                checked.1 = stamps;
                changed
            }
        };
        if changed {
            match server_config(&self.files) {
                Ok(config) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificates reloaded");
                    metrics::counter!("switchyard_tls_reloads_total").increment(1);
                    *self.server.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS files changed but do not load; keeping the previous certificates")
                }
            }
        }
        self.server
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The client side: the CA to check servers with and the certificate to present, read now.
    pub fn client_config(&self) -> Result<tonic::transport::ClientTlsConfig, String> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.files.ca, "CA")?))
            .identity(Identity::from_pem(
                read(&self.files.cert, "certificate")?,
                read(&self.files.key, "key")?,
            )))
    }
}

static CURRENT: OnceLock<Option<Arc<Tls>>> = OnceLock::new();

fn reload_every() -> Duration {
    std::env::var(RELOAD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(5), Duration::from_millis)
}

/// Sets this process's TLS from `files` (before any listener or client asks for it). Called by
/// commands with TLS flags; services read the environment instead.
pub fn init(files: Option<TlsFiles>) -> Result<(), String> {
    let tls = files
        .map(|f| Tls::load(f, reload_every()).map(Arc::new))
        .transpose()?;
    // A second call keeps the first setting: the process's listeners already use it.
    let _ = CURRENT.set(tls);
    Ok(())
}

/// This process's TLS: what [`init`] set, or else the environment, loaded on first use.
pub fn current() -> Result<Option<Arc<Tls>>, String> {
    if let Some(tls) = CURRENT.get() {
        return Ok(tls.clone());
    }
    init(TlsFiles::from_env()?)?;
    Ok(CURRENT.get().cloned().flatten())
}

/// An endpoint for an internal service at `url`: with TLS configured, `https` with this
/// process's certificate and CA; otherwise as given.
pub fn endpoint(url: &str) -> Result<tonic::transport::Endpoint, String> {
    let tls = current()?;
    let url = match (&tls, url.strip_prefix("http://")) {
        (Some(_), Some(rest)) => format!("https://{rest}"),
        _ => url.to_string(),
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match tls {
        Some(tls) => endpoint
            .tls_config(tls.client_config()?)
            .map_err(|e| format!("TLS for {url}: {e}")),
        None => Ok(endpoint),
    }
}

/// Accepted connections that completed a mutual-TLS handshake. Handshakes run concurrently; a
/// refused one (no certificate, one not signed by the CA, not TLS at all) is logged and counted
/// and never reaches the service.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<Tls>,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                // The server stopped: stop accepting.
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.server_config());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        metrics::counter!("switchyard_tls_handshakes_refused_total").increment(1);
                        tracing::warn!(%peer, error = %e, "TLS handshake refused");
                    }
                    Err(_) => {
                        metrics::counter!("switchyard_tls_handshakes_refused_total").increment(1);
                        tracing::warn!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ca_and_cert(dir: &Path, name: &str) -> TlsFiles {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let files = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            ca: dir.join("ca.crt"),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        std::fs::write(&files.ca, ca_pem).unwrap();
        files
    }

    #[test]
    fn a_partial_setting_names_what_is_missing() {
        let e = TlsFiles::from_parts(Some("a".into()), None, None).unwrap_err();
        assert!(e.contains("SWITCHYARD_TLS_KEY, SWITCHYARD_TLS_CA"), "{e}");
        assert_eq!(TlsFiles::from_parts(None, None, None).unwrap(), None);
    }

    #[test]
    fn unreadable_or_mismatched_files_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = ca_and_cert(dir.path(), "a");
        let mut wrong = files.clone();
        wrong.ca = dir.path().join("missing.crt");
        let e = Tls::load(wrong, Duration::ZERO).unwrap_err();
        assert!(e.contains("missing.crt"), "{e}");
        let other = tempfile::tempdir().unwrap();
        let mut mismatched = files.clone();
        mismatched.key = ca_and_cert(other.path(), "b").key;
        let e = Tls::load(mismatched, Duration::ZERO).unwrap_err();
        assert!(e.contains("does not match its key"), "{e}");
    }

    #[test]
    fn a_rotation_is_picked_up_and_a_broken_one_keeps_the_previous_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let files = ca_and_cert(dir.path(), "a");
        let tls = Tls::load(files.clone(), Duration::ZERO).unwrap();
        let first = tls.server_config();
        assert!(
            Arc::ptr_eq(&first, &tls.server_config()),
            "reloaded without a change"
        );
        // A half-written certificate: the previous one stays.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\ntrunc").unwrap();
        assert!(Arc::ptr_eq(&first, &tls.server_config()));
        // A complete new set (a new CA, certificate and key): loaded.
        std::thread::sleep(Duration::from_millis(20));
        ca_and_cert(dir.path(), "b");
        let second = tls.server_config();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.alpn_protocols, vec![b"h2".to_vec()]);
    }
}
