use proptest::prelude::*;
use serde_json::{Value, json};
use switchyard_core::{
    ChatResponse, Delta, Error, ErrorClass, FinishReason, Message, Role, ToolCall, ToolChoice,
    Usage,
};

use super::*;
use crate::test_support::{chunk, reply_with, text_chunk, tool_chunk};

fn parse(v: Value) -> Result<ChatRequest, Error> {
    let req: ResponsesRequest =
        serde_json::from_value(v).map_err(|e| Error::invalid(e.to_string()))?;
    let input = req.input_messages()?;
    req.to_chat(Vec::new(), input)
}

fn env() -> Envelope {
    Envelope {
        id: "resp_1".into(),
        created_at: 7,
        echo: ResponsesRequest::default().echo(),
    }
}

#[test]
fn a_full_request_becomes_the_normalized_one() {
    let req = parse(json!({
        "model": "gpt-x",
        "instructions": "be brief",
        "input": [
            {"role": "user", "content": "weather?"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "checking"}]},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": "{\"city\":\"Rome\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "rain"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"role": "user", "content": [{"type": "input_text", "text": "and "}, {"type": "input_image", "image_url": "https://x/y.png"}]}
        ],
        "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "weather"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true}},
        "max_output_tokens": 300,
        "reasoning": {"effort": "low", "summary": "auto"},
        "metadata": {"ticket": "42"},
        "store": true,
        "stream": true
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
            Role::Tool,
            Role::User
        ]
    );
    assert_eq!(req.messages[2].text_content(), "checking");
    assert_eq!(req.messages[2].tool_calls.len(), 2);
    assert_eq!(req.messages[4].text_content(), "rain");
    assert_eq!(
        req.tool_choice,
        Some(ToolChoice::Function("weather".into()))
    );
    assert!(matches!(
        req.response_format,
        Some(ResponseFormat::JsonSchema { .. })
    ));
    assert_eq!(req.max_output_tokens(), Some(300));
    assert_eq!(
        req.reasoning.and_then(|r| r.effort),
        Some(ReasoningEffort::Low)
    );
    assert!(req.stream);
}

#[test]
fn what_cannot_be_served_is_refused_naming_the_field() {
    let base = || json!({"model": "m", "input": "hi"});
    let err = |v: Value| parse(v).unwrap_err().to_string();
    let mut v = base();
    v["tools"] = json!([{"type": "web_search_preview"}]);
    assert!(err(v).contains("tools[0].type"));
    let mut v = base();
    v["tool_choice"] = json!({"type": "file_search"});
    assert!(err(v).contains("tool_choice.type"));
    let mut v = base();
    v["include"] = json!(["reasoning.encrypted_content"]);
    assert!(err(v).contains("include"));
    let mut v = base();
    v["truncation"] = json!("auto");
    assert!(err(v).contains("truncation"));
    let mut v = base();
    v["input"] = json!([{"type": "item_reference", "id": "x"}]);
    assert!(err(v).contains("input[0].type"));
    let mut v = base();
    v["input"] = json!([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]);
    assert!(err(v).contains("input[0].content[0].type"));
    let mut v = base();
    v["background"] = json!(true);
    assert!(err(v).contains("background"));
    let mut v = base();
    v["tools"] = json!([{"type": "function", "name": "f", "bogus": 1}]);
    assert!(err(v).contains("bogus"));
    assert!(err(json!({"model": "m", "instructions": "x"})).contains("input"));
}

fn reply(text: &str, calls: Vec<ToolCall>, finish: FinishReason) -> ChatResponse {
    let mut r = reply_with(Message {
        tool_calls: calls,
        ..Message::text(Role::Assistant, text)
    });
    r.choices[0].finish_reason = Some(finish);
    r.usage = Some(Usage {
        prompt_tokens: 10,
        completion_tokens: 4,
        cached_prompt_tokens: 2,
        ..Usage::default()
    });
    r
}

#[test]
fn a_reply_is_a_response_object() {
    let call = ToolCall {
        id: "call_1".into(),
        name: "f".into(),
        arguments: "{}".into(),
    };
    let r = response_json(
        &reply("hi", vec![call.clone()], FinishReason::ToolCalls),
        &env(),
    );
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["output"][0]["content"][0]["text"], "hi");
    assert_eq!(r["output"][1]["type"], "function_call");
    assert_eq!(r["output"][1]["call_id"], "call_1");
    assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 2);
    assert_eq!(r["usage"]["total_tokens"], 14);
    assert_eq!(r["store"], true);
    let back = assistant_message(&r);
    assert_eq!(back.text_content(), "hi");
    assert_eq!(back.tool_calls, vec![call]);
    let r = response_json(&reply("cut", vec![], FinishReason::Length), &env());
    assert_eq!(r["status"], "incomplete");
    assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
}

