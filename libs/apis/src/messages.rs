//! Anthropic's Messages API as a client-facing API: the request (`POST /v1/messages`) translated
//! to the normalized chat request, the normalized reply and stream translated back to a Messages
//! reply and its SSE event sequence, and errors in Anthropic's envelope.
//!
//! | Messages request | normalized |
//! |---|---|
//! | `system` (string or text blocks) | a `system` message (blocks as text parts) |
//! | user `text` / `image` blocks (base64 or url source) | user content parts (base64 as a data URL) |
//! | user `tool_result` blocks (string or text blocks) | `tool` messages, in order, before the turn's other content |
//! | assistant `text` / `tool_use` blocks | assistant content / `tool_calls` (input serialized as arguments) |
//! | `tools` (custom: name, description, input_schema) | function `tools` (`parameters`) |
//! | `tool_choice` auto / any / tool / none, `disable_parallel_tool_use` | `tool_choice` auto / required / function / none, `parallel_tool_calls: false` |
//! | `max_tokens` (required) | `max_tokens` |
//! | `stop_sequences`, `temperature`, `top_p`, `top_k`, `metadata.user_id` | `stop`, `temperature`, `top_p`, `top_k`, `user` |
//! | `thinking` enabled with `budget_tokens` | `reasoning.max_tokens` |
//! | assistant `thinking` blocks (with `signature`) | the message's `reasoning` (and `reasoning_signature`) |
//! | `models`, `provider`, `workflow` (Switchyard's routing fields) | the same |
//!
//! `cache_control` on system and text blocks is kept on the normalized text parts and sent on
//! to Anthropic-format upstreams (OpenAI-format ones cache by themselves). Accepted but not
//! forwarded: `cache_control` on images, tool results and tools (a caching hint that changes
//! cost, never the answer), redacted-thinking blocks of earlier assistant turns, and a tool
//! result's `is_error` flag (the normalized form has no such flag; the text goes as is).
//! Refused with a 400 naming the field: server tools (web search, code execution, …), images
//! inside a tool result, block types the API does not define, and any unknown field.
//!
//! | normalized reply | Messages reply |
//! |---|---|
//! | reasoning (with its signature) | a leading `thinking` block (streamed as `thinking_delta`, `signature_delta`) |
//! | content, tool calls | a `text` block, then `tool_use` blocks (arguments parsed as the input) |
//! | finish stop / length / tool_calls / content_filter | stop_reason end_turn / max_tokens / tool_use / refusal |
//! | usage prompt (cached, cache writes) / completion | usage input_tokens (without either) + cache_read_input_tokens + cache_creation_input_tokens / output_tokens |
//!
//! A stream becomes `message_start`, `ping`, then for each text run or tool call a
//! `content_block_start`, its `content_block_delta`s (`text_delta` / `input_json_delta`) and a
//! `content_block_stop`, then `message_delta` with the stop reason and usage and `message_stop`.
//! A failure after the first event is an `error` event, never a `message_stop`.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchyard_core::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, Error, ErrorClass, FinishReason,
    ImageUrl, Message, ProviderPreferences, Reasoning, Role, Tool, ToolCall, ToolChoice, Usage,
};

/// A Messages request as sent (`POST /v1/messages`); `count_tokens` takes the same body without
/// `max_tokens`. Unknown fields are refused, as Anthropic's API does.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesRequest {
    /// The model.
    #[serde(default)]
    pub model: String,
    /// Switchyard: model fallbacks in order of preference.
    #[serde(default)]
    pub models: Vec<String>,
    /// The conversation.
    pub messages: Vec<InMessage>,
    /// The output cap; required by `POST /v1/messages`.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Instructions: a string or text blocks.
    #[serde(default)]
    pub system: Option<System>,
    /// Stop sequences.
    #[serde(default)]
    pub stop_sequences: Vec<String>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Top-k sampling.
    #[serde(default)]
    pub top_k: Option<u32>,
    /// The end user.
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// Tools the model may call.
    #[serde(default)]
    pub tools: Vec<InTool>,
    /// Whether and which tool the model must call.
    #[serde(default)]
    pub tool_choice: Option<InToolChoice>,
    /// Extended thinking.
    #[serde(default)]
    pub thinking: Option<Thinking>,
    /// Stream server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Switchyard: provider routing controls.
    #[serde(default)]
    pub provider: Option<ProviderPreferences>,
    /// Switchyard: the workflow to run under.
    #[serde(default)]
    pub workflow: Option<String>,
}

