//! Assembles a policy replica: the core, its reload and refresh loops, the gRPC server (Policy,
//! grpc.health.v1, reflection) and the ops listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use switchyard_proto::v1::policy_server::PolicyServer;
use switchyard_state::PolicyStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::PolicyCore;
use crate::crypto::MasterKey;
use crate::grpc::PolicyGrpc;

/// How often the policy and catalog files are checked for changes.
pub const FILE_POLL: Duration = Duration::from_millis(250);
/// How often the store is re-read even without an announcement.
pub const STORE_POLL: Duration = Duration::from_secs(2);

/// A running replica.
#[derive(Debug)]
pub struct PolicyHandle {
    /// gRPC address.
    pub grpc_addr: SocketAddr,
    /// Ops (metrics, health) address.
    pub http_addr: SocketAddr,
    /// The replica's state.
    pub core: Arc<PolicyCore>,
    drain: switchyard_runtime::drain::Drain,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl PolicyHandle {
    /// Drains (not ready first, for the shutdown delay), then stops every task and waits for
    /// them; routers reconnect their watch to another replica.
    pub async fn shutdown(self) {
        self.drain.begin().await;
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The policy file is missing or invalid.
    #[error(transparent)]
    Config(#[from] switchyard_config::ConfigError),
    /// A listener address could not be read.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Starts a replica on the given listeners. Snapshots with BYOK keys go only over mutual TLS or
/// to loopback peers unless `allow_plaintext_secrets`.
pub async fn start(
    file: PathBuf,
    catalog: Option<PathBuf>,
    store: Arc<dyn PolicyStore>,
    master: Option<MasterKey>,
    grpc: TcpListener,
    http: TcpListener,
    allow_plaintext_secrets: bool,
) -> Result<PolicyHandle, StartError> {
    let core = PolicyCore::with_catalog(store.clone(), file, catalog, master);
    core.reload_catalog().await?;
    core.reload().await?;
    if let Err(e) = core.refresh().await {
        tracing::warn!(error = %e, "state store unreachable at start; serving once it answers");
    }
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);

    // The policy and catalog files: poll, reload on change (an invalid file is logged and
    // counted, and the version before it keeps serving).
    let (c, stop) = (core.clone(), shutdown.clone());
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(FILE_POLL);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let _ = c.reload_catalog().await;
            let _ = c.reload().await;
        }
    });
    // The store: follow announcements, re-read periodically, and keep publishing until the
    // first publication succeeds (a store that was down at start).
    let (c, stop, mut changes) = (core.clone(), shutdown.clone(), store.subscribe());
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(STORE_POLL);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = changes.recv() => {}
                _ = tick.tick() => {}
            }
            let result = if c.current().is_none() {
                c.publish().await.map(|_| ())
            } else {
                c.refresh().await.map_err(Into::into)
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "policy store refresh failed");
            }
        }
    });

    let drain = switchyard_runtime::drain::Drain::from_env();
    let grpc_server = switchyard_runtime::grpc::grpc_server(
        grpc,
        PolicyServer::new(PolicyGrpc::new(
            core.clone(),
            shutdown.clone(),
            allow_plaintext_secrets,
        )),
        drain.token(),
        shutdown.clone(),
    )
    .await
    .map_err(std::io::Error::other)?;
    tracker.spawn(grpc_server);

    let c = core.clone();
    let ready = drain.readiness(Arc::new(move || {
        let catalog = serde_json::json!({
            "catalog_version": c.catalog().map(|c| c.version),
            "catalog_error": c.catalog_error(),
        });
        match c.current() {
            Some(s) => (
                true,
                serde_json::json!({"policy_version": s.version, "catalog": catalog}),
            ),
            None => (
                false,
                serde_json::json!({"policy_version": null, "catalog": catalog, "reason": "no snapshot published yet"}),
            ),
        }
    }));
    tracker.spawn(switchyard_runtime::ops::serve_ops(
        http,
        ready,
        shutdown.clone(),
    ));

    Ok(PolicyHandle {
        grpc_addr,
        http_addr,
        core,
        drain,
        shutdown,
        tracker,
    })
}
