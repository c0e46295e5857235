//! The standard benchmark (`switchyard bench --standard`, `just bench`): the provider simulator
//! measured directly and through the whole cluster — router, policy, billing and prober as their
//! own processes on one Redis, with a budget on the org so every request takes a real hold — in
//! interleaved windows (direct, through, direct, through, …) at each rate and each upstream
//! latency, so both sides of a difference see the same machine. It reports the median over the
//! pairs of windows of the difference through − direct at p50 and p99, the router's CPU per
//! request apart from the CPU per request of everything behind it (Redis, billing, policy,
//! prober), the same for streams (time to first token), and the router's memory while it holds
//! many open streams. Prints, and writes as Markdown.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sha2::Digest;
use switchyard_proto::v1 as pb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::load::{self, Plan, Report, Target};

const KEY: &str = "sk-bench-0123456789";
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
}

/// CPU seconds process `pid` used so far (user + system), from `/proc`.
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let read = || -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    };
    read().unwrap_or(0.0)
}

/// Resident memory of process `pid`, MB.
fn rss_mb(pid: Option<u32>) -> f64 {
    let read = || -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    };
    read().unwrap_or(0.0)
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

struct Cluster {
    redis: Child,
    sim: Proc,
    policy: Proc,
    billing: Proc,
    prober: Proc,
    router: Proc,
    direct: String,
    through: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn router_cpu(&self) -> f64 {
        cpu_seconds(self.router.child.id())
    }

    /// CPU of everything behind the router: Redis, billing, policy and the prober.
    fn behind_cpu(&self) -> f64 {
        [
            self.redis.id(),
            self.billing.child.id(),
            self.policy.child.id(),
            self.prober.child.id(),
        ]
        .into_iter()
        .map(cpu_seconds)
        .sum()
    }

    /// Replaces the simulated provider's faults (its latency, an endless stream).
    async fn faults(&self, faults: serde_json::Value) -> Result<(), String> {
        let url = format!("http://{}/providers/bench/faults", self.sim.addr("control"));
        let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let req = hyper::Request::put(url.as_str())
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                faults.to_string(),
            )))
            .map_err(|e| e.to_string())?;
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("the simulator's control API: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!(
                "the simulator refused the faults: {}",
                resp.status()
            ));
        }
        Ok(())
    }
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
        "control: 127.0.0.1:0\nproviders:\n  - id: bench\n    format: openai\n".to_string(),
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
        redis,
        sim,
        policy,
        billing,
        prober,
        router,
        direct: base,
        through,
        _dir: dir,
    })
}

fn quick(url: &str) -> Plan {
    plan(url, 10, Duration::from_millis(300), false)
}

fn plan(url: &str, rate: u32, duration: Duration, stream: bool) -> Plan {
    Plan {
        target: Target::Http(url.to_string()),
        key: KEY.into(),
        model: "bench-model".into(),
        rate,
        duration,
        stream,
        max_tokens: 16,
        max_in_flight: 20_000,
    }
}

/// One pair of windows: straight to the simulator, then through the router, and the CPU the
/// router and what is behind it used during the second.
struct Pair {
    direct: Report,
    through: Report,
    router_cpu_s: f64,
    behind_cpu_s: f64,
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

/// `n` pairs of windows at `rate`, direct then through, one after the other.
async fn pairs(
    c: &Cluster,
    rate: u32,
    window: Duration,
    n: usize,
    stream: bool,
) -> Result<Vec<Pair>, String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let direct = load::run(&plan(&c.direct, rate, window, stream)).await?;
        let (router, behind) = (c.router_cpu(), c.behind_cpu());
        let through = load::run(&plan(&c.through, rate, window, stream)).await?;
        let pair = Pair {
            router_cpu_s: c.router_cpu() - router,
            behind_cpu_s: c.behind_cpu() - behind,
            direct,
            through,
        };
        println!("  direct  {}\n  through {}", pair.direct, pair.through);
        out.push(pair);
    }
    Ok(out)
}

/// Opens `n` streams through the router that stay open (the simulator streams forever, a chunk
/// a second), reads the router's memory once every one has its first chunk, and closes them.
async fn open_streams(c: &Cluster, n: usize) -> Result<(f64, f64), String> {
    use http_body_util::BodyExt;
    let idle = rss_mb(c.router.child.id());
    c.faults(serde_json::json!({"endless_stream": true, "latency": {"per_token_ms": 1000}}))
        .await?;
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
    let body = serde_json::json!({
        "model": "bench-model",
        "messages": [{"role": "user", "content": "Hold this stream open."}],
        "stream": true,
    })
    .to_string();
    let url = format!("{}/chat/completions", c.through);
    let close = tokio_util::sync::CancellationToken::new();
    let (opened, mut open) = tokio::sync::mpsc::channel::<bool>(n.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, url, body, close, opened) = (
            client.clone(),
            url.clone(),
            body.clone(),
            close.clone(),
            opened.clone(),
        );
        tasks.spawn(async move {
            let req = hyper::Request::post(url.as_str())
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {KEY}"))
                .body(http_body_util::Full::new(bytes::Bytes::from(body)));
            let Ok(req) = req else {
                let _ = opened.send(false).await;
                return;
            };
            let Ok(resp) = client.request(req).await else {
                let _ = opened.send(false).await;
                return;
            };
            let mut body = resp.into_body();
            let first = matches!(body.frame().await, Some(Ok(_)));
            let _ = opened.send(first).await;
            close.cancelled().await;
        });
    }
    drop(opened);
    let mut ok = 0;
    for _ in 0..n {
        match tokio::time::timeout(Duration::from_secs(60), open.recv()).await {
            Ok(Some(true)) => ok += 1,
            Ok(Some(false)) | Ok(None) => {}
            Err(_) => break,
        }
    }
    let held = rss_mb(c.router.child.id());
    close.cancel();
    while tasks.join_next().await.is_some() {}
    c.faults(serde_json::json!({})).await?;
    if ok < n {
        return Err(format!("only {ok} of {n} streams opened"));
    }
    Ok((idle, held))
}

/// Runs the standard benchmark.
pub async fn run(s: &Standard) -> Result<(), String> {
    let exe = match &s.cluster_exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().map_err(|e| e.to_string())?,
    };
    let c = start(&exe).await?;
    println!(
        "router + policy + billing + prober + Redis, budgets on; windows of {:?}, {} pairs (direct, through) per row",
        s.window, s.pairs
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
            let pairs = pairs(&c, rate, s.window, s.pairs, false).await?;
            rows.push(Row {
                upstream_ms,
                rate,
                stream: false,
                pairs,
                rss_mb: rss_mb(c.router.child.id()),
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
    let pairs = pairs(&c, rate, s.window, s.pairs, true).await?;
    rows.push(Row {
        upstream_ms,
        rate,
        stream: true,
        pairs,
        rss_mb: rss_mb(c.router.child.id()),
    });
    let md = markdown(s, &rows, streams, rss_mb(c.router.child.id()));
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
        "Windows of {:?}, {} pairs per row; figures are medians over the pairs (added = through − direct in the same pair).\n\n",
        s.window, s.pairs
    );
    t.push_str(
        "| upstream | rate (req/s) | measured | direct p50 / p99 (ms) | added p50 / p99 (ms) | router CPU / req | Redis + billing + policy + prober CPU / req | router RSS | errors |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        t.push_str(&format!(
            "| {} ms | {} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.0} µs | {:.0} µs | {:.0} MB | {} |\n",
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
