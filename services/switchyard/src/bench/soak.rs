//! The memory soak (`switchyard bench --soak-s N`): the standard benchmark's cluster under one
//! steady rate for a long while, then idle, reading the router's RSS all along. It answers one
//! question: does the router's memory come back after load, or does it ratchet? The warm level
//! is read after a minute of the same rate (pools, caches and the allocator's arenas are full by
//! then); the run passes when, after the idle time, RSS is within 20 % of it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::cluster::{plan, start};
use super::load;

/// How far above its warm level the router's RSS may end.
const WITHIN: f64 = 0.20;

/// Settings of a soak.
#[derive(Debug, Clone)]
pub struct Soak {
    /// Requests per second, open loop, through the router.
    pub rate: u32,
    /// How long the load lasts.
    pub load: Duration,
    /// How long the router then sits idle before the last reading.
    pub idle: Duration,
    /// The `switchyard` binary the cluster runs from (default: this one).
    pub cluster_exe: Option<PathBuf>,
    /// Where the report goes (Markdown).
    pub out: PathBuf,
}

/// Runs the soak; an error when RSS did not come back within 20 % of its warm level.
pub async fn run(s: &Soak) -> Result<(), String> {
    let exe = match &s.cluster_exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().map_err(|e| e.to_string())?,
    };
    let c = start(&exe).await?;
    let warm_up = Duration::from_secs(60).min(s.load);
    println!("warming up: {} req/s for {warm_up:?}", s.rate);
    load::run(&plan(&c.through, s.rate, warm_up, false)).await?;
    let warm = c.router_rss();
    println!("warm RSS {warm:.1} MB; {} req/s for {:?}", s.rate, s.load);
    let mut lines = Vec::new();
    let (mut peak, mut sent, mut errors) = (warm, 0u64, 0u64);
    let started = Instant::now();
    while started.elapsed() < s.load {
        let chunk = Duration::from_secs(30).min(s.load - started.elapsed());
        let r = load::run(&plan(&c.through, s.rate, chunk, false)).await?;
        let rss = c.router_rss();
        peak = peak.max(rss);
        sent += r.sent;
        errors += r.errors + r.dropped;
        let line = format!(
            "| {:>4} s | load | {rss:.1} MB | p50 {:.2} / p99 {:.2} ms, {} errors |",
            started.elapsed().as_secs(),
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.errors + r.dropped
        );
        println!("{line}");
        lines.push(line);
    }
    let loaded = c.router_rss();
    let idle_from = Instant::now();
    while idle_from.elapsed() < s.idle {
        tokio::time::sleep(Duration::from_secs(10).min(s.idle - idle_from.elapsed())).await;
        let line = format!(
            "| {:>4} s | idle | {:.1} MB | |",
            started.elapsed().as_secs(),
            c.router_rss()
        );
        println!("{line}");
        lines.push(line);
    }
    let end = c.router_rss();
    let ok = end <= warm * (1.0 + WITHIN);
    let md = format!(
        "Soak: {} req/s for {:?} through the router (budgets on), then idle for {:?}.\n\n\
         Router RSS: warm {warm:.1} MB, peak {peak:.1} MB, at the end of the load {loaded:.1} MB, \
         after idle {end:.1} MB ({:+.0} % of warm: {} {:.0} %). {sent} requests, {errors} errors.\n\n\
         | time | phase | router RSS | latency |\n|---|---|---|---|\n{}\n",
        s.rate,
        s.load,
        s.idle,
        (end / warm - 1.0) * 100.0,
        if ok { "within" } else { "not within" },
        WITHIN * 100.0,
        lines.join("\n")
    );
    println!("\n{md}");
    if let Some(parent) = s.out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(&s.out, &md).map_err(|e| format!("cannot write {}: {e}", s.out.display()))?;
    println!("written to {}", s.out.display());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "router RSS ended at {end:.1} MB, more than {:.0} % over its warm {warm:.1} MB",
            WITHIN * 100.0
        ))
    }
}
