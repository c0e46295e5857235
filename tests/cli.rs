//! The `switchyard` command as a user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::Command;
use std::time::Duration;

mod common;

use common::up::{field, up};
use serde_json::json;
use switchyard_testkit::workspace_bin;

const BAD_CATALOG: &str = r#"
providers:
  - id: a
    format: openai
    base_url: http://127.0.0.1:1/v1
    data_policy: { retains_prompts: false, trains_on_data: false, zero_retention: false }
models:
  - { id: m, context_length: 100, max_output: 500 }
endpoints:
  - { model: m, provider: a, upstream_model: x, price: { prompt: -1, completion: 1 } }
  - { model: m, provider: ghost, upstream_model: y, price: { prompt: 1, completion: 1 } }
"#;

fn write_temp(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn check_catalog_reports_every_error_and_honours_env_overrides() {
    let bin = workspace_bin("switchyard", "switchyard").unwrap();
    let file = write_temp(BAD_CATALOG);
    let out = Command::new(&bin)
        .arg("check-catalog")
        .arg(file.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    for expected in [
        "3 errors",
        "models[0].max_output: 500 exceeds context_length 100",
        "endpoints[0].price.prompt: must not be negative",
        "endpoints[1].provider: unknown provider `ghost`",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }

    // Environment overrides fix two of them; the third is still reported.
    let out = Command::new(&bin)
        .arg("check-catalog")
        .arg(file.path())
        .env("SWITCHYARD_CATALOG__ENDPOINTS__0__PRICE__PROMPT", "0.5")
        .env("SWITCHYARD_CATALOG__MODELS__0__MAX_OUTPUT", "50")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("1 error:"), "{stderr}");
    assert!(stderr.contains("unknown provider `ghost`"), "{stderr}");

    // The shipped catalogs are valid: the example and the reference catalog of real providers.
    for shipped in ["catalog.example.yaml", "catalog.providers.yaml"] {
        let out = Command::new(&bin)
            .arg("check-catalog")
            .arg(
                switchyard_testkit::workspace_root()
                    .join("deploy/config")
                    .join(shipped),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{shipped}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new(&bin)
        .arg("check-catalog")
        .arg(switchyard_testkit::workspace_root().join("deploy/config/catalog.providers.yaml"))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("17 providers"), "{printed}");
}

#[tokio::test]
async fn up_serves_chat_completions_with_the_demo_key() {
    // The documented ports could be taken on a shared machine: every listener on a free port.
    let (mut child, printed) = up(&[]).await;
    let router = field(&printed, "router");
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{router}/v1/chat/completions"))
        .bearer_auth("sk-switchyard-demo")
        .json(&json!({"model": "demo-fast", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(v["provider"].as_str().unwrap().starts_with("sim-"), "{v}");
    assert_eq!(v["routing"]["attempts"][0]["outcome"], "ok");
    // OpenRouter's `models`: an unknown model is skipped, with its reason in the trace.
    let resp = http
        .post(format!("{router}/v1/chat/completions"))
        .bearer_auth("sk-switchyard-demo")
        .json(&json!({"models": ["no-such-model", "demo-fast"], "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "demo-fast", "{v}");
    assert_eq!(
        v["routing"]["excluded"][0]["reason"], "unknown_model",
        "{v}"
    );
    assert_eq!(v["routing"]["excluded"][0]["model"], "no-such-model", "{v}");
    let denied = http
        .post(format!("{router}/v1/chat/completions"))
        .json(&json!({"model": "demo-fast", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let ready = http.get(format!("{router}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn up_keeps_its_state_in_redis_when_given_one() {
    let redis = switchyard_testkit::RedisServer::start().await.unwrap();
    let (mut child, printed) = up(&["--redis", &redis.url()]).await;
    let router = field(&printed, "router");
    let state = printed
        .iter()
        .find(|l| l.starts_with("state"))
        .cloned()
        .unwrap();
    assert!(state.contains(&redis.url()), "{state}");
    let resp = reqwest::Client::new()
        .post(format!("{router}/v1/chat/completions"))
        .bearer_auth("sk-switchyard-demo")
        .json(&json!({"model": "demo-fast", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The policy snapshot and the budget ledger are in Redis, where other routers find them.
    let mut conn = redis.connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.iter().any(|k| k == "sy:policy:snapshot"), "{keys:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*ledger*")
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no ledger in Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await.unwrap();
}

/// The README's fenced code blocks in language `lang`.
fn readme_blocks(lang: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(switchyard_testkit::workspace_root().join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, l) if l == format!("```{lang}") => current = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                current = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[tokio::test]
async fn the_readme_quick_start_works_as_written() {
    let (mut child, printed) = up(&[]).await;
    let router = field(&printed, "router")
        .trim_start_matches("http://")
        .to_string();
    let control = printed
        .iter()
        .find_map(|l| l.strip_prefix("simulated providers (control API http://"))
        .and_then(|rest| rest.split(')').next())
        .unwrap()
        .to_string();
    // The documented addresses, pointed at where this instance listens.
    let here = |text: &str| {
        text.replace("127.0.0.1:8080", &router)
            .replace("127.0.0.1:9190", &control)
    };

    let shell = readme_blocks("sh");
    let calls: Vec<&String> = shell
        .iter()
        .filter(|b| b.contains("/v1/chat/completions"))
        .collect();
    assert_eq!(calls.len(), 2, "the plain and the streaming curl call");
    let messages: Vec<&String> = shell
        .iter()
        .filter(|b| b.contains("/v1/messages"))
        .collect();
    assert_eq!(messages.len(), 1, "the Messages curl call");
    let embeddings: Vec<&String> = shell
        .iter()
        .filter(|b| b.contains("/v1/embeddings"))
        .collect();
    assert_eq!(embeddings.len(), 1, "the embeddings curl call");
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &here(embeddings[0])])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", embeddings[0]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["data"][1]["embedding"].as_array().unwrap().len(),
        8,
        "{v}"
    );
    assert!(v["usage"]["cost"].is_string(), "{v}");
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &here(messages[0])])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", messages[0]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(v["content"][0]["type"], "text", "{v}");
    assert!(v["routing"]["plan"].is_array(), "{v}");
    for block in calls {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &here(block)])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{block}\n{stdout}");
        if block.contains("\"stream\": true") {
            assert!(stdout.trim_end().ends_with("data: [DONE]"), "{stdout}");
        } else {
            let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
            assert!(v["routing"]["plan"].is_array(), "{v}");
        }
    }
    // Breaking a provider as documented still leaves every call served.
    let faults = shell.iter().find(|b| b.contains("/faults")).unwrap();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &here(faults)])
        .output()
        .unwrap();
    assert!(out.status.success());

    // Each Python example with the SDK it imports, installed from the package registry.
    let python = readme_blocks("python");
    assert_eq!(
        python.len(),
        3,
        "the chat completions, Messages and Responses examples"
    );
    for block in &python {
        let sdk = if block.contains("import anthropic") {
            "anthropic"
        } else {
            "openai"
        };
        let out = Command::new(switchyard_testkit::python_with(sdk, sdk).unwrap())
            .args(["-c", &here(block)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sdk}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).trim().is_empty(),
            "{sdk}"
        );
    }
    child.kill().await.unwrap();
}

#[tokio::test]
async fn the_standard_benchmark_measures_in_pairs_and_writes_its_table() {
    let bin = workspace_bin("switchyard", "switchyard").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("standard.md");
    let out = tokio::process::Command::new(&bin)
        .args([
            "bench",
            "--standard",
            "--rate",
            "150",
            "--window-s",
            "1",
            "--pairs",
            "2",
            "--upstream-ms",
            "0,5",
            "--open-streams",
            "20",
            "--pacing",
            "even",
            "--out",
        ])
        .arg(&out_file)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = std::fs::read_to_string(&out_file).unwrap();
    // Each pair is a direct window, then a through window.
    assert_eq!(stdout.matches("  direct  ").count(), 6, "{stdout}");
    assert_eq!(stdout.matches("  through ").count(), 6, "{stdout}");
    // Paced evenly, every window sends its whole schedule.
    assert_eq!(
        stdout.matches("sent 150 ok 150 errors 0 dropped 0").count(),
        12,
        "{stdout}"
    );
    assert!(table.contains("requests paced evenly"), "{table}");
    assert!(table.contains("| CPU stolen by the host |"), "{table}");
    for row in [
        "| 0 ms | 150 | reply |",
        "| 5 ms | 150 | reply |",
        "| 0 ms | 150 | stream TTFT |",
    ] {
        assert!(table.contains(row), "{row} missing:\n{table}");
    }
    assert!(
        table.contains("Redis + billing + policy + prober CPU / req"),
        "{table}"
    );
    assert!(table.contains("with 20 open streams"), "{table}");
    assert!(
        table.lines().filter(|l| l.ends_with("| 0 |")).count() == 3,
        "errors:\n{table}"
    );
}

/// Processes whose parent is `pid`, from `/proc`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The parent is the second field after the parenthesised command name.
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Still running: present in `/proc` and not a zombie waiting to be reaped.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let i = stat.rfind(')')?;
            stat[i + 2..].split_whitespace().next().map(|s| s != "Z")
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn an_interrupted_benchmark_stops_the_processes_it_started() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let bin = workspace_bin("switchyard", "switchyard").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut bench = tokio::process::Command::new(&bin)
        .args([
            "bench", "--soak-s", "60", "--rate", "20", "--idle-s", "1", "--out",
        ])
        .arg(dir.path().join("soak.md"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = bench.id().unwrap();
    // The cluster is up once the warm-up starts.
    let mut lines = BufReader::new(bench.stdout.take().unwrap()).lines();
    let started = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("warming up") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(started, "the soak never started its load");
    let cluster = children_of(pid);
    // Redis, the simulator, policy, billing, the prober and the router.
    assert!(cluster.len() >= 6, "children: {cluster:?}");

    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), bench.wait())
        .await
        .expect("the benchmark did not exit after SIGTERM")
        .unwrap();
    assert!(!exit.success(), "an interrupted benchmark reports failure");
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut bench.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(stderr.contains("interrupted"), "{stderr}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = cluster.iter().copied().filter(|p| running(*p)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running after the benchmark exited: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
