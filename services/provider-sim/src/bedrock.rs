//! AWS Bedrock's Converse API as documented: `POST /model/{modelId}/converse` and
//! `/converse-stream`, SigV4-signed (shape checked, see [`crate::cloud`]) or with a Bedrock API
//! key as a bearer token; `messages` / `system` / `inferenceConfig` / `toolConfig` bodies;
//! replies with `output.message`, `stopReason` and `usage`; streams in AWS's binary event stream
//! (messageStart, contentBlockStart, contentBlockDelta, contentBlockStop, messageStop,
//! metadata); refusals as `stopReason: content_filtered`; errors with `x-amzn-ErrorType` and
//! `{"message"}` (ThrottlingException 429, ValidationException "Input is too long for requested
//! model.", ServiceUnavailableException, ModelNotReadyException, …).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use serde_json::{Value, json};
use switchyard_core::tokens::{PER_MESSAGE_OVERHEAD, estimate_text};

use crate::config::SimProvider;
use crate::dialect::{Dialect, Route, decode_segment};
use crate::generate::{Finish, Parsed, Reply};
use crate::tokens::PromptTokenizer;
use crate::wire::{Ctx, Event, Failure, json_response, retry_after_for, with_retry_after};

/// The Converse dialect.
#[derive(Debug)]
pub struct Bedrock;

/// One event-stream message as a stream event.
fn message(event_type: &str, payload: &Value, content: bool) -> Event {
    Event {
        bytes: Bytes::from(encode(event_type, false, payload.to_string().as_bytes())),
        content,
    }
}

/// Encodes an event-stream message (`:message-type` event or exception).
pub fn encode(event_type: &str, exception: bool, payload: &[u8]) -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header, HeaderValue as H, Message};
    let kind = if exception { "exception" } else { "event" };
    let name = if exception {
        ":exception-type"
    } else {
        ":event-type"
    };
    let m = Message::new(Bytes::copy_from_slice(payload))
        .add_header(Header::new(":message-type", H::String(kind.into())))
        .add_header(Header::new(name, H::String(event_type.to_string().into())))
        .add_header(Header::new(
            ":content-type",
            H::String("application/json".into()),
        ));
    let mut out = Vec::new();
    let _ = aws_smithy_eventstream::frame::write_message_to(&m, &mut out);
    out
}

fn text_of(blocks: &Value) -> String {
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            if let Some(t) = b["text"].as_str() {
                t.to_string()
            } else if let Some(u) = b.get("toolUse") {
                u["input"].to_string()
            } else if let Some(r) = b.get("toolResult") {
                r["content"].to_string()
            } else {
                String::new()
            }
        })
        .collect()
}

/// Parses a Converse body.
pub fn parse(route: &Route, body: &[u8], tokenizer: PromptTokenizer) -> Result<Parsed, Failure> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Failure::BadRequest(format!("Malformed input request: {e}")))?;
    let Some(messages) = v["messages"].as_array().filter(|m| !m.is_empty()) else {
        return Err(Failure::BadRequest(
            "A conversation must start with a user message.".into(),
        ));
    };
    if messages[0]["role"] != "user" {
        return Err(Failure::BadRequest(
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.".into(),
        ));
    }
    let mut texts = vec![text_of(&v["system"])];
    texts.extend(messages.iter().map(|m| text_of(&m["content"])));
    let tools: Vec<&Value> = v["toolConfig"]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("toolSpec"))
        .collect();
    let tools_text: String = tools
        .iter()
        .map(|t| {
            format!(
                "{}{}",
                t["name"].as_str().unwrap_or(""),
                t["inputSchema"]["json"]
            )
        })
        .collect();
    let uses_tools = messages
        .iter()
        .flat_map(|m| m["content"].as_array().into_iter().flatten())
        .any(|b| b.get("toolUse").is_some() || b.get("toolResult").is_some());
    if uses_tools && tools.is_empty() {
        return Err(Failure::BadRequest(
            "The toolConfig field must be defined when using toolUse and toolResult content blocks."
                .into(),
        ));
    }
    let prompt_tokens = match tokenizer {
        PromptTokenizer::Estimate => {
            let mut n = 3 + PER_MESSAGE_OVERHEAD * messages.len() as u32;
            for t in &texts {
                n = n.saturating_add(estimate_text(t));
            }
            n.saturating_add(estimate_text(&tools_text))
        }
        PromptTokenizer::O200k => {
            crate::tokens::chat_framed(texts.iter().map(|t| ("user", None, t.clone())), &tools_text)
        }
    };
    let choice = &v["toolConfig"]["toolChoice"];
    // With the choice left to the model, a conversation ending in a tool's result is answered.
    let answered = messages
        .last()
        .and_then(|m| m["content"].as_array())
        .is_some_and(|c| c.iter().any(|b| b.get("toolResult").is_some()));
    let tool = match choice["tool"]["name"].as_str() {
        Some(name) => tools.iter().find(|t| t["name"] == name).copied(),
        None if answered && choice.get("any").is_none() => None,
        None => tools.first().copied(),
    }
    .map(|t| {
        (
            t["name"].as_str().unwrap_or("").to_string(),
            t["inputSchema"]["json"].clone(),
        )
    });
    Ok(Parsed {
        model: route.model.clone().unwrap_or_default(),
        stream: route.stream.unwrap_or(false),
        include_usage: true,
        max_tokens: v["inferenceConfig"]["maxTokens"].as_u64().map(|n| n as u32),
        prompt_text: texts.join("\n"),
        prompt_tokens,
        tools: tools.len(),
        tool,
        json: None,
        reasoning: false,
        prefill: None,
    })
}

