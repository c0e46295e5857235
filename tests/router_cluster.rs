//! Router scenarios across processes: the `switchyard` binary as policy, billing, prober and
//! routers on one real Redis, in front of the provider simulator. Each scenario starts its own
//! cluster and asserts what a caller sees and what the providers and the ledger saw.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Cluster, Spec, hi, outcomes, plan, provider};
use serde_json::{Value, json};

#[tokio::test]
async fn an_outage_is_invisible_unless_fallbacks_are_off() {
    let c = Cluster::start(Spec::default()).await;
    c.break_provider("fast", 500).await;
    let mut served = BTreeMap::<String, u32>::new();
    for _ in 0..40 {
        let (status, v) = c.chat(0, &hi(json!({}))).await;
        assert_eq!(status, 200, "{v}");
        *served.entry(provider(&v).to_string()).or_default() += 1;
    }
    eprintln!("outage of `fast`: 40/40 served, by provider {served:?}");
    assert!(!served.contains_key("fast"));

    // The workflow allows no fallback: a clear error naming the failed attempt.
    let (status, v) = c.chat(0, &hi(json!({"workflow": "strict"}))).await;
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    assert_eq!(outcomes(&v), ["unavailable"], "{v}");
    // The caller turns fallbacks off: the same.
    let body = hi(json!({"provider": {"order": ["fast"], "allow_fallbacks": false}}));
    let (status, v) = c.chat(0, &body).await;
    assert_eq!(status, 502, "{v}");
    assert!(outcomes(&v).iter().all(|o| o == "unavailable"), "{v}");
    assert!(
        v["error"]["metadata"]["routing"]["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["provider"] == "fast"),
        "{v}"
    );
}

#[tokio::test]
async fn price_ceilings_and_data_policies_exclude_endpoints() {
    let c = Cluster::start(Spec::default()).await;
    let sim = c.sim();
    let cases = [
        // `premium` costs 6 per million prompt tokens.
        (json!({"max_price": {"prompt": "2"}}), "m@premium"),
        // `open` keeps prompts: neither zero retention nor data collection denied fits it.
        (json!({"zdr": true}), "m@open"),
        (json!({"data_collection": "deny"}), "m@open"),
    ];
    for (prefs, excluded) in cases {
        sim.reset_counters().await.unwrap();
        let excluded_provider = excluded.trim_start_matches("m@");
        for seed in 0..12 {
            let body = hi(json!({"provider": prefs}));
            let resp = c
                .post(0, &body, &[("x-switchyard-route-seed", &seed.to_string())])
                .await;
            assert_eq!(resp.status(), 200);
            let v: Value = resp.json().await.unwrap();
            assert!(!plan(&v).contains(&excluded.to_string()), "{prefs}: {v}");
            assert!(!plan(&v).is_empty(), "{v}");
        }
        assert_eq!(
            sim.requests(&[excluded_provider]).await.unwrap(),
            0,
            "{prefs} reached {excluded_provider}"
        );
    }
    // Everything excluded: a clear error listing each endpoint and why.
    let body = hi(json!({"provider": {"zdr": true, "max_price": {"prompt": "0.5"}}}));
    let (status, v) = c.chat(0, &body).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "no_eligible_route", "{v}");
    let excluded = v["error"]["metadata"]["excluded"].as_array().unwrap();
    let reasons: BTreeMap<&str, &str> = excluded
        .iter()
        .map(|e| {
            (
                e["endpoint"].as_str().unwrap(),
                e["reason"].as_str().unwrap(),
            )
        })
        .collect();
    eprintln!("everything excluded: {reasons:?}");
    assert!(reasons.contains_key("m@fast") && reasons.contains_key("m@premium"));
    assert!(reasons.contains_key("m@open"));
}

