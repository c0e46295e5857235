//! The request parameters an endpoint may or may not support. The catalog lists them per endpoint;
//! the planner compares them with what a request uses (`require_parameters`).

use serde::{Deserialize, Serialize};

/// A request parameter whose support differs between endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parameter {
    /// Function tools.
    Tools,
    /// Forcing or forbidding tool use.
    ToolChoice,
    /// Several tool calls in one turn.
    ParallelToolCalls,
    /// `response_format` of type `json_object`.
    ResponseFormat,
    /// `response_format` of type `json_schema` (structured outputs).
    JsonSchema,
    /// Stop sequences.
    Stop,
    /// Deterministic sampling seed.
    Seed,
    /// Token log-probabilities.
    Logprobs,
    /// Top-N log-probabilities.
    TopLogprobs,
    /// Sampling temperature.
    Temperature,
    /// Nucleus sampling.
    TopP,
    /// Output length cap.
    MaxTokens,
    /// Frequency penalty.
    FrequencyPenalty,
    /// Presence penalty.
    PresencePenalty,
    /// Logit bias.
    LogitBias,
    /// Top-k sampling.
    TopK,
    /// Reasoning (extended thinking) controls.
    Reasoning,
    /// Continuing a trailing assistant message (an assistant prefill): natively in Anthropic's
    /// formats and Bedrock's, with `"prefix": true` on OpenAI-compatible ones that take it.
    /// Mid-stream continuation uses it on endpoints that list it.
    Prefill,
}

impl Parameter {
    /// Every parameter, in declaration order.
    pub const ALL: [Parameter; 18] = [
        Parameter::Tools,
        Parameter::ToolChoice,
        Parameter::ParallelToolCalls,
        Parameter::ResponseFormat,
        Parameter::JsonSchema,
        Parameter::Stop,
        Parameter::Seed,
        Parameter::Logprobs,
        Parameter::TopLogprobs,
        Parameter::Temperature,
        Parameter::TopP,
        Parameter::MaxTokens,
        Parameter::FrequencyPenalty,
        Parameter::PresencePenalty,
        Parameter::LogitBias,
        Parameter::TopK,
        Parameter::Reasoning,
        Parameter::Prefill,
    ];

    /// The snake_case name used in config and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Parameter::Tools => "tools",
            Parameter::ToolChoice => "tool_choice",
            Parameter::ParallelToolCalls => "parallel_tool_calls",
            Parameter::ResponseFormat => "response_format",
            Parameter::JsonSchema => "json_schema",
            Parameter::Stop => "stop",
            Parameter::Seed => "seed",
            Parameter::Logprobs => "logprobs",
            Parameter::TopLogprobs => "top_logprobs",
            Parameter::Temperature => "temperature",
            Parameter::TopP => "top_p",
            Parameter::MaxTokens => "max_tokens",
            Parameter::FrequencyPenalty => "frequency_penalty",
            Parameter::PresencePenalty => "presence_penalty",
            Parameter::LogitBias => "logit_bias",
            Parameter::TopK => "top_k",
            Parameter::Reasoning => "reasoning",
            Parameter::Prefill => "prefill",
        }
    }

    /// Parameters that change what the response must look like; an endpoint that ignores them
    /// returns something the caller cannot use, so they always require support.
    pub fn always_required(self) -> bool {
        matches!(
            self,
            Parameter::Tools
                | Parameter::ToolChoice
                | Parameter::ResponseFormat
                | Parameter::JsonSchema
        )
    }
}

impl std::fmt::Display for Parameter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_serde() {
        for p in Parameter::ALL {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
    }
}
