//! The standard benchmark (`switchyard bench --standard`, `just bench`): the provider simulator
//! measured directly and through the whole cluster — router, policy, billing and prober as their
//! own processes on one Redis, with a budget on the org so every request takes a real hold — in
//! interleaved windows (direct, through, direct, through, …) at each rate and each upstream
//! latency, so both sides of a difference see the same machine. It reports the median over the
//! pairs of windows of the difference through − direct at p50 and p99, the router's CPU per
//! request apart from the CPU per request of everything behind it (Redis, billing, policy,
//! prober), the share of the machine's CPU the host stole meanwhile, the same for streams (time
//! to first token), and the router's memory while it holds many open streams. Prints, and writes
//! as Markdown.

use std::path::PathBuf;
use std::time::Duration;

use super::cluster::{Cluster, MachineCpu, open_streams, plan, start};
use super::load::{self, Plan, Report};
/// Settings of the standard run.
#[derive(Debug, Clone)]
pub struct Standard {
    /// Rates compared directly and through the router.
    pub rates: Vec<u32>,
    /// The simulated provider's fixed latencies, ms: every rate is measured at each.
    pub upstream_ms: Vec<u64>,
    /// One window's length.
    pub window: Duration,
    /// Pairs of windows (direct, through) per rate and latency.
    pub pairs: usize,
    /// Streams held open through the router while its memory is read (0: skipped).
    pub open_streams: usize,
    /// The `switchyard` binary the cluster runs from (default: this one).
    pub cluster_exe: Option<PathBuf>,
    /// Where the Markdown table goes.
    pub out: PathBuf,
    /// How the measured windows' requests keep their schedule.
    pub pacing: load::Pacing,
}

/// One pair of windows: straight to the simulator, then through the router, and the CPU the
/// router and what is behind it used during the second.
struct Pair {
    direct: Report,
    through: Report,
    router_cpu_s: f64,
    behind_cpu_s: f64,
    /// Share of the machine's CPU the hypervisor took during the pair.
    stolen: f64,
}

