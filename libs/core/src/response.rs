//! Chat responses, stream chunks and usage, in the OpenAI wire shape with Switchyard's additions
//! (`provider` that served the request, `usage.cost`).

use serde::{Deserialize, Serialize};

use crate::chat::{Message, Role, ToolCall};
use crate::money::Money;

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Natural end or a stop sequence.
    Stop,
    /// The output length cap.
    Length,
    /// The model called tools.
    ToolCalls,
    /// The provider filtered or refused the content.
    ContentFilter,
}

/// Token accounting of one request, and its cost once priced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens billed.
    pub prompt_tokens: u32,
    /// Completion tokens billed.
    pub completion_tokens: u32,
    /// Prompt tokens served from the provider's cache (a subset of `prompt_tokens`).
    pub cached_prompt_tokens: u32,
    /// Prompt tokens written to the provider's cache (a subset of `prompt_tokens`; Anthropic's
    /// `cache_creation_input_tokens`).
    pub cache_write_prompt_tokens: u32,
    /// Completion tokens spent on reasoning (a subset of `completion_tokens`).
    pub reasoning_tokens: u32,
    /// The cost charged, once the router has priced it.
    pub cost: Option<Money>,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total_tokens(&self) -> u32 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// The usage of two calls that made one answer (a stream and its continuation): tokens
    /// added, and the cost when both are known.
    pub fn plus(&self, other: &Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.saturating_add(other.prompt_tokens),
            completion_tokens: self
                .completion_tokens
                .saturating_add(other.completion_tokens),
            cached_prompt_tokens: self
                .cached_prompt_tokens
                .saturating_add(other.cached_prompt_tokens),
            cache_write_prompt_tokens: self
                .cache_write_prompt_tokens
                .saturating_add(other.cache_write_prompt_tokens),
            reasoning_tokens: self.reasoning_tokens.saturating_add(other.reasoning_tokens),
            cost: match (self.cost, other.cost) {
                (Some(a), Some(b)) => Some(a.saturating_add(b)),
                _ => None,
            },
        }
    }
}

/// One generated alternative.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    /// Position among the choices.
    pub index: u32,
    /// The assistant message.
    pub message: Message,
    /// Why it stopped; absent if the provider did not say.
    pub finish_reason: Option<FinishReason>,
    /// Fields Switchyard does not know (`logprobs`, …), passed through unchanged.
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A complete (non-streamed) chat response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatResponse {
    /// Response id.
    pub id: String,
    /// Always `chat.completion`.
    #[serde(default = "chat_completion")]
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    /// The model that served it.
    pub model: String,
    /// The provider that served it (Switchyard addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The alternatives.
    pub choices: Vec<Choice>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Fields Switchyard does not know (`system_fingerprint`, `service_tier`, …), passed
    /// through unchanged between the client and an upstream of the same format.
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

pub(crate) fn chat_completion() -> String {
    "chat.completion".to_string()
}

pub(crate) fn chat_completion_chunk() -> String {
    "chat.completion.chunk".to_string()
}

/// A tool call fragment in a stream: the first fragment of a call carries `id` and `name`, later
/// ones append to `arguments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which call of the message this fragment belongs to.
    pub index: u32,
    /// Call id (first fragment only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function` on the first fragment.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name and argument text.
    #[serde(default)]
    pub function: FunctionDelta,
}

/// The function part of a [`ToolCallDelta`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionDelta {
    /// Function name (first fragment only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Argument text to append.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// What a chunk adds to the message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Set on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Text to append.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool call fragments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta>,
    /// Reasoning text to append (`reasoning_content` is read too).
    #[serde(
        default,
        alias = "reasoning_content",
        skip_serializing_if = "Option::is_none"
    )]
    pub reasoning: Option<String>,
    /// The reasoning's signature (Anthropic's), once complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_signature: Option<String>,
    /// A refusal to append.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

