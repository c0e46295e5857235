//! Google's Gemini API (`{base}/v1beta/models/{model}:generateContent`,
//! `:streamGenerateContent?alt=sse`, key in `x-goog-api-key`) and Gemini on Vertex AI (the same
//! bodies at `{base}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:…`
//! with a bearer access token, see [`crate::auth`]).
//!
//! | normalized | Gemini |
//! |---|---|
//! | `system` / `developer` messages | `systemInstruction.parts[].text` |
//! | user text / image parts | `contents[]` role `user`: `text`, `inlineData` (data URLs), `fileData` (other URLs) |
//! | assistant content, `tool_calls` | role `model`: `text`, `functionCall {name, args}` |
//! | `tool` messages | role `user`: `functionResponse {name, response}` (the name found by `tool_call_id`; a non-object result wrapped as `{"result": …}`) |
//! | `tools`, `tool_choice` | `tools[].functionDeclarations` (schemas reduced to Gemini's OpenAPI subset), `toolConfig.functionCallingConfig` AUTO / NONE / ANY (+ `allowedFunctionNames`) |
//! | `response_format` json_schema / json_object | `responseMimeType: application/json` + `responseSchema` |
//! | `max_tokens`, `temperature`, `top_p`, `top_k`, `stop`, `seed`, penalties, `n` | `generationConfig.maxOutputTokens`, `temperature`, `topP`, `topK`, `stopSequences`, `seed`, `presencePenalty`, `frequencyPenalty`, `candidateCount` |
//! | `reasoning` | `thinkingConfig {thinkingBudget, includeThoughts}` (budget 0 when disabled) |
//!
//! Back: `text` parts → content (`thought: true` parts → reasoning), `functionCall` → tool calls
//! (ids made up, Gemini has none), the first `thoughtSignature` → `reasoning_signature` (as
//! `gemini:SIG`; it goes back on the assistant turn's first function call, or its first part, as
//! Gemini 3 requires for multi-turn tool use), `finishReason` STOP → stop (tool_calls when calls were made),
//! MAX_TOKENS → length; `usageMetadata` promptTokenCount (cached included) /
//! candidatesTokenCount + thoughtsTokenCount / cachedContentTokenCount / thoughtsTokenCount. A
//! stream has no terminal event: it is complete when its body ends after a chunk with a
//! `finishReason`.
//!
//! # Failure classification
//!
//! | Gemini answers | class |
//! |---|---|
//! | `finishReason` SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII, IMAGE_SAFETY; `promptFeedback.blockReason` | `content_policy` |
//! | `RESOURCE_EXHAUSTED` (429) | `rate_limited`, retry after `RetryInfo.retryDelay` (or `Retry-After`) |
//! | `UNAUTHENTICATED`, `PERMISSION_DENIED`, `API_KEY_INVALID` | `upstream_auth` |
//! | `INVALID_ARGUMENT` mentioning the token limit ("exceeds the maximum number of tokens", "input token count") | `context_length_exceeded` |
//! | other `INVALID_ARGUMENT`, `FAILED_PRECONDITION` | `invalid_request` |
//! | `DEADLINE_EXCEEDED` (504) | `timeout` |
//! | `NOT_FOUND`, `INTERNAL`, `UNAVAILABLE`, other statuses | `unavailable` |
//! | `finishReason` MALFORMED_FUNCTION_CALL, a 2xx body without candidates | `unavailable` (malformed) |
//!
//! Embeddings (Gemini API only) go to `:batchEmbedContents`, one request per input with
//! `outputDimensionality`; Gemini reports no token count for them, so the usage is estimated
//! from the text (four characters a token).

use std::collections::HashMap;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Map, Value, json};
use switchyard_core::{
    ChatChunk, ChatRequest, ChatResponse, Choice, Content, ContentPart, Delta, EmbeddingInput,
    EmbeddingRequest, EmbeddingResponse, ErrorClass, FinishReason, Message, ResponseFormat, Role,
    ToolCall, ToolChoice, Usage,
};

