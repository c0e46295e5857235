//! `switchyard-policy --config policy.yaml [--redis URL]`: one policy replica.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "Switchyard policy service")]
struct Cli {
    #[command(flatten)]
    args: switchyard_policy::run::Args,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry = switchyard_runtime::init_logging();
    match switchyard_policy::run::run(Cli::parse().args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(2)
        }
    }
}
