//! The cloud wire formats behind the router, as processes: one model served by a Gemini-, a
//! Bedrock- and an OpenAI-format endpoint of the simulator (its Gemini key and Bedrock SigV4
//! signature checked); the first two fail in turn and every request is still served, the trace
//! naming each attempt's provider and class; and a stream through each format arrives in the
//! API the client asked for, with usage and its terminal event.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use common::{Cluster, Spec, sse_events as events};
use serde_json::{Value, json};

fn spec() -> Spec {
    Spec {
        clouds: true,
        ..Spec::default()
    }
}

/// (provider, outcome) of every attempt in a trace.
fn attempts(routing: &Value) -> Vec<(String, String)> {
    routing["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempts in {routing}"))
        .iter()
        .map(|a| {
            (
                a["provider"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(p, o)| (p.to_string(), o.to_string()))
        .collect()
}

/// Sends `body` (streamed or not) and checks it was served by `fast` with every other endpoint
/// either tried and failed (unavailable, rate limited) or planned around as unhealthy; the trace.
async fn served_by_fast(c: &Cluster, body: &Value, stream: bool) -> Value {
    let routing = if stream {
        let mut body = body.clone();
        body["stream_options"] = json!({"include_usage": true});
        let (status, data) = c.stream(0, &body).await;
        assert_eq!(status, 200);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert!(
            chunks
                .iter()
                .any(|c| c["usage"]["completion_tokens"].as_u64() > Some(0))
        );
        chunks
            .iter()
            .rev()
            .find(|c| c["routing"].is_object())
            .unwrap()["routing"]
            .clone()
    } else {
        let (status, v) = c.chat(0, body).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["provider"], "fast", "{v}");
        v["routing"].clone()
    };
    let tried = attempts(&routing);
    assert_eq!(
        tried.last(),
        Some(&("fast".to_string(), "ok".to_string())),
        "{routing}"
    );
    let excluded: Vec<&str> = routing["excluded"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == "unhealthy")
        .filter_map(|e| e["provider"].as_str())
        .collect();
    for (provider, class) in [("gem", "unavailable"), ("brk", "rate_limited")] {
        let was_tried = tried.contains(&(provider.to_string(), class.to_string()));
        assert!(
            was_tried || excluded.contains(&provider),
            "{provider} neither tried nor excluded: {routing}"
        );
    }
    routing
}

#[tokio::test]
async fn one_model_on_three_formats_survives_two_of_them_failing_in_turn() {
    let c = Cluster::start(spec()).await;
    let body = json!({"model": "c", "workflow": "clouds", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 20});

    // All up: Gemini serves, its key checked by the simulator.
    let (status, v) = c.chat(0, &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(attempts(&v["routing"]), pairs(&[("gem", "ok")]));
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // Gemini answers 500: Bedrock serves, signed with SigV4 for us-east-1.
    c.break_provider("gem", 500).await;
    for _ in 0..3 {
        let (status, v) = c.chat(0, &body).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["provider"], "brk", "{v}");
        assert_eq!(
            attempts(&v["routing"]),
            pairs(&[("gem", "unavailable"), ("brk", "ok")])
        );
        assert!(
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .starts_with("Hello from brk")
        );
    }
    let brk = c.sim().stats("brk").await.unwrap();
    assert_eq!(brk["by_outcome"]["ok"], 3, "{brk}");
    assert_eq!(
        brk["recent"][0]["key_hint"], "MPLE",
        "the SigV4 access key id"
    );

    // Bedrock throttles too, asking for a delay: OpenAI-format `fast` serves; nothing fails.
    c.sim()
        .set_faults(
            "brk",
            &json!({"errors": [{"status": 429, "rate": 1.0}], "retry_after_s": 2}),
        )
        .await
        .unwrap();
    // The first such request tries Bedrock and is told to wait 2 s; later ones, within the
    // delay, plan around it (ejected locally, named among the exclusions); once the delay has
    // passed it is tried again.
    let first = served_by_fast(&c, &body, false).await;
    let throttled = first["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["provider"] == "brk")
        .unwrap_or_else(|| panic!("Bedrock not tried: {first}"));
    assert_eq!(throttled["outcome"], "rate_limited", "{first}");
    assert_eq!(throttled["retry_after_ms"], 2000, "{first}");
    served_by_fast(&c, &body, true).await;
    served_by_fast(&c, &body, false).await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let again = served_by_fast(&c, &body, false).await;
    assert!(
        attempts(&again).contains(&("brk".to_string(), "rate_limited".to_string())),
        "Bedrock is tried again after its delay: {again}"
    );
    let ledger = c
        .ledger_at_least(7, std::time::Duration::from_secs(5))
        .await;
    assert!(ledger.len() >= 7, "every served request is billed");
}

#[tokio::test]
async fn a_stream_through_each_format_arrives_in_the_api_it_asked_for() {
    let c = Cluster::start(spec()).await;
    for provider in ["gem", "brk", "fast"] {
        let route = json!({"order": [provider], "allow_fallbacks": false});

        // Chat completions: chunks, usage, [DONE].
        let body = json!({"model": "c", "workflow": "clouds", "provider": route, "stream_options": {"include_usage": true},
                          "messages": [{"role": "user", "content": "hello"}], "max_tokens": 20});
        let (status, data) = c.stream(0, &body).await;
        assert_eq!(status, 200, "{provider}");
        assert_eq!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{provider}"
        );
        let text: String = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert!(
            text.starts_with(&format!("Hello from {provider}")),
            "{provider}: {text}"
        );
        assert!(
            data.iter().any(|d| d.contains("\"completion_tokens\"")),
            "{provider}: usage"
        );

        // Anthropic Messages: the documented event sequence, usage in message_delta.
        let resp = c
            .post_to(
                0,
                "/v1/messages",
                &json!({"model": "c", "workflow": "clouds", "provider": route, "max_tokens": 20, "stream": true,
                        "messages": [{"role": "user", "content": "hello"}]}),
                &[("x-api-key", common::KEY), ("anthropic-version", "2023-06-01")],
            )
            .await;
        assert_eq!(resp.status(), 200, "{provider}");
        let evs = events(&resp.text().await.unwrap());
        let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names.first(),
            Some(&"message_start"),
            "{provider}: {names:?}"
        );
        assert_eq!(names.last(), Some(&"message_stop"), "{provider}: {names:?}");
        let delta = &evs.iter().find(|(n, _)| n == "message_delta").unwrap().1;
        assert!(
            delta["usage"]["output_tokens"].as_u64() > Some(0),
            "{provider}: {delta}"
        );
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");

        // OpenAI Responses: response.completed with usage.
        let resp = c
            .post_to(
                0,
                "/v1/responses",
                &json!({"model": "c", "workflow": "clouds", "provider": route, "max_output_tokens": 20, "stream": true, "input": "hello"}),
                &[],
            )
            .await;
        assert_eq!(resp.status(), 200, "{provider}");
        let evs = events(&resp.text().await.unwrap());
        let (last, completed) = evs.last().unwrap();
        assert_eq!(last, "response.completed", "{provider}");
        assert!(completed["response"]["usage"]["output_tokens"].as_u64() > Some(0));
        assert!(
            completed["response"]["output"][0]["content"][0]["text"]
                .as_str()
                .unwrap()
                .starts_with(&format!("Hello from {provider}")),
            "{provider}: {completed}"
        );
    }
    for provider in ["gem", "brk"] {
        let stats = c.sim().stats(provider).await.unwrap();
        assert_eq!(stats["streamed"], 3, "{provider}: {stats}");
        assert_eq!(stats["by_outcome"]["ok"], 3, "{provider}: {stats}");
    }
}
