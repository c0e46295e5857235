//! The seam between the shared HTTP machinery and one wire format. A new format is one new file
//! implementing [`WireAdapter`] and one line in [`adapter_for`].

use bytes::Bytes;
use http_body_util::Full;
use switchyard_config::catalog::WireFormat;
use switchyard_core::{ChatChunk, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse};

use crate::error::UpstreamError;
use crate::sse::SseEvent;
use crate::target::Target;

/// What the stream decoder wants after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// More events are expected.
    Continue,
    /// That was the terminal event; the stream ended properly.
    Done,
}

/// Turns a format's stream events into normalized chunks.
pub trait StreamDecoder: Send {
    /// Handles one event, appending the chunks it yields to `out`.
    fn event(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<Flow, UpstreamError>;

    /// The body ended cleanly without a terminal event. Formats without one (Gemini's stream
    /// ends after the chunk carrying `finishReason`) say here whether the answer was complete,
    /// appending any last chunk; an incomplete stream is an error, never a silent end.
    fn ended(&mut self, _out: &mut Vec<ChatChunk>) -> bool {
        false
    }
}

/// How a streamed body is cut into events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-sent events.
    Sse,
    /// AWS's binary event stream (`application/vnd.amazon.eventstream`): each message becomes an
    /// event named by its `:event-type` (or `exception:` + its `:exception-type`) with the
    /// payload as data.
    AwsEventStream,
}

/// Mapping between the normalized request/response and one wire format.
pub trait WireAdapter: Send + Sync {
    /// The HTTP request for `req` at `target`; an error when the request cannot be expressed in
    /// this format.
    fn request(
        &self,
        target: &Target,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<http::Request<Full<Bytes>>, UpstreamError>;

    /// Parses a successful non-streamed body.
    fn parse_response(&self, target: &Target, body: &[u8]) -> Result<ChatResponse, UpstreamError>;

    /// A decoder for one streamed response.
    fn decoder(&self, target: &Target) -> Box<dyn StreamDecoder>;

    /// How this format frames a stream.
    fn framing(&self) -> Framing {
        Framing::Sse
    }

    /// Classifies an error answer (status not 2xx).
    fn classify(
        &self,
        status: http::StatusCode,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> UpstreamError {
        crate::error::classify_status(status, headers, body)
    }

    /// The HTTP request for an embeddings call; formats without an embeddings API refuse it.
    fn embed_request(
        &self,
        target: &Target,
        _req: &EmbeddingRequest,
    ) -> Result<http::Request<Full<Bytes>>, UpstreamError> {
        Err(no_embeddings(target))
    }

    /// Parses a successful embeddings body.
    fn parse_embeddings(
        &self,
        target: &Target,
        _body: &[u8],
    ) -> Result<EmbeddingResponse, UpstreamError> {
        Err(no_embeddings(target))
    }
}

fn no_embeddings(target: &Target) -> UpstreamError {
    UpstreamError::new(
        switchyard_core::ErrorClass::InvalidRequest,
        crate::error::Phase::Connect,
        format!(
            "provider `{}` speaks a wire format without an embeddings API",
            target.provider
        ),
    )
}

/// The adapter of a wire format.
pub fn adapter_for(format: WireFormat) -> &'static dyn WireAdapter {
    match format {
        WireFormat::Openai => &crate::openai::OpenAi::PLAIN,
        WireFormat::Azure => &crate::openai::OpenAi::AZURE,
        WireFormat::Anthropic => &crate::anthropic::Anthropic::DIRECT,
        WireFormat::VertexAnthropic => &crate::anthropic::Anthropic::VERTEX,
        WireFormat::Gemini => &crate::gemini::Gemini::DIRECT,
        WireFormat::Vertex => &crate::gemini::Gemini::VERTEX,
        WireFormat::Bedrock => &crate::bedrock::Bedrock,
    }
}

/// What a URL path segment keeps unencoded: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` percent-encoded as one URL path segment (model ids may hold `:` and `/`).
pub(crate) fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// Encodes a request body.
pub(crate) fn encode(body: &impl serde::Serialize) -> Result<Vec<u8>, UpstreamError> {
    serde_json::to_vec(body).map_err(|e| {
        UpstreamError::new(
            switchyard_core::ErrorClass::Internal,
            crate::error::Phase::Connect,
            format!("cannot encode the request: {e}"),
        )
    })
}

/// A request this format cannot express.
pub(crate) fn invalid(message: impl Into<String>) -> UpstreamError {
    UpstreamError::new(
        switchyard_core::ErrorClass::InvalidRequest,
        crate::error::Phase::Connect,
        message,
    )
}

/// A tool call's arguments as the JSON object formats that carry objects need (Anthropic,
/// Gemini, Bedrock); `messages[i].tool_calls[j]` names it when they are not one.
pub(crate) fn object_arguments(
    call: &switchyard_core::ToolCall,
    i: usize,
    j: usize,
) -> Result<serde_json::Value, UpstreamError> {
    let v: serde_json::Value =
        serde_json::from_str(&call.arguments).unwrap_or(serde_json::Value::Null);
    if v.is_object() {
        Ok(v)
    } else {
        Err(invalid(format!(
            "messages[{i}].tool_calls[{j}].arguments must be a JSON object for this provider"
        )))
    }
}

/// A one-choice completion of an assistant message, for formats that build their own.
pub(crate) fn completion(
    id: String,
    model: String,
    target: &Target,
    message: switchyard_core::Message,
    finish_reason: Option<switchyard_core::FinishReason>,
    usage: switchyard_core::Usage,
) -> ChatResponse {
    ChatResponse {
        id,
        object: "chat.completion".into(),
        created: now_unix(),
        model,
        provider: Some(target.provider.to_string()),
        choices: vec![switchyard_core::Choice {
            index: 0,
            message,
            finish_reason,
            extra: serde_json::Map::new(),
        }],
        usage: Some(usage),
        extra: serde_json::Map::new(),
    }
}

/// `data:MEDIA;base64,DATA` split into media type and data.
pub(crate) fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    Some((meta.strip_suffix(";base64")?, data))
}

