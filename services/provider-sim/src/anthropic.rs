//! The Anthropic Messages wire format, as documented: `x-api-key` and `anthropic-version`
//! headers, `max_tokens` required, content blocks (text, tool_use), the SSE event sequence
//! (message_start, content_block_start/delta/stop, ping, message_delta, message_stop) and the
//! `{"type": "error", "error": {...}}` envelope, including 529 `overloaded_error`.

use axum::body::Body;
use axum::http::{HeaderMap, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::dialect::header_value;
use crate::generate::{Finish, Parsed, Reply, split_pieces};
use crate::state::CapacityReading;
use crate::wire::{Ctx, Event, Failure, json_response, retry_after_for, sse, with_retry_after};

/// The `x-api-key` presented (or a bearer token, which Anthropic also accepts for OAuth).
pub fn presented_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| k.trim().to_string())
        .or_else(|| crate::openai::presented_key(headers))
}

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    model: String,
    max_tokens: Option<u32>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    messages: Vec<InMessage>,
    #[serde(default)]
    tools: Vec<InTool>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    output_format: Option<Value>,
    #[serde(default)]
    thinking: Option<Value>,
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    content: Value,
}

#[derive(Deserialize)]
struct InTool {
    name: String,
    #[serde(default)]
    input_schema: Value,
}

