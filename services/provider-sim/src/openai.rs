//! The OpenAI chat-completions wire format, as documented: request parsing, JSON responses,
//! SSE chunks ending in `data: [DONE]`, usage in the final chunk with
//! `stream_options.include_usage`, and the documented error envelope.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};
use switchyard_core::{ChatRequest, ResponseFormat, ToolChoice};

use crate::dialect::header_value;
use crate::generate::{Finish, Parsed, Reply};
use crate::state::CapacityReading;
use crate::tokens::PromptTokenizer;
use crate::wire::{Ctx, Event, Failure, json_response, retry_after_for, sse, with_retry_after};

/// The bearer token presented, if any.
pub fn presented_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().to_string())
}

/// Parses a chat-completions body.
pub fn parse(body: &[u8], tokenizer: PromptTokenizer) -> Result<Parsed, Failure> {
    let req: ChatRequest = serde_json::from_slice(body).map_err(|e| {
        Failure::BadRequest(format!(
            "We could not parse the JSON body of your request: {e}"
        ))
    })?;
    if req.model.is_empty() {
        return Err(Failure::BadRequest(
            "you must provide a model parameter".into(),
        ));
    }
    if req.messages.is_empty() {
        return Err(Failure::BadRequest("[] is too short - 'messages'".into()));
    }
    let prompt_text = req
        .messages
        .iter()
        .map(|m| m.text_content())
        .collect::<Vec<_>>()
        .join("\n");
    let tool = match &req.tool_choice {
        Some(ToolChoice::None) => None,
        Some(ToolChoice::Function(name)) => req.tools.iter().find(|t| &t.name == name),
        _ => req.tools.first(),
    }
    .map(|t| (t.name.clone(), t.parameters.clone()));
    let json = match &req.response_format {
        Some(ResponseFormat::JsonSchema { json_schema }) => Some(json_schema.schema.clone()),
        Some(ResponseFormat::JsonObject) => Some(Value::Null),
        _ => None,
    };
    Ok(Parsed {
        model: req.model.clone(),
        stream: req.stream,
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
        max_tokens: req.max_output_tokens(),
        prompt_tokens: match tokenizer {
            PromptTokenizer::Estimate => req.estimated_prompt_tokens(),
            PromptTokenizer::O200k => switchyard_apis::count::chat_request(&req),
        },
        prompt_text,
        tools: req.tools.len(),
        tool,
        json,
        reasoning: req.reasoning.as_ref().is_some_and(|r| r.is_on()),
        prefill: req
            .messages
            .last()
            .filter(|m| {
                m.role == switchyard_core::Role::Assistant
                    && m.extra.get("prefix") == Some(&Value::Bool(true))
            })
            .map(|m| m.text_content()),
    })
}

fn envelope(message: &str, kind: &str, param: Value, code: Value) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

/// The documented error answer for `failure`.
pub fn error(failure: &Failure, retry_after_s: Option<u32>) -> Response<Body> {
    let (status, body) = match failure {
        Failure::BadRequest(msg) => (
            StatusCode::BAD_REQUEST,
            envelope(msg, "invalid_request_error", Value::Null, Value::Null),
        ),
        Failure::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            envelope(
                "Incorrect API key provided. You can find your API key at the provider's dashboard.",
                "invalid_request_error",
                Value::Null,
                json!("invalid_api_key"),
            ),
        ),
        Failure::ModelNotFound(model) => (
            StatusCode::NOT_FOUND,
            envelope(
                &format!("The model `{model}` does not exist or you do not have access to it."),
                "invalid_request_error",
                Value::Null,
                json!("model_not_found"),
            ),
        ),
        Failure::RateLimited(_) | Failure::Injected(429) => (
            StatusCode::TOO_MANY_REQUESTS,
            envelope(
                "Rate limit reached for requests. Please try again later.",
                "requests",
                json!("requests"),
                json!("rate_limit_exceeded"),
            ),
        ),
        Failure::ContextLength { tokens, limit } => (
            StatusCode::BAD_REQUEST,
            envelope(
                &format!(
                    "This model's maximum context length is {limit} tokens. However, your messages resulted in {tokens} tokens. Please reduce the length of the messages."
                ),
                "invalid_request_error",
                json!("messages"),
                json!("context_length_exceeded"),
            ),
        ),
        Failure::Refused => (
            StatusCode::BAD_REQUEST,
            envelope(
                "Your request was rejected as a result of our safety system.",
                "invalid_request_error",
                Value::Null,
                json!("content_policy_violation"),
            ),
        ),
        Failure::Injected(502) => {
            // OpenAI's edge answers 502 with an HTML page, not the JSON envelope.
            let mut resp = Response::new(Body::from(
                "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
            ));
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            return resp;
        }
        Failure::Injected(401) => return error(&Failure::Unauthorized, retry_after_s),
        Failure::Injected(400) => {
            return error(
                &Failure::BadRequest("Invalid request.".into()),
                retry_after_s,
            );
        }
        Failure::Injected(503) => (
            StatusCode::SERVICE_UNAVAILABLE,
            envelope(
                "The engine is currently overloaded, please try again later.",
                "server_error",
                Value::Null,
                Value::Null,
            ),
        ),
        Failure::Injected(status) => (
            StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            envelope(
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                Value::Null,
                Value::Null,
            ),
        ),
    };
    let resp = json_response(status, &body);
    let resp = with_retry_after(resp, retry_after_for(failure, retry_after_s));
    if matches!(failure, Failure::RateLimited(_) | Failure::Injected(429)) {
        let mut resp = resp;
        resp.headers_mut()
            .insert("x-ratelimit-remaining-requests", HeaderValue::from(0));
        resp.headers_mut()
            .insert("x-ratelimit-reset-requests", HeaderValue::from_static("1s"));
        return resp;
    }
    resp
}

