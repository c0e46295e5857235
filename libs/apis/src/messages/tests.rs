use proptest::prelude::*;
use serde_json::{Value, json};
use switchyard_config::catalog::WireFormat;
use switchyard_core::{
    ChatResponse, Choice, Content, Delta, Error, ErrorClass, FinishReason, Message, Role, ToolCall,
    ToolChoice, Usage,
};
use switchyard_providers::sse::SseEvent;
use switchyard_providers::{Flow, Target, WireAdapter};

use super::*;
use crate::test_support::{chunk, reply_with, text_chunk, tool_chunk};

fn parse(v: Value) -> Result<ChatRequest, Error> {
    let req: MessagesRequest =
        serde_json::from_value(v).map_err(|e| Error::invalid(e.to_string()))?;
    req.to_chat(true)
}

fn target() -> Target {
    Target {
        endpoint: "ep".into(),
        provider: "anthropic".into(),
        format: WireFormat::Anthropic,
        base_url: "http://127.0.0.1:1".into(),
        upstream_model: "claude".into(),
        key: None,
        max_output: 4096,
        options: Default::default(),
        owner: None,
        capacity: None,
    }
}

#[test]
fn a_full_request_becomes_the_normalized_one() {
    let req = parse(json!({
        "model": "claude-x",
        "max_tokens": 512,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "let me look"},
                {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"x": 1}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a cat"}]},
                {"type": "text", "text": "and now?"}
            ]}
        ],
        "tools": [{"name": "look", "description": "look at it", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "stop_sequences": ["END"],
        "temperature": 0.5, "top_p": 0.9, "top_k": 40,
        "metadata": {"user_id": "u-1"},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "stream": true,
        "workflow": "main"
    }))
    .unwrap();
    let roles: Vec<Role> = req.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        vec![
            Role::System,
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::User
        ]
    );
    assert_eq!(req.messages[0].text_content(), "be brief");
    let Some(Content::Parts(parts)) = &req.messages[1].content else {
        panic!("parts")
    };
    assert!(
        matches!(&parts[1], ContentPart::ImageUrl { image_url } if image_url.url == "data:image/png;base64,AAAA")
    );
    assert_eq!(req.messages[2].text_content(), "let me look");
    assert_eq!(req.messages[2].tool_calls[0].arguments, r#"{"x":1}"#);
    assert_eq!(req.messages[3].tool_call_id.as_deref(), Some("toolu_1"));
    assert_eq!(req.messages[3].text_content(), "a cat");
    assert_eq!(req.tool_choice, Some(ToolChoice::Required));
    assert_eq!(req.parallel_tool_calls, Some(false));
    assert_eq!(req.max_output_tokens(), Some(512));
    assert_eq!(req.stop, vec!["END".to_string()]);
    assert_eq!(req.top_k, Some(40));
    assert_eq!(req.user.as_deref(), Some("u-1"));
    assert_eq!(req.reasoning.and_then(|r| r.max_tokens), Some(2048));
    assert!(req.stream);
    assert_eq!(req.workflow.as_deref(), Some("main"));
}

#[test]
fn what_cannot_be_served_is_refused_naming_the_field() {
    let base =
        || json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let err = |v: Value| parse(v).unwrap_err().to_string();
    let mut v = base();
    v.as_object_mut().unwrap().remove("max_tokens");
    assert!(err(v).contains("max_tokens"));
    let mut v = base();
    v["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}]);
    assert!(err(v).contains("tools[0].type"));
    let mut v = base();
    v["messages"] = json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {"type": "url", "url": "http://x"}}]}]}]);
    assert!(err(v).contains("messages[0].content[0].content[0]"));
    let mut v = base();
    v["service_tier"] = json!("auto");
    assert!(err(v).contains("service_tier"));
    let mut v = base();
    v["messages"] = json!([{"role": "user", "content": [{"type": "document", "source": {}}]}]);
    assert!(err(v).contains("document"));
    let mut v = base();
    v["messages"] = json!([]);
    assert!(err(v).contains("messages"));
}

