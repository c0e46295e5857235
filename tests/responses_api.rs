//! OpenAI's Responses API on the router: the official SDK unchanged against `switchyard up`, and
//! a stored response continued through `previous_response_id` on another router over Redis.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use common::up::sdk_against_up;
use common::{BETA_KEY, Cluster, KEY, Spec};
use serde_json::{Value, json};

#[tokio::test]
async fn the_official_openai_sdk_runs_the_responses_api_unchanged() {
    let seen = sdk_against_up(
        "openai_responses.py",
        "openai",
        &["demo-fast", "demo-smart"],
    )
    .await;
    assert!(seen["create"]["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(seen["errors"], "ok");
}

async fn call(
    c: &Cluster,
    n: usize,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let mut req = c
        .http
        .request(method, format!("{}{path}", c.routers[n].url("http")))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn create(c: &Cluster, n: usize, body: &Value) -> Value {
    let (status, text) = call(
        c,
        n,
        KEY,
        reqwest::Method::POST,
        "/v1/responses",
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// The prompt tokens of the latest request `provider` received.
async fn last_prompt_tokens(c: &Cluster, provider: &str) -> u64 {
    let stats = c.sim().stats(provider).await.unwrap();
    stats["recent"].as_array().unwrap().last().unwrap()["prompt_tokens"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_response_created_on_one_router_is_continued_on_another() {
    let c = Cluster::start(Spec {
        routers: 2,
        ..Spec::default()
    })
    .await;
    let tools = json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let route = json!({"order": ["fast"], "allow_fallbacks": false});
    let first = create(
        &c,
        0,
        &json!({"model": "m", "instructions": "be brief", "input": "What is the weather in Paris? Answer with care and in detail.",
                "tools": tools, "tool_choice": "required", "provider": route}),
    )
    .await;
    let call_item = first["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "function_call")
        .unwrap()
        .clone();
    let id = first["id"].as_str().unwrap();
    assert!(
        first["routing"]["request_id"]
            .as_str()
            .unwrap()
            .ends_with(id.trim_start_matches("resp_"))
    );

    // The continuation on the other router sees the whole conversation: its prompt is the
    // first turn plus the tool's output, larger than the tool's output alone.
    let output = json!([{"type": "function_call_output", "call_id": call_item["call_id"], "output": "sunny, 21 C"}]);
    let alone = create(
        &c,
        1,
        &json!({"model": "m", "input": [{"role": "user", "content": "sunny, 21 C"}], "store": false, "provider": route}),
    )
    .await;
    let alone_tokens = last_prompt_tokens(&c, "fast").await;
    assert_eq!(alone["store"], false);
    let second = create(
        &c,
        1,
        &json!({"model": "m", "previous_response_id": id, "input": output, "tools": tools, "tool_choice": "none", "provider": route}),
    )
    .await;
    let continued_tokens = last_prompt_tokens(&c, "fast").await;
    eprintln!(
        "prompt tokens: continuation {continued_tokens}, the tool output alone {alone_tokens}"
    );
    assert!(continued_tokens > alone_tokens + 20, "{second}");
    assert_eq!(second["previous_response_id"], id);
    assert_eq!(second["status"], "completed");
    assert_eq!(second["output"][0]["type"], "message");

    // A streamed third turn continues the second, on the first router.
    let third = json!({"model": "m", "previous_response_id": second["id"], "input": "thanks", "stream": true, "provider": route});
    let (status, text) = call(
        &c,
        0,
        KEY,
        reqwest::Method::POST,
        "/v1/responses",
        Some(&third),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        last_prompt_tokens(&c, "fast").await > continued_tokens,
        "{text}"
    );
    let completed: Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .find(|v| v["type"] == "response.completed")
        .unwrap();
    let third_id = completed["response"]["id"].as_str().unwrap().to_string();
    assert!(completed["response"]["routing"]["attempts"].is_array());

    // Retrievable from either router, by its org only; `store: false` is not; delete is once.
    for n in [0, 1] {
        let (status, text) = call(
            &c,
            n,
            KEY,
            reqwest::Method::GET,
            &format!("/v1/responses/{third_id}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{text}");
        let got: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(got["id"], third_id.as_str());
    }
    let (status, text) = call(
        &c,
        1,
        BETA_KEY,
        reqwest::Method::GET,
        &format!("/v1/responses/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 404, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    let (status, _) = call(
        &c,
        1,
        KEY,
        reqwest::Method::GET,
        &format!("/v1/responses/{}", alone["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &c,
        0,
        KEY,
        reqwest::Method::DELETE,
        &format!("/v1/responses/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, text) = call(
        &c,
        1,
        KEY,
        reqwest::Method::POST,
        "/v1/responses",
        Some(&json!({"model": "m", "previous_response_id": id, "input": "again"})),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("previous_response_id"), "{text}");

    // Stored in Redis under the org's hash tag, with its time to live.
    let mut redis = redis::Client::open(c.redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("sy:{{org:acme}}:resp:{third_id}"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(ttl > 29 * 86_400, "ttl {ttl}");
}