/// All text inside a `content` value (string or blocks), tool inputs and results included.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => b
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                Some("tool_use") => b.get("input").map(Value::to_string).unwrap_or_default(),
                Some("tool_result") => b.get("content").map(text_of).unwrap_or_default(),
                _ => String::new(),
            })
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// Parses a Messages body; `anthropic-version` is required as by the real API.
pub fn parse(
    headers: &HeaderMap,
    body: &[u8],
    tokenizer: crate::tokens::PromptTokenizer,
) -> Result<Parsed, Failure> {
    if headers.get("anthropic-version").is_none() {
        return Err(Failure::BadRequest(
            "anthropic-version: header is required".into(),
        ));
    }
    let req: Request = serde_json::from_slice(body)
        .map_err(|e| Failure::BadRequest(format!("invalid request body: {e}")))?;
    if req.model.is_empty() {
        return Err(Failure::BadRequest("model: Field required".into()));
    }
    let Some(max_tokens) = req.max_tokens else {
        return Err(Failure::BadRequest("max_tokens: Field required".into()));
    };
    if req.messages.is_empty() {
        return Err(Failure::BadRequest(
            "messages: at least one message is required".into(),
        ));
    }
    let prefill = req
        .messages
        .last()
        .filter(|m| m.role == "assistant")
        .map(|m| text_of(&m.content));
    if prefill.as_deref().is_some_and(|p| p.trim_end() != p) {
        return Err(Failure::BadRequest(
            "messages: final assistant content cannot end with trailing whitespace".into(),
        ));
    }
    let mut texts: Vec<String> = Vec::new();
    if let Some(system) = &req.system {
        texts.push(text_of(system));
    }
    texts.extend(req.messages.iter().map(|m| text_of(&m.content)));
    let tools: Vec<(&str, &Value)> = req
        .tools
        .iter()
        .map(|t| (t.name.as_str(), &t.input_schema))
        .collect();
    let prompt_tokens = tokenizer.count(&texts, req.messages.len(), &tools);
    let choice_type = req
        .tool_choice
        .as_ref()
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("auto");
    let tool = match choice_type {
        "none" => None,
        "tool" => {
            let name = req
                .tool_choice
                .as_ref()
                .and_then(|c| c.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            req.tools.iter().find(|t| t.name == name)
        }
        _ => req.tools.first(),
    }
    .map(|t| (t.name.clone(), t.input_schema.clone()));
    let json = req.output_format.as_ref().and_then(|f| {
        (f.get("type").and_then(Value::as_str) == Some("json_schema"))
            .then(|| f.get("schema").cloned().unwrap_or(Value::Null))
    });
    Ok(Parsed {
        model: req.model,
        stream: req.stream,
        include_usage: true,
        max_tokens: Some(max_tokens),
        prompt_text: texts.join("\n"),
        prompt_tokens,
        tools: req.tools.len(),
        tool,
        json,
        reasoning: req
            .thinking
            .as_ref()
            .is_some_and(|t| t["type"] == "enabled"),
        prefill,
    })
}

fn envelope(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_sim"})
}

/// The documented error answer for `failure`. (A refusal is not an error here: it is a 200 with
/// `stop_reason: refusal`, so callers never pass [`Failure::Refused`].)
pub fn error(failure: &Failure, retry_after_s: Option<u32>) -> Response<Body> {
    let (status, kind, message) = match failure {
        Failure::BadRequest(msg) => (400, "invalid_request_error", msg.clone()),
        Failure::Unauthorized | Failure::Injected(401) => {
            (401, "authentication_error", "invalid x-api-key".to_string())
        }
        Failure::ModelNotFound(model) => (404, "not_found_error", format!("model: {model}")),
        Failure::RateLimited(_) | Failure::Injected(429) => (
            429,
            "rate_limit_error",
            "Number of requests has exceeded your rate limit.".to_string(),
        ),
        Failure::ContextLength { tokens, limit } => (
            400,
            "invalid_request_error",
            format!("prompt is too long: {tokens} tokens > {limit} maximum"),
        ),
        Failure::Refused | Failure::Injected(400) => {
            (400, "invalid_request_error", "Invalid request.".to_string())
        }
        Failure::Injected(529) => (529, "overloaded_error", "Overloaded".to_string()),
        Failure::Injected(504) => (504, "timeout_error", "Request timed out".to_string()),
        Failure::Injected(status) => (*status, "api_error", "Internal server error".to_string()),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    with_retry_after(
        json_response(status, &envelope(kind, &message)),
        retry_after_for(failure, retry_after_s),
    )
}

fn stop_reason(reply: &Reply) -> &'static str {
    match reply {
        Reply::Text {
            finish: Finish::Length,
            ..
        } => "max_tokens",
        Reply::Text { .. } => "end_turn",
        Reply::Tool { .. } => "tool_use",
        Reply::Refusal => "refusal",
    }
}

fn usage(input: u32, output: u32) -> Value {
    json!({
        "input_tokens": input,
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0
    })
}

/// A complete `message` object.
pub fn message(ctx: &Ctx<'_>, reply: &Reply) -> Value {
    let content = match reply {
        Reply::Text { pieces, .. } => json!([{"type": "text", "text": pieces.concat()}]),
        Reply::Tool {
            id, name, input, ..
        } => {
            json!([{"type": "tool_use", "id": id.replace("call_", "toolu_"), "name": name, "input": input}])
        }
        Reply::Refusal => json!([]),
    };
    let mut content = content;
    if ctx.parsed.reasoning
        && let Some(blocks) = content.as_array_mut()
    {
        blocks.insert(
            0,
            json!({"type": "thinking", "thinking": crate::generate::REASONING, "signature": crate::generate::REASONING_SIGNATURE}),
        );
    }
    json!({
        "id": format!("msg_sim{}", ctx.id),
        "type": "message",
        "role": "assistant",
        "model": ctx.parsed.model,
        "content": content,
        "stop_reason": stop_reason(reply),
        "stop_sequence": null,
        "usage": usage(ctx.parsed.prompt_tokens, reply.completion_tokens() + ctx.parsed.reasoning_tokens()),
    })
}

/// The SSE event sequence of a streamed message. With `malformed`, one event's JSON is broken.
pub fn events(ctx: &Ctx<'_>, reply: &Reply, malformed: bool) -> Vec<Event> {
    let mut out = Vec::new();
    let start = json!({
        "type": "message_start",
        "message": {
            "id": format!("msg_sim{}", ctx.id), "type": "message", "role": "assistant",
            "model": ctx.parsed.model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": usage(ctx.parsed.prompt_tokens, 1)
        }
    });
    out.push(sse(Some("message_start"), &start.to_string(), false));
    // A thinking block first when asked for; the answer's block comes after it.
    let base = u32::from(ctx.parsed.reasoning);
    if ctx.parsed.reasoning {
        for (name, data) in [
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": crate::generate::REASONING}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": crate::generate::REASONING_SIGNATURE}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
        ] {
            out.push(sse(
                Some(name),
                &data.to_string(),
                name == "content_block_delta",
            ));
        }
    }
    match reply {
        Reply::Text { pieces, .. } => {
            out.push(sse(
                Some("content_block_start"),
                &json!({"type": "content_block_start", "index": base, "content_block": {"type": "text", "text": ""}}).to_string(),
                false,
            ));
            out.push(sse(Some("ping"), r#"{"type": "ping"}"#, false));
            for piece in pieces {
                out.push(sse(
                    Some("content_block_delta"),
                    &json!({"type": "content_block_delta", "index": base, "delta": {"type": "text_delta", "text": piece}}).to_string(),
                    true,
                ));
            }
            out.push(sse(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": base}).to_string(),
                false,
            ));
        }
        Reply::Tool {
            id,
            name,
            arguments,
            ..
        } => {
            out.push(sse(
                Some("content_block_start"),
                &json!({"type": "content_block_start", "index": base, "content_block":
                    {"type": "tool_use", "id": id.replace("call_", "toolu_"), "name": name, "input": {}}}).to_string(),
                true,
            ));
            out.push(sse(Some("ping"), r#"{"type": "ping"}"#, false));
            for piece in split_pieces(arguments) {
                out.push(sse(
                    Some("content_block_delta"),
                    &json!({"type": "content_block_delta", "index": base, "delta": {"type": "input_json_delta", "partial_json": piece}}).to_string(),
                    true,
                ));
            }
            out.push(sse(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": base}).to_string(),
                false,
            ));
        }
        Reply::Refusal => {}
    }
    out.push(sse(
        Some("message_delta"),
        &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(reply), "stop_sequence": null},
                "usage": {"output_tokens": reply.completion_tokens() + ctx.parsed.reasoning_tokens()}})
        .to_string(),
        false,
    ));
    out.push(sse(
        Some("message_stop"),
        r#"{"type":"message_stop"}"#,
        false,
    ));
    if malformed && out.len() > 1 {
        out[1] = sse(
            Some("content_block_start"),
            r#"{"type": "content_block_start", "index": 0, "content_bl"#,
            true,
        );
    }
    out
}

/// The Messages dialect, direct or as Anthropic's models on Vertex AI (`rawPredict` URLs, the
/// model in the path, `anthropic_version` in the body, a bearer token from the token endpoint).
#[derive(Debug)]
pub struct Anthropic {
    /// On Vertex AI.
    pub vertex: bool,
}

impl crate::dialect::Dialect for Anthropic {
    fn route(&self, path: &str, query: &str) -> crate::dialect::Route {
        let mut route = crate::dialect::Route {
            query: query.to_string(),
            ..Default::default()
        };
        if self.vertex
            && let Some((model, action)) = crate::dialect::model_action(path)
        {
            route.stream = Some(action == "streamRawPredict");
            route.model = Some(model);
        }
        route
    }

    fn authenticate(
        &self,
        provider: &crate::config::SimProvider,
        headers: &HeaderMap,
        _route: &crate::dialect::Route,
        tokens: &crate::cloud::IssuedTokens,
    ) -> (Option<String>, bool) {
        if self.vertex {
            let token = crate::cloud::bearer(headers);
            let ok =
                provider.api_key.is_none() || token.as_deref().is_some_and(|t| tokens.valid(t));
            return (token, ok);
        }
        let key = presented_key(headers);
        let ok = crate::dialect::key_matches(provider, key.as_deref());
        (key, ok)
    }

    fn parse(
        &self,
        route: &crate::dialect::Route,
        headers: &HeaderMap,
        body: &[u8],
        tokenizer: crate::tokens::PromptTokenizer,
    ) -> Result<Parsed, Failure> {
        if !self.vertex {
            return parse(headers, body, tokenizer);
        }
        let mut v: Value = serde_json::from_slice(body)
            .map_err(|e| Failure::BadRequest(format!("invalid request body: {e}")))?;
        if v["anthropic_version"] != "vertex-2023-10-16" {
            return Err(Failure::BadRequest(
                "anthropic_version: must be vertex-2023-10-16".into(),
            ));
        }
        if v.get("model").is_some() {
            return Err(Failure::BadRequest(
                "model: Extra inputs are not permitted (the model is in the URL)".into(),
            ));
        }
        v["model"] = json!(route.model.clone().unwrap_or_default());
        let mut with_version = headers.clone();
        with_version.insert(
            "anthropic-version",
            axum::http::HeaderValue::from_static("2023-06-01"),
        );
        let mut parsed = parse(&with_version, v.to_string().as_bytes(), tokenizer)?;
        if let Some(stream) = route.stream {
            parsed.stream = stream;
        }
        Ok(parsed)
    }

    fn error(&self, failure: &Failure, retry_after_s: Option<u32>) -> Response<Body> {
        error(failure, retry_after_s)
    }

    fn reply(&self, ctx: &Ctx<'_>, reply: &Reply) -> Value {
        message(ctx, reply)
    }

    fn events(&self, ctx: &Ctx<'_>, reply: &Reply, malformed: bool) -> Vec<Event> {
        events(ctx, reply, malformed)
    }

    fn huge_event(&self, n: usize) -> Event {
        let text = "x".repeat(n);
        sse(
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}).to_string(),
            true,
        )
    }

    fn rate_limit_headers(&self, left: &CapacityReading, h: &mut HeaderMap) {
        // As Anthropic documents them; the resets are RFC 3339 times.
        let reset = aws_smithy_types::DateTime::from(std::time::SystemTime::now() + left.reset_in)
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap_or_default();
        let mut put = |name: &'static str, value: String| {
            h.insert(name, header_value(value));
        };
        put(
            "anthropic-ratelimit-requests-limit",
            left.requests_limit.to_string(),
        );
        put(
            "anthropic-ratelimit-requests-remaining",
            left.requests_remaining.to_string(),
        );
        put("anthropic-ratelimit-requests-reset", reset.clone());
        if let Some((limit, remaining)) = left.tokens {
            put("anthropic-ratelimit-input-tokens-limit", limit.to_string());
            put(
                "anthropic-ratelimit-input-tokens-remaining",
                remaining.to_string(),
            );
            put("anthropic-ratelimit-input-tokens-reset", reset);
        }
    }
}
