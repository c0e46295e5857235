//! The Anthropic Messages format. Mapping from the normalized (OpenAI-shaped) request:
//!
//! | normalized | Messages API |
//! |---|---|
//! | `system` / `developer` messages | top-level `system` (joined; as blocks when a part carries `cache_control`) |
//! | user content parts | `text` / `image` blocks (data URLs become base64 sources; a text part's `cache_control` kept) |
//! | assistant `tool_calls` | `tool_use` blocks (`arguments` must be a JSON object) |
//! | `tool` messages | `tool_result` blocks in a user turn (consecutive ones merged) |
//! | `tools`, `tool_choice` none/auto/required/function | `tools` (`input_schema`), `tool_choice` none/auto/any/tool |
//! | `parallel_tool_calls: false` | `tool_choice.disable_parallel_tool_use` |
//! | `response_format` json_schema / json_object | `output_format` json_schema (object schema for json_object) |
//! | `max_tokens` (required upstream) | `max_tokens`, else the endpoint's max output |
//! | `stop`, `temperature`, `top_p`, `top_k`, `user` | `stop_sequences`, `temperature`, `top_p`, `top_k`, `metadata.user_id` |
//! | `reasoning` (max_tokens, or effort as a share of max_tokens) | `thinking` enabled with `budget_tokens` (at least 1,024) |
//! | `seed`, penalties, logprobs, logit bias | not expressible: the planner leaves Anthropic-format endpoints out of requests that use them (`missing_parameter`), so nothing is dropped |
//!
//! | assistant `reasoning` with `reasoning_signature` | a leading `thinking` block (reasoning without Anthropic's signature is left out) |
//!
//! Back: `text` blocks → content, `thinking` → `reasoning` (its signature kept, streamed as
//! `thinking_delta` / `signature_delta`), `tool_use` → tool calls (input serialized as arguments),
//! `stop_reason` end_turn/stop_sequence → stop, max_tokens → length, tool_use → tool_calls,
//! refusal → a `content_policy` error; usage input (+ cache reads and writes, both also counted
//! apart) / output tokens.
//!
//! **On Vertex AI** the same body goes to
//! `{base}/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:rawPredict`
//! (`:streamRawPredict` for a stream) without `model` and with `anthropic_version:
//! vertex-2023-10-16`, authorized by a bearer access token (see [`crate::auth`]); replies,
//! streams and errors are Anthropic's.

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::Full;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchyard_core::response::FunctionDelta;
use switchyard_core::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, Delta, ErrorClass, FinishReason,
    Message, ResponseFormat, Role, ToolCall, ToolCallDelta, ToolChoice, Usage,
};

use crate::adapter::{
    Flow, KeyHeader, StreamDecoder, Turns, WireAdapter, post_json, with_body, with_key,
};
use crate::error::{Phase, UpstreamError, classify_stream_error};
use crate::sse::SseEvent;
use crate::target::Target;

/// The API version every request declares.
pub const API_VERSION: &str = "2023-06-01";
/// The beta that enables `output_format` (structured outputs).
pub const STRUCTURED_OUTPUTS_BETA: &str = "structured-outputs-2025-11-13";

/// The smallest thinking budget the Messages API accepts.
pub const MIN_THINKING_BUDGET: u32 = 1_024;

/// The `anthropic_version` of requests to Anthropic's models on Vertex AI.
pub const VERTEX_VERSION: &str = "vertex-2023-10-16";

/// The Anthropic-format adapter, direct or on Vertex AI.
#[derive(Debug, Clone, Copy)]
pub struct Anthropic {
    vertex: bool,
}

impl Anthropic {
    /// Anthropic's own API.
    pub const DIRECT: Anthropic = Anthropic { vertex: false };
    /// Anthropic's models on Vertex AI.
    pub const VERTEX: Anthropic = Anthropic { vertex: true };
}