/// What one rate at one upstream latency measured, over its pairs.
struct Row {
    upstream_ms: u64,
    rate: u32,
    stream: bool,
    pairs: Vec<Pair>,
    rss_mb: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Row {
    /// The latency a row compares: time to first token for streams, else the whole reply.
    fn measure(r: &Report, stream: bool) -> super::load::Percentiles {
        match (stream, r.ttft_ms) {
            (true, Some(t)) => t,
            _ => r.latency_ms,
        }
    }

    /// Median over the pairs of `f(through) - f(direct)`.
    fn added(&self, f: impl Fn(&super::load::Percentiles) -> f64) -> f64 {
        median(
            self.pairs
                .iter()
                .map(|p| {
                    f(&Self::measure(&p.through, self.stream))
                        - f(&Self::measure(&p.direct, self.stream))
                })
                .collect(),
        )
    }

    /// Median over the pairs of `f(direct)`.
    fn direct(&self, f: impl Fn(&super::load::Percentiles) -> f64) -> f64 {
        median(
            self.pairs
                .iter()
                .map(|p| f(&Self::measure(&p.direct, self.stream)))
                .collect(),
        )
    }

    /// Median CPU µs per request through the router, of the router or of what is behind it.
    fn cpu_us(&self, of: impl Fn(&Pair) -> f64) -> f64 {
        median(
            self.pairs
                .iter()
                .map(|p| of(p) * 1e6 / p.through.sent.max(1) as f64)
                .collect(),
        )
    }

    fn errors(&self) -> u64 {
        self.pairs
            .iter()
            .map(|p| p.through.errors + p.through.dropped + p.direct.errors + p.direct.dropped)
            .sum()
    }
}

/// `s.pairs` pairs of windows at `rate`, direct then through, one after the other, paced as `s`
/// says, with the CPU the host stole during each pair.
async fn pairs(c: &Cluster, s: &Standard, rate: u32, stream: bool) -> Result<Vec<Pair>, String> {
    let window = |url: &str| Plan {
        pacing: s.pacing,
        ..plan(url, rate, s.window, stream)
    };
    let mut out = Vec::new();
    for _ in 0..s.pairs {
        let machine = MachineCpu::now();
        let direct = load::run(&window(&c.direct)).await?;
        let (router, behind) = (c.router_cpu(), c.behind_cpu());
        let through = load::run(&window(&c.through)).await?;
        let pair = Pair {
            router_cpu_s: c.router_cpu() - router,
            behind_cpu_s: c.behind_cpu() - behind,
            stolen: MachineCpu::now().stolen_since(&machine),
            direct,
            through,
        };
        println!(
            "  direct  {}\n  through {}\n  CPU stolen by the host {:.1} %",
            pair.direct,
            pair.through,
            pair.stolen * 100.0
        );
        out.push(pair);
    }
    Ok(out)
}

/// Runs the standard benchmark.
pub async fn run(s: &Standard) -> Result<(), String> {
    let exe = match &s.cluster_exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().map_err(|e| e.to_string())?,
    };
    let c = start(&exe).await?;
    println!(
        "router + policy + billing + prober + Redis, budgets on; windows of {:?}, {} pairs (direct, through) per row, {:?} pacing",
        s.window, s.pairs, s.pacing
    );
    // Memory first, from a warm router: what holding many open streams costs.
    load::run(&plan(&c.through, 500, Duration::from_secs(1), false)).await?;
    let streams = if s.open_streams > 0 {
        println!("holding {} open streams", s.open_streams);
        Some((s.open_streams, open_streams(&c, s.open_streams).await?))
    } else {
        None
    };
    let mut rows = Vec::new();
    for &upstream_ms in &s.upstream_ms {
        c.faults(serde_json::json!({"latency": {"ttft_ms": upstream_ms}}))
            .await?;
        // Warm-up: connections, pools, caches.
        load::run(&plan(&c.through, 500, Duration::from_secs(1), false)).await?;
        load::run(&plan(&c.direct, 500, Duration::from_secs(1), false)).await?;
        for &rate in &s.rates {
            println!("upstream {upstream_ms} ms, {rate} req/s");
            let pairs = pairs(&c, s, rate, false).await?;
            rows.push(Row {
                upstream_ms,
                rate,
                stream: false,
                pairs,
                rss_mb: c.router_rss(),
            });
        }
    }
    // Streams: the added time to first token, at the lowest rate and the first latency.
    let (rate, upstream_ms) = (
        s.rates.iter().copied().min().unwrap_or(1000),
        s.upstream_ms.first().copied().unwrap_or(0),
    );
    c.faults(serde_json::json!({"latency": {"ttft_ms": upstream_ms}}))
        .await?;
    println!("streams: upstream {upstream_ms} ms, {rate} req/s");
    let pairs = pairs(&c, s, rate, true).await?;
    rows.push(Row {
        upstream_ms,
        rate,
        stream: true,
        pairs,
        rss_mb: c.router_rss(),
    });
    let md = markdown(s, &rows, streams, c.router_rss());
    println!("\n{md}");
    if let Some(parent) = s.out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(&s.out, &md).map_err(|e| format!("cannot write {}: {e}", s.out.display()))?;
    println!("written to {}", s.out.display());
    Ok(())
}

fn markdown(
    s: &Standard,
    rows: &[Row],
    streams: Option<(usize, (f64, f64))>,
    rss_at_end: f64,
) -> String {
    let mut t = format!(
        "Windows of {:?}, {} pairs per row, requests paced {}; figures are medians over the pairs (added = through − direct in the same pair).\n\n",
        s.window,
        s.pairs,
        match s.pacing {
            load::Pacing::Tick => "on the runtime's millisecond ticks",
            load::Pacing::Even => "evenly",
        }
    );
    t.push_str(
        "| upstream | rate (req/s) | measured | direct p50 / p99 (ms) | added p50 / p99 (ms) | router CPU / req | Redis + billing + policy + prober CPU / req | router RSS | CPU stolen by the host | errors |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        t.push_str(&format!(
            "| {} ms | {} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.0} µs | {:.0} µs | {:.0} MB | {:.1} % | {} |\n",
            r.upstream_ms,
            r.rate,
            if r.stream { "stream TTFT" } else { "reply" },
            r.direct(|p| p.p50),
            r.direct(|p| p.p99),
            r.added(|p| p.p50),
            r.added(|p| p.p99),
            r.cpu_us(|p| p.router_cpu_s),
            r.cpu_us(|p| p.behind_cpu_s),
            r.rss_mb,
            median(r.pairs.iter().map(|p| p.stolen * 100.0).collect()),
            r.errors()
        ));
    }
    if let Some((n, (idle, held))) = streams {
        t.push_str(&format!(
            "\nRouter RSS with {n} open streams (before the rates): {held:.0} MB ({idle:.0} MB before they opened).\n"
        ));
    }
    t.push_str(&format!(
        "Router RSS at the end of the run: {rss_at_end:.0} MB.\n"
    ));
    t
}