/// What a client accumulating the events (as the official SDK does) ends up with, checked
/// against the final response.
fn accumulate(events: &[Event]) -> Value {
    let mut snapshot = Value::Null;
    let mut last_seq = None;
    for (name, data) in events {
        assert_eq!(data["type"], name.as_str());
        let seq = data["sequence_number"].as_u64().unwrap();
        assert!(last_seq.is_none_or(|l| seq == l + 1), "sequence {seq}");
        last_seq = Some(seq);
        match name.as_str() {
            "response.created" => snapshot = data["response"].clone(),
            "response.output_item.added" => {
                let i = data["output_index"].as_u64().unwrap() as usize;
                let output = snapshot["output"].as_array_mut().unwrap();
                assert_eq!(output.len(), i);
                output.push(data["item"].clone());
            }
            "response.content_part.added" => {
                let i = data["output_index"].as_u64().unwrap() as usize;
                snapshot["output"][i]["content"]
                    .as_array_mut()
                    .unwrap()
                    .push(data["part"].clone());
            }
            "response.output_text.delta" => {
                let i = data["output_index"].as_u64().unwrap() as usize;
                let part = &mut snapshot["output"][i]["content"][0]["text"];
                *part = json!(format!(
                    "{}{}",
                    part.as_str().unwrap(),
                    data["delta"].as_str().unwrap()
                ));
            }
            "response.function_call_arguments.delta" => {
                let i = data["output_index"].as_u64().unwrap() as usize;
                let args = &mut snapshot["output"][i]["arguments"];
                *args = json!(format!(
                    "{}{}",
                    args.as_str().unwrap(),
                    data["delta"].as_str().unwrap()
                ));
            }
            "response.output_text.done" => {
                let i = data["output_index"].as_u64().unwrap() as usize;
                assert_eq!(snapshot["output"][i]["content"][0]["text"], data["text"]);
            }
            "response.function_call_arguments.done" => {
                let i = data["output_index"].as_u64().unwrap() as usize;
                assert_eq!(snapshot["output"][i]["arguments"], data["arguments"]);
            }
            "response.output_item.done" => {
                let i = data["output_index"].as_u64().unwrap() as usize;
                snapshot["output"][i]["status"] = json!("completed");
                assert_eq!(snapshot["output"][i], data["item"]);
            }
            "response.completed" | "response.incomplete" => {
                assert_eq!(snapshot["output"], data["response"]["output"]);
                return data["response"].clone();
            }
            "response.in_progress" | "response.content_part.done" => {}
            other => panic!("unexpected {other}"),
        }
    }
    panic!("no final event")
}

#[test]
fn a_stream_is_the_documented_event_sequence() {
    let mut enc = StreamEncoder::new(env());
    let mut events = Vec::new();
    for c in [
        text_chunk("Hel"),
        text_chunk("lo"),
        tool_chunk(0, Some("call_1"), Some("f"), "{\"a\""),
        tool_chunk(0, None, None, ":1}"),
        chunk(Delta::default(), Some(FinishReason::ToolCalls)),
    ] {
        events.extend(enc.chunk(&c));
    }
    let (end, last) = enc.done(&Usage::default(), Map::new());
    events.extend(end);
    let names: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let r = accumulate(&events);
    assert_eq!(r, last);
    assert_eq!(r["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(r["output"][1]["arguments"], "{\"a\":1}");

    let mut enc = StreamEncoder::new(env());
    let mut events = enc.chunk(&text_chunk("partial"));
    events.extend(enc.failed(&Error::new(ErrorClass::Unavailable, "cut"), Map::new()));
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "response.failed");
    assert_eq!(data["response"]["status"], "failed");
    assert_eq!(data["response"]["error"]["message"], "cut");
}

proptest! {
    /// For any mix of text and tool calls, the streamed events accumulate (as a client does) to
    /// the same output as the non-streamed Response of the same reply.
    #[test]
    fn streamed_and_whole_responses_agree(
        parts in prop::collection::vec("[a-zA-Z0-9 ,.é日]{1,12}", 0..5),
        calls in prop::collection::vec(("[a-z_]{1,8}", any::<i64>()), 0..3),
        length in any::<bool>(),
    ) {
        let text: String = parts.concat();
        let tool_calls: Vec<ToolCall> = calls.iter().enumerate().map(|(i, (n, v))| ToolCall {
            id: format!("call_{i}"), name: n.clone(), arguments: json!({"v": v}).to_string(),
        }).collect();
        let finish = if length { FinishReason::Length } else if tool_calls.is_empty() { FinishReason::Stop } else { FinishReason::ToolCalls };
        let whole = response_json(&reply(&text, tool_calls.clone(), finish), &env());

        let mut enc = StreamEncoder::new(env());
        let mut events = Vec::new();
        for p in &parts {
            events.extend(enc.chunk(&text_chunk(p)));
        }
        for (i, c) in tool_calls.iter().enumerate() {
            let (a, b) = c.arguments.split_at(c.arguments.len() / 2);
            events.extend(enc.chunk(&tool_chunk(i as u32, Some(&c.id), Some(&c.name), a)));
            events.extend(enc.chunk(&tool_chunk(i as u32, None, None, b)));
        }
        events.extend(enc.chunk(&chunk(Delta::default(), Some(finish))));
        let (end, _) = enc.done(&Usage::default(), Map::new());
        events.extend(end);
        let streamed = accumulate(&events);
        prop_assert_eq!(&streamed["status"], &whole["status"]);
        prop_assert_eq!(assistant_message(&streamed).text_content(), text);
        prop_assert_eq!(assistant_message(&streamed).tool_calls, assistant_message(&whole).tool_calls);
    }
}