#[test]
fn a_reply_is_a_message_with_blocks_and_usage() {
    let resp = ChatResponse {
        id: "x".into(),
        object: "chat.completion".into(),
        created: 0,
        model: "m".into(),
        provider: Some("p".into()),
        choices: vec![Choice {
            index: 0,
            message: Message {
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "f".into(),
                    arguments: r#"{"a":1}"#.into(),
                }],
                ..Message::text(Role::Assistant, "sure")
            },
            finish_reason: Some(FinishReason::ToolCalls),
            extra: Default::default(),
        }],
        usage: Some(Usage {
            prompt_tokens: 10,
            completion_tokens: 3,
            cached_prompt_tokens: 4,
            cost: None,
            ..Usage::default()
        }),
        extra: Default::default(),
    };
    let m = message_json(&resp, "msg_1");
    assert_eq!(m["type"], "message");
    assert_eq!(m["content"][0], json!({"type": "text", "text": "sure"}));
    assert_eq!(m["content"][1]["input"], json!({"a": 1}));
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(m["usage"]["input_tokens"], 6);
    assert_eq!(m["usage"]["cache_read_input_tokens"], 4);
}

#[test]
fn errors_use_anthropics_envelope() {
    let e = Error::new(ErrorClass::Unavailable, "every provider failed");
    let v = error_json(&e);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "overloaded_error");
    assert_eq!(
        error_type(ErrorClass::BudgetExceeded),
        "billing_error".to_string()
    );
    assert_eq!(error_type(ErrorClass::RateLimited), "rate_limit_error");
}

/// What the Anthropic-format adapter's own decoder (the upstream side) makes of our events:
/// text, tool calls (id, name, arguments) and the finish reason.
fn decode(events: &[Event]) -> (String, Vec<(String, String, String)>, Option<FinishReason>) {
    let mut decoder = switchyard_providers::anthropic::Anthropic::DIRECT.decoder(&target());
    let mut chunks = Vec::new();
    let mut done = false;
    for (name, data) in events {
        let e = SseEvent {
            event: name.to_string(),
            data: data.to_string(),
        };
        if decoder.event(&e, &mut chunks).unwrap() == Flow::Done {
            done = true;
        }
    }
    assert!(done, "no message_stop");
    let mut text = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = None;
    for c in chunks {
        for ch in c.choices {
            text.push_str(ch.delta.content.as_deref().unwrap_or(""));
            for t in ch.delta.tool_calls {
                let i = t.index as usize;
                if calls.len() <= i {
                    calls.resize(i + 1, Default::default());
                }
                if let Some(id) = t.id {
                    calls[i].0 = id;
                }
                if let Some(n) = t.function.name {
                    calls[i].1 = n;
                }
                calls[i]
                    .2
                    .push_str(t.function.arguments.as_deref().unwrap_or(""));
            }
            finish = ch.finish_reason.or(finish);
        }
    }
    (text, calls, finish)
}