fn finish_str(reply: &Reply) -> &'static str {
    match reply {
        Reply::Text {
            finish: Finish::Length,
            ..
        } => "length",
        Reply::Text { .. } => "stop",
        Reply::Tool { .. } => "tool_calls",
        Reply::Refusal => "content_filter",
    }
}

fn usage(ctx: &Ctx<'_>, reply: &Reply) -> Value {
    let reasoning = ctx.parsed.reasoning_tokens();
    let completion = reply.completion_tokens() + reasoning;
    json!({
        "prompt_tokens": ctx.parsed.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": ctx.parsed.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning}
    })
}

/// A complete `chat.completion` object.
pub fn completion(ctx: &Ctx<'_>, reply: &Reply) -> Value {
    let message = match reply {
        Reply::Text { pieces, .. } => {
            json!({"role": "assistant", "content": pieces.concat(), "refusal": null})
        }
        Reply::Tool {
            id,
            name,
            arguments,
            ..
        } => json!({
            "role": "assistant",
            "content": null,
            "refusal": null,
            "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}]
        }),
        Reply::Refusal => {
            json!({"role": "assistant", "content": null, "refusal": "I can't help with that."})
        }
    };
    let mut message = message;
    if ctx.parsed.reasoning {
        message["reasoning_content"] = json!(crate::generate::REASONING);
    }
    json!({
        "id": format!("chatcmpl-sim{}", ctx.id),
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.parsed.model,
        "system_fingerprint": "fp_sim",
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_str(reply)}],
        "usage": usage(ctx, reply),
    })
}

/// The SSE events of a streamed completion, `[DONE]` last. With `malformed`, the second event's
/// JSON is broken.
pub fn events(ctx: &Ctx<'_>, reply: &Reply, malformed: bool) -> Vec<Event> {
    let include_usage = ctx.parsed.include_usage;
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut c = json!({
            "id": format!("chatcmpl-sim{}", ctx.id),
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": ctx.parsed.model,
            "system_fingerprint": "fp_sim",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c.to_string()
    };
    let mut out = Vec::new();
    // Reasoning first, DeepSeek-style, when asked for.
    if ctx.parsed.reasoning {
        out.push(sse(
            None,
            &chunk(
                json!({"role": "assistant", "content": null, "reasoning_content": crate::generate::REASONING}),
                None,
            ),
            true,
        ));
    }
    match reply {
        Reply::Text { pieces, .. } => {
            out.push(sse(
                None,
                &chunk(
                    json!({"role": "assistant", "content": "", "refusal": null}),
                    None,
                ),
                false,
            ));
            for piece in pieces {
                out.push(sse(None, &chunk(json!({"content": piece}), None), true));
            }
        }
        Reply::Tool {
            id,
            name,
            arguments,
            ..
        } => {
            out.push(sse(
                None,
                &chunk(
                    json!({"role": "assistant", "content": null, "tool_calls": [
                        {"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}
                    ]}),
                    None,
                ),
                true,
            ));
            for piece in crate::generate::split_pieces(arguments) {
                out.push(sse(
                    None,
                    &chunk(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                        None,
                    ),
                    true,
                ));
            }
        }
        Reply::Refusal => {
            out.push(sse(
                None,
                &chunk(
                    json!({"role": "assistant", "refusal": "I can't help with that."}),
                    None,
                ),
                true,
            ));
        }
    }
    out.push(sse(None, &chunk(json!({}), Some(finish_str(reply))), false));
    if include_usage {
        let last = json!({
            "id": format!("chatcmpl-sim{}", ctx.id),
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": ctx.parsed.model,
            "system_fingerprint": "fp_sim",
            "choices": [],
            "usage": usage(ctx, reply),
        });
        out.push(sse(None, &last.to_string(), false));
    }
    out.push(sse(None, "[DONE]", false));
    if malformed && out.len() > 1 {
        out[1] = sse(
            None,
            r#"{"id": "chatcmpl-sim", "choices": [{"delta": {"content": "br"#,
            true,
        );
    }
    out
}

/// The chat-completions dialect, plain or at Azure OpenAI's URLs with its `api-key` header and
/// content-filter answers.
#[derive(Debug)]
pub struct OpenAi {
    /// Azure OpenAI.
    pub azure: bool,
}

/// Azure's content-filter answer to a refused prompt.
fn azure_filtered() -> Response<Body> {
    let filter = json!({
        "hate": {"filtered": false, "severity": "safe"},
        "self_harm": {"filtered": false, "severity": "safe"},
        "sexual": {"filtered": false, "severity": "safe"},
        "violence": {"filtered": true, "severity": "medium"},
        "jailbreak": {"filtered": false, "detected": false},
    });
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.",
            "type": null, "param": "prompt", "code": "content_filter", "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": filter}
        }}),
    )
}

