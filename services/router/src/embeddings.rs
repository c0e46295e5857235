//! The OpenAI-compatible embeddings API over HTTP: `POST /v1/embeddings` (input as a string,
//! strings, token ids or lists of token ids; `dimensions`; `encoding_format` float or base64,
//! applied here, upstreams are always asked for floats). The request is planned, held and
//! settled by the same stages as chat, against models of kind `embedding`; the reply carries the
//! served `provider`, `usage.cost` and `routing`. Errors use the OpenAI envelope.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use switchyard_core::{EmbeddingRequest, EncodingFormat, Error};

use crate::edge::Api;
use crate::handler::{Embedded, Reply, Router};
use crate::http::{
    error_response, failure_in, incoming, parse_as, refused_in, stored, trace_json, with_request_id,
};

/// A vector as base64 of its little-endian f32 bytes, as OpenAI encodes it.
pub fn base64_vector(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The reply in OpenAI's shape with Switchyard's additions.
pub fn reply_json(e: &Embedded, format: EncodingFormat) -> Value {
    let data: Vec<Value> = e
        .response
        .data
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = match format {
                EncodingFormat::Float => json!(v),
                EncodingFormat::Base64 => json!(base64_vector(v)),
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let u = &e.response.usage;
    let mut usage = json!({"prompt_tokens": u.prompt_tokens, "total_tokens": u.prompt_tokens});
    if let Some(cost) = u.cost {
        usage["cost"] = json!(cost);
    }
    json!({"object": "list", "data": data, "model": e.response.model, "provider": e.response.provider,
           "usage": usage, "routing": trace_json(&e.admitted, &e.trace)})
}

fn refused(e: &Error, key: Option<&switchyard_policy_model::snapshot::KeyRecord>) -> Response {
    refused_in(Api::Embeddings, e, key, error_response)
}

/// `POST /v1/embeddings`.
pub async fn create(state: State<Arc<Router>>, headers: HeaderMap, body: Bytes) -> Response {
    let span = crate::edge::request_span(Api::Embeddings);
    tracing::Instrument::instrument(create_inner(state, headers, body), span).await
}

async fn create_inner(State(r): State<Arc<Router>>, headers: HeaderMap, body: Bytes) -> Response {
    let incoming = incoming(Api::Embeddings, &headers);
    let caller = match r.authenticate(&incoming) {
        Ok(v) => v,
        Err(e) => return refused(&e, None),
    };
    let req: EmbeddingRequest = match parse_as(&body, "an embeddings request") {
        Ok(req) => req,
        Err(e) => return refused(&e, Some(&caller.key)),
    };
    let format = req.encoding_format.unwrap_or_default();
    match r
        .embed(caller, &incoming, req, |e| {
            reply_json(e, format).to_string()
        })
        .await
    {
        Ok(Reply::Served(e)) => with_request_id(
            axum::Json(reply_json(&e, format)).into_response(),
            &e.admitted.id,
        ),
        Ok(Reply::Stored { text, replayed }) => stored(text, replayed),
        Err(f) => failure_in(f, error_response),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        let text = base64_vector(&[1.0, -2.5]);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        assert_eq!(&bytes[..4], &1.0f32.to_le_bytes());
        assert_eq!(&bytes[4..], &(-2.5f32).to_le_bytes());
    }
}
