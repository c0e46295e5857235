//! Embeddings (OpenAI and Azure `POST …/embeddings`, Gemini `:batchEmbedContents`): a deterministic unit vector per input (the
//! same text always gives the same vector, of `dimensions` or the provider's
//! `embedding_dimensions`), prompt tokens counted as for chat, and the provider's fault profile
//! applied by the same code as for chat (auth, model, then [`meet_faults`], then latency).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response, StatusCode};
use bytes::Bytes;
use serde_json::{Value, json};
use switchyard_core::{EmbeddingInput, EmbeddingRequest};

use switchyard_config::catalog::WireFormat;

use crate::conn::ConnReset;
use crate::dialect::{Route, dialect_for};
use crate::server::{App, meet_faults, sleep};
use crate::state::RecentRequest;
use crate::tokens::PromptTokenizer;
use crate::wire::Failure;

/// A unit vector of `dims` for `text`, from a hash of it.
pub fn vector(text: &str, dims: usize) -> Vec<f32> {
    // FNV-1a of the text seeds a SplitMix64 sequence.
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        seed ^= u64::from(*b);
        seed = seed.wrapping_mul(0x0100_0000_01b3);
    }
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z as f64 / u64::MAX as f64 * 2.0 - 1.0) as f32
        })
        .collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    for x in &mut v {
        *x /= norm;
    }
    v
}

/// The texts of an input, and its prompt tokens.
fn texts(input: &EmbeddingInput, tokenizer: PromptTokenizer) -> (Vec<String>, u32) {
    let count = |t: &str| match tokenizer {
        PromptTokenizer::Estimate => switchyard_core::tokens::estimate_text(t),
        PromptTokenizer::O200k => crate::tokens::o200k(t),
    };
    let ids = |l: &[u32]| l.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
    match input {
        EmbeddingInput::Text(t) => (vec![t.clone()], count(t)),
        EmbeddingInput::Texts(ts) => (ts.clone(), ts.iter().map(|t| count(t)).sum()),
        EmbeddingInput::Tokens(l) => (vec![ids(l)], l.len() as u32),
        EmbeddingInput::TokenLists(ls) => (
            ls.iter().map(|l| ids(l)).collect(),
            ls.iter().map(|l| l.len() as u32).sum(),
        ),
    }
}

/// An embeddings request, whatever its wire format.
struct Asked {
    model: String,
    texts: Vec<String>,
    tokens: u32,
    dimensions: Option<usize>,
}

/// OpenAI's body (also Azure's).
fn parse_openai(body: &[u8], route: &Route, tokenizer: PromptTokenizer) -> Result<Asked, Failure> {
    let req: EmbeddingRequest =
        serde_json::from_slice(body).map_err(|e| Failure::BadRequest(e.to_string()))?;
    let (texts, tokens) = texts(&req.input, tokenizer);
    Ok(Asked {
        model: route.model.clone().unwrap_or(req.model),
        texts,
        tokens,
        dimensions: req.dimensions.map(|d| d as usize),
    })
}

/// Gemini's `batchEmbedContents` body.
fn parse_gemini(body: &[u8], route: &Route, tokenizer: PromptTokenizer) -> Result<Asked, Failure> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Failure::BadRequest(format!("Invalid JSON payload received. {e}")))?;
    let Some(requests) = v["requests"].as_array().filter(|r| !r.is_empty()) else {
        return Err(Failure::BadRequest(
            "* BatchEmbedContentsRequest.requests: must not be empty".into(),
        ));
    };
    let mut out = Vec::new();
    let mut dims = None;
    for r in requests {
        let text: String = r["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["text"].as_str())
            .collect();
        dims = r["outputDimensionality"]
            .as_u64()
            .map(|d| d as usize)
            .or(dims);
        out.push(text);
    }
    let (texts, tokens) = texts(&EmbeddingInput::Texts(out), tokenizer);
    Ok(Asked {
        model: route.model.clone().unwrap_or_default(),
        texts,
        tokens,
        dimensions: dims,
    })
}

/// `POST /v1/embeddings` (OpenAI, Azure) or `models/{m}:batchEmbedContents` (Gemini).
pub async fn embed(
    State(app): State<App>,
    reset: Option<axum::Extension<ConnReset>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let resp = answer(&app, reset, uri, headers, body).await;
    crate::server::with_capacity(&app, resp)
}

async fn answer(
    app: &App,
    reset: Option<axum::Extension<ConnReset>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let state = &app.state;
    let _in_flight = state.begin();
    let faults = state.faults();
    let format = state.config.format;
    let dialect = dialect_for(format);
    let route = dialect.route(uri.path(), uri.query().unwrap_or(""));
    let (key, authorized) = dialect.authenticate(&state.config, &headers, &route, &state.tokens);
    let mut recent = RecentRequest::new("embeddings", key.as_deref());
    let fail = |recent: &mut RecentRequest, failure: Failure| {
        recent.outcome = failure.label();
        state.record(recent.clone());
        dialect.error(&failure, faults.retry_after_s)
    };
    if !authorized {
        return fail(&mut recent, Failure::Unauthorized);
    }
    let gemini = matches!(format, WireFormat::Gemini | WireFormat::Vertex);
    let asked = if gemini {
        parse_gemini(&body, &route, state.config.prompt_tokenizer)
    } else {
        parse_openai(&body, &route, state.config.prompt_tokenizer)
    };
    let asked = match asked {
        Ok(a) => a,
        Err(f) => return fail(&mut recent, f),
    };
    recent.model = asked.model.clone();
    recent.prompt_tokens = asked.tokens;
    if !state.config.models.is_empty() && !state.config.models.contains(&asked.model) {
        return fail(&mut recent, Failure::ModelNotFound(asked.model.clone()));
    }
    let tokens = asked.tokens;
    let malformed = match meet_faults(app, &faults, &mut recent, tokens, reset, &fail).await {
        Ok(malformed) => malformed,
        Err(resp) => return resp,
    };
    state.record(recent);
    sleep(state.ttft(&faults.latency)).await;
    if malformed {
        return crate::wire::malformed_json();
    }
    let dims = asked
        .dimensions
        .unwrap_or(state.config.embedding_dimensions);
    let body = if gemini {
        let embeddings: Vec<Value> = asked
            .texts
            .iter()
            .map(|t| json!({"values": vector(t, dims)}))
            .collect();
        json!({ "embeddings": embeddings })
    } else {
        let data: Vec<Value> = asked
            .texts
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": vector(t, dims)}))
            .collect();
        json!({"object": "list", "data": data, "model": asked.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
    };
    crate::wire::json_response(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_deterministic_unit_vectors() {
        let a = vector("hello", 16);
        assert_eq!(a, vector("hello", 16));
        assert_ne!(a, vector("hellp", 16));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
