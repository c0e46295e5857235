//! What the stages pass along about attempts: a planned attempt with its target, the engine's
//! settings from the workflow, and the trace of one attempt as it happened.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use switchyard_core::{
    AttemptOutcome, ChatChunk, ChatResponse, EndpointId, Error, ModelId, ProviderId,
};
use switchyard_policy_model::config::OnInvalidOutput;
use switchyard_providers::{ChunkStream, Target, Timeouts};
use switchyard_routing::Attempt;
use tokio::time::Instant;

/// A planned attempt with where to send it.
#[derive(Debug, Clone)]
pub struct PlannedAttempt {
    /// The planner's attempt.
    pub attempt: Attempt,
    /// The upstream call target (with the key the attempt uses), shared with the catalog's
    /// unless the attempt uses the org's own key.
    pub target: Arc<Target>,
    /// The endpoint's context window, for context-length fallbacks.
    pub context_length: u32,
}

/// How the engine behaves for one request (from the workflow).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Per-attempt limits (each also bounded by the deadline).
    pub timeouts: Timeouts,
    /// Retries per endpoint after its first try.
    pub max_retries: u32,
    /// Of those, the ones a timeout may use (by default none: a timeout falls back at once).
    pub timeout_retries: u32,
    /// What a stream does with an event it cannot parse.
    pub malformed: switchyard_providers::MalformedEvents,
    /// Hedge the first attempt after this long without an answer (see [`crate::hedge`]).
    pub hedge: Option<Duration>,
    /// First backoff; doubles with each retry, jittered.
    pub base_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
    /// The whole request ends here.
    pub deadline: Instant,
    /// Whether a refusal may fall back.
    pub fallback_on_refusal: bool,
    /// What to do with output that fails its JSON Schema.
    pub on_invalid_output: OnInvalidOutput,
    /// Where every attempt after the first takes its capacity (admission took the first's),
    /// and the tokens each reserves.
    pub capacity: Option<(std::sync::Arc<crate::capacity::CapacityView>, u64)>,
}

/// One attempt as it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptTrace {
    /// Endpoint.
    pub endpoint: EndpointId,
    /// Provider.
    pub provider: ProviderId,
    /// Model.
    pub model: ModelId,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Time taken (for the serving attempt of a stream: to its first chunk until the stream
    /// ends, then the whole stream).
    pub latency_ms: u64,
    /// For a stream's serving attempt: the time to its first chunk.
    #[serde(skip)]
    pub ttft_ms: Option<u64>,
    /// A retry of the previous attempt's endpoint.
    pub retry: bool,
    /// How long the upstream asked not to be called again (Retry-After), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Time taken, exactly (for metrics).
    #[serde(skip)]
    pub elapsed: std::time::Duration,
    /// What validation found in this attempt's reply (set on the serving attempt).
    #[serde(skip)]
    pub validity: Option<crate::validate::Validity>,
    /// Stream events of this attempt that could not be parsed and were skipped.
    #[serde(skip_serializing_if = "is_zero")]
    pub malformed_events: u32,
    /// For an attempt that continued a cut stream: how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continuation: Option<crate::continuation::Mode>,
    /// The second attempt of a hedged request.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hedge: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What validation found in the reply that was served, if it was checked.
pub fn served_validity(trace: &[AttemptTrace]) -> Option<&crate::validate::Validity> {
    trace.iter().rev().find_map(|t| t.validity.as_ref())
}

/// A completion and how it was reached.
#[derive(Debug)]
pub struct Completed<R = ChatResponse> {
    /// The response.
    pub response: R,
    /// Index of the serving attempt in the plan.
    pub served: usize,
    /// Every attempt.
    pub trace: Vec<AttemptTrace>,
}

/// A committed stream: its first chunk, the rest, and how it was reached.
pub struct Streaming {
    /// The chunks up to and including the first one with content.
    pub first: Vec<ChatChunk>,
    /// The rest; ends with an error item if the upstream fails after the first chunk.
    pub rest: ChunkStream,
    /// Index of the serving attempt in the plan.
    pub served: usize,
    /// Every attempt so far.
    pub trace: Vec<AttemptTrace>,
}

impl std::fmt::Debug for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("served", &self.served)
            .field("trace", &self.trace)
            .finish_non_exhaustive()
    }
}

/// Why a request could not be served.
#[derive(Debug)]
pub struct Failed {
    /// The client-facing error (the last attempt's, or the deadline's).
    pub error: Error,
    /// Every attempt.
    pub trace: Vec<AttemptTrace>,
    /// The caller gave up (client disconnect); nothing will read the error.
    pub cancelled: bool,
}
