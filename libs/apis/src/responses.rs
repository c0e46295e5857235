//! OpenAI's Responses API as a client-facing API: the request (`POST /v1/responses`) translated
//! to the normalized chat request, the normalized reply and stream translated back to a
//! Response object and its semantic stream events. Storing responses for
//! `previous_response_id` is the router's; this module gives it the conversation to store.
//!
//! | Responses request | normalized |
//! |---|---|
//! | `instructions` | a leading `system` message (not carried over by `previous_response_id`, as documented) |
//! | `input` string | one user message |
//! | `input` message items (role user / system / developer / assistant; `input_text`, `input_image` by URL, `output_text`) | messages with text and image parts |
//! | `function_call` items | assistant `tool_calls` (consecutive calls in one assistant message) |
//! | `function_call_output` items | `tool` messages |
//! | `tools` of type `function` | function `tools` |
//! | `tool_choice` auto / none / required / `{type: function, name}` | the same |
//! | `text.format` text / json_object / json_schema | `response_format` |
//! | `max_output_tokens`, `temperature`, `top_p`, `user`, `parallel_tool_calls` | the same (`max_tokens`) |
//! | `reasoning.effort` | `reasoning.effort` |
//! | `models`, `provider`, `workflow` | the same |
//!
//! Accepted and echoed, not forwarded: `metadata`, `reasoning.summary`, `truncation: disabled`,
//! `text.verbosity`, and `reasoning` items of earlier turns. Refused with a 400 naming the field:
//! built-in tools (web search, file search, code interpreter, computer use, image generation,
//! MCP) and tool choices that name them, `include`, `truncation: auto`, files and item
//! references in the input, and any unknown field.
//!
//! | normalized reply | Response |
//! |---|---|
//! | reasoning | a leading `reasoning` output item with one `reasoning_text` part (streamed as `response.reasoning_text.delta`) |
//! | content | a `message` output item with one `output_text` part |
//! | tool calls | `function_call` output items (`call_id`, `name`, `arguments`) |
//! | finish length | status `incomplete`, `incomplete_details.reason: max_output_tokens` |
//! | usage | `input_tokens` (`cached_tokens`), `output_tokens` (`reasoning_tokens`), `total_tokens` |
//!
//! A stream is `response.created`, `response.in_progress`, then per output item
//! `response.output_item.added`, its parts and deltas (`response.content_part.added`,
//! `response.output_text.delta` / `.done`, `response.content_part.done`, or
//! `response.function_call_arguments.delta` / `.done`) and `response.output_item.done`, then
//! `response.completed` (or `response.incomplete`) with the whole response; a failure after the
//! first event is `response.failed`. Every event carries its `sequence_number`.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchyard_core::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, Error, FinishReason, ImageUrl,
    JsonSchemaSpec, Message, ProviderPreferences, Reasoning, ReasoningEffort, ResponseFormat, Role,
    Tool, ToolCall, ToolChoice, Usage,
};

use crate::messages::TextOr;

/// A Responses request as sent. Unknown fields are refused, as OpenAI's API does.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponsesRequest {
    /// The model.
    #[serde(default)]
    pub model: String,
    /// Switchyard: model fallbacks in order of preference.
    #[serde(default)]
    pub models: Vec<String>,
    /// A string or input items (kept as JSON so that each item's errors name its path).
    #[serde(default)]
    pub input: Option<TextOr<Value>>,
    /// System instructions for this turn.
    #[serde(default)]
    pub instructions: Option<String>,
    /// Tools (kept as JSON: built-in tools are refused by type, whatever their fields).
    #[serde(default)]
    pub tools: Vec<Value>,
    /// `auto`, `none`, `required` or a function.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Output format and verbosity.
    #[serde(default)]
    pub text: Option<TextConfig>,
    /// Output cap.
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Stream semantic events.
    #[serde(default)]
    pub stream: bool,
    /// Store the response for `previous_response_id` and retrieval (default true).
    #[serde(default)]
    pub store: Option<bool>,
    /// Continue the conversation of a stored response.
    #[serde(default)]
    pub previous_response_id: Option<String>,
    /// Up to 16 string pairs, echoed back.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    /// The end user.
    #[serde(default)]
    pub user: Option<String>,
    /// Several tool calls in one turn.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// Reasoning effort (and summary, echoed).
    #[serde(default)]
    pub reasoning: Option<ReasoningConfig>,
    /// Only `disabled` is served.
    #[serde(default)]
    pub truncation: Option<String>,
    /// Extra output to include; none is served.
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// Switchyard: provider routing controls.
    #[serde(default)]
    pub provider: Option<ProviderPreferences>,
    /// Switchyard: the workflow to run under.
    #[serde(default)]
    pub workflow: Option<String>,
}

