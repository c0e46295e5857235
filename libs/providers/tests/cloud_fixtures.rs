//! Recorded payloads of Gemini, Bedrock and Azure OpenAI in their documented shapes (under
//! `fixtures/`): replies, tool calls, streams (Bedrock's framed in AWS's binary event stream),
//! streams broken by an error, and error answers, parsed, decoded and classified the way live
//! answers are; and the requests each adapter builds, checked against the documented bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{fixture, text, tool_args};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};
use switchyard_config::catalog::WireFormat;
use switchyard_core::{ChatChunk, ChatRequest, ErrorClass, FinishReason};
use switchyard_providers::eventstream::{EventStreamParser, encode};
use switchyard_providers::sse::{SseEvent, SseParser};
use switchyard_providers::{Flow, ProviderOptions, Target, UpstreamError, adapter_for};

fn json_fixture(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).unwrap()
}

fn target(format: WireFormat) -> Target {
    Target {
        endpoint: "m@p".into(),
        provider: "p".into(),
        format,
        base_url: "https://upstream.example".into(),
        upstream_model: "up-1".into(),
        key: Some("k-fixture".to_string().into()),
        max_output: 1024,
        options: Arc::new(ProviderOptions {
            api_version: Some("2024-10-21".into()),
            project: Some("proj".into()),
            location: Some("us-east5".into()),
            aws_region: Some("us-east-1".into()),
            ..ProviderOptions::default()
        }),
        owner: None,
        capacity: None,
    }
}

/// The events of a recorded stream: SSE as recorded, Bedrock's JSON lines framed as the event
/// stream and decoded again.
fn events(format: WireFormat, path: &str) -> Vec<SseEvent> {
    let mut out = Vec::new();
    if format == WireFormat::Bedrock {
        let mut bytes = Vec::new();
        for line in String::from_utf8(fixture(path)).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let payload = v["payload"].to_string();
            match v["exception"].as_str() {
                Some(kind) => bytes.extend(encode(kind, true, payload.as_bytes())),
                None => bytes.extend(encode(
                    v["event"].as_str().unwrap(),
                    false,
                    payload.as_bytes(),
                )),
            }
        }
        // Split at an awkward place: frames arrive in pieces.
        let mut parser = EventStreamParser::new();
        let cut = bytes.len() / 3;
        parser.push(&bytes[..cut], &mut out).unwrap();
        parser.push(&bytes[cut..], &mut out).unwrap();
    } else {
        SseParser::new().push(&fixture(path), &mut out).unwrap();
    }
    out
}

/// Decodes a recorded stream: the chunks, whether it ended complete (terminal event, or a clean
/// end the format counts as complete), and the error if one ended it.
fn decode(format: WireFormat, path: &str) -> (Vec<ChatChunk>, bool, Option<UpstreamError>) {
    let t = target(format);
    let mut decoder = adapter_for(format).decoder(&t);
    let mut chunks = Vec::new();
    for e in &events(format, path) {
        match decoder.event(e, &mut chunks) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Done) => return (chunks, true, None),
            Err(err) => return (chunks, false, Some(err)),
        }
    }
    let complete = decoder.ended(&mut chunks);
    (chunks, complete, None)
}

fn finish(chunks: &[ChatChunk]) -> Option<FinishReason> {
    chunks.last().and_then(|c| c.choices[0].finish_reason)
}

fn classify(format: WireFormat, status: u16, headers: &HeaderMap, path: &str) -> UpstreamError {
    adapter_for(format).classify(
        StatusCode::from_u16(status).unwrap(),
        headers,
        &fixture(path),
    )
}