/// A string or a list of blocks, as `system`, message content and tool results take. Read by
/// hand rather than as an untagged enum, so that an error inside a block names its path and
/// cause instead of "did not match any variant".
#[derive(Debug, Clone)]
pub enum TextOr<T> {
    /// Plain text.
    Text(String),
    /// Blocks.
    Blocks(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for TextOr<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = TextOr<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of content blocks")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextOr::Text(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(TextOr::Text(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(TextOr::Blocks)
            }
        }
        deserializer.deserialize_any(Visit(std::marker::PhantomData))
    }
}

/// `system`: a string or text blocks.
pub type System = TextOr<TextBlock>;

/// Message content: a string or blocks.
pub type InContent = TextOr<Block>;

/// A text block of `system`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextBlock {
    /// Always `text`.
    #[serde(rename = "type")]
    pub kind: TextKind,
    /// The text.
    pub text: String,
    /// A prompt-caching breakpoint (sent on to Anthropic-format upstreams).
    #[serde(default)]
    pub cache_control: Option<Value>,
}

/// The only block type `system` takes.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextKind {
    /// `text`.
    Text,
}

/// `metadata`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// An opaque end-user id.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// One message.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InMessage {
    /// `user` or `assistant`.
    pub role: InRole,
    /// A string or blocks.
    pub content: InContent,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InRole {
    /// The end user (and tool results).
    User,
    /// The model.
    Assistant,
}

/// A content block.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// Text.
    Text {
        /// The text.
        text: String,
        /// A prompt-caching breakpoint (sent on to Anthropic-format upstreams).
        #[serde(default)]
        cache_control: Option<Value>,
        /// Accepted, not forwarded.
        #[serde(default)]
        citations: Option<Value>,
    },
    /// An image.
    Image {
        /// base64 data or a URL.
        source: ImageSource,
        /// Accepted, not forwarded.
        #[serde(default)]
        cache_control: Option<Value>,
    },
    /// A tool call by the model.
    ToolUse {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments.
        input: Value,
        /// Accepted, not forwarded.
        #[serde(default)]
        cache_control: Option<Value>,
    },
    /// A tool's result.
    ToolResult {
        /// The call it answers.
        tool_use_id: String,
        /// The result: a string or text blocks.
        #[serde(default)]
        content: Option<InContent>,
        /// The tool failed (accepted; the text goes as is).
        #[serde(default)]
        is_error: Option<bool>,
        /// Accepted, not forwarded.
        #[serde(default)]
        cache_control: Option<Value>,
    },
    /// Earlier reasoning (sent back to Anthropic-format upstreams with its signature).
    Thinking {
        /// The reasoning text.
        thinking: String,
        /// Its signature.
        #[serde(default)]
        signature: Option<String>,
    },
    /// Earlier redacted reasoning (accepted, not forwarded).
    RedactedThinking {
        /// Opaque data.
        data: String,
    },
}

/// Where an image comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    /// Inline data.
    Base64 {
        /// `image/png`, …
        media_type: String,
        /// The bytes, base64.
        data: String,
    },
    /// A URL.
    Url {
        /// The image URL.
        url: String,
    },
}

/// A tool definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InTool {
    /// `custom` or absent for a client tool; anything else is a server tool.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Tool name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// JSON Schema of the input.
    #[serde(default)]
    pub input_schema: Option<Value>,
    /// Accepted, not forwarded.
    #[serde(default)]
    pub cache_control: Option<Value>,
}

/// `tool_choice`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InToolChoice {
    /// `auto`, `any`, `tool` or `none`.
    #[serde(rename = "type")]
    pub kind: ChoiceKind,
    /// The tool, for `tool`.
    #[serde(default)]
    pub name: Option<String>,
    /// At most one tool call.
    #[serde(default)]
    pub disable_parallel_tool_use: Option<bool>,
}

