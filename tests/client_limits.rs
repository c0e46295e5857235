//! Client limits across routers: a key's requests-per-minute limit set with `ctl limits set`
//! holds across 4 router processes under 1,024 concurrent requests (the rest are 429s with a
//! Retry-After to the end of the minute, told from an upstream's by `reason: client_limit`);
//! gRPC refuses with RESOURCE_EXHAUSTED; a tokens-per-minute limit counts what requests used,
//! not what they reserved.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Cluster, Spec, hi};
use serde_json::{Value, json};
use switchyard_proto::v1 as pb;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits, if needed, until a minute has at least `left` seconds to run, so a burst falls in
/// one window.
async fn early_in_a_minute(left: u64) {
    let into = now_ms() % 60_000;
    if into > (60 - left) * 1000 {
        tokio::time::sleep(Duration::from_millis(60_000 - into + 200)).await;
    }
}

async fn set_limits(c: &Cluster, args: &[&str]) {
    let mut all = vec!["limits", "set", "acme"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--reason", "e2e"]);
    let out = c.ctl(&all).await.ok();
    c.wait_policy(out["policy_version"].as_u64().unwrap()).await;
}

#[tokio::test]
async fn limits_hold_across_routers_and_tokens_reconcile_to_what_was_used() {
    // 1,024 requests at once saturate the two cores the client and the whole cluster share for
    // about a second: holds may take longer than the default 500 ms to be answered, which would
    // fail them closed (402) and say nothing about the limits.
    let c = Cluster::start(Spec {
        routers: 4,
        router_args: vec!["--hold-timeout-ms".into(), "5000".into()],
        ..Spec::default()
    })
    .await;
    set_limits(&c, &["--key", "k1", "--rpm", "100"]).await;
    let listed = c.ctl(&["limits", "--org", "acme"]).await.ok();
    assert_eq!(listed["limits"][0]["set"]["rpm"], 100, "{listed}");
    assert_eq!(listed["limits"][0]["source"], "operator", "{listed}");
    // Explain names the limits a request would be held to.
    let (_, x) = c.explain(2, &hi(json!({})), 1).await;
    assert_eq!(x["policy"]["limits"][0]["set"]["rpm"], 100, "{x}");

    early_in_a_minute(40).await;
    let started = now_ms();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1024 {
        let url = format!("{}/v1/chat/completions", c.routers[i % 4].url("http"));
        let http = c.http.clone();
        tasks.spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(common::KEY)
                .json(&hi(json!({})))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            (status, after, resp.json::<Value>().await.unwrap())
        });
    }
    let (mut ok, mut limited) = (0, 0);
    let minute_end = (started / 60_000 + 1) * 60_000;
    while let Some(r) = tasks.join_next().await {
        let (status, after, body) = r.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                limited += 1;
                let m = &body["error"]["metadata"];
                assert_eq!(body["error"]["code"], "limit_exceeded", "{body}");
                assert_eq!(m["reason"], "client_limit", "{body}");
                assert_eq!(m["scope"], "key:k1", "{body}");
                assert_eq!(m["limit"], "requests_per_minute", "{body}");
                assert_eq!(m["reset_unix_ms"], minute_end, "{body}");
                let after = after.expect("a Retry-After");
                let left = (minute_end - now_ms()).div_ceil(1000);
                assert!(
                    after <= left + 1 && after + 5 >= left,
                    "{after} s, {left} s left"
                );
            }
            other => panic!("{other}: {body}"),
        }
    }
    // gRPC tells it the same way: RESOURCE_EXHAUSTED (an upstream's rate limit is UNAVAILABLE),
    // the class and a Retry-After in the metadata.
    let mut grpc = pb::router_client::RouterClient::connect(c.routers[3].url("grpc"))
        .await
        .unwrap();
    let mut req = tonic::Request::new(pb::ChatRequest {
        model: "m".into(),
        messages: vec![pb::Message {
            role: pb::Role::User as i32,
            content: vec![pb::ContentPart {
                part: Some(pb::content_part::Part::Text("hi".into())),
            }],
            ..Default::default()
        }],
        ..Default::default()
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", common::KEY).parse().unwrap(),
    );
    let status = grpc.chat(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let meta = status.metadata();
    assert_eq!(
        meta.get("switchyard-error-class")
            .unwrap()
            .to_str()
            .unwrap(),
        "limit_exceeded"
    );
    assert!(meta.get("retry-after").is_some(), "{meta:?}");
    eprintln!("4 routers × 256 concurrent, rpm 100: {ok} admitted, {limited} refused");
    assert!(ok <= 101, "{ok} admitted");
    assert!(ok >= 95, "only {ok} admitted");
    assert_eq!(ok + limited, 1024);

    // Tokens per minute, on the org (whose counters start now): each request reserves its
    // prompt bound plus 50 output tokens, and uses far fewer; what it used is what counts once
    // it is settled.
    c.ctl(&["limits", "remove", "acme", "--key", "k1", "--reason", "e2e"])
        .await
        .ok();
    set_limits(&c, &["--tpm", "1000"]).await;
    early_in_a_minute(40).await;
    let body = hi(json!({"max_tokens": 50}));
    let (mut reserved, mut used) = (0u64, 0u64);
    for i in 0..30 {
        let (status, v) = c.chat(i % 4, &body).await;
        assert_eq!(status, 200, "request {i}: {v}");
        used += v["usage"]["total_tokens"].as_u64().unwrap();
        reserved += 50 + 9;
        // Billing settles from the usage report right after the answer.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    eprintln!("tpm 1000: 30 requests served, {used} tokens used (over {reserved} reserved)");
    assert!(reserved > 1000 && used < 1000, "{reserved} / {used}");
    // A request reserving more than the whole limit is refused as such.
    let long = "word ".repeat(250);
    let (status, v) = c
        .chat(
            0,
            &hi(json!({"messages": [{"role": "user", "content": long}], "max_tokens": 50})),
        )
        .await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["metadata"]["limit"], "tokens_per_minute", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("reserves"),
        "{v}"
    );
    let audit = c.ctl(&["audit", "--limit", "10"]).await.ok();
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"set_limits") && actions.contains(&"remove_limits"),
        "{audit}"
    );
}

