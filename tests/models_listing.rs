//! `GET /v1/models` (and gRPC `ListModels`) per caller: two orgs with different workflows see
//! different models; naming a workflow narrows the list to what it may use, with the providers
//! that would serve each model and OpenRouter's fields (context length, per-token prices,
//! supported parameters); `GET /v1/models/{id}/endpoints` shows each endpoint's state and live
//! statistics, an outage within two probe intervals.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use common::{BETA_KEY, Cluster, KEY, Spec};
use serde_json::Value;
use switchyard_proto::v1 as pb;

async fn models(c: &Cluster, key: &str, query: &str) -> (u16, Value) {
    let resp = c
        .http
        .get(format!("{}/v1/models{query}", c.routers[0].url("http")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn ids(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// The item of `list` whose `field` is `value`.
fn find<'a>(list: &'a Value, field: &str, value: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|m| m[field] == value)
        .unwrap_or_else(|| panic!("no {value} in {list}"))
}

fn entry<'a>(v: &'a Value, id: &str) -> &'a Value {
    find(&v["data"], "id", id)
}

#[tokio::test]
async fn each_caller_sees_what_its_org_and_workflow_may_use() {
    let c = Cluster::start(Spec {
        clouds: true,
        extra_models: vec!["{ id: e, kind: embedding, context_length: 8000 }".into()],
        extra_endpoints: vec![
            "{ model: e, provider: fast, upstream_model: e-fast, price: { prompt: 1, completion: 0 } }".into(),
        ],
        ..Spec::default()
    })
    .await;

    // acme's workflows use m, big, e and c; beta's only m and big.
    let (status, acme) = models(&c, KEY, "").await;
    assert_eq!(status, 200, "{acme}");
    assert_eq!(ids(&acme), ["m", "big", "e", "c"], "{acme}");
    let (_, beta) = models(&c, BETA_KEY, "").await;
    assert_eq!(ids(&beta), ["m", "big"], "{beta}");

    // OpenRouter's fields, from the catalog: m's cheapest endpoint costs 1 / 2 USD per 1M.
    let m = entry(&acme, "m");
    assert_eq!(m["context_length"], 8000);
    assert_eq!(m["pricing"]["prompt"], "0.000001");
    assert_eq!(m["pricing"]["completion"], "0.000002");
    assert_eq!(m["top_provider"]["max_completion_tokens"], 500);
    assert_eq!(
        m["providers"],
        serde_json::json!(["fast", "open", "premium"])
    );
    assert!(
        m["supported_parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "tools")
    );
    assert_eq!(entry(&acme, "e")["kind"], "embedding");
    assert_eq!(
        entry(&acme, "c")["providers"],
        serde_json::json!(["gem", "brk", "fast"])
    );

    // A workflow narrows it: `strict` allows m on `fast` only, without fallbacks.
    let (_, strict) = models(&c, KEY, "?workflow=strict").await;
    assert_eq!(ids(&strict), ["m"], "{strict}");
    assert_eq!(
        entry(&strict, "m")["providers"],
        serde_json::json!(["fast"])
    );
    let (status, unknown) = models(&c, KEY, "?workflow=nope").await;
    assert_eq!(status, 403, "{unknown}");

    // An operator disabling a provider takes it out of the listing.
    let mut policy = pb::policy_client::PolicyClient::connect(c.policy.url("grpc"))
        .await
        .unwrap();
    policy
        .put_override(pb::PutOverrideRequest {
            r#override: Some(pb::Override {
                kind: pb::OverrideKind::DisableProvider as i32,
                target: "premium".into(),
                reason: "listing test".into(),
                actor: "e2e".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, now) = models(&c, KEY, "").await;
        if entry(&now, "m")["providers"] == serde_json::json!(["fast", "open"]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{now}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // gRPC lists the same, per caller.
    let mut router = pb::router_client::RouterClient::connect(c.routers[0].url("grpc"))
        .await
        .unwrap();
    let mut req = tonic::Request::new(pb::ListModelsRequest {
        workflow: "strict".into(),
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
    let listed = router.list_models(req).await.unwrap().into_inner();
    let got: Vec<(String, Vec<String>)> = listed
        .models
        .into_iter()
        .map(|m| (m.id, m.providers))
        .collect();
    assert_eq!(got, [("m".to_string(), vec!["fast".to_string()])]);
}

async fn endpoints(c: &Cluster, n: usize, key: &str, model: &str) -> (u16, Value) {
    let resp = c
        .http
        .get(format!(
            "{}/v1/models/{model}/endpoints",
            c.routers[n].url("http")
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn endpoint<'a>(v: &'a Value, name: &str) -> &'a Value {
    find(&v["data"]["endpoints"], "name", name)
}

#[tokio::test]
async fn endpoint_stats_come_from_every_routers_outcomes() {
    let c = Cluster::start(Spec {
        routers: 2,
        prober: Some("probe: { interval_ms: 1000 }\nevaluate_ms: 200\n".into()),
        ..Spec::default()
    })
    .await;
    // Through both routers: fast answers (some streamed, for time to first token); open fails
    // and its requests fall back to fast.
    let fast = common::hi(serde_json::json!({"provider": {"order": ["fast"]}}));
    for i in 0..12 {
        if i % 3 == 0 {
            let (status, _) = c.stream(i % 2, &fast).await;
            assert_eq!(status, 200);
        } else {
            let (status, v) = c.chat(i % 2, &fast).await;
            assert_eq!(status, 200, "{v}");
        }
    }
    c.break_provider("open", 500).await;
    let broken = std::time::Instant::now();
    let open = common::hi(serde_json::json!({"provider": {"order": ["open", "fast"]}}));
    for i in 0..6 {
        let (status, v) = c.chat(i % 2, &open).await;
        assert_eq!(status, 200, "{v}");
    }
    // Outcomes reach the shared buckets within a second or so; either router reads them all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let v = loop {
        let (status, v) = endpoints(&c, 1, KEY, "m").await;
        assert_eq!(status, 200, "{v}");
        let done = endpoint(&v, "m@fast")["attempts_last_30m"].as_u64() >= Some(18)
            && endpoint(&v, "m@open")["attempts_last_30m"].as_u64() >= Some(6)
            && endpoint(&v, "m@open")["state"] == "ejected";
        if done {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    // Two probe intervals (1 s each), and the time the requests above took.
    let took = broken.elapsed();
    eprintln!("outage shown (uptime, ejected) {took:?} after it began\n{v:#}");
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    let f = endpoint(&v, "m@fast");
    for w in ["uptime_last_5m", "uptime_last_30m", "uptime_last_1d"] {
        assert_eq!(f[w], 100.0, "{f}");
        assert_eq!(endpoint(&v, "m@open")[w], 0.0, "{v}");
        assert!(
            endpoint(&v, "m@premium")[w].is_null(),
            "no traffic, no uptime: {v}"
        );
    }
    for stat in ["latency_last_30m", "ttft_last_30m", "throughput_last_30m"] {
        let p = &f[stat];
        let (p50, p99) = (p["p50"].as_f64().unwrap(), p["p99"].as_f64().unwrap());
        assert!(p50 > 0.0, "{stat}: {p}");
        if stat == "throughput_last_30m" {
            assert!(p99 <= p50, "{stat}: {p}");
        } else {
            assert!(p99 >= p50, "{stat}: {p}");
        }
    }
    assert_eq!(f["provider_name"], "fast");
    assert_eq!(f["pricing"]["prompt"], "0.000001");
    assert!(f["state"].is_string(), "{f}");

    // The prober's listing shows the same.
    let h = c.ctl(&["health"]).await.ok();
    let fast_h = find(&h["endpoints"], "endpoint", "m@fast");
    assert_eq!(fast_h["uptime_last_30m"], 100.0, "{fast_h}");
    assert_eq!(
        fast_h["latency_last_30m"], f["latency_last_30m"],
        "{fast_h}"
    );

    // Unknown models and paths are 404s in the OpenAI envelope.
    let (status, v) = endpoints(&c, 0, KEY, "nope").await;
    assert_eq!(status, 404, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("nope"),
        "{v}"
    );
    let (status, _) = endpoints(&c, 0, "sk-wrong", "m").await;
    assert_eq!(status, 401);
}
