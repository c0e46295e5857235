//! What a simulated model says: text tokens, JSON that matches a requested schema, and tool-call
//! arguments (valid, or deliberately broken for the invalid-tool-call fault).

use serde_json::{Map, Value, json};

/// A parsed request, reduced to what the simulator acts on (the same for both wire formats).
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// Upstream model name.
    pub model: String,
    /// Stream requested.
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    /// Output cap.
    pub max_tokens: Option<u32>,
    /// All prompt text, for the refusal trigger.
    pub prompt_text: String,
    /// Estimated prompt tokens.
    pub prompt_tokens: u32,
    /// Number of tools offered.
    pub tools: usize,
    /// The tool the model will call, if any: name and argument schema.
    pub tool: Option<(String, Value)>,
    /// Structured output: `Some(schema)` for a JSON schema, `Some(Null)` for any JSON object.
    pub json: Option<Value>,
    /// Reasoning asked for (OpenAI-format `reasoning`, Anthropic `thinking`): the reply then
    /// carries [`REASONING`] first.
    pub reasoning: bool,
    /// The text of a trailing assistant message to continue (Anthropic: any trailing assistant
    /// message; OpenAI format: one marked `"prefix": true`).
    pub prefill: Option<String>,
}

/// The reasoning a simulated model shows when asked to reason.
pub const REASONING: &str = "Considering the question step by step.";
/// Its tokens, counted in the completion tokens.
pub const REASONING_TOKENS: u32 = 6;
/// The signature of that reasoning (Anthropic format).
pub const REASONING_SIGNATURE: &str = "sig_sim_reasoning";

impl Parsed {
    /// The completion tokens spent on reasoning.
    pub fn reasoning_tokens(&self) -> u32 {
        if self.reasoning { REASONING_TOKENS } else { 0 }
    }
}

/// How generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Natural end.
    Stop,
    /// Hit `max_tokens`.
    Length,
}

/// What the simulated model produces.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Text, one piece per token.
    Text {
        /// Token texts.
        pieces: Vec<String>,
        /// Why it ended.
        finish: Finish,
    },
    /// One tool call.
    Tool {
        /// Call id.
        id: String,
        /// Function name.
        name: String,
        /// Argument JSON text (invalid JSON when `valid` is false).
        arguments: String,
        /// Arguments as an object, for wire formats that carry an object (schema-invalid when
        /// `valid` is false).
        input: Value,
        /// Whether the arguments are valid.
        valid: bool,
    },
    /// The model refuses.
    Refusal,
}

impl Reply {
    /// Completion tokens the reply is billed as.
    pub fn completion_tokens(&self) -> u32 {
        match self {
            Reply::Text { pieces, .. } => pieces.len() as u32,
            Reply::Tool {
                arguments, name, ..
            } => {
                switchyard_core::tokens::estimate_text(arguments)
                    + switchyard_core::tokens::estimate_text(name)
            }
            Reply::Refusal => 1,
        }
    }
}

const WORDS: [&str; 8] = [
    " lorem",
    " ipsum",
    " dolor",
    " sit",
    " amet",
    " consectetur",
    " adipiscing",
    " elit",
];

/// The text pieces of a plain reply from `provider`: a greeting, then filler, `n` tokens in all.
pub fn text_pieces(provider: &str, n: u32) -> Vec<String> {
    let head = [
        "Hello".to_string(),
        " from".to_string(),
        format!(" {provider}"),
    ];
    head.into_iter()
        .chain(WORDS.iter().cycle().map(|w| w.to_string()))
        .take(n as usize)
        .collect()
}

/// Splits text into pieces of about four characters, as a tokenizer would stream it.
pub fn split_pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(4).map(|c| c.iter().collect()).collect()
}

/// A value that satisfies `schema` (the common JSON Schema keywords; `$ref` is not followed).
pub fn example_for(schema: &Value) -> Value {
    example_at(schema, 0)
}

fn example_at(schema: &Value, depth: u32) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    let Some(obj) = schema.as_object() else {
        return json!({});
    };
    if let Some(c) = obj.get("const") {
        return c.clone();
    }
    if let Some(first) = obj
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = obj
            .get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return example_at(first, depth + 1);
        }
    }
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if obj.contains_key("properties") => "object",
        _ => "object",
    };
    match ty {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = obj.get("properties").and_then(Value::as_object) {
                for (name, sub) in props {
                    out.insert(name.clone(), example_at(sub, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let item = obj
                .get("items")
                .map(|i| example_at(i, depth + 1))
                .unwrap_or(Value::Null);
            let min = obj
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .max(1);
            Value::Array(vec![item; min.min(4) as usize])
        }
        "string" => match obj.get("format").and_then(Value::as_str) {
            Some("date") => json!("2026-01-01"),
            Some("date-time") => json!("2026-01-01T00:00:00Z"),
            Some("email") => json!("user@example.com"),
            Some("uri") => json!("https://example.com"),
            _ => json!("example"),
        },
        "integer" => json!(obj.get("minimum").and_then(Value::as_i64).unwrap_or(1)),
        "number" => json!(obj.get("minimum").and_then(Value::as_f64).unwrap_or(1.5)),
        "boolean" => json!(true),
        _ => Value::Null,
    }
}

/// An object that violates `schema`: every declared property gets a value of the wrong type.
pub fn schema_breaking(schema: &Value) -> Value {
    let mut out = Map::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let wrong = match sub.get("type").and_then(Value::as_str) {
                Some("string") => json!(12345),
                _ => json!("not-the-declared-type"),
            };
            out.insert(name.clone(), wrong);
        }
    }
    if out.is_empty() {
        out.insert("unexpected_argument".into(), json!(true));
    }
    Value::Object(out)
}