/// The kinds of `tool_choice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChoiceKind {
    /// The model decides.
    Auto,
    /// Some tool must be called.
    Any,
    /// This tool must be called.
    Tool,
    /// No tool.
    None,
}

/// `thinking`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thinking {
    /// `enabled` or `disabled`.
    #[serde(rename = "type")]
    pub kind: ThinkingKind,
    /// The reasoning budget, when enabled.
    #[serde(default)]
    pub budget_tokens: Option<u32>,
}

/// Extended thinking on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThinkingKind {
    /// On, with a budget.
    Enabled,
    /// Off.
    Disabled,
}

fn image_url(source: &ImageSource) -> ContentPart {
    let url = match source {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url { url } => url.clone(),
    };
    ContentPart::ImageUrl {
        image_url: ImageUrl { url, detail: None },
    }
}

/// A tool result's text; images are refused (the normalized tool message carries text only).
fn tool_result_text(content: &Option<InContent>, at: &str) -> Result<String, Error> {
    Ok(match content {
        None => String::new(),
        Some(TextOr::Text(t)) => t.clone(),
        Some(TextOr::Blocks(blocks)) => {
            let mut text = String::new();
            for (k, b) in blocks.iter().enumerate() {
                match b {
                    Block::Text { text: t, .. } => text.push_str(t),
                    _ => {
                        return Err(Error::invalid(format!(
                            "{at}.content[{k}]: only text blocks are supported inside a tool_result"
                        )));
                    }
                }
            }
            text
        }
    })
}

fn user_turn(blocks: &[Block], i: usize, out: &mut Vec<Message>) -> Result<(), Error> {
    let mut parts: Vec<ContentPart> = Vec::new();
    let flush = |parts: &mut Vec<ContentPart>, out: &mut Vec<Message>| {
        if !parts.is_empty() {
            out.push(Message {
                content: Some(Content::Parts(std::mem::take(parts))),
                ..Message::text(Role::User, "")
            });
        }
    };
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        match b {
            Block::Text {
                text,
                cache_control,
                ..
            } => parts.push(ContentPart::Text {
                text: text.clone(),
                cache_control: cache_control.clone(),
            }),
            Block::Image { source, .. } => parts.push(image_url(source)),
            Block::ToolResult {
                tool_use_id,
                content,
                ..
            } => {
                flush(&mut parts, out);
                out.push(Message {
                    tool_call_id: Some(tool_use_id.clone()),
                    ..Message::text(Role::Tool, tool_result_text(content, &at)?)
                });
            }
            Block::ToolUse { .. } => {
                return Err(Error::invalid(format!(
                    "{at}: tool_use blocks belong in assistant messages"
                )));
            }
            Block::Thinking { .. } | Block::RedactedThinking { .. } => {
                return Err(Error::invalid(format!(
                    "{at}: thinking blocks belong in assistant messages"
                )));
            }
        }
    }
    flush(&mut parts, out);
    Ok(())
}

fn assistant_turn(blocks: &[Block], i: usize) -> Result<Message, Error> {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    let mut reasoning: Option<String> = None;
    let mut reasoning_signature = None;
    for (j, b) in blocks.iter().enumerate() {
        match b {
            Block::Thinking {
                thinking,
                signature,
            } => {
                reasoning.get_or_insert_with(String::new).push_str(thinking);
                if signature.is_some() {
                    reasoning_signature = signature.clone();
                }
            }
            Block::Text { text: t, .. } => text.push_str(t),
            Block::ToolUse {
                id, name, input, ..
            } => tool_calls.push(ToolCall {
                id: id.clone(),
                name: name.clone(),
                arguments: input.to_string(),
            }),
            Block::RedactedThinking { .. } => {}
            Block::Image { .. } | Block::ToolResult { .. } => {
                return Err(Error::invalid(format!(
                    "messages[{i}].content[{j}]: an assistant message holds text, tool_use and thinking blocks only"
                )));
            }
        }
    }
    Ok(Message {
        content: (!text.is_empty() || tool_calls.is_empty()).then_some(Content::Text(text)),
        tool_calls,
        reasoning,
        reasoning_signature,
        ..Message::text(Role::Assistant, "")
    })
}

