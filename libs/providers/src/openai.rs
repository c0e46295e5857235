//! The OpenAI chat-completions format (OpenAI, Together, Groq, Fireworks, DeepInfra, vLLM,
//! Ollama, …). The normalized types already have this shape, so mapping is mostly choosing which
//! fields go upstream: the routing fields stay here, `model` becomes the upstream name, and a
//! stream always asks for usage in its last chunk. Replies keep fields Switchyard does not know
//! (`system_fingerprint`, `service_tier`, `logprobs`, …) for a client of the same format, and
//! read `reasoning` / `reasoning_content` as the reasoning; earlier reasoning and unknown fields
//! of request messages are not sent upstream. Embeddings go to `/embeddings` as floats
//! (`input`, `dimensions`, `user`); the reply's vectors are put in input order by `index`.
//!
//! A provider's quirks apply last: the output cap moved to the field it wants
//! (`max_tokens_field`), fields renamed (`renames`, Mistral's `random_seed`).
//!
//! **Azure OpenAI** is this format at other URLs with another header: with `api_version`, the
//! deployment URL `{base}/openai/deployments/{upstream_model}/chat/completions?api-version=…`
//! (the endpoint's `upstream_model` is the deployment name); without it, the v1 path
//! `{base}/openai/v1/chat/completions` with the model in the body. The key goes in `api-key`.
//! Its content filter answers a 400 `content_filter` (prompt) or `finish_reason:
//! content_filter` with `content_filter_results` (completion): both are `content_policy`, with
//! the filtered categories and severities in the error (`content filter: violence (medium)`).

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use switchyard_core::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, EmbeddingRequest,
    EmbeddingResponse, ErrorClass, FinishReason, Role, StreamOptions, Usage,
};

use crate::adapter::{Flow, KeyHeader, StreamDecoder, WireAdapter, post_json, with_body, with_key};
use crate::error::{Phase, UpstreamError, classify_stream_error};
use crate::sse::SseEvent;
use crate::target::Target;

/// The OpenAI-format adapter, plain or at Azure's URLs.
#[derive(Debug, Clone, Copy)]
pub struct OpenAi {
    azure: bool,
}

impl OpenAi {
    /// OpenAI and every compatible server.
    pub const PLAIN: OpenAi = OpenAi { azure: false };
    /// Azure OpenAI.
    pub const AZURE: OpenAi = OpenAi { azure: true };

    fn key_header(&self) -> KeyHeader {
        if self.azure {
            KeyHeader::Named("api-key")
        } else {
            KeyHeader::Bearer
        }
    }

    fn url(&self, target: &Target, path: &str) -> String {
        if !self.azure {
            // Every call builds it: pushed rather than formatted.
            let mut url = String::with_capacity(target.base_url.len() + 1 + path.len());
            url.push_str(&target.base_url);
            url.push('/');
            url.push_str(path);
            return url;
        }
        let base = target.base_url.trim_end_matches("/openai/v1");
        match &target.options.api_version {
            Some(v) => format!(
                "{base}/openai/deployments/{}/{path}?api-version={v}",
                crate::adapter::segment(&target.upstream_model)
            ),
            None => format!("{base}/openai/v1/{path}"),
        }
    }
}

