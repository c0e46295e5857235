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
