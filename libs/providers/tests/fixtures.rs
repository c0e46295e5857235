//! Recorded payloads in each format's documented shape (under `fixtures/`), parsed, decoded and
//! classified the way live answers are.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fixture, text, tool_args};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use switchyard_config::catalog::WireFormat;
use switchyard_core::{ChatChunk, ErrorClass, FinishReason};
use switchyard_providers::error::classify_status;
use switchyard_providers::sse::SseParser;
use switchyard_providers::{Flow, Target, UpstreamError, adapter_for};

fn target(format: WireFormat) -> Target {
    Target {
        endpoint: "m@p".into(),
        provider: "p".into(),
        format,
        base_url: "http://127.0.0.1:1".into(),
        upstream_model: "up".into(),
        key: None,
        max_output: 1024,
        options: Default::default(),
        owner: None,
        capacity: None,
    }
}

/// Decodes a recorded stream: the chunks, whether the terminal event came, and the error if one
/// ended it.
fn decode(format: WireFormat, path: &str) -> (Vec<ChatChunk>, bool, Option<UpstreamError>) {
    let t = target(format);
    let mut decoder = adapter_for(format).decoder(&t);
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser.push(&fixture(path), &mut events).unwrap();
    let mut chunks = Vec::new();
    for e in &events {
        match decoder.event(e, &mut chunks) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Done) => return (chunks, true, None),
            Err(err) => return (chunks, false, Some(err)),
        }
    }
    (chunks, false, None)
}

#[test]
fn openai_completions() {
    let a = adapter_for(WireFormat::Openai);
    let t = target(WireFormat::Openai);
    let r = a
        .parse_response(&t, &fixture("openai/chat_completion.json"))
        .unwrap();
    assert_eq!(
        r.choices[0].message.text_content(),
        "Switchyard fixture reply."
    );
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
    assert_eq!(r.usage.unwrap().total_tokens(), 29);
    assert_eq!(r.provider.as_deref(), Some("p"));

    let r = a
        .parse_response(&t, &fixture("openai/chat_completion_tool_calls.json"))
        .unwrap();
    let call = &r.choices[0].message.tool_calls[0];
    assert_eq!(call.name, "lookup_order");
    let args: Value = serde_json::from_str(&call.arguments).unwrap();
    assert_eq!(args["order_id"], "A-1001");
    assert_eq!(r.usage.unwrap().cached_prompt_tokens, 64);
}

#[test]
fn openai_streams() {
    let (chunks, done, err) = decode(WireFormat::Openai, "openai/stream.sse");
    assert!(done && err.is_none());
    assert_eq!(text(&chunks), "Hello there");
    assert_eq!(chunks.last().unwrap().usage.unwrap().completion_tokens, 2);

    let (chunks, done, _) = decode(WireFormat::Openai, "openai/stream_tool_calls.sse");
    assert!(done);
    let (name, args) = tool_args(&chunks);
    assert_eq!(name, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap()["location"],
        "Paris"
    );

    let (chunks, done, err) = decode(WireFormat::Openai, "openai/stream_error.sse");
    assert!(!done);
    assert_eq!(text(&chunks), "Par");
    assert_eq!(err.unwrap().class, ErrorClass::Unavailable);
}

#[test]
fn anthropic_messages() {
    let a = adapter_for(WireFormat::Anthropic);
    let t = target(WireFormat::Anthropic);
    let r = a
        .parse_response(&t, &fixture("anthropic/message.json"))
        .unwrap();
    assert_eq!(
        r.choices[0].message.text_content(),
        "Switchyard fixture reply."
    );
    let usage = r.usage.unwrap();
    // Cache reads and writes are prompt tokens too.
    assert_eq!(usage.prompt_tokens, 2095 + 100 + 1800);
    assert_eq!(usage.cached_prompt_tokens, 1800);
    assert_eq!(usage.completion_tokens, 503);

    let r = a
        .parse_response(&t, &fixture("anthropic/message_tool_use.json"))
        .unwrap();
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    let call = &r.choices[0].message.tool_calls[0];
    assert_eq!(
        (call.id.as_str(), call.name.as_str()),
        ("toolu_sy_0001", "lookup_order")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&call.arguments).unwrap()["include_items"],
        true
    );

    let e = a
        .parse_response(&t, &fixture("anthropic/message_refusal.json"))
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::ContentPolicy);
}

