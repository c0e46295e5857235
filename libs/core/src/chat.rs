//! The chat request, in the OpenAI chat-completions wire shape (what every SDK sends), plus the
//! OpenRouter-compatible routing fields (`models`, `provider`) and Switchyard's `workflow`.
//! Wire quirks (string-or-array `stop`, string-or-parts `content`, nested `function` objects) are
//! absorbed here so the rest of the system sees one normalized form.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::money::Money;
use crate::params::Parameter;

/// A chat completion request. Unknown top-level fields are refused, as OpenAI's API does: a
/// parameter silently dropped would change what the caller gets without telling them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// The requested model; `models` (when non-empty) is the ordered fallback list instead.
    #[serde(default)]
    pub model: String,
    /// Model fallbacks in order of preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Number of choices; only 1 is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Function tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    /// Whether and which tool the model must call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Whether several tool calls may come in one turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Output format: text, JSON object, or JSON matching a schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Output length cap (legacy name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Output length cap (current name); wins over `max_tokens` when both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Top-k sampling (OpenRouter's and Anthropic's `top_k`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Reasoning controls (OpenRouter's `reasoning`; Anthropic's `thinking`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Reasoning>,
    /// Stop sequences (the wire accepts one string or a list).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_or_list"
    )]
    pub stop: Vec<String>,
    /// Sampling seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Token log-probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// Top-N log-probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// Frequency penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    /// Presence penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    /// Logit bias by token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<serde_json::Map<String, Value>>,
    /// The caller's end-user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Stream the response as server-sent events.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Streaming options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Provider routing controls (OpenRouter-compatible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderPreferences>,
    /// The workflow (preset) to run under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The kind of model it needs: chat, or embedding for an embeddings request planned through
    /// the same stages (never on the wire).
    #[serde(skip)]
    pub kind: crate::embedding::ModelKind,
}

/// How much the model may reason before it answers (OpenRouter's `reasoning` object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reasoning {
    /// `minimal`, `low`, `medium` or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<ReasoningEffort>,
    /// A token budget for the reasoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Reason, but leave the reasoning out of the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<bool>,
    /// Reasoning on (with the provider's default effort) or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// A reasoning effort level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningEffort {
    /// As little as the model allows.
    Minimal,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
}

impl Reasoning {
    /// Whether the request asks for reasoning at all.
    pub fn is_on(&self) -> bool {
        self.enabled != Some(false)
    }

    /// A token budget for a provider that takes one (Anthropic's `budget_tokens`): the one
    /// given, else a share of the output cap by effort, at least `floor`.
    pub fn budget_tokens(&self, max_output: u32, floor: u32) -> u32 {
        let share = match self.effort {
            Some(ReasoningEffort::High) => 80,
            Some(ReasoningEffort::Medium) | None => 50,
            Some(ReasoningEffort::Low) => 20,
            Some(ReasoningEffort::Minimal) => 0,
        };
        self.max_tokens
            .unwrap_or(max_output / 100 * share)
            .max(floor)
    }
}

/// `stream_options` of a streaming request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk carrying `usage`.
    #[serde(default)]
    pub include_usage: bool,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions from the application.
    System,
    /// Instructions from the application (newer OpenAI name for system).
    Developer,
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

impl Role {
    /// The wire name (`system`, `developer`, `user`, `assistant`, `tool`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Text or parts; absent on an assistant message that only calls tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Optional participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls made by the assistant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a tool message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For an assistant message: the model's refusal text, when it refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// For an assistant message: its reasoning, as OpenRouter names it (`reasoning_content` of
    /// DeepSeek and vLLM is read too; Anthropic's thinking blocks become it).
    #[serde(
        default,
        alias = "reasoning_content",
        skip_serializing_if = "Option::is_none"
    )]
    pub reasoning: Option<String>,
    /// The provider's signature of that reasoning (Anthropic's), needed to send it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_signature: Option<String>,
    /// Fields Switchyard does not know, passed through unchanged between the client and an
    /// upstream of the same format.
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, Value>,
}