fn stop_reason(reply: &Reply) -> &'static str {
    match reply {
        Reply::Text {
            finish: Finish::Length,
            ..
        } => "max_tokens",
        Reply::Text { .. } => "end_turn",
        Reply::Tool { .. } => "tool_use",
        Reply::Refusal => "content_filtered",
    }
}

fn usage(ctx: &Ctx<'_>, reply: &Reply) -> Value {
    let out = reply.completion_tokens();
    json!({"inputTokens": ctx.parsed.prompt_tokens, "outputTokens": out, "totalTokens": ctx.parsed.prompt_tokens + out})
}

impl Dialect for Bedrock {
    fn route(&self, path: &str, query: &str) -> Route {
        let mut route = Route {
            query: query.to_string(),
            ..Route::default()
        };
        if let Some(rest) = path.strip_prefix("/model/")
            && let Some((model, action)) = rest.rsplit_once('/')
        {
            route.model = Some(decode_segment(model));
            route.stream = Some(action == "converse-stream");
        }
        route
    }

    fn authenticate(
        &self,
        provider: &SimProvider,
        headers: &HeaderMap,
        _route: &Route,
        _tokens: &crate::cloud::IssuedTokens,
    ) -> (Option<String>, bool) {
        if let Some(token) = crate::cloud::bearer(headers) {
            let ok = crate::dialect::key_matches(provider, Some(&token));
            return (Some(token), ok);
        }
        match crate::cloud::check_sigv4(headers) {
            Ok(sig) => {
                let region_ok = provider
                    .aws_region
                    .as_deref()
                    .is_none_or(|r| r == sig.region);
                let ok = region_ok
                    && sig.service == "bedrock"
                    && crate::dialect::key_matches(provider, Some(&sig.access_key));
                if !ok {
                    tracing::debug!(region = %sig.region, service = %sig.service, "SigV4 scope refused");
                }
                (Some(sig.access_key), ok)
            }
            Err(why) => {
                tracing::debug!(%why, "SigV4 signature refused");
                (None, false)
            }
        }
    }

    fn parse(
        &self,
        route: &Route,
        _headers: &HeaderMap,
        body: &[u8],
        tokenizer: PromptTokenizer,
    ) -> Result<Parsed, Failure> {
        parse(route, body, tokenizer)
    }