#[test]
fn anthropic_streams() {
    let (chunks, done, err) = decode(WireFormat::Anthropic, "anthropic/stream.sse");
    assert!(done && err.is_none());
    assert_eq!(text(&chunks), "Hello!");
    let last = chunks.last().unwrap();
    assert_eq!(last.choices[0].finish_reason, Some(FinishReason::Stop));
    let usage = last.usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (25, 15));
    assert_eq!(last.id, "msg_sy_fixture_3");

    let (chunks, done, _) = decode(WireFormat::Anthropic, "anthropic/stream_tool_use.sse");
    assert!(done);
    assert_eq!(text(&chunks), "Checking:");
    let (name, args) = tool_args(&chunks);
    assert_eq!(name, "lookup_order");
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap()["order_id"],
        "A-1001"
    );
    assert_eq!(
        chunks.last().unwrap().choices[0].finish_reason,
        Some(FinishReason::ToolCalls)
    );

    let (_, done, err) = decode(WireFormat::Anthropic, "anthropic/stream_error.sse");
    assert!(!done);
    let err = err.unwrap();
    assert_eq!(err.class, ErrorClass::Unavailable);
    assert_eq!(err.provider_code.as_deref(), Some("overloaded_error"));
}

#[test]
fn error_payloads_classify() {
    let mut retry = HeaderMap::new();
    retry.insert("retry-after", HeaderValue::from_static("20"));
    let none = HeaderMap::new();
    let cases: [(&str, u16, &HeaderMap, ErrorClass); 9] = [
        (
            "openai/error_rate_limit.json",
            429,
            &retry,
            ErrorClass::RateLimited,
        ),
        (
            "openai/error_insufficient_quota.json",
            429,
            &none,
            ErrorClass::UpstreamAuth,
        ),
        (
            "openai/error_context_length.json",
            400,
            &none,
            ErrorClass::ContextLengthExceeded,
        ),
        (
            "openai/error_invalid_api_key.json",
            401,
            &none,
            ErrorClass::UpstreamAuth,
        ),
        (
            "openai/error_server.json",
            500,
            &none,
            ErrorClass::Unavailable,
        ),
        (
            "anthropic/error_overloaded.json",
            529,
            &none,
            ErrorClass::Unavailable,
        ),
        (
            "anthropic/error_rate_limit.json",
            429,
            &retry,
            ErrorClass::RateLimited,
        ),
        (
            "anthropic/error_prompt_too_long.json",
            400,
            &none,
            ErrorClass::ContextLengthExceeded,
        ),
        (
            "anthropic/error_authentication.json",
            401,
            &none,
            ErrorClass::UpstreamAuth,
        ),
    ];
    for (path, status, headers, class) in cases {
        let e = classify_status(
            StatusCode::from_u16(status).unwrap(),
            headers,
            &fixture(path),
        );
        assert_eq!(e.class, class, "{path}: {e}");
        if std::ptr::eq(headers, &retry) {
            assert_eq!(
                e.retry_after,
                Some(std::time::Duration::from_secs(20)),
                "{path}"
            );
        }
    }
}