use crate::adapter::{
    Chunks, Flow, KeyHeader, StreamDecoder, Turns, WireAdapter, data_url, encode, invalid,
    new_call_id, now_unix, openapi_schema, post_json, with_body, with_key,
};
use crate::error::{Phase, UpstreamError, parse_go_duration, retry_after};
use crate::sse::SseEvent;
use crate::target::Target;

/// How a Gemini thought signature is kept in `reasoning_signature`: prefixed, so that it goes
/// back only to Gemini (and never to Anthropic as a thinking signature).
pub const SIGNATURE_PREFIX: &str = "gemini:";

/// The smallest thinking budget asked for when reasoning is on.
pub const MIN_THINKING_BUDGET: u32 = 128;

/// The Gemini adapter, on the Gemini API or on Vertex AI.
#[derive(Debug, Clone, Copy)]
pub struct Gemini {
    vertex: bool,
}

impl Gemini {
    /// The Gemini API.
    pub const DIRECT: Gemini = Gemini { vertex: false };
    /// Gemini on Vertex AI.
    pub const VERTEX: Gemini = Gemini { vertex: true };

    fn url(&self, target: &Target, action: &str) -> String {
        if self.vertex {
            return crate::anthropic::vertex_url(target, "google", action);
        }
        let model = target
            .upstream_model
            .strip_prefix("models/")
            .unwrap_or(&target.upstream_model);
        format!(
            "{}/v1beta/models/{}:{action}",
            target.base_url,
            crate::adapter::segment(model)
        )
    }

    fn key_header(&self) -> KeyHeader {
        if self.vertex {
            KeyHeader::Bearer
        } else {
            KeyHeader::Named("x-goog-api-key")
        }
    }
}

fn parts_of(content: &Option<Content>) -> Vec<Value> {
    match content {
        None => Vec::new(),
        Some(Content::Text(t)) if t.is_empty() => Vec::new(),
        Some(Content::Text(t)) => vec![json!({"text": t})],
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text { text, .. } if text.is_empty() => None,
                ContentPart::Text { text, .. } => Some(json!({"text": text})),
                ContentPart::ImageUrl { image_url } => Some(match data_url(&image_url.url) {
                    Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
                    None => json!({"fileData": {"fileUri": image_url.url, "mimeType": guess_mime(&image_url.url)}}),
                }),
            })
            .collect(),
    }
}

fn guess_mime(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    if path.ends_with(".png") {
        "image/png"
    } else if path.ends_with(".webp") {
        "image/webp"
    } else if path.ends_with(".gif") {
        "image/gif"
    } else {
        "image/jpeg"
    }
}

