//! How a simulated provider counts prompt tokens: the router's own estimate (the default, so
//! figures in tests stay simple), or a real tokenizer with OpenAI's documented chat framing
//! (o200k_base, see `switchyard_apis::count`), for tests that must see the counts a real provider
//! reports.

use serde::{Deserialize, Serialize};

pub use switchyard_apis::count::{chat_framed, o200k};

/// A provider's prompt-token counting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptTokenizer {
    /// `ChatRequest::estimated_prompt_tokens`: about four characters per token.
    #[default]
    Estimate,
    /// OpenAI's o200k_base with the chat framing.
    O200k,
}

impl PromptTokenizer {
    /// The prompt tokens of a request of `messages` messages whose texts (system prompt
    /// included) are `texts`, offering `tools` (name and input schema).
    pub fn count(
        self,
        texts: &[String],
        messages: usize,
        tools: &[(&str, &serde_json::Value)],
    ) -> u32 {
        use switchyard_core::tokens::{PER_MESSAGE_OVERHEAD, estimate_text};
        match self {
            PromptTokenizer::Estimate => {
                let mut n: u32 = 3 + PER_MESSAGE_OVERHEAD * messages as u32;
                for t in texts {
                    n = n.saturating_add(estimate_text(t));
                }
                for (name, schema) in tools {
                    n = n
                        .saturating_add(estimate_text(name))
                        .saturating_add(estimate_text(&schema.to_string()));
                }
                n
            }
            PromptTokenizer::O200k => {
                let tools: String = tools.iter().map(|(n, s)| format!("{n}{s}")).collect();
                chat_framed(texts.iter().map(|t| ("user", None, t.clone())), &tools)
            }
        }
    }
}
