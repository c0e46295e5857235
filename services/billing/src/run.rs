//! Process entry shared by `switchyard-billing` and `switchyard billing`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard_proto::v1::billing_server::BillingServer;
use switchyard_state::{BudgetStore, MemoryBudgetStore, RedisBudgetStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::service::Billing;

/// Command-line arguments of the billing service.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// gRPC listen address.
    #[arg(
        long,
        default_value = "127.0.0.1:50053",
        env = "SWITCHYARD_BILLING_GRPC"
    )]
    pub grpc: SocketAddr,
    /// Ops (metrics, health) listen address.
    #[arg(
        long,
        default_value = "127.0.0.1:8083",
        env = "SWITCHYARD_BILLING_HTTP"
    )]
    pub http: SocketAddr,
    /// Redis URL; without it budgets live in this process only.
    #[arg(long, env = "SWITCHYARD_REDIS_URL")]
    pub redis: Option<String>,
    /// How often expired holds are looked for, ms.
    #[arg(long, default_value_t = 5_000, env = "SWITCHYARD_BILLING_RECONCILE_MS")]
    pub reconcile_ms: u64,
    /// How often the published policy is checked for new declared budgets, ms (with Redis).
    #[arg(long, default_value_t = 500, env = "SWITCHYARD_BILLING_POLICY_POLL_MS")]
    pub policy_poll_ms: u64,
}

/// A running billing service.
#[derive(Debug)]
pub struct BillingHandle {
    /// gRPC address.
    pub grpc_addr: SocketAddr,
    /// Ops address.
    pub http_addr: SocketAddr,
    drain: switchyard_runtime::drain::Drain,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl BillingHandle {
    /// Applies the budgets the published policy declares, checking for a new version every
    /// `every` (see [`crate::declared`]).
    pub fn follow_policy(
        &self,
        policy: Arc<dyn switchyard_state::PolicyStore>,
        store: Arc<dyn BudgetStore>,
        every: Duration,
    ) {
        self.tracker.spawn(crate::declared::follow(
            policy,
            store,
            every,
            self.shutdown.clone(),
        ));
    }

    /// Drains (not ready first, for the shutdown delay), stops accepting, lets the calls in
    /// flight finish, and waits.
    pub async fn shutdown(self) {
        self.drain.begin().await;
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Starts the service on the given listeners.
pub async fn start(
    store: Arc<dyn BudgetStore>,
    reconcile: Duration,
    grpc: TcpListener,
    http: TcpListener,
) -> Result<BillingHandle, String> {
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (grpc_addr, http_addr) = (
        grpc.local_addr().map_err(|e| e.to_string())?,
        http.local_addr().map_err(|e| e.to_string())?,
    );
    let billing = Billing::new(store, shutdown.clone());
    tracker.spawn(billing.clone().run_reconciler(reconcile));
    let drain = switchyard_runtime::drain::Drain::from_env();
    let grpc_server = switchyard_runtime::grpc::grpc_server(
        grpc,
        BillingServer::new(billing),
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
    Ok(BillingHandle {
        grpc_addr,
        http_addr,
        drain,
        shutdown,
        tracker,
    })
}

/// Runs until Ctrl-C or SIGTERM. Prints one JSON line with the bound addresses.
pub async fn run(args: Args) -> Result<(), String> {
    let store: Arc<dyn BudgetStore> = match &args.redis {
        Some(url) => Arc::new(
            RedisBudgetStore::open(url)
                .await
                .map_err(|e| e.to_string())?,
        ),
        None => Arc::new(MemoryBudgetStore::default()),
    };
    let stop = CancellationToken::new();
    let policy: Option<Arc<dyn switchyard_state::PolicyStore>> = match &args.redis {
        Some(url) => Some(Arc::new(
            switchyard_state::RedisPolicyStore::open(url, stop.clone())
                .await
                .map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    let handle = start(
        store.clone(),
        Duration::from_millis(args.reconcile_ms.max(100)),
        bind(args.grpc).await?,
        bind(args.http).await?,
    )
    .await?;
    if let Some(policy) = policy {
        handle.follow_policy(
            policy,
            store,
            Duration::from_millis(args.policy_poll_ms.max(50)),
        );
    }
    let ready = serde_json::json!({"grpc": handle.grpc_addr, "http": handle.http_addr});
    switchyard_runtime::print_stdout(&format!("{ready}\n")).map_err(|e| e.to_string())?;
    switchyard_runtime::shutdown_signal().await;
    handle.shutdown().await;
    stop.cancel();
    Ok(())
}
