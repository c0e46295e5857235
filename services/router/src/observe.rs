//! What a request leaves behind for operators: Prometheus series with low-cardinality labels
//! (workflow, model, provider, outcome, error class — never a key, an org's request or a
//! prompt) and one structured log line per request (target `switchyard::request`; silence it
//! with `RUST_LOG=info,switchyard::request=off`). The API key appears only as its display
//! prefix.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use metrics::{Counter, Histogram};
use switchyard_core::ModelId;
use switchyard_core::{AttemptOutcome, EndpointId, FastMap, Money, ProviderId, Usage, WorkflowId};
use switchyard_state::{RecordedAttempt, RequestRecord};

use crate::admission::Admitted;
use crate::edge::Api;
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
    pub outcome: &'static str,
    /// For streams: when the first chunk was ready for the client, from receipt.
    pub ttft: Option<Duration>,
}

/// The series one kind of request ends in (its API, workflow, served model and provider, and
/// outcome), resolved once: looking a labelled series up in the recorder allocates its labels
/// and hashes them, on every request.
struct Series {
    requests: Counter,
    duration: Histogram,
    tokens_in: Counter,
    tokens_out: Counter,
    cost: Counter,
    ttft: Histogram,
}

type SeriesKey = (
    Api,
    bool,
    WorkflowId,
    Option<(ModelId, ProviderId)>,
    &'static str,
);

/// Resolved series, by what labels them; as many as the label sets in use, a few hundred at
/// most in any deployment (labels are low-cardinality by design).
static SERIES: LazyLock<Mutex<FastMap<SeriesKey, Arc<Series>>>> = LazyLock::new(Mutex::default);
static ATTEMPTS: LazyLock<Mutex<FastMap<(ProviderId, AttemptOutcome), Histogram>>> =
    LazyLock::new(Mutex::default);

fn series(key: SeriesKey) -> Arc<Series> {
    let mut all = SERIES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = all.get(&key) {
        return s.clone();
    }
    let (api, stream, workflow, served, outcome) = &key;
    let (model, provider) = served
        .as_ref()
        .map_or(("none".to_string(), "none".to_string()), |(m, p)| {
            (m.to_string(), p.to_string())
        });
    let workflow = workflow.to_string();
    let s = Arc::new(Series {
        requests: metrics::counter!("switchyard_requests_total", "api" => api.as_str(), "workflow" => workflow.clone(), "model" => model.clone(), "provider" => provider.clone(), "outcome" => *outcome),
        duration: metrics::histogram!("switchyard_request_duration_seconds", "workflow" => workflow.clone(), "stream" => if *stream { "true" } else { "false" }),
        tokens_in: metrics::counter!("switchyard_tokens_total", "direction" => "in", "model" => model.clone(), "provider" => provider.clone()),
        tokens_out: metrics::counter!("switchyard_tokens_total", "direction" => "out", "model" => model, "provider" => provider.clone()),
        cost: metrics::counter!("switchyard_cost_nano_usd_total", "workflow" => workflow),
        ttft: metrics::histogram!("switchyard_ttft_seconds", "provider" => provider),
    });
    all.insert(key, s.clone());
    s
}

fn attempt_duration(provider: &ProviderId, outcome: AttemptOutcome) -> Histogram {
    let mut all = ATTEMPTS.lock().unwrap_or_else(|e| e.into_inner());
    all.entry((provider.clone(), outcome))
        .or_insert_with(|| {
            metrics::histogram!("switchyard_upstream_duration_seconds", "provider" => provider.to_string(), "outcome" => outcome.as_str())
        })
        .clone()
}

/// Records a request that was admitted and has ended: its metrics, its log line, and its
/// record in `records`.
pub fn request(a: &Admitted, e: &Ending<'_>, records: Option<&crate::records::Recorder>) {
    let total = a.received.elapsed();
    let served = e
        .served
        .and_then(|(ep, _)| a.plan.iter().find(|p| &p.attempt.endpoint == ep));
    let m = series((
        a.api,
        a.stream,
        a.workflow.id.clone(),
        served.map(|p| (p.attempt.model.clone(), p.attempt.provider.clone())),
        e.outcome,
    ));
    m.requests.increment(1);
    m.duration.record(total.as_secs_f64());
    let upstream: Duration = e.trace.iter().map(|t| t.elapsed).sum();
    for t in e.trace {
        attempt_duration(&t.provider, t.outcome).record(t.elapsed.as_secs_f64());
    }
    // The router's own time: everything but the upstream call, on the common path of one
    // non-streamed attempt (retries would add their backoff waits).
    let overhead = total.saturating_sub(upstream);
    if !a.stream && e.trace.len() == 1 {
        static OVERHEAD: LazyLock<Histogram> =
            LazyLock::new(|| metrics::histogram!("switchyard_router_overhead_seconds"));
        OVERHEAD.record(overhead.as_secs_f64());
    }
    if let Some(ttft) = e.ttft {
        m.ttft.record(ttft.as_secs_f64());
    }
    let usage = e.served.map(|(_, u)| u).unwrap_or_default();
    if e.served.is_some() {
        m.tokens_in.increment(u64::from(usage.prompt_tokens));
        m.tokens_out.increment(u64::from(usage.completion_tokens));
    }
    let cost = e.cost.unwrap_or(Money::ZERO);
    m.cost.increment(cost.nanos().max(0) as u64);

    let retries = e.trace.iter().filter(|t| t.retry).count();
    let fallbacks = e
        .trace
        .windows(2)
        .filter(|w| w[0].endpoint != w[1].endpoint)
        .count();
    let created_ms = switchyard_state::request_log::received_ms(&a.id).unwrap_or_default();
    if let Some(records) = records.filter(|r| r.wants(a.key.org.as_str(), created_ms)) {
        records.record(RequestRecord {
            id: a.id.clone(),
            created_ms,
            org: a.key.org.to_string(),
            key_id: a.key.id.to_string(),
            api: a.api.as_str().to_string(),
            stream: a.stream,
            workflow: a.workflow.id.to_string(),
            requested_model: a.requested_model.clone(),
            model: served.map(|p| p.attempt.model.to_string()),
            provider: served.map(|p| p.attempt.provider.to_string()),
            endpoint: served.map(|p| p.attempt.endpoint.to_string()),
            attempts: e
                .trace
                .iter()
                .map(|t| RecordedAttempt {
                    endpoint: t.endpoint.to_string(),
                    provider: t.provider.to_string(),
                    model: t.model.to_string(),
                    outcome: t.outcome.as_str().to_string(),
                    latency_ms: t.latency_ms,
                    retry: t.retry,
                })
                .collect(),
            retries: retries as u32,
            fallbacks: fallbacks as u32,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cost_nano_usd: cost.nanos(),
            cost_usd: cost.to_string(),
            latency_ms: total.as_secs_f64() * 1000.0,
            ttft_ms: e.ttft.map(|t| t.as_secs_f64() * 1000.0),
            policy_version: a.policy_version,
            health_version: a.health_version,
            catalog_version: a.catalog.version.to_string(),
            route_seed: a.seed.to_string(),
            outcome: e.outcome.to_string(),
        });
    }

    // The line is built only when someone reads it (`switchyard::request` at info).
    if !tracing::enabled!(target: "switchyard::request", tracing::Level::INFO) {
        return;
    }
    let workflow = &a.workflow.id;
    let (model, provider) = served.map_or(("none", "none"), |p| {
        (p.attempt.model.as_str(), p.attempt.provider.as_str())
    });
    let outcome = e.outcome;
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