#[test]
fn gemini_replies() {
    for format in [WireFormat::Gemini, WireFormat::Vertex] {
        let a = adapter_for(format);
        let t = target(format);
        let r = a
            .parse_response(&t, &fixture("gemini/generate_content.json"))
            .unwrap();
        let m = &r.choices[0].message;
        assert_eq!(m.text_content(), "Switchyard fixture reply.");
        assert_eq!(
            m.reasoning.as_deref(),
            Some("The user wants a short answer.")
        );
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
        let u = r.usage.unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.cached_prompt_tokens,
                u.reasoning_tokens
            ),
            (1210, 36, 1024, 30)
        );
        assert_eq!(r.model, "gemini-2.5-flash");

        let r = a
            .parse_response(&t, &fixture("gemini/generate_content_function_call.json"))
            .unwrap();
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::ToolCalls));
        let call = &r.choices[0].message.tool_calls[0];
        assert_eq!(call.name, "lookup_order");
        assert!(call.id.starts_with("call_"));
        let args: Value = serde_json::from_str(&call.arguments).unwrap();
        assert_eq!(args["order_id"], "A-1001");
        assert_eq!(
            r.choices[0].message.reasoning_signature.as_deref(),
            Some("gemini:CiQB0e2Kb8fixture")
        );

        for refused in [
            "gemini/generate_content_safety.json",
            "gemini/prompt_blocked.json",
        ] {
            let e = a.parse_response(&t, &fixture(refused)).unwrap_err();
            assert_eq!(e.class, ErrorClass::ContentPolicy, "{refused}: {e}");
        }
    }
}

#[test]
fn gemini_streams_end_after_their_finish_reason() {
    let (chunks, complete, err) = decode(WireFormat::Gemini, "gemini/stream.sse");
    assert!(complete && err.is_none());
    assert_eq!(text(&chunks), "Hello there");
    assert_eq!(finish(&chunks), Some(FinishReason::Stop));
    let u = chunks.last().unwrap().usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens),
        (25, 2, 16)
    );
    assert_eq!(chunks[0].id, "gm_sy_fixture_3");

    let (chunks, complete, _) = decode(WireFormat::Gemini, "gemini/stream_function_call.sse");
    assert!(complete);
    assert!(
        chunks
            .iter()
            .any(|c| c.choices[0].delta.reasoning_signature.as_deref()
                == Some("gemini:CiQB0e2Kb8stream"))
    );
    let (name, args) = tool_args(&chunks);
    assert_eq!(name, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap()["location"],
        "Paris"
    );
    assert_eq!(finish(&chunks), Some(FinishReason::ToolCalls));

    let (chunks, complete, err) = decode(WireFormat::Gemini, "gemini/stream_error.sse");
    assert!(!complete);
    assert_eq!(text(&chunks), "Par");
    let err = err.unwrap();
    assert_eq!(err.class, ErrorClass::Unavailable);
    assert_eq!(err.provider_code.as_deref(), Some("UNAVAILABLE"));

    // A body that ends before any finishReason is not an answer.
    let (_, complete, err) = decode(WireFormat::Gemini, "gemini/stream_truncated.sse");
    assert!(!complete && err.is_none());
}

#[test]
fn gemini_errors_classify_with_the_retry_delay() {
    let none = HeaderMap::new();
    let cases = [
        (
            "gemini/error_resource_exhausted.json",
            429,
            ErrorClass::RateLimited,
        ),
        (
            "gemini/error_api_key_invalid.json",
            400,
            ErrorClass::UpstreamAuth,
        ),
        (
            "gemini/error_token_limit.json",
            400,
            ErrorClass::ContextLengthExceeded,
        ),
        (
            "gemini/error_permission_denied.json",
            403,
            ErrorClass::UpstreamAuth,
        ),
        (
            "gemini/error_unavailable.json",
            503,
            ErrorClass::Unavailable,
        ),
        (
            "gemini/error_invalid_argument.json",
            400,
            ErrorClass::InvalidRequest,
        ),
    ];
    for (path, status, class) in cases {
        let e = classify(WireFormat::Gemini, status, &none, path);
        assert_eq!(e.class, class, "{path}: {e}");
        assert_eq!(e.status, Some(status));
    }
    let e = classify(
        WireFormat::Gemini,
        429,
        &none,
        "gemini/error_resource_exhausted.json",
    );
    assert_eq!(e.retry_after, Some(Duration::from_secs(37)));
    assert_eq!(e.provider_code.as_deref(), Some("RESOURCE_EXHAUSTED"));
}

#[test]
fn gemini_embeddings_parse_in_input_order() {
    let r = adapter_for(WireFormat::Gemini)
        .parse_embeddings(
            &target(WireFormat::Gemini),
            &fixture("gemini/batch_embed.json"),
        )
        .unwrap();
    assert_eq!(r.data.len(), 2);
    assert!((r.data[1][1] - 0.0431).abs() < 1e-6);
}

