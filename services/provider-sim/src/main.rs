//! `switchyard-provider-sim --config sim.yaml`: serves the simulated providers and prints one JSON
//! line with the bound addresses (`{"control": …, "providers": {id: base_url}}`) once ready.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use switchyard_provider_sim::{SimConfig, config::ENV_PREFIX, run_until_signal};

#[derive(Parser)]
#[command(version, about = "Simulated LLM providers with fault injection")]
struct Args {
    /// Simulator config (YAML); overrides: SWITCHYARD_SIM__SECTION__KEY=value.
    #[arg(long, env = "SWITCHYARD_SIM_CONFIG")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry = switchyard_runtime::init_logging();
    let args = Args::parse();
    let result = match switchyard_config::load_file::<SimConfig>(&args.config, ENV_PREFIX) {
        Ok(config) => run_until_signal(config).await,
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(2)
        }
    }
}
