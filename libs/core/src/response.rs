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
    /// The cost charged, once the router has priced it.
    pub cost: Option<Money>,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total_tokens(&self) -> u32 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// One generated alternative.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Position among the choices.
    pub index: u32,
    /// The assistant message.
    pub message: Message,
    /// Why it stopped; absent if the provider did not say.
    pub finish_reason: Option<FinishReason>,
}

/// A complete (non-streamed) chat response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

fn chat_completion() -> String {
    "chat.completion".to_string()
}

fn chat_completion_chunk() -> String {
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
}

/// One choice's part of a stream chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Which choice.
    pub index: u32,
    /// What it adds.
    pub delta: Delta,
    /// Set on the choice's last chunk.
    pub finish_reason: Option<FinishReason>,
}

/// One server-sent event of a streamed response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

    #[derive(Serialize, Deserialize, Default)]
    struct Details {
        #[serde(default)]
        cached_tokens: u32,
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
        cost: Option<Money>,
    }

    impl Serialize for Usage {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            Wire {
                prompt_tokens: self.prompt_tokens,
                completion_tokens: self.completion_tokens,
                total_tokens: self.total_tokens(),
                prompt_tokens_details: (self.cached_prompt_tokens > 0).then_some(Details {
                    cached_tokens: self.cached_prompt_tokens,
                }),
                cost: self.cost,
            }
            .serialize(serializer)
        }
    }

    impl<'de> Deserialize<'de> for Usage {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let w = Wire::deserialize(deserializer)?;
            Ok(Usage {
                prompt_tokens: w.prompt_tokens,
                completion_tokens: w.completion_tokens,
                cached_prompt_tokens: w.prompt_tokens_details.unwrap_or_default().cached_tokens,
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
    fn usage_serializes_in_openai_shape_with_cost() {
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
            cached_prompt_tokens: 0,
            cost: Some(Money::from_nanos(1_500)),
        };
        let v = serde_json::to_value(usage).unwrap();
        assert_eq!(
            v,
            json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "cost": "0.0000015"})
        );
    }
}
