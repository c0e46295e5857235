//! Embeddings: the request in OpenAI's wire shape (input as a string, a list of strings, token
//! ids or lists of token ids; `dimensions`; `encoding_format`) plus Switchyard's routing fields,
//! the normalized reply, and what kind of model a catalog entry is.

use serde::{Deserialize, Deserializer, Serialize};

use crate::chat::{ChatRequest, Message, ProviderPreferences, Role};
use crate::response::Usage;

/// What a model does, and so which APIs it serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Chat completions, Messages and Responses.
    #[default]
    Chat,
    /// Embeddings.
    Embedding,
}

impl ModelKind {
    /// The name used in config and messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            ModelKind::Chat => "chat",
            ModelKind::Embedding => "embedding",
        }
    }
}

/// What to embed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// One text as token ids.
    Tokens(Vec<u32>),
    /// Several texts as token ids.
    TokenLists(Vec<Vec<u32>>),
}

impl<'de> Deserialize<'de> for EmbeddingInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(deserializer)?;
        let bad = || {
            serde::de::Error::custom(
                "expected a string, a list of strings, a list of token ids or a list of lists of token ids",
            )
        };
        match &v {
            serde_json::Value::String(s) => Ok(EmbeddingInput::Text(s.clone())),
            serde_json::Value::Array(items) if items.is_empty() => {
                Err(serde::de::Error::custom("must not be empty"))
            }
            serde_json::Value::Array(items) => match &items[0] {
                serde_json::Value::String(_) => serde_json::from_value(v.clone())
                    .map(EmbeddingInput::Texts)
                    .map_err(|_| bad()),
                serde_json::Value::Number(_) => serde_json::from_value(v.clone())
                    .map(EmbeddingInput::Tokens)
                    .map_err(|_| bad()),
                serde_json::Value::Array(_) => serde_json::from_value(v.clone())
                    .map(EmbeddingInput::TokenLists)
                    .map_err(|_| bad()),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl EmbeddingInput {
    /// How many vectors the reply holds.
    pub fn len(&self) -> usize {
        match self {
            EmbeddingInput::Text(_) | EmbeddingInput::Tokens(_) => 1,
            EmbeddingInput::Texts(t) => t.len(),
            EmbeddingInput::TokenLists(t) => t.len(),
        }
    }

    /// Whether there is nothing to embed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How vectors are encoded in the reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncodingFormat {
    /// JSON numbers.
    #[default]
    Float,
    /// Little-endian f32 bytes, base64.
    Base64,
}

/// An embeddings request. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRequest {
    /// The model.
    #[serde(default)]
    pub model: String,
    /// Model fallbacks in order of preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// What to embed.
    pub input: EmbeddingInput,
    /// Output dimensions, for models that can shorten their vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// `float` (default) or `base64`; applied by the router, upstreams are asked for floats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<EncodingFormat>,
    /// The caller's end-user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Provider routing controls (OpenRouter-compatible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderPreferences>,
    /// The workflow (preset) to run under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
}

impl EmbeddingRequest {
    /// The request the planner and the budget hold judge: the same models, routing fields and
    /// size (each text a user message; a token list as text of four bytes per token, so the
    /// prompt bound stays an upper bound), of kind embedding. It is never sent upstream.
    pub fn to_planning(&self) -> ChatRequest {
        let texts: Vec<String> = match &self.input {
            EmbeddingInput::Text(t) => vec![t.clone()],
            EmbeddingInput::Texts(t) => t.clone(),
            EmbeddingInput::Tokens(t) => vec!["xxxx".repeat(t.len())],
            EmbeddingInput::TokenLists(t) => t.iter().map(|l| "xxxx".repeat(l.len())).collect(),
        };
        ChatRequest {
            model: self.model.clone(),
            models: self.models.clone(),
            messages: texts
                .into_iter()
                .map(|t| Message::text(Role::User, t))
                .collect(),
            user: self.user.clone(),
            provider: self.provider.clone(),
            workflow: self.workflow.clone(),
            kind: ModelKind::Embedding,
            ..ChatRequest::default()
        }
    }
}

/// A normalized embeddings reply.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingResponse {
    /// The model that served it.
    pub model: String,
    /// The provider that served it.
    pub provider: Option<String>,
    /// One vector per input, in input order.
    pub data: Vec<Vec<f32>>,
    /// Prompt tokens (and the cost, once priced).
    pub usage: Usage,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_input_shape_parses() {
        let parse = |input: serde_json::Value| {
            serde_json::from_value::<EmbeddingRequest>(json!({"model": "e", "input": input}))
        };
        assert_eq!(parse(json!("a")).unwrap().input.len(), 1);
        assert_eq!(parse(json!(["a", "b"])).unwrap().input.len(), 2);
        assert_eq!(
            parse(json!([1, 2, 3])).unwrap().input,
            EmbeddingInput::Tokens(vec![1, 2, 3])
        );
        assert_eq!(parse(json!([[1], [2, 3]])).unwrap().input.len(), 2);
        assert!(parse(json!([])).is_err());
        assert!(parse(json!([{"x": 1}])).is_err());
        assert!(parse(json!(["a", 1])).is_err());
        let planning = parse(json!([[1, 2], [3]])).unwrap().to_planning();
        assert_eq!(planning.kind, ModelKind::Embedding);
        assert_eq!(planning.messages.len(), 2);
        assert!(planning.prompt_token_bound() >= 3);
    }
}
