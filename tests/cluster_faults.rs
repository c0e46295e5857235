//! Cluster fault tolerance: each scenario runs the real services as processes (routers, policy,
//! billing, and a prober where it matters) on a real Redis, breaks one dependency under load,
//! and checks what callers saw and what the state holds afterwards. Every scenario prints its
//! figures; run one alone with `cargo test -p switchyard-e2e --test cluster_faults NAME --
//! --nocapture`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{BETA_KEY, Cluster, KEY, Sample, Spec, hi, provider, set_day_budget, summary};
use serde_json::json;

/// How long each dependency stays down.
const OUTAGE: Duration = Duration::from_secs(30);

/// Waits until the ledgers of `orgs` hold every request id in `served`; returns the ledger ids.
async fn ledger_covers(c: &Cluster, orgs: &[&str], served: &BTreeSet<String>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut ids = Vec::new();
        for org in orgs {
            ids.extend(
                c.ledger_of(org)
                    .await
                    .into_iter()
                    .filter_map(|e| e.record.map(|r| r.request_id)),
            );
        }
        let have: BTreeSet<&String> = ids.iter().collect();
        if served.iter().all(|id| have.contains(id)) || Instant::now() > deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every sample was served.
fn all_served(samples: &[Sample]) {
    assert!(
        samples.iter().all(|s| s.status == 200),
        "{}",
        summary(samples)
    );
}

fn served_ids(samples: &[Sample]) -> BTreeSet<String> {
    samples
        .iter()
        .filter_map(|s| s.request_id.clone())
        .collect()
}

/// The value of an unlabelled counter or gauge in Prometheus text (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum()
}

