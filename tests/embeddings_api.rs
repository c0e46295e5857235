//! Embeddings on the router: the official SDK unchanged against `switchyard up`, and an
//! embeddings provider outage that falls back, with every call billed at the serving
//! endpoint's price, over HTTP and gRPC.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::time::Duration;

use common::up::sdk_against_up;
use common::{Cluster, KEY, Spec};
use serde_json::{Value, json};
use switchyard_proto::v1 as pb;

#[tokio::test]
async fn the_official_openai_sdk_runs_embeddings_unchanged() {
    let seen = sdk_against_up(
        "openai_embeddings.py",
        "openai",
        &["demo-embed", "demo-fast"],
    )
    .await;
    assert_eq!(seen["many"], 3);
    assert_eq!(seen["errors"], "ok");
}

/// A cluster whose catalog has the embedding model `e` on `fast` (1 USD per 1M input tokens)
/// and `open` (2 USD).
fn embedding_spec() -> Spec {
    Spec {
        extra_models: vec!["{ id: e, kind: embedding, context_length: 8000 }".into()],
        extra_endpoints: vec![
            "{ model: e, provider: fast, upstream_model: e-fast, price: { prompt: 1, completion: 0 } }".into(),
            "{ model: e, provider: open, upstream_model: e-open, price: { prompt: 2, completion: 0 } }".into(),
        ],
        prober: Some(common::QUIET_PROBER.into()),
        ..Spec::default()
    }
}

async fn embed(c: &Cluster, body: &Value) -> (u16, Value) {
    let resp = c
        .http
        .post(format!("{}/v1/embeddings", c.routers[0].url("http")))
        .bearer_auth(KEY)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn an_embeddings_outage_falls_back_and_every_call_is_billed() {
    let c = Cluster::start(embedding_spec()).await;
    let before = c.ledger().await.len();
    let body = json!({"model": "e", "workflow": "embed", "input": ["the first text", "the second, longer text"],
                      "provider": {"order": ["fast", "open"]}});

    // `fast` down: served by `open`, at open's price.
    c.break_provider("fast", 503).await;
    let (status, down) = embed(&c, &body).await;
    assert_eq!(status, 200, "{down}");
    assert_eq!(down["provider"], "open", "{down}");
    assert_eq!(down["data"].as_array().unwrap().len(), 2);
    let attempts = down["routing"]["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["provider"], "fast");
    assert_eq!(attempts[0]["outcome"], "unavailable");
    assert_eq!(attempts.last().unwrap()["provider"], "open");

    // `fast` back: served by it, at its price (the simulator's vectors depend on the text
    // alone, so both providers give the same ones).
    c.sim().heal("fast").await.unwrap();
    let (status, up) = embed(&c, &body).await;
    assert_eq!(status, 200, "{up}");
    assert_eq!(up["provider"], "fast", "{up}");
    assert_eq!(up["data"][0]["embedding"], down["data"][0]["embedding"]);

    // Billed once each, tokens × the serving endpoint's price, and the reply says so.
    let ledger = c.ledger_at_least(before + 2, Duration::from_secs(10)).await;
    let records: Vec<_> = ledger[before..]
        .iter()
        .map(|e| e.record.clone().unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    for (record, reply, nano_per_token) in [(&records[0], &down, 2_000), (&records[1], &up, 1_000)]
    {
        assert_eq!(
            record.endpoint,
            format!("e@{}", reply["provider"].as_str().unwrap())
        );
        assert!(
            record.prompt_tokens > 0 && record.completion_tokens == 0,
            "{record:?}"
        );
        assert_eq!(
            record.cost_nano_usd,
            i64::from(record.prompt_tokens) * nano_per_token,
            "{record:?}"
        );
        assert_eq!(
            reply["usage"]["prompt_tokens"].as_u64().unwrap(),
            u64::from(record.prompt_tokens)
        );
        eprintln!(
            "billed {}: {} tokens, {} nano-USD",
            record.endpoint, record.prompt_tokens, record.cost_nano_usd
        );
    }

    // gRPC Embed takes the same path.
    let mut grpc = pb::router_client::RouterClient::connect(c.routers[0].url("grpc"))
        .await
        .unwrap();
    let mut req = tonic::Request::new(pb::EmbedRequest {
        model: "e".into(),
        input: vec!["the first text".into()],
        workflow: "embed".into(),
        dimensions: Some(16),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
    let reply = grpc.embed(req).await.unwrap().into_inner();
    assert_eq!(reply.data.len(), 1);
    assert_eq!(reply.data[0].values.len(), 16);
    assert!(reply.usage.unwrap().cost_nano_usd > 0);
    assert_eq!(reply.trace.unwrap().attempts.len(), 1);
    c.ledger_at_least(before + 3, Duration::from_secs(10)).await;

    // The prober probes an embedding endpoint with an embeddings call, not a chat completion
    // (its own rounds may probe this and other endpoints meanwhile).
    let calls_to = |stats: &Value| stats["by_model"]["e-open"].as_u64().unwrap_or(0);
    let before_probe = calls_to(&c.sim().stats("open").await.unwrap());
    let p = c.ctl(&["probe", "e@open"]).await.ok();
    assert_eq!(p["state"], "healthy", "{p}");
    let stats = c.sim().stats("open").await.unwrap();
    assert!(calls_to(&stats) > before_probe, "{stats}");
    for r in stats["recent"].as_array().unwrap() {
        if r["model"] == "e-open" {
            assert_eq!(r["api"], "embeddings", "{stats}");
            assert_eq!(r["outcome"], "ok", "{stats}");
        }
    }

    // A chat model is not an embedding model, and the other way round; a list that mixes kinds
    // skips the wrong one with its reason.
    let (status, v) = embed(&c, &json!({"model": "m", "input": "x"})).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("embedding model"),
        "{v}"
    );
    let (status, v) = embed(
        &c,
        &json!({"models": ["m", "e"], "workflow": "embed", "input": "x"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["routing"]["excluded"][0]["reason"], "wrong_kind", "{v}");
    let (status, v) = c
        .chat(0, &json!({"model": "e", "workflow": "embed", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("chat model"),
        "{v}"
    );
}