#[test]
fn bedrock_replies() {
    let a = adapter_for(WireFormat::Bedrock);
    let t = target(WireFormat::Bedrock);
    let r = a
        .parse_response(&t, &fixture("bedrock/converse.json"))
        .unwrap();
    assert_eq!(
        r.choices[0].message.text_content(),
        "Switchyard fixture reply."
    );
    let u = r.usage.unwrap();
    // Cache reads are prompt tokens too.
    assert_eq!(
        (u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens),
        (2143, 2048, 6)
    );

    let r = a
        .parse_response(&t, &fixture("bedrock/converse_tool_use.json"))
        .unwrap();
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    let call = &r.choices[0].message.tool_calls[0];
    assert_eq!(
        (call.id.as_str(), call.name.as_str()),
        ("tooluse_sy_0001", "lookup_order")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&call.arguments).unwrap()["include_items"],
        true
    );
    assert_eq!(r.choices[0].message.text_content(), "Let me look that up.");

    let e = a
        .parse_response(&t, &fixture("bedrock/converse_guardrail.json"))
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::ContentPolicy);
}

#[test]
fn bedrock_event_streams() {
    let (chunks, done, err) = decode(WireFormat::Bedrock, "bedrock/stream.jsonl");
    assert!(done && err.is_none());
    assert_eq!(text(&chunks), "Hello there");
    assert_eq!(finish(&chunks), Some(FinishReason::Stop));
    let u = chunks.last().unwrap().usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens),
        (41, 2, 16)
    );

    let (chunks, done, _) = decode(WireFormat::Bedrock, "bedrock/stream_tool_use.jsonl");
    assert!(done);
    assert_eq!(text(&chunks), "Checking:");
    let (name, args) = tool_args(&chunks);
    assert_eq!(name, "lookup_order");
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap()["order_id"],
        "A-1001"
    );
    assert_eq!(finish(&chunks), Some(FinishReason::ToolCalls));

    let (chunks, done, err) = decode(WireFormat::Bedrock, "bedrock/stream_error.jsonl");
    assert!(!done);
    assert_eq!(text(&chunks), "Par");
    let err = err.unwrap();
    assert_eq!(err.class, ErrorClass::Unavailable);
    assert_eq!(
        err.provider_code.as_deref(),
        Some("ModelStreamErrorException")
    );

    let (_, _, err) = decode(WireFormat::Bedrock, "bedrock/stream_throttled.jsonl");
    assert_eq!(err.unwrap().class, ErrorClass::RateLimited);
}

#[test]
fn bedrock_errors_classify_by_exception_type() {
    for case in json_fixture("bedrock/errors.json").as_array().unwrap() {
        let mut headers = HeaderMap::new();
        if let Some(t) = case["type"].as_str() {
            headers.insert("x-amzn-errortype", HeaderValue::from_str(t).unwrap());
        }
        let status = StatusCode::from_u16(case["status"].as_u64().unwrap() as u16).unwrap();
        let body = case["body"].to_string();
        let e = adapter_for(WireFormat::Bedrock).classify(status, &headers, body.as_bytes());
        assert_eq!(e.class.as_str(), case["class"], "{case}: {e}");
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-amzn-errortype",
        HeaderValue::from_static(
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
        ),
    );
    headers.insert("retry-after", HeaderValue::from_static("4"));
    let e = adapter_for(WireFormat::Bedrock).classify(
        StatusCode::TOO_MANY_REQUESTS,
        &headers,
        br#"{"message":"Too many requests"}"#,
    );
    assert_eq!(e.retry_after, Some(Duration::from_secs(4)));
    assert_eq!(e.provider_code.as_deref(), Some("ThrottlingException"));
}

