//! `GET /v1/models/{id}/endpoints`: the endpoints that would serve one model for the caller (the
//! same judgement as `GET /v1/models`), each with its state as this router plans with it and its
//! live statistics from the time buckets every router's outcomes are kept in: uptime over the
//! last 5 minutes, 30 minutes and day, and latency, time-to-first-token and throughput
//! percentiles over 30 minutes, in OpenRouter's fields (`uptime_last_30m` in percent,
//! `latency_last_30m` in seconds, `throughput_last_30m` in tokens per second, whose p99 is the
//! slowest 1 %). A model the caller may not use is a 404, as if it did not exist.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use switchyard_core::clock::now_ms;
use switchyard_state::{EndpointStats, Percentiles, endpoint_stats};

use crate::edge::Api;
use crate::handler::Router;
use crate::http::{error_response, incoming, refused};
use crate::models::{Listed, per_token};

fn percentiles(p: Option<Percentiles>) -> Value {
    p.map_or(
        Value::Null,
        |p| json!({"p50": p.p50, "p75": p.p75, "p90": p.p90, "p99": p.p99}),
    )
}

fn not_found(path: &str) -> Response {
    crate::http_guard::refuse(
        Api::Chat,
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no model `{path}` for this key (GET /v1/models lists them)"),
        false,
    )
}

/// The endpoints document of `model`.
fn document(r: &Router, model: &Listed, stats: Vec<EndpointStats>) -> Value {
    let health = r.health().snapshot();
    let endpoints: Vec<Value> = model
        .endpoints
        .iter()
        .zip(stats)
        .map(|(c, s)| {
            let state = health
                .endpoints
                .get(&c.endpoint)
                .map_or("unknown", |h| h.state.as_str());
            json!({
                "name": c.endpoint,
                "model_name": model.id,
                "provider_name": c.provider,
                "tag": c.provider,
                "context_length": c.context_length,
                "max_completion_tokens": c.max_output,
                "max_prompt_tokens": c.context_length,
                "pricing": {
                    "prompt": per_token(c.price.prompt),
                    "completion": per_token(c.price.completion),
                    "request": c.price.request.to_string(),
                },
                "quantization": c.quantization,
                "supported_parameters": c.supports.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                "state": state,
                "uptime_last_5m": s.uptime_5m,
                "uptime_last_30m": s.uptime_30m,
                "uptime_last_1d": s.uptime_1d,
                "latency_last_30m": percentiles(s.latency_30m),
                "ttft_last_30m": percentiles(s.ttft_30m),
                "throughput_last_30m": percentiles(s.throughput_30m),
                "attempts_last_30m": s.attempts_30m,
            })
        })
        .collect();
    json!({"data": {
        "id": model.id,
        "name": model.id,
        "kind": model.kind.as_str(),
        "health_version": health.version,
        "endpoints": endpoints,
    }})
}

/// `GET /v1/models/{id}/endpoints[?workflow=ID]` (the id may contain `/`).
pub async fn get(
    State(r): State<Arc<Router>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    query: Query<std::collections::HashMap<String, String>>,
) -> Response {
    let caller = match r.authenticate(&incoming(Api::Chat, &headers)) {
        Ok(c) => c,
        Err(e) => return refused(&e),
    };
    let Some(id) = path.strip_suffix("/endpoints") else {
        return crate::http_guard::refuse(
            Api::Chat,
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such route: GET /v1/models/{path} (GET /v1/models/ID/endpoints is)"),
            false,
        );
    };
    let workflow = query.get("workflow").cloned().or_else(|| {
        headers
            .get("x-switchyard-workflow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    let listed = match crate::models::listing(&r.catalog().routing, &caller, workflow.as_deref()) {
        Ok(l) => l,
        Err(e) => return error_response(&e),
    };
    let Some(model) = listed.iter().find(|m| m.id.as_str() == id) else {
        return not_found(id);
    };
    let now = now_ms();
    let store = r.health().store();
    let read = model
        .endpoints
        .iter()
        .map(|c| endpoint_stats(store.as_ref(), &c.endpoint, now));
    match futures::future::try_join_all(read).await {
        Ok(stats) => axum::Json(document(&r, model, stats)).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "endpoint statistics unreadable");
            crate::http_guard::refuse(
                Api::Chat,
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "endpoint statistics are unreachable right now (the shared health store did not answer)".into(),
                false,
            )
        }
    }
}