/// The `generateContent` body for `req`.
pub fn wire_request(target: &Target, req: &ChatRequest) -> Result<Value, UpstreamError> {
    let mut system: Vec<Value> = Vec::new();
    let mut contents = Turns::default();
    let mut names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => system.extend(parts_of(&m.content)),
            Role::User => contents.push("user", parts_of(&m.content)),
            Role::Assistant => {
                let mut parts = parts_of(&m.content);
                for (j, call) in m.tool_calls.iter().enumerate() {
                    let args = crate::adapter::object_arguments(call, i, j)?;
                    names.insert(call.id.as_str(), call.name.as_str());
                    parts.push(json!({"functionCall": {"name": call.name, "args": args}}));
                }
                if let Some(sig) = m
                    .reasoning_signature
                    .as_deref()
                    .and_then(|s| s.strip_prefix(SIGNATURE_PREFIX))
                {
                    let at = parts
                        .iter()
                        .position(|p| p.get("functionCall").is_some())
                        .unwrap_or(0);
                    if let Some(Value::Object(part)) = parts.get_mut(at) {
                        part.insert("thoughtSignature".into(), json!(sig));
                    }
                }
                contents.push("model", parts);
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().unwrap_or("");
                let Some(name) = names.get(id).copied().or(m.name.as_deref()) else {
                    return Err(invalid(format!(
                        "messages[{i}]: the tool result's tool_call_id names no earlier tool call (Gemini needs the function's name)"
                    )));
                };
                let text = m.text_content();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    Ok(v) => json!({"result": v}),
                    Err(_) => json!({"result": text}),
                };
                contents.push(
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
        }
    }
    if contents.is_empty() {
        return Err(invalid(
            "at least one user or assistant message is required",
        ));
    }
    let mut body = Map::new();
    body.insert("contents".into(), contents.into_json("parts"));
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system}));
    }
    if !req.tools.is_empty() {
        let declarations: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.name, "parameters": openapi_schema(&t.parameters)});
                if let Some(desc) = &t.description {
                    d["description"] = json!(desc);
                }
                d
            })
            .collect();
        body.insert(
            "tools".into(),
            json!([{ "functionDeclarations": declarations }]),
        );
        let config = match &req.tool_choice {
            None | Some(ToolChoice::Auto) => json!({"mode": "AUTO"}),
            Some(ToolChoice::None) => json!({"mode": "NONE"}),
            Some(ToolChoice::Required) => json!({"mode": "ANY"}),
            Some(ToolChoice::Function(name)) => {
                json!({"mode": "ANY", "allowedFunctionNames": [name]})
            }
        };
        body.insert(
            "toolConfig".into(),
            json!({ "functionCallingConfig": config }),
        );
    }
    let mut config = Map::new();
    let max_tokens = req.max_output_tokens().unwrap_or(target.max_output);
    config.insert("maxOutputTokens".into(), json!(max_tokens));
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            config.insert(k.into(), v);
        }
    };
    set("temperature", req.temperature.map(|t| json!(t)));
    set("topP", req.top_p.map(|t| json!(t)));
    set("topK", req.top_k.map(|t| json!(t)));
    set("seed", req.seed.map(|t| json!(t)));
    set("presencePenalty", req.presence_penalty.map(|t| json!(t)));
    set("frequencyPenalty", req.frequency_penalty.map(|t| json!(t)));
    set("candidateCount", req.n.filter(|n| *n > 1).map(|n| json!(n)));
    set(
        "stopSequences",
        (!req.stop.is_empty()).then(|| json!(req.stop)),
    );
    match &req.response_format {
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            set("responseMimeType", Some(json!("application/json")));
            set("responseSchema", Some(openapi_schema(&json_schema.schema)));
        }
        Some(ResponseFormat::JsonObject) => {
            set("responseMimeType", Some(json!("application/json")));
        }
        Some(ResponseFormat::Text) | None => {}
    }
    if let Some(r) = &req.reasoning {
        let thinking = if r.is_on() {
            json!({
                "thinkingBudget": r.budget_tokens(max_tokens, MIN_THINKING_BUDGET).min(max_tokens.saturating_sub(1)),
                "includeThoughts": r.exclude != Some(true),
            })
        } else {
            json!({"thinkingBudget": 0})
        };
        set("thinkingConfig", Some(thinking));
    }
    body.insert("generationConfig".into(), Value::Object(config));
    Ok(Value::Object(body))
}

fn refused(phase: Phase, why: &str) -> UpstreamError {
    UpstreamError::new(
        ErrorClass::ContentPolicy,
        phase,
        format!("upstream refused: {why}"),
    )
}

/// The finish reason of a `finishReason`, or the failure it stands for.
fn finish(reason: &str, phase: Phase) -> Result<FinishReason, UpstreamError> {
    match reason {
        "STOP" | "OTHER" | "FINISH_REASON_UNSPECIFIED" => Ok(FinishReason::Stop),
        "MAX_TOKENS" => Ok(FinishReason::Length),
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => Err(refused(phase, &format!("finishReason {reason}"))),
        other => Err(UpstreamError::malformed(
            phase,
            format!("finishReason {other}"),
        )),
    }
}

