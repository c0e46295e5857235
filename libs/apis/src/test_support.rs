//! Builders the translation tests share: normalized chunks and replies.

use switchyard_core::response::FunctionDelta;
use switchyard_core::{
    ChatChunk, ChatResponse, Choice, ChunkChoice, Delta, FinishReason, Message, ToolCallDelta,
    Usage,
};

pub fn chunk(delta: Delta, finish: Option<FinishReason>) -> ChatChunk {
    ChatChunk {
        id: "c".into(),
        object: "chat.completion.chunk".into(),
        created: 0,
        model: "m".into(),
        provider: None,
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish,
            extra: Default::default(),
        }],
        usage: None,
        extra: Default::default(),
    }
}

pub fn text_chunk(t: &str) -> ChatChunk {
    chunk(
        Delta {
            content: Some(t.into()),
            ..Delta::default()
        },
        None,
    )
}

pub fn tool_chunk(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> ChatChunk {
    chunk(
        Delta {
            tool_calls: vec![ToolCallDelta {
                index,
                id: id.map(str::to_string),
                kind: id.map(|_| "function".to_string()),
                function: FunctionDelta {
                    name: name.map(str::to_string),
                    arguments: Some(args.into()),
                },
            }],
            ..Delta::default()
        },
        None,
    )
}

pub fn reply_with(message: Message) -> ChatResponse {
    ChatResponse {
        id: "x".into(),
        object: "chat.completion".into(),
        created: 0,
        model: "m".into(),
        provider: None,
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(FinishReason::Stop),
            extra: Default::default(),
        }],
        usage: Some(Usage::default()),
        extra: Default::default(),
    }
}