#[test]
fn azure_replies_streams_and_filters() {
    let a = adapter_for(WireFormat::Azure);
    let t = target(WireFormat::Azure);
    let r = a
        .parse_response(&t, &fixture("azure/chat_completion.json"))
        .unwrap();
    assert_eq!(
        r.choices[0].message.text_content(),
        "Switchyard fixture reply."
    );
    assert_eq!(r.usage.unwrap().total_tokens(), 29);

    let e = a
        .parse_response(&t, &fixture("azure/chat_completion_filtered.json"))
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::ContentPolicy);
    assert!(
        e.message.contains("self_harm (high), violence (medium)"),
        "{e}"
    );

    let (chunks, done, err) = decode(WireFormat::Azure, "azure/stream.sse");
    assert!(done && err.is_none());
    assert_eq!(text(&chunks), "Hello there");
    assert_eq!(chunks.last().unwrap().usage.unwrap().completion_tokens, 2);

    let (_, done, err) = decode(WireFormat::Azure, "azure/stream_filtered.sse");
    assert!(!done);
    let err = err.unwrap();
    assert_eq!(err.class, ErrorClass::ContentPolicy);
    assert!(err.message.contains("violence (high)"), "{err}");

    let none = HeaderMap::new();
    let e = classify(
        WireFormat::Azure,
        400,
        &none,
        "azure/error_content_filter.json",
    );
    assert_eq!(e.class, ErrorClass::ContentPolicy);
    assert!(e.message.contains("jailbreak, violence (medium)"), "{e}");
    let mut retry = HeaderMap::new();
    retry.insert("retry-after", HeaderValue::from_static("6"));
    let e = classify(
        WireFormat::Azure,
        429,
        &retry,
        "azure/error_rate_limit.json",
    );
    assert_eq!(
        (e.class, e.retry_after),
        (ErrorClass::RateLimited, Some(Duration::from_secs(6)))
    );
    let e = classify(
        WireFormat::Azure,
        404,
        &none,
        "azure/error_deployment_not_found.json",
    );
    assert_eq!(e.class, ErrorClass::Unavailable);
}

fn request() -> ChatRequest {
    serde_json::from_value(json!({
        "model": "routing-name",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{\"x\":1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "{\"seen\": \"a cat\"}"}
        ],
        "tools": [{"type": "function", "function": {"name": "look", "description": "look closer", "parameters": {"type": "object", "properties": {"x": {"type": ["integer", "null"]}}, "additionalProperties": false}}}],
        "tool_choice": {"type": "function", "function": {"name": "look"}},
        "max_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"]
    }))
    .unwrap()
}

async fn body_of(
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> (http::request::Parts, Value) {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn requests_map_to_the_gemini_wire_shape() {
    let t = target(WireFormat::Gemini);
    let (parts, body) = body_of(
        adapter_for(WireFormat::Gemini)
            .request(&t, &request(), true)
            .unwrap(),
    )
    .await;
    assert_eq!(
        parts.uri.to_string(),
        "https://upstream.example/v1beta/models/up-1:streamGenerateContent?alt=sse"
    );
    assert_eq!(parts.headers["x-goog-api-key"], "k-fixture");
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "be brief"}]})
    );
    let contents = body["contents"].as_array().unwrap();
    assert_eq!(contents[0]["role"], "user");
    assert_eq!(
        contents[0]["parts"][1]["inlineData"]["mimeType"],
        "image/png"
    );
    assert_eq!(contents[1]["role"], "model");
    assert_eq!(
        contents[1]["parts"][0]["functionCall"],
        json!({"name": "look", "args": {"x": 1}})
    );
    assert_eq!(
        contents[2]["parts"][0]["functionResponse"],
        json!({"name": "look", "response": {"seen": "a cat"}})
    );
    let decl = &body["tools"][0]["functionDeclarations"][0];
    // JSON Schema reduced to Gemini's OpenAPI subset.
    assert_eq!(
        decl["parameters"],
        json!({"type": "object", "properties": {"x": {"type": "integer", "nullable": true}}})
    );
    assert_eq!(
        body["toolConfig"]["functionCallingConfig"],
        json!({"mode": "ANY", "allowedFunctionNames": ["look"]})
    );
    assert_eq!(
        body["generationConfig"],
        json!({"maxOutputTokens": 300, "temperature": 0.2f32, "topP": 0.9f32, "stopSequences": ["END"]})
    );

    let t = target(WireFormat::Vertex);
    let (parts, _) = body_of(
        adapter_for(WireFormat::Vertex)
            .request(&t, &request(), false)
            .unwrap(),
    )
    .await;
    assert_eq!(
        parts.uri.to_string(),
        "https://upstream.example/v1/projects/proj/locations/us-east5/publishers/google/models/up-1:generateContent"
    );
    assert_eq!(parts.headers["authorization"], "Bearer k-fixture");
}

