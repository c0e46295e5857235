//! `switchyard up` (everything in one process) and `switchyard sim`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use switchyard_config::{Catalog, catalog};
use switchyard_health_prober::config::ProberConfig;
use switchyard_health_prober::prober::Prober;
use switchyard_provider_sim::{SimConfig, config::ENV_PREFIX as SIM_ENV_PREFIX};
use switchyard_providers::{ClientOptions, ProviderClient};
use tokio::net::TcpListener;

const DEMO_CATALOG: &str = include_str!("../../../deploy/config/catalog.demo.yaml");
const DEMO_SIM: &str = include_str!("../../../deploy/config/provider-sim.demo.yaml");
const DEMO_POLICY: &str = include_str!("../../../deploy/config/policy.demo.yaml");

/// Arguments of `up`.
#[derive(clap::Args)]
pub struct Args {
    /// Catalog to load instead of the built-in demo catalog.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Simulator config instead of the built-in demo providers.
    #[arg(long)]
    sim_config: Option<PathBuf>,
    /// Policy file instead of the built-in demo policy (demo key `sk-switchyard-demo`).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Bind every listener on a free port instead of the documented defaults.
    #[arg(long)]
    ephemeral: bool,
    /// Keep health, budgets, policy snapshots and idempotency keys in this Redis instead of
    /// in memory (so routers started separately can join).
    #[arg(long, env = "SWITCHYARD_REDIS_URL")]
    redis: Option<String>,
}

/// Arguments of `sim`.
#[derive(clap::Args)]
pub struct SimArgs {
    /// Simulator config (YAML); overrides: SWITCHYARD_SIM__SECTION__KEY=value.
    #[arg(long)]
    config: PathBuf,
}

fn load_sim(path: Option<&PathBuf>) -> Result<SimConfig, String> {
    match path {
        Some(p) => switchyard_config::load_file(p, SIM_ENV_PREFIX),
        None => switchyard_config::read_text(
            "built-in deploy/config/provider-sim.demo.yaml",
            DEMO_SIM,
            SIM_ENV_PREFIX,
        )
        .and_then(|src| switchyard_config::parse_value(&src.name, src.value)),
    }
    .map_err(|e| e.to_string())
}

async fn bind(ephemeral: bool, addr: &str) -> Result<TcpListener, String> {
    let addr: SocketAddr = if ephemeral { "127.0.0.1:0" } else { addr }
        .parse()
        .map_err(|e| format!("{e}"))?;
    TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot listen on {addr}: {e} (is another switchyard running? try --ephemeral)")
    })
}