fn during(samples: &[Sample], from: Duration, to: Duration) -> Vec<Sample> {
    samples
        .iter()
        .filter(|s| s.sent >= from && s.sent < to)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_redis_outage_is_ridden_out_and_every_served_request_is_billed() {
    let mut c = Cluster::start(Spec {
        routers: 2,
        aof: true,
        ..Spec::default()
    })
    .await;
    let started = Instant::now();
    let acme = c.load(20, KEY, hi(json!({})));
    let beta = c.load(20, BETA_KEY, hi(json!({})));
    tokio::time::sleep(Duration::from_secs(3)).await;

    c.redis.kill().await.unwrap();
    let down = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Still ready (the last policy and health are kept), and saying the health is stale.
    let (status, detail) = c.readyz(0).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["health_stale"], true, "{detail}");
    let metrics = c.metrics(0).await;
    assert!(
        metrics.contains("switchyard_state_stale{state=\"health\"} 1"),
        "{metrics}"
    );
    tokio::time::sleep(OUTAGE - Duration::from_secs(3)).await;

    c.redis.restart().await.unwrap();
    let up = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (acme, beta) = (acme.finish().await, beta.finish().await);
    let (_, detail) = c.readyz(0).await;
    assert_eq!(detail["health_stale"], false, "{detail}");

    // A second either side: requests in flight when Redis died or came back may go either way.
    let margin = Duration::from_secs(1);
    let acme_down = during(&acme, down + margin, up - margin);
    let beta_down = during(&beta, down + margin, up - margin);
    let mut fail_open = 0.0;
    for n in 0..c.routers.len() {
        fail_open += metric(&c.metrics(n).await, "switchyard_budget_fail_open_total");
    }
    let acme_after = during(&acme, up + Duration::from_secs(2), Duration::MAX);
    let beta_after = during(&beta, up + Duration::from_secs(2), Duration::MAX);
    eprintln!("redis down {:?}..{:?}", down, up);
    eprintln!("acme (fail_closed) during: {}", summary(&acme_down));
    eprintln!(
        "beta (fail_open, 0.002 USD per router) during: {}",
        summary(&beta_down)
    );
    eprintln!("acme after: {}", summary(&acme_after));
    eprintln!("beta after: {}", summary(&beta_after));
    // fail_closed: nothing is served without a budget check.
    assert!(
        acme_down.iter().all(|s| s.status == 402),
        "{}",
        summary(&acme_down)
    );
    // fail_open: served without a hold within the allowance (0.002 USD per router, about
    // 0.00025 USD per request at the most expensive endpoint), then refused.
    eprintln!("beta requests admitted without a hold: {fail_open}");
    assert!((1.0..=2.0 * 8.0).contains(&fail_open), "{fail_open}");
    let beta_served = beta_down.iter().filter(|s| s.status == 200).count();
    assert!(beta_served as f64 <= fail_open, "{}", summary(&beta_down));
    assert!(
        beta_down.iter().all(|s| s.status == 200 || s.status == 402),
        "{}",
        summary(&beta_down)
    );
    // Back to normal, without restarting anything.
    all_served(&acme_after);
    all_served(&beta_after);

    // Every request served, before, during or after, is in the ledger, once.
    let served: BTreeSet<String> = served_ids(&acme)
        .union(&served_ids(&beta))
        .cloned()
        .collect();
    let ledger = ledger_covers(&c, &["acme", "beta"], &served).await;
    let unique: BTreeSet<&String> = ledger.iter().collect();
    eprintln!(
        "served {} requests, ledger holds {} entries ({} distinct)",
        served.len(),
        ledger.len(),
        unique.len()
    );
    assert_eq!(unique.len(), ledger.len(), "a request was billed twice");
    let missing: Vec<&String> = served.iter().filter(|id| !unique.contains(id)).collect();
    assert!(missing.is_empty(), "not billed: {missing:?}");
    assert_eq!(ledger.len(), served.len());

    // The routers' passive outcomes, buffered while Redis was down, all arrived: one `ok`
    // attempt per served request.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = ok_outcomes(&c).await;
        if ok == served.len() as u64 {
            eprintln!("passive outcomes in Redis: {ok} ok attempts");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ok} ok outcomes for {} served",
            served.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The `ok` attempts recorded in Redis's passive outcome buckets, all endpoints together.
async fn ok_outcomes(c: &Cluster) -> u64 {
    let mut conn = c.redis.connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sy:*:out:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut ok = 0;
    for k in keys {
        let n: Option<u64> = redis::cmd("HGET")
            .arg(&k)
            .arg("ok")
            .query_async(&mut conn)
            .await
            .unwrap();
        ok += n.unwrap_or(0);
    }
    ok
}

#[tokio::test]
async fn a_billing_outage_loses_no_usage_report() {
    let mut c = Cluster::start(Spec {
        routers: 2,
        ..Spec::default()
    })
    .await;
    set_day_budget(&c, "acme", 10_000_000_000).await;
    let load = c.load(20, KEY, hi(json!({})));
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.billing.kill().await.unwrap();
    let killed = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    c.restart_billing().await;
    eprintln!("billing down for {:?}", killed.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let samples = load.finish().await;
    eprintln!("through the billing outage: {}", summary(&samples));
    // Budgets live in Redis, which is up: every request is served.
    all_served(&samples);
    let served = served_ids(&samples);
    let ledger = ledger_covers(&c, &["acme"], &served).await;
    let unique: BTreeSet<&String> = ledger.iter().collect();
    eprintln!(
        "served {} requests, ledger holds {} entries ({} distinct)",
        served.len(),
        ledger.len(),
        unique.len()
    );
    assert_eq!(unique.len(), ledger.len(), "a request was billed twice");
    assert_eq!(ledger.len(), served.len());
    // Nothing is left held once every report is in (and the routers' idle leases are given
    // back).
    nothing_held(&c, "acme", Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_policy_outage_keeps_the_last_snapshot_and_new_routers_start_from_redis() {
    let mut c = Cluster::start(Spec::default()).await;
    let load = c.load(20, KEY, hi(json!({})));
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.policy.kill().await.unwrap();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, detail) = c.readyz(0).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["policy_stale"], true, "{detail}");
    // A router started now finds no policy service, loads the snapshot from Redis and serves.
    let started = Instant::now();
    let n = c.add_router().await;
    eprintln!(
        "a router started during the outage was ready in {:?}",
        started.elapsed()
    );
    let (status, detail) = c.readyz(n).await;
    assert_eq!(status, 200, "{detail}");
    let (status, v) = c.chat(n, &hi(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["routing"]["policy_version"].as_u64().unwrap() >= 1, "{v}");
    tokio::time::sleep(OUTAGE.saturating_sub(killed.elapsed())).await;

    c.restart_policy().await;
    // Both routers follow the service again.
    let deadline = Instant::now() + Duration::from_secs(20);
    for r in 0..=n {
        loop {
            let (_, detail) = c.readyz(r).await;
            if detail["policy_stale"] == false {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "router-{r} still stale: {detail}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!(
        "policy down for {:?}, routers following it again",
        killed.elapsed()
    );
    let samples = load.finish().await;
    eprintln!("through the policy outage: {}", summary(&samples));
    all_served(&samples);
}

#[tokio::test]
async fn a_router_killed_mid_stream_has_its_hold_settled_by_the_reconciler() {
    let mut c = Cluster::start(Spec {
        routers: 2,
        // Holds outlive their request's deadline (4 s in workflow `short`) by 2 s.
        router_args: vec!["--hold-grace-ms".into(), "2000".into()],
        ..Spec::default()
    })
    .await;
    for p in ["fast", "open"] {
        c.sim()
            .set_faults(p, &json!({"latency": {"per_token_ms": 150}}))
            .await
            .unwrap();
    }
    set_day_budget(&c, "acme", 10_000_000_000).await;
    let body = hi(json!({"workflow": "short", "stream": true}));
    let mut doomed = c.post(0, &body, &[]).await;
    assert_eq!(doomed.status(), 200);
    let first = doomed.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "), "{first:?}");
    // A stream on the other router, running across the kill.
    let survivor = c.post(1, &body, &[]).await;
    assert_eq!(survivor.status(), 200);

    c.routers[0].kill().await.unwrap();
    let killed = Instant::now();
    // The killed router's client sees the connection end without `[DONE]`.
    let mut rest = Vec::new();
    while let Ok(Some(bytes)) = doomed.chunk().await {
        rest.extend_from_slice(&bytes);
    }
    assert!(!String::from_utf8_lossy(&rest).contains("[DONE]"));
    let text = survivor.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let (status, v) = c.chat(1, &hi(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    let held_now = held(&c, "acme").await;
    eprintln!("held after the kill: {held_now} nano-USD");
    assert!(held_now > 0);

    // The dead router's lease (5 s unrenewed) expires; the reconciler charges the stream it had
    // in flight at its maximum cost and gives the rest of the slice back.
    let deadline = Instant::now() + Duration::from_secs(20);
    let entry = loop {
        let ledger = c.ledger().await;
        if let Some(e) = ledger.iter().find(|e| e.unreconciled) {
            break e.clone();
        }
        assert!(Instant::now() < deadline, "no reconciled hold: {ledger:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let record = entry.record.unwrap();
    eprintln!(
        "hold {} settled by the reconciler {:?} after the kill, at {} nano-USD",
        record.hold_id,
        killed.elapsed(),
        record.cost_nano_usd
    );
    assert!(record.cost_nano_usd > 0);
    assert_eq!(
        c.ledger().await.iter().filter(|e| e.unreconciled).count(),
        1
    );
    nothing_held(&c, "acme", Duration::from_secs(10)).await;
}

/// Waits until `org` holds nothing: every hold settled or released, every lease of a live
/// router given back once idle, every lease of a dead one ended by the reconciler.
async fn nothing_held(c: &Cluster, org: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = held(c, org).await;
        if now == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "still held: {now} nano-USD");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What `org`'s budgets hold right now, all together.
async fn held(c: &Cluster, org: &str) -> i64 {
    let budgets = c
        .billing()
        .await
        .list_budgets(switchyard_proto::v1::ListBudgetsRequest { org_id: org.into() })
        .await
        .unwrap()
        .into_inner();
    assert!(!budgets.budgets.is_empty(), "no budget for {org}");
    budgets.budgets.iter().map(|b| b.held_nano_usd).sum()
}

#[tokio::test]
async fn with_the_prober_down_routers_eject_failing_endpoints_themselves() {
    let mut c = Cluster::start(Spec {
        routers: 2,
        prober: Some(
            "probe: { interval_ms: 1000 }\nrecord_ttl_ms: 2000\nevaluate_ms: 200\n".into(),
        ),
        router_args: vec!["--health-ttl-ms".into(), "2000".into()],
        ..Spec::default()
    })
    .await;
    // The prober has seen every endpoint; then it dies and its records age out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.endpoints().await.endpoints.len() < 4 {
        assert!(Instant::now() < deadline, "the prober wrote no records");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.prober.as_mut().unwrap().kill().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    c.break_provider("fast", 500).await;
    c.sim().reset_counters().await.unwrap();
    let body = hi(json!({"provider": {"order": ["fast", "open"]}}));
    let load = c.load(20, KEY, body.clone());
    // Each router ejects it on its own after a few failures in a row...
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in 0..2 {
        while metric(&c.metrics(n).await, "switchyard_local_ejections_total") < 1.0 {
            assert!(Instant::now() < deadline, "router-{n} never ejected `fast`");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let before = c.sim().requests(&["fast"]).await.unwrap();
    // ...and from then on sends it nothing (requests already past their attempt on it when the
    // ejection came are counted above; how many depends on how slow the machine is).
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.sim().reset_counters().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let samples = load.finish().await;
    let upstream = c.sim().requests(&["fast"]).await.unwrap();
    eprintln!(
        "prober down, `fast` failing: {}; `fast` received {before} requests before both routers ejected it, {upstream} after",
        summary(&samples)
    );
    all_served(&samples);
    assert!(before < samples.len() as u64 / 2, "{before}");
    assert_eq!(upstream, 0);
    for n in 0..2 {
        let ejections = metric(&c.metrics(n).await, "switchyard_local_ejections_total");
        let resp = c.post(n, &body, &[("x-switchyard-route-seed", "7")]).await;
        let v: serde_json::Value = resp.json().await.unwrap();
        eprintln!(
            "router-{n}: {ejections} local ejections, plan {}",
            v["routing"]["plan"]
        );
        assert!(ejections >= 1.0);
        assert!(!common::plan(&v).contains(&"m@fast".to_string()), "{v}");
    }
}

#[tokio::test]
async fn a_rate_limit_storm_shifts_traffic_and_it_returns_when_lifted() {
    let c = Cluster::start(Spec {
        routers: 2,
        ..Spec::default()
    })
    .await;
    let body = hi(json!({"provider": {"order": ["fast", "open"]}}));
    let load = c.load(20, KEY, body);
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.sim().reset_counters().await.unwrap();
    let storm_started = Instant::now();
    c.sim()
        .set_faults(
            "fast",
            &json!({"errors": [{"status": 429, "rate": 1.0}], "retry_after_s": 2}),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = c.sim().requests(&["fast"]).await.unwrap();
    c.sim().heal("fast").await.unwrap();
    let storm = storm_started.elapsed();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let samples = load.finish().await;
    eprintln!(
        "rate-limit storm on `fast` for {storm:?} (Retry-After 2 s): {}",
        summary(&samples)
    );
    eprintln!("`fast` received {during} requests during the storm (2 routers, 20 requests/s)");
    all_served(&samples);
    // Each router asks again once per Retry-After, not once per request.
    let bound = 2 * (storm.as_secs() / 2 + 2);
    assert!(during <= bound, "{during} > {bound}");
    // While it lasts traffic goes to `open`; afterwards it returns to `fast`.
    let share = |from: Duration, to: Duration| {
        let s: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.sent >= from && s.sent < to)
            .collect();
        let fast = s
            .iter()
            .filter(|s| s.provider.as_deref() == Some("fast"))
            .count();
        fast as f64 / s.len().max(1) as f64
    };
    let t0 = Duration::from_secs(2);
    let (before, in_storm, after) = (
        share(Duration::ZERO, t0),
        share(t0 + Duration::from_secs(1), t0 + storm),
        share(t0 + storm + Duration::from_secs(3), Duration::MAX),
    );
    eprintln!(
        "share served by `fast`: before {:.0} %, during {:.0} %, after {:.0} %",
        before * 100.0,
        in_storm * 100.0,
        after * 100.0
    );
    assert!(before > 0.9 && in_storm < 0.05 && after > 0.9);
}

#[tokio::test]
async fn a_flapping_provider_causes_no_retry_storm() {
    let c = Cluster::start(Spec {
        routers: 2,
        prober: Some("probe: { interval_ms: 1000 }\nevaluate_ms: 250\n".into()),
        ..Spec::default()
    })
    .await;
    c.sim().reset_counters().await.unwrap();
    // `fast` is preferred, and goes down for 2 s out of every 4 s.
    let load = c.load(
        25,
        KEY,
        hi(json!({"provider": {"order": ["fast", "open"]}})),
    );
    let started = Instant::now();
    let mut flips = 0;
    while started.elapsed() < Duration::from_secs(20) {
        let down = flips % 2 == 0;
        let faults = if down {
            json!({"errors": [{"status": 503, "rate": 1.0}]})
        } else {
            json!({})
        };
        c.sim().set_faults("fast", &faults).await.unwrap();
        flips += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    c.sim().heal("fast").await.unwrap();
    let samples = load.finish().await;
    let upstream = c
        .sim()
        .requests(&["fast", "open", "premium", "claude"])
        .await
        .unwrap();
    let probes = 4 * 20; // at most one probe per endpoint per second
    let max_attempts = samples.iter().map(|s| s.attempts).max().unwrap_or(0);
    let ratio = upstream as f64 / samples.len() as f64;
    eprintln!(
        "flapping `fast` (2 s down / 2 s up, {flips} flips): {}",
        summary(&samples)
    );
    eprintln!(
        "upstream requests {upstream} (incl. at most {probes} probes) for {} user requests: {ratio:.2} ×; most attempts for one request: {max_attempts}",
        samples.len()
    );
    let served = samples.iter().filter(|s| s.status == 200).count();
    assert_eq!(served, samples.len(), "{}", summary(&samples));
    // At most the first attempt, one retry and one fallback per request...
    assert!(max_attempts <= 3, "{max_attempts}");
    // ...and in total, well under that: the stated bound is 1.5 × user traffic.
    assert!(
        upstream as f64 <= 1.5 * samples.len() as f64 + probes as f64,
        "{upstream}"
    );
}

/// Sends one raw gRPC request body (frames as given) to `Router/Chat`; returns `grpc-status`.
async fn raw_grpc(addr: &str, body: Vec<u8>) -> String {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = hyper::Request::post(format!("http://{addr}/switchyard.v1.Router/Chat"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {KEY}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("no answer to a garbage frame")
        .unwrap();
    if let Some(s) = resp.headers().get("grpc-status") {
        return s.to_str().unwrap().to_string();
    }
    let collected = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the body never ended")
        .unwrap();
    collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|s| s.to_str().unwrap().to_string())
        .unwrap_or_else(|| "(none)".into())
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_leaks_nothing() {
    let c = Cluster::start(Spec::default()).await;
    set_day_budget(&c, "acme", 10_000_000_000).await;
    let url = format!("{}/v1/chat/completions", c.routers[0].url("http"));
    let send = async |body: Vec<u8>| -> (u16, serde_json::Value) {
        let resp = c
            .http
            .post(&url)
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    };
    let ok = hi(json!({})).to_string();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            ok.as_bytes()[..ok.len() - 3].to_vec(),
            400,
            "invalid request body",
        ),
        (
            "not an object",
            b"[1, 2, 3]".to_vec(),
            400,
            "must be a JSON object",
        ),
        ("empty body", Vec::new(), 400, "must be a JSON object"),
        (
            "invalid UTF-8",
            ok.replace("hello", "he\u{1}llo")
                .into_bytes()
                .into_iter()
                .map(|b| if b == 1 { 0xff } else { b })
                .collect(),
            400,
            "invalid request body",
        ),
        ("oversize body", vec![b' '; 9 << 20], 413, "larger than"),
        (
            "unknown field",
            hi(json!({"bogus": 1})).to_string().into_bytes(),
            400,
            "unknown field `bogus`",
        ),
        (
            "absurd max_tokens",
            hi(json!({"max_tokens": 1_000_000_000_000u64}))
                .to_string()
                .into_bytes(),
            400,
            "max_tokens",
        ),
        (
            "huge max_tokens",
            hi(json!({"max_tokens": 100_000_000}))
                .to_string()
                .into_bytes(),
            400,
            "`max_tokens` must be between",
        ),
        (
            "n > 1",
            hi(json!({"n": 3})).to_string().into_bytes(),
            400,
            "`n` must be 1",
        ),
    ];
    for (what, body, status, message) in cases {
        let (got, v) = send(body).await;
        let text = v["error"]["message"].as_str().unwrap_or_default();
        eprintln!("{what}: {got} {text}");
        assert_eq!(got, status, "{what}: {v}");
        assert!(text.contains(message), "{what}: {v}");
    }

    // Garbage gRPC frames: a status, never a hang or a dropped connection.
    let grpc = c.routers[0].addr("grpc").unwrap().to_string();
    let frames: Vec<(&str, Vec<u8>)> = vec![
        (
            "not protobuf",
            vec![0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
        ("truncated frame", vec![0, 0, 0, 3, 0xe8, 0x0a, 0x01]),
        (
            "compressed without an encoding",
            vec![1, 0, 0, 0, 2, 0x0a, 0x00],
        ),
        ("no frame at all", Vec::new()),
    ];
    for (what, body) in frames {
        let status = raw_grpc(&grpc, body).await;
        eprintln!("gRPC {what}: grpc-status {status}");
        assert!(status != "0" && status != "(none)", "{what}: {status}");
    }

    // Garbage from upstream.
    let strict = |extra: serde_json::Value| {
        let mut b = hi(json!({"provider": {"order": ["fast"], "allow_fallbacks": false}}));
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    c.sim()
        .set_faults("fast", &json!({"malformed_rate": 1.0}))
        .await
        .unwrap();
    let (status, v) = c.chat(0, &strict(json!({}))).await;
    eprintln!(
        "upstream malformed JSON: {status} {}",
        v["error"]["message"]
    );
    assert_eq!(status, 502, "{v}");
    let (status, v) = c
        .chat(0, &hi(json!({"provider": {"order": ["fast", "open"]}})))
        .await;
    assert_eq!((status, provider(&v)), (200, "open"), "{v}");

    c.sim()
        .set_faults(
            "fast",
            &json!({"endless_stream": true, "latency": {"per_token_ms": 20}}),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let (status, events) = c.stream(0, &strict(json!({"workflow": "short"}))).await;
    let took = started.elapsed();
    let last = events.last().cloned().unwrap_or_default();
    eprintln!(
        "upstream endless stream: ended after {took:?} with {} events, last {last}",
        events.len()
    );
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(last.contains("\"error\""), "{last}");

    c.sim()
        .set_faults("fast", &json!({"huge_chunk_bytes": 6_000_000}))
        .await
        .unwrap();
    let started = Instant::now();
    let (status, events) = c.stream(0, &strict(json!({}))).await;
    let last = events.last().cloned().unwrap_or_default();
    eprintln!(
        "upstream 6 MB chunk: {status} after {:?}, last event {}",
        started.elapsed(),
        &last[..last.len().min(200)]
    );
    assert!(
        status != 200 || last.contains("\"error\""),
        "a 6 MB line went through: {status}"
    );
    let (status, v) = c.chat(0, &strict(json!({}))).await;
    assert_eq!(status, 200, "{v}");

    // Nothing leaked: every hold is settled or released, the router is up and never panicked.
    nothing_held(&c, "acme", Duration::from_secs(10)).await;
    let health = c
        .http
        .get(format!("{}/healthz", c.routers[0].url("http")))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(!c.routers[0].log().contains("panicked"));
}
