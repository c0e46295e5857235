//! The standard benchmark (`switchyard bench --standard`, `just bench`): the provider simulator
//! with a fixed latency, measured directly and through the whole cluster — router, policy,
//! billing and prober as their own processes on one Redis, with a budget on the org so every
//! request takes a real hold — at several rates; then the highest rate the router sustains.
//! Prints, and writes as Markdown, the router's added latency per percentile and its CPU time
//! and memory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sha2::Digest;
use switchyard_proto::v1 as pb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::load::{self, Plan, Report, Target};

const KEY: &str = "sk-bench-0123456789";
/// The simulated provider's fixed latency.
const UPSTREAM_MS: u64 = 10;

/// Settings of the standard run.
#[derive(Debug, Clone)]
pub struct Standard {
    /// Rates compared directly and through the router.
    pub rates: Vec<u32>,
    /// Seconds per measurement.
    pub duration: Duration,
    /// Where the Markdown table goes.
    pub out: PathBuf,
}

struct Proc {
    child: Child,
    ready: serde_json::Value,
}

impl Proc {
    async fn spawn(exe: &Path, args: &[&str]) -> Result<Proc, String> {
        let mut child = Command::new(exe)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start `{}`: {e}", args.join(" ")))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| format!("`{}` printed no ready line in 30 s", args[0]))?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("`{}` exited before it was ready", args[0]))?;
        let ready = serde_json::from_str(&line)
            .map_err(|e| format!("`{}` ready line unreadable: {e}", args[0]))?;
        Ok(Proc { child, ready })
    }

    fn addr(&self, key: &str) -> String {
        self.ready[key].as_str().unwrap_or_default().to_string()
    }

    /// CPU seconds used so far (user + system).
    fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()?)).ok()?;
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }

    /// Resident memory, MB.
    fn rss_mb(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

struct Cluster {
    _redis: Child,
    _sim: Proc,
    _policy: Proc,
    _billing: Proc,
    _prober: Proc,
    router: Proc,
    direct: String,
    through: String,
    _dir: tempfile::TempDir,
}

async fn start(exe: &Path) -> Result<Cluster, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = |name: &str, text: String| -> Result<String, String> {
        let p = dir.path().join(name);
        std::fs::write(&p, text).map_err(|e| e.to_string())?;
        Ok(p.display().to_string())
    };
    let port = free_port()?;
    let redis_bin = std::env::var("SWITCHYARD_REDIS_SERVER").unwrap_or("redis-server".into());
    let redis = Command::new(&redis_bin)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!("cannot start {redis_bin} (Debian: apt-get install -y redis-server): {e}")
        })?;
    let redis_url = format!("redis://127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sim_cfg = file(
        "sim.yaml",
        format!(
            "control: 127.0.0.1:0\nproviders:\n  - id: bench\n    format: openai\n    faults: {{ latency: {{ ttft_ms: {UPSTREAM_MS} }} }}\n"
        ),
    )?;
    let sim = Proc::spawn(exe, &["sim", "--config", &sim_cfg]).await?;
    let base = sim.ready["providers"]["bench"]
        .as_str()
        .ok_or("the simulator did not report its provider")?
        .to_string();
    let catalog = file(
        "catalog.yaml",
        format!(
            "providers:\n  - {{ id: bench, format: openai, base_url: \"{base}\", data_policy: {{ retains_prompts: false, trains_on_data: false, zero_retention: true }} }}\nmodels:\n  - {{ id: bench-model, context_length: 8000, max_output: 1000 }}\nendpoints:\n  - {{ model: bench-model, provider: bench, upstream_model: bench, price: {{ prompt: \"0.15\", completion: \"0.60\" }} }}\n"
        ),
    )?;
    let sha: String = sha2::Sha256::digest(KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let policy_cfg = file(
        "policy.yaml",
        format!(
            "orgs:\n  - id: bench\n    budget_fail_mode: fail_closed\n    api_keys: [{{ id: k, sha256: \"{sha}\", prefix: sk-bench }}]\n    default_workflow: main\n    workflows:\n      - {{ id: main, models: [bench-model] }}\n"
        ),
    )?;
    let any = ["--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"];
    let policy = Proc::spawn(
        exe,
        &[
            &["policy", "--config", &policy_cfg, "--redis", &redis_url][..],
            &any[..],
        ]
        .concat(),
    )
    .await?;
    let billing = Proc::spawn(
        exe,
        &[&["billing", "--redis", &redis_url][..], &any[..]].concat(),
    )
    .await?;
    let prober = Proc::spawn(
        exe,
        &[
            &["prober", "--catalog", &catalog, "--redis", &redis_url][..],
            &any[..],
        ]
        .concat(),
    )
    .await?;
    let (policy_url, billing_url) = (
        format!("http://{}", policy.addr("grpc")),
        format!("http://{}", billing.addr("grpc")),
    );
    let router = Proc::spawn(
        exe,
        &[
            &[
                "router",
                "--catalog",
                &catalog,
                "--redis",
                &redis_url,
                "--policy",
                &policy_url,
                "--billing",
                &billing_url,
            ][..],
            &any[..],
        ]
        .concat(),
    )
    .await?;
    // Budgets on: a day limit far above what the run spends, so every request holds and settles.
    let mut client = pb::billing_client::BillingClient::connect(billing_url.clone())
        .await
        .map_err(|e| format!("billing: {e}"))?;
    client
        .set_budget(pb::SetBudgetRequest {
            scope: Some(pb::Scope {
                kind: pb::ScopeKind::Org as i32,
                org_id: "bench".into(),
                id: String::new(),
            }),
            period: pb::Period::Day as i32,
            limit_nano_usd: 1_000_000 * 1_000_000_000,
            hard: true,
            alert_thresholds_percent: vec![],
        })
        .await
        .map_err(|e| format!("billing: {e}"))?;
    let through = format!("http://{}/v1", router.addr("http"));
    // Ready: the policy has reached the router.
    for _ in 0..100 {
        let plan = quick(&through);
        if load::run(&plan).await.is_ok_and(|r| r.ok == r.sent) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Cluster {
        _redis: redis,
        _sim: sim,
        _policy: policy,
        _billing: billing,
        _prober: prober,
        router,
        direct: base,
        through,
        _dir: dir,
    })
}