    fn error(&self, failure: &Failure, retry_after_s: Option<u32>) -> Response<Body> {
        let (status, kind, message) = match failure {
            Failure::BadRequest(msg) => (400, "ValidationException", msg.clone()),
            Failure::Unauthorized | Failure::Injected(401) => (
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.".into(),
            ),
            Failure::ModelNotFound(_) => (
                404,
                "ResourceNotFoundException",
                "Could not resolve the foundation model from the provided model identifier.".into(),
            ),
            Failure::RateLimited(_) | Failure::Injected(429) => (
                429,
                "ThrottlingException",
                "Too many requests, please wait before trying again.".into(),
            ),
            Failure::ContextLength { .. } => (
                400,
                "ValidationException",
                "Input is too long for requested model.".into(),
            ),
            Failure::Refused | Failure::Injected(400) => (
                400,
                "ValidationException",
                "Malformed input request, please reformat your input and try again.".into(),
            ),
            Failure::Injected(503 | 502) => (
                503,
                "ServiceUnavailableException",
                "Bedrock is unable to process your request.".into(),
            ),
            Failure::Injected(529) => (
                429,
                "ModelNotReadyException",
                "Model is not ready for inference.".into(),
            ),
            Failure::Injected(504) => (
                408,
                "ModelTimeoutException",
                "Model has timed out in processing the request.".into(),
            ),
            Failure::Injected(s) => (
                *s,
                "InternalServerException",
                "The server encountered an internal error.".into(),
            ),
        };
        let http = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = json_response(http, &json!({ "message": message }));
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"
        )) {
            resp.headers_mut().insert("x-amzn-errortype", v);
        }
        with_retry_after(resp, retry_after_for(failure, retry_after_s))
    }

    fn reply(&self, ctx: &Ctx<'_>, reply: &Reply) -> Value {
        let content = match reply {
            Reply::Text { pieces, .. } => json!([{ "text": pieces.concat() }]),
            Reply::Tool {
                id, name, input, ..
            } => {
                json!([{"toolUse": {"toolUseId": id.replace("call_", "tooluse_"), "name": name, "input": input}}])
            }
            Reply::Refusal => json!([]),
        };
        json!({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop_reason(reply),
            "usage": usage(ctx, reply),
            "metrics": {"latencyMs": 1},
        })
    }

    fn events(&self, ctx: &Ctx<'_>, reply: &Reply, malformed: bool) -> Vec<Event> {
        let mut out = vec![message(
            "messageStart",
            &json!({"role": "assistant", "p": "abcd"}),
            false,
        )];
        match reply {
            Reply::Text { pieces, .. } => {
                for piece in pieces {
                    out.push(message(
                        "contentBlockDelta",
                        &json!({"contentBlockIndex": 0, "delta": {"text": piece}, "p": "abcdefgh"}),
                        true,
                    ));
                }
                out.push(message(
                    "contentBlockStop",
                    &json!({"contentBlockIndex": 0}),
                    false,
                ));
            }
            Reply::Tool {
                id,
                name,
                arguments,
                ..
            } => {
                out.push(message(
                    "contentBlockStart",
                    &json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": id.replace("call_", "tooluse_"), "name": name}}}),
                    true,
                ));
                for piece in crate::generate::split_pieces(arguments) {
                    out.push(message(
                        "contentBlockDelta",
                        &json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}}),
                        true,
                    ));
                }
                out.push(message(
                    "contentBlockStop",
                    &json!({"contentBlockIndex": 0}),
                    false,
                ));
            }
            Reply::Refusal => {}
        }
        out.push(message(
            "messageStop",
            &json!({"stopReason": stop_reason(reply)}),
            false,
        ));
        out.push(message(
            "metadata",
            &json!({"usage": usage(ctx, reply), "metrics": {"latencyMs": 1}}),
            false,
        ));
        if malformed && out.len() > 1 {
            out[1] = Event {
                bytes: Bytes::from(encode(
                    "contentBlockDelta",
                    false,
                    br#"{"contentBlockIndex": 0, "delta": {"te"#,
                )),
                content: true,
            };
        }
        out
    }

    fn huge_event(&self, n: usize) -> Event {
        message(
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": "x".repeat(n)}}),
            true,
        )
    }

    fn stream_content_type(&self) -> &'static str {
        "application/vnd.amazon.eventstream"
    }

    fn broken_event(&self) -> Event {
        Event {
            bytes: Bytes::from(encode("contentBlockDelta", false, br#"{"delta": {"te"#)),
            content: false,
        }
    }
}