/// `text`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    /// The output format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TextFormat>,
    /// `low`, `medium` or `high` (echoed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<String>,
}

/// `text.format`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TextFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// Schema name.
        name: String,
        /// The schema.
        schema: Value,
        /// What it is for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// Strict adherence.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

/// `reasoning`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReasoningConfig {
    /// `minimal`, `low`, `medium` or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<ReasoningEffort>,
    /// A summary of the reasoning (echoed; no summary is produced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Older name of `summary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_summary: Option<String>,
}

/// The built-in tool types, refused by name.
const BUILT_IN: &str = "built-in tools (web search, file search, code interpreter, computer use, image generation, MCP) are not run by this gateway; only function tools are supported";

fn str_field<'a>(v: &'a Value, field: &str, at: &str) -> Result<&'a str, Error> {
    v.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid(format!("{at}.{field}: a string is required")))
}

fn tool(v: &Value, i: usize) -> Result<Tool, Error> {
    let at = format!("tools[{i}]");
    match v.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(other) => {
            return Err(Error::invalid(format!("{at}.type: `{other}`: {BUILT_IN}")));
        }
        None => return Err(Error::invalid(format!("{at}.type: field required"))),
    }
    let Some(o) = v.as_object() else {
        return Err(Error::invalid(format!("{at}: an object is required")));
    };
    if let Some(k) = o
        .keys()
        .find(|k| !["type", "name", "description", "parameters", "strict"].contains(&k.as_str()))
    {
        return Err(Error::invalid(format!("{at}: unknown field `{k}`")));
    }
    Ok(Tool {
        name: str_field(v, "name", &at)?.to_string(),
        description: v
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string),
        parameters: v.get("parameters").cloned().unwrap_or_else(|| json!({})),
        strict: v.get("strict").and_then(Value::as_bool),
    })
}

fn tool_choice(v: &Value) -> Result<ToolChoice, Error> {
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(Error::invalid(format!(
                "tool_choice: unknown mode `{other}`, expected `auto`, `none`, `required` or a function"
            ))),
        },
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") => Ok(ToolChoice::Function(
                str_field(v, "name", "tool_choice")?.to_string(),
            )),
            Some(other) => Err(Error::invalid(format!(
                "tool_choice.type: `{other}`: {BUILT_IN}"
            ))),
            None => Err(Error::invalid("tool_choice.type: field required")),
        },
        _ => Err(Error::invalid(
            "tool_choice: a string or an object is required",
        )),
    }
}

fn role(s: &str, at: &str) -> Result<Role, Error> {
    Ok(match s {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "system" => Role::System,
        "developer" => Role::Developer,
        other => {
            return Err(Error::invalid(format!("{at}.role: unknown role `{other}`")));
        }
    })
}

fn message_content(v: &Value, at: &str) -> Result<Content, Error> {
    match v {
        Value::String(s) => Ok(Content::Text(s.clone())),
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for (k, p) in parts.iter().enumerate() {
                let at = format!("{at}.content[{k}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text") => out.push(ContentPart::Text {
                        text: str_field(p, "text", &at)?.to_string(),
                        cache_control: None,
                    }),
                    Some("refusal") => out.push(ContentPart::Text {
                        text: str_field(p, "refusal", &at)?.to_string(),
                        cache_control: None,
                    }),
                    Some("input_image") => {
                        let Some(url) = p.get("image_url").and_then(Value::as_str) else {
                            return Err(Error::invalid(format!(
                                "{at}.image_url: images are supported by URL or data URL only (not file_id)"
                            )));
                        };
                        out.push(ContentPart::ImageUrl {
                            image_url: ImageUrl {
                                url: url.to_string(),
                                detail: p.get("detail").and_then(Value::as_str).map(str::to_string),
                            },
                        });
                    }
                    Some(other) => {
                        return Err(Error::invalid(format!(
                            "{at}.type: content of type `{other}` is not supported"
                        )));
                    }
                    None => return Err(Error::invalid(format!("{at}.type: field required"))),
                }
            }
            Ok(Content::Parts(out))
        }
        _ => Err(Error::invalid(format!(
            "{at}.content: a string or a list of parts is required"
        ))),
    }
}