/// The sum of a counter's series in Prometheus text whose line starts with `prefix` (a name, or
/// a name and the start of its labels).
fn counted(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn far_from_a_limit_limited_requests_are_admitted_against_slices() {
    let c = Cluster::start(Spec {
        routers: 2,
        ..Spec::default()
    })
    .await;
    // Far from both limits: no request is held on its own.
    set_limits(&c, &["--key", "k1", "--rpm", "100000"]).await;
    set_limits(&c, &["--tpm", "100000000"]).await;
    early_in_a_minute(30).await;
    let minute = now_ms() / 60_000;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (http, url) = (
            c.http.clone(),
            format!("{}/v1/chat/completions", c.routers[w % 2].url("http")),
        );
        tasks.spawn(async move {
            for _ in 0..50 {
                let resp = http
                    .post(&url)
                    .bearer_auth(common::KEY)
                    .json(&hi(json!({})))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let (mut leased, mut held, mut grants) = (0.0, 0.0, 0.0);
    for n in 0..2 {
        let m = c.metrics(n).await;
        leased += counted(&m, "switchyard_budget_reservations_total{by=\"lease\"}");
        held += counted(&m, "switchyard_budget_reservations_total{by=\"hold");
        grants += counted(&m, "switchyard_rate_slice_grants_total");
    }
    eprintln!(
        "400 limited requests: {leased} under leases and slices, {held} held, {grants} slice grants"
    );
    assert_eq!((leased, held), (400.0, 0.0));
    assert!(grants < 100.0, "{grants} slice grants for 400 requests");

    // A limit lowered below what the minute has counted applies at once: what is left of the
    // slices granted under the old one is given back, and the next request is checked against
    // the new one.
    set_limits(&c, &["--key", "k1", "--rpm", "100"]).await;
    assert_eq!(now_ms() / 60_000, minute, "still the minute of the 400");
    for n in 0..2 {
        let (status, v) = c.chat(n, &hi(json!({}))).await;
        assert_eq!(status, 429, "{v}");
        assert_eq!(
            v["error"]["metadata"]["limit"], "requests_per_minute",
            "{v}"
        );
    }
    set_limits(&c, &["--key", "k1", "--rpm", "100000"]).await;

    // Near a limit, slices give way to holds and the limit is exact: 2 routers × 128 at once
    // against 60 a minute on the workflow (whose window has counted nothing yet).
    set_limits(&c, &["--workflow", "main", "--rpm", "60"]).await;
    early_in_a_minute(20).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..256 {
        let (http, url) = (
            c.http.clone(),
            format!("{}/v1/chat/completions", c.routers[i % 2].url("http")),
        );
        tasks.spawn(async move {
            http.post(&url)
                .bearer_auth(common::KEY)
                .json(&hi(json!({})))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            200 => ok += 1,
            429 => {}
            other => panic!("{other}"),
        }
    }
    eprintln!("2 routers × 128 at once, rpm 60: {ok} admitted");
    assert!((55..=60).contains(&ok), "{ok} admitted");
}
