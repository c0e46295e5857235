//! Provider capacity across routers: a provider whose answers say its key has no request left
//! (`x-ratelimit-remaining-requests: 0`, a reset 5 s on) gets no traffic from any of 3 router
//! processes until the reset, while the requests are served elsewhere, and gets it back after;
//! explain names the exclusion and shows the capacity left on each planned endpoint. A capacity
//! declared in the catalog is counted across routers the same way.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Spec, exclusion, hi, plan, provider};
use serde_json::json;

#[tokio::test]
async fn a_key_out_of_capacity_gets_no_traffic_from_any_router_until_its_reset() {
    let c = Cluster::start(Spec {
        routers: 3,
        ..Spec::default()
    })
    .await;
    // `fast` grants its key 4 requests per 5 s window and reports it on every answer.
    c.sim()
        .set_faults(
            "fast",
            &json!({"capacity": {"requests": 4, "window_ms": 5000}}),
        )
        .await
        .unwrap();
    c.sim().reset_counters().await.unwrap();
    let body = hi(json!({"provider": {"order": ["fast", "open"]}}));

    // Nothing known yet: explain shows no capacity on the planned endpoints.
    let (_, x) = c.explain(2, &body, 1).await;
    assert_eq!(x["plan"][0]["endpoint"], "m@fast", "{x}");
    assert!(x["plan"][0]["capacity"].is_null(), "{x}");

    let started = Instant::now();
    for i in 0..4 {
        let (status, v) = c.chat(i % 3, &body).await;
        assert_eq!((status, provider(&v)), (200, "fast"), "request {i}: {v}");
    }
    // The fourth answer said nothing is left: the next request, whichever router it reaches,
    // plans around `fast`, and so does every one until the reset.
    let mut elsewhere = 0;
    while started.elapsed() < Duration::from_millis(4_200) {
        for n in [1, 2, 0] {
            let (status, v) = c.chat(n, &body).await;
            assert_eq!((status, provider(&v)), (200, "open"), "router {n}: {v}");
            assert!(!plan(&v).contains(&"m@fast".to_string()), "{v}");
            let e = exclusion(&v["routing"]["excluded"], "m@fast").unwrap_or_else(|| panic!("{v}"));
            assert_eq!(e["reason"], "capacity_exhausted", "{v}");
            elsewhere += 1;
        }
    }
    let stats = c.sim().stats("fast").await.unwrap();
    assert_eq!(stats["requests"], 4, "no traffic until the reset: {stats}");
    assert!(stats["by_outcome"]["rate_limited"].is_null(), "{stats}");
    eprintln!("{elsewhere} requests served by `open` while `fast` had no capacity");

    // Explain names it too, with when it resets.
    let (_, x) = c.explain(1, &body, 1).await;
    let e = exclusion(&x["excluded"], "m@fast").unwrap_or_else(|| panic!("{x}"));
    assert_eq!(e["reason"], "capacity_exhausted", "{x}");
    assert!(
        e["detail"].as_str().unwrap().contains("0 requests left"),
        "{x}"
    );

    // After the reset it is planned first again, by every router.
    let reset = Duration::from_millis(5_300);
    tokio::time::sleep(reset.saturating_sub(started.elapsed())).await;
    for n in 0..3 {
        let (status, v) = c.chat(n, &body).await;
        assert_eq!((status, provider(&v)), (200, "fast"), "router {n}: {v}");
    }
    // What is left now shows on the planned endpoint: the window allows one more.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, x) = c.explain(0, &body, 1).await;
    let left = &x["plan"][0]["capacity"]["requests"];
    assert_eq!(x["plan"][0]["endpoint"], "m@fast", "{x}");
    assert_eq!(left["remaining"], 1, "{x}");
    assert_eq!(left["limit"], 4, "{x}");
    assert!(left["reset_in_ms"].as_u64().unwrap() <= 5_000, "{x}");
    let metrics = c.metrics(0).await;
    assert!(
        metrics.contains("switchyard_capacity_exhausted_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_declared_capacity_is_shared_by_every_router() {
    // `big` on `fast` declares 6 requests a minute for the shared key; nothing in its answers
    // says so. `claude` serves `big` too.
    let c = Cluster::start(Spec {
        routers: 3,
        extra_endpoints: vec![
            "{ model: big, provider: fast, upstream_model: big-fast, price: { prompt: 1, completion: 2 }, capacity: { rpm: 6 } }".into(),
        ],
        ..Spec::default()
    })
    .await;
    let body = hi(json!({"model": "big", "provider": {"order": ["fast", "claude"]}}));
    // Early enough in a minute that the burst falls in one.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let into = now_ms % 60_000;
    if into > 45_000 {
        tokio::time::sleep(Duration::from_millis(60_000 - into + 200)).await;
    }
    let mut by = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..18 {
        let (status, v) = c.chat(i % 3, &body).await;
        assert_eq!(status, 200, "{v}");
        *by.entry(provider(&v).to_string()).or_default() += 1;
        // Use is counted across routers every 250 ms.
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let fast = by.get("fast").copied().unwrap_or(0);
    eprintln!("served: {by:?}");
    // Near the limit every router counts each request at once and reads the totals every
    // 25 ms: one sent at the same moment elsewhere is the most it can miss.
    assert!((6..=7).contains(&fast), "{by:?}");
    assert_eq!(fast + by.get("claude").copied().unwrap_or(0), 18);
    let (_, x) = c.explain(1, &body, 1).await;
    let e = exclusion(&x["excluded"], "big@fast").unwrap_or_else(|| panic!("{x}"));
    assert_eq!(e["reason"], "capacity_exhausted", "{x}");
}
