//! How a simulated provider counts prompt tokens: the router's own estimate (the default, so
//! figures in tests stay simple), or a real tokenizer with OpenAI's documented chat framing
//! (o200k_base; 3 tokens per message plus its role, 1 per name, 3 to prime the reply), for tests
//! that must see the counts a real provider reports.

use serde::{Deserialize, Serialize};

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

/// Tokens of `text` under o200k_base.
pub fn o200k(text: &str) -> u32 {
    u32::try_from(
        tiktoken_rs::o200k_base_singleton()
            .encode_with_special_tokens(text)
            .len(),
    )
    .unwrap_or(u32::MAX)
}

/// A chat prompt as OpenAI counts it: `messages` as (role, name, text), `tools` as JSON text.
pub fn chat_framed<'a>(
    messages: impl IntoIterator<Item = (&'a str, Option<&'a str>, String)>,
    tools: &str,
) -> u32 {
    let mut n: u32 = 3;
    for (role, name, text) in messages {
        n = n
            .saturating_add(3 + o200k(role))
            .saturating_add(o200k(&text));
        if let Some(name) = name {
            n = n.saturating_add(1 + o200k(name));
        }
    }
    if !tools.is_empty() {
        n = n.saturating_add(o200k(tools));
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_follows_openai() {
        // "hi" is one token; 3 + role "user" (1) + 1, plus 3 for the reply.
        assert_eq!(chat_framed([("user", None, "hi".to_string())], ""), 8);
        assert!(o200k("日本語のテキスト 🎉👩‍👩‍👧") > 5);
    }
}