#[test]
fn requests_map_to_the_anthropic_wire_shape() {
    use switchyard_core::{ChatRequest, Message, Role, ToolCall, ToolChoice};
    let mut req: ChatRequest = serde_json::from_value(serde_json::json!({
        "model": "routing-name",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}
            ]}
        ],
        "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "stop": ["END"],
        "user": "u-7",
        "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object"}}}
    }))
    .unwrap();
    let mut assistant = Message::text(Role::Assistant, "");
    assistant.tool_calls = vec![ToolCall {
        id: "c1".into(),
        name: "look".into(),
        arguments: "{\"x\":1}".into(),
    }];
    req.messages.push(assistant);
    for id in ["c1", "c1"] {
        let mut result = Message::text(Role::Tool, "a cat");
        result.tool_call_id = Some(id.into());
        req.messages.push(result);
    }
    let t = target(WireFormat::Anthropic);
    let body = switchyard_providers::anthropic::wire_request(&t, &req, true).unwrap();
    assert_eq!(body["model"], "up");
    assert_eq!(body["max_tokens"], 1024);
    assert_eq!(body["system"], "be brief");
    assert_eq!(body["stream"], true);
    assert_eq!(
        body["messages"][0]["content"][1]["source"]["media_type"],
        "image/png"
    );
    assert_eq!(body["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(body["messages"][1]["content"][0]["input"]["x"], 1);
    // Consecutive tool results share one user turn.
    assert_eq!(body["messages"][2]["role"], "user");
    assert_eq!(body["messages"][2]["content"].as_array().unwrap().len(), 2);
    assert_eq!(
        body["tool_choice"],
        serde_json::json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert_eq!(body["stop_sequences"][0], "END");
    assert_eq!(body["metadata"]["user_id"], "u-7");
    assert_eq!(body["output_format"]["type"], "json_schema");

    req.tool_choice = Some(ToolChoice::Function("look".into()));
    req.messages[2].tool_calls[0].arguments = "not json".into();
    let err = switchyard_providers::anthropic::wire_request(&t, &req, false).unwrap_err();
    assert_eq!(err.class, ErrorClass::InvalidRequest);
    assert!(err.message.contains("messages[2].tool_calls[0]"), "{err}");

    let req = ChatRequest {
        messages: vec![Message::text(Role::System, "only a system prompt")],
        ..Default::default()
    };
    assert_eq!(
        switchyard_providers::anthropic::wire_request(&t, &req, false)
            .unwrap_err()
            .class,
        ErrorClass::InvalidRequest
    );
}

#[test]
fn openai_requests_carry_no_routing_fields() {
    let mut req = switchyard_core::ChatRequest::user("routing-name", "hi");
    req.models = vec!["a".into(), "b".into()];
    req.workflow = Some("w".into());
    req.provider = Some(Default::default());
    let wire = switchyard_providers::openai::wire_request(&target(WireFormat::Openai), &req, true);
    let v = serde_json::to_value(&wire).unwrap();
    assert_eq!(v["model"], "up");
    assert!(
        v.get("models").is_none() && v.get("workflow").is_none() && v.get("provider").is_none()
    );
    assert_eq!(v["stream_options"]["include_usage"], true);
}

/// Decodes `bytes` fed in the given pieces: the chunks, and the flow at the end.
fn decode_split(format: WireFormat, bytes: &[u8], cuts: &[usize]) -> (Vec<ChatChunk>, bool) {
    let t = target(format);
    let mut decoder = adapter_for(format).decoder(&t);
    let mut parser = SseParser::new();
    let mut chunks = Vec::new();
    let mut last = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let mut events = Vec::new();
        parser.push(&bytes[last..cut], &mut events).unwrap();
        last = cut;
        for e in &events {
            if decoder.event(e, &mut chunks).unwrap() == Flow::Done {
                return (chunks, true);
            }
        }
    }
    (chunks, false)
}

proptest::proptest! {
    #[test]
    fn any_split_of_a_recorded_stream_gives_the_same_chunks(
        which in 0usize..4,
        cuts in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..12),
    ) {
        let (format, path) = [
            (WireFormat::Openai, "openai/stream.sse"),
            (WireFormat::Openai, "openai/stream_tool_calls.sse"),
            (WireFormat::Anthropic, "anthropic/stream.sse"),
            (WireFormat::Anthropic, "anthropic/stream_tool_use.sse"),
        ][which];
        let bytes = fixture(path);
        let whole = decode_split(format, &bytes, &[]);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let split = decode_split(format, &bytes, &points);
        // `created` of Anthropic chunks is the decoder's clock; compare everything else.
        let strip = |(c, d): (Vec<ChatChunk>, bool)| {
            (c.into_iter().map(|mut c| { c.created = 0; c }).collect::<Vec<_>>(), d)
        };
        proptest::prop_assert!(whole.1, "{path} did not reach its terminal event");
        proptest::prop_assert_eq!(strip(split), strip(whole));
    }
}

#[test]
fn openai_requests_carry_no_earlier_reasoning_or_unknown_message_fields() {
    // A client replaying an assistant reply: its reasoning and unknown fields stay here.
    let req: switchyard_core::ChatRequest = serde_json::from_value(serde_json::json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello", "reasoning": "because", "annotations": [], "refusal": null},
            {"role": "user", "content": "and?"}
        ]
    }))
    .unwrap();
    assert!(req.messages[1].extra.contains_key("annotations"));
    let wire = switchyard_providers::openai::wire_request(&target(WireFormat::Openai), &req, false);
    let body = serde_json::to_value(&wire).unwrap();
    assert_eq!(
        body["messages"][1],
        serde_json::json!({"role": "assistant", "content": "hello"})
    );
}