#[test]
fn a_stream_is_the_documented_event_sequence() {
    let mut enc = StreamEncoder::new("msg_1".into(), 12);
    let mut events = Vec::new();
    for c in [
        chunk(
            Delta {
                role: Some(Role::Assistant),
                ..Delta::default()
            },
            None,
        ),
        text_chunk("Hel"),
        text_chunk("lo"),
        tool_chunk(0, Some("call_1"), Some("f"), ""),
        tool_chunk(0, None, None, r#"{"a":"#),
        tool_chunk(0, None, None, "1}"),
        chunk(Delta::default(), Some(FinishReason::ToolCalls)),
    ] {
        events.extend(enc.chunk(&c));
    }
    let usage = Usage {
        prompt_tokens: 12,
        completion_tokens: 5,
        ..Usage::default()
    };
    events.extend(enc.done(&usage, Map::new()));
    let names: Vec<&str> = events.iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        vec![
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[6].1["index"], 1);
    assert_eq!(events[6].1["content_block"]["type"], "tool_use");
    assert_eq!(events[10].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[10].1["usage"]["output_tokens"], 5);
    let (t, calls, finish) = decode(&events);
    assert_eq!(t, "Hello");
    assert_eq!(
        calls,
        vec![("call_1".into(), "f".into(), r#"{"a":1}"#.into())]
    );
    assert_eq!(finish, Some(FinishReason::ToolCalls));
    assert!(crate::sse(events[0].0, &events[0].1).starts_with("event: message_start\ndata: {"));

    let mut enc = StreamEncoder::new("msg_2".into(), 1);
    let mut events = enc.chunk(&text_chunk("partial"));
    events.extend(enc.failed(&Error::new(ErrorClass::Unavailable, "cut")));
    assert_eq!(events.last().unwrap().0, "error");
    assert_eq!(
        events.last().unwrap().1["error"]["type"],
        "overloaded_error"
    );
}

#[derive(Debug, Clone)]
enum Turn {
    User(String),
    /// Text (possibly empty) and tool calls (name, argument value).
    Assistant(String, Vec<(String, i64)>),
    /// Results for the previous assistant turn's calls, then optional text.
    Results(Vec<String>, String),
}

fn word() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,.!?é日]{1,24}"
}

fn conversation() -> impl Strategy<Value = (Option<String>, Vec<Turn>, usize)> {
    let turn = prop_oneof![
        word().prop_map(Turn::User),
        (
            prop_oneof![Just(String::new()), word()],
            prop::collection::vec(("[a-z_]{1,8}", any::<i64>()), 0..3)
        )
            .prop_map(|(t, c)| Turn::Assistant(t, c)),
        (
            prop::collection::vec(word(), 1..3),
            prop_oneof![Just(String::new()), word()]
        )
            .prop_map(|(r, t)| Turn::Results(r, t)),
    ];
    (
        prop::option::of(word()),
        prop::collection::vec(turn, 1..8),
        0usize..4,
    )
}

/// The conversation as a Messages request: user and assistant turns as blocks, each tool result
/// answering a generated call id.
fn messages_body(system: &Option<String>, turns: &[Turn], choice: usize) -> Value {
    let mut messages = Vec::new();
    let mut call = 0;
    for t in turns {
        match t {
            Turn::User(text) => {
                messages.push(json!({"role": "user", "content": [{"type": "text", "text": text}]}))
            }
            Turn::Assistant(text, calls) => {
                let mut blocks = Vec::new();
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for (name, v) in calls {
                    call += 1;
                    blocks.push(json!({"type": "tool_use", "id": format!("toolu_{call}"), "name": name, "input": {"v": v}}));
                }
                if blocks.is_empty() {
                    blocks.push(json!({"type": "text", "text": "ok"}));
                }
                messages.push(json!({"role": "assistant", "content": blocks}));
            }
            Turn::Results(results, text) => {
                let mut blocks: Vec<Value> = results
                    .iter()
                    .enumerate()
                    .map(|(i, r)| json!({"type": "tool_result", "tool_use_id": format!("toolu_r{i}"), "content": r}))
                    .collect();
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                messages.push(json!({"role": "user", "content": blocks}));
            }
        }
    }
    let choice = [
        json!({"type": "auto"}),
        json!({"type": "any"}),
        json!({"type": "tool", "name": "look"}),
        json!({"type": "none"}),
    ][choice]
        .clone();
    let mut body = json!({
        "model": "m", "max_tokens": 100, "messages": messages,
        "tools": [{"name": "look", "description": "d", "input_schema": {"type": "object", "properties": {"v": {"type": "integer"}}}}],
        "tool_choice": choice,
    });
    if let Some(s) = system {
        body["system"] = json!(s);
    }
    body
}

/// Merges consecutive same-role messages, as the Messages API sees them.
fn merged(messages: &Value) -> Vec<(String, Vec<Value>)> {
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for m in messages.as_array().unwrap() {
        let role = m["role"].as_str().unwrap().to_string();
        let blocks: Vec<Value> = match &m["content"] {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(a) => a.clone(),
            _ => Vec::new(),
        };
        match out.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => out.push((role, blocks)),
        }
    }
    out
}

