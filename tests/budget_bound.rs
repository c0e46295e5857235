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
/// The leases' TTL in the kill scenario.
const LEASE_TTL_S: u64 = 15;

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

/// The most any one request of the race can cost, as the router prices its hold.
async fn max_cost(c: &Cluster) -> i64 {
    let mut max_cost = 0i64;
    for i in 0..24 {
        let (status, x) = c.explain(0, &body(i), 1).await;
        assert_eq!(status, 200, "{x}");
        let usd: f64 = x["max_cost_usd"].as_str().unwrap().parse().unwrap();
        max_cost = max_cost.max((usd * 1e9).round() as i64);
    }
    max_cost
}

/// What the race saw.
#[derive(Debug, Default)]
struct Race {
    served: HashSet<String>,
    denied: usize,
    first_denial: Value,
    bursts: Vec<usize>,
}

/// Bursts of `per_router` requests on each of `routers` at once until one is refused whole (or
/// `bursts` ran): every burst races the reservations, and later bursts reuse what earlier ones
/// settled below their maximum cost.
async fn race(c: &Cluster, routers: &[usize], per_router: usize, bursts: usize) -> Race {
    let urls: Vec<String> = routers
        .iter()
        .map(|n| format!("{}/v1/chat/completions", c.routers[*n].url("http")))
        .collect();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(per_router)
        .build()
        .unwrap();
    let mut out = Race::default();
    let n = urls.len() * per_router;
    for burst in 0..bursts {
        let start = Arc::new(tokio::sync::Barrier::new(n));
        let mut tasks = JoinSet::new();
        for i in 0..n {
            let (http, url, start) = (http.clone(), urls[i % urls.len()].clone(), start.clone());
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
                    out.served
                        .insert(v["routing"]["request_id"].as_str().unwrap().to_string());
                }
                402 => {
                    out.denied += 1;
                    if out.first_denial.is_null() {
                        out.first_denial = v;
                    }
                }
                other => panic!("unexpected {other}: {v}"),
            }
        }
        eprintln!("burst {burst}: {served_now} served");
        out.bursts.push(served_now);
        // Let the usage reports settle before the next burst.
        c.ledger_at_least(out.served.len(), std::time::Duration::from_secs(20))
            .await;
        if served_now == 0 {
            break;
        }
    }
    out
}

#[tokio::test]
async fn racing_routers_overspend_at_most_one_request_s_maximum_cost() {
    let c = Cluster::start(Spec {
        routers: 4,
        sim_provider: Some("prompt_tokenizer: o200k".into()),
        ..Default::default()
    })
    .await;
    let max_cost = max_cost(&c).await;
    common::set_day_budget(&c, "acme", LIMIT_NANO_USD).await;
    let Race {
        served,
        denied,
        first_denial,
        ..
    } = race(&c, &[0, 1, 2, 3], PER_ROUTER, 12).await;
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
    // Requests far from the limit were admitted under leases (no round trip each), those near
    // it held one by one.
    let mut by = std::collections::BTreeMap::new();
    for n in 0..4 {
        for line in c.metrics(n).await.lines() {
            if let Some(rest) = line.strip_prefix("switchyard_budget_reservations_total{by=\"") {
                let (kind, count) = rest.split_once("\"} ").unwrap();
                *by.entry(kind.to_string()).or_insert(0.0) += count.parse::<f64>().unwrap();
            }
        }
    }
    eprintln!("reservations: {by:?}");
    assert!(by.get("lease").copied().unwrap_or(0.0) > 0.0, "{by:?}");
    assert!(
        by.get("hold_near_limit").copied().unwrap_or(0.0) > 0.0,
        "{by:?}"
    );
}

