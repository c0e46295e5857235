//! The `switchyard` command: runs a service, or all of them in one process (`switchyard up`),
//! and checks configuration files.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod check;
mod console;
mod ctl;
mod secrets;
mod up;

/// jemalloc with its background threads: memory freed after a burst is purged back to the
/// system within seconds (glibc's arenas kept the router's peak for good).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Run a policy service replica (same as the `switchyard-policy` binary).
    Policy(switchyard_policy::run::Args),
    /// Run a health prober replica (same as the `switchyard-health-prober` binary).
    Prober(switchyard_health_prober::run::Args),
    /// Run a router (needs Redis and the policy and billing services).
    Router(switchyard_router::run::Args),
    /// Run a billing replica (same as the `switchyard-billing` binary).
    Billing(switchyard_billing::run::Args),
    /// Seal an org's provider key (read from stdin) for the policy file's `byok` list.
    SealByok(secrets::SealArgs),
    /// Print a new random master key (base64 of 32 bytes) for SWITCHYARD_MASTER_KEY.
    NewMasterKey,
    /// Open-loop load at fixed rates against an OpenAI-compatible endpoint or a router's gRPC
    /// API; `--standard` runs the router overhead benchmark.
    Bench(bench::Args),
    /// Operate a running cluster: health, ejections, budgets, usage, overrides, keys, the
    /// policy version, the audit trail, and explain (a routing dry run).
    Ctl(ctl::Args),
    /// Serve the operator console (a web UI over the services' gRPC APIs).
    Console(console::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    let telemetry = switchyard_runtime::init_logging();
    let cli = Cli::parse();
    // A failed `ctl` command is not a usage error: exit 1, as scripts expect.
    let failure = if matches!(cli.command, Command::Ctl(_)) {
        1
    } else {
        2
    };
    let result = match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::CheckCatalog(args) => check::run(args),
        Command::Sim(args) => up::sim(args).await,
        Command::Policy(args) => switchyard_policy::run::run(args).await,
        Command::Prober(args) => switchyard_health_prober::run::run(args).await,
        Command::Billing(args) => switchyard_billing::run::run(args).await,
        Command::Router(args) => switchyard_router::run::run(args).await,
        Command::SealByok(args) => secrets::seal(args),
        Command::NewMasterKey => secrets::new_master_key(),
        Command::Bench(args) => bench::run(args).await,
        Command::Ctl(args) => ctl::run(args).await,
        Command::Console(args) => console::run(args).await,
    };
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // The one place the command talks to a person on stderr: config errors, listed.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("{message}");
            }
            ExitCode::from(failure)
        }
    }
}
