//! AWS Bedrock's Converse API: `POST {base}/model/{modelId}/converse` and `/converse-stream`
//! (the model id percent-encoded, so inference-profile ARNs work), signed with SigV4 for service
//! `bedrock` in the provider's region (credentials from the environment or the shared
//! credentials file, see [`crate::auth`]), or with `Authorization: Bearer` when the provider has
//! a key (Bedrock API keys). The stream is AWS's binary event stream.
//!
//! | normalized | Converse |
//! |---|---|
//! | `system` / `developer` messages | `system[].text` |
//! | user text / image parts | `messages[]` role `user`: `text`, `image {format, source.bytes}` (data URLs only) |
//! | assistant content, `tool_calls` | role `assistant`: `text`, `toolUse {toolUseId, name, input}` |
//! | `tool` messages | role `user`: `toolResult {toolUseId, content: [json | text]}` |
//! | `tools`, `tool_choice` auto / required / function / none | `toolConfig.tools[].toolSpec {name, description, inputSchema.json}`, `toolChoice` auto / any / tool (none: tools left out unless the history uses them) |
//! | `response_format` json_schema / json_object | a forced tool whose input schema is the schema; its input comes back as the content (not combinable with tools) |
//! | `max_tokens`, `temperature`, `top_p`, `stop` | `inferenceConfig.maxTokens`, `temperature`, `topP`, `stopSequences` |
//! | seed, penalties, logprobs, logit bias, top_k, reasoning, parallel_tool_calls | not carried: the planner leaves Bedrock endpoints out (`missing_parameter`) |
//!
//! Back: `text` → content, `reasoningContent.reasoningText` → reasoning (its signature kept),
//! `toolUse` → tool calls; `stopReason` end_turn / stop_sequence → stop, max_tokens → length,
//! tool_use → tool_calls; usage `inputTokens` + cache reads + cache writes / `outputTokens`.
//! Stream events: messageStart, contentBlockStart (toolUse), contentBlockDelta (text, toolUse
//! input, reasoningContent), contentBlockStop, messageStop (stopReason), metadata (usage), the
//! terminal event.
//!
//! # Failure classification
//!
//! The exception type comes from `x-amzn-ErrorType` (or the body's `__type`; in a stream, the
//! exception message's `:exception-type`).
//!
//! | Bedrock answers | class |
//! |---|---|
//! | ThrottlingException, ServiceQuotaExceededException | `rate_limited` (+ Retry-After) |
//! | ServiceUnavailableException, ModelNotReadyException, InternalServerException, ModelErrorException, ModelStreamErrorException, ResourceNotFoundException | `unavailable` |
//! | ModelTimeoutException, 408, 504 | `timeout` |
//! | AccessDeniedException, UnrecognizedClientException, ExpiredTokenException, InvalidSignatureException, 401, 403 | `upstream_auth` |
//! | ValidationException saying the input is too long (or the context window is exceeded) | `context_length_exceeded` |
//! | other ValidationException, 400 | `invalid_request` |
//! | `stopReason` guardrail_intervened, content_filtered | `content_policy` |

use std::collections::HashMap;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Map, Value, json};
use switchyard_core::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, Delta, ErrorClass, FinishReason,
    Message, ResponseFormat, Role, ToolCall, ToolChoice, Usage,
};

use crate::adapter::{
    Chunks, Flow, Framing, KeyHeader, StreamDecoder, Turns, WireAdapter, data_url, encode, invalid,
    post_json, with_body, with_key,
};
use crate::error::{Phase, UpstreamError, retry_after};
use crate::sse::SseEvent;
use crate::target::Target;

/// The SigV4 service name of the Bedrock runtime.
pub const SERVICE: &str = "bedrock";

/// The Bedrock Converse adapter.
#[derive(Debug, Clone, Copy)]
pub struct Bedrock;

