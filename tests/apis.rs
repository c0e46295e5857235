//! What every client-facing API shares: the same stages refuse each in that API's own error
//! shape, and pass on what providers send back (reasoning, fields Switchyard does not model).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Cluster, KEY, Spec};
use serde_json::{Value, json};

/// The Messages API's own headers.
const ANTHROPIC: &[(&str, &str)] = &[("anthropic-version", "2023-06-01")];

#[tokio::test]
async fn a_budget_at_its_limit_refuses_each_api_in_its_own_shape() {
    let c = Cluster::start(Spec {
        extra_models: vec!["{ id: e, kind: embedding, context_length: 8000 }".into()],
        extra_endpoints: vec![
            "{ model: e, provider: fast, upstream_model: e-fast, price: { prompt: 1, completion: 0 } }".into(),
        ],
        ..Spec::default()
    })
    .await;
    common::set_day_budget(&c, "acme", 1).await;
    let (status, v) = c
        .post_json(
            0,
            "/v1/messages",
            &json!({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}),
            ANTHROPIC,
        )
        .await;
    assert_eq!(status, 402);
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "billing_error", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("budget"),
        "{v}"
    );

    // The OpenAI-shaped APIs: chat completions, Responses, embeddings.
    for (path, body) in [
        ("/v1/chat/completions", common::hi(json!({}))),
        ("/v1/responses", json!({"model": "m", "input": "hi"})),
        (
            "/v1/embeddings",
            json!({"model": "e", "workflow": "embed", "input": "hi"}),
        ),
    ] {
        let (status, v) = c.post_json(0, path, &body, &[]).await;
        assert_eq!(status, 402, "{path}");
        assert_eq!(v["error"]["code"], "budget_exceeded", "{path}: {v}");
        assert!(v.get("type").is_none(), "OpenAI's envelope: {v}");
    }

    // Anything else the router refuses for the Messages API is in its shape too.
    let (status, v) = c
        .post_json(0, "/v1/messages", &json!({}), &[("x-api-key", "sk-nope")])
        .await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["type"], "authentication_error", "{v}");
    let resp = c
        .http
        .post(format!("{}/v1/messages", c.routers[0].url("http")))
        .header("x-api-key", KEY)
        .body(vec![b'x'; 9 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "request_too_large", "{v}");
}

/// A request on router 0 that must succeed: its JSON.
async fn post(c: &Cluster, path: &str, body: &Value) -> Value {
    let (status, v) = c.post_json(0, path, body, ANTHROPIC).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}
#[tokio::test]
async fn reasoning_and_fields_we_do_not_know_reach_every_api() {
    let c = Cluster::start(Spec::default()).await;
    let to_fast = json!({"only": ["fast"]});
    let said = "Considering the question step by step.";

    // Chat completions from an OpenAI-format upstream: its reasoning (`reasoning_content`) as
    // `reasoning`, its reasoning tokens, and the fields Switchyard does not model.
    let v = post(
        &c,
        "/v1/chat/completions",
        &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "reasoning": {"effort": "low"}, "logprobs": true, "provider": to_fast}),
    )
    .await;
    assert_eq!(v["choices"][0]["message"]["reasoning"], said, "{v}");
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"], 6,
        "{v}"
    );
    assert_eq!(v["system_fingerprint"], "fp_sim", "{v}");
    assert!(v["choices"][0].get("logprobs").is_some(), "{v}");
    let (_, events) = c
        .stream(
            0,
            &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "reasoning": {"effort": "low"}, "provider": to_fast}),
        )
        .await;
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["reasoning"], said, "{first}");
    assert_eq!(first["system_fingerprint"], "fp_sim", "{first}");

    // Messages from the Anthropic-format upstream: the thinking block with its signature; from
    // the OpenAI-format one: a thinking block without.
    for (model, max_tokens, signature) in [("big", 1000, "sig_sim_reasoning"), ("m", 400, "")] {
        let v = post(&c, "/v1/messages", &json!({"model": model, "max_tokens": max_tokens,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "hi"}], "provider": {"order": ["claude", "fast"]}})).await;
        assert_eq!(
            v["content"][0],
            json!({"type": "thinking", "thinking": said, "signature": signature}),
            "{v}"
        );
        assert_eq!(v["content"][1]["type"], "text", "{v}");
    }

    // Responses: a reasoning item first, and the reasoning tokens.
    let v = post(
        &c,
        "/v1/responses",
        &json!({"model": "m", "input": "hi", "store": false,
        "reasoning": {"effort": "low"}, "provider": to_fast}),
    )
    .await;
    assert_eq!(v["output"][0]["type"], "reasoning", "{v}");
    assert_eq!(v["output"][0]["content"][0]["text"], said, "{v}");
    assert_eq!(
        v["usage"]["output_tokens_details"]["reasoning_tokens"], 6,
        "{v}"
    );

    // What a format cannot carry is never dropped on the way: a `seed` leaves the
    // Anthropic-format endpoint out, with the reason.
    let (status, v) = c
        .post_json(
            0,
            "/v1/chat/completions",
            &json!({"model": "big", "seed": 7, "messages": [{"role": "user", "content": "hi"}]}),
            &[],
        )
        .await;
    assert_eq!(status, 503, "{v}");
    let excluded = &v["error"]["metadata"]["excluded"][0];
    assert_eq!(excluded["endpoint"], "big@claude", "{v}");
    assert_eq!(excluded["reason"], "missing_parameter", "{v}");
}