proptest! {
    /// A Messages request, normalized, then encoded by the Anthropic-format adapter, is the same
    /// conversation: roles, text, tool calls (id, name, input), tool results and tool choice.
    #[test]
    fn messages_to_normalized_to_messages_keeps_the_conversation(
        (system, turns, choice) in conversation()
    ) {
        let body = messages_body(&system, &turns, choice);
        let chat = parse(body.clone()).unwrap();
        let wire = switchyard_providers::anthropic::wire_request(&target(), &chat, false).unwrap();
        prop_assert_eq!(merged(&wire["messages"]), merged(&body["messages"]));
        prop_assert_eq!(wire.get("system").cloned(), system.map(Value::String));
        let mut sent_choice = body["tool_choice"].clone();
        sent_choice.as_object_mut().unwrap().remove("disable_parallel_tool_use");
        prop_assert_eq!(&wire["tool_choice"], &sent_choice);
        prop_assert_eq!(&wire["tools"][0]["input_schema"], &body["tools"][0]["input_schema"]);
    }

    /// A normalized reply encoded as a Messages reply and read back by the Anthropic-format
    /// adapter keeps its text, tool calls and stop reason; its stream, re-encoded as Messages
    /// events and decoded again, too.
    #[test]
    fn replies_and_streams_survive_the_round_trip(
        text_parts in prop::collection::vec(word(), 0..4),
        calls in prop::collection::vec(("[a-z_]{1,8}", any::<i64>()), 0..3),
        finish in prop_oneof![Just(FinishReason::Stop), Just(FinishReason::Length), Just(FinishReason::ToolCalls)],
    ) {
        let text: String = text_parts.concat();
        let tool_calls: Vec<ToolCall> = calls.iter().enumerate().map(|(i, (n, v))| ToolCall {
            id: format!("call_{i}"), name: n.clone(), arguments: json!({"v": v}).to_string(),
        }).collect();
        let resp = ChatResponse {
            id: "x".into(), object: "chat.completion".into(), created: 0, model: "m".into(), provider: None,
            choices: vec![Choice { index: 0, message: Message { tool_calls: tool_calls.clone(), ..Message::text(Role::Assistant, text.clone()) }, finish_reason: Some(finish), extra: Default::default() }],
            usage: Some(Usage { prompt_tokens: 5, completion_tokens: 7, ..Usage::default() }),
            extra: Default::default(),
        };
        let m = message_json(&resp, "msg_x");
        let back = switchyard_providers::anthropic::Anthropic::DIRECT
            .parse_response(&target(), m.to_string().as_bytes()).unwrap();
        prop_assert_eq!(back.choices[0].message.text_content(), text.clone());
        prop_assert_eq!(&back.choices[0].message.tool_calls, &tool_calls);
        prop_assert_eq!(back.choices[0].finish_reason, Some(finish));
        prop_assert_eq!(back.usage.unwrap().completion_tokens, 7);

        let mut enc = StreamEncoder::new("msg_x".into(), 5);
        let mut events = enc.chunk(&chunk(Delta { role: Some(Role::Assistant), ..Delta::default() }, None));
        for p in &text_parts {
            events.extend(enc.chunk(&text_chunk(p)));
        }
        for (i, c) in tool_calls.iter().enumerate() {
            let (a, b) = c.arguments.split_at(c.arguments.len() / 2);
            events.extend(enc.chunk(&tool_chunk(i as u32, Some(&c.id), Some(&c.name), a)));
            events.extend(enc.chunk(&tool_chunk(i as u32, None, None, b)));
        }
        events.extend(enc.chunk(&chunk(Delta::default(), Some(finish))));
        events.extend(enc.done(&Usage::default(), Map::new()));
        let (t, got, f) = decode(&events);
        prop_assert_eq!(t, text);
        let want: Vec<(String, String, String)> = tool_calls.iter().map(|c| (c.id.clone(), c.name.clone(), c.arguments.clone())).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(f, Some(finish));
    }
}