/// The filtered categories of an Azure `content_filter_result(s)` object:
/// `violence (medium), hate (low)`.
pub fn filtered_categories(results: &Value) -> String {
    let Some(map) = results.as_object() else {
        return String::new();
    };
    map.iter()
        .filter(|(_, r)| r["filtered"].as_bool() == Some(true))
        .map(|(name, r)| match r["severity"].as_str() {
            Some(sev) => format!("{name} ({sev})"),
            None => name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn content_filtered(results: Option<&Value>) -> UpstreamError {
    match results.map(filtered_categories).filter(|c| !c.is_empty()) {
        Some(categories) => refused(&format!("content filter: {categories}")),
        None => refused("finish_reason content_filter"),
    }
}

/// The JSON body for `req` with the provider's quirks applied.
pub fn wire_body(
    target: &Target,
    req: &ChatRequest,
    stream: bool,
) -> Result<Vec<u8>, UpstreamError> {
    let wire = wire_request(target, req, stream);
    let quirks = &target.options.quirks;
    if quirks.is_empty() {
        return crate::adapter::encode(&wire);
    }
    let mut body = serde_json::to_value(&wire).map_err(|e| {
        UpstreamError::new(
            ErrorClass::Internal,
            Phase::Connect,
            format!("cannot encode the request: {e}"),
        )
    })?;
    if let (Some(field), Some(cap)) = (quirks.max_tokens_field, req.max_output_tokens())
        && let Some(map) = body.as_object_mut()
    {
        use switchyard_config::catalog::MaxTokensField;
        map.remove("max_tokens");
        map.remove("max_completion_tokens");
        let name = match field {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        };
        map.insert(name.into(), json!(cap));
    }
    if let Some(map) = body.as_object_mut() {
        for (from, to) in &quirks.renames {
            if let Some(v) = map.remove(from) {
                map.insert(to.clone(), v);
            }
        }
    }
    crate::adapter::encode(&body)
}

/// The body sent upstream for `req`.
pub fn wire_request(target: &Target, req: &ChatRequest, stream: bool) -> ChatRequest {
    let mut wire = req.clone();
    // Earlier reasoning is not sent back: DeepSeek refuses `reasoning_content` in the input and
    // OpenAI does not take it; the signature is Anthropic's. Message fields Switchyard does not
    // know (a replayed reply's `annotations`, …) stay here too: strict OpenAI-compatible
    // providers refuse them.
    // Cache breakpoints are Anthropic's: OpenAI-format providers cache by themselves.
    let last = wire.messages.len().saturating_sub(1);
    for (i, m) in wire.messages.iter_mut().enumerate() {
        m.reasoning = None;
        m.reasoning_signature = None;
        // A trailing assistant message marked `prefix` is a prefill for the providers that
        // take one this way (DeepSeek, Mistral); that mark stays.
        let prefix = i == last
            && m.role == Role::Assistant
            && m.extra.get("prefix") == Some(&Value::Bool(true));
        m.extra.clear();
        if prefix {
            m.extra.insert("prefix".into(), Value::Bool(true));
        }
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
        let body = wire_body(target, req, stream)?;
        let builder = post_json(&self.url(target, "chat/completions"), stream)?;
        with_body(with_key(builder, target, self.key_header())?, body)
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
            return Err(content_filtered(first.extra.get("content_filter_results")));
        }
        resp.provider = Some(target.provider.to_string());
        Ok(resp)
    }

    fn decoder(&self, target: &Target) -> Box<dyn StreamDecoder> {
        Box::new(Decoder {
            provider: target.provider.to_string(),
            choices: Vec::new(),
        })
    }

    fn classify(
        &self,
        status: http::StatusCode,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> UpstreamError {
        let mut e = crate::error::classify_status(status, headers, body);
        if self.azure && e.class == ErrorClass::ContentPolicy {
            let v: Value = serde_json::from_slice(body).unwrap_or_default();
            let categories =
                filtered_categories(&v["error"]["innererror"]["content_filter_result"]);
            if !categories.is_empty() {
                e.message = format!("{} (content filter: {categories})", e.message);
            }
        }
        e
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
        let builder = post_json(&self.url(target, "embeddings"), false)?;
        with_body(
            with_key(builder, target, self.key_header())?,
            body.to_string().into_bytes(),
        )
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
    /// Every choice seen, by index, and whether it has finished.
    choices: Vec<(u32, bool)>,
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
        // Straight into a chunk (once per event); an error object is what does not parse as one,
        // or a chunk that carries `error` too.
        let mut chunk: ChatChunk = match serde_json::from_str(data) {
            Ok(chunk) => chunk,
            Err(e) => {
                let value: Option<Value> = serde_json::from_str(data).ok();
                if value.is_some_and(|v| v.get("error").is_some_and(|e| !e.is_null())) {
                    return Err(classify_stream_error(data.as_bytes()));
                }
                return Err(UpstreamError::malformed(Phase::Stream, e));
            }
        };
        if chunk.extra.get("error").is_some_and(|e| !e.is_null()) {
            return Err(classify_stream_error(data.as_bytes()));
        }
        chunk.provider = Some(self.provider.clone());
        for c in &chunk.choices {
            let finished = c.finish_reason.is_some();
            match self.choices.iter_mut().find(|(i, _)| *i == c.index) {
                Some((_, f)) => *f |= finished,
                None => self.choices.push((c.index, finished)),
            }
        }
        let filtered = chunk
            .choices
            .iter()
            .find(|c| c.finish_reason == Some(FinishReason::ContentFilter))
            .map(|c| content_filtered(c.extra.get("content_filter_results")));
        out.push(chunk);
        if let Some(mut e) = filtered {
            e.phase = Phase::Stream;
            return Err(e);
        }
        Ok(Flow::Continue)
    }

    /// Several OpenAI-compatible providers close the body after the finish (and usage) chunk
    /// without `data: [DONE]`: the answer is whole when every choice has finished.
    fn ended(&mut self, _out: &mut Vec<ChatChunk>) -> bool {
        !self.choices.is_empty() && self.choices.iter().all(|(_, finished)| *finished)
    }
}
