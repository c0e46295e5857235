//! What every client-facing API shares: the same stages refuse each in that API's own error
//! shape, and pass on what providers send back (reasoning, fields Switchyard does not model).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Cluster, KEY, Spec};
use serde_json::{Value, json};

async fn messages(c: &Cluster, body: &Value) -> reqwest::Response {
    c.http
        .post(format!("{}/v1/messages", c.routers[0].url("http")))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

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
    let resp = messages(
        &c,
        &json!({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 402);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "billing_error", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("budget"),
        "{v}"
    );

    let (status, v) = c.chat(0, &common::hi(json!({}))).await;
    assert_eq!(status, 402);
    assert_eq!(v["error"]["code"], "budget_exceeded", "{v}");

    let resp = c
        .http
        .post(format!("{}/v1/responses", c.routers[0].url("http")))
        .bearer_auth(KEY)
        .json(&json!({"model": "m", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "budget_exceeded", "{v}");
    assert!(v.get("type").is_none(), "OpenAI's envelope: {v}");

    let resp = c
        .http
        .post(format!("{}/v1/embeddings", c.routers[0].url("http")))
        .bearer_auth(KEY)
        .json(&json!({"model": "e", "workflow": "embed", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 402);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "budget_exceeded", "{v}");

    // Anything else the router refuses for the Messages API is in its shape too.
    let resp = c
        .http
        .post(format!("{}/v1/messages", c.routers[0].url("http")))
        .header("x-api-key", "sk-nope")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
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

async fn post(c: &Cluster, path: &str, body: &Value) -> Value {
    let resp = c
        .http
        .post(format!("{}{path}", c.routers[0].url("http")))
        .bearer_auth(KEY)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
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
}