fn image_block(url: &str) -> Result<Value, UpstreamError> {
    let Some((mime, data)) = data_url(url) else {
        return Err(invalid(
            "Bedrock takes images as data URLs (base64), not links",
        ));
    };
    let format = mime.strip_prefix("image/").unwrap_or(mime);
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

fn blocks_of(content: &Option<Content>) -> Result<Vec<Value>, UpstreamError> {
    Ok(match content {
        None => Vec::new(),
        Some(Content::Text(t)) if t.is_empty() => Vec::new(),
        Some(Content::Text(t)) => vec![json!({"text": t})],
        Some(Content::Parts(parts)) => {
            let mut out = Vec::new();
            for p in parts {
                match p {
                    ContentPart::Text { text, .. } if text.is_empty() => {}
                    ContentPart::Text { text, .. } => out.push(json!({"text": text})),
                    ContentPart::ImageUrl { image_url } => out.push(image_block(&image_url.url)?),
                }
            }
            out
        }
    })
}

/// The forced tool that carries a structured-output schema; a name no client tool is expected
/// to have, since a reply is read without its request.
pub const SCHEMA_TOOL: &str = "switchyard_structured_output";

/// The structured-output schema of `req`, if any.
fn structured(req: &ChatRequest) -> Option<Value> {
    match &req.response_format {
        Some(ResponseFormat::JsonSchema { json_schema }) => Some(json_schema.schema.clone()),
        Some(ResponseFormat::JsonObject) => Some(json!({"type": "object"})),
        Some(ResponseFormat::Text) | None => None,
    }
}

/// The Converse body for `req`.
pub fn wire_request(target: &Target, req: &ChatRequest) -> Result<Value, UpstreamError> {
    let mut system = Vec::new();
    let mut messages = Turns::default();
    let mut tool_blocks = false;
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => system.extend(blocks_of(&m.content)?),
            Role::User => messages.push("user", blocks_of(&m.content)?),
            Role::Assistant => {
                let mut blocks = blocks_of(&m.content)?;
                for (j, call) in m.tool_calls.iter().enumerate() {
                    let input = crate::adapter::object_arguments(call, i, j)?;
                    tool_blocks = true;
                    blocks.push(json!({"toolUse": {"toolUseId": call.id, "name": call.name, "input": input}}));
                }
                messages.push("assistant", blocks);
            }
            Role::Tool => {
                let Some(id) = &m.tool_call_id else {
                    return Err(invalid(format!(
                        "messages[{i}]: a tool message needs tool_call_id"
                    )));
                };
                tool_blocks = true;
                let text = m.text_content();
                let content = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => json!([{ "json": v }]),
                    _ => json!([{ "text": text }]),
                };
                messages.push(
                    "user",
                    vec![json!({"toolResult": {"toolUseId": id, "content": content}})],
                );
            }
        }
    }
    if messages.is_empty() {
        return Err(invalid(
            "at least one user or assistant message is required",
        ));
    }
    let mut body = Map::new();
    body.insert("messages".into(), messages.into_json("content"));
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    let mut inference = Map::new();
    inference.insert(
        "maxTokens".into(),
        json!(req.max_output_tokens().unwrap_or(target.max_output)),
    );
    if let Some(t) = req.temperature {
        inference.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        inference.insert("topP".into(), json!(p));
    }
    if !req.stop.is_empty() {
        inference.insert("stopSequences".into(), json!(req.stop));
    }
    body.insert("inferenceConfig".into(), Value::Object(inference));

    let spec = |name: &str, description: Option<&str>, schema: &Value| {
        let mut s = json!({"name": name, "inputSchema": {"json": schema}});
        if let Some(d) = description {
            s["description"] = json!(d);
        }
        json!({ "toolSpec": s })
    };
    if let Some(schema) = structured(req) {
        if !req.tools.is_empty() {
            return Err(invalid(
                "structured output goes to Bedrock as a forced tool and cannot be combined with tools",
            ));
        }
        body.insert(
            "toolConfig".into(),
            json!({
                "tools": [spec(SCHEMA_TOOL, Some("Respond with JSON matching this schema."), &schema)],
                "toolChoice": {"tool": {"name": SCHEMA_TOOL}},
            }),
        );
    } else if !req.tools.is_empty() && (req.tool_choice != Some(ToolChoice::None) || tool_blocks) {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| spec(&t.name, t.description.as_deref(), &t.parameters))
            .collect();
        let choice = match &req.tool_choice {
            None | Some(ToolChoice::Auto | ToolChoice::None) => json!({"auto": {}}),
            Some(ToolChoice::Required) => json!({"any": {}}),
            Some(ToolChoice::Function(name)) => json!({"tool": {"name": name}}),
        };
        body.insert(
            "toolConfig".into(),
            json!({"tools": tools, "toolChoice": choice}),
        );
    }
    Ok(Value::Object(body))
}

