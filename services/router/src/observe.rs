//! What a request leaves behind for operators: Prometheus series with low-cardinality labels
//! (workflow, model, provider, outcome, error class — never a key, an org's request or a
//! prompt) and one structured log line per request (target `switchyard::request`; silence it
//! with `RUST_LOG=info,switchyard::request=off`). The API key appears only as its display
//! prefix.

use std::time::Duration;

use switchyard_core::{EndpointId, Money, Usage};

use crate::admission::Admitted;
use crate::engine::AttemptTrace;

/// How a request ended, for [`request`].
#[derive(Debug)]
pub struct Ending<'a> {
    /// The serving endpoint and its usage, if anything was served.
    pub served: Option<(&'a EndpointId, Usage)>,
    /// Its cost, if served.
    pub cost: Option<Money>,
    /// Every attempt.
    pub trace: &'a [AttemptTrace],
    /// `ok`, `cancelled` or the error class.
    pub outcome: &'a str,
    /// For streams: when the first chunk was ready for the client, from receipt.
    pub ttft: Option<Duration>,
}

/// Records a request that was admitted and has ended.
pub fn request(a: &Admitted, e: &Ending<'_>) {
    let total = a.received.elapsed();
    let workflow = a.workflow.id.to_string();
    let served = e
        .served
        .and_then(|(ep, _)| a.plan.iter().find(|p| &p.attempt.endpoint == ep));
    let (model, provider) = served.map_or(("none".to_string(), "none".to_string()), |p| {
        (p.attempt.model.to_string(), p.attempt.provider.to_string())
    });
    let outcome = e.outcome.to_string();
    metrics::counter!("switchyard_requests_total", "api" => a.api.as_str(), "workflow" => workflow.clone(), "model" => model.clone(), "provider" => provider.clone(), "outcome" => outcome.clone()).increment(1);
    metrics::histogram!("switchyard_request_duration_seconds", "workflow" => workflow.clone(), "stream" => if a.stream { "true" } else { "false" }).record(total.as_secs_f64());
    let upstream: Duration = e.trace.iter().map(|t| t.elapsed).sum();
    for t in e.trace {
        metrics::histogram!("switchyard_upstream_duration_seconds", "provider" => t.provider.to_string(), "outcome" => t.outcome.as_str()).record(t.elapsed.as_secs_f64());
    }
    // The router's own time: everything but the upstream call, on the common path of one
    // non-streamed attempt (retries would add their backoff waits).
    let overhead = total.saturating_sub(upstream);
    if !a.stream && e.trace.len() == 1 {
        metrics::histogram!("switchyard_router_overhead_seconds").record(overhead.as_secs_f64());
    }
    if let Some(ttft) = e.ttft {
        metrics::histogram!("switchyard_ttft_seconds", "provider" => provider.clone())
            .record(ttft.as_secs_f64());
    }
    let usage = e.served.map(|(_, u)| u).unwrap_or_default();
    if e.served.is_some() {
        metrics::counter!("switchyard_tokens_total", "direction" => "in", "model" => model.clone(), "provider" => provider.clone()).increment(u64::from(usage.prompt_tokens));
        metrics::counter!("switchyard_tokens_total", "direction" => "out", "model" => model.clone(), "provider" => provider.clone()).increment(u64::from(usage.completion_tokens));
    }
    let cost = e.cost.unwrap_or(Money::ZERO);
    metrics::counter!("switchyard_cost_nano_usd_total", "workflow" => workflow.clone())
        .increment(cost.nanos().max(0) as u64);

    // The line is built only when someone reads it (`switchyard::request` at info).
    if !tracing::enabled!(target: "switchyard::request", tracing::Level::INFO) {
        return;
    }
    let retries = e.trace.iter().filter(|t| t.retry).count();
    let fallbacks = e
        .trace
        .windows(2)
        .filter(|w| w[0].endpoint != w[1].endpoint)
        .count();
    let attempts: Vec<String> = e
        .trace
        .iter()
        .map(|t| format!("{}:{}:{}ms", t.endpoint, t.outcome, t.latency_ms))
        .collect();
    tracing::info!(
        target: "switchyard::request",
        request_id = %a.id,
        api = a.api.as_str(),
        org = %a.key.org,
        key_prefix = %a.key.prefix,
        key_id = %a.key.id,
        workflow = %workflow,
        requested_model = %a.requested_model,
        served_model = %model,
        provider = %provider,
        stream = a.stream,
        attempts = %attempts.join(","),
        attempt_count = e.trace.len(),
        retries,
        fallbacks,
        latency_ms = total.as_secs_f64() * 1000.0,
        overhead_ms = overhead.as_secs_f64() * 1000.0,
        ttft_ms = e.ttft.map(|t| t.as_secs_f64() * 1000.0),
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        cost_usd = %cost,
        policy_version = a.policy_version,
        health_version = a.health_version,
        catalog_version = %a.catalog.version,
        route_seed = a.seed,
        outcome = %outcome,
        "request"
    );
}

/// The log line of a request refused before it was routed (unauthenticated, unreadable, over a
/// listener limit, refused by admission or its budget), so every request leaves one: its
/// outcome and status, and the caller's org and key prefix once authenticated. Never the key,
/// never the error's text (it can quote the request).
pub fn refused(
    api: crate::edge::Api,
    outcome: &str,
    status: u16,
    key: Option<&switchyard_policy_model::snapshot::KeyRecord>,
) {
    if !tracing::enabled!(target: "switchyard::request", tracing::Level::INFO) {
        return;
    }
    tracing::info!(
        target: "switchyard::request",
        request_id = %crate::admission::new_id(),
        api = api.as_str(),
        org = key.map(|k| k.org.to_string()),
        key_prefix = key.map(|k| k.prefix.clone()),
        key_id = key.map(|k| k.id.to_string()),
        status,
        outcome = %outcome,
        refused = true,
        "request"
    );
}

/// Records a request refused before any attempt (authentication, validation, policy, budget,
/// no eligible route).
pub fn rejected(api: crate::edge::Api, class: &str) {
    metrics::counter!("switchyard_requests_total", "api" => api.as_str(), "workflow" => "none", "model" => "none", "provider" => "none", "outcome" => class.to_string()).increment(1);
}
