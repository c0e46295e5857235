//! The catalog as shared, versioned state: the policy service publishes the catalog file in its
//! snapshot; a change reaches every router and the prober without a restart, a request held
//! before a price change settles at the prices it was held with, and an invalid change keeps the
//! old version everywhere and is reported with its paths.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Spec, hi, provider};
use serde_json::{Value, json};

/// Every router's catalog version, from `/readyz`.
async fn versions(c: &Cluster) -> Vec<String> {
    let mut out = Vec::new();
    for n in 0..c.routers.len() {
        let (status, r) = c.readyz(n).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["catalog_published"], true, "{r}");
        out.push(r["catalog_version"].as_str().unwrap().to_string());
    }
    out
}

/// Waits until every router reports one version other than `old`; returns it and how long it
/// took.
async fn next_version(c: &Cluster, old: &str) -> (String, Duration) {
    let started = Instant::now();
    loop {
        let v = versions(c).await;
        if v.iter().all(|x| x != old) && v.iter().all(|x| x == &v[0]) {
            return (v[0].clone(), started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the routers never all left catalog version {old}: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write(c: &Cluster, text: &str) {
    // Written whole, then renamed: the policy service never reads half a file.
    let tmp = c.catalog_file().with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, c.catalog_file()).unwrap();
}

fn excluded<'a>(x: &'a Value, endpoint: &str) -> Option<&'a str> {
    x["excluded"]
        .as_array()?
        .iter()
        .find(|e| e["endpoint"] == endpoint)
        .and_then(|e| e["reason"].as_str())
}

#[tokio::test]
async fn a_catalog_change_reaches_every_process_without_a_restart() {
    let c = Cluster::start(Spec {
        routers: 3,
        prober: Some(common::QUIET_PROBER.into()),
        ..Spec::default()
    })
    .await;
    let v0 = versions(&c).await;
    assert!(v0.iter().all(|v| v == &v0[0]), "{v0:?}");
    let v0 = v0[0].clone();
    let status = c.ctl(&["policy", "version"]).await.ok();
    assert_eq!(status["catalog_version"], v0.as_str(), "{status}");
    let base = std::fs::read_to_string(c.catalog_file()).unwrap();

    // A new endpoint: `big` served by `fast` as well.
    let added = base.replacen(
        "endpoints:\n",
        "endpoints:\n  - { model: big, provider: fast, upstream_model: big-fast, price: { prompt: 3, completion: 15 } }\n",
        1,
    );
    write(&c, &added);
    let (v1, took) = next_version(&c, &v0).await;
    eprintln!("new endpoint: every router on catalog {v1} {took:?} after the file changed");
    let big = hi(json!({"model": "big", "provider": {"order": ["fast"]}}));
    let mut plans = Vec::new();
    for n in 0..3 {
        let (status, x) = c.explain(n, &big, 7).await;
        assert_eq!(status, 200, "{x}");
        assert_eq!(x["catalog_version"], v1.as_str(), "{x}");
        plans.push(
            x["plan"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["endpoint"].as_str().unwrap().to_string())
                .collect::<Vec<_>>(),
        );
    }
    assert!(plans.iter().all(|p| p == &plans[0]), "{plans:?}");
    assert_eq!(plans[0].first().map(String::as_str), Some("big@fast"));
    for n in 0..3 {
        let (status, v) = c.chat(n, &big).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(provider(&v), "fast", "{v}");
        assert_eq!(v["routing"]["catalog_version"], v1.as_str(), "{v}");
    }
    // The prober watches it too.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let h = c.ctl(&["health"]).await.ok();
        let watched = h["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["endpoint"] == "big@fast");
        if watched && h["catalog_version"] == v1.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "the prober never took it: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A request held at the old price; meanwhile fast's price for `m` rises above the
    // workflow's ceiling (prompt 3 per million).
    c.sim()
        .set_faults("fast", &json!({"latency": {"ttft_ms": 2000}}))
        .await
        .unwrap();
    let capped = hi(json!({"workflow": "capped"}));
    let (r0, held_body) = (c.routers[0].url("http"), capped.clone());
    let http = c.http.clone();
    let held = tokio::spawn(async move {
        let resp = http
            .post(format!("{r0}/v1/chat/completions"))
            .bearer_auth(common::KEY)
            .header("x-switchyard-route-seed", "1")
            .json(&held_body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dearer = added.replacen(
        "upstream_model: m-fast, supports: [tools, tool_choice, response_format, json_schema, max_tokens], price: { prompt: 1, completion: 2 }",
        "upstream_model: m-fast, supports: [tools, tool_choice, response_format, json_schema, max_tokens], price: { prompt: 4, completion: 2 }",
        1,
    );
    assert_ne!(dearer, added);
    write(&c, &dearer);
    let (v2, took) = next_version(&c, &v1).await;
    eprintln!("price change: every router on catalog {v2} {took:?} after the file changed");
    for n in 0..3 {
        let (_, x) = c.explain(n, &capped, 1).await;
        assert_eq!(excluded(&x, "m@fast"), Some("over_max_price"), "{x}");
        assert!(!plan_of(&x).contains(&"m@fast".to_string()), "{x}");
    }
    let (status, v) = held.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(provider(&v), "fast", "{v}");
    assert_eq!(v["routing"]["catalog_version"], v1.as_str(), "{v}");
    let (pt, ct) = (
        v["usage"]["prompt_tokens"].as_i64().unwrap(),
        v["usage"]["completion_tokens"].as_i64().unwrap(),
    );
    // Nano-USD: tokens × USD per million tokens × 1000.
    let at_old = (pt + 2 * ct) * 1000;
    let at_new = (4 * pt + 2 * ct) * 1000;
    let id = v["routing"]["request_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let entry = loop {
        let ledger = c.ledger_of("acme").await;
        if let Some(e) = ledger
            .into_iter()
            .find(|e| e.record.as_ref().is_some_and(|r| r.request_id == id))
        {
            break e.record.unwrap();
        }
        assert!(Instant::now() < deadline, "{id} never reached the ledger");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(entry.cost_nano_usd, at_old, "not {at_new}: {entry:?}");
    c.sim().heal("fast").await.unwrap();
    let (status, v) = c.chat(1, &capped).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(provider(&v), "open", "{v}");

    // An invalid change: every process keeps v2, and the policy service says where it is wrong.
    let broken = dearer.replacen(
        "endpoints:\n",
        "endpoints:\n  - { model: m, provider: nowhere, upstream_model: x, price: { prompt: 1, completion: 1 } }\n",
        1,
    );
    write(&c, &broken);
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let s = c.ctl(&["policy", "version"]).await.ok();
        if s["catalog_error"].is_string() {
            break s;
        }
        assert!(Instant::now() < deadline, "never reported: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = status["catalog_error"].as_str().unwrap();
    assert!(
        error.contains("endpoints[0]") && error.contains("nowhere"),
        "{error}"
    );
    assert_eq!(status["catalog_version"], v2.as_str(), "{status}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(versions(&c).await, vec![v2.clone(); 3]);
    let h = c.ctl(&["health"]).await.ok();
    assert_eq!(h["catalog_version"], v2.as_str(), "{h}");
}

fn plan_of(x: &Value) -> Vec<String> {
    x["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["endpoint"].as_str().unwrap().to_string())
        .collect()
}