impl MessagesRequest {
    /// The normalized chat request; `POST /v1/messages` requires `max_tokens`.
    pub fn to_chat(&self, require_max_tokens: bool) -> Result<ChatRequest, Error> {
        if require_max_tokens && self.max_tokens.is_none() {
            return Err(Error::invalid("max_tokens: field required"));
        }
        if self.model.is_empty() && self.models.is_empty() {
            return Err(Error::invalid("model: field required"));
        }
        let mut messages = Vec::with_capacity(self.messages.len() + 1);
        match &self.system {
            None => {}
            Some(TextOr::Text(t)) if t.is_empty() => {}
            Some(TextOr::Text(t)) => messages.push(Message::text(Role::System, t.clone())),
            Some(TextOr::Blocks(blocks)) if blocks.is_empty() => {}
            Some(TextOr::Blocks(blocks)) => messages.push(Message {
                content: Some(Content::Parts(
                    blocks
                        .iter()
                        .map(|b| ContentPart::Text {
                            text: b.text.clone(),
                            cache_control: b.cache_control.clone(),
                        })
                        .collect(),
                )),
                ..Message::text(Role::System, "")
            }),
        }
        if self.messages.is_empty() {
            return Err(Error::invalid("messages: at least one message is required"));
        }
        for (i, m) in self.messages.iter().enumerate() {
            match (m.role, &m.content) {
                (InRole::User, TextOr::Text(t)) => {
                    messages.push(Message::text(Role::User, t.clone()))
                }
                (InRole::Assistant, TextOr::Text(t)) => {
                    messages.push(Message::text(Role::Assistant, t.clone()))
                }
                (InRole::User, TextOr::Blocks(blocks)) => user_turn(blocks, i, &mut messages)?,
                (InRole::Assistant, TextOr::Blocks(blocks)) => {
                    messages.push(assistant_turn(blocks, i)?)
                }
            }
        }
        let mut tools = Vec::with_capacity(self.tools.len());
        for (i, t) in self.tools.iter().enumerate() {
            if let Some(kind) = t.kind.as_deref().filter(|k| *k != "custom") {
                return Err(Error::invalid(format!(
                    "tools[{i}].type: `{kind}` is a server tool, which this gateway does not run; only client tools (with input_schema) are supported"
                )));
            }
            let Some(schema) = &t.input_schema else {
                return Err(Error::invalid(format!(
                    "tools[{i}].input_schema: field required"
                )));
            };
            tools.push(Tool {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: schema.clone(),
                strict: None,
            });
        }
        let mut tool_choice = None;
        let mut parallel_tool_calls = None;
        if let Some(c) = &self.tool_choice {
            tool_choice = Some(match c.kind {
                ChoiceKind::Auto => ToolChoice::Auto,
                ChoiceKind::Any => ToolChoice::Required,
                ChoiceKind::None => ToolChoice::None,
                ChoiceKind::Tool => match &c.name {
                    Some(name) => ToolChoice::Function(name.clone()),
                    None => {
                        return Err(Error::invalid(
                            "tool_choice.name: field required for tool_choice type `tool`",
                        ));
                    }
                },
            });
            if c.disable_parallel_tool_use == Some(true) {
                parallel_tool_calls = Some(false);
            }
        }
        let reasoning = match &self.thinking {
            Some(Thinking {
                kind: ThinkingKind::Enabled,
                budget_tokens,
            }) => Some(Reasoning {
                max_tokens: *budget_tokens,
                ..Reasoning::default()
            }),
            _ => None,
        };
        Ok(ChatRequest {
            model: self.model.clone(),
            models: self.models.clone(),
            messages,
            tools,
            tool_choice,
            parallel_tool_calls,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            reasoning,
            stop: self.stop_sequences.clone(),
            user: self.metadata.as_ref().and_then(|m| m.user_id.clone()),
            stream: self.stream,
            provider: self.provider.clone(),
            workflow: self.workflow.clone(),
            ..ChatRequest::default()
        })
    }
}

/// A Messages id for a request id.
pub fn message_id(request_id: &str) -> String {
    format!("msg_{}", request_id.trim_start_matches("req_"))
}

