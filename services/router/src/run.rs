//! Process entry shared by `switchyard router` and `switchyard up`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use switchyard_config::Catalog;
use switchyard_providers::{ClientOptions, ProviderClient};
use switchyard_state::Retention;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handler::Router;
use crate::health_view::HealthView;
use crate::policy_view::PolicyWatcher;
use crate::reporter::Reporter;
pub use crate::stores::Stores;

/// Command-line arguments of a router.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The catalog, used until the policy service publishes one (and whenever it publishes
    /// none).
    #[arg(long, env = "SWITCHYARD_CATALOG")]
    pub catalog: PathBuf,
    /// HTTP listen address (OpenAI-compatible API, /metrics, /healthz, /readyz).
    #[arg(long, default_value = "127.0.0.1:8080", env = "SWITCHYARD_ROUTER_HTTP")]
    pub http: SocketAddr,
    /// gRPC listen address (switchyard.v1.Router, grpc.health.v1, reflection).
    #[arg(
        long,
        default_value = "127.0.0.1:50051",
        env = "SWITCHYARD_ROUTER_GRPC"
    )]
    pub grpc: SocketAddr,
    /// The policy service.
    #[arg(
        long,
        default_value = "http://127.0.0.1:50052",
        env = "SWITCHYARD_POLICY_URL"
    )]
    pub policy: String,
    /// The billing service.
    #[arg(
        long,
        default_value = "http://127.0.0.1:50053",
        env = "SWITCHYARD_BILLING_URL"
    )]
    pub billing: String,
    /// Redis, for health, budgets and the policy snapshot.
    #[arg(long, env = "SWITCHYARD_REDIS_URL")]
    pub redis: String,
    /// How long a budget hold outlives its request's deadline before the reconciler settles it
    /// at the held amount (the router died, or its usage report never arrived).
    #[arg(
        long,
        default_value_t = 300_000,
        env = "SWITCHYARD_ROUTER_HOLD_GRACE_MS"
    )]
    pub hold_grace_ms: u64,
    /// A budget hold (with the client limits checked in it) not answered by the state store
    /// within this counts as failed, and the org's budget fail mode applies.
    #[arg(long, default_value_t = 500, env = "SWITCHYARD_ROUTER_HOLD_TIMEOUT_MS")]
    pub hold_timeout_ms: u64,
    /// Budget leases: requests are admitted against a slice of their scopes' budget (and of
    /// their per-minute client limits) that this router reserves in advance, with no Redis
    /// round trip while the scopes are far from their limits. A lease unrenewed this long (its
    /// router died) expires and the reconciler gives its unused part back. 0 turns leases (and
    /// rate slices) off: every request is held on its own.
    #[arg(
        long,
        default_value_t = 5_000,
        env = "SWITCHYARD_ROUTER_BUDGET_LEASE_TTL_MS"
    )]
    pub budget_lease_ttl_ms: u64,
    /// Shared health records older than this read as unknown (keep it equal to the prober's
    /// `record_ttl_ms`); without fresh records the router detects outliers on its own.
    #[arg(
        long,
        default_value_t = 30_000,
        env = "SWITCHYARD_ROUTER_HEALTH_TTL_MS"
    )]
    pub health_ttl_ms: u64,
    /// On SIGTERM, keep serving this long with `/readyz` failing (and grpc.health.v1 reporting
    /// NOT_SERVING) so load balancers stop sending new requests before the listeners close.
    #[arg(long, default_value_t = 0, env = "SWITCHYARD_ROUTER_SHUTDOWN_DELAY_MS")]
    pub shutdown_delay_ms: u64,
    /// Then wait this long for in-flight requests and streams to finish; streams still open
    /// after it end with an error event (never silently).
    #[arg(
        long,
        default_value_t = 30_000,
        env = "SWITCHYARD_ROUTER_DRAIN_TIMEOUT_MS"
    )]
    pub drain_timeout_ms: u64,
    /// A connection that has not sent a request's headers within this is closed.
    #[arg(
        long,
        default_value_t = 10_000,
        env = "SWITCHYARD_ROUTER_HEADER_TIMEOUT_MS"
    )]
    pub header_timeout_ms: u64,
    /// A request body that has not arrived within this gets a 408 and its connection closed.
    #[arg(
        long,
        default_value_t = 30_000,
        env = "SWITCHYARD_ROUTER_BODY_TIMEOUT_MS"
    )]
    pub body_timeout_ms: u64,
    /// Open HTTP connections at most; past it new ones get a 503 and are closed.
    #[arg(
        long,
        default_value_t = 10_000,
        env = "SWITCHYARD_ROUTER_MAX_CONNECTIONS"
    )]
    pub max_connections: usize,
    /// Largest request line plus headers, bytes; past it a 431.
    #[arg(
        long,
        default_value_t = 65_536,
        env = "SWITCHYARD_ROUTER_MAX_HEADER_BYTES"
    )]
    pub max_header_bytes: usize,
    /// Threads that serve HTTP connections, each with a runtime of its own: a connection, its
    /// requests and their upstream connections stay on one thread. 0 (the default) serves
    /// them on the process's shared runtime, whose workers steal work from each other.
    #[arg(long, default_value_t = 0, env = "SWITCHYARD_ROUTER_HTTP_THREADS")]
    pub http_threads: usize,
    /// How long a stored Responses API response (`store: true`) is kept for
    /// `previous_response_id` and `GET /v1/responses/{id}`, seconds.
    #[arg(
        long,
        default_value_t = 30 * 86_400,
        env = "SWITCHYARD_ROUTER_RESPONSES_TTL_S"
    )]
    pub responses_ttl_s: u64,
    /// Requests that may wait at once for a route (every endpoint they may use out of capacity,
    /// or a `queue` workflow's preferred route down); past it, one that would wait is refused
    /// at once.
    #[arg(
        long,
        default_value_t = crate::queue::DEFAULT_CAPACITY,
        env = "SWITCHYARD_ROUTER_QUEUE_CAPACITY"
    )]
    pub queue_capacity: usize,
    /// How long each request's record (`GET /v1/generations/{id}`, `ctl requests`) is kept,
    /// seconds; 0: requests leave no record.
    #[arg(
        long,
        default_value_t = 6 * 3600,
        env = "SWITCHYARD_ROUTER_RECORDS_TTL_S"
    )]
    pub records_ttl_s: u64,
    /// Records kept per org and minute at most; past it a minute's later requests leave none
    /// (counted in `switchyard_request_records_dropped_total`).
    #[arg(
        long,
        default_value_t = 1_000,
        env = "SWITCHYARD_ROUTER_RECORDS_PER_MINUTE"
    )]
    pub records_per_minute: u64,
}

