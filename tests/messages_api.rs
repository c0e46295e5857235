//! Anthropic's Messages API on the router: the official SDK unchanged against `switchyard up`,
//! and a Messages stream served across wire formats after a failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::time::Duration;

use common::up::sdk_against_up;
use common::{Cluster, KEY, Spec, sse_events as events};
use serde_json::{Value, json};

#[tokio::test]
async fn the_official_anthropic_sdk_runs_unchanged() {
    let seen = sdk_against_up(
        "anthropic_messages.py",
        "anthropic",
        &["demo-fast", "demo-smart"],
    )
    .await;
    assert!(seen["create"]["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(seen["errors"], "ok");
}

/// Checks the documented order: message_start, ping, then blocks (start, deltas of the block's
/// kind, stop) with increasing indices, message_delta, message_stop; every data `type` is its
/// event's name. Returns the text and the tool inputs.
fn well_formed(events: &[(String, Value)]) -> (String, Vec<Value>) {
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    for (n, d) in events {
        assert_eq!(d["type"], n.as_str(), "{d}");
    }
    assert_eq!(&names[..2], ["message_start", "ping"], "{names:?}");
    assert_eq!(
        &names[names.len() - 2..],
        ["message_delta", "message_stop"],
        "{names:?}"
    );
    let mut text = String::new();
    let mut tools = Vec::new();
    let mut open: Option<(u64, String, String)> = None;
    let mut next = 0;
    for (n, d) in &events[2..events.len() - 2] {
        match n.as_str() {
            "content_block_start" => {
                assert!(open.is_none(), "a block started inside another");
                assert_eq!(d["index"], next);
                let kind = d["content_block"]["type"].as_str().unwrap().to_string();
                open = Some((next, kind, String::new()));
                next += 1;
            }
            "content_block_delta" => {
                let (index, kind, json) = open.as_mut().expect("a delta outside a block");
                assert_eq!(d["index"], *index);
                match (kind.as_str(), d["delta"]["type"].as_str().unwrap()) {
                    ("text", "text_delta") => text.push_str(d["delta"]["text"].as_str().unwrap()),
                    ("tool_use", "input_json_delta") => {
                        json.push_str(d["delta"]["partial_json"].as_str().unwrap())
                    }
                    other => panic!("delta {other:?}"),
                }
            }
            "content_block_stop" => {
                let (index, kind, json) = open.take().expect("a stop outside a block");
                assert_eq!(d["index"], index);
                if kind == "tool_use" {
                    tools.push(serde_json::from_str(&json).unwrap());
                }
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert!(open.is_none());
    (text, tools)
}

async fn messages(c: &Cluster, body: &Value) -> reqwest::Response {
    c.post_to(
        0,
        "/v1/messages",
        body,
        &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")],
    )
    .await
}

#[tokio::test]
async fn a_messages_stream_whose_anthropic_provider_fails_is_served_by_an_openai_one() {
    let c = Cluster::start(Spec {
        extra_endpoints: vec![
            "{ model: big, provider: fast, upstream_model: big-fast, supports: [tools, tool_choice, max_tokens], price: { prompt: 3, completion: 15 } }".into(),
        ],
        ..Spec::default()
    })
    .await;
    c.break_provider("claude", 529).await;
    let before = c.ledger().await.len();
    let body = json!({
        "model": "big", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "hello"}],
        "provider": {"order": ["claude", "fast"]},
    });
    let resp = messages(&c, &body).await;
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-switchyard-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let evs = events(&resp.text().await.unwrap());
    let (text, _) = well_formed(&evs);
    assert!(text.contains("fast"), "{text}");
    let routing = &evs.last().unwrap().1["routing"];
    assert_eq!(routing["request_id"], id.as_str());
    let attempts: Vec<(&str, &str)> = routing["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["provider"].as_str().unwrap(),
                a["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(attempts.first().unwrap().0, "claude", "{routing}");
    assert_ne!(attempts.first().unwrap().1, "ok", "{routing}");
    assert_eq!(*attempts.last().unwrap(), ("fast", "ok"), "{routing}");
    let delta = &evs[evs.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    let output_tokens = delta["usage"]["output_tokens"].as_u64().unwrap();
    assert!(output_tokens > 0);

    // A streamed tool call through the OpenAI-format endpoint: input_json_delta fragments that
    // assemble to the arguments, stop reason tool_use.
    let mut tool_body = body.clone();
    tool_body["tools"] = json!([{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}]);
    tool_body["tool_choice"] = json!({"type": "tool", "name": "lookup"});
    let resp = messages(&c, &tool_body).await;
    let evs = events(&resp.text().await.unwrap());
    let (_, tools) = well_formed(&evs);
    assert!(tools[0]["q"].is_string(), "{tools:?}");
    assert_eq!(evs[evs.len() - 2].1["delta"]["stop_reason"], "tool_use");

    // Non-streamed, the same fallback, in the Messages shape.
    let mut plain = body.clone();
    plain["stream"] = json!(false);
    let resp = messages(&c, &plain).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(v["content"][0]["type"], "text");
    let attempts = v["routing"]["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["provider"], "claude", "{v}");
    assert_eq!(attempts.last().unwrap()["provider"], "fast", "{v}");

    // All three billed once each, at the serving endpoint's price.
    let ledger = c.ledger_at_least(before + 3, Duration::from_secs(10)).await;
    let billed: Vec<_> = ledger[before..]
        .iter()
        .map(|e| e.record.clone().unwrap())
        .collect();
    assert_eq!(billed.len(), 3, "{billed:?}");
    assert!(
        billed
            .iter()
            .all(|r| r.endpoint == "big@fast" && r.cost_nano_usd > 0),
        "{billed:?}"
    );
    assert_eq!(
        billed
            .iter()
            .find(|r| r.request_id == id)
            .unwrap()
            .completion_tokens as u64,
        output_tokens
    );

    // A cut after content went out is an `error` event, never a message_stop.
    c.sim()
        .set_faults("fast", &json!({"cut_stream_after": 3}))
        .await
        .unwrap();
    let resp = messages(&c, &body).await;
    let evs = events(&resp.text().await.unwrap());
    let (last, data) = evs.last().unwrap();
    assert_eq!(last, "error", "{evs:?}");
    assert_eq!(data["type"], "error");
    assert!(data["error"]["type"].is_string(), "{data}");
    assert!(!evs.iter().any(|(n, _)| n == "message_stop"));
}
