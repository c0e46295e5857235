//! One active probe: what the prober sends an endpoint to see whether it answers.

use std::time::{Duration, Instant};

use switchyard_core::clock::now_ms;
use switchyard_core::{
    ChatRequest, EmbeddingInput, EmbeddingRequest, ErrorClass, ModelId, ModelKind, Money,
};
use switchyard_providers::{Call, CallError, EmbedCall, ProviderClient, Target, Timeouts};
use tokio_util::sync::CancellationToken;

use crate::machine::ProbeResult;

/// An endpoint the prober watches.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// Where and how to call it.
    pub target: Target,
    /// Its model.
    pub model: ModelId,
    /// What one probe costs at its prices.
    pub cost: Money,
    /// Chat (a one-token completion) or embedding (one short input).
    pub kind: ModelKind,
}

/// One active probe of `t` within `timeout`: a one-token completion, or the embedding of one
/// word for an embedding model; counted in `switchyard_probes_total`.
pub async fn probe(client: &ProviderClient, timeout: Duration, t: &ProbeTarget) -> ProbeResult {
    let mut req = ChatRequest::user(t.model.as_str(), "ping");
    req.max_tokens = Some(1);
    let embed = EmbeddingRequest {
        model: t.model.to_string(),
        models: Vec::new(),
        input: EmbeddingInput::Text("ping".into()),
        dimensions: None,
        encoding_format: None,
        user: None,
        provider: None,
        workflow: None,
    };
    let timeouts = Timeouts {
        connect: timeout.min(Duration::from_secs(2)),
        first_byte: timeout,
        first_token: timeout,
        idle: timeout,
        total: timeout,
    };
    let cancel = CancellationToken::new();
    let started_ms = now_ms();
    let started = Instant::now();
    let r = match t.kind {
        ModelKind::Chat => client
            .chat(Call {
                target: &t.target,
                request: &req,
                timeouts,
                malformed: Default::default(),
                cancel: &cancel,
            })
            .await
            .map(drop),
        ModelKind::Embedding => client
            .embed(EmbedCall {
                target: &t.target,
                request: &embed,
                timeouts,
                cancel: &cancel,
            })
            .await
            .map(drop),
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let class = match &r {
        Ok(_) => None,
        Err(CallError::Upstream(e)) => Some(e.class),
        Err(CallError::Cancelled) => Some(ErrorClass::Timeout),
    };
    let result = if class.is_some() { "failure" } else { "ok" };
    metrics::counter!("switchyard_probes_total", "endpoint" => t.target.endpoint.to_string(), "result" => result).increment(1);
    ProbeResult {
        ok: class.is_none(),
        latency_ms,
        class,
        started_ms,
    }
}