/// The request before signing (with the bearer header when the provider has a key), and its body.
fn unsigned_request(
    target: &Target,
    req: &ChatRequest,
    stream: bool,
) -> Result<(http::Request<Full<Bytes>>, Vec<u8>), UpstreamError> {
    let body = encode(&wire_request(target, req)?)?;
    let model = crate::adapter::segment(&target.upstream_model);
    let action = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    let url = format!("{}/model/{model}/{action}", target.base_url);
    let mut builder = post_json(&url, false)?;
    if stream {
        builder = builder.header(http::header::ACCEPT, "application/vnd.amazon.eventstream");
    }
    let builder = with_key(builder, target, KeyHeader::Bearer)?;
    Ok((with_body(builder, body.clone())?, body))
}

/// The request signed with SigV4 for `credentials` at `time` (host, date, body hash and session
/// token signed).
pub fn signed_request(
    target: &Target,
    req: &ChatRequest,
    stream: bool,
    credentials: &aws_credential_types::Credentials,
    time: SystemTime,
) -> Result<http::Request<Full<Bytes>>, UpstreamError> {
    let (mut request, body) = unsigned_request(target, req, stream)?;
    if let Some(host) = request.uri().authority().map(|a| a.to_string())
        && let Ok(v) = http::HeaderValue::from_str(&host)
    {
        request.headers_mut().insert(http::header::HOST, v);
    }
    let region = target
        .options
        .aws_region
        .as_deref()
        .ok_or_else(|| invalid("the Bedrock provider has no signing region"))?;
    crate::auth::sign_v4(
        &mut request,
        &body,
        credentials,
        region,
        SERVICE,
        time,
        true,
    )?;
    Ok(request)
}

/// `finish_reason` of a `stopReason`, or the failure it stands for.
fn finish(reason: &str, phase: Phase) -> Result<FinishReason, UpstreamError> {
    match reason {
        "end_turn" | "stop_sequence" => Ok(FinishReason::Stop),
        "max_tokens" => Ok(FinishReason::Length),
        "tool_use" => Ok(FinishReason::ToolCalls),
        "guardrail_intervened" | "content_filtered" => Err(UpstreamError::new(
            ErrorClass::ContentPolicy,
            phase,
            format!("upstream refused: stopReason {reason}"),
        )),
        "model_context_window_exceeded" => Err(UpstreamError::new(
            ErrorClass::ContextLengthExceeded,
            phase,
            "the model's context window was exceeded",
        )),
        _ => Ok(FinishReason::Stop),
    }
}

fn usage(u: &Value) -> Usage {
    let n = |k: &str| u32::try_from(u[k].as_u64().unwrap_or(0)).unwrap_or(u32::MAX);
    Usage {
        prompt_tokens: n("inputTokens")
            .saturating_add(n("cacheReadInputTokens"))
            .saturating_add(n("cacheWriteInputTokens")),
        completion_tokens: n("outputTokens"),
        cached_prompt_tokens: n("cacheReadInputTokens"),
        cache_write_prompt_tokens: n("cacheWriteInputTokens"),
        ..Usage::default()
    }
}

