//! Graceful shutdown of routers: a rolling restart under load behind a readiness-checking
//! balancer drops no request, and a stream that outlives the drain deadline ends with an
//! explicit error, billed, while the process still exits in time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::{Cluster, KEY, Load, Pool, Spec, hi, summary};
use serde_json::json;

/// Routers keep serving 1 s after SIGTERM with readiness failing, then drain for up to 10 s.
fn draining_spec(routers: usize, drain_ms: u64) -> Spec {
    Spec {
        routers,
        router_args: vec![
            "--shutdown-delay-ms".into(),
            "1000".into(),
            "--drain-timeout-ms".into(),
            drain_ms.to_string(),
        ],
        ..Spec::default()
    }
}

/// A balancer: every 100 ms, the routers whose `/readyz` answers 200 become the pool.
fn balance(
    http: reqwest::Client,
    routers: Arc<RwLock<Vec<String>>>,
    pool: Pool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let known = routers.read().unwrap().clone();
            let mut ready = Vec::new();
            for base in known {
                let ok = http
                    .get(format!("{base}/readyz"))
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if ok {
                    ready.push(format!("{base}/v1/chat/completions"));
                }
            }
            *pool.write().unwrap() = ready;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test]
async fn a_rolling_restart_under_load_drops_no_request() {
    let mut c = Cluster::start(draining_spec(2, 10_000)).await;
    // Each answer takes about 16 × 60 ms, so requests are in flight when a router is stopped.
    for p in ["fast", "open", "premium", "claude"] {
        c.sim()
            .set_faults(p, &json!({"latency": {"per_token_ms": 60}}))
            .await
            .unwrap();
    }
    let routers = Arc::new(RwLock::new(
        c.routers.iter().map(|r| r.url("http")).collect::<Vec<_>>(),
    ));
    let pool: Pool = Arc::new(RwLock::new(Vec::new()));
    let balancer = balance(c.http.clone(), routers.clone(), pool.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let load = Load::over(c.http.clone(), pool.clone(), 20, KEY, hi(json!({})));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A stream on the first router, started just before its SIGTERM, must finish.
    let stream = {
        let mut body = hi(json!({}));
        body["stream"] = json!(true);
        let resp = c.post(0, &body, &[]).await;
        tokio::spawn(async move {
            (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Roll both routers: stop one, start its replacement, wait, the next.
    let mut stopped = Vec::new();
    for round in 0..2 {
        let mut old = c.routers.remove(0);
        let old_url = old.url("http");
        let t = Instant::now();
        let stopping = tokio::spawn(async move {
            let clean = old.terminate(Duration::from_secs(20)).await;
            (clean, t.elapsed(), old)
        });
        let n = c.add_router().await;
        routers.write().unwrap().push(c.routers[n].url("http"));
        let (clean, took, old) = stopping.await.unwrap();
        assert!(
            matches!(clean, Ok(true)),
            "round {round}: router did not exit cleanly: {clean:?}\n{}",
            old.log()
        );
        routers.write().unwrap().retain(|u| *u != old_url);
        eprintln!("round {round}: stopped in {took:?}");
        assert!(old.log().contains("router stopped"), "{}", old.log());
        stopped.push(old);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let samples = load.finish().await;
    balancer.abort();
    let served = samples.iter().filter(|s| s.status == 200).count();
    eprintln!("rolling restart: {}", summary(&samples));
    assert!(samples.len() >= 80, "{}", summary(&samples));
    assert_eq!(served, samples.len(), "{}", summary(&samples));
    let (status, text) = stream.await.unwrap();
    assert_eq!(status, 200);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // Every served request was reported before its router exited: one ledger entry each.
    let ledger = c.ledger_at_least(served + 1, Duration::from_secs(10)).await;
    assert_eq!(ledger.len(), served + 1);
}

#[tokio::test]
async fn a_stream_past_the_drain_deadline_ends_with_an_error_and_is_billed() {
    // On the process's shared runtime, and on serving threads of the router's own.
    for threads in ["0", "2"] {
        stream_past_the_drain_deadline(threads).await;
    }
}

async fn stream_past_the_drain_deadline(threads: &str) {
    let mut spec = draining_spec(1, 1_000);
    spec.router_args
        .extend(["--http-threads".to_string(), threads.to_string()]);
    let mut c = Cluster::start(spec).await;
    c.sim()
        .set_faults(
            "fast",
            &json!({"endless_stream": true, "latency": {"per_token_ms": 20}}),
        )
        .await
        .unwrap();
    let mut body = hi(json!({"workflow": "strict"}));
    body["stream"] = json!(true);
    let resp = c.post(0, &body, &[]).await;
    assert_eq!(resp.status(), 200);
    let reading = tokio::spawn(async move { resp.text().await.unwrap_or_default() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let mut router = c.routers.remove(0);
    let clean = router.terminate(Duration::from_secs(10)).await;
    let took = t.elapsed();
    assert!(
        matches!(clean, Ok(true)),
        "threads {threads}: {clean:?}\n{}",
        router.log()
    );
    // 1 s not ready, 1 s draining, then the cut: well before the workflow's own deadline.
    assert!(
        took < Duration::from_secs(5),
        "threads {threads}: took {took:?}"
    );
    let text = reading.await.unwrap();
    assert!(!text.contains("[DONE]"), "{text}");
    let last = text.lines().rfind(|l| l.starts_with("data: ")).unwrap();
    assert!(last.contains("shutting down"), "{last}");
    let ledger = c.ledger_at_least(1, Duration::from_secs(5)).await;
    let record = ledger[0].record.as_ref().unwrap();
    assert!(record.completion_tokens > 0, "{record:?}");
    assert_eq!(record.outcome, "cancelled");
}

#[tokio::test]
async fn policy_billing_and_the_prober_report_not_ready_before_they_stop() {
    let mut c = Cluster::start(Spec {
        prober: Some("probe: { interval_ms: 30000 }\nlease_ttl_ms: 60000\n".into()),
        env: vec![("SWITCHYARD_SHUTDOWN_DELAY_MS".into(), "1500".into())],
        ..Spec::default()
    })
    .await;
    let mut prober = c.prober.take().unwrap();
    for (name, process) in [
        ("policy", &mut c.policy),
        ("billing", &mut c.billing),
        ("prober", &mut prober),
    ] {
        let ready = format!("{}/readyz", process.url("http"));
        assert_eq!(
            c.http.get(&ready).send().await.unwrap().status(),
            200,
            "{name}"
        );
        let t = Instant::now();
        std::process::Command::new("kill")
            .args(["-TERM", &process.pid().unwrap().to_string()])
            .status()
            .unwrap();
        // Not ready at once, and still answering while the delay runs.
        let deadline = Instant::now() + Duration::from_secs(1);
        let detail = loop {
            let resp = c.http.get(&ready).send().await.unwrap();
            if resp.status() == 503 {
                break resp.json::<serde_json::Value>().await.unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "{name} still ready after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(detail["draining"], true, "{name}: {detail}");
        let clean = process.terminate(Duration::from_secs(10)).await;
        assert!(
            matches!(clean, Ok(true)),
            "{name}: {clean:?}\n{}",
            process.log()
        );
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(1500),
            "{name} stopped before its delay: {took:?}"
        );
        eprintln!("{name}: not ready at once, stopped after {took:?}");
    }
    assert!(prober.log().contains("leases released"), "{}", prober.log());
}
