//! Priority and fairness when capacity is short: requests whose only endpoint is out of
//! capacity wait in the router's waiting room instead of getting a 429; two orgs weighted 3 and
//! 1 saturating it are served 3 to 1; interactive requests are let in before batch ones that
//! waited longer; a `degradation: queue` batch request waits out a 10 s outage of its preferred
//! provider and is served by it, never by the fallback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{BETA_KEY, Cluster, KEY, Spec, exclusion, hi, provider};
use serde_json::{Value, json};

/// One request with `key`: status, body and when it completed (since `t0`).
async fn send(c: &Cluster, key: &str, body: &Value, t0: Instant) -> (u16, Value, Duration) {
    let resp = c
        .http
        .post(format!("{}/v1/chat/completions", c.routers[0].url("http")))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let v = resp.json().await.unwrap_or(Value::Null);
    (status, v, t0.elapsed())
}

async fn paced(c: &Cluster, requests: u32, window_ms: u64) {
    c.sim()
        .set_faults(
            "fast",
            &json!({"capacity": {"requests": requests, "window_ms": window_ms}}),
        )
        .await
        .unwrap();
    c.sim().reset_counters().await.unwrap();
}

#[tokio::test]
async fn two_orgs_weighted_3_to_1_share_a_saturated_endpoint_3_to_1() {
    let c = Arc::new(Cluster::start(Spec::default()).await);
    // `fast` lets 20 requests through per second; `paced` has nowhere else to go.
    paced(&c, 20, 1_000).await;
    let body = hi(json!({"workflow": "paced"}));
    let t0 = Instant::now();
    let run = Duration::from_secs(9);
    let mut clients = tokio::task::JoinSet::new();
    for (org, key) in [("acme", KEY), ("beta", BETA_KEY)] {
        for _ in 0..32 {
            let (c, body) = (c.clone(), body.clone());
            clients.spawn(async move {
                let mut served = Vec::new();
                while t0.elapsed() < run {
                    let (status, v, at) = send(&c, key, &body, t0).await;
                    assert_eq!(status, 200, "{org}: {v}");
                    served.push((org, at));
                }
                served
            });
        }
    }
    // The first burst goes out before the router knows the capacity: what the provider
    // refuses of it comes back to wait its turn. From then on the router paces itself.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    c.sim().reset_counters().await.unwrap();
    let mut all = Vec::new();
    while let Some(r) = clients.join_next().await {
        all.extend(r.unwrap());
    }
    // Once both orgs are waiting (after the first window), count who was served.
    let counted: Vec<_> = all
        .iter()
        .filter(|(_, at)| *at > Duration::from_millis(1_500) && *at <= run)
        .collect();
    let acme = counted.iter().filter(|(org, _)| *org == "acme").count() as f64;
    let beta = counted.iter().filter(|(org, _)| *org == "beta").count() as f64;
    let ratio = acme / beta;
    eprintln!("served after the first window: acme {acme}, beta {beta}, ratio {ratio:.2}");
    assert!((2.7..=3.3).contains(&ratio), "acme {acme} beta {beta}");
    // The router paced itself to the capacity reported: at most a request now and then
    // reaches a window's edge late and is refused upstream (it then waits its turn again; every
    // client got its answer).
    let stats = c.sim().stats("fast").await.unwrap();
    let refused = stats["by_outcome"]["rate_limited"].as_u64().unwrap_or(0);
    eprintln!("refused upstream after the first window: {refused}");
    assert!(refused as f64 <= (acme + beta) / 10.0, "{stats}");
    let metrics = c.metrics(0).await;
    assert!(
        metrics.contains("switchyard_queue_wait_seconds")
            && metrics.contains("outcome=\"admitted\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn interactive_requests_go_before_batch_ones_that_waited_longer() {
    let c = Arc::new(Cluster::start(Spec::default()).await);
    paced(&c, 6, 1_500).await;
    // Use up the window, then queue 18 batch requests.
    let t0 = Instant::now();
    for _ in 0..6 {
        let (status, v, _) = send(&c, KEY, &hi(json!({"workflow": "paced"})), t0).await;
        assert_eq!(status, 200, "{v}");
    }
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..18 {
        let c = c.clone();
        tasks.spawn(async move {
            let (s, v, at) = send(&c, KEY, &hi(json!({"workflow": "paced_batch"})), t0).await;
            ("batch", s, v, at)
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let interactive_sent = t0.elapsed();
    for _ in 0..6 {
        let c = c.clone();
        tasks.spawn(async move {
            let (s, v, at) = send(&c, KEY, &hi(json!({"workflow": "paced"})), t0).await;
            ("interactive", s, v, at)
        });
    }
    let mut done = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (class, status, v, at) = r.unwrap();
        assert_eq!(status, 200, "{class}: {v}");
        done.push((class, at));
    }
    done.sort_by_key(|(_, at)| *at);
    let order: Vec<&str> = done.iter().map(|(class, _)| *class).collect();
    eprintln!("interactive sent at {interactive_sent:?}; completion order {order:?}");
    // The six interactive requests are the first let in after the reset, before any of the
    // batch requests that were waiting when they arrived.
    assert_eq!(order[..6], ["interactive"; 6], "{order:?}");
    let depth = c.metrics(0).await;
    assert!(
        depth.contains("switchyard_queue_depth{priority=\"batch\"}"),
        "{depth}"
    );
}

#[tokio::test]
async fn a_queue_workflow_waits_out_an_outage_of_its_preferred_provider() {
    let c = Arc::new(Cluster::start(Spec::default()).await);
    let body = hi(json!({"workflow": "patient_batch"}));
    // Healthy: served by its preferred provider.
    let (status, v) = c.chat(0, &body).await;
    assert_eq!((status, provider(&v)), (200, "fast"), "{v}");
    let (_, x) = c.explain(0, &body, 1).await;
    assert_eq!(
        exclusion(&x["excluded"], "m@open").map(|e| &e["reason"]),
        Some(&json!("not_preferred")),
        "{x}"
    );
    // A 10 s outage of `fast`; a batch request arrives during it.
    c.break_provider("fast", 503).await;
    c.sim().reset_counters().await.unwrap();
    let broke = Instant::now();
    let waiting = {
        let (c, body) = (c.clone(), body.clone());
        tokio::spawn(async move { send(&c, KEY, &body, broke).await })
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    c.sim().heal("fast").await.unwrap();
    let healed = broke.elapsed();
    let (status, v, answered) = waiting.await.unwrap();
    eprintln!("outage healed at {healed:?}; answered at {answered:?}");
    assert_eq!((status, provider(&v)), (200, "fast"), "{v}");
    assert!(answered >= healed, "answered before the provider returned");
    assert!(answered < healed + Duration::from_secs(15), "{answered:?}");
    assert_eq!(
        c.sim().requests(&["open"]).await.unwrap(),
        0,
        "never served by the fallback"
    );
}