impl WireAdapter for Bedrock {
    fn request(
        &self,
        target: &Target,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<http::Request<Full<Bytes>>, UpstreamError> {
        if target.key.is_some() {
            return unsigned_request(target, req, stream).map(|(r, _)| r);
        }
        let credentials = crate::auth::aws_credentials(target.options.aws_profile.as_deref())?;
        signed_request(target, req, stream, &credentials, SystemTime::now())
    }

    fn parse_response(&self, target: &Target, body: &[u8]) -> Result<ChatResponse, UpstreamError> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| UpstreamError::malformed(Phase::Body, e))?;
        let Some(blocks) = v["output"]["message"]["content"].as_array() else {
            return Err(UpstreamError::malformed(Phase::Body, "no output message"));
        };
        let mut reason = finish(v["stopReason"].as_str().unwrap_or("end_turn"), Phase::Body)?;
        let mut text = String::new();
        let mut reasoning: Option<String> = None;
        let mut signature = None;
        let mut tool_calls = Vec::new();
        for b in blocks {
            if let Some(t) = b["text"].as_str() {
                text.push_str(t);
            } else if let Some(r) = b.get("reasoningContent") {
                if let Some(t) = r["reasoningText"]["text"].as_str() {
                    reasoning.get_or_insert_with(String::new).push_str(t);
                }
                if let Some(s) = r["reasoningText"]["signature"].as_str() {
                    signature = Some(s.to_string());
                }
            } else if let Some(u) = b.get("toolUse") {
                tool_calls.push(ToolCall {
                    id: u["toolUseId"].as_str().unwrap_or("").to_string(),
                    name: u["name"].as_str().unwrap_or("").to_string(),
                    arguments: u.get("input").map_or_else(|| "{}".into(), Value::to_string),
                });
            }
        }
        // Structured output came back as the forced tool's input.
        if let Some(pos) = tool_calls.iter().position(|c| c.name == SCHEMA_TOOL) {
            text = tool_calls.remove(pos).arguments;
            reason = FinishReason::Stop;
        }
        let message = Message {
            content: (!text.is_empty() || tool_calls.is_empty()).then_some(Content::Text(text)),
            tool_calls,
            reasoning,
            reasoning_signature: signature,
            ..Message::text(Role::Assistant, "")
        };
        Ok(crate::adapter::completion(
            String::new(),
            target.upstream_model.clone(),
            target,
            message,
            Some(reason),
            usage(&v["usage"]),
        ))
    }

    fn decoder(&self, target: &Target) -> Box<dyn StreamDecoder> {
        Box::new(Decoder {
            chunks: Chunks::new(target),
            started: false,
            tools: HashMap::new(),
            schema_block: None,
            finish: None,
            usage: Usage::default(),
        })
    }

    fn framing(&self) -> Framing {
        Framing::AwsEventStream
    }

    fn classify(
        &self,
        status: http::StatusCode,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> UpstreamError {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let kind = headers
            .get("x-amzn-errortype")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| v["__type"].as_str().map(str::to_string))
            .unwrap_or_default();
        // `ThrottlingException:http://internal.amazon.com/...` or `com.amazon...#ThrottlingException`.
        let kind = kind.split(':').next().unwrap_or("");
        let kind = kind.rsplit('#').next().unwrap_or(kind).to_string();
        let message = v["message"]
            .as_str()
            .or(v["Message"].as_str())
            .unwrap_or("")
            .to_string();
        let mut e = classify_exception(&kind, &message, Some(status.as_u16()), Phase::FirstByte);
        e.retry_after = retry_after(headers, SystemTime::now());
        e
    }
}

/// Classifies a Bedrock exception by its type and message.
pub fn classify_exception(
    kind: &str,
    message: &str,
    status: Option<u16>,
    phase: Phase,
) -> UpstreamError {
    let lower = message.to_ascii_lowercase();
    let class = match kind {
        "ThrottlingException" | "ServiceQuotaExceededException" => ErrorClass::RateLimited,
        "ServiceUnavailableException"
        | "ModelNotReadyException"
        | "InternalServerException"
        | "ModelErrorException"
        | "ModelStreamErrorException"
        | "ResourceNotFoundException" => ErrorClass::Unavailable,
        "ModelTimeoutException" => ErrorClass::Timeout,
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "ExpiredTokenException"
        | "InvalidSignatureException"
        | "IncompleteSignatureException" => ErrorClass::UpstreamAuth,
        "ValidationException"
            if lower.contains("too long")
                || lower.contains("context window")
                || lower.contains("too many input tokens") =>
        {
            ErrorClass::ContextLengthExceeded
        }
        "ValidationException" => ErrorClass::InvalidRequest,
        _ => match status {
            Some(400 | 422) => ErrorClass::InvalidRequest,
            Some(401 | 403) => ErrorClass::UpstreamAuth,
            Some(408 | 504) => ErrorClass::Timeout,
            Some(429) => ErrorClass::RateLimited,
            _ => ErrorClass::Unavailable,
        },
    };
    let detail: String = if message.is_empty() {
        "no error message".into()
    } else {
        message.chars().take(300).collect()
    };
    let what = if kind.is_empty() { "an error" } else { kind };
    UpstreamError {
        class,
        message: match status {
            Some(s) => format!("upstream answered {s} {what}: {detail}"),
            None => format!("upstream stream {what}: {detail}"),
        },
        status,
        provider_code: (!kind.is_empty()).then(|| kind.to_string()),
        retry_after: None,
        phase,
        malformed: false,
    }
}

