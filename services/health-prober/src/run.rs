//! Process entry shared by `switchyard-health-prober` and `switchyard prober`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use switchyard_config::Catalog;
use switchyard_proto::v1::health_server::HealthServer;
use switchyard_providers::{ClientOptions, ProviderClient};
use switchyard_state::{
    HealthStore, MemoryHealthStore, PolicyStore, RedisHealthStore, RedisPolicyStore,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ENV_PREFIX, ProberConfig};
use crate::grpc::HealthGrpc;
use crate::prober::Prober;

/// Command-line arguments of the prober.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The catalog whose endpoints are watched.
    #[arg(long, env = "SWITCHYARD_CATALOG")]
    pub catalog: PathBuf,
    /// Prober settings (YAML; every field optional); overrides: SWITCHYARD_PROBER__SECTION__KEY.
    #[arg(long, env = "SWITCHYARD_PROBER_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(
        long,
        default_value = "127.0.0.1:50054",
        env = "SWITCHYARD_PROBER_GRPC"
    )]
    pub grpc: SocketAddr,
    /// Ops (metrics, health) listen address.
    #[arg(long, default_value = "127.0.0.1:8084", env = "SWITCHYARD_PROBER_HTTP")]
    pub http: SocketAddr,
    /// Redis URL; without it health lives in this process only.
    #[arg(long, env = "SWITCHYARD_REDIS_URL")]
    pub redis: Option<String>,
    /// This replica's lease owner name (default: host and process id).
    #[arg(long, env = "SWITCHYARD_PROBER_ID")]
    pub id: Option<String>,
}

/// A running prober.
#[derive(Debug)]
pub struct ProberHandle {
    /// gRPC address.
    pub grpc_addr: SocketAddr,
    /// Ops address.
    pub http_addr: SocketAddr,
    /// The prober.
    pub prober: Arc<Prober>,
    drain: switchyard_runtime::drain::Drain,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl ProberHandle {
    /// Drains (not ready first, for the shutdown delay), stops probing, hands its leases back so
    /// another replica takes its endpoints at once, and waits.
    pub async fn shutdown(self) {
        self.drain.begin().await;
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.prober.release_leases().await;
    }
}

/// Starts a prober on the given listeners.
pub async fn start(
    prober: Prober,
    grpc: TcpListener,
    http: TcpListener,
) -> Result<ProberHandle, String> {
    let prober = Arc::new(prober);
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (grpc_addr, http_addr) = (
        grpc.local_addr().map_err(|e| e.to_string())?,
        http.local_addr().map_err(|e| e.to_string())?,
    );
    tracker.spawn(prober.clone().run(shutdown.clone()));
    let drain = switchyard_runtime::drain::Drain::from_env();
    let grpc_server = switchyard_runtime::grpc::grpc_server(
        grpc,
        HealthServer::new(HealthGrpc::new(prober.clone(), shutdown.clone())),
        drain.token(),
        shutdown.clone(),
    )
    .await?;
    tracker.spawn(grpc_server);
    let ready = drain.readiness(Arc::new(|| (true, serde_json::json!({}))));
    tracker.spawn(switchyard_runtime::ops::serve_ops(
        http,
        ready,
        shutdown.clone(),
    ));
    Ok(ProberHandle {
        grpc_addr,
        http_addr,
        prober,
        drain,
        shutdown,
        tracker,
    })
}

/// Runs a prober until Ctrl-C or SIGTERM. Prints one JSON line with the bound addresses.
pub async fn run(args: Args) -> Result<(), String> {
    // The local file until the policy publishes a catalog in its snapshot.
    let catalog = Catalog::load(&args.catalog).map_err(|e| e.to_string())?;
    let cfg: ProberConfig = match &args.config {
        Some(p) => switchyard_config::load_file(p, ENV_PREFIX).map_err(|e| e.to_string())?,
        None => switchyard_config::parse_value(
            "prober defaults",
            switchyard_config::read_text("prober defaults", "{}", ENV_PREFIX)
                .map_err(|e| e.to_string())?
                .value,
        )
        .map_err(|e| e.to_string())?,
    };
    let stop = CancellationToken::new();
    let (store, policy): (Arc<dyn HealthStore>, Option<Arc<dyn PolicyStore>>) = match &args.redis {
        Some(url) => (
            Arc::new(
                RedisHealthStore::open(url, stop.clone())
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            Some(Arc::new(
                RedisPolicyStore::open(url, stop.clone())
                    .await
                    .map_err(|e| e.to_string())?,
            )),
        ),
        None => (Arc::new(MemoryHealthStore::default()), None),
    };
    let client = ProviderClient::new(ClientOptions::default()).map_err(|e| e.to_string())?;
    let id = args
        .id
        .unwrap_or_else(|| format!("prober-{}", std::process::id()));
    let prober = Prober::new(&catalog, store, policy, client, cfg, id);
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    let handle = start(prober, bind(args.grpc).await?, bind(args.http).await?).await?;
    let ready = serde_json::json!({"grpc": handle.grpc_addr, "http": handle.http_addr});
    switchyard_runtime::print_stdout(&format!("{ready}\n")).map_err(|e| e.to_string())?;
    switchyard_runtime::shutdown_signal().await;
    handle.shutdown().await;
    stop.cancel();
    Ok(())
}