impl Message {
    /// A plain text message.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
            refusal: None,
            reasoning: None,
            reasoning_signature: None,
            extra: serde_json::Map::new(),
        }
    }

    /// All text of the message, parts joined, images skipped.
    pub fn text_content(&self) -> String {
        match &self.content {
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text, .. } => Some(text.as_str()),
                    ContentPart::ImageUrl { .. } => None,
                })
                .collect::<Vec<_>>()
                .join(""),
            None => String::new(),
        }
    }
}

/// Message content: a string or a list of typed parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Multi-part content (text and images).
    Parts(Vec<ContentPart>),
}

/// One part of multi-part content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// A text part.
    Text {
        /// The text.
        text: String,
        /// A prompt-caching breakpoint (Anthropic's `cache_control`, as OpenRouter takes it on
        /// text parts); sent to Anthropic-format upstreams only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    /// An image by URL (or data URL).
    ImageUrl {
        /// The image.
        image_url: ImageUrl,
    },
}

/// An image reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    /// `https://…` or `data:image/…;base64,…`.
    pub url: String,
    /// `auto`, `low` or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A function tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "wire::ToolWire", into = "wire::ToolWire")]
pub struct Tool {
    /// Function name.
    pub name: String,
    /// What the function does.
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
    /// Strict schema adherence requested.
    pub strict: Option<bool>,
}

/// A tool call made by the model. `arguments` is the JSON text exactly as produced, which may be
/// invalid: validating it is a separate, explicit step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "wire::ToolCallWire", into = "wire::ToolCallWire")]
pub struct ToolCall {
    /// Call id, echoed by the tool result.
    pub id: String,
    /// Function name.
    pub name: String,
    /// Arguments as JSON text.
    pub arguments: String,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Never call a tool.
    None,
    /// The model decides.
    Auto,
    /// Call at least one tool.
    Required,
    /// Call this function.
    Function(String),
}

/// The requested output format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// The schema and its name.
        json_schema: JsonSchemaSpec,
    },
}

/// A named JSON Schema for structured output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaSpec {
    /// Schema name.
    pub name: String,
    /// What the output is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema.
    #[serde(default)]
    pub schema: Value,
    /// Strict adherence requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// OpenRouter-compatible provider routing controls. A request may only narrow what its org and
/// workflow allow; the planner enforces that.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderPreferences {
    /// Providers to try first, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<String>,
    /// Only these providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
    /// Never these providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    /// false: only the providers in `order`/`only`, no others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_fallbacks: Option<bool>,
    /// Only endpoints supporting every parameter the request uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_parameters: Option<bool>,
    /// `deny`: exclude providers that retain or train on prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_collection: Option<DataCollection>,
    /// Zero-data-retention endpoints only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zdr: Option<bool>,
    /// Order by price, latency or throughput instead of the default weighting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<Sort>,
    /// Price ceilings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price: Option<MaxPrice>,
    /// Acceptable quantizations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quantizations: Vec<Quantization>,
}

/// Whether providers that collect prompts are acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataCollection {
    /// Any provider.
    Allow,
    /// Only providers that neither retain nor train on prompts.
    Deny,
}

/// Explicit ordering of endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// Cheapest first.
    Price,
    /// Lowest latency first.
    Latency,
    /// Highest throughput first.
    Throughput,
}

/// Price ceilings: USD per 1M prompt tokens, per 1M completion tokens, and per request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPrice {
    /// Ceiling per 1M prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Money>,
    /// Ceiling per 1M completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<Money>,
    /// Ceiling on the per-request fee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Money>,
}

/// Weight precision an endpoint serves a model at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantization {
    /// 4-bit integer.
    Int4,
    /// 8-bit integer.
    Int8,
    /// 4-bit float.
    Fp4,
    /// 6-bit float.
    Fp6,
    /// 8-bit float.
    Fp8,
    /// 16-bit float.
    Fp16,
    /// bfloat16.
    Bf16,
    /// 32-bit float.
    Fp32,
    /// Not disclosed.
    Unknown,
}

impl ChatRequest {
    /// A one-message user request, for tests and probes.
    pub fn user(model: &str, text: &str) -> Self {
        ChatRequest {
            model: model.to_string(),
            messages: vec![Message::text(Role::User, text)],
            ..Default::default()
        }
    }

    /// The output length cap, whichever field carried it.
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// The models to try, in order: `models` when given, else `model`.
    pub fn requested_models(&self) -> Vec<&str> {
        if self.models.is_empty() {
            if self.model.is_empty() {
                Vec::new()
            } else {
                vec![self.model.as_str()]
            }
        } else {
            self.models.iter().map(String::as_str).collect()
        }
    }

