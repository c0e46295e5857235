//! The `switchyard` command as a user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use switchyard_testkit::workspace_bin;
use tokio::io::{AsyncBufReadExt, BufReader};

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

    let out = Command::new(&bin)
        .arg("check-catalog")
        .arg(switchyard_testkit::workspace_root().join("deploy/config/catalog.example.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn up_serves_chat_completions_with_the_demo_key() {
    let bin = workspace_bin("switchyard", "switchyard").unwrap();
    // The documented ports could be taken on a shared machine: every listener on a free port.
    let mut child = tokio::process::Command::new(&bin)
        .args(["up", "--ephemeral"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut router = None;
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await
    {
        if line.trim_start().starts_with("router") {
            router = line.split_whitespace().nth(1).map(str::to_string);
        }
        if line.contains("ready") {
            break;
        }
    }
    let router = router.expect("up printed no router address");
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
    let bin = workspace_bin("switchyard", "switchyard").unwrap();
    let mut child = tokio::process::Command::new(&bin)
        .args(["up", "--ephemeral", "--redis", &redis.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut router, mut state) = (None, None);
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await
    {
        let line = line.trim_start();
        if line.starts_with("router") {
            router = line.split_whitespace().nth(1).map(str::to_string);
        }
        if line.starts_with("state") {
            state = Some(line.to_string());
        }
        if line.starts_with("ready;") {
            break;
        }
    }
    let (router, state) = (router.unwrap(), state.unwrap());
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
