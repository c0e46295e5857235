//! `switchyard bench`: an open-loop load generator for any OpenAI-compatible endpoint or a
//! Switchyard router's gRPC API, and the standard benchmark of the router's overhead.

use std::path::PathBuf;
use std::time::Duration;

mod cluster;
pub mod load;
mod soak;
mod standard;

/// Arguments of `bench`.
#[derive(clap::Args)]
pub struct Args {
    /// An OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1.
    #[arg(long, conflicts_with = "grpc")]
    url: Option<String>,
    /// A router's gRPC address instead, e.g. http://127.0.0.1:50051.
    #[arg(long)]
    grpc: Option<String>,
    /// Bearer key.
    #[arg(
        long,
        env = "SWITCHYARD_BENCH_KEY",
        default_value = "sk-switchyard-demo"
    )]
    key: String,
    /// Model.
    #[arg(long, default_value = "demo-fast")]
    model: String,
    /// Requests per second; several (comma-separated) run one after the other.
    #[arg(long, value_delimiter = ',', default_values_t = [100u32])]
    rate: Vec<u32>,
    /// Seconds per rate.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Streamed requests (TTFT is reported).
    #[arg(long)]
    stream: bool,
    /// `max_tokens` of each request.
    #[arg(long, default_value_t = 16)]
    max_tokens: u32,
    /// How requests keep their schedule: `tick` on the async runtime's millisecond timer (those
    /// due within a tick leave together), `even` each at its own time from a pacing thread.
    #[arg(long, value_enum, default_value_t = load::Pacing::Tick)]
    pacing: load::Pacing,
    /// One JSON object per rate instead of text.
    #[arg(long)]
    json: bool,
    /// The standard benchmark instead: starts its own cluster and simulator (needs
    /// redis-server) and writes a Markdown table.
    #[arg(long, conflicts_with_all = ["url", "grpc"])]
    standard: bool,
    /// Where the standard benchmark writes its table.
    #[arg(long, default_value = "target/bench/standard.md")]
    out: PathBuf,
    /// The standard benchmark's window, seconds (each pair is a direct and a through window).
    #[arg(long, default_value_t = 2)]
    window_s: u64,
    /// The standard benchmark's pairs of windows per rate and upstream latency.
    #[arg(long, default_value_t = 5)]
    pairs: usize,
    /// The standard benchmark's upstream latencies, ms (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [0u64, 10])]
    upstream_ms: Vec<u64>,
    /// Streams the standard benchmark holds open through the router while it reads its memory.
    #[arg(long, default_value_t = 1000)]
    open_streams: usize,
    /// The standard benchmark runs its cluster (simulator, Redis aside) from this `switchyard`
    /// binary instead of itself, to compare two builds with the same load.
    #[arg(long)]
    cluster_exe: Option<PathBuf>,
    /// A memory soak instead: the standard cluster under one rate (`--rate`, default 4000) for
    /// this many seconds, then idle; fails when the router's RSS does not come back within 20 %
    /// of its warm level.
    #[arg(long, conflicts_with_all = ["url", "grpc", "standard"])]
    soak_s: Option<u64>,
    /// Seconds the soak leaves the router idle before its last reading.
    #[arg(long, default_value_t = 120)]
    idle_s: u64,
}

/// Runs `bench`. Interrupted (Ctrl-C, SIGTERM), it stops what it started before exiting: the
/// cluster's processes are killed when they are dropped, which a signal's default action would
/// skip, leaving them running.
pub async fn run(args: Args) -> Result<(), String> {
    tokio::select! {
        done = measure(args) => done,
        () = switchyard_runtime::shutdown_signal() => {
            Err("interrupted: the benchmark's processes were stopped".into())
        }
    }
}

async fn measure(args: Args) -> Result<(), String> {
    if let Some(soak_s) = args.soak_s {
        return soak::run(&soak::Soak {
            rate: if args.rate == [100] {
                4000
            } else {
                args.rate[0]
            },
            load: Duration::from_secs(soak_s),
            idle: Duration::from_secs(args.idle_s),
            cluster_exe: args.cluster_exe,
            out: args.out.with_file_name("soak.md"),
        })
        .await;
    }
    if args.standard {
        let rates = if args.rate == [100] {
            vec![1000, 4000, 8000]
        } else {
            args.rate.clone()
        };
        return standard::run(&standard::Standard {
            rates,
            upstream_ms: args.upstream_ms,
            window: Duration::from_secs(args.window_s),
            pairs: args.pairs.max(1),
            open_streams: args.open_streams,
            cluster_exe: args.cluster_exe,
            out: args.out,
            pacing: args.pacing,
        })
        .await;
    }
    let target =
        match (args.url, args.grpc) {
            (Some(url), None) => load::Target::Http(url),
            (None, Some(grpc)) => load::Target::Grpc(grpc),
            _ => return Err(
                "give --url (OpenAI-compatible base URL) or --grpc (router address), or --standard"
                    .into(),
            ),
        };
    for rate in args.rate {
        let plan = load::Plan {
            target: target.clone(),
            key: args.key.clone(),
            model: args.model.clone(),
            rate,
            duration: Duration::from_secs(args.duration_s),
            stream: args.stream,
            max_tokens: args.max_tokens,
            max_in_flight: 20_000,
            pacing: args.pacing,
        };
        let report = load::run(&plan).await?;
        let line = if args.json {
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        } else {
            report.to_string()
        };
        switchyard_runtime::print_stdout(&format!("{line}\n")).map_err(|e| e.to_string())?;
    }
    Ok(())
}