    /// Every endpoint-dependent parameter this request uses, in [`Parameter::ALL`] order.
    pub fn used_parameters(&self) -> Vec<Parameter> {
        let mut used = Vec::new();
        let mut add = |p: Parameter, present: bool| {
            if present {
                used.push(p);
            }
        };
        add(Parameter::Tools, !self.tools.is_empty());
        add(Parameter::ToolChoice, self.tool_choice.is_some());
        add(
            Parameter::ParallelToolCalls,
            self.parallel_tool_calls.is_some(),
        );
        add(
            Parameter::ResponseFormat,
            matches!(self.response_format, Some(ResponseFormat::JsonObject)),
        );
        add(
            Parameter::JsonSchema,
            matches!(
                self.response_format,
                Some(ResponseFormat::JsonSchema { .. })
            ),
        );
        add(Parameter::Stop, !self.stop.is_empty());
        add(Parameter::Seed, self.seed.is_some());
        add(Parameter::Logprobs, self.logprobs == Some(true));
        add(Parameter::TopLogprobs, self.top_logprobs.is_some());
        add(Parameter::Temperature, self.temperature.is_some());
        add(Parameter::TopP, self.top_p.is_some());
        add(Parameter::MaxTokens, self.max_output_tokens().is_some());
        add(
            Parameter::FrequencyPenalty,
            self.frequency_penalty.is_some(),
        );
        add(Parameter::PresencePenalty, self.presence_penalty.is_some());
        add(Parameter::LogitBias, self.logit_bias.is_some());
        add(Parameter::TopK, self.top_k.is_some());
        add(
            Parameter::Reasoning,
            self.reasoning.as_ref().is_some_and(Reasoning::is_on),
        );
        add(
            Parameter::Prefill,
            self.messages
                .last()
                .is_some_and(|m| m.role == Role::Assistant),
        );
        used
    }
}

fn string_or_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
        Null(()),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
        OneOrMany::Null(()) => Vec::new(),
    })
}

impl Serialize for ToolChoice {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ToolChoice::None => serializer.serialize_str("none"),
            ToolChoice::Auto => serializer.serialize_str("auto"),
            ToolChoice::Required => serializer.serialize_str("required"),
            ToolChoice::Function(name) => wire::NamedToolChoice {
                kind: wire::FunctionKind::Function,
                function: wire::FunctionName { name: name.clone() },
            }
            .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Mode(String),
            Named(wire::NamedToolChoice),
        }
        match Either::deserialize(deserializer)? {
            Either::Mode(m) => match m.as_str() {
                "none" => Ok(ToolChoice::None),
                "auto" => Ok(ToolChoice::Auto),
                "required" => Ok(ToolChoice::Required),
                other => Err(serde::de::Error::custom(format!(
                    "unknown tool_choice `{other}`, expected `none`, `auto`, `required` or a function"
                ))),
            },
            Either::Named(n) => Ok(ToolChoice::Function(n.function.name)),
        }
    }
}

/// The nested OpenAI shapes of tools and tool calls.
mod wire {
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    use super::{Tool, ToolCall};

