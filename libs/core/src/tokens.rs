//! Prompt-size estimation. Routing decisions (context fit, maximum cost) happen before any
//! provider has tokenized the prompt, so they use this deterministic estimate: about four
//! characters per token, plus a small per-message overhead. It deliberately errs high.

use crate::chat::{ChatRequest, Content, ContentPart};

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
                            ContentPart::Text { text } => estimate_text(text),
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
