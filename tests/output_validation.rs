//! Tool calls and structured outputs validated against their JSON Schemas, and what each
//! workflow does when a provider's output fails: return it marked, retry once, or fall back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use common::{Cluster, Spec, outcomes, provider};
use serde_json::{Value, json};

fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "where": {
                "type": "object",
                "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                "required": ["lat", "lon"]
            }
        },
        "required": ["city", "unit", "where"]
    })
}

fn tool_request(workflow: &str) -> Value {
    json!({
        "model": "m",
        "workflow": workflow,
        "messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": weather_schema()}}],
        "tool_choice": "required",
        "max_tokens": 64
    })
}

fn arguments(v: &Value) -> Value {
    let args = v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap();
    serde_json::from_str(args).unwrap()
}

#[tokio::test]
async fn invalid_tool_calls_are_returned_marked_retried_or_routed_around() {
    let c = Cluster::start(Spec::default()).await;
    c.sim()
        .set_faults("fast", &json!({"invalid_tool_call_rate": 1.0}))
        .await
        .unwrap();

    // return: passed through, marked invalid.
    let (status, v) = c.chat(0, &tool_request("tools_return")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(provider(&v), "fast");
    assert_eq!(outcomes(&v), ["invalid_output"]);
    let validation = &v["routing"]["validation"];
    eprintln!("return: {validation}");
    assert_eq!(validation["valid"], false, "{v}");
    assert_eq!(validation["tool_calls"], 1);
    assert!(
        validation["problems"][0]
            .as_str()
            .unwrap()
            .contains("get_weather")
    );

    // retry: once more on the same endpoint, then passed through marked.
    c.sim().reset_counters().await.unwrap();
    let (status, v) = c.chat(0, &tool_request("tools_retry")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(outcomes(&v), ["invalid_output", "invalid_output"]);
    assert_eq!(v["routing"]["validation"]["valid"], false);
    assert_eq!(c.sim().requests(&["fast"]).await.unwrap(), 2);
    assert_eq!(c.sim().requests(&["open"]).await.unwrap(), 0);

    // fallback: the next provider's valid call reaches the user.
    let (status, v) = c.chat(0, &tool_request("tools_fallback")).await;
    assert_eq!(status, 200, "{v}");
    eprintln!(
        "fallback: {} via {}",
        v["routing"]["validation"],
        provider(&v)
    );
    assert_eq!(outcomes(&v), ["invalid_output", "ok"]);
    assert_eq!(
        (provider(&v), &v["routing"]["validation"]["valid"]),
        ("open", &json!(true))
    );
    let args = arguments(&v);
    assert!(
        ["c", "f"].contains(&args["unit"].as_str().unwrap()),
        "{args}"
    );
    assert!(args["where"]["lat"].is_number(), "{args}");

    // With every provider invalid, fallback ends with the last reply, marked.
    for p in ["open", "premium"] {
        c.sim()
            .set_faults(p, &json!({"invalid_tool_call_rate": 1.0}))
            .await
            .unwrap();
    }
    let (status, v) = c.chat(0, &tool_request("tools_fallback")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        outcomes(&v),
        ["invalid_output", "invalid_output", "invalid_output"]
    );
    assert_eq!(v["routing"]["validation"]["valid"], false);

    // Counted per endpoint and validity.
    let m = c.metrics(0).await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("switchyard_output_validations_total")
                && l.contains("endpoint=\"m@fast\"")
                && l.contains("valid=\"false\"")),
        "{m}"
    );
}

#[tokio::test]
async fn structured_outputs_are_validated_and_bad_schemas_refused() {
    let c = Cluster::start(Spec::default()).await;
    let body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Weather in Oslo as JSON"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "weather", "schema": weather_schema(), "strict": true}},
        "max_tokens": 64
    });
    let (status, v) = c.chat(0, &body).await;
    assert_eq!(status, 200, "{v}");
    let validation = &v["routing"]["validation"];
    eprintln!("structured output: {validation}");
    assert_eq!(validation["structured_output"], true, "{v}");
    assert_eq!(validation["valid"], true, "{v}");

    // A schema that does not compile is the caller's error, before anything is sent.
    let mut bad = tool_request("tools_return");
    bad["tools"][0]["function"]["parameters"] = json!({"type": "no-such-type"});
    let (status, v) = c.chat(0, &bad).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tool `get_weather`"),
        "{v}"
    );
}

#[tokio::test]
async fn streamed_tool_calls_are_validated_at_the_end() {
    let c = Cluster::start(Spec::default()).await;
    c.sim()
        .set_faults("fast", &json!({"invalid_tool_call_rate": 1.0}))
        .await
        .unwrap();
    let routing = |events: &[String]| -> Value {
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "{events:?}"
        );
        let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
        last["routing"].clone()
    };
    // From `fast`, the assembled call is broken: marked, as it is too late to go elsewhere.
    let (status, events) = c.stream(0, &tool_request("tools_fallback")).await;
    assert_eq!(status, 200);
    let r = routing(&events);
    eprintln!("streamed from fast: {}", r["validation"]);
    assert_eq!(r["validation"]["valid"], false, "{r}");
    assert_eq!(r["attempts"][0]["outcome"], "invalid_output", "{r}");
    // From `open`, valid.
    let mut body = tool_request("tools_return");
    body["provider"] = json!({"order": ["open"]});
    let (status, events) = c.stream(0, &body).await;
    assert_eq!(status, 200);
    let r = routing(&events);
    eprintln!("streamed from open: {}", r["validation"]);
    assert_eq!(
        (
            r["validation"]["valid"].clone(),
            r["validation"]["tool_calls"].clone()
        ),
        (json!(true), json!(1)),
        "{r}"
    );
}

#[tokio::test]
async fn tool_requests_move_away_from_an_endpoint_with_a_low_validity_rate() {
    let c = Cluster::start(Spec {
        prober: Some("probe: { interval_ms: 10000 }\nevaluate_ms: 200\n".into()),
        ..Spec::default()
    })
    .await;
    c.sim()
        .set_faults("fast", &json!({"invalid_tool_call_rate": 1.0}))
        .await
        .unwrap();
    // At first `fast` is tried and its broken calls routed around; they are counted.
    for _ in 0..6 {
        let (status, v) = c.chat(0, &tool_request("tools_guarded")).await;
        assert_eq!((status, provider(&v)), (200, "open"), "{v}");
    }
    // Once the prober has its rate, tool requests are planned without it.
    let started = std::time::Instant::now();
    let v = loop {
        let (status, v) = c.chat(0, &tool_request("tools_guarded")).await;
        assert_eq!(status, 200, "{v}");
        if !common::plan(&v).contains(&"m@fast".to_string()) {
            break v;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "still planned: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    eprintln!(
        "tool requests left m@fast {:?} after the last broken call: plan {}",
        started.elapsed(),
        v["routing"]["plan"]
    );
    assert_eq!(outcomes(&v), ["ok"]);
    // Plain chat still goes to it first: it is fine for that.
    let (status, v) = c
        .chat(
            0,
            &json!({"model": "m", "workflow": "tools_guarded", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}),
        )
        .await;
    assert_eq!((status, provider(&v)), (200, "fast"), "{v}");
}