fn output_text(v: &Value, at: &str) -> Result<String, Error> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (k, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text") => {
                        text.push_str(str_field(p, "text", &format!("{at}.output[{k}]"))?)
                    }
                    _ => {
                        return Err(Error::invalid(format!(
                            "{at}.output[{k}]: only text is supported in a function_call_output"
                        )));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(Error::invalid(format!(
            "{at}.output: a string or a list of text parts is required"
        ))),
    }
}

/// Appends input items to `out`, in order.
fn items(input: &[Value], out: &mut Vec<Message>) -> Result<(), Error> {
    for (i, item) in input.iter().enumerate() {
        let at = format!("input[{i}]");
        let kind = item.get("type").and_then(Value::as_str);
        match kind {
            None | Some("message") => {
                let r = role(str_field(item, "role", &at)?, &at)?;
                let content = message_content(item.get("content").unwrap_or(&Value::Null), &at)?;
                out.push(Message {
                    content: Some(content),
                    ..Message::text(r, "")
                });
            }
            Some("function_call") => {
                let call = ToolCall {
                    id: str_field(item, "call_id", &at)?.to_string(),
                    name: str_field(item, "name", &at)?.to_string(),
                    arguments: str_field(item, "arguments", &at)?.to_string(),
                };
                // Consecutive calls (and the text before them) are one assistant turn.
                match out.last_mut() {
                    Some(m) if m.role == Role::Assistant => m.tool_calls.push(call),
                    _ => out.push(Message {
                        content: None,
                        tool_calls: vec![call],
                        ..Message::text(Role::Assistant, "")
                    }),
                }
            }
            Some("function_call_output") => out.push(Message {
                tool_call_id: Some(str_field(item, "call_id", &at)?.to_string()),
                ..Message::text(
                    Role::Tool,
                    output_text(item.get("output").unwrap_or(&Value::Null), &at)?,
                )
            }),
            // Earlier reasoning: accepted, not forwarded.
            Some("reasoning") => {}
            Some(other) => {
                return Err(Error::invalid(format!(
                    "{at}.type: input items of type `{other}` are not supported (messages, function_call and function_call_output are)"
                )));
            }
        }
    }
    Ok(())
}

impl ResponsesRequest {
    /// The conversation this request adds (its input, without the instructions), normalized.
    pub fn input_messages(&self) -> Result<Vec<Message>, Error> {
        let mut out = Vec::new();
        match &self.input {
            None => {}
            Some(TextOr::Text(t)) => out.push(Message::text(Role::User, t.clone())),
            Some(TextOr::Blocks(list)) => items(list, &mut out)?,
        }
        Ok(out)
    }

    /// The normalized chat request: the instructions, then `earlier` (the stored conversation
    /// of `previous_response_id`), then `input` (from [`Self::input_messages`]).
    pub fn to_chat(
        &self,
        earlier: Vec<Message>,
        input: Vec<Message>,
    ) -> Result<ChatRequest, Error> {
        if self.model.is_empty() && self.models.is_empty() {
            return Err(Error::invalid("model: field required"));
        }
        if let Some(include) = self.include.as_ref().filter(|i| !i.is_empty()) {
            return Err(Error::invalid(format!(
                "include: `{}` is not supported",
                include.join("`, `")
            )));
        }
        if let Some(t) = self.truncation.as_deref().filter(|t| *t != "disabled") {
            return Err(Error::invalid(format!(
                "truncation: `{t}` is not supported (only `disabled`)"
            )));
        }
        let mut messages = Vec::with_capacity(earlier.len() + input.len() + 1);
        if let Some(i) = self.instructions.as_ref().filter(|i| !i.is_empty()) {
            messages.push(Message::text(Role::System, i.clone()));
        }
        messages.extend(earlier);
        messages.extend(input);
        if messages
            .iter()
            .all(|m| matches!(m.role, Role::System | Role::Developer))
        {
            return Err(Error::invalid("input: field required"));
        }
        let tools = self
            .tools
            .iter()
            .enumerate()
            .map(|(i, t)| tool(t, i))
            .collect::<Result<Vec<_>, _>>()?;
        let response_format = match self.text.as_ref().and_then(|t| t.format.clone()) {
            None | Some(TextFormat::Text) => None,
            Some(TextFormat::JsonObject) => Some(ResponseFormat::JsonObject),
            Some(TextFormat::JsonSchema {
                name,
                schema,
                description,
                strict,
            }) => Some(ResponseFormat::JsonSchema {
                json_schema: JsonSchemaSpec {
                    name,
                    description,
                    schema,
                    strict,
                },
            }),
        };
        Ok(ChatRequest {
            model: self.model.clone(),
            models: self.models.clone(),
            messages,
            tools,
            tool_choice: self.tool_choice.as_ref().map(tool_choice).transpose()?,
            parallel_tool_calls: self.parallel_tool_calls,
            response_format,
            max_tokens: self.max_output_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            reasoning: self
                .reasoning
                .as_ref()
                .and_then(|r| r.effort)
                .map(|effort| Reasoning {
                    effort: Some(effort),
                    ..Reasoning::default()
                }),
            user: self.user.clone(),
            stream: self.stream,
            provider: self.provider.clone(),
            workflow: self.workflow.clone(),
            ..ChatRequest::default()
        })
    }

