//! `switchyard-provider-sim --config sim.yaml`: serves the simulated providers and prints one JSON
//! line with the bound addresses (`{"control": …, "providers": {id: base_url}}`) once ready.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use switchyard_provider_sim::{SimConfig, config::ENV_PREFIX, start};

#[derive(Parser)]
#[command(version, about = "Simulated LLM providers with fault injection")]
struct Args {
    /// Simulator config (YAML); overrides: SWITCHYARD_SIM__SECTION__KEY=value.
    #[arg(long, env = "SWITCHYARD_SIM_CONFIG")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let config: SimConfig = match switchyard_config::load_file(&args.config, ENV_PREFIX) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let sim = match start(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match serde_json::to_string(&sim.ready()) {
        Ok(line) => println!("{line}"),
        Err(e) => tracing::error!(error = %e, "cannot print addresses"),
    }
    shutdown_signal().await;
    sim.shutdown().await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