#[test]
fn reasoning_is_a_thinking_block_both_ways() {
    // In: an assistant thinking block with its signature becomes the message's reasoning, and
    // the Anthropic-format adapter sends it back as the thinking block it was.
    let chat = parse(json!({"model": "m", "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 1500},
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "let me see", "signature": "sig-1"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]}
        ]}))
    .unwrap();
    assert_eq!(chat.messages[1].reasoning.as_deref(), Some("let me see"));
    assert_eq!(
        chat.messages[1].reasoning_signature.as_deref(),
        Some("sig-1")
    );
    let wire = switchyard_providers::anthropic::wire_request(&target(), &chat, false).unwrap();
    assert_eq!(
        wire["messages"][1]["content"][0],
        json!({"type": "thinking", "thinking": "let me see", "signature": "sig-1"})
    );
    assert_eq!(wire["thinking"]["budget_tokens"], 1500);
    // The OpenAI-format adapter never sends earlier reasoning back.
    let openai = switchyard_providers::openai::wire_request(&target(), &chat, false);
    assert!(openai.messages.iter().all(|m| m.reasoning.is_none()));

    // Out: reasoning leads the reply as a thinking block, and the stream as thinking deltas.
    let mut resp = reply_with(Message {
        reasoning: Some("hmm".into()),
        reasoning_signature: Some("sig-2".into()),
        ..Message::text(Role::Assistant, "answer")
    });
    let m = message_json(&resp, "msg_1");
    assert_eq!(
        m["content"][0],
        json!({"type": "thinking", "thinking": "hmm", "signature": "sig-2"})
    );
    assert_eq!(m["content"][1]["text"], "answer");
    resp.usage = None;
    let mut enc = StreamEncoder::new("msg_1".into(), 1);
    let mut events = enc.chunk(&chunk(
        Delta {
            reasoning: Some("hmm".into()),
            ..Delta::default()
        },
        None,
    ));
    events.extend(enc.chunk(&chunk(
        Delta {
            reasoning_signature: Some("sig-2".into()),
            ..Delta::default()
        },
        None,
    )));
    events.extend(enc.chunk(&text_chunk("answer")));
    events.extend(enc.chunk(&chunk(Delta::default(), Some(FinishReason::Stop))));
    events.extend(enc.done(&Usage::default(), Map::new()));
    let kinds: Vec<String> = events
        .iter()
        .map(|(n, d)| {
            let sub = d["delta"]["type"]
                .as_str()
                .or(d["content_block"]["type"].as_str())
                .unwrap_or("");
            format!("{n}:{sub}")
        })
        .collect();
    assert_eq!(
        kinds[2..8],
        [
            "content_block_start:thinking",
            "content_block_delta:thinking_delta",
            "content_block_delta:signature_delta",
            "content_block_stop:",
            "content_block_start:text",
            "content_block_delta:text_delta"
        ]
    );
    // What the upstream side decodes from it again: the reasoning and its signature.
    let mut decoder = switchyard_providers::anthropic::Anthropic::DIRECT.decoder(&target());
    let mut chunks = Vec::new();
    for (name, data) in &events {
        let e = SseEvent {
            event: name.to_string(),
            data: data.to_string(),
        };
        decoder.event(&e, &mut chunks).unwrap();
    }
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| c.choices[0].delta.reasoning.clone())
        .collect();
    assert_eq!(reasoning, "hmm");
    assert!(
        chunks
            .iter()
            .any(|c| c.choices[0].delta.reasoning_signature.as_deref() == Some("sig-2"))
    );
}

#[test]
fn cache_breakpoints_reach_anthropic_format_upstreams_only() {
    let eph = json!({"type": "ephemeral"});
    let chat = parse(json!({"model": "m", "max_tokens": 100,
    "system": [{"type": "text", "text": "a long system prompt", "cache_control": eph}],
    "messages": [{"role": "user", "content": [
        {"type": "text", "text": "a long document", "cache_control": eph},
        {"type": "text", "text": "the question"}
    ]}]}))
    .unwrap();
    let wire = switchyard_providers::anthropic::wire_request(&target(), &chat, false).unwrap();
    assert_eq!(
        wire["system"],
        json!([{"type": "text", "text": "a long system prompt", "cache_control": eph}])
    );
    assert_eq!(wire["messages"][0]["content"][0]["cache_control"], eph);
    assert!(
        wire["messages"][0]["content"][1]
            .get("cache_control")
            .is_none()
    );
    let openai = switchyard_providers::openai::wire_request(&target(), &chat, false);
    let body = serde_json::to_value(&openai).unwrap();
    assert!(!body.to_string().contains("cache_control"), "{body}");
}