    /// Whether the response is stored (the default).
    pub fn stores(&self) -> bool {
        self.store != Some(false)
    }

    /// The request fields a Response object echoes.
    pub fn echo(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("instructions".into(), json!(self.instructions));
        m.insert("max_output_tokens".into(), json!(self.max_output_tokens));
        m.insert(
            "previous_response_id".into(),
            json!(self.previous_response_id),
        );
        m.insert("store".into(), json!(self.stores()));
        m.insert("temperature".into(), json!(self.temperature.unwrap_or(1.0)));
        m.insert("top_p".into(), json!(self.top_p.unwrap_or(1.0)));
        m.insert(
            "tool_choice".into(),
            self.tool_choice.clone().unwrap_or_else(|| json!("auto")),
        );
        m.insert("tools".into(), Value::Array(self.tools.clone()));
        m.insert(
            "text".into(),
            serde_json::to_value(self.text.clone().unwrap_or(TextConfig {
                format: Some(TextFormat::Text),
                verbosity: None,
            }))
            .unwrap_or_default(),
        );
        m.insert(
            "parallel_tool_calls".into(),
            json!(self.parallel_tool_calls.unwrap_or(true)),
        );
        m.insert(
            "metadata".into(),
            Value::Object(self.metadata.clone().unwrap_or_default()),
        );
        m.insert("user".into(), json!(self.user));
        m.insert(
            "reasoning".into(),
            serde_json::to_value(self.reasoning.clone().unwrap_or_default()).unwrap_or_default(),
        );
        m.insert("truncation".into(), json!("disabled"));
        m
    }
}

/// A Response id for a request id.
pub fn response_id(request_id: &str) -> String {
    format!("resp_{}", request_id.trim_start_matches("req_"))
}

/// Usage in the Responses shape.
pub fn usage_json(u: &Usage) -> Value {
    let mut v = json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_prompt_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens(),
    });
    if let Some(cost) = u.cost {
        v["cost"] = json!(cost);
    }
    v
}

/// What identifies a Response beside its output: id, creation time, the served model and the
/// echoed request fields.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `resp_…`.
    pub id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The echoed request fields ([`ResponsesRequest::echo`]).
    pub echo: Map<String, Value>,
}

impl Envelope {
    fn response(
        &self,
        model: &str,
        status: &str,
        output: Vec<Value>,
        usage: Option<&Usage>,
    ) -> Value {
        let mut r = Map::new();
        r.insert("id".into(), json!(self.id));
        r.insert("object".into(), json!("response"));
        r.insert("created_at".into(), json!(self.created_at));
        r.insert("status".into(), json!(status));
        r.insert("model".into(), json!(model));
        r.insert("output".into(), Value::Array(output));
        r.insert("error".into(), Value::Null);
        r.insert(
            "incomplete_details".into(),
            if status == "incomplete" {
                json!({"reason": "max_output_tokens"})
            } else {
                Value::Null
            },
        );
        r.insert("usage".into(), usage.map_or(Value::Null, usage_json));
        r.extend(self.echo.clone());
        Value::Object(r)
    }
}

fn status_of(finish: Option<FinishReason>) -> &'static str {
    match finish {
        Some(FinishReason::Length) => "incomplete",
        _ => "completed",
    }
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [],
           "content": [{"type": "reasoning_text", "text": text}]})
}

fn call_item(id: &str, call: &ToolCall, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call.id, "name": call.name,
           "arguments": call.arguments, "status": status})
}

