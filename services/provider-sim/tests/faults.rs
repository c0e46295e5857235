//! Every fault kind of the simulator, observed from a real HTTP client over loopback, for both
//! wire formats.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_provider_sim::SimHandle;
use switchyard_testkit::{SimControl, start_sim};

const CONFIG: &str = r#"
seed: 7
providers:
  - id: oai
    format: openai
    api_key: sk-sim-oai-1234
    models: [gpt-sim]
  - id: ant
    format: anthropic
    api_key: sk-ant-sim-5678
    models: [claude-sim]
"#;

struct Sim {
    handle: SimHandle,
    http: reqwest::Client,
}

impl Sim {
    async fn start() -> Self {
        Sim {
            handle: start_sim(CONFIG).await.unwrap(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    async fn faults(&self, id: &str, faults: Value) {
        SimControl::new(self.handle.control_url())
            .set_faults(id, &faults)
            .await
            .unwrap();
    }

    async fn stats(&self, id: &str) -> Value {
        SimControl::new(self.handle.control_url())
            .stats(id)
            .await
            .unwrap()
    }

    /// A chat request in `id`'s wire format.
    fn chat(&self, id: &str, body: Value) -> reqwest::RequestBuilder {
        let base = self.handle.base_url(id).unwrap();
        if id == "oai" {
            self.http
                .post(format!("{base}/chat/completions"))
                .bearer_auth("sk-sim-oai-1234")
                .json(&body)
        } else {
            self.http
                .post(format!("{base}/v1/messages"))
                .header("x-api-key", "sk-ant-sim-5678")
                .header("anthropic-version", "2023-06-01")
                .json(&body)
        }
    }
}

fn oai_body(stream: bool) -> Value {
    json!({"model": "gpt-sim", "messages": [{"role": "user", "content": "hello"}],
           "stream": stream, "stream_options": {"include_usage": true}})
}

fn ant_body(stream: bool) -> Value {
    json!({"model": "claude-sim", "max_tokens": 64, "stream": stream,
           "messages": [{"role": "user", "content": "hello"}]})
}

fn body_for(id: &str, stream: bool) -> Value {
    if id == "oai" {
        oai_body(stream)
    } else {
        ant_body(stream)
    }
}

/// The `data:` payloads of an SSE body.
fn data_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn openai_json_and_stream_follow_the_documented_shape() {
    let sim = Sim::start().await;
    let resp = sim.chat("oai", oai_body(false)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("Hello from oai")
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 16);
    assert_eq!(
        v["usage"]["total_tokens"].as_u64().unwrap(),
        v["usage"]["prompt_tokens"].as_u64().unwrap() + 16
    );

    let resp = sim.chat("oai", oai_body(true)).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let data = data_lines(&text);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(content.starts_with("Hello from oai"), "{content}");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 16);
    let finish = &chunks[chunks.len() - 2]["choices"][0]["finish_reason"];
    assert_eq!(finish, "stop");
}

#[tokio::test]
async fn anthropic_json_and_stream_follow_the_documented_event_sequence() {
    let sim = Sim::start().await;
    let v: Value = sim
        .chat("ant", ant_body(false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["output_tokens"], 16);

    let text = sim
        .chat("ant", ant_body(true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"message_start"));
    assert_eq!(events[1], "content_block_start");
    assert!(events.contains(&"ping"));
    assert_eq!(
        events
            .iter()
            .filter(|e| **e == "content_block_delta")
            .count(),
        16
    );
    assert_eq!(
        &events[events.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );

    // max_tokens is required, as by the real API; so is anthropic-version.
    let resp = sim
        .chat(
            "ant",
            json!({"model": "claude-sim", "messages": [{"role": "user", "content": "x"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let base = sim.handle.base_url("ant").unwrap();
    let resp = sim
        .http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "sk-ant-sim-5678")
        .json(&ant_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn wrong_key_and_unknown_model_are_rejected() {
    let sim = Sim::start().await;
    let base = sim.handle.base_url("oai").unwrap();
    let resp = sim
        .http
        .post(format!("{base}/chat/completions"))
        .bearer_auth("sk-wrong")
        .json(&oai_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");

    let resp = sim
        .chat(
            "oai",
            json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let stats = sim.stats("oai").await;
    assert_eq!(stats["by_outcome"]["unauthorized"], 1);
    assert_eq!(stats["by_outcome"]["model_not_found"], 1);
}

#[tokio::test]
async fn error_statuses_carry_documented_bodies_and_retry_after() {
    let sim = Sim::start().await;
    for (id, status, kind) in [
        ("oai", 429, "rate_limit_exceeded"),
        ("oai", 500, "server_error"),
        ("oai", 503, "server_error"),
        ("ant", 429, "rate_limit_error"),
        ("ant", 500, "api_error"),
        ("ant", 529, "overloaded_error"),
    ] {
        sim.faults(
            id,
            json!({"errors": [{"status": status, "rate": 1.0}], "retry_after_s": 3}),
        )
        .await;
        let resp = sim.chat(id, body_for(id, false)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{id} {status}");
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        if matches!(status, 429 | 503 | 529) {
            assert_eq!(retry_after.as_deref(), Some("3"), "{id} {status}");
        } else {
            assert_eq!(retry_after, None, "{id} {status}");
        }
        let v: Value = resp.json().await.unwrap();
        if id == "oai" {
            let got = v["error"]["code"]
                .as_str()
                .or(v["error"]["type"].as_str())
                .unwrap();
            assert_eq!(got, kind, "{v}");
        } else {
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], kind, "{v}");
        }
    }
    // OpenAI's 502 comes from its edge as HTML.
    sim.faults("oai", json!({"errors": [{"status": 502, "rate": 1.0}]}))
        .await;
    let resp = sim.chat("oai", oai_body(false)).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "text/html");
    assert!(resp.text().await.unwrap().contains("502 Bad Gateway"));
    let stats = sim.stats("oai").await;
    assert_eq!(stats["by_outcome"]["status_429"], 1);
    assert_eq!(stats["by_outcome"]["status_502"], 1);
}

#[tokio::test]
async fn latency_delays_the_first_token() {
    let sim = Sim::start().await;
    sim.faults("oai", json!({"latency": {"ttft_ms": 300}}))
        .await;
    let started = Instant::now();
    let resp = sim.chat("oai", oai_body(true)).send().await.unwrap();
    let mut resp = resp;
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    sim.faults("oai", json!({"latency": {"per_token_ms": 20}}))
        .await;
    let started = Instant::now();
    let resp = sim.chat("oai", oai_body(false)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // 16 tokens at 20 ms each.
    assert!(
        started.elapsed() >= Duration::from_millis(320),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_hang_hits_the_client_timeout() {
    let sim = Sim::start().await;
    for id in ["oai", "ant"] {
        sim.faults(id, json!({"hang_rate": 1.0})).await;
        let started = Instant::now();
        let err = sim
            .chat(id, body_for(id, false))
            .timeout(Duration::from_millis(300))
            .send()
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{id}: {err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(sim.stats(id).await["by_outcome"]["hang"], 1);
    }
}

fn is_reset(err: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionReset
        {
            return true;
        }
        source = e.source();
    }
    false
}

#[tokio::test]
async fn a_reset_fails_the_connection_with_rst() {
    let sim = Sim::start().await;
    for id in ["oai", "ant"] {
        sim.faults(id, json!({"reset_rate": 1.0})).await;
        let err = sim.chat(id, body_for(id, false)).send().await.unwrap_err();
        assert!(
            is_reset(&err),
            "{id}: expected a connection reset, got {err:?}"
        );
    }
    // A fresh connection afterwards works.
    sim.faults("oai", json!({})).await;
    let resp = sim.chat("oai", oai_body(false)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn malformed_bodies_do_not_parse() {
    let sim = Sim::start().await;
    for id in ["oai", "ant"] {
        sim.faults(id, json!({"malformed_rate": 1.0})).await;
        let resp = sim.chat(id, body_for(id, false)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(
            serde_json::from_str::<Value>(&text).is_err(),
            "{id}: {text}"
        );

        let text = sim
            .chat(id, body_for(id, true))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let broken = data_lines(&text)
            .iter()
            .filter(|d| *d != "[DONE]" && serde_json::from_str::<Value>(d).is_err())
            .count();
        assert_eq!(broken, 1, "{id}: {text}");
    }
}

#[tokio::test]
async fn a_cut_stream_ends_without_its_terminal_event() {
    let sim = Sim::start().await;
    for id in ["oai", "ant"] {
        sim.faults(id, json!({"cut_stream_after": 3})).await;
        let mut resp = sim.chat(id, body_for(id, true)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut received = Vec::new();
        let err = loop {
            match resp.chunk().await {
                Ok(Some(bytes)) => received.extend_from_slice(&bytes),
                Ok(None) => panic!("{id}: the stream ended cleanly"),
                Err(e) => break e,
            }
        };
        assert!(
            err.is_body() || err.is_decode() || err.is_request(),
            "{id}: {err:?}"
        );
        let text = String::from_utf8(received).unwrap();
        assert!(
            !text.contains("[DONE]") && !text.contains("message_stop"),
            "{id}: {text}"
        );
        let content = if id == "oai" {
            data_lines(&text)
                .iter()
                .filter(|d| d.contains("\"content\":\"") && !d.contains("\"content\":\"\""))
                .count()
        } else {
            text.matches("event: content_block_delta").count()
        };
        assert_eq!(content, 3, "{id}: {text}");
        assert_eq!(sim.stats(id).await["by_outcome"]["cut"], 1);
    }
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let sim = Sim::start().await;
    sim.faults("ant", json!({"rate_limit_rps": 3})).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..5 {
        let resp = sim.chat("ant", ant_body(false)).send().await.unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            retry_after = resp.headers().get("retry-after").cloned();
        }
    }
    // Five requests well within one second: three pass, two are limited (a window boundary can
    // fall inside the loop on a slow machine, letting one more through).
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!((1..=2).contains(&limited), "{statuses:?}");
    assert_eq!(retry_after.unwrap(), "1");
}

#[tokio::test]
async fn long_prompts_get_context_length_errors() {
    let sim = Sim::start().await;
    let long = "word ".repeat(400);
    for id in ["oai", "ant"] {
        sim.faults(id, json!({"context_limit": 100})).await;
        let mut body = body_for(id, false);
        body["messages"][0]["content"] = json!(long);
        let resp = sim.chat(id, body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{id}");
        let v: Value = resp.json().await.unwrap();
        if id == "oai" {
            assert_eq!(v["error"]["code"], "context_length_exceeded");
        } else {
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("prompt is too long")
            );
        }
        // A short prompt still passes.
        let resp = sim.chat(id, body_for(id, false)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
}

#[tokio::test]
async fn trigger_words_are_refused() {
    let sim = Sim::start().await;
    for id in ["oai", "ant"] {
        sim.faults(id, json!({"refuse_on": "forbidden"})).await;
        let mut body = body_for(id, false);
        body["messages"][0]["content"] = json!("tell me the FORBIDDEN thing");
        let resp = sim.chat(id, body.clone()).send().await.unwrap();
        let v: Value;
        if id == "oai" {
            assert_eq!(resp.status(), 400);
            v = resp.json().await.unwrap();
            assert_eq!(v["error"]["code"], "content_policy_violation");
        } else {
            assert_eq!(resp.status(), 200);
            v = resp.json().await.unwrap();
            assert_eq!(v["stop_reason"], "refusal");
            body["stream"] = json!(true);
            let text = sim
                .chat(id, body)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(text.contains("\"stop_reason\":\"refusal\""), "{text}");
        }
    }
}

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

/// The tool call's argument text (OpenAI JSON or stream) or input (Anthropic JSON or stream).
async fn tool_arguments(sim: &Sim, id: &str, stream: bool) -> String {
    let body = if id == "oai" {
        json!({"model": "gpt-sim", "stream": stream, "tools": tools(), "tool_choice": "required",
               "messages": [{"role": "user", "content": "weather in Paris?"}]})
    } else {
        json!({"model": "claude-sim", "max_tokens": 100, "stream": stream,
               "tools": [{"name": "get_weather", "input_schema": tools()[0]["function"]["parameters"]}],
               "tool_choice": {"type": "any"},
               "messages": [{"role": "user", "content": "weather in Paris?"}]})
    };
    let resp = sim.chat(id, body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    match (id, stream) {
        ("oai", false) => {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
            let call = &v["choices"][0]["message"]["tool_calls"][0];
            assert_eq!(call["function"]["name"], "get_weather");
            call["function"]["arguments"].as_str().unwrap().to_string()
        }
        ("oai", true) => data_lines(&text)
            .iter()
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| {
                let v: Value = serde_json::from_str(d).unwrap();
                v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect(),
        (_, false) => {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["stop_reason"], "tool_use");
            assert_eq!(v["content"][0]["type"], "tool_use");
            v["content"][0]["input"].to_string()
        }
        (_, true) => data_lines(&text)
            .iter()
            .filter_map(|d| {
                let v: Value = serde_json::from_str(d).unwrap();
                v["delta"]["partial_json"].as_str().map(str::to_string)
            })
            .collect(),
    }
}

#[tokio::test]
async fn tool_calls_are_valid_unless_the_fault_breaks_them() {
    let sim = Sim::start().await;
    for id in ["oai", "ant"] {
        for stream in [false, true] {
            let args = tool_arguments(&sim, id, stream).await;
            let v: Value = serde_json::from_str(&args)
                .unwrap_or_else(|e| panic!("{id} {stream}: {e}: {args}"));
            assert!(v["city"].is_string(), "{id} {stream}: {v}");
        }
        sim.faults(id, json!({"invalid_tool_call_rate": 1.0})).await;
        for stream in [false, true] {
            let args = tool_arguments(&sim, id, stream).await;
            let valid = serde_json::from_str::<Value>(&args)
                .map(|v| v["city"].is_string())
                .unwrap_or(false);
            assert!(!valid, "{id} {stream}: arguments still valid: {args}");
        }
        assert_eq!(sim.stats(id).await["by_outcome"]["invalid_tool_call"], 2);
    }
}

#[tokio::test]
async fn structured_output_matches_the_schema() {
    let sim = Sim::start().await;
    let body = json!({"model": "gpt-sim", "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "out",
            "schema": {"type": "object", "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"}}}}}});
    let v: Value = sim
        .chat("oai", body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let content: Value =
        serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"n": 1, "ok": true}));
}

#[tokio::test]
async fn the_control_api_counts_per_provider_and_validates_faults() {
    let sim = Sim::start().await;
    for _ in 0..3 {
        sim.chat("oai", oai_body(false)).send().await.unwrap();
    }
    sim.chat("ant", ant_body(true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let oai = sim.stats("oai").await;
    assert_eq!(oai["requests"], 3);
    assert_eq!(oai["by_model"]["gpt-sim"], 3);
    assert_eq!(oai["in_flight"], 0);
    assert_eq!(oai["recent"][0]["key_hint"], "1234");
    let ant = sim.stats("ant").await;
    assert_eq!(ant["requests"], 1);
    assert_eq!(ant["streamed"], 1);

    let url = format!("{}/providers/oai/faults", sim.handle.control_url());
    let resp = sim
        .http
        .put(&url)
        .json(&json!({"hang_rate": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["errors"][0].as_str().unwrap().starts_with("hang_rate:"),
        "{v}"
    );
    let resp = sim
        .http
        .put(&url)
        .json(&json!({"hang": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = sim
        .http
        .get(format!("{}/providers/nope/stats", sim.handle.control_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let resp = sim
        .http
        .post(format!("{}/reset", sim.handle.control_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(sim.stats("oai").await["requests"], 0);

    let list: Value = sim
        .http
        .get(format!("{}/providers", sim.handle.control_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn an_endless_stream_never_ends_and_a_huge_chunk_arrives_whole() {
    let sim = Sim::start().await;
    for id in ["oai", "ant"] {
        sim.faults(id, json!({"endless_stream": true})).await;
        let mut resp = sim.chat(id, body_for(id, true)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut received = Vec::new();
        // Far more than the 16 tokens of a reply, and still going.
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(600) {
            let bytes = resp.chunk().await.unwrap().expect("the stream ended");
            received.extend_from_slice(&bytes);
        }
        let text = String::from_utf8(received).unwrap();
        assert!(
            !text.contains("[DONE]") && !text.contains("message_stop"),
            "{id}: {text}"
        );
        assert!(text.matches("\n\n").count() > 30, "{id}: {text}");

        sim.faults(id, json!({"huge_chunk_bytes": 5_000_000})).await;
        let text = sim
            .chat(id, body_for(id, true))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let longest = text.lines().map(str::len).max().unwrap();
        assert!(longest > 5_000_000, "{id}: {longest}");
        assert!(
            text.contains("[DONE]") || text.contains("message_stop"),
            "{id}"
        );
    }
}
