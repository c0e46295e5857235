//! Prompt tokens counted with a real tokenizer: OpenAI's o200k_base with the chat framing OpenAI
//! documents (3 tokens per message plus its role, 1 per name, 3 to prime the reply). Other
//! providers' tokenizers differ by some percent on ordinary text; this is the count a client is
//! given before any provider has seen the prompt (`count_tokens`), and the simulator's count.

use serde_json::{Value, json};
use switchyard_core::{ChatRequest, Content, ContentPart, ResponseFormat};

/// Tokens an image is counted as (OpenAI's low-detail figure).
pub const IMAGE_TOKENS: u32 = 85;

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

/// The prompt tokens of a normalized request: every message's text, tool calls and tool-call
/// id, images at [`IMAGE_TOKENS`], and the tool definitions and a response schema as JSON text.
pub fn chat_request(req: &ChatRequest) -> u32 {
    let mut images: u32 = 0;
    let messages: Vec<_> = req
        .messages
        .iter()
        .map(|m| {
            let mut text = m.text_content();
            if let Some(Content::Parts(parts)) = &m.content {
                let n = parts
                    .iter()
                    .filter(|p| matches!(p, ContentPart::ImageUrl { .. }))
                    .count();
                images = images.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
            }
            for call in &m.tool_calls {
                text.push_str(&call.name);
                text.push_str(&call.arguments);
            }
            if let Some(id) = &m.tool_call_id {
                text.push_str(id);
            }
            (m.role.as_str(), m.name.as_deref(), text)
        })
        .collect();
    let mut extra = String::new();
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "parameters": t.parameters}))
            .collect();
        extra = Value::Array(tools).to_string();
    }
    if let Some(ResponseFormat::JsonSchema { json_schema }) = &req.response_format {
        extra.push_str(&json_schema.schema.to_string());
    }
    chat_framed(messages, &extra).saturating_add(images.saturating_mul(IMAGE_TOKENS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_follows_openai() {
        // "hi" is one token; 3 + role "user" (1) + 1, plus 3 for the reply.
        assert_eq!(chat_framed([("user", None, "hi".to_string())], ""), 8);
        assert!(o200k("日本語のテキスト 🎉👩‍👩‍👧") > 5);
        assert_eq!(chat_request(&ChatRequest::user("m", "hi")), 8);
    }
}