/// A normalized reply as a Response object.
pub fn response_json(resp: &ChatResponse, env: &Envelope) -> Value {
    let choice = resp.choices.first();
    let mut output = Vec::new();
    let base = env.id.trim_start_matches("resp_");
    if let Some(c) = choice {
        if let Some(r) = &c.message.reasoning {
            output.push(reasoning_item(&format!("rs_{base}"), r));
        }
        let text = c.message.text_content();
        if !text.is_empty() || c.message.tool_calls.is_empty() {
            output.push(message_item(&format!("msg_{base}"), &text, "completed"));
        }
        for (i, call) in c.message.tool_calls.iter().enumerate() {
            output.push(call_item(&format!("fc_{base}_{i}"), call, "completed"));
        }
    }
    env.response(
        &resp.model,
        status_of(choice.and_then(|c| c.finish_reason)),
        output,
        resp.usage.as_ref(),
    )
}

/// The normalized assistant message of a Response's output, for the stored conversation.
pub fn assistant_message(response: &Value) -> Message {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for item in response["output"].as_array().into_iter().flatten() {
        match item["type"].as_str() {
            Some("message") => {
                for part in item["content"].as_array().into_iter().flatten() {
                    text.push_str(part["text"].as_str().unwrap_or(""));
                }
            }
            Some("function_call") => tool_calls.push(ToolCall {
                id: item["call_id"].as_str().unwrap_or("").to_string(),
                name: item["name"].as_str().unwrap_or("").to_string(),
                arguments: item["arguments"].as_str().unwrap_or("").to_string(),
            }),
            _ => {}
        }
    }
    Message {
        content: (!text.is_empty() || tool_calls.is_empty()).then_some(Content::Text(text)),
        tool_calls,
        ..Message::text(Role::Assistant, "")
    }
}

/// The error object of a failed Response.
pub fn error_object(e: &Error) -> Value {
    let code = match e.class {
        switchyard_core::ErrorClass::RateLimited => "rate_limit_exceeded",
        switchyard_core::ErrorClass::InvalidRequest
        | switchyard_core::ErrorClass::ContextLengthExceeded => "invalid_prompt",
        _ => "server_error",
    };
    json!({"code": code, "message": e.message, "class": e.class.as_str()})
}

/// One server-sent event: its name (= its `type`) and data.
pub type Event = (String, Value);

#[derive(Debug)]
enum Item {
    Reasoning {
        id: String,
        text: String,
    },
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call: ToolCall,
        index: u32,
    },
}

/// Turns a normalized stream into the Responses event sequence.
#[derive(Debug)]
pub struct StreamEncoder {
    env: Envelope,
    model: String,
    seq: u64,
    started: bool,
    open: Option<Item>,
    done: Vec<Value>,
    finish: Option<FinishReason>,
    calls: u32,
}

impl StreamEncoder {
    /// An encoder for a response with `env`; the model is the first chunk's.
    pub fn new(env: Envelope) -> Self {
        StreamEncoder {
            env,
            model: String::new(),
            seq: 0,
            started: false,
            open: None,
            done: Vec::new(),
            finish: None,
            calls: 0,
        }
    }

    fn emit(&mut self, out: &mut Vec<Event>, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.push((kind.to_string(), data));
    }

    fn start(&mut self, out: &mut Vec<Event>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = self
            .env
            .response(&self.model, "in_progress", Vec::new(), None);
        self.emit(out, "response.created", json!({"response": r}));
        let r = self
            .env
            .response(&self.model, "in_progress", Vec::new(), None);
        self.emit(out, "response.in_progress", json!({"response": r}));
    }