    #[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum FunctionKind {
        #[default]
        Function,
    }

    #[derive(Serialize, Deserialize)]
    pub struct FunctionName {
        pub name: String,
    }

    #[derive(Serialize, Deserialize)]
    pub struct NamedToolChoice {
        #[serde(rename = "type")]
        pub kind: FunctionKind,
        pub function: FunctionName,
    }

    #[derive(Serialize, Deserialize)]
    pub struct ToolWire {
        #[serde(rename = "type", default)]
        kind: FunctionKind,
        function: FunctionDef,
    }

    #[derive(Serialize, Deserialize)]
    struct FunctionDef {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default = "empty_object")]
        parameters: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    }

    fn empty_object() -> Value {
        Value::Object(serde_json::Map::new())
    }

    impl From<ToolWire> for Tool {
        fn from(w: ToolWire) -> Self {
            Tool {
                name: w.function.name,
                description: w.function.description,
                parameters: w.function.parameters,
                strict: w.function.strict,
            }
        }
    }

    impl From<Tool> for ToolWire {
        fn from(t: Tool) -> Self {
            ToolWire {
                kind: FunctionKind::Function,
                function: FunctionDef {
                    name: t.name,
                    description: t.description,
                    parameters: t.parameters,
                    strict: t.strict,
                },
            }
        }
    }

    #[derive(Serialize, Deserialize)]
    pub struct ToolCallWire {
        id: String,
        #[serde(rename = "type", default)]
        kind: FunctionKind,
        function: FunctionCall,
    }

    #[derive(Serialize, Deserialize)]
    struct FunctionCall {
        name: String,
        #[serde(default)]
        arguments: String,
    }

    impl From<ToolCallWire> for ToolCall {
        fn from(w: ToolCallWire) -> Self {
            ToolCall {
                id: w.id,
                name: w.function.name,
                arguments: w.function.arguments,
            }
        }
    }

    impl From<ToolCall> for ToolCallWire {
        fn from(c: ToolCall) -> Self {
            ToolCallWire {
                id: c.id,
                kind: FunctionKind::Function,
                function: FunctionCall {
                    name: c.name,
                    arguments: c.arguments,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_a_full_openai_request() {
        let body = json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is in "},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"x\":1}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}
            ],
            "tools": [{"type": "function", "function": {"name": "look", "description": "look", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "look"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}},
            "max_tokens": 100,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "END",
            "seed": 7,
            "user": "u-1",
            "stream": true,
            "stream_options": {"include_usage": true},
            "models": ["a", "b"],
            "provider": {"order": ["p1"], "allow_fallbacks": false, "data_collection": "deny", "zdr": true,
                         "sort": "price", "max_price": {"prompt": 1, "completion": "2.5"}, "quantizations": ["fp8"]},
            "workflow": "support"
        });
        let req: ChatRequest = serde_json::from_value(body).unwrap();
        assert_eq!(req.messages.len(), 4);
        assert_eq!(req.messages[1].text_content(), "what is in ");
        assert_eq!(req.messages[2].tool_calls[0].arguments, "{\"x\":1}");
        assert_eq!(req.tool_choice, Some(ToolChoice::Function("look".into())));
        assert_eq!(req.stop, vec!["END".to_string()]);
        assert!(req.stream_options.unwrap().include_usage);
        assert_eq!(req.requested_models(), vec!["a", "b"]);
        let p = req.provider.as_ref().unwrap();
        assert_eq!(p.data_collection, Some(DataCollection::Deny));
        assert_eq!(
            p.max_price.unwrap().completion,
            Some(Money::parse_usd("2.5").unwrap())
        );
        assert_eq!(p.quantizations, vec![Quantization::Fp8]);
        assert_eq!(
            req.used_parameters(),
            vec![
                Parameter::Tools,
                Parameter::ToolChoice,
                Parameter::JsonSchema,
                Parameter::Stop,
                Parameter::Seed,
                Parameter::Temperature,
                Parameter::TopP,
                Parameter::MaxTokens
            ]
        );
    }

    #[test]
    fn round_trips_through_json() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "stop": ["a", "b"],
            "response_format": {"type": "json_object"}
        }))
        .unwrap();
        let text = serde_json::to_string(&req).unwrap();
        let back: ChatRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, req);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["tools"][0]["type"], "function");
        assert_eq!(v["tool_choice"], "required");
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        let err = serde_json::from_value::<ChatRequest>(json!({
            "model": "m", "messages": [{"role": "wizard", "content": "hi"}]
        }))
        .unwrap_err();
        assert!(err.to_string().contains("wizard"), "{err}");
        let err = serde_json::from_value::<ChatRequest>(json!({
            "model": "m", "messages": [], "tool_choice": "sometimes"
        }))
        .unwrap_err();
        assert!(err.to_string().contains("tool_choice"), "{err}");
        let err = serde_json::from_value::<ChatRequest>(json!({
            "model": "m", "messages": [], "provider": {"sorting": "price"}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("sorting"), "{err}");
    }

    #[test]
    fn max_completion_tokens_wins() {
        let mut req = ChatRequest::user("m", "x");
        req.max_tokens = Some(10);
        assert_eq!(req.max_output_tokens(), Some(10));
        req.max_completion_tokens = Some(20);
        assert_eq!(req.max_output_tokens(), Some(20));
    }
}
