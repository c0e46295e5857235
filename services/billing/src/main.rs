//! `switchyard-billing [--redis URL]`: one billing replica.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "Switchyard billing service")]
struct Cli {
    #[command(flatten)]
    args: switchyard_billing::run::Args,
}

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry = switchyard_runtime::init_logging();
    match switchyard_billing::run::run(Cli::parse().args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(2)
        }
    }
}
