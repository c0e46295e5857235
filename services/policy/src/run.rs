//! The process entry point shared by `switchyard-policy` and `switchyard policy`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use switchyard_state::{MemoryPolicyStore, PolicyStore, RedisPolicyStore};
use tokio_util::sync::CancellationToken;

use crate::crypto::MasterKey;

/// Command-line arguments of the policy service.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy file (YAML); overrides: SWITCHYARD_POLICY__SECTION__KEY=value.
    #[arg(long, env = "SWITCHYARD_POLICY_CONFIG")]
    pub config: PathBuf,
    /// Catalog file (YAML) to publish in every snapshot, so every router, prober and billing
    /// replica uses the same version (reloaded on change; an invalid change keeps the previous
    /// one); overrides: SWITCHYARD_CATALOG__SECTION__KEY=value. Without it each process uses
    /// its own catalog file.
    #[arg(long, env = "SWITCHYARD_POLICY_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(
        long,
        default_value = "127.0.0.1:50052",
        env = "SWITCHYARD_POLICY_GRPC"
    )]
    pub grpc: SocketAddr,
    /// Ops (metrics, health) listen address.
    #[arg(long, default_value = "127.0.0.1:8082", env = "SWITCHYARD_POLICY_HTTP")]
    pub http: SocketAddr,
    /// Redis URL; without it the snapshot lives in this process only (one replica).
    #[arg(long, env = "SWITCHYARD_REDIS_URL")]
    pub redis: Option<String>,
    /// Send snapshots with BYOK provider keys to peers that are neither on mutual TLS nor on
    /// loopback (the keys then cross the network in clear); off by default.
    #[arg(long, env = "SWITCHYARD_POLICY_ALLOW_PLAINTEXT_SECRETS")]
    pub allow_plaintext_secrets: bool,
}

/// Runs a replica until Ctrl-C or SIGTERM. Prints one JSON line with the bound addresses.
pub async fn run(args: Args) -> Result<(), String> {
    let master = MasterKey::from_env().map_err(|e| e.to_string())?;
    let stop = CancellationToken::new();
    let store: Arc<dyn PolicyStore> = match &args.redis {
        Some(url) => Arc::new(
            RedisPolicyStore::open(url, stop.clone())
                .await
                .map_err(|e| e.to_string())?,
        ),
        None => Arc::new(MemoryPolicyStore::default()),
    };
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    let (grpc, http) = (bind(args.grpc).await?, bind(args.http).await?);
    let handle = crate::server::start(
        args.config,
        args.catalog,
        store,
        master,
        grpc,
        http,
        args.allow_plaintext_secrets,
    )
    .await
    .map_err(|e| e.to_string())?;
    let ready = serde_json::json!({"grpc": handle.grpc_addr, "http": handle.http_addr});
    switchyard_runtime::print_stdout(&format!("{ready}\n"))
        .map_err(|e| format!("cannot print the ready line: {e}"))?;
    switchyard_runtime::shutdown_signal().await;
    handle.shutdown().await;
    stop.cancel();
    Ok(())
}
