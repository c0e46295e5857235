//! Helpers shared by the recorded-payload tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use switchyard_core::ChatChunk;

/// The bytes of `fixtures/PATH`.
pub fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(path),
    )
    .unwrap()
}

/// The streamed text of `chunks`.
pub fn text(chunks: &[ChatChunk]) -> String {
    chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.delta.content.as_deref())
        .collect()
}

/// The streamed tool call of `chunks`: its name and its arguments.
pub fn tool_args(chunks: &[ChatChunk]) -> (String, String) {
    let mut name = String::new();
    let mut args = String::new();
    for d in chunks
        .iter()
        .flat_map(|c| &c.choices)
        .flat_map(|c| &c.delta.tool_calls)
    {
        if let Some(n) = &d.function.name {
            name = n.clone();
        }
        args.push_str(d.function.arguments.as_deref().unwrap_or(""));
    }
    (name, args)
}