/// Settings of a router beyond its stores and peers.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// See [`Args::hold_grace_ms`].
    pub hold_grace: Duration,
    /// See [`Args::hold_timeout_ms`].
    pub hold_timeout: Duration,
    /// See [`Args::budget_lease_ttl_ms`]; `None`: no leases.
    pub budget_lease_ttl: Option<Duration>,
    /// See [`Args::health_ttl_ms`].
    pub health_ttl: Duration,
    /// See [`Args::shutdown_delay_ms`].
    pub shutdown_delay: Duration,
    /// See [`Args::drain_timeout_ms`].
    pub drain_timeout: Duration,
    /// The HTTP listener's limits.
    pub http: crate::listener::HttpLimits,
    /// See [`Args::responses_ttl_s`].
    pub responses_ttl: Duration,
    /// See [`Args::queue_capacity`].
    pub queue_capacity: usize,
    /// See [`Args::http_threads`]; 0 serves on the caller's runtime.
    pub http_threads: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            hold_grace: Duration::from_secs(300),
            hold_timeout: crate::budget_gate::HOLD_TIMEOUT,
            budget_lease_ttl: Some(crate::budget_lease::LEASE_TTL),
            health_ttl: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(30),
            http: crate::listener::HttpLimits::default(),
            responses_ttl: Duration::from_secs(30 * 86_400),
            queue_capacity: crate::queue::DEFAULT_CAPACITY,
            http_threads: 0,
        }
    }
}