struct Decoder {
    chunks: Chunks,
    started: bool,
    /// Content-block index → tool-call index.
    tools: HashMap<u64, u32>,
    /// The content block carrying the structured-output tool's input.
    schema_block: Option<u64>,
    finish: Option<FinishReason>,
    usage: Usage,
}

impl StreamDecoder for Decoder {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<Flow, UpstreamError> {
        if let Some(kind) = event
            .event
            .strip_prefix("exception:")
            .or_else(|| event.event.strip_prefix("error:"))
        {
            let v: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
            let kind = kind[..1].to_ascii_uppercase() + &kind[1..];
            return Err(classify_exception(
                &kind,
                v["message"].as_str().unwrap_or(""),
                None,
                Phase::Stream,
            ));
        }
        let v: Value = serde_json::from_str(&event.data)
            .map_err(|e| UpstreamError::malformed(Phase::Stream, e))?;
        if !self.started {
            self.started = true;
            out.push(self.chunks.role());
        }
        let block = v["contentBlockIndex"].as_u64().unwrap_or(0);
        match event.event.as_str() {
            "messageStart" => {}
            "contentBlockStart" => {
                if let Some(t) = v["start"].get("toolUse") {
                    let name = t["name"].as_str().unwrap_or("");
                    if name == SCHEMA_TOOL {
                        self.schema_block = Some(block);
                        return Ok(Flow::Continue);
                    }
                    let index = self.tools.len() as u32;
                    self.tools.insert(block, index);
                    let id = t["toolUseId"].as_str().unwrap_or("");
                    out.push(self.chunks.tool(index, Some((id, name)), ""));
                }
            }
            "contentBlockDelta" => {
                let d = &v["delta"];
                if let Some(t) = d["text"].as_str() {
                    out.push(self.chunks.text(t));
                } else if let Some(input) = d["toolUse"]["input"].as_str() {
                    if self.schema_block == Some(block) {
                        out.push(self.chunks.text(input));
                    } else if let Some(index) = self.tools.get(&block) {
                        out.push(self.chunks.tool(*index, None, input));
                    } else {
                        return Err(UpstreamError::malformed(
                            Phase::Stream,
                            "toolUse input for a block that is not a tool use",
                        ));
                    }
                } else if let Some(r) = d.get("reasoningContent") {
                    out.push(self.chunks.chunk(
                        Delta {
                            reasoning: r["text"].as_str().map(str::to_string),
                            reasoning_signature: r["signature"].as_str().map(str::to_string),
                            ..Delta::default()
                        },
                        None,
                        None,
                    ));
                }
            }
            "contentBlockStop" => {}
            "messageStop" => {
                let mut f = finish(
                    v["stopReason"].as_str().unwrap_or("end_turn"),
                    Phase::Stream,
                )?;
                if self.schema_block.is_some() && f == FinishReason::ToolCalls {
                    f = FinishReason::Stop;
                }
                self.finish = Some(f);
            }
            "metadata" => {
                self.usage = usage(&v["usage"]);
                let finish = self.finish.unwrap_or(FinishReason::Stop);
                out.push(
                    self.chunks
                        .chunk(Delta::default(), Some(finish), Some(self.usage)),
                );
                return Ok(Flow::Done);
            }
            // Event types added later carry nothing we forward.
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn ended(&mut self, out: &mut Vec<ChatChunk>) -> bool {
        // messageStop without its metadata: the answer is whole, its usage unknown.
        let Some(f) = self.finish else {
            return false;
        };
        out.push(
            self.chunks
                .chunk(Delta::default(), Some(f), Some(self.usage)),
        );
        true
    }
}