/// Common request building: method, URL, content type, user agent.
pub(crate) fn post_json(url: &str, stream: bool) -> Result<http::request::Builder, UpstreamError> {
    let uri: http::Uri = url.parse().map_err(|e| {
        UpstreamError::new(
            switchyard_core::ErrorClass::Unavailable,
            crate::error::Phase::Connect,
            format!("invalid upstream url: {e}"),
        )
    })?;
    Ok(http::Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("switchyard/", env!("CARGO_PKG_VERSION")),
        )
        .header(
            http::header::ACCEPT,
            if stream {
                "text/event-stream"
            } else {
                "application/json"
            },
        ))
}

/// A header value holding a secret: marked sensitive so HTTP/2 never indexes it, and never
/// echoed in the error when it is not a valid header value.
pub(crate) fn secret_header(value: &str) -> Result<http::HeaderValue, UpstreamError> {
    let mut v = http::HeaderValue::from_str(value).map_err(|_| {
        UpstreamError::new(
            switchyard_core::ErrorClass::UpstreamAuth,
            crate::error::Phase::Connect,
            "the provider key contains characters not allowed in a header",
        )
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// How a format presents its key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyHeader {
    /// `Authorization: Bearer KEY`.
    Bearer,
    /// `NAME: KEY` (`x-api-key`, `x-goog-api-key`, `api-key`).
    Named(&'static str),
}

/// `builder` with the target's key, if it has one, presented as `how` (marked sensitive).
pub(crate) fn with_key(
    builder: http::request::Builder,
    target: &Target,
    how: KeyHeader,
) -> Result<http::request::Builder, UpstreamError> {
    use secrecy::ExposeSecret;
    let Some(key) = &target.key else {
        return Ok(builder);
    };
    Ok(match how {
        KeyHeader::Bearer => builder.header(
            http::header::AUTHORIZATION,
            secret_header(&format!("Bearer {}", key.expose_secret()))?,
        ),
        KeyHeader::Named(name) => builder.header(name, secret_header(key.expose_secret())?),
    })
}

/// The turns of a conversation for formats that want each role's consecutive content in one
/// turn (Anthropic, Gemini, Bedrock): content pushed under the role of the turn before it joins
/// that turn.
#[derive(Debug, Default)]
pub(crate) struct Turns {
    turns: Vec<(&'static str, Vec<serde_json::Value>)>,
}

impl Turns {
    /// Adds `blocks` as `role`'s (nothing when empty).
    pub(crate) fn push(&mut self, role: &'static str, blocks: Vec<serde_json::Value>) {
        if blocks.is_empty() {
            return;
        }
        match self.turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => self.turns.push((role, blocks)),
        }
    }

    /// Whether no turn has content.
    pub(crate) fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    /// `[{"role": ROLE, CONTENT_KEY: [blocks]}]`.
    pub(crate) fn into_json(self, content_key: &str) -> serde_json::Value {
        serde_json::Value::Array(
            self.turns
                .into_iter()
                .map(|(role, blocks)| {
                    let mut turn = serde_json::Map::new();
                    turn.insert("role".into(), role.into());
                    turn.insert(content_key.into(), serde_json::Value::Array(blocks));
                    serde_json::Value::Object(turn)
                })
                .collect(),
        )
    }
}

/// Finishes a request with its body.
pub(crate) fn with_body(
    builder: http::request::Builder,
    body: Vec<u8>,
) -> Result<http::Request<Full<Bytes>>, UpstreamError> {
    builder.body(Full::new(Bytes::from(body))).map_err(|e| {
        UpstreamError::new(
            switchyard_core::ErrorClass::Internal,
            crate::error::Phase::Connect,
            format!("cannot build the upstream request: {e}"),
        )
    })
}

/// Seconds since the epoch, for chunk `created` fields the upstream did not give.
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Builds the normalized chunks of one stream for formats whose events are not chunks already.
#[derive(Debug, Clone)]
pub(crate) struct Chunks {
    pub id: String,
    pub model: String,
    pub provider: String,
    pub created: i64,
}

impl Chunks {
    pub(crate) fn new(target: &Target) -> Self {
        Chunks {
            id: String::new(),
            model: target.upstream_model.clone(),
            provider: target.provider.to_string(),
            created: now_unix(),
        }
    }

    /// One chunk with one choice.
    pub(crate) fn chunk(
        &self,
        delta: switchyard_core::Delta,
        finish_reason: Option<switchyard_core::FinishReason>,
        usage: Option<switchyard_core::Usage>,
    ) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            provider: Some(self.provider.clone()),
            choices: vec![switchyard_core::ChunkChoice {
                index: 0,
                delta,
                finish_reason,
                extra: serde_json::Map::new(),
            }],
            usage,
            extra: serde_json::Map::new(),
        }
    }

    /// A chunk carrying only text.
    pub(crate) fn text(&self, text: &str) -> ChatChunk {
        self.chunk(
            switchyard_core::Delta {
                content: Some(text.to_string()),
                ..Default::default()
            },
            None,
            None,
        )
    }

    /// The first chunk: the assistant role.
    pub(crate) fn role(&self) -> ChatChunk {
        self.chunk(
            switchyard_core::Delta {
                role: Some(switchyard_core::Role::Assistant),
                ..Default::default()
            },
            None,
            None,
        )
    }

    /// A tool call's start (`name` set) or a piece of its arguments.
    pub(crate) fn tool(
        &self,
        index: u32,
        start: Option<(&str, &str)>,
        arguments: &str,
    ) -> ChatChunk {
        self.chunk(
            switchyard_core::Delta {
                tool_calls: vec![switchyard_core::ToolCallDelta {
                    index,
                    id: start.map(|(id, _)| id.to_string()),
                    kind: start.map(|_| "function".to_string()),
                    function: switchyard_core::response::FunctionDelta {
                        name: start.map(|(_, name)| name.to_string()),
                        arguments: Some(arguments.to_string()),
                    },
                }],
                ..Default::default()
            },
            None,
            None,
        )
    }
}

/// A tool call id for formats whose calls have none (Gemini): unique within the process and
/// unlikely to collide across processes.
pub(crate) fn new_call_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "call_{nanos:08x}{:04x}",
        NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

/// A JSON Schema reduced to what Gemini's and Vertex's `Schema` (an OpenAPI subset) accepts:
/// unknown keywords (`additionalProperties`, `$schema`, `strict`, …) are dropped, recursively.
pub(crate) fn openapi_schema(schema: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    const KEPT: [&str; 21] = [
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
        "items",
        "minimum",
    ];
    match schema {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                if k == "properties" {
                    if let Value::Object(props) = v {
                        out.insert(
                            k.clone(),
                            Value::Object(
                                props
                                    .iter()
                                    .map(|(name, s)| (name.clone(), openapi_schema(s)))
                                    .collect(),
                            ),
                        );
                    }
                } else if k == "items" || k == "anyOf" {
                    out.insert(k.clone(), openapi_schema(v));
                } else if k == "maximum" || KEPT.contains(&k.as_str()) {
                    // `type: [x, "null"]` is JSON Schema's nullable.
                    if k == "type"
                        && let Value::Array(types) = v
                    {
                        let real: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
                        if let Some(t) = real.first() {
                            out.insert(k.clone(), (*t).clone());
                        }
                        if real.len() < types.len() {
                            out.insert("nullable".into(), Value::Bool(true));
                        }
                        continue;
                    }
                    out.insert(k.clone(), v.clone());
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(openapi_schema).collect()),
        other => other.clone(),
    }
}