/// The Messages `stop_reason` of a finish reason.
pub fn stop_reason(finish: Option<FinishReason>) -> Value {
    match finish {
        Some(FinishReason::Stop) => json!("end_turn"),
        Some(FinishReason::Length) => json!("max_tokens"),
        Some(FinishReason::ToolCalls) => json!("tool_use"),
        Some(FinishReason::ContentFilter) => json!("refusal"),
        None => Value::Null,
    }
}

/// Usage in the Messages shape: input tokens without the cache reads, which are apart.
pub fn usage_json(u: &Usage) -> Value {
    let mut v = json!({
        "input_tokens": u.prompt_tokens.saturating_sub(u.cached_prompt_tokens).saturating_sub(u.cache_write_prompt_tokens),
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_prompt_tokens,
        "cache_creation_input_tokens": u.cache_write_prompt_tokens,
    });
    if let Some(cost) = u.cost {
        v["cost"] = json!(cost);
    }
    v
}

/// A tool call's input: its arguments as JSON, or the text as a string when it is not JSON (a
/// reply passed on under `on_invalid: return` is marked by its routing validation).
fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_string()))
}

/// A normalized reply as a Messages reply, with `id`.
pub fn message_json(resp: &ChatResponse, id: &str) -> Value {
    let choice = resp.choices.first();
    let mut content = Vec::new();
    if let Some(c) = choice {
        if let Some(r) = &c.message.reasoning {
            content.push(json!({"type": "thinking", "thinking": r,
                                "signature": c.message.reasoning_signature.clone().unwrap_or_default()}));
        }
        let text = c.message.text_content();
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        for call in &c.message.tool_calls {
            content.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input(&call.arguments)}));
        }
    }
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": resp.model,
        "content": content,
        "stop_reason": stop_reason(choice.and_then(|c| c.finish_reason)),
        "stop_sequence": null,
        "usage": usage_json(&resp.usage.unwrap_or_default()),
    })
}

/// Anthropic's error type and HTTP status for an error class.
pub fn error_type(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::InvalidRequest | ErrorClass::ContextLengthExceeded => "invalid_request_error",
        ErrorClass::Unauthenticated => "authentication_error",
        ErrorClass::BudgetExceeded => "billing_error",
        ErrorClass::LimitExceeded => "rate_limit_error",
        ErrorClass::ForbiddenByPolicy | ErrorClass::ContentPolicy => "permission_error",
        ErrorClass::RateLimited => "rate_limit_error",
        ErrorClass::Timeout => "timeout_error",
        ErrorClass::NoEligibleRoute | ErrorClass::Unavailable => "overloaded_error",
        ErrorClass::UpstreamAuth | ErrorClass::Internal => "api_error",
    }
}

/// The error envelope: `{"type": "error", "error": {"type", "message"}}`, with Switchyard's
/// class and metadata beside them.
pub fn error_json(e: &Error) -> Value {
    let mut metadata = e.metadata.clone();
    if let Some(after) = e.retry_after {
        metadata.insert("retry_after_s".into(), json!(after.as_secs_f64().ceil()));
    }
    envelope(error_type(e.class), &e.message, e.class.as_str(), metadata)
}

/// An envelope for a refusal that has no [`Error`] (the HTTP guard's): `kind` is Anthropic's
/// error type.
pub fn envelope(kind: &str, message: &str, code: &str, metadata: Map<String, Value>) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message, "code": code, "metadata": metadata}})
}

/// One server-sent event: its name and data.
pub type Event = (&'static str, Value);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(u32),
    Tool(u32),
    Thinking(u32),
}

/// Turns a normalized stream into the Messages event sequence.
#[derive(Debug)]
pub struct StreamEncoder {
    id: String,
    model: String,
    started: bool,
    open: Option<Open>,
    next_block: u32,
    /// Tool-call index → its block index.
    tool_blocks: Vec<(u32, u32)>,
    finish: Option<FinishReason>,
    prompt_estimate: u32,
}

impl StreamEncoder {
    /// An encoder for the stream of a request with `id`; `prompt_estimate` goes in
    /// `message_start` (the final usage is in `message_delta`), with the model of the first
    /// chunk.
    pub fn new(id: String, prompt_estimate: u32) -> Self {
        StreamEncoder {
            id,
            model: String::new(),
            started: false,
            open: None,
            next_block: 0,
            tool_blocks: Vec::new(),
            finish: None,
            prompt_estimate,
        }
    }

