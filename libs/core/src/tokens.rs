//! Prompt sizes before any provider has tokenized the prompt.
//!
//! Two figures, for two jobs. [`ChatRequest::estimated_prompt_tokens`] is a typical size (about
//! four characters per token, plus framing): context fit and what a cancelled stream is billed
//! for at least. [`ChatRequest::prompt_token_bound`] is an upper bound of what any provider's
//! tokenizer counts, for the budget hold, so that a hold really bounds the spend:
//!
//! - text counts its UTF-8 bytes: a byte-level BPE (OpenAI's o200k and cl100k, Anthropic's) or a
//!   SentencePiece vocabulary with byte fallback (Gemini, Llama, Mistral) never makes more
//!   ordinary tokens than the text has bytes, since each token covers at least one byte;
//! - each message adds [`BOUND_PER_MESSAGE`] for its chat-format special tokens (OpenAI documents
//!   3 per message, 1 per name), plus its role, name and tool-call id as text;
//! - the request adds [`BOUND_PER_REQUEST`] (the reply's priming, 3 for OpenAI);
//! - tools and a JSON Schema response format count their JSON text plus [`BOUND_PER_TOOL`] for
//!   the framing a provider wraps them in;
//! - an image counts [`BOUND_PER_IMAGE`], above the documented maximum of the providers' image
//!   accounting (OpenAI's high-detail tiles and patches, Anthropic's pixels / 750 capped near
//!   1.15 megapixels, Gemini's 258 per tile).
//!
//! A provider that still counts more (a tokenizer with images priced higher than these) is
//! caught after the fact: its reply is charged as reported and flagged as over its hold.

use crate::chat::{ChatRequest, Content, ContentPart, ResponseFormat};

/// Bound on one message's chat-format tokens beyond its text.
pub const BOUND_PER_MESSAGE: u64 = 8;
/// Bound on the tokens a request adds beyond its messages (the reply's priming).
pub const BOUND_PER_REQUEST: u64 = 16;
/// Bound on the framing of one tool definition or response schema beyond its JSON text.
pub const BOUND_PER_TOOL: u64 = 48;
/// Bound on one image's tokens.
pub const BOUND_PER_IMAGE: u64 = 3_800;

/// Tokens counted for each message's framing (role, separators).
pub const PER_MESSAGE_OVERHEAD: u32 = 4;
/// Tokens counted for an image part, whatever its size.
pub const PER_IMAGE: u32 = 85;

/// Estimated tokens of a piece of text.
pub fn estimate_text(text: &str) -> u32 {
    let chars = text.chars().count();
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
}

impl ChatRequest {
    /// Estimated prompt tokens: message text, tool-call arguments, tool definitions and framing.
    pub fn estimated_prompt_tokens(&self) -> u32 {
        let mut total: u32 = 3;
        for message in &self.messages {
            total = total.saturating_add(PER_MESSAGE_OVERHEAD);
            match &message.content {
                Some(Content::Text(text)) => total = total.saturating_add(estimate_text(text)),
                Some(Content::Parts(parts)) => {
                    for part in parts {
                        let n = match part {
                            ContentPart::Text { text, .. } => estimate_text(text),
                            ContentPart::ImageUrl { .. } => PER_IMAGE,
                        };
                        total = total.saturating_add(n);
                    }
                }
                None => {}
            }
            for call in &message.tool_calls {
                total = total
                    .saturating_add(estimate_text(&call.name))
                    .saturating_add(estimate_text(&call.arguments));
            }
        }
        for tool in &self.tools {
            let schema = tool.parameters.to_string();
            total = total
                .saturating_add(estimate_text(&tool.name))
                .saturating_add(estimate_text(tool.description.as_deref().unwrap_or("")))
                .saturating_add(estimate_text(&schema));
        }
        total
    }
}

impl ChatRequest {
    /// An upper bound of the prompt tokens any provider counts for this request (see the
    /// module docs for why it holds); what a budget hold reserves for the prompt.
    pub fn prompt_token_bound(&self) -> u32 {
        let bytes = |s: &str| s.len() as u64;
        let mut total = BOUND_PER_REQUEST;
        for m in &self.messages {
            total += BOUND_PER_MESSAGE;
            total += bytes(m.role.as_str());
            total += m.name.as_deref().map_or(0, bytes);
            total += m.tool_call_id.as_deref().map_or(0, bytes);
            total += m.refusal.as_deref().map_or(0, bytes);
            match &m.content {
                Some(Content::Text(text)) => total += bytes(text),
                Some(Content::Parts(parts)) => {
                    for part in parts {
                        total += match part {
                            ContentPart::Text { text, .. } => bytes(text),
                            ContentPart::ImageUrl { .. } => BOUND_PER_IMAGE,
                        };
                    }
                }
                None => {}
            }
            for call in &m.tool_calls {
                total += BOUND_PER_MESSAGE + bytes(&call.id) + bytes(&call.name);
                total += bytes(&call.arguments);
            }
        }
        for tool in &self.tools {
            total += BOUND_PER_TOOL + bytes(&tool.name);
            total += tool.description.as_deref().map_or(0, bytes);
            total += bytes(&tool.parameters.to_string());
        }
        if let Some(ResponseFormat::JsonSchema { json_schema }) = &self.response_format {
            total += BOUND_PER_TOOL + bytes(&json_schema.name);
            total += json_schema.description.as_deref().map_or(0, bytes);
            total += bytes(&json_schema.schema.to_string());
        }
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Message, Role};

    #[test]
    fn estimate_grows_with_text_and_counts_framing() {
        assert_eq!(estimate_text(""), 0);
        assert_eq!(estimate_text("abcd"), 1);
        assert_eq!(estimate_text("abcde"), 2);
        let short = ChatRequest::user("m", "hi");
        let long = ChatRequest::user("m", &"word ".repeat(400));
        assert_eq!(
            short.estimated_prompt_tokens(),
            3 + PER_MESSAGE_OVERHEAD + 1
        );
        assert!(long.estimated_prompt_tokens() > 500);
        let mut two = short.clone();
        two.messages.push(Message::text(Role::Assistant, "ok"));
        assert!(two.estimated_prompt_tokens() > short.estimated_prompt_tokens());
    }
}
