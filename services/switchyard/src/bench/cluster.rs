//! The standard benchmark's cluster: Redis, the simulator, policy, billing, the prober and a
//! router as their own processes, with what the benchmark reads of them (CPU, memory) and does
//! to them (the simulator's faults, open streams).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use sha2::Digest;
use switchyard_proto::v1 as pb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::load::{self, Plan, Target};

/// The benchmark org's key.
pub(super) const KEY: &str = "sk-bench-0123456789";

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

/// Ticks of all CPUs so far, from `/proc/stat`: (stolen by the hypervisor, all of them).
fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal (guest time is within user and nice).
    let all = fields.iter().take(8).sum();
    Some((*fields.get(7)?, all))
}

/// CPU time of the whole machine, to tell how much of a window the hypervisor took away.
#[derive(Debug, Clone, Copy)]
pub(super) struct MachineCpu(Option<(u64, u64)>);

impl MachineCpu {
    pub(super) fn now() -> Self {
        MachineCpu(
            std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| cpu_ticks(&s)),
        )
    }

    /// Share of the machine's CPU time since `earlier` that was stolen (0 where unknown).
    pub(super) fn stolen_since(&self, earlier: &MachineCpu) -> f64 {
        match (self.0, earlier.0) {
            (Some((steal, all)), Some((steal0, all0))) if all > all0 => {
                steal.saturating_sub(steal0) as f64 / (all - all0) as f64
            }
            _ => 0.0,
        }
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

pub(super) struct Cluster {
    redis: Child,
    sim: Proc,
    policy: Proc,
    billing: Proc,
    prober: Proc,
    router: Proc,
    /// The simulated provider's base URL.
    pub(super) direct: String,
    /// The router's base URL.
    pub(super) through: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// The router's resident memory, MB.
    pub(super) fn router_rss(&self) -> f64 {
        rss_mb(self.router.child.id())
    }

    /// The router's CPU seconds so far.
    pub(super) fn router_cpu(&self) -> f64 {
        cpu_seconds(self.router.child.id())
    }

    /// CPU of everything behind the router: Redis, billing, policy and the prober.
    pub(super) fn behind_cpu(&self) -> f64 {
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
    pub(super) async fn faults(&self, faults: serde_json::Value) -> Result<(), String> {
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

pub(super) async fn start(exe: &Path) -> Result<Cluster, String> {
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

pub(super) fn quick(url: &str) -> Plan {
    plan(url, 10, Duration::from_millis(300), false)
}

pub(super) fn plan(url: &str, rate: u32, duration: Duration, stream: bool) -> Plan {
    Plan {
        target: Target::Http(url.to_string()),
        key: KEY.into(),
        model: "bench-model".into(),
        rate,
        duration,
        stream,
        max_tokens: 16,
        max_in_flight: 20_000,
        pacing: load::Pacing::Tick,
    }
}

/// Opens `n` streams through the router that stay open (the simulator streams forever, a chunk
/// a second), reads the router's memory 3 s after every one has its first chunk, and closes
/// them.
pub(super) async fn open_streams(c: &Cluster, n: usize) -> Result<(f64, f64), String> {
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
    // Held, not opening: what opening them left behind (parsed requests, plans) is given back
    // to the system within a couple of seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = rss_mb(c.router.child.id());
    close.cancel();
    while tasks.join_next().await.is_some() {}
    c.faults(serde_json::json!({})).await?;
    if ok < n {
        return Err(format!("only {ok} of {n} streams opened"));
    }
    Ok((idle, held))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stolen_ticks_from_proc_stat() {
        let stat = "cpu  219913 0 42572 77062 836 0 8457 1642 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(
            cpu_ticks(stat),
            Some((1642, 219913 + 42572 + 77062 + 836 + 8457 + 1642))
        );
        assert_eq!(cpu_ticks("intr 1 2 3\n"), None);
        let (a, b) = (MachineCpu(Some((100, 1000))), MachineCpu(Some((150, 1200))));
        assert!((b.stolen_since(&a) - 0.25).abs() < 1e-9);
        assert_eq!(MachineCpu(None).stolen_since(&a), 0.0);
    }
}
