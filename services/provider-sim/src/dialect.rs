//! One wire format as the simulator plays it: how a request presents its credentials, how it is
//! parsed (some formats put the model and the stream flag in the URL), and how replies, streams
//! and errors are written. The handler in [`crate::server`] is the same for every format.

use axum::body::Body;
use axum::http::{HeaderMap, Response};
use serde_json::Value;
use switchyard_config::catalog::WireFormat;

use crate::config::SimProvider;
use crate::generate::{Parsed, Reply};
use crate::state::CapacityReading;
use crate::tokens::PromptTokenizer;
use crate::wire::{Ctx, Event, Failure};

/// What the URL says about a request.
#[derive(Debug, Clone, Default)]
pub struct Route {
    /// The model named in the path (Gemini, Vertex, Bedrock, Azure deployments).
    pub model: Option<String>,
    /// Whether the path asks for a stream (`:streamGenerateContent`, `converse-stream`,
    /// `:streamRawPredict`); `None` when the body says.
    pub stream: Option<bool>,
    /// The query string.
    pub query: String,
}

/// A wire format as the simulator speaks it.
pub trait Dialect: Sync {
    /// What the path says (model, stream).
    fn route(&self, _path: &str, query: &str) -> Route {
        Route {
            query: query.to_string(),
            ..Route::default()
        }
    }

    /// Whether the request's credentials are acceptable to `provider`; the key presented (for
    /// the stats) either way.
    fn authenticate(
        &self,
        provider: &SimProvider,
        headers: &HeaderMap,
        route: &Route,
        tokens: &crate::cloud::IssuedTokens,
    ) -> (Option<String>, bool);

    /// Parses a request.
    fn parse(
        &self,
        route: &Route,
        headers: &HeaderMap,
        body: &[u8],
        tokenizer: PromptTokenizer,
    ) -> Result<Parsed, Failure>;

    /// The documented error answer for `failure`.
    fn error(&self, failure: &Failure, retry_after_s: Option<u32>) -> Response<Body>;

    /// Whether a refusal is an error answer (OpenAI, Azure) rather than a reply that says so.
    fn refusal_is_error(&self) -> bool {
        false
    }

    /// A complete non-streamed reply body.
    fn reply(&self, ctx: &Ctx<'_>, reply: &Reply) -> Value;

    /// The events of a streamed reply; with `malformed`, one of them is broken.
    fn events(&self, ctx: &Ctx<'_>, reply: &Reply, malformed: bool) -> Vec<Event>;

    /// One content event carrying `n` bytes of text.
    fn huge_event(&self, n: usize) -> Event;

    /// An event whose data is not valid JSON, framed as the format frames events.
    fn broken_event(&self) -> Event {
        crate::wire::sse(None, r#"{"choices": [{"delta": {"content": "br"#, false)
    }

    /// How many events at the end of a stream only mark its end (OpenAI's `data: [DONE]`,
    /// Anthropic's `message_stop`, Bedrock's `metadata`); Gemini's stream has none.
    fn terminal_events(&self) -> usize {
        1
    }

    /// The content type of a stream.
    fn stream_content_type(&self) -> &'static str {
        "text/event-stream"
    }

    /// Writes what the key has left in the format's rate-limit headers (none by default:
    /// Gemini and Bedrock send none).
    fn rate_limit_headers(&self, _left: &CapacityReading, _headers: &mut HeaderMap) {}
}

/// A header value from text the simulator wrote itself.
pub fn header_value(text: String) -> axum::http::HeaderValue {
    axum::http::HeaderValue::from_str(&text)
        .unwrap_or_else(|_| axum::http::HeaderValue::from_static("0"))
}

/// The key compared with the configured one, when one is configured.
pub fn key_matches(provider: &SimProvider, presented: Option<&str>) -> bool {
    provider
        .api_key
        .as_deref()
        .is_none_or(|expected| presented == Some(expected))
}

/// The simulator's dialect of `format`.
pub fn dialect_for(format: WireFormat) -> &'static dyn Dialect {
    match format {
        WireFormat::Openai => &crate::openai::OpenAi { azure: false },
        WireFormat::Azure => &crate::openai::OpenAi { azure: true },
        WireFormat::Anthropic => &crate::anthropic::Anthropic { vertex: false },
        WireFormat::VertexAnthropic => &crate::anthropic::Anthropic { vertex: true },
        WireFormat::Gemini => &crate::gemini::Gemini { vertex: false },
        WireFormat::Vertex => &crate::gemini::Gemini { vertex: true },
        WireFormat::Bedrock => &crate::bedrock::Bedrock,
    }
}

/// `models/{model}:{action}` at the end of a Gemini or Vertex path: the model and the action.
pub fn model_action(path: &str) -> Option<(String, String)> {
    let last = path.rsplit('/').next()?;
    let last = decode_segment(last);
    let (model, action) = last.rsplit_once(':')?;
    Some((model.to_string(), action.to_string()))
}

/// The text inside a percent-encoded path segment.
pub fn decode_segment(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}