/// A running router.
#[derive(Debug)]
pub struct RouterHandle {
    /// HTTP address.
    pub http_addr: SocketAddr,
    /// gRPC address.
    pub grpc_addr: SocketAddr,
    /// Readiness goes false, for the shutdown delay.
    drain: switchyard_runtime::drain::Drain,
    /// The listeners stop accepting; in-flight requests and streams go on.
    accept: CancellationToken,
    /// Streams still open at the drain deadline end with an error event.
    abort: CancellationToken,
    /// Usage reports, outcome counters and the watchers flush and stop.
    shutdown: CancellationToken,
    servers: TaskTracker,
    tracker: TaskTracker,
    settings: Settings,
    /// The HTTP serving threads; they end when the handle is dropped, after the shutdown.
    _shards: Option<Arc<crate::shards::Shards>>,
}

impl RouterHandle {
    /// Stops gracefully: readiness goes false first (for `shutdown_delay`, still serving), then
    /// the listeners close and in-flight requests and streams finish (up to `drain_timeout`,
    /// after which open streams end with an error event), then usage reports and outcome
    /// counters are flushed.
    pub async fn shutdown(self) {
        let started = tokio::time::Instant::now();
        self.drain.begin().await;
        self.accept.cancel();
        self.servers.close();
        if tokio::time::timeout(self.settings.drain_timeout, self.servers.wait())
            .await
            .is_err()
        {
            tracing::warn!(deadline = ?self.settings.drain_timeout, "drain deadline passed; ending the streams still open");
            self.abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), self.servers.wait()).await;
        }
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        tracing::info!(took = ?started.elapsed(), "router stopped");
    }
}

/// Starts a router on `http`.
pub async fn start(
    catalog: &Catalog,
    stores: Stores,
    policy_url: String,
    billing_url: String,
    http: TcpListener,
    grpc: TcpListener,
    settings: Settings,
) -> Result<RouterHandle, String> {
    let shutdown = CancellationToken::new();
    let drain = switchyard_runtime::drain::Drain::new(settings.shutdown_delay);
    let (accept, abort) = (CancellationToken::new(), CancellationToken::new());
    let tracker = TaskTracker::new();
    let servers = TaskTracker::new();
    let http_addr = http.local_addr().map_err(|e| e.to_string())?;
    let grpc_addr = grpc.local_addr().map_err(|e| e.to_string())?;
    let watcher = PolicyWatcher::spawn(policy_url, stores.policy, shutdown.clone());
    let health = HealthView::spawn(
        stores.health.clone(),
        settings.health_ttl,
        Duration::from_secs(2),
        shutdown.clone(),
    );
    let (reporter, reporter_task) = Reporter::spawn(
        billing_url,
        262_144,
        shutdown.clone(),
        Duration::from_secs(10),
    );
    tracker.spawn(async move {
        let _ = reporter_task.await;
    });
    let client = ProviderClient::new(ClientOptions::default()).map_err(|e| e.to_string())?;
    let outcomes = crate::outcomes::OutcomeWriter::spawn(
        stores.health.clone(),
        Duration::from_secs(1),
        shutdown.clone(),
    );
    let leases = settings.budget_lease_ttl.map(|ttl| {
        let book =
            crate::budget_lease::LeaseBook::new(stores.budgets.clone(), ttl, settings.hold_timeout);
        tracker.spawn(book.clone().run(shutdown.clone()));
        tracker.spawn(book.rates().clone().run(shutdown.clone()));
        book
    });
    let mut router = Router::from_catalog(
        catalog,
        watcher.clone(),
        health.clone(),
        stores.budgets,
        reporter,
        client,
    );
    router.leases = leases;
    router.records = stores.records.map(|log| {
        let (recorder, task) = crate::records::Recorder::spawn(log, shutdown.clone());
        tracker.spawn(async move {
            let _ = task.await;
        });
        recorder
    });
    router.outcomes = Some(outcomes);
    router.hold_grace = settings.hold_grace;
    router.hold_timeout = settings.hold_timeout;
    router.idempotency = Some(stores.idempotency);
    router.responses = Some((stores.responses, settings.responses_ttl));
    router.queue_capacity = settings.queue_capacity;
    router.abort = abort.clone();
    let router = Arc::new(router.build());
    let r = router.clone();
    let ready = drain.readiness(Arc::new(move || {
        let p = watcher.current();
        let catalog = r.catalog();
        let detail = serde_json::json!({
            "policy_version": p.as_ref().map(|p| p.version),
            "catalog_version": catalog.version,
            "catalog_published": catalog.published,
            "policy_stale": watcher.is_stale(),
            "health_stale": health.is_stale(),
        });
        (p.is_some(), detail)
    }));
    let grpc_server = switchyard_runtime::grpc::grpc_server(
        grpc,
        switchyard_proto::v1::router_server::RouterServer::new(crate::grpc::RouterGrpc::new(
            router.clone(),
        )),
        drain.token(),
        accept.clone(),
    )
    .await?;
    servers.spawn(grpc_server);
    let app =
        crate::http::routes(router, settings.http).merge(switchyard_runtime::ops::routes(ready));
    let shards = match settings.http_threads {
        0 => None,
        n => {
            Some(Arc::new(crate::shards::Shards::start(n).map_err(|e| {
                format!("cannot start the HTTP threads: {e}")
            })?))
        }
    };
    servers.spawn(crate::listener::serve(
        http,
        app,
        settings.http,
        accept.clone(),
        servers.clone(),
        shards.clone(),
    ));
    Ok(RouterHandle {
        http_addr,
        grpc_addr,
        drain,
        accept,
        abort,
        shutdown,
        servers,
        tracker,
        settings,
        _shards: shards,
    })
}