/// Usage from `usageMetadata`.
fn usage(meta: &Value) -> Usage {
    let n = |k: &str| u32::try_from(meta[k].as_u64().unwrap_or(0)).unwrap_or(u32::MAX);
    let thoughts = n("thoughtsTokenCount");
    Usage {
        prompt_tokens: n("promptTokenCount"),
        completion_tokens: n("candidatesTokenCount").saturating_add(thoughts),
        cached_prompt_tokens: n("cachedContentTokenCount"),
        reasoning_tokens: thoughts,
        ..Usage::default()
    }
}

/// The whole answer refused before any candidate.
fn blocked(v: &Value, phase: Phase) -> Option<UpstreamError> {
    v["promptFeedback"]["blockReason"]
        .as_str()
        .map(|why| refused(phase, &format!("prompt blocked ({why})")))
}

impl WireAdapter for Gemini {
    fn request(
        &self,
        target: &Target,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<http::Request<Full<Bytes>>, UpstreamError> {
        let body = encode(&wire_request(target, req)?)?;
        let action = if stream {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        let builder = post_json(&self.url(target, action), stream)?;
        with_body(with_key(builder, target, self.key_header())?, body)
    }

    fn parse_response(&self, target: &Target, body: &[u8]) -> Result<ChatResponse, UpstreamError> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| UpstreamError::malformed(Phase::Body, e))?;
        if let Some(e) = blocked(&v, Phase::Body) {
            return Err(e);
        }
        let Some(candidates) = v["candidates"].as_array().filter(|c| !c.is_empty()) else {
            return Err(UpstreamError::malformed(Phase::Body, "no candidates"));
        };
        let mut choices = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            let mut text = String::new();
            let mut reasoning: Option<String> = None;
            let mut tool_calls = Vec::new();
            let mut signature: Option<String> = None;
            for part in c["content"]["parts"].as_array().into_iter().flatten() {
                if signature.is_none()
                    && let Some(sig) = part["thoughtSignature"].as_str()
                {
                    signature = Some(format!("{SIGNATURE_PREFIX}{sig}"));
                }
                if let Some(call) = part.get("functionCall") {
                    tool_calls.push(ToolCall {
                        id: call["id"].as_str().map_or_else(new_call_id, str::to_string),
                        name: call["name"].as_str().unwrap_or("").to_string(),
                        arguments: call
                            .get("args")
                            .map_or_else(|| "{}".into(), Value::to_string),
                    });
                } else if let Some(t) = part["text"].as_str() {
                    if part["thought"].as_bool() == Some(true) {
                        reasoning.get_or_insert_with(String::new).push_str(t);
                    } else {
                        text.push_str(t);
                    }
                }
            }
            let mut reason = match c["finishReason"].as_str() {
                Some(r) => Some(finish(r, Phase::Body)?),
                None => None,
            };
            if !tool_calls.is_empty() && reason == Some(FinishReason::Stop) {
                reason = Some(FinishReason::ToolCalls);
            }
            choices.push(Choice {
                index: c["index"].as_u64().map_or(i as u32, |n| n as u32),
                message: Message {
                    content: (!text.is_empty() || tool_calls.is_empty())
                        .then_some(Content::Text(text)),
                    tool_calls,
                    reasoning,
                    reasoning_signature: signature,
                    ..Message::text(Role::Assistant, "")
                },
                finish_reason: reason,
                extra: Map::new(),
            });
        }
        Ok(ChatResponse {
            id: v["responseId"].as_str().unwrap_or("").to_string(),
            object: "chat.completion".into(),
            created: now_unix(),
            model: v["modelVersion"]
                .as_str()
                .unwrap_or(&target.upstream_model)
                .to_string(),
            provider: Some(target.provider.to_string()),
            choices,
            usage: Some(usage(&v["usageMetadata"])),
            extra: Map::new(),
        })
    }

    fn decoder(&self, target: &Target) -> Box<dyn StreamDecoder> {
        Box::new(Decoder {
            chunks: Chunks::new(target),
            started: false,
            signed: false,
            finish: None,
            tools: 0,
            usage: Usage::default(),
        })
    }

    fn classify(
        &self,
        status: http::StatusCode,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> UpstreamError {
        classify(status.as_u16(), headers, body, Phase::FirstByte)
    }

    fn embed_request(
        &self,
        target: &Target,
        req: &EmbeddingRequest,
    ) -> Result<http::Request<Full<Bytes>>, UpstreamError> {
        let (EmbeddingInput::Text(_) | EmbeddingInput::Texts(_)) = &req.input else {
            return Err(invalid("Gemini embeds text, not token ids"));
        };
        if self.vertex {
            return Err(invalid(
                "embeddings on Vertex AI are not spoken by this adapter",
            ));
        }
        let model = target
            .upstream_model
            .strip_prefix("models/")
            .unwrap_or(&target.upstream_model);
        let requests: Vec<Value> = texts(&req.input)
            .into_iter()
            .map(|t| {
                let mut r = json!({"model": format!("models/{model}"), "content": {"parts": [{"text": t}]}});
                if let Some(d) = req.dimensions {
                    r["outputDimensionality"] = json!(d);
                }
                r
            })
            .collect();
        let builder = post_json(&self.url(target, "batchEmbedContents"), false)?;
        with_body(
            with_key(builder, target, self.key_header())?,
            encode(&json!({ "requests": requests }))?,
        )
    }

    fn parse_embeddings(
        &self,
        target: &Target,
        body: &[u8],
    ) -> Result<EmbeddingResponse, UpstreamError> {
        #[derive(serde::Deserialize)]
        struct Item {
            values: Vec<f32>,
        }
        #[derive(serde::Deserialize)]
        struct Wire {
            embeddings: Vec<Item>,
        }
        let w: Wire =
            serde_json::from_slice(body).map_err(|e| UpstreamError::malformed(Phase::Body, e))?;
        Ok(EmbeddingResponse {
            model: target.upstream_model.clone(),
            provider: Some(target.provider.to_string()),
            data: w.embeddings.into_iter().map(|i| i.values).collect(),
            usage: Usage::default(),
        })
    }
}

