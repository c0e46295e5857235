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

/// Turns a format's SSE events into normalized chunks.
pub trait StreamDecoder: Send {
    /// Handles one event, appending the chunks it yields to `out`.
    fn event(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<Flow, UpstreamError>;
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
        WireFormat::Openai => &crate::openai::OpenAi,
        WireFormat::Anthropic => &crate::anthropic::Anthropic,
    }
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