fn quick(url: &str) -> Plan {
    plan(url, 10, Duration::from_millis(300))
}

fn plan(url: &str, rate: u32, duration: Duration) -> Plan {
    Plan {
        target: Target::Http(url.to_string()),
        key: KEY.into(),
        model: "bench-model".into(),
        rate,
        duration,
        stream: false,
        max_tokens: 16,
        max_in_flight: 20_000,
    }
}

struct Row {
    rate: u32,
    direct: Report,
    through: Report,
    cpu_us_per_request: f64,
    rss_mb: f64,
}

/// A run holds when everything was sent and answered.
fn holds(r: &Report) -> bool {
    r.achieved_rate >= 0.97 * f64::from(r.target_rate)
        && r.dropped == 0
        && r.errors * 1000 <= r.sent
        && r.latency_ms.p99 < 250.0
}

/// Runs the standard benchmark.
pub async fn run(s: &Standard) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let c = start(&exe).await?;
    println!(
        "upstream: simulated provider, {UPSTREAM_MS} ms fixed latency; router + policy + billing + prober + Redis, budgets on"
    );
    // Warm-up: connections, pools, caches.
    load::run(&plan(&c.through, 500, Duration::from_secs(2))).await?;
    load::run(&plan(&c.direct, 500, Duration::from_secs(1))).await?;
    let mut rows = Vec::new();
    for &rate in &s.rates {
        let direct = load::run(&plan(&c.direct, rate, s.duration)).await?;
        println!("direct   {direct}");
        let cpu_before = c.router.cpu_seconds().unwrap_or(0.0);
        let through = load::run(&plan(&c.through, rate, s.duration)).await?;
        let cpu = c.router.cpu_seconds().unwrap_or(0.0) - cpu_before;
        println!("through  {through}");
        rows.push(Row {
            rate,
            cpu_us_per_request: cpu * 1e6 / through.sent.max(1) as f64,
            rss_mb: c.router.rss_mb().unwrap_or(0.0),
            direct,
            through,
        });
    }
    // The highest rate the router holds (steps of 1,000 from the last rate).
    let mut max = None;
    let mut rate = s.rates.iter().copied().max().unwrap_or(1000);
    loop {
        let r = load::run(&plan(
            &c.through,
            rate,
            s.duration.min(Duration::from_secs(5)),
        ))
        .await?;
        println!("max?     {r}");
        if !holds(&r) {
            break;
        }
        max = Some(rate);
        rate += 1000;
        if rate > 50_000 {
            break;
        }
    }
    let md = markdown(&rows, max);
    println!("\n{md}");
    if let Some(parent) = s.out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(&s.out, &md).map_err(|e| format!("cannot write {}: {e}", s.out.display()))?;
    println!("written to {}", s.out.display());
    Ok(())
}

fn markdown(rows: &[Row], max: Option<u32>) -> String {
    let mut t = String::from(
        "| rate (req/s) | direct p50 / p99 (ms) | through the router p50 / p99 (ms) | added p50 / p99 / p99.9 (ms) | router CPU per request | router RSS | errors |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let (d, t2) = (&r.direct.latency_ms, &r.through.latency_ms);
        t.push_str(&format!(
            "| {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {:.0} µs | {:.0} MB | {} |\n",
            r.rate,
            d.p50,
            d.p99,
            t2.p50,
            t2.p99,
            t2.p50 - d.p50,
            t2.p99 - d.p99,
            t2.p999 - d.p999,
            r.cpu_us_per_request,
            r.rss_mb,
            r.through.errors + r.through.dropped
        ));
    }
    t.push_str(&format!(
        "\nHighest rate held through the router (all sent on time, < 0.1 % errors, p99 < 250 ms): {}\n",
        max.map_or("below the lowest rate tried".to_string(), |m| format!("{m} req/s"))
    ));
    t
}