/// A Vertex AI publisher-model URL: `{base}/v1/projects/{p}/locations/{l}/publishers/{publisher}/models/{model}:{action}`.
pub(crate) fn vertex_url(target: &Target, publisher: &str, action: &str) -> String {
    let enc = |s: &str| crate::adapter::segment(s);
    let opt = |o: &Option<String>| enc(o.as_deref().unwrap_or(""));
    format!(
        "{}/v1/projects/{}/locations/{}/publishers/{publisher}/models/{}:{action}",
        target.base_url,
        opt(&target.options.project),
        opt(&target.options.location),
        enc(&target.upstream_model),
    )
}

fn invalid(message: impl Into<String>) -> UpstreamError {
    UpstreamError::new(ErrorClass::InvalidRequest, Phase::Connect, message)
}

fn text_block(text: &str, cache_control: Option<&Value>) -> Value {
    let mut block = json!({"type": "text", "text": text});
    if let Some(c) = cache_control {
        block["cache_control"] = c.clone();
    }
    block
}

fn content_blocks(content: &Option<Content>) -> Vec<Value> {
    match content {
        None => Vec::new(),
        Some(Content::Text(t)) if t.is_empty() => Vec::new(),
        Some(Content::Text(t)) => vec![text_block(t, None)],
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text { text, .. } if text.is_empty() => None,
                ContentPart::Text {
                    text,
                    cache_control,
                } => Some(text_block(text, cache_control.as_ref())),
                ContentPart::ImageUrl { image_url } => Some(image_block(&image_url.url)),
            })
            .collect(),
    }
}

/// Whether any text part of the system messages marks a cache breakpoint (the system prompt
/// then goes as blocks, so the breakpoint stays where the client put it).
fn cached_system(req: &ChatRequest) -> bool {
    req.messages
        .iter()
        .filter(|m| matches!(m.role, Role::System | Role::Developer))
        .any(|m| {
            matches!(&m.content, Some(Content::Parts(parts)) if parts.iter().any(|p| matches!(p, ContentPart::Text { cache_control: Some(_), .. })))
        })
}

fn image_block(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
        && let Some(media_type) = meta.strip_suffix(";base64")
    {
        return json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}});
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}