fn texts(input: &EmbeddingInput) -> Vec<&str> {
    match input {
        EmbeddingInput::Text(t) => vec![t.as_str()],
        EmbeddingInput::Texts(ts) => ts.iter().map(String::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Estimated prompt tokens of an embeddings request (Gemini reports none).
pub fn estimated_embedding_tokens(input: &EmbeddingInput) -> u32 {
    texts(input)
        .iter()
        .map(|t| switchyard_core::tokens::estimate_text(t))
        .sum()
}

/// Classifies a Gemini error envelope `{"error": {"code", "message", "status", "details"}}`.
pub fn classify(
    status: u16,
    headers: &http::HeaderMap,
    body: &[u8],
    phase: Phase,
) -> UpstreamError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = &v["error"];
    let code = e["status"].as_str().unwrap_or("").to_string();
    let message = e["message"].as_str().unwrap_or("").to_string();
    let reasons: Vec<&str> = e["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["reason"].as_str())
        .collect();
    let lower = message.to_ascii_lowercase();
    let status = if status == 0 {
        e["code"].as_u64().unwrap_or(500) as u16
    } else {
        status
    };
    let class = match code.as_str() {
        "RESOURCE_EXHAUSTED" => ErrorClass::RateLimited,
        "UNAUTHENTICATED" | "PERMISSION_DENIED" => ErrorClass::UpstreamAuth,
        _ if reasons.contains(&"API_KEY_INVALID") || lower.contains("api key not valid") => {
            ErrorClass::UpstreamAuth
        }
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE"
            if lower.contains("exceeds the maximum number of tokens")
                || lower.contains("input token count")
                || lower.contains("too many tokens") =>
        {
            ErrorClass::ContextLengthExceeded
        }
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => ErrorClass::InvalidRequest,
        "DEADLINE_EXCEEDED" => ErrorClass::Timeout,
        "" => match status {
            400 | 422 => ErrorClass::InvalidRequest,
            401 | 403 => ErrorClass::UpstreamAuth,
            408 | 504 => ErrorClass::Timeout,
            429 => ErrorClass::RateLimited,
            _ => ErrorClass::Unavailable,
        },
        _ => ErrorClass::Unavailable,
    };
    let delay = e["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| {
            d["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .and_then(|d| d["retryDelay"].as_str())
        .and_then(parse_go_duration);
    let detail: String = if message.is_empty() {
        "no error message".into()
    } else {
        message.chars().take(300).collect()
    };
    UpstreamError {
        class,
        message: format!("upstream answered {status}: {detail}"),
        status: (phase != Phase::Stream).then_some(status),
        provider_code: (!code.is_empty()).then_some(code),
        retry_after: delay.or_else(|| retry_after(headers, SystemTime::now())),
        phase,
        malformed: false,
    }
}

struct Decoder {
    chunks: Chunks,
    started: bool,
    /// The turn's thought signature was passed on.
    signed: bool,
    finish: Option<FinishReason>,
    tools: u32,
    usage: Usage,
}

impl StreamDecoder for Decoder {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<Flow, UpstreamError> {
        let v: Value = serde_json::from_str(event.data.trim())
            .map_err(|e| UpstreamError::malformed(Phase::Stream, e))?;
        if v.get("error").is_some_and(|e| !e.is_null()) {
            return Err(classify(
                0,
                &http::HeaderMap::new(),
                event.data.as_bytes(),
                Phase::Stream,
            ));
        }
        if let Some(e) = blocked(&v, Phase::Stream) {
            return Err(e);
        }
        if !self.started {
            self.started = true;
            if let Some(id) = v["responseId"].as_str() {
                self.chunks.id = id.to_string();
            }
            if let Some(m) = v["modelVersion"].as_str() {
                self.chunks.model = m.to_string();
            }
            out.push(self.chunks.role());
        }
        if v["usageMetadata"].is_object() {
            self.usage = usage(&v["usageMetadata"]);
        }
        let Some(c) = v["candidates"].as_array().and_then(|c| c.first()) else {
            return Ok(Flow::Continue);
        };
        for part in c["content"]["parts"].as_array().into_iter().flatten() {
            if let Some(sig) = part["thoughtSignature"].as_str()
                && !self.signed
            {
                self.signed = true;
                out.push(self.chunks.chunk(
                    Delta {
                        reasoning_signature: Some(format!("{SIGNATURE_PREFIX}{sig}")),
                        ..Delta::default()
                    },
                    None,
                    None,
                ));
            }
            if let Some(call) = part.get("functionCall") {
                let id = call["id"].as_str().map_or_else(new_call_id, str::to_string);
                let name = call["name"].as_str().unwrap_or("");
                let args = call
                    .get("args")
                    .map_or_else(|| "{}".into(), Value::to_string);
                out.push(self.chunks.tool(self.tools, Some((&id, name)), &args));
                self.tools += 1;
            } else if let Some(t) = part["text"].as_str() {
                if part["thought"].as_bool() == Some(true) {
                    out.push(self.chunks.chunk(
                        Delta {
                            reasoning: Some(t.to_string()),
                            ..Delta::default()
                        },
                        None,
                        None,
                    ));
                } else if !t.is_empty() {
                    out.push(self.chunks.text(t));
                }
            }
        }
        if let Some(r) = c["finishReason"].as_str() {
            let mut f = finish(r, Phase::Stream)?;
            if self.tools > 0 && f == FinishReason::Stop {
                f = FinishReason::ToolCalls;
            }
            self.finish = Some(f);
        }
        Ok(Flow::Continue)
    }

    fn ended(&mut self, out: &mut Vec<ChatChunk>) -> bool {
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
