//! `switchyard up` and `switchyard sim`.

use std::path::PathBuf;

use switchyard_config::{Catalog, catalog};
use switchyard_provider_sim::{SimConfig, config::ENV_PREFIX as SIM_ENV_PREFIX};

const DEMO_CATALOG: &str = include_str!("../../../deploy/config/catalog.demo.yaml");
const DEMO_SIM: &str = include_str!("../../../deploy/config/provider-sim.demo.yaml");

/// Arguments of `up`.
#[derive(clap::Args)]
pub struct Args {
    /// Catalog to load instead of the built-in demo catalog.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Simulator config instead of the built-in demo providers.
    #[arg(long)]
    sim_config: Option<PathBuf>,
}

/// Arguments of `sim`.
#[derive(clap::Args)]
pub struct SimArgs {
    /// Simulator config (YAML); overrides: SWITCHYARD_SIM__SECTION__KEY=value.
    #[arg(long)]
    config: PathBuf,
}

fn load_catalog(path: Option<&PathBuf>) -> Result<(String, Catalog), String> {
    let loaded = match path {
        Some(p) => Catalog::load(p).map(|c| (p.display().to_string(), c)),
        None => switchyard_config::read_text(
            "built-in deploy/config/catalog.demo.yaml",
            DEMO_CATALOG,
            catalog::ENV_PREFIX,
        )
        .and_then(|src| Catalog::from_value(&src.name, src.value))
        .map(|c| ("built-in demo".to_string(), c)),
    };
    loaded.map_err(|e| e.to_string())
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

/// Starts what the single-process cluster has so far, prints where it listens, and runs until
/// Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> Result<(), String> {
    let (catalog_name, catalog) = load_catalog(args.catalog.as_ref())?;
    let sim_config = load_sim(args.sim_config.as_ref())?;
    let sim = switchyard_provider_sim::start(sim_config)
        .await
        .map_err(|e| e.to_string())?;
    let mut text = format!(
        "switchyard up\n  catalog: {catalog_name} ({} providers, {} models, {} endpoints)\n  simulated providers (control API {}):\n",
        catalog.providers.len(),
        catalog.models.len(),
        catalog.endpoints.len(),
        sim.control_url()
    );
    for (id, format, _) in &sim.providers {
        let url = sim.base_url(id).unwrap_or_default();
        let format = format!("{format:?}").to_lowercase();
        text.push_str(&format!("    {id:<16} {format:<10} {url}\n"));
    }
    text.push_str("  ready; Ctrl-C stops\n");
    if let Err(e) = switchyard_runtime::print_stdout(&text) {
        tracing::warn!(error = %e, "cannot print to stdout; serving anyway");
    }
    switchyard_runtime::shutdown_signal().await;
    sim.shutdown().await;
    Ok(())
}

/// Runs the provider simulator alone.
pub async fn sim(args: SimArgs) -> Result<(), String> {
    switchyard_provider_sim::run_until_signal(load_sim(Some(&args.config))?).await
}
