//! `switchyard-health-prober --catalog catalog.yaml [--redis URL]`: one prober replica.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "Switchyard health prober")]
struct Cli {
    #[command(flatten)]
    args: switchyard_health_prober::run::Args,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry = switchyard_runtime::init_logging();
    match switchyard_health_prober::run::run(Cli::parse().args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(2)
        }
    }
}
