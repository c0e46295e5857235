//! The prompt bound a budget hold reserves is never below what real tokenizers count: OpenAI's
//! o200k_base and cl100k_base with OpenAI's documented chat framing (3 tokens per message, 1 per
//! name, 3 for the reply), over generated conversations of prose, code, CJK text and emoji, tool
//! definitions, tool calls and tool results.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::json;
use switchyard_core::ChatRequest;
use tiktoken_rs::CoreBPE;

fn openai_count(bpe: &CoreBPE, req: &serde_json::Value) -> usize {
    let tokens = |s: &str| bpe.encode_with_special_tokens(s).len();
    let mut n = 3;
    for m in req["messages"].as_array().unwrap() {
        n += 3;
        for (k, v) in m.as_object().unwrap() {
            match (k.as_str(), v) {
                ("content", serde_json::Value::String(s)) => n += tokens(s),
                ("role", serde_json::Value::String(s))
                | ("tool_call_id", serde_json::Value::String(s)) => n += tokens(s),
                ("name", serde_json::Value::String(s)) => n += tokens(s) + 1,
                ("tool_calls", calls) => n += tokens(&calls.to_string()),
                _ => {}
            }
        }
    }
    if let Some(tools) = req.get("tools") {
        n += tokens(&tools.to_string());
    }
    n
}

/// Text of the kinds that tokenize worst: prose, code, CJK, emoji, combining marks, whitespace.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z ,.]{0,200}",
        "[{}();=<>+\\-*/_a-z0-9 \n\t]{0,200}",
        "[\u{4e00}-\u{9fff}\u{3040}-\u{30ff}\u{ac00}-\u{d7af}]{0,120}",
        "[\u{1f300}-\u{1faff}\u{2600}-\u{27bf}\u{200d}\u{fe0f}]{0,80}",
        "[a\u{0300}-\u{036f}]{0,120}",
        "\\PC{0,150}",
        "[ \n]{0,200}",
    ]
}

fn message() -> impl Strategy<Value = serde_json::Value> {
    (
        prop::sample::select(vec!["system", "user", "assistant", "developer"]),
        prop::collection::vec(text(), 1..4),
        prop::option::of("[a-z_]{1,20}"),
    )
        .prop_map(|(role, parts, name)| {
            let mut m = json!({"role": role, "content": parts.concat()});
            if let Some(n) = name {
                m["name"] = json!(n);
            }
            m
        })
}

fn request() -> impl Strategy<Value = serde_json::Value> {
    (
        prop::collection::vec(message(), 1..8),
        prop::option::of((text(), "[a-z_]{1,30}", text())),
    )
        .prop_map(|(mut messages, tool)| {
            let mut req = json!({"model": "m"});
            if let Some((description, name, args)) = tool {
                req["tools"] = json!([{"type": "function", "function": {
                    "name": name, "description": description,
                    "parameters": {"type": "object", "properties": {"q": {"type": "string", "description": description}}}
                }}]);
                messages.push(json!({"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": json!({"q": args}).to_string()}}]}));
                messages.push(json!({"role": "tool", "tool_call_id": "call_1", "content": args}));
            }
            req["messages"] = json!(messages);
            req
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_hold_bound_is_at_least_what_real_tokenizers_count(body in request()) {
        let req: ChatRequest = serde_json::from_value(body.clone()).unwrap();
        let bound = req.prompt_token_bound() as usize;
        for bpe in [tiktoken_rs::o200k_base_singleton(), tiktoken_rs::cl100k_base_singleton()] {
            let counted = openai_count(bpe, &body);
            prop_assert!(bound >= counted, "bound {bound} < counted {counted} for {body}");
        }
        prop_assert!(bound >= req.estimated_prompt_tokens() as usize);
    }
}

#[test]
fn images_count_at_their_documented_maximum() {
    let req: ChatRequest = serde_json::from_value(json!({
        "model": "m",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
        ]}]
    }))
    .unwrap();
    assert!(req.prompt_token_bound() as u64 >= switchyard_core::tokens::BOUND_PER_IMAGE);
}