/// Runs a router until Ctrl-C or SIGTERM. Prints one JSON line with its address.
pub async fn run(args: Args) -> Result<(), String> {
    // The local file until the policy publishes a catalog (then it is only a bootstrap).
    let catalog = Catalog::load(&args.catalog).map_err(|e| e.to_string())?;
    let stop = CancellationToken::new();
    let records = (args.records_ttl_s > 0).then(|| Retention {
        ttl: Duration::from_secs(args.records_ttl_s),
        per_minute: args.records_per_minute,
    });
    let stores = Stores::redis(&args.redis, records, &stop).await?;
    let http = TcpListener::bind(args.http)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.http))?;
    let grpc = TcpListener::bind(args.grpc)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.grpc))?;
    let settings = Settings {
        hold_grace: Duration::from_millis(args.hold_grace_ms),
        hold_timeout: Duration::from_millis(args.hold_timeout_ms),
        budget_lease_ttl: (args.budget_lease_ttl_ms > 0)
            .then(|| Duration::from_millis(args.budget_lease_ttl_ms)),
        health_ttl: Duration::from_millis(args.health_ttl_ms),
        shutdown_delay: Duration::from_millis(args.shutdown_delay_ms),
        drain_timeout: Duration::from_millis(args.drain_timeout_ms),
        responses_ttl: Duration::from_secs(args.responses_ttl_s),
        queue_capacity: args.queue_capacity,
        http_threads: args.http_threads,
        http: crate::listener::HttpLimits {
            header_read_timeout: Duration::from_millis(args.header_timeout_ms),
            body_read_timeout: Duration::from_millis(args.body_timeout_ms),
            max_connections: args.max_connections,
            max_header_bytes: args.max_header_bytes,
        },
    };
    let handle = start(
        &catalog,
        stores,
        args.policy,
        args.billing,
        http,
        grpc,
        settings,
    )
    .await?;
    switchyard_runtime::print_stdout(&format!(
        "{}\n",
        serde_json::json!({"http": handle.http_addr, "grpc": handle.grpc_addr})
    ))
    .map_err(|e| e.to_string())?;
    switchyard_runtime::shutdown_signal().await;
    handle.shutdown().await;
    stop.cancel();
    Ok(())
}