/// One choice's part of a stream chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkChoice {
    /// Which choice.
    pub index: u32,
    /// What it adds.
    pub delta: Delta,
    /// Set on the choice's last chunk.
    pub finish_reason: Option<FinishReason>,
    /// Fields Switchyard does not know (`logprobs`, …), passed through unchanged.
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One server-sent event of a streamed response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChunk {
    /// Response id (same for every chunk).
    pub id: String,
    /// Always `chat.completion.chunk`.
    #[serde(default = "chat_completion_chunk")]
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    /// The model serving the stream.
    pub model: String,
    /// The provider serving the stream (Switchyard addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Choice deltas; empty on the final usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Usage, on the final chunk when `stream_options.include_usage` was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Fields Switchyard does not know (`system_fingerprint`, …), passed through unchanged.
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ChatChunk {
    /// Whether the chunk carries part of the answer (text, reasoning, a refusal, a tool call, a
    /// finish or the usage), as opposed to a role-only opening.
    pub fn carries_answer(&self) -> bool {
        self.usage.is_some()
            || self.choices.iter().any(|c| {
                let d = &c.delta;
                let some = |t: &Option<String>| t.as_deref().is_some_and(|t| !t.is_empty());
                c.finish_reason.is_some()
                    || some(&d.content)
                    || some(&d.reasoning)
                    || some(&d.refusal)
                    || !d.tool_calls.is_empty()
            })
    }
}

impl ChatResponse {
    /// The first choice's tool calls.
    pub fn tool_calls(&self) -> &[ToolCall] {
        self.choices
            .first()
            .map(|c| c.message.tool_calls.as_slice())
            .unwrap_or(&[])
    }
}

mod usage_wire {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Usage;
    use crate::money::Money;

    fn zero(n: &u32) -> bool {
        *n == 0
    }

    #[derive(Serialize, Deserialize, Default)]
    struct Details {
        #[serde(default)]
        cached_tokens: u32,
        #[serde(default, skip_serializing_if = "zero")]
        cache_write_tokens: u32,
    }

    #[derive(Serialize, Deserialize, Default)]
    struct OutDetails {
        #[serde(default)]
        reasoning_tokens: u32,
    }

    #[derive(Serialize, Deserialize)]
    struct Wire {
        #[serde(default)]
        prompt_tokens: u32,
        #[serde(default)]
        completion_tokens: u32,
        #[serde(default)]
        total_tokens: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt_tokens_details: Option<Details>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        completion_tokens_details: Option<OutDetails>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost: Option<Money>,
    }

    impl Serialize for Usage {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            Wire {
                prompt_tokens: self.prompt_tokens,
                completion_tokens: self.completion_tokens,
                total_tokens: self.total_tokens(),
                prompt_tokens_details: (self.cached_prompt_tokens > 0
                    || self.cache_write_prompt_tokens > 0)
                    .then_some(Details {
                        cached_tokens: self.cached_prompt_tokens,
                        cache_write_tokens: self.cache_write_prompt_tokens,
                    }),
                completion_tokens_details: (self.reasoning_tokens > 0).then_some(OutDetails {
                    reasoning_tokens: self.reasoning_tokens,
                }),
                cost: self.cost,
            }
            .serialize(serializer)
        }
    }

    impl<'de> Deserialize<'de> for Usage {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let w = Wire::deserialize(deserializer)?;
            let details = w.prompt_tokens_details.unwrap_or_default();
            Ok(Usage {
                prompt_tokens: w.prompt_tokens,
                completion_tokens: w.completion_tokens,
                cached_prompt_tokens: details.cached_tokens,
                cache_write_prompt_tokens: details.cache_write_tokens,
                reasoning_tokens: w
                    .completion_tokens_details
                    .unwrap_or_default()
                    .reasoning_tokens,
                cost: w.cost,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_openai_response_and_chunk() {
        let resp: ChatResponse = serde_json::from_value(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                "finish_reason": "tool_calls", "logprobs": null}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
                      "prompt_tokens_details": {"cached_tokens": 4}}
        }))
        .unwrap();
        assert_eq!(resp.tool_calls()[0].name, "f");
        let usage = resp.usage.unwrap();
        assert_eq!(usage.cached_prompt_tokens, 4);
        assert_eq!(usage.total_tokens(), 12);

        let chunk: ChatChunk = serde_json::from_value(json!({
            "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a"}}]},
                         "finish_reason": null}]
        }))
        .unwrap();
        assert_eq!(
            chunk.choices[0].delta.tool_calls[0]
                .function
                .arguments
                .as_deref(),
            Some("{\"a")
        );
    }

    #[test]
    fn fields_we_do_not_know_pass_through_and_reasoning_is_read() {
        let body = json!({
            "id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "system_fingerprint": "fp_1", "service_tier": "default",
            "choices": [{"index": 0, "finish_reason": "stop",
                "logprobs": {"content": [{"token": "hi", "logprob": -0.1, "bytes": [104, 105], "top_logprobs": []}]},
                "message": {"role": "assistant", "content": "hi", "reasoning_content": "because", "annotations": []}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12,
                      "completion_tokens_details": {"reasoning_tokens": 5}}
        });
        let resp: ChatResponse = serde_json::from_value(body).unwrap();
        assert_eq!(
            resp.choices[0].message.reasoning.as_deref(),
            Some("because")
        );
        assert_eq!(resp.usage.unwrap().reasoning_tokens, 5);
        let out = serde_json::to_value(&resp).unwrap();
        assert_eq!(out["system_fingerprint"], "fp_1");
        assert_eq!(out["service_tier"], "default");
        assert_eq!(out["choices"][0]["logprobs"]["content"][0]["token"], "hi");
        assert_eq!(out["choices"][0]["message"]["annotations"], json!([]));
        assert_eq!(out["choices"][0]["message"]["reasoning"], "because");
        assert_eq!(
            out["usage"]["completion_tokens_details"]["reasoning_tokens"],
            5
        );
        let chunk: ChatChunk = serde_json::from_value(json!({
            "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "delta": {"reasoning": "so"}, "logprobs": null, "finish_reason": null}]
        }))
        .unwrap();
        assert_eq!(chunk.choices[0].delta.reasoning.as_deref(), Some("so"));
        let out = serde_json::to_value(&chunk).unwrap();
        assert_eq!(out["system_fingerprint"], "fp_1");
        assert!(out["choices"][0].get("logprobs").is_some());
    }

    #[test]
    fn usage_serializes_in_openai_shape_with_cost() {
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
            cached_prompt_tokens: 0,
            cost: Some(Money::from_nanos(1_500)),
            ..Usage::default()
        };
        let v = serde_json::to_value(usage).unwrap();
        assert_eq!(
            v,
            json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "cost": "0.0000015"})
        );
    }
}
