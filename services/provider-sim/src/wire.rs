//! What both wire formats share: the ways a request can fail and the pieces of a stream.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use bytes::Bytes;

use crate::generate::Parsed;

/// Why the simulator does not answer with a completion.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The body is not a valid request.
    BadRequest(String),
    /// Missing or wrong key.
    Unauthorized,
    /// The model is not served here.
    ModelNotFound(String),
    /// An injected error status.
    Injected(u16),
    /// Over the per-second limit; retry after this long.
    RateLimited(Duration),
    /// The prompt is longer than the context limit.
    ContextLength {
        /// Estimated prompt tokens.
        tokens: u32,
        /// The limit.
        limit: u32,
    },
    /// The prompt hit the refusal trigger (OpenAI answers with an error; Anthropic with a
    /// `refusal` stop reason, see [`crate::generate::Reply::Refusal`]).
    Refused,
}

impl Failure {
    /// The outcome label counted in the stats.
    pub fn label(&self) -> String {
        match self {
            Failure::BadRequest(_) => "bad_request".into(),
            Failure::Unauthorized => "unauthorized".into(),
            Failure::ModelNotFound(_) => "model_not_found".into(),
            Failure::Injected(s) => format!("status_{s}"),
            Failure::RateLimited(_) => "rate_limited".into(),
            Failure::ContextLength { .. } => "context_length".into(),
            Failure::Refused => "refused".into(),
        }
    }
}

/// One server-sent event and whether it carries generated content (what the stream-cut fault
/// counts).
#[derive(Debug, Clone)]
pub struct Event {
    /// The encoded event, blank line included.
    pub bytes: Bytes,
    /// Carries content.
    pub content: bool,
}

/// Encodes `data: <json>\n\n`, with an `event:` line when named.
pub fn sse(event: Option<&str>, data: &str, content: bool) -> Event {
    let text = match event {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    };
    Event {
        bytes: Bytes::from(text),
        content,
    }
}

/// Per-request context for rendering.
pub struct Ctx<'a> {
    /// Provider id (appears in generated text).
    pub provider: &'a str,
    /// Response id number.
    pub id: u64,
    /// Unix seconds.
    pub created: i64,
    /// The request.
    pub parsed: &'a Parsed,
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A 200 whose JSON body is cut off mid-object.
pub fn malformed_json() -> Response<Body> {
    let mut resp = Response::new(Body::from(
        r#"{"id": "sim-malformed", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assist"#,
    ));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Adds `retry-after` (whole seconds, at least 1) when set.
pub fn with_retry_after(mut resp: Response<Body>, secs: Option<u64>) -> Response<Body> {
    if let Some(secs) = secs {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    resp
}

/// Retry-After for a failure: the configured one for 429/503/529, the window rest for the rps
/// limit.
pub fn retry_after_for(failure: &Failure, configured: Option<u32>) -> Option<u64> {
    match failure {
        Failure::RateLimited(wait) => Some(wait.as_secs_f64().ceil().max(1.0) as u64),
        Failure::Injected(429 | 503 | 529) => configured.map(u64::from),
        _ => None,
    }
}
