//! Two prober processes on one redis-server: each endpoint is probed once per interval (counted
//! at the simulator), and when the lease holder dies the other takes over within the lease TTL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use switchyard_testkit::{RedisServer, SimControl, start_sim};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const INTERVAL_MS: u64 = 400;
const LEASE_MS: u64 = 1_200;

async fn spawn(
    id: &str,
    catalog: &std::path::Path,
    config: &std::path::Path,
    redis: &str,
) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard-health-prober"))
        .args([
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--redis",
            redis,
            "--id",
            id,
            "--catalog",
        ])
        .arg(catalog)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    child
}

async fn requests(control: &str, id: &str) -> u64 {
    SimControl::new(control).requests(&[id]).await.unwrap()
}

#[tokio::test]
async fn probes_are_split_by_leases_and_taken_over() {
    let redis = RedisServer::start().await.unwrap();
    let sim =
        start_sim("providers:\n  - { id: a, format: openai }\n  - { id: b, format: openai }\n")
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.yaml");
    let mut text = String::from("providers:\n");
    for p in ["a", "b"] {
        text.push_str(&format!(
            "  - {{ id: {p}, format: openai, base_url: \"{}\", data_policy: {{ retains_prompts: false, trains_on_data: false, zero_retention: true }} }}\n",
            sim.base_url(p).unwrap()
        ));
    }
    text.push_str("models:\n  - { id: m, context_length: 8000, max_output: 100 }\nendpoints:\n");
    text.push_str(
        "  - { model: m, provider: a, upstream_model: x, price: { prompt: 1, completion: 1 } }\n",
    );
    text.push_str(
        "  - { model: m, provider: b, upstream_model: x, price: { prompt: 1, completion: 1 } }\n",
    );
    std::fs::write(&catalog, text).unwrap();
    let config = dir.path().join("prober.yaml");
    std::fs::write(
        &config,
        format!("probe: {{ interval_ms: {INTERVAL_MS}, timeout_ms: 300, jitter_ms: 0 }}\nevaluate_ms: 100\nlease_ttl_ms: {LEASE_MS}\n"),
    )
    .unwrap();

    let mut p1 = spawn("p1", &catalog, &config, &redis.url()).await;
    let mut p2 = spawn("p2", &catalog, &config, &redis.url()).await;
    let control = sim.control_url();
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    // Over 4 s, each endpoint is probed about once per interval: not twice as often.
    let window = Duration::from_millis(4_000);
    let (a0, b0) = (requests(&control, "a").await, requests(&control, "b").await);
    tokio::time::sleep(window).await;
    let (a1, b1) = (requests(&control, "a").await, requests(&control, "b").await);
    let expected = window.as_millis() as u64 / INTERVAL_MS;
    for (name, n) in [("a", a1 - a0), ("b", b1 - b0)] {
        assert!(
            n >= expected - 2 && n <= expected + 1,
            "endpoint {name}: {n} probes in {window:?}, expected about {expected}"
        );
    }

    // Kill whoever holds m@a's lease; the other takes it over within the lease TTL.
    let mut conn = redis.connection().await.unwrap();
    let holder: String = conn.get("sy:lease:{m@a}").await.unwrap();
    let (dead, survivor) = if holder == "p1" {
        (&mut p1, "p2")
    } else {
        (&mut p2, "p1")
    };
    dead.kill().await.unwrap();
    let killed = Instant::now();
    let before = requests(&control, "a").await;
    let taken_over = loop {
        let holder: Option<String> = conn.get("sy:lease:{m@a}").await.unwrap();
        if holder.as_deref() == Some(survivor) && requests(&control, "a").await > before {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_millis(LEASE_MS + 2 * INTERVAL_MS + 1_000),
            "no takeover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("lease holder {holder} killed; {survivor} probing m@a after {taken_over:?}");
    assert!(
        taken_over <= Duration::from_millis(LEASE_MS + INTERVAL_MS + 300),
        "{taken_over:?}"
    );
}