#[tokio::test]
async fn context_overflow_falls_back_to_the_larger_model() {
    let c = Cluster::start(Spec::default()).await;
    // The `m` providers accept fewer tokens than the catalog says: they answer with a
    // context-length error, and the router moves on to the larger model.
    for p in ["fast", "open", "premium"] {
        c.sim()
            .set_faults(p, &json!({"context_limit": 60}))
            .await
            .unwrap();
    }
    let prompt = "lorem ipsum dolor sit amet ".repeat(40);
    let body = json!({
        "models": ["m", "big"],
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 16
    });
    let (status, v) = c.chat(0, &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "big", "{v}");
    assert_eq!(provider(&v), "claude");
    let o = outcomes(&v);
    assert_eq!(o.last().map(String::as_str), Some("ok"));
    assert!(
        o[..o.len() - 1]
            .iter()
            .all(|x| x == "context_length_exceeded"),
        "{v}"
    );

    // A prompt beyond `m`'s catalog context never goes to `m` at all.
    let prompt = "lorem ipsum dolor sit amet ".repeat(2_000);
    let body = json!({
        "models": ["m", "big"],
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 16
    });
    let (status, v) = c.chat(0, &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(plan(&v), ["big@claude"], "{v}");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let c = Cluster::start(Spec::default()).await;
    // One request per second at `fast`: the second in the same second gets 429, Retry-After 1.
    c.sim()
        .set_faults("fast", &json!({"rate_limit_rps": 1}))
        .await
        .unwrap();
    let strict = hi(json!({"workflow": "patient"}));
    let (status, v) = c.chat(0, &strict).await;
    assert_eq!(status, 200, "{v}");
    let started = Instant::now();
    let (status, v) = c.chat(0, &strict).await;
    let waited = started.elapsed();
    assert_eq!(status, 200, "{v}");
    assert_eq!(outcomes(&v), ["rate_limited", "ok"], "{v}");
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
    eprintln!("429 with Retry-After 1 s: retried after {waited:?}, then served");

    // With somewhere else to go, a long Retry-After moves the request on instead of waiting.
    c.sim()
        .set_faults(
            "fast",
            &json!({"errors": [{"status": 429, "rate": 1.0}], "retry_after_s": 30}),
        )
        .await
        .unwrap();
    c.sim().reset_counters().await.unwrap();
    let started = Instant::now();
    let body = hi(json!({"provider": {"order": ["fast", "open"]}}));
    let (status, v) = c.chat(0, &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(provider(&v), "open");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(c.sim().requests(&["fast"]).await.unwrap(), 1);
    // For the next 30 s this router leaves `fast` out of its plans.
    for _ in 0..5 {
        let (status, v) = c.chat(0, &body).await;
        assert_eq!((status, provider(&v)), (200, "open"), "{v}");
        assert!(!plan(&v).contains(&"m@fast".to_string()), "{v}");
    }
    assert_eq!(c.sim().requests(&["fast"]).await.unwrap(), 1);
    // With nowhere else to go, the panic rule tries it anyway; the 429 comes back at once (its
    // Retry-After is past the deadline), without a retry.
    let (status, v) = c.chat(0, &strict).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(c.sim().requests(&["fast"]).await.unwrap(), 2);
}

#[tokio::test]
async fn the_retry_budget_caps_upstream_traffic() {
    let c = Cluster::start(Spec::default()).await;
    c.break_provider("fast", 500).await;
    // Each request may retry three times; 200 failing requests would be 800 upstream calls.
    let requests = 200u64;
    let body = hi(json!({"workflow": "retrying"}));
    let c = &c;
    let mut failed = 0;
    for batch in 0..(requests / 20) {
        let _ = batch;
        let results = futures_join(c, &body, 20).await;
        failed += results.iter().filter(|s| **s == 502).count() as u64;
    }
    let upstream = c.sim().requests(&["fast"]).await.unwrap();
    eprintln!(
        "retry budget: {requests} requests ({failed} failed as expected) made {upstream} upstream calls ({:.2} per request; 4.00 without a budget)",
        upstream as f64 / requests as f64
    );
    assert_eq!(failed, requests);
    // First attempts, plus 20 % of them, plus the burst of 10.
    assert!(upstream >= requests, "{upstream}");
    assert!(upstream <= requests + requests / 5 + 10, "{upstream}");
}

async fn futures_join(c: &Cluster, body: &Value, n: usize) -> Vec<u16> {
    let mut set = Vec::new();
    for _ in 0..n {
        set.push(c.chat(0, body));
    }
    let mut out = Vec::new();
    for f in set {
        out.push(f.await.0);
    }
    out
}

#[tokio::test]
async fn streams_fall_back_before_the_first_chunk_and_end_with_an_error_after_it() {
    let c = Cluster::start(Spec::default()).await;
    c.break_provider("fast", 503).await;
    let body = hi(json!({"provider": {"order": ["fast", "open"]}}));
    let (status, events) = c.stream(0, &body).await;
    assert_eq!(status, 200);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["provider"], "open", "{first}");

    // Cut after 3 content chunks: no fallback once content went out, an explicit error event,
    // and the usage so far is billed.
    c.sim()
        .set_faults("fast", &json!({"cut_stream_after": 3}))
        .await
        .unwrap();
    let before = c.ledger().await.len();
    let (status, events) = c.stream(0, &body).await;
    assert_eq!(status, 200);
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(last["error"]["message"].is_string(), "{events:?}");
    let content = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert_eq!(content, 3, "{events:?}");
    let ledger = c.ledger_at_least(before + 2, Duration::from_secs(10)).await;
    let cut = ledger.last().unwrap().record.clone().unwrap();
    eprintln!(
        "cut stream billed: {} prompt + {} completion tokens, {} nano-USD",
        cut.prompt_tokens, cut.completion_tokens, cut.cost_nano_usd
    );
    assert!(
        cut.completion_tokens >= 3 && cut.cost_nano_usd > 0,
        "{cut:?}"
    );
}

#[tokio::test]
async fn an_idempotent_repeat_on_another_router_is_replayed_without_a_charge() {
    let c = Cluster::start(Spec {
        routers: 2,
        ..Spec::default()
    })
    .await;
    let body = hi(json!({}));
    let key = [("idempotency-key", "order-7431")];
    let first = c.post(0, &body, &key).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let again = c.post(1, &body, &key).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again);
    assert_eq!(
        c.sim()
            .requests(&["fast", "open", "premium", "claude"])
            .await
            .unwrap(),
        1
    );
    // The same key with other content is refused.
    let other = c.post(1, &hi(json!({"max_tokens": 17})), &key).await;
    assert_eq!(other.status(), 400);
    // One charge, however long we wait.
    let ledger = c.ledger_at_least(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((ledger.len(), c.ledger().await.len()), (1, 1));
}

const FAST_PROBER: &str = "probe: { interval_ms: 10000 }
thresholds: { min_volume: 2, eject_consecutive_failures: 2, base_ejection_ms: 60000 }
evaluate_ms: 200
";

#[tokio::test]
async fn two_routers_eject_the_same_endpoint_and_plan_alike() {
    let c = Cluster::start(Spec {
        routers: 2,
        prober: Some(FAST_PROBER.into()),
        ..Spec::default()
    })
    .await;
    c.break_provider("fast", 500).await;
    // Both routers see the failures (and still serve every request by fallback).
    let failing_since = Instant::now();
    let body = hi(json!({"provider": {"order": ["fast"]}}));
    for i in 0..10 {
        let (status, v) = c.chat(i % 2, &body).await;
        assert_eq!(status, 200, "{v}");
    }
    // Their passive outcomes reach Redis; the prober ejects the endpoint.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let eps = c.endpoints().await;
        let fast = eps.endpoints.iter().find(|e| e.endpoint == "m@fast");
        if fast.is_some_and(|e| e.state == switchyard_proto::v1::EndpointState::Ejected as i32) {
            eprintln!(
                "ejected {:?} after the first failure: {}",
                failing_since.elapsed(),
                fast.unwrap().reason
            );
            break;
        }
        assert!(Instant::now() < deadline, "never ejected: {eps:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Both routers follow the shared record: for each seed, the same plan, without `m@fast`.
    let seeded = async |router: usize, seed: u64| -> Value {
        let resp = c
            .post(
                router,
                &hi(json!({})),
                &[("x-switchyard-route-seed", &seed.to_string())],
            )
            .await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut versions: (u64, u64);
    loop {
        let (a, b) = (seeded(0, 1).await, seeded(1, 1).await);
        versions = (
            a["routing"]["health_version"].as_u64().unwrap(),
            b["routing"]["health_version"].as_u64().unwrap(),
        );
        if versions.0 == versions.1 && !plan(&a).contains(&"m@fast".to_string()) {
            eprintln!(
                "both routers plan without it {:?} after the first failure",
                failing_since.elapsed()
            );
            break;
        }
        assert!(Instant::now() < deadline, "routers disagree: {a} vs {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut distinct = std::collections::BTreeSet::new();
    for seed in 0..16 {
        let (a, b) = (seeded(0, seed).await, seeded(1, seed).await);
        assert_eq!(plan(&a), plan(&b), "seed {seed}");
        assert!(!plan(&a).contains(&"m@fast".to_string()), "{a}");
        distinct.insert(plan(&a));
    }
    eprintln!(
        "health version {versions:?}: 16 seeds, identical plans on both routers, {} distinct orders",
        distinct.len()
    );
}

#[tokio::test]
async fn a_retry_after_seen_by_one_router_is_honoured_by_the_others() {
    let c = Cluster::start(Spec {
        routers: 2,
        ..Spec::default()
    })
    .await;
    c.sim()
        .set_faults(
            "fast",
            &json!({"errors": [{"status": 429, "rate": 1.0}], "retry_after_s": 30}),
        )
        .await
        .unwrap();
    let body = hi(json!({"provider": {"order": ["fast", "open"]}}));
    // Router 0 meets the 429 and moves on.
    let (status, v) = c.chat(0, &body).await;
    assert_eq!((status, provider(&v)), (200, "open"), "{v}");
    assert_eq!(outcomes(&v), ["rate_limited", "ok"], "{v}");
    let asked = c.sim().requests(&["fast"]).await.unwrap();
    // Router 1 learns of the cooldown through the shared state within a second…
    let learned = Instant::now();
    loop {
        let (_, x) = c.explain(1, &body, 1).await;
        let cooling = x["excluded"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["endpoint"] == "m@fast"));
        if cooling {
            break;
        }
        assert!(
            learned.elapsed() < Duration::from_secs(2),
            "router 1 still plans m@fast: {x}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "Retry-After shared with the other router in {:?}",
        learned.elapsed()
    );
    // …and does not ask the provider while it lasts.
    for _ in 0..5 {
        let (status, v) = c.chat(1, &body).await;
        assert_eq!((status, provider(&v)), (200, "open"), "{v}");
        assert_eq!(outcomes(&v), ["ok"], "{v}");
    }
    assert_eq!(c.sim().requests(&["fast"]).await.unwrap(), asked);
}