/// Starts the whole system on loopback and runs until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> Result<(), String> {
    let mut sim_config = load_sim(args.sim_config.as_ref())?;
    if args.ephemeral {
        sim_config.control = SocketAddr::from(([127, 0, 0, 1], 0));
        for p in &mut sim_config.providers {
            p.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        }
    }
    let sim = switchyard_provider_sim::start(sim_config)
        .await
        .map_err(|e| e.to_string())?;
    let (catalog_name, mut catalog) = match &args.catalog {
        Some(p) => (
            p.display().to_string(),
            Catalog::load(p).map_err(|e| e.to_string())?,
        ),
        None => {
            let src = switchyard_config::read_text(
                "built-in deploy/config/catalog.demo.yaml",
                DEMO_CATALOG,
                catalog::ENV_PREFIX,
            )
            .map_err(|e| e.to_string())?;
            (
                "built-in demo".to_string(),
                Catalog::from_value(&src.name, src.value).map_err(|e| e.to_string())?,
            )
        }
    };
    if args.catalog.is_none() {
        // The demo catalog names the simulated providers; point it at where they really listen.
        for p in &mut catalog.providers {
            if let Some(url) = sim.base_url(p.id.as_str()) {
                p.base_url = url;
            }
        }
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let policy_file = match &args.policy {
        Some(p) => p.clone(),
        None => {
            let f = dir.path().join("policy.demo.yaml");
            std::fs::write(&f, DEMO_POLICY).map_err(|e| e.to_string())?;
            f
        }
    };

    let e = args.ephemeral;
    let stop = tokio_util::sync::CancellationToken::new();
    let stores = match &args.redis {
        Some(url) => {
            let records = Some(switchyard_state::Retention::default());
            switchyard_router::run::Stores::redis(url, records, &stop).await?
        }
        None => switchyard_router::run::Stores::memory(),
    };
    let state_name = match &args.redis {
        Some(url) => format!("redis {}", redact_url(url)),
        None => "in memory (this process)".to_string(),
    };
    let policy_store = stores.policy.clone().ok_or("no policy store")?;
    let (budgets, health) = (stores.budgets.clone(), stores.health.clone());
    let master = switchyard_policy::crypto::MasterKey::from_env().map_err(|e| e.to_string())?;
    let policy = switchyard_policy::server::start(
        policy_file,
        None,
        policy_store.clone(),
        master,
        bind(e, "127.0.0.1:50052").await?,
        bind(e, "127.0.0.1:8082").await?,
        false,
    )
    .await
    .map_err(|e| e.to_string())?;
    let billing = switchyard_billing::run::start(
        budgets.clone(),
        Duration::from_secs(5),
        bind(e, "127.0.0.1:50053").await?,
        bind(e, "127.0.0.1:8083").await?,
    )
    .await?;
    billing.follow_policy(
        policy_store.clone(),
        budgets.clone(),
        Duration::from_millis(500),
    );
    let client = ProviderClient::new(ClientOptions::default()).map_err(|e| e.to_string())?;
    let prober = Prober::new(
        &catalog,
        health.clone(),
        Some(policy_store.clone()),
        client,
        ProberConfig::default(),
        "up".into(),
    );
    let prober = switchyard_health_prober::run::start(
        prober,
        bind(e, "127.0.0.1:50054").await?,
        bind(e, "127.0.0.1:8084").await?,
    )
    .await?;
    let router = switchyard_router::run::start(
        &catalog,
        stores,
        format!("http://{}", policy.grpc_addr),
        format!("http://{}", billing.grpc_addr),
        bind(e, "127.0.0.1:8080").await?,
        bind(e, "127.0.0.1:50051").await?,
        switchyard_router::run::Settings::default(),
    )
    .await?;

    let console = crate::console::start(
        bind(e, "127.0.0.1:8090").await?,
        crate::console::Backends {
            addrs: [
                format!("http://{}", policy.grpc_addr),
                format!("http://{}", billing.grpc_addr),
                format!("http://{}", prober.grpc_addr),
                format!("http://{}", router.grpc_addr),
            ],
            timeout: Duration::from_secs(5),
        },
        stop.clone(),
    )
    .await?;

    let mut text = format!(
        "switchyard up\n  console    http://{console}  (operator console; sign in with an API key)\n  router     http://{}  (OpenAI-compatible API; /metrics /healthz /readyz)  grpc {}\n  policy     grpc {}  ops {}\n  billing    grpc {}  ops {}\n  prober     grpc {}  ops {}\n  catalog    {catalog_name} ({} providers, {} models, {} endpoints)\n  state      {state_name}\n  simulated providers (control API {}):\n",
        router.http_addr,
        router.grpc_addr,
        policy.grpc_addr,
        policy.http_addr,
        billing.grpc_addr,
        billing.http_addr,
        prober.grpc_addr,
        prober.http_addr,
        catalog.providers.len(),
        catalog.models.len(),
        catalog.endpoints.len(),
        sim.control_url()
    );
    for (id, format, _) in &sim.providers {
        let url = sim.base_url(id).unwrap_or_default();
        text.push_str(&format!(
            "    {id:<16} {:<10} {url}\n",
            format!("{format:?}").to_lowercase()
        ));
    }
    if args.policy.is_none() {
        text.push_str(&format!(
            "  demo key   sk-switchyard-demo (dev only); sk-switchyard-admin signs in to the console as an admin\n  try        curl http://{}/v1/chat/completions -H 'authorization: Bearer sk-switchyard-demo' -H 'content-type: application/json' -d '{{\"model\": \"demo-fast\", \"messages\": [{{\"role\": \"user\", \"content\": \"hello\"}}]}}'\n",
            router.http_addr
        ));
    }
    text.push_str("  ready; Ctrl-C stops\n");
    if let Err(e) = switchyard_runtime::print_stdout(&text) {
        tracing::warn!(error = %e, "cannot print to stdout; serving anyway");
    }
    switchyard_runtime::shutdown_signal().await;
    router.shutdown().await;
    prober.shutdown().await;
    billing.shutdown().await;
    policy.shutdown().await;
    sim.shutdown().await;
    stop.cancel();
    Ok(())
}

/// Runs the provider simulator alone.
pub async fn sim(args: SimArgs) -> Result<(), String> {
    switchyard_provider_sim::run_until_signal(load_sim(Some(&args.config))?).await
}

/// A Redis URL without its password, for printing.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redis_passwords_are_not_printed() {
        assert_eq!(
            redact_url("redis://:hunter2@cache:6379/0"),
            "redis://***@cache:6379/0"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
