//! The OpenAI chat-completions format (OpenAI, Together, Groq, Fireworks, DeepInfra, vLLM,
//! Ollama, …). The normalized types already have this shape, so mapping is mostly choosing which
//! fields go upstream: the routing fields stay here, `model` becomes the upstream name, and a
//! stream always asks for usage in its last chunk. Replies keep fields Switchyard does not know
//! (`system_fingerprint`, `service_tier`, `logprobs`, …) for a client of the same format, and
//! read `reasoning` / `reasoning_content` as the reasoning; earlier reasoning and unknown fields
//! of request messages are not sent upstream. Embeddings go to `/embeddings` as floats
//! (`input`, `dimensions`, `user`); the reply's vectors are put in input order by `index`.

use bytes::Bytes;
use http_body_util::Full;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use switchyard_core::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, EmbeddingRequest,
    EmbeddingResponse, ErrorClass, FinishReason, StreamOptions, Usage,
};

use crate::adapter::{Flow, StreamDecoder, WireAdapter, post_json, secret_header, with_body};
use crate::error::{Phase, UpstreamError, classify_stream_error};
use crate::sse::SseEvent;
use crate::target::Target;

/// The OpenAI-format adapter.
#[derive(Debug, Clone, Copy)]
pub struct OpenAi;

/// The body sent upstream for `req`.
pub fn wire_request(target: &Target, req: &ChatRequest, stream: bool) -> ChatRequest {
    let mut wire = req.clone();
    // Earlier reasoning is not sent back: DeepSeek refuses `reasoning_content` in the input and
    // OpenAI does not take it; the signature is Anthropic's. Message fields Switchyard does not
    // know (a replayed reply's `annotations`, …) stay here too: strict OpenAI-compatible
    // providers refuse them.
    // Cache breakpoints are Anthropic's: OpenAI-format providers cache by themselves.
    for m in &mut wire.messages {
        m.reasoning = None;
        m.reasoning_signature = None;
        m.extra.clear();
        if let Some(Content::Parts(parts)) = &mut m.content {
            for p in parts {
                if let ContentPart::Text { cache_control, .. } = p {
                    *cache_control = None;
                }
            }
        }
    }
    wire.model = target.upstream_model.clone();
    wire.models = Vec::new();
    wire.provider = None;
    wire.workflow = None;
    wire.stream = stream;
    wire.stream_options = stream.then_some(StreamOptions {
        include_usage: true,
    });
    wire
}

fn refused(message: &str) -> UpstreamError {
    UpstreamError::new(
        ErrorClass::ContentPolicy,
        Phase::Body,
        format!("upstream refused: {message}"),
    )
}

impl WireAdapter for OpenAi {
    fn request(
        &self,
        target: &Target,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<http::Request<Full<Bytes>>, UpstreamError> {
        let body = serde_json::to_vec(&wire_request(target, req, stream)).map_err(|e| {
            UpstreamError::new(
                ErrorClass::Internal,
                Phase::Connect,
                format!("cannot encode the request: {e}"),
            )
        })?;
        let mut builder = post_json(&format!("{}/chat/completions", target.base_url), stream)?;
        if let Some(key) = &target.key {
            builder = builder.header(
                http::header::AUTHORIZATION,
                secret_header(&format!("Bearer {}", key.expose_secret()))?,
            );
        }
        with_body(builder, body)
    }

    fn parse_response(&self, target: &Target, body: &[u8]) -> Result<ChatResponse, UpstreamError> {
        let mut resp: ChatResponse =
            serde_json::from_slice(body).map_err(|e| UpstreamError::malformed(Phase::Body, e))?;
        let Some(first) = resp.choices.first() else {
            return Err(UpstreamError::malformed(Phase::Body, "no choices"));
        };
        if let Some(text) = &first.message.refusal {
            return Err(refused(text));
        }
        if first.finish_reason == Some(FinishReason::ContentFilter) {
            return Err(refused("finish_reason content_filter"));
        }
        resp.provider = Some(target.provider.to_string());
        Ok(resp)
    }

    fn decoder(&self, target: &Target) -> Box<dyn StreamDecoder> {
        Box::new(Decoder {
            provider: target.provider.to_string(),
        })
    }

    fn embed_request(
        &self,
        target: &Target,
        req: &EmbeddingRequest,
    ) -> Result<http::Request<Full<Bytes>>, UpstreamError> {
        // Floats upstream, whatever the client asked: the router encodes the reply.
        let mut body =
            json!({"model": target.upstream_model, "input": req.input, "encoding_format": "float"});
        if let Some(d) = req.dimensions {
            body["dimensions"] = json!(d);
        }
        if let Some(u) = &req.user {
            body["user"] = json!(u);
        }
        let mut builder = post_json(&format!("{}/embeddings", target.base_url), false)?;
        if let Some(key) = &target.key {
            builder = builder.header(
                http::header::AUTHORIZATION,
                secret_header(&format!("Bearer {}", key.expose_secret()))?,
            );
        }
        with_body(builder, body.to_string().into_bytes())
    }

    fn parse_embeddings(
        &self,
        target: &Target,
        body: &[u8],
    ) -> Result<EmbeddingResponse, UpstreamError> {
        #[derive(serde::Deserialize)]
        struct Item {
            index: usize,
            embedding: Vec<f32>,
        }
        #[derive(serde::Deserialize)]
        struct WireUsage {
            #[serde(default)]
            prompt_tokens: u32,
        }
        #[derive(serde::Deserialize)]
        struct Wire {
            data: Vec<Item>,
            #[serde(default)]
            model: String,
            #[serde(default)]
            usage: Option<WireUsage>,
        }
        let mut w: Wire =
            serde_json::from_slice(body).map_err(|e| UpstreamError::malformed(Phase::Body, e))?;
        w.data.sort_by_key(|i| i.index);
        if w.data.iter().enumerate().any(|(n, i)| n != i.index) {
            return Err(UpstreamError::malformed(
                Phase::Body,
                "embedding indices are not 0..n",
            ));
        }
        Ok(EmbeddingResponse {
            model: w.model,
            provider: Some(target.provider.to_string()),
            data: w.data.into_iter().map(|i| i.embedding).collect(),
            usage: Usage {
                prompt_tokens: w.usage.map_or(0, |u| u.prompt_tokens),
                ..Usage::default()
            },
        })
    }
}

struct Decoder {
    provider: String,
}

impl StreamDecoder for Decoder {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<ChatChunk>) -> Result<Flow, UpstreamError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Flow::Done);
        }
        if event.event == "error" || data.starts_with("{\"error\"") {
            return Err(classify_stream_error(data.as_bytes()));
        }
        let value: Value =
            serde_json::from_str(data).map_err(|e| UpstreamError::malformed(Phase::Stream, e))?;
        if value.get("error").is_some_and(|e| !e.is_null()) {
            return Err(classify_stream_error(data.as_bytes()));
        }
        let mut chunk: ChatChunk = serde_json::from_value(value)
            .map_err(|e| UpstreamError::malformed(Phase::Stream, e))?;
        chunk.provider = Some(self.provider.clone());
        let filtered = chunk
            .choices
            .iter()
            .any(|c| c.finish_reason == Some(FinishReason::ContentFilter));
        out.push(chunk);
        if filtered {
            let mut e = refused("finish_reason content_filter");
            e.phase = Phase::Stream;
            return Err(e);
        }
        Ok(Flow::Continue)
    }
}