/// JSON text cut in half: never parses.
pub fn truncated_json(valid: &str) -> String {
    let keep = valid.chars().count() / 2;
    let mut cut: String = valid.chars().take(keep.max(1)).collect();
    if serde_json::from_str::<Value>(&cut).is_ok() {
        cut.push_str("{\"");
    }
    cut
}

/// The rest of `pieces` after `prefill`: when the text begins with it, what follows (the first
/// piece cut where the prefill ends); otherwise the pieces after as many characters as the
/// prefill has, as a model continues in its own words.
pub fn continue_after(pieces: Vec<String>, prefill: &str) -> Vec<String> {
    let text: String = pieces.concat();
    let mut at = 0;
    let mut out = Vec::new();
    let whole = text.starts_with(prefill);
    for piece in pieces {
        let end = at + piece.len();
        if whole && at < prefill.len() && end > prefill.len() {
            out.push(piece[prefill.len() - at..].to_string());
        } else if at >= prefill.len() {
            out.push(piece);
        }
        at = end;
    }
    out
}

/// Builds the reply for a request that passed every fault check.
pub fn reply(
    provider: &str,
    parsed: &Parsed,
    output_tokens: u32,
    id: u64,
    invalid_tool: bool,
    refuse: bool,
) -> Reply {
    if refuse {
        return Reply::Refusal;
    }
    if let Some((name, schema)) = &parsed.tool {
        let example = example_for(schema);
        let valid_text = example.to_string();
        let (arguments, input) = if invalid_tool {
            (truncated_json(&valid_text), schema_breaking(schema))
        } else {
            (valid_text, example)
        };
        return Reply::Tool {
            id: format!("call_sim_{id}"),
            name: name.clone(),
            arguments,
            input,
            valid: !invalid_tool,
        };
    }
    let cap = parsed.max_tokens.unwrap_or(u32::MAX);
    if let Some(schema) = &parsed.json {
        let value = if schema.is_null() {
            json!({"answer": format!("hello from {provider}")})
        } else {
            example_for(schema)
        };
        let pieces = split_pieces(&value.to_string());
        return if pieces.len() as u32 > cap {
            Reply::Text {
                pieces: pieces.into_iter().take(cap as usize).collect(),
                finish: Finish::Length,
            }
        } else {
            Reply::Text {
                pieces,
                finish: Finish::Stop,
            }
        };
    }
    let n = output_tokens.min(cap);
    let mut pieces = text_pieces(provider, output_tokens);
    if let Some(prefill) = &parsed.prefill {
        pieces = continue_after(pieces, prefill);
    }
    pieces.truncate(n as usize);
    Reply::Text {
        pieces,
        finish: if cap < output_tokens {
            Finish::Length
        } else {
            Finish::Stop
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_match_common_schemas() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["c", "f"]},
                "days": {"type": "integer", "minimum": 3},
                "tags": {"type": "array", "items": {"type": "string"}},
                "maybe": {"type": ["null", "boolean"]}
            },
            "required": ["city"]
        });
        assert_eq!(
            example_for(&schema),
            json!({"city": "example", "unit": "c", "days": 3, "tags": ["example"], "maybe": true})
        );
    }

    #[test]
    fn broken_forms_are_broken() {
        let t = truncated_json(r#"{"city":"example"}"#);
        assert!(serde_json::from_str::<Value>(&t).is_err(), "{t}");
        assert!(serde_json::from_str::<Value>(&truncated_json("{}")).is_err());
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        assert_eq!(schema_breaking(&schema), json!({"city": 12345}));
    }

    #[test]
    fn a_prefill_is_continued_where_it_ends() {
        let pieces = text_pieces("p", 6);
        assert_eq!(pieces.concat(), "Hello from p lorem ipsum dolor");
        assert_eq!(
            continue_after(pieces.clone(), "Hello from p lo"),
            vec!["rem", " ipsum", " dolor"]
        );
        // Not its own words: it goes on after as many characters.
        assert_eq!(
            continue_after(pieces, "Greetings, friend"),
            vec![" ipsum", " dolor"]
        );
    }

    #[test]
    fn text_respects_max_tokens() {
        let parsed = Parsed {
            max_tokens: Some(2),
            ..Default::default()
        };
        match reply("p", &parsed, 16, 1, false, false) {
            Reply::Text { pieces, finish } => {
                assert_eq!(pieces, vec!["Hello", " from"]);
                assert_eq!(finish, Finish::Length);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