    fn close(&mut self, out: &mut Vec<Event>) {
        let index = self.done.len();
        let item = match self.open.take() {
            None => return,
            Some(Item::Reasoning { id, text }) => {
                self.emit(
                    out,
                    "response.reasoning_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text}),
                );
                reasoning_item(&id, &text)
            }
            Some(Item::Message { id, text }) => {
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                self.emit(out, "response.output_text.done", json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}));
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                );
                message_item(&id, &text, "completed")
            }
            Some(Item::Call { id, call, .. }) => {
                self.emit(out, "response.function_call_arguments.done", json!({"item_id": id, "output_index": index, "name": call.name, "arguments": call.arguments}));
                call_item(&id, &call, "completed")
            }
        };
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        self.done.push(item);
    }

    /// The events for one chunk.
    pub fn chunk(&mut self, chunk: &ChatChunk) -> Vec<Event> {
        let mut out = Vec::new();
        if self.model.is_empty() {
            self.model = chunk.model.clone();
        }
        self.start(&mut out);
        let base = self.env.id.trim_start_matches("resp_").to_string();
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            if let Some(delta) = choice.delta.reasoning.as_deref().filter(|t| !t.is_empty()) {
                if !matches!(self.open, Some(Item::Reasoning { .. })) {
                    self.close(&mut out);
                    let id = format!("rs_{base}_{}", self.done.len());
                    let index = self.done.len();
                    self.emit(
                        &mut out,
                        "response.output_item.added",
                        json!({"output_index": index,
                        "item": {"type": "reasoning", "id": id, "summary": [], "content": []}}),
                    );
                    self.open = Some(Item::Reasoning {
                        id,
                        text: String::new(),
                    });
                }
                let index = self.done.len();
                if let Some(Item::Reasoning { id, text }) = &mut self.open {
                    text.push_str(delta);
                    let id = id.clone();
                    self.emit(&mut out, "response.reasoning_text.delta", json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta}));
                }
            }
            if let Some(delta) = choice.delta.content.as_deref().filter(|t| !t.is_empty()) {
                if !matches!(self.open, Some(Item::Message { .. })) {
                    self.close(&mut out);
                    let id = format!("msg_{base}_{}", self.done.len());
                    let index = self.done.len();
                    self.emit(&mut out, "response.output_item.added", json!({"output_index": index,
                        "item": {"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []}}));
                    self.emit(
                        &mut out,
                        "response.content_part.added",
                        json!({"item_id": id, "output_index": index, "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []}}),
                    );
                    self.open = Some(Item::Message {
                        id,
                        text: String::new(),
                    });
                }
                let index = self.done.len();
                if let Some(Item::Message { id, text }) = &mut self.open {
                    text.push_str(delta);
                    let id = id.clone();
                    self.emit(&mut out, "response.output_text.delta", json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": []}));
                }
            }
            for d in &choice.delta.tool_calls {
                let same =
                    matches!(&self.open, Some(Item::Call { index, .. }) if *index == d.index);
                if !same {
                    self.close(&mut out);
                    let id = format!("fc_{base}_{}", self.calls);
                    self.calls += 1;
                    let call = ToolCall {
                        id: d.id.clone().unwrap_or_default(),
                        name: d.function.name.clone().unwrap_or_default(),
                        arguments: String::new(),
                    };
                    let index = self.done.len();
                    self.emit(
                        &mut out,
                        "response.output_item.added",
                        json!({"output_index": index,
                        "item": call_item(&id, &call, "in_progress")}),
                    );
                    self.open = Some(Item::Call {
                        id,
                        call,
                        index: d.index,
                    });
                }
                let index = self.done.len();
                if let Some(args) = d.function.arguments.as_deref().filter(|a| !a.is_empty())
                    && let Some(Item::Call { id, call, .. }) = &mut self.open
                {
                    call.arguments.push_str(args);
                    let id = id.clone();
                    self.emit(
                        &mut out,
                        "response.function_call_arguments.delta",
                        json!({"item_id": id, "output_index": index, "delta": args}),
                    );
                }
            }
            if choice.finish_reason.is_some() {
                self.finish = choice.finish_reason;
            }
        }
        out
    }

    /// The end: the open item closed, then `response.completed` (or `response.incomplete` at
    /// the output cap) with the whole response, `extra`'s fields added to it. Returns the events
    /// and the final response (to store).
    pub fn done(&mut self, usage: &Usage, extra: Map<String, Value>) -> (Vec<Event>, Value) {
        let mut out = Vec::new();
        self.start(&mut out);
        self.close(&mut out);
        let status = status_of(self.finish);
        let mut r = self
            .env
            .response(&self.model, status, self.done.clone(), Some(usage));
        if let Some(o) = r.as_object_mut() {
            o.extend(extra);
        }
        let kind = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(&mut out, kind, json!({"response": r}));
        (out, r)
    }

    /// A failure after the stream began: `response.failed` with the error.
    pub fn failed(&mut self, error: &Error, extra: Map<String, Value>) -> Vec<Event> {
        let mut out = Vec::new();
        self.start(&mut out);
        let mut r = self
            .env
            .response(&self.model, "failed", self.done.clone(), None);
        r["error"] = error_object(error);
        if let Some(o) = r.as_object_mut() {
            o.extend(extra);
        }
        self.emit(&mut out, "response.failed", json!({"response": r}));
        out
    }
}

#[cfg(test)]
mod tests;