#[tokio::test]
async fn requests_map_to_the_bedrock_and_vertex_anthropic_shapes() {
    let mut t = target(WireFormat::Bedrock);
    t.upstream_model =
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude".into();
    let (parts, body) = body_of(
        adapter_for(WireFormat::Bedrock)
            .request(&t, &request(), true)
            .unwrap(),
    )
    .await;
    assert_eq!(
        parts.uri.path(),
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude/converse-stream"
    );
    assert_eq!(parts.headers["authorization"], "Bearer k-fixture");
    assert_eq!(body["system"], json!([{"text": "be brief"}]));
    assert_eq!(body["messages"][0]["content"][1]["image"]["format"], "png");
    assert_eq!(
        body["messages"][1]["content"][0]["toolUse"],
        json!({"toolUseId": "c1", "name": "look", "input": {"x": 1}})
    );
    assert_eq!(
        body["messages"][2]["content"][0]["toolResult"],
        json!({"toolUseId": "c1", "content": [{"json": {"seen": "a cat"}}]})
    );
    assert_eq!(
        body["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "look"}})
    );
    assert_eq!(
        body["inferenceConfig"],
        json!({"maxTokens": 300, "temperature": 0.2f32, "topP": 0.9f32, "stopSequences": ["END"]})
    );

    let t = target(WireFormat::VertexAnthropic);
    let (parts, body) = body_of(
        adapter_for(WireFormat::VertexAnthropic)
            .request(&t, &request(), true)
            .unwrap(),
    )
    .await;
    assert_eq!(
        parts.uri.to_string(),
        "https://upstream.example/v1/projects/proj/locations/us-east5/publishers/anthropic/models/up-1:streamRawPredict"
    );
    assert_eq!(body["anthropic_version"], "vertex-2023-10-16");
    assert!(body.get("model").is_none());
    assert_eq!(body["stream"], true);
}

#[tokio::test]
async fn azure_deployment_urls_and_quirks() {
    let t = target(WireFormat::Azure);
    let (parts, body) = body_of(
        adapter_for(WireFormat::Azure)
            .request(&t, &request(), false)
            .unwrap(),
    )
    .await;
    assert_eq!(
        parts.uri.to_string(),
        "https://upstream.example/openai/deployments/up-1/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(parts.headers["api-key"], "k-fixture");
    assert!(parts.headers.get("authorization").is_none());
    assert_eq!(body["max_tokens"], 300);

    // A preset's quirks: the output cap moved, a field renamed.
    let mut t = target(WireFormat::Openai);
    let mut options = (*t.options).clone();
    options.quirks.max_tokens_field =
        Some(switchyard_config::catalog::MaxTokensField::MaxCompletionTokens);
    options
        .quirks
        .renames
        .insert("seed".into(), "random_seed".into());
    t.options = Arc::new(options);
    let mut req = request();
    req.seed = Some(7);
    let (_, body) = body_of(
        adapter_for(WireFormat::Openai)
            .request(&t, &req, false)
            .unwrap(),
    )
    .await;
    assert_eq!(body["max_completion_tokens"], 300);
    assert!(body.get("max_tokens").is_none());
    assert_eq!(body["random_seed"], 7);
    assert!(body.get("seed").is_none());
}

#[tokio::test]
async fn gemini_thought_signatures_go_back_to_gemini_only() {
    let mut req = request();
    req.messages[2].reasoning_signature = Some("gemini:CiQsig".into());
    req.messages[2].reasoning = Some("thinking".into());
    let t = target(WireFormat::Gemini);
    let (_, body) = body_of(
        adapter_for(WireFormat::Gemini)
            .request(&t, &req, false)
            .unwrap(),
    )
    .await;
    assert_eq!(
        body["contents"][1]["parts"][0]["thoughtSignature"],
        "CiQsig"
    );
    // Anthropic never gets another provider's signature as a thinking block.
    let t = target(WireFormat::Anthropic);
    let (_, body) = body_of(
        adapter_for(WireFormat::Anthropic)
            .request(&t, &req, false)
            .unwrap(),
    )
    .await;
    let assistant = &body["messages"][1]["content"];
    assert!(
        assistant
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["type"] != "thinking"),
        "{assistant}"
    );
}
