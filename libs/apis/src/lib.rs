//! The client-facing API shapes beside chat completions, each translated to the normalized chat
//! request (the OpenAI chat-completions shape of `switchyard-core`) on the way in and from the
//! normalized response and stream chunks on the way out, so that every API goes through the same
//! router stages and any API reaches any upstream format.
//!
//! - [`messages`]: Anthropic's Messages API (`POST /v1/messages`, its SSE event sequence, its
//!   error envelope and `count_tokens`).
//! - [`responses`]: OpenAI's Responses API (`POST /v1/responses`, its semantic stream events).
//! - [`count`]: prompt token counts with a real tokenizer.

pub mod count;
pub mod messages;
pub mod responses;
#[cfg(test)]
mod test_support;

/// One server-sent event with its name (`event:`) and JSON data.
pub fn sse(name: &str, data: &serde_json::Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}