    fn start(&mut self, out: &mut Vec<Event>) {
        if self.started {
            return;
        }
        self.started = true;
        let model = &self.model;
        out.push((
            "message_start",
            json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.prompt_estimate, "output_tokens": 0}
            }}),
        ));
        out.push(("ping", json!({"type": "ping"})));
    }

    fn close(&mut self, out: &mut Vec<Event>) {
        if let Some(open) = self.open.take() {
            let index = match open {
                Open::Text(i) | Open::Tool(i) | Open::Thinking(i) => i,
            };
            out.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    fn open_block(&mut self, open: Open, block: Value, out: &mut Vec<Event>) {
        self.close(out);
        let index = match open {
            Open::Text(i) | Open::Tool(i) | Open::Thinking(i) => i,
        };
        out.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        self.open = Some(open);
    }

    /// The events for one chunk.
    pub fn chunk(&mut self, chunk: &ChatChunk) -> Vec<Event> {
        let mut out = Vec::new();
        if self.model.is_empty() {
            self.model = chunk.model.clone();
        }
        self.start(&mut out);
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            if let Some(thinking) = choice.delta.reasoning.as_deref().filter(|t| !t.is_empty()) {
                let index = match self.open {
                    Some(Open::Thinking(i)) => i,
                    _ => {
                        let i = self.next_block;
                        self.next_block += 1;
                        self.open_block(
                            Open::Thinking(i),
                            json!({"type": "thinking", "thinking": "", "signature": ""}),
                            &mut out,
                        );
                        i
                    }
                };
                out.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": thinking}}),
                ));
            }
            if let (Some(sig), Some(Open::Thinking(index))) =
                (choice.delta.reasoning_signature.as_deref(), self.open)
            {
                out.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": sig}}),
                ));
            }
            if let Some(text) = choice.delta.content.as_deref().filter(|t| !t.is_empty()) {
                let index = match self.open {
                    Some(Open::Text(i)) => i,
                    _ => {
                        let i = self.next_block;
                        self.next_block += 1;
                        self.open_block(
                            Open::Text(i),
                            json!({"type": "text", "text": ""}),
                            &mut out,
                        );
                        i
                    }
                };
                out.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
                ));
            }
            for call in &choice.delta.tool_calls {
                let known = self
                    .tool_blocks
                    .iter()
                    .find(|(c, _)| *c == call.index)
                    .map(|(_, b)| *b);
                let block = match known {
                    Some(b) => b,
                    None => {
                        let b = self.next_block;
                        self.next_block += 1;
                        self.tool_blocks.push((call.index, b));
                        self.open_block(
                            Open::Tool(b),
                            json!({"type": "tool_use", "id": call.id.clone().unwrap_or_default(),
                                   "name": call.function.name.clone().unwrap_or_default(), "input": {}}),
                            &mut out,
                        );
                        b
                    }
                };
                if let Some(args) = call.function.arguments.as_deref().filter(|a| !a.is_empty()) {
                    out.push((
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": block, "delta": {"type": "input_json_delta", "partial_json": args}}),
                    ));
                }
            }
            if choice.finish_reason.is_some() {
                self.finish = choice.finish_reason;
            }
        }
        out
    }

    /// The end: the open block closed, `message_delta` with the stop reason and the settled
    /// usage, `message_stop` (carrying `extra`'s fields, such as the routing trace).
    pub fn done(&mut self, usage: &Usage, extra: Map<String, Value>) -> Vec<Event> {
        let mut out = Vec::new();
        self.start(&mut out);
        self.close(&mut out);
        out.push((
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(self.finish), "stop_sequence": null}, "usage": usage_json(usage)}),
        ));
        let mut stop = Map::new();
        stop.insert("type".into(), json!("message_stop"));
        stop.extend(extra);
        out.push(("message_stop", Value::Object(stop)));
        out
    }

    /// A failure after the stream began: an `error` event (the SDKs raise it), no
    /// `message_stop`.
    pub fn failed(&mut self, error: &Error) -> Vec<Event> {
        let mut out = Vec::new();
        self.start(&mut out);
        out.push(("error", error_json(error)));
        out
    }
}

#[cfg(test)]
mod tests;