/// The Messages body for `req`.
pub fn wire_request(
    target: &Target,
    req: &ChatRequest,
    stream: bool,
) -> Result<Value, UpstreamError> {
    let mut system: Vec<String> = Vec::new();
    let mut messages = Turns::default();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => system.push(m.text_content()),
            Role::User => messages.push("user", content_blocks(&m.content)),
            Role::Assistant => {
                // Earlier reasoning goes back as the thinking block it came as; reasoning without
                // Anthropic's signature (from another provider) cannot, and stays out.
                let mut blocks = match (&m.reasoning, &m.reasoning_signature) {
                    (Some(r), Some(sig)) if !sig.starts_with(crate::gemini::SIGNATURE_PREFIX) => {
                        vec![json!({"type": "thinking", "thinking": r, "signature": sig})]
                    }
                    _ => Vec::new(),
                };
                blocks.extend(content_blocks(&m.content));
                for (j, call) in m.tool_calls.iter().enumerate() {
                    let input = crate::adapter::object_arguments(call, i, j)?;
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input}));
                }
                messages.push("assistant", blocks);
            }
            Role::Tool => {
                let Some(id) = &m.tool_call_id else {
                    return Err(invalid(format!(
                        "messages[{i}]: a tool message needs tool_call_id"
                    )));
                };
                messages.push(
                    "user",
                    vec![
                        json!({"type": "tool_result", "tool_use_id": id, "content": m.text_content()}),
                    ],
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
    body.insert("model".into(), json!(target.upstream_model));
    body.insert(
        "max_tokens".into(),
        json!(req.max_output_tokens().unwrap_or(target.max_output)),
    );
    let system: Vec<String> = system.into_iter().filter(|s| !s.is_empty()).collect();
    if cached_system(req) {
        let blocks: Vec<Value> = req
            .messages
            .iter()
            .filter(|m| matches!(m.role, Role::System | Role::Developer))
            .flat_map(|m| content_blocks(&m.content))
            .collect();
        body.insert("system".into(), Value::Array(blocks));
    } else if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    body.insert("messages".into(), messages.into_json("content"));
    if stream {
        body.insert("stream".into(), json!(true));
    }
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(k) = req.top_k {
        body.insert("top_k".into(), json!(k));
    }
    if let Some(r) = req.reasoning.as_ref().filter(|r| r.is_on()) {
        let max_tokens = req.max_output_tokens().unwrap_or(target.max_output);
        // Anthropic's floor is 1,024 thinking tokens, and the budget must stay under max_tokens.
        let budget = r
            .budget_tokens(max_tokens, MIN_THINKING_BUDGET)
            .min(max_tokens.saturating_sub(1));
        body.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    }
    if !req.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(req.stop));
    }
    if let Some(user) = &req.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut tool = json!({"name": t.name, "input_schema": t.parameters});
                if let Some(d) = &t.description {
                    tool["description"] = json!(d);
                }
                tool
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        let mut choice = match &req.tool_choice {
            None | Some(ToolChoice::Auto) => json!({"type": "auto"}),
            Some(ToolChoice::None) => json!({"type": "none"}),
            Some(ToolChoice::Required) => json!({"type": "any"}),
            Some(ToolChoice::Function(name)) => json!({"type": "tool", "name": name}),
        };
        if req.parallel_tool_calls == Some(false) && choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = json!(true);
        }
        body.insert("tool_choice".into(), choice);
    }
    match &req.response_format {
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            body.insert(
                "output_format".into(),
                json!({"type": "json_schema", "schema": json_schema.schema}),
            );
        }
        Some(ResponseFormat::JsonObject) => {
            body.insert(
                "output_format".into(),
                json!({"type": "json_schema", "schema": {"type": "object"}}),
            );
        }
        Some(ResponseFormat::Text) | None => {}
    }
    Ok(Value::Object(body))
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u32,
    #[serde(default)]
    output_tokens: u32,
    #[serde(default)]
    cache_read_input_tokens: Option<u32>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u32>,
}

impl WireUsage {
    /// Anthropic counts cache reads and writes apart from `input_tokens`; all are prompt tokens.
    fn prompt(&self) -> u32 {
        self.input_tokens
            .saturating_add(self.cache_read_input_tokens.unwrap_or(0))
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
    }

    fn normalized(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt(),
            completion_tokens: self.output_tokens,
            cached_prompt_tokens: self.cache_read_input_tokens.unwrap_or(0),
            cache_write_prompt_tokens: self.cache_creation_input_tokens.unwrap_or(0),
            ..Usage::default()
        }
    }
}

#[derive(Deserialize)]
struct WireMessage {
    id: String,
    model: String,
    content: Vec<Value>,
    stop_reason: Option<String>,
    usage: WireUsage,
}

fn finish(stop_reason: Option<&str>) -> Result<Option<FinishReason>, String> {
    Ok(match stop_reason {
        Some("end_turn" | "stop_sequence" | "pause_turn") => Some(FinishReason::Stop),
        Some("max_tokens") => Some(FinishReason::Length),
        Some("tool_use") => Some(FinishReason::ToolCalls),
        Some("refusal") => return Err("stop_reason refusal".into()),
        Some(_) | None => None,
    })
}

fn refused(phase: Phase, why: &str) -> UpstreamError {
    UpstreamError::new(
        ErrorClass::ContentPolicy,
        phase,
        format!("upstream refused: {why}"),
    )
}

