//! A hard org budget raced by four routers holds: every hold is an upper bound of what its
//! request can cost (the prompt at a bound no real tokenizer exceeds, the output at `max_tokens`),
//! so the settled spend ends at most one request's maximum cost above the limit. The simulated
//! provider counts prompt tokens with o200k_base and OpenAI's chat framing, as the real one
//! does, over prompts of code, CJK text and emoji.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{Cluster, KEY, Spec};
use serde_json::{Value, json};
use tokio::task::JoinSet;

/// The race's hard day budget: 0.004 USD.
const LIMIT_NANO_USD: i64 = 4_000_000;
/// Concurrent requests per router.
const PER_ROUTER: usize = 256;

fn prompts() -> Vec<String> {
    vec![
        "fn main() { let v: Vec<u8> = (0..10).map(|x| x * 2).collect(); println!(\"{v:?}\"); }"
            .to_string(),
        "東京の天気はどうですか？明日は雨が降りますか。詳しく教えてください。".to_string(),
        "🎉🚀👩‍👩‍👧‍👦🏳️‍🌈 emoji ✨🔥💯 and ZWJ sequences 👨🏽‍💻".to_string(),
        "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '7 days';".to_string(),
        "안녕하세요 세계. Привет, мир! مرحبا بالعالم γειά σου κόσμε".to_string(),
        "hi".to_string(),
    ]
}

fn body(i: usize) -> Value {
    let prompts = prompts();
    json!({
        "model": "m",
        "workflow": "strict",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": prompts[i % prompts.len()]}
        ],
        "max_tokens": 1 + (i % 4),
    })
}

#[tokio::test]
async fn racing_routers_overspend_at_most_one_request_s_maximum_cost() {
    let c = Cluster::start(Spec {
        routers: 4,
        sim_provider: Some("prompt_tokenizer: o200k".into()),
        ..Default::default()
    })
    .await;
    // The most any one request of the race can cost, as the router prices its hold.
    let mut max_cost = 0i64;
    for i in 0..24 {
        let (status, x) = c.explain(0, &body(i), 1).await;
        assert_eq!(status, 200, "{x}");
        let usd: f64 = x["max_cost_usd"].as_str().unwrap().parse().unwrap();
        max_cost = max_cost.max((usd * 1e9).round() as i64);
    }
    common::set_day_budget(&c, "acme", LIMIT_NANO_USD).await;

    let urls: Vec<String> = (0..4)
        .map(|n| format!("{}/v1/chat/completions", c.routers[n].url("http")))
        .collect();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(PER_ROUTER)
        .build()
        .unwrap();
    // Bursts of 4 × 256 at once, until one is refused whole: every burst races the holds, and
    // later bursts reuse what earlier ones settled below their holds.
    let mut served = HashSet::new();
    let mut denied = 0;
    let mut first_denial = Value::Null;
    for burst in 0..12 {
        let start = Arc::new(tokio::sync::Barrier::new(4 * PER_ROUTER));
        let mut tasks = JoinSet::new();
        for i in 0..4 * PER_ROUTER {
            let (http, url, start) = (http.clone(), urls[i % 4].clone(), start.clone());
            tasks.spawn(async move {
                start.wait().await;
                let resp = http
                    .post(url)
                    .bearer_auth(KEY)
                    .json(&body(i))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                (status, v)
            });
        }
        let mut served_now = 0;
        while let Some(r) = tasks.join_next().await {
            let (status, v) = r.unwrap();
            match status {
                200 => {
                    served_now += 1;
                    served.insert(v["routing"]["request_id"].as_str().unwrap().to_string());
                }
                402 => {
                    denied += 1;
                    if first_denial.is_null() {
                        first_denial = v;
                    }
                }
                other => panic!("unexpected {other}: {v}"),
            }
        }
        eprintln!("burst {burst}: {served_now} served");
        if served_now == 0 {
            break;
        }
        // Let the usage reports settle the holds before the next burst.
        c.ledger_at_least(served.len(), std::time::Duration::from_secs(20))
            .await;
    }
    assert!(
        !served.is_empty() && denied > 0,
        "the race reaches the limit (first refusal: {first_denial})"
    );

    let ledger = c
        .ledger_at_least(served.len(), std::time::Duration::from_secs(20))
        .await;
    let spent: i64 = ledger
        .iter()
        .map(|e| e.record.as_ref().unwrap().cost_nano_usd)
        .sum();
    let upstream = c.sim().requests(&["fast"]).await.unwrap();
    let over_holds = ledger
        .iter()
        .filter(|e| e.record.as_ref().unwrap().over_hold)
        .count();
    eprintln!(
        "served {} denied {denied}; spent {spent} nano-USD of {LIMIT_NANO_USD} (+{} allowed); \
         upstream calls {upstream}; over-hold replies {over_holds}",
        served.len(),
        max_cost
    );
    assert_eq!(ledger.len(), served.len(), "ledger = served");
    assert_eq!(upstream as usize, served.len(), "upstream calls = served");
    let ids: HashSet<String> = ledger
        .iter()
        .map(|e| e.record.as_ref().unwrap().request_id.clone())
        .collect();
    assert_eq!(ids, served, "every served request billed once");
    assert_eq!(over_holds, 0, "no reply cost more than its hold");
    assert!(
        spent <= LIMIT_NANO_USD + max_cost,
        "spent {spent} > limit {LIMIT_NANO_USD} + one request's maximum cost {max_cost}"
    );
    let prompts_counted: u64 = ledger
        .iter()
        .map(|e| u64::from(e.record.as_ref().unwrap().prompt_tokens))
        .sum();
    assert!(prompts_counted > 0);
}

#[tokio::test]
async fn a_provider_that_ignores_max_tokens_is_charged_marked_and_flagged() {
    let c = Cluster::start(Spec {
        prober: Some(common::QUIET_PROBER.into()),
        ..Default::default()
    })
    .await;
    c.sim()
        .set_faults("fast", &json!({"ignore_max_tokens": true}))
        .await
        .unwrap();
    let body = json!({"model": "m", "workflow": "strict", "max_tokens": 1,
        "messages": [{"role": "user", "content": "hi"}]});
    let (status, x) = c.explain(0, &body, 1).await;
    assert_eq!(status, 200, "{x}");
    let (status, v) = c.chat(0, &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 16, "the cap was ignored");

    let ledger = c
        .ledger_at_least(1, std::time::Duration::from_secs(10))
        .await;
    let record = ledger[0].record.as_ref().unwrap();
    let hold: f64 = x["max_cost_usd"].as_str().unwrap().parse().unwrap();
    assert!(
        record.cost_nano_usd as f64 > hold * 1e9,
        "charged as reported: {record:?}"
    );
    assert!(record.over_hold, "marked in the ledger: {record:?}");
    assert_eq!(record.max_cost_nano_usd as f64, (hold * 1e9).round());

    let metrics = c.metrics(0).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_over_hold_total{provider=\"fast\"} 1")),
        "{metrics}"
    );
    let log = c.routers[0].log();
    assert!(
        log.lines()
            .any(|l| l.contains("reply cost more than its budget hold") && l.contains("m@fast")),
        "logged with the endpoint"
    );
    // The prober turns the router's outcome into the endpoint's record; `ctl health` flags it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let health = c.ctl(&["health"]).await.ok();
        let fast = health["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["endpoint"] == "m@fast")
            .cloned()
            .unwrap();
        if fast["over_holds"].as_u64() == Some(1) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not flagged: {fast}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