impl crate::dialect::Dialect for OpenAi {
    fn route(&self, path: &str, query: &str) -> crate::dialect::Route {
        // Azure deployment URLs name the deployment: /openai/deployments/{name}/chat/completions.
        let model = path
            .strip_prefix("/openai/deployments/")
            .and_then(|rest| rest.split('/').next())
            .map(crate::dialect::decode_segment);
        crate::dialect::Route {
            model,
            stream: None,
            query: query.to_string(),
        }
    }

    fn authenticate(
        &self,
        provider: &crate::config::SimProvider,
        headers: &HeaderMap,
        _route: &crate::dialect::Route,
        _tokens: &crate::cloud::IssuedTokens,
    ) -> (Option<String>, bool) {
        let key = if self.azure {
            headers
                .get("api-key")
                .and_then(|v| v.to_str().ok())
                .map(|k| k.trim().to_string())
        } else {
            presented_key(headers)
        };
        let ok = crate::dialect::key_matches(provider, key.as_deref());
        (key, ok)
    }

    fn parse(
        &self,
        route: &crate::dialect::Route,
        _headers: &HeaderMap,
        body: &[u8],
        tokenizer: PromptTokenizer,
    ) -> Result<Parsed, Failure> {
        if self.azure && route.model.is_some() && !route.query.contains("api-version=") {
            return Err(Failure::BadRequest(
                "Missing required query parameter: api-version".into(),
            ));
        }
        let mut parsed = parse(body, tokenizer)?;
        if let Some(m) = &route.model {
            parsed.model = m.clone();
        }
        Ok(parsed)
    }

    fn error(&self, failure: &Failure, retry_after_s: Option<u32>) -> Response<Body> {
        if self.azure && *failure == Failure::Refused {
            return azure_filtered();
        }
        error(failure, retry_after_s)
    }

    fn refusal_is_error(&self) -> bool {
        true
    }

    fn reply(&self, ctx: &Ctx<'_>, reply: &Reply) -> Value {
        completion(ctx, reply)
    }

    fn events(&self, ctx: &Ctx<'_>, reply: &Reply, malformed: bool) -> Vec<Event> {
        events(ctx, reply, malformed)
    }

    fn huge_event(&self, n: usize) -> Event {
        let text = "x".repeat(n);
        sse(
            None,
            &json!({"id": "chatcmpl-huge", "object": "chat.completion.chunk", "created": 0, "model": "sim", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]}).to_string(),
            true,
        )
    }

    fn rate_limit_headers(&self, left: &CapacityReading, h: &mut HeaderMap) {
        // As OpenAI documents them; the resets are durations (`1s`, `120ms`, `6m0s`).
        let reset = go_duration(left.reset_in);
        let mut put = |name: &'static str, value: String| {
            h.insert(name, header_value(value));
        };
        put(
            "x-ratelimit-limit-requests",
            left.requests_limit.to_string(),
        );
        put(
            "x-ratelimit-remaining-requests",
            left.requests_remaining.to_string(),
        );
        put("x-ratelimit-reset-requests", reset.clone());
        if let Some((limit, remaining)) = left.tokens {
            put("x-ratelimit-limit-tokens", limit.to_string());
            put("x-ratelimit-remaining-tokens", remaining.to_string());
            put("x-ratelimit-reset-tokens", reset);
        }
    }
}

/// A duration as OpenAI writes its resets: `120ms` below a second, else seconds (`4.5s`).
fn go_duration(d: std::time::Duration) -> String {
    if d < std::time::Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_millis() as f64 / 1000.0)
    }
}
