//! Every request looked up by its id: a request that fell back, served by one router, read from
//! the other with `GET /v1/generations/{id}` and with `ctl request` / `ctl requests`; another
//! org's key gets a 404 or a refusal, an issued key with the `admin` scope reads every org; the
//! record holds the route and never the prompt, the reply or the key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::time::{Duration, Instant};

use common::{BETA_KEY, Cluster, KEY, Spec, hi};
use serde_json::{Value, json};

const PROMPT: &str = "the zebra-marker-5521 prompt";

/// `GET /v1/generations/{id}` on router `n` as `key`: status and body.
async fn generation(c: &Cluster, n: usize, id: &str, key: &str) -> (u16, Value) {
    let resp = c
        .http
        .get(format!("{}/v1/generations/{id}", c.routers[n].url("http")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls router `n` until the record of `id` is there (records are written in batches).
async fn record_on(c: &Cluster, n: usize, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = generation(c, n, id, KEY).await;
        if status == 200 {
            return body["data"].clone();
        }
        assert_eq!(status, 404, "{body}");
        assert!(Instant::now() < deadline, "never recorded: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a request that starts on `fast` (failing) and falls back; its id and reply text.
async fn fallen_back(c: &Cluster, stream: bool) -> (String, String) {
    let body = hi(json!({
        "messages": [{"role": "user", "content": PROMPT}],
        "provider": {"order": ["fast", "open"]},
        "stream": stream,
    }));
    let resp = c.post(0, &body, &[]).await;
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-switchyard-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    (id, resp.text().await.unwrap())
}

#[tokio::test]
async fn a_request_is_found_by_its_id_on_another_router_and_only_by_its_org() {
    let c = Cluster::start(Spec {
        routers: 2,
        ..Spec::default()
    })
    .await;
    c.break_provider("fast", 500).await;

    let (id, reply) = fallen_back(&c, false).await;
    let content =
        serde_json::from_str::<Value>(&reply).unwrap()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
    let r = record_on(&c, 1, &id).await;
    eprintln!("record: {r}");
    assert_eq!(r["id"], id);
    assert_eq!(r["org"], "acme");
    assert_eq!(r["key_id"], "k1");
    assert_eq!(r["api"], "chat_completions");
    assert_eq!(r["workflow"], "main");
    assert_eq!(r["requested_model"], "m");
    assert_eq!(r["endpoint"], "m@open");
    assert_eq!(r["outcome"], "ok");
    let attempts = r["attempts"].as_array().unwrap();
    assert_eq!(attempts.first().unwrap()["endpoint"], "m@fast", "{r}");
    assert_ne!(attempts.first().unwrap()["outcome"], "ok", "{r}");
    assert_eq!(attempts.last().unwrap()["endpoint"], "m@open", "{r}");
    assert_eq!(attempts.last().unwrap()["outcome"], "ok", "{r}");
    assert!(r["fallbacks"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["prompt_tokens"].as_u64().unwrap() > 0, "{r}");
    assert!(r["completion_tokens"].as_u64().unwrap() > 0, "{r}");
    assert!(r["cost_nano_usd"].as_i64().unwrap() > 0, "{r}");
    assert!(r["policy_version"].as_u64().unwrap() > 0, "{r}");
    assert!(
        r["route_seed"].as_str().unwrap().parse::<u64>().is_ok(),
        "{r}"
    );
    assert!(r["latency_ms"].as_f64().unwrap() > 0.0, "{r}");
    // Content and keys appear nowhere in it.
    let text = r.to_string();
    for secret in [PROMPT, "zebra", content.as_str(), KEY, BETA_KEY] {
        assert!(!text.contains(secret), "`{secret}` in {text}");
    }

    // Another org's key, an unknown id, no key.
    let (status, body) = generation(&c, 1, &id, BETA_KEY).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    assert!(!body.to_string().contains("acme"), "{body}");
    let (status, _) = generation(&c, 0, "req_000000000000000000000000", KEY).await;
    assert_eq!(status, 404);
    let (status, body) = generation(&c, 0, "not-an-id", KEY).await;
    assert_eq!(status, 404, "{body}");
    let resp = c
        .http
        .get(format!("{}/v1/generations/{id}", c.routers[1].url("http")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // A stream leaves its record too, with its time to first token.
    let (sid, _) = fallen_back(&c, true).await;
    let s = record_on(&c, 1, &sid).await;
    assert_eq!(s["stream"], true, "{s}");
    assert!(s["ttft_ms"].as_f64().is_some(), "{s}");

    // ctl reads the same records through a router.
    let one = c.ctl(&["request", &id, "--key", KEY]).await.ok();
    assert_eq!(one, r);
    let listed = c.ctl(&["requests", "--key", KEY]).await.ok();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![sid.as_str(), id.as_str()], "newest first");
    let on_fast = c
        .ctl(&[
            "requests",
            "--endpoint",
            "m@fast",
            "--since",
            "5m",
            "--key",
            KEY,
        ])
        .await
        .ok();
    assert_eq!(on_fast.as_array().unwrap().len(), 2, "{on_fast}");
    let limited = c
        .ctl(&["requests", "--outcome", "rate_limited", "--key", KEY])
        .await
        .ok();
    assert_eq!(limited, json!([]));
    // Beta's key reads beta's requests (none), and not acme's.
    assert_eq!(
        c.ctl(&["requests", "--key", BETA_KEY]).await.ok(),
        json!([])
    );
    let refused = c
        .ctl(&["requests", "--org", "acme", "--key", BETA_KEY])
        .await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("admin"), "{refused:?}");
    let refused = c.ctl(&["request", &id, "--key", BETA_KEY]).await;
    assert_eq!(refused.code, 1, "{refused:?}");

    // An issued key with the admin scope reads every org's.
    let issued = c
        .ctl(&["keys", "issue", "--org", "beta", "--scope", "admin"])
        .await
        .ok();
    c.wait_policy(issued["policy_version"].as_u64().unwrap())
        .await;
    let admin = issued["secret"].as_str().unwrap();
    let all = c.ctl(&["requests", "--key", admin]).await.ok();
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    assert_eq!(c.ctl(&["request", &id, "--key", admin]).await.ok(), r);
    let acme = c
        .ctl(&["requests", "--org", "acme", "--key", admin])
        .await
        .ok();
    assert_eq!(acme.as_array().unwrap().len(), 2, "{acme}");
    // Over HTTP, even an admin key reads its own org's only.
    let (status, _) = generation(&c, 1, &id, admin).await;
    assert_eq!(status, 404);
}
