//! What every client-facing API shares: the same stages refuse each in that API's own error
//! shape.
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
