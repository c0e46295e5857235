//! `switchyard console`: the operator console in the browser. A page (HTML, script and style
//! embedded in this binary, nothing fetched from anywhere else) and a JSON API behind it that
//! calls the services' gRPC APIs the way `ctl` does — and returns what `ctl --json` prints.
//! Operators sign in with an API key: any key reads, a key with the `admin` scope changes
//! (ejections, budgets, overrides), each change audited with the key as the actor.

mod api;
mod auth;
mod changes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Arguments of `console`.
#[derive(clap::Args)]
pub struct Args {
    /// Where the console listens (HTTP).
    #[arg(
        long,
        default_value = "127.0.0.1:8090",
        env = "SWITCHYARD_CONSOLE_HTTP"
    )]
    pub http: SocketAddr,
    /// The policy service's gRPC address.
    #[arg(
        long,
        env = "SWITCHYARD_POLICY_ADDR",
        default_value = "http://127.0.0.1:50052"
    )]
    pub policy: String,
    /// The billing service's gRPC address.
    #[arg(
        long,
        env = "SWITCHYARD_BILLING_ADDR",
        default_value = "http://127.0.0.1:50053"
    )]
    pub billing: String,
    /// The health prober's gRPC address.
    #[arg(
        long,
        env = "SWITCHYARD_PROBER_ADDR",
        default_value = "http://127.0.0.1:50054"
    )]
    pub prober: String,
    /// A router's gRPC address (request records and explain, with the operator's key).
    #[arg(
        long,
        env = "SWITCHYARD_ROUTER_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub router: String,
    /// Seconds to wait for a service.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
    /// Client certificate for mutual TLS with the services (PEM; with --tls-key and --tls-ca).
    #[arg(long, env = "SWITCHYARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "SWITCHYARD_TLS_KEY", hide_env_values = true)]
    pub tls_key: Option<PathBuf>,
    /// The CA the services' certificates are signed by (PEM).
    #[arg(long, env = "SWITCHYARD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

/// The services behind the console: policy, billing, prober and a router, in that order.
#[derive(Debug, Clone)]
pub struct Backends {
    pub addrs: [String; 4],
    pub timeout: Duration,
}

/// Serves the console on `listener` until `stop`.
pub async fn start(
    listener: TcpListener,
    backends: Backends,
    stop: CancellationToken,
) -> Result<SocketAddr, String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = api::routes(Arc::new(api::Console::new(backends)));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the console stopped serving");
        }
    });
    Ok(addr)
}

/// Runs the console until Ctrl-C or SIGTERM. Prints one JSON line with its address.
pub async fn run(args: Args) -> Result<(), String> {
    switchyard_runtime::tls::init(
        switchyard_runtime::tls::TlsFiles::from_parts(args.tls_cert, args.tls_key, args.tls_ca)
            .map_err(|e| format!("error: {e}"))?,
    )
    .map_err(|e| format!("error: {e}"))?;
    let listener = TcpListener::bind(args.http)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.http))?;
    let stop = CancellationToken::new();
    let backends = Backends {
        addrs: [args.policy, args.billing, args.prober, args.router],
        timeout: Duration::from_secs_f64(args.timeout.clamp(0.1, 3600.0)),
    };
    let addr = start(listener, backends, stop.clone()).await?;
    switchyard_runtime::print_stdout(&format!("{}\n", serde_json::json!({ "http": addr })))
        .map_err(|e| e.to_string())?;
    switchyard_runtime::shutdown_signal().await;
    stop.cancel();
    Ok(())
}
