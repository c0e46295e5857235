//! OpenAI-format embeddings (`POST /v1/embeddings`): a deterministic unit vector per input (the
//! same text always gives the same vector, of `dimensions` or the provider's
//! `embedding_dimensions`), prompt tokens counted as for chat, and the provider's fault profile
//! applied by the same code as for chat (auth, model, then [`meet_faults`], then latency).

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response, StatusCode};
use bytes::Bytes;
use serde_json::{Value, json};
use switchyard_core::{EmbeddingInput, EmbeddingRequest};

use crate::conn::ConnReset;
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

/// `POST /v1/embeddings`.
pub async fn embed(
    State(app): State<App>,
    reset: Option<axum::Extension<ConnReset>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let state = &app.state;
    let _in_flight = state.begin();
    let faults = state.faults();
    let key = crate::openai::presented_key(&headers);
    let mut recent = RecentRequest::new("embeddings", key.as_deref());
    let fail = |recent: &mut RecentRequest, failure: Failure| {
        recent.outcome = failure.label();
        state.record(recent.clone());
        crate::openai::error(&failure, faults.retry_after_s)
    };
    if let Some(expected) = &state.config.api_key
        && key.as_deref() != Some(expected.as_str())
    {
        return fail(&mut recent, Failure::Unauthorized);
    }
    let req: EmbeddingRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return fail(&mut recent, Failure::BadRequest(e.to_string())),
    };
    let (texts, tokens) = texts(&req.input, state.config.prompt_tokenizer);
    recent.model = req.model.clone();
    recent.prompt_tokens = tokens;
    if !state.config.models.is_empty() && !state.config.models.contains(&req.model) {
        return fail(&mut recent, Failure::ModelNotFound(req.model.clone()));
    }
    let malformed = match meet_faults(&app, &faults, &mut recent, tokens, reset, &fail).await {
        Ok(malformed) => malformed,
        Err(resp) => return resp,
    };
    state.record(recent);
    sleep(Duration::from_millis(
        faults.latency.ttft_ms + state.draw_ms(faults.latency.jitter_ms),
    ))
    .await;
    if malformed {
        return crate::wire::malformed_json();
    }
    let dims = req
        .dimensions
        .map_or(state.config.embedding_dimensions, |d| d as usize);
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": vector(t, dims)}))
        .collect();
    crate::wire::json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "model": req.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
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