/// The race with leases in play when a router is `kill -9`'d holding one: its slice stays
/// reserved until the lease's TTL, then the reconciler charges the request it had in flight (at
/// its maximum cost) and gives the rest back to the others; the spend still ends within one
/// request's maximum cost of the limit and nothing stays held.
#[tokio::test]
async fn a_router_killed_holding_a_lease_returns_its_slice_after_the_ttl() {
    let mut c = Cluster::start(Spec {
        routers: 4,
        sim_provider: Some("prompt_tokenizer: o200k".into()),
        router_args: vec![
            "--budget-lease-ttl-ms".into(),
            (LEASE_TTL_S * 1000).to_string(),
        ],
        ..Default::default()
    })
    .await;
    let max_cost = max_cost(&c).await;
    // About 240 requests' worth: far enough from the limit at first for slices of 16.
    let limit = 40 * LIMIT_NANO_USD / 4;
    common::set_day_budget(&c, "acme", limit).await;
    // Router 3 takes a lease with a few requests, then has a slow stream in flight at the kill.
    for i in 0..4 {
        let (status, v) = c.chat(3, &body(i)).await;
        assert_eq!(status, 200, "{v}");
    }
    c.sim()
        .set_faults("fast", &json!({"latency": {"per_token_ms": 1000}}))
        .await
        .unwrap();
    let mut stream = body(3);
    stream["stream"] = json!(true);
    let mut doomed = c.post(3, &stream, &[]).await;
    assert_eq!(doomed.status(), 200);
    let first = doomed.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "), "{first:?}");
    // Past the renewal that records the stream's admission.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let held_before = held(&c).await;
    c.routers[3].kill().await.unwrap();
    let killed = std::time::Instant::now();
    c.sim().set_faults("fast", &json!({})).await.unwrap();
    eprintln!("router 3 killed holding {held_before} nano-USD (max cost {max_cost})");
    assert!(
        held_before > max_cost,
        "router 3 held a slice: {held_before}"
    );

    // The others race the rest of the budget while the dead router's lease is still reserved.
    let first = race(&c, &[0, 1, 2], 64, 40).await;
    assert!(first.denied > 0, "the race reaches the limit");
    assert!(
        !c.ledger().await.iter().any(|e| e.unreconciled),
        "the first race ended before the dead router's lease did ({:?} after the kill)",
        killed.elapsed()
    );
    // The reconciler ends the lease after its TTL.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(LEASE_TTL_S + 10);
    while !c.ledger().await.iter().any(|e| e.unreconciled) {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead router's lease never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let ended = killed.elapsed();
    // What it gave back is spent by the others.
    let second = race(&c, &[0, 1, 2], 64, 40).await;
    eprintln!(
        "first race {:?}, lease of the killed router ended {ended:?} after the kill, second race {:?}",
        first.bursts, second.bursts
    );
    assert!(!second.served.is_empty(), "the returned slice was spent");
    let served = first.served.len() + second.served.len();

    // Nothing stays held: the dead router's lease by its TTL, the live routers' once idle and
    // settled (a grant whose answer was lost is returned by its TTL, what billing has not
    // settled is given back after 30 s idle).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(LEASE_TTL_S + 35);
    while held(&c).await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "still held: {}; in Redis: {}",
            held(&c).await,
            holders(&c).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let ledger = c
        .ledger_at_least(served + 5, std::time::Duration::from_secs(20))
        .await;
    let unreconciled: Vec<_> = ledger
        .iter()
        .filter(|e| e.unreconciled)
        .map(|e| e.record.clone().unwrap())
        .collect();
    assert_eq!(unreconciled.len(), 1, "{unreconciled:?}");
    let charged = unreconciled[0].cost_nano_usd;
    assert!(
        unreconciled[0].hold_id.starts_with("lease:"),
        "{unreconciled:?}"
    );
    assert!(
        charged > 0 && charged <= max_cost,
        "the stream in flight, at its maximum cost: {charged}"
    );
    let spent: i64 = ledger
        .iter()
        .map(|e| e.record.as_ref().unwrap().cost_nano_usd)
        .sum();
    eprintln!(
        "served {served} + 4 before the kill; spent {spent} of {limit} (+{max_cost} allowed), {charged} of it for the killed stream"
    );
    assert_eq!(
        ledger.len(),
        served + 5,
        "ledger = served + the lease's entry"
    );
    assert!(
        spent <= limit + max_cost,
        "spent {spent} > limit {limit} + one request's maximum cost {max_cost}"
    );
}

/// The org's holds and leases as Redis has them, for a failure's message.
async fn holders(c: &Cluster) -> String {
    let mut redis = redis::Client::open(c.redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("sy:{org:acme}:*")
        .query_async(&mut redis)
        .await
        .unwrap();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let hold_or_lease =
            key.contains(":hold:") || (key.contains(":lease:") && !key.ends_with(":early"));
        if !hold_or_lease && !key.ends_with(":ctr") {
            continue;
        }
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        // Of a hold or a lease every field but its counter list; of the counters, what is held.
        let shown: Vec<String> = fields
            .into_iter()
            .filter(|(f, _)| {
                if hold_or_lease {
                    f != "counters"
                } else {
                    f.ends_with("|held")
                }
            })
            .map(|(f, v)| format!("{f}={v}"))
            .collect();
        out.push(format!("{key} {{{}}}", shown.join(" ")));
    }
    out.join("; ")
}

/// What the org `acme` holds right now, all its budgets together.
async fn held(c: &Cluster) -> i64 {
    c.billing()
        .await
        .list_budgets(switchyard_proto::v1::ListBudgetsRequest {
            org_id: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .budgets
        .iter()
        .map(|b| b.held_nano_usd)
        .sum()
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
