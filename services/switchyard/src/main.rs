//! The `switchyard` command: runs a service, or all of them in one process (`switchyard up`),
//! and checks configuration files.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;
mod up;

#[derive(Parser)]
#[command(name = "switchyard", version, about = "LLM routing gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process on loopback with simulated providers (the demo).
    Up(up::Args),
    /// Validate a catalog file and report every error with its path.
    CheckCatalog(check::Args),
    /// Run the provider simulator (same as the `switchyard-provider-sim` binary).
    Sim(up::SimArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    switchyard_runtime::init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::CheckCatalog(args) => check::run(args),
        Command::Sim(args) => up::sim(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // The one place the command talks to a person on stderr: config errors, listed.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("{message}");
            }
            ExitCode::from(2)
        }
    }
}