impl WireAdapter for Anthropic {
    fn request(
        &self,
        target: &Target,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<http::Request<Full<Bytes>>, UpstreamError> {
        let mut body = wire_request(target, req, stream)?;
        let structured = body.get("output_format").is_some();
        let mut builder = if self.vertex {
            if let Some(map) = body.as_object_mut() {
                map.remove("model");
                map.insert("anthropic_version".into(), json!(VERTEX_VERSION));
            }
            let action = if stream {
                "streamRawPredict"
            } else {
                "rawPredict"
            };
            post_json(&vertex_url(target, "anthropic", action), stream)?
        } else {
            post_json(&format!("{}/v1/messages", target.base_url), stream)?
                .header("anthropic-version", API_VERSION)
        };
        if structured {
            builder = builder.header("anthropic-beta", STRUCTURED_OUTPUTS_BETA);
        }
        let how = if self.vertex {
            KeyHeader::Bearer
        } else {
            KeyHeader::Named("x-api-key")
        };
        with_body(
            with_key(builder, target, how)?,
            crate::adapter::encode(&body)?,
        )
    }

    fn parse_response(&self, target: &Target, body: &[u8]) -> Result<ChatResponse, UpstreamError> {
        let m: WireMessage =
            serde_json::from_slice(body).map_err(|e| UpstreamError::malformed(Phase::Body, e))?;
        let finish_reason =
            finish(m.stop_reason.as_deref()).map_err(|why| refused(Phase::Body, &why))?;
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        let mut reasoning: Option<String> = None;
        let mut signature: Option<String> = None;
        for block in &m.content {
            match block["type"].as_str() {
                Some("text") => text.push_str(block["text"].as_str().unwrap_or("")),
                Some("thinking") => {
                    reasoning
                        .get_or_insert_with(String::new)
                        .push_str(block["thinking"].as_str().unwrap_or(""));
                    if let Some(sig) = block["signature"].as_str() {
                        signature = Some(sig.to_string());
                    }
                }
                Some("tool_use") => tool_calls.push(ToolCall {
                    id: block["id"].as_str().unwrap_or("").to_string(),
                    name: block["name"].as_str().unwrap_or("").to_string(),
                    arguments: block
                        .get("input")
                        .map(Value::to_string)
                        .unwrap_or_else(|| "{}".into()),
                }),
                _ => {}
            }
        }
        let message = Message {
            content: (!text.is_empty() || tool_calls.is_empty()).then_some(Content::Text(text)),
            tool_calls,
            reasoning,
            reasoning_signature: signature,
            ..Message::text(Role::Assistant, "")
        };
        Ok(crate::adapter::completion(
            m.id,
            m.model,
            target,
            message,
            finish_reason,
            m.usage.normalized(),
        ))
    }

    fn decoder(&self, target: &Target) -> Box<dyn StreamDecoder> {
        Box::new(Decoder {
            chunks: crate::adapter::Chunks::new(target),
            usage: Usage::default(),
            finish: None,
            refusal: false,
            tool_index: HashMap::new(),
        })
    }
}

struct Decoder {
    chunks: crate::adapter::Chunks,
    usage: Usage,
    finish: Option<FinishReason>,
    refusal: bool,
    /// Content-block index → tool-call index.
    tool_index: HashMap<u64, u32>,
}

impl StreamDecoder for Decoder {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<Flow, UpstreamError> {
        let malformed = |e: serde_json::Error| UpstreamError::malformed(Phase::Stream, e);
        let v: Value = serde_json::from_str(&event.data).map_err(malformed)?;
        let kind = v["type"].as_str().unwrap_or(event.event.as_str());
        match kind {
            "message_start" => {
                let m = &v["message"];
                self.chunks.id = m["id"].as_str().unwrap_or("").to_string();
                if let Some(model) = m["model"].as_str() {
                    self.chunks.model = model.to_string();
                }
                if let Ok(u) = serde_json::from_value::<WireUsage>(m["usage"].clone()) {
                    self.usage = u.normalized();
                }
                out.push(self.chunks.chunk(
                    Delta {
                        role: Some(Role::Assistant),
                        ..Delta::default()
                    },
                    None,
                    None,
                ));
            }
            "content_block_start" => {
                let block = &v["content_block"];
                match block["type"].as_str() {
                    Some("tool_use") => {
                        let index = self.tool_index.len() as u32;
                        self.tool_index
                            .insert(v["index"].as_u64().unwrap_or(0), index);
                        let delta = ToolCallDelta {
                            index,
                            id: block["id"].as_str().map(str::to_string),
                            kind: Some("function".into()),
                            function: FunctionDelta {
                                name: block["name"].as_str().map(str::to_string),
                                arguments: Some(String::new()),
                            },
                        };
                        out.push(self.chunks.chunk(
                            Delta {
                                tool_calls: vec![delta],
                                ..Delta::default()
                            },
                            None,
                            None,
                        ));
                    }
                    Some("text") => {
                        if let Some(t) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(self.chunks.chunk(
                                Delta {
                                    content: Some(t.to_string()),
                                    ..Delta::default()
                                },
                                None,
                                None,
                            ));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => out.push(self.chunks.chunk(
                        Delta {
                            content: Some(d["text"].as_str().unwrap_or("").to_string()),
                            ..Delta::default()
                        },
                        None,
                        None,
                    )),
                    Some("input_json_delta") => {
                        let block = v["index"].as_u64().unwrap_or(0);
                        let Some(index) = self.tool_index.get(&block).copied() else {
                            return Err(UpstreamError::malformed(
                                Phase::Stream,
                                "input_json_delta for a block that is not a tool_use",
                            ));
                        };
                        out.push(self.chunks.chunk(
                            Delta {
                                tool_calls: vec![ToolCallDelta {
                                    index,
                                    id: None,
                                    kind: None,
                                    function: FunctionDelta {
                                        name: None,
                                        arguments: Some(
                                            d["partial_json"].as_str().unwrap_or("").to_string(),
                                        ),
                                    },
                                }],
                                ..Delta::default()
                            },
                            None,
                            None,
                        ));
                    }
                    Some("thinking_delta") => out.push(self.chunks.chunk(
                        Delta {
                            reasoning: Some(d["thinking"].as_str().unwrap_or("").to_string()),
                            ..Delta::default()
                        },
                        None,
                        None,
                    )),
                    Some("signature_delta") => out.push(self.chunks.chunk(
                        Delta {
                            reasoning_signature: Some(
                                d["signature"].as_str().unwrap_or("").to_string(),
                            ),
                            ..Delta::default()
                        },
                        None,
                        None,
                    )),
                    // Delta kinds added later carry nothing we forward.
                    _ => {}
                }
            }
            "message_delta" => {
                match finish(v["delta"]["stop_reason"].as_str()) {
                    Ok(f) => self.finish = f,
                    Err(_) => self.refusal = true,
                }
                if let Some(n) = v["usage"]["output_tokens"].as_u64() {
                    self.usage.completion_tokens = u32::try_from(n).unwrap_or(u32::MAX);
                }
            }
            "message_stop" => {
                if self.refusal {
                    return Err(refused(Phase::Stream, "stop_reason refusal"));
                }
                out.push(
                    self.chunks
                        .chunk(Delta::default(), self.finish, Some(self.usage)),
                );
                return Ok(Flow::Done);
            }
            "error" => return Err(classify_stream_error(event.data.as_bytes())),
            // ping, content_block_stop and event types added later.
            _ => {}
        }
        Ok(Flow::Continue)
    }

    /// The body closed after `message_delta` carried the stop reason but before
    /// `message_stop`: the answer is whole (a refusal still is not an answer).
    fn ended(&mut self, out: &mut Vec<ChatChunk>) -> bool {
        let Some(f) = self.finish.filter(|_| !self.refusal) else {
            return false;
        };
        out.push(
            self.chunks
                .chunk(Delta::default(), Some(f), Some(self.usage)),
        );
        true
    }
}
