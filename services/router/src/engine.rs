//! The attempt engine: runs a plan's attempts in order under one deadline. A failed attempt is
//! retried on the same endpoint only for retryable classes, a bounded number of times, after a
//! jittered exponential backoff or the upstream's Retry-After, within the retry budget; a
//! Retry-After longer than the backoff cap is only waited out when no other endpoint is left.
//! Otherwise the engine falls back along the plan when the class allows it: any endpoint for
//! outages and rate limits, a model with a larger context for context errors, and after a refusal
//! only if the workflow allows. A timeout moves on at once unless the workflow allows retrying it
//! (`retry.timeout_retries`). A stream can still fall back until its first content; after that
//! it is committed to its endpoint.

use std::time::Duration;

use futures::StreamExt;
use switchyard_core::{
    AttemptOutcome, ChatRequest, EmbeddingRequest, EmbeddingResponse, Error, ErrorClass, Fallback,
    ProviderId,
};
use switchyard_policy_model::config::OnInvalidOutput;
use switchyard_providers::{Call, CallError, EmbedCall, ProviderClient, Timeouts, UpstreamError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use crate::attempt::{
    AttemptTrace, Completed, EngineSettings, Failed, PlannedAttempt, Streaming, served_validity,
};
use crate::hedge::Race;
use crate::retry_budget::RetryBudget;
use crate::validate::Validator;

enum Next {
    Retry(Duration),
    OtherEndpoint,
    Stop,
}

fn backoff(base: Duration, retries_done: u32, max: Duration) -> Duration {
    let exp = base
        .saturating_mul(1u32.checked_shl(retries_done.min(16)).unwrap_or(u32::MAX))
        .min(max);
    // Full jitter over the upper half: spreads retries without making them arbitrarily short.
    let half = exp / 2;
    half + Duration::from_secs_f64(rand::random::<f64>() * half.as_secs_f64())
}

fn decide(
    e: &UpstreamError,
    retries_done: u32,
    more_endpoints: bool,
    s: &EngineSettings,
    budget: &RetryBudget,
    provider: &ProviderId,
) -> Next {
    // An endpoint that did not answer in time is unlikely to answer the same request sooner:
    // timeouts move on unless the workflow allows retrying them.
    let allowed = if e.class == ErrorClass::Timeout {
        s.timeout_retries.min(s.max_retries)
    } else {
        s.max_retries
    };
    if e.class.retry_same_endpoint() && retries_done < allowed {
        let wait = backoff(s.base_backoff, retries_done, s.max_backoff)
            .max(e.retry_after.unwrap_or_default());
        let worth_waiting = wait <= s.max_backoff || !more_endpoints;
        if worth_waiting && Instant::now() + wait < s.deadline && budget.try_spend(provider) {
            return Next::Retry(wait);
        }
    }
    match e.class.fallback() {
        Fallback::Yes | Fallback::LargerContext => Next::OtherEndpoint,
        Fallback::IfWorkflowAllows if s.fallback_on_refusal => Next::OtherEndpoint,
        _ => Next::Stop,
    }
}

pub(crate) fn trace(
    p: &PlannedAttempt,
    outcome: AttemptOutcome,
    started: Instant,
    retry: bool,
) -> AttemptTrace {
    AttemptTrace {
        endpoint: p.attempt.endpoint.clone(),
        provider: p.attempt.provider.clone(),
        model: p.attempt.model.clone(),
        outcome,
        latency_ms: started.elapsed().as_millis() as u64,
        ttft_ms: None,
        retry,
        retry_after_ms: None,
        elapsed: started.elapsed(),
        validity: None,
        malformed_events: 0,
        continuation: None,
        hedge: false,
    }
}

pub(crate) fn attempt_timeouts(s: &EngineSettings) -> Option<Timeouts> {
    let left = s.deadline.checked_duration_since(Instant::now())?;
    if left.is_zero() {
        return None;
    }
    Some(Timeouts {
        connect: s.timeouts.connect.min(left),
        first_byte: s.timeouts.first_byte.min(left),
        first_token: s.timeouts.first_token.min(left),
        idle: s.timeouts.idle,
        total: s.timeouts.total.min(left),
    })
}

/// What happened to one attempt, for the shared loop.
pub(crate) enum Tried<T> {
    Served(T),
    /// Served, but the output failed its JSON Schema.
    Invalid(T),
    Failed(UpstreamError),
    Cancelled,
}

/// The loop both entry points share: attempts in order, retries, fallbacks, the deadline.
async fn drive<T, F, Fut>(
    plan: &[PlannedAttempt],
    s: &EngineSettings,
    budget: &RetryBudget,
    cancel: &CancellationToken,
    once: F,
) -> Result<(T, usize, Vec<AttemptTrace>), Failed>
where
    F: Fn(usize, Timeouts) -> Fut,
    Fut: std::future::Future<Output = Tried<T>>,
{
    let mut traces = Vec::new();
    let mut last: Option<UpstreamError> = None;
    // The last reply that failed validation, returned (marked) if nothing better comes.
    let mut kept: Option<(T, usize)> = None;
    // Ends the request without a valid reply: the kept invalid one if any, else `$error`.
    macro_rules! give_up {
        ($error:expr) => {
            return match kept.take() {
                Some((v, at)) => Ok((v, at, traces)),
                None => Err(Failed {
                    error: $error,
                    trace: traces,
                    cancelled: false,
                }),
            }
        };
    }
    let mut min_context: Option<u32> = None;
    // Admission took the first attempt's capacity; each later one takes its own.
    let mut first = true;
    let mut i = 0;
    'plan: while i < plan.len() {
        let p = &plan[i];
        if min_context.is_some_and(|c| p.context_length <= c) {
            i += 1;
            continue;
        }
        let mut retries = 0u32;
        let mut retried_invalid = false;
        loop {
            let Some(timeouts) = attempt_timeouts(s) else {
                // Out of time: the last upstream failure says more than "timeout" when there was one.
                let error = match &last {
                    Some(e) => e.to_error(),
                    None => Error::new(
                        ErrorClass::Timeout,
                        "the request deadline passed before an upstream answered",
                    ),
                };
                give_up!(error);
            };
            if retries == 0 {
                budget.deposit(&p.attempt.provider);
            }
            if !std::mem::take(&mut first)
                && let Some((capacity, tokens)) = &s.capacity
            {
                capacity.reserve(&p.target, *tokens);
            }
            let started = Instant::now();
            // One span per attempt (exported with OTLP when configured).
            let span = tracing::info_span!(
                "attempt",
                endpoint = %p.attempt.endpoint,
                provider = %p.attempt.provider,
                retry = retries > 0,
                outcome = tracing::field::Empty,
            );
            let hedge = s.hedge.filter(|_| i == 0 && retries == 0 && plan.len() > 1);
            let tried = match hedge {
                None => tracing::Instrument::instrument(once(i, timeouts), span.clone()).await,
                Some(delay) => {
                    // Boxed: two attempts' futures, only for hedged requests.
                    let race = Box::pin(crate::hedge::race(
                        &once,
                        plan,
                        (0, 1),
                        timeouts,
                        delay,
                        s,
                        budget,
                    ));
                    match tracing::Instrument::instrument(race, span.clone()).await {
                        Race::Alone(tried) => tried,
                        Race::Won {
                            value,
                            served,
                            traces: raced,
                        } => {
                            crate::hedge::count_attempts(&raced);
                            traces.extend(raced);
                            return Ok((value, served, traces));
                        }
                        Race::Lost {
                            traces: raced,
                            error,
                            kept: invalid,
                        } => {
                            crate::hedge::count_attempts(&raced);
                            traces.extend(raced);
                            if invalid.is_some() {
                                kept = invalid;
                            }
                            let error = error.unwrap_or_else(crate::hedge::no_answer);
                            if !crate::hedge::may_go_on(&error, s.fallback_on_refusal) {
                                give_up!(error.to_error());
                            }
                            last = Some(error);
                            // Both endpoints were tried.
                            i = 2;
                            continue 'plan;
                        }
                    }
                }
            };
            span.record(
                "outcome",
                match &tried {
                    Tried::Served(_) => AttemptOutcome::Ok.as_str(),
                    Tried::Invalid(_) => AttemptOutcome::InvalidOutput.as_str(),
                    Tried::Failed(e) => e.class.as_str(),
                    Tried::Cancelled => "cancelled",
                },
            );
            match tried {
                Tried::Served(v) => {
                    traces.push(trace(p, AttemptOutcome::Ok, started, retries > 0));
                    metrics::counter!("switchyard_attempts_total", "provider" => p.attempt.provider.to_string(), "outcome" => "ok").increment(1);
                    return Ok((v, i, traces));
                }
                Tried::Invalid(v) => {
                    traces.push(trace(p, INVALID_OUTPUT, started, retries > 0));
                    metrics::counter!("switchyard_attempts_total", "provider" => p.attempt.provider.to_string(), "outcome" => INVALID_OUTPUT.as_str()).increment(1);
                    match s.on_invalid_output {
                        OnInvalidOutput::Return => return Ok((v, i, traces)),
                        // A retry for invalid output spends from the retry budget like any other:
                        // an endpoint that keeps failing its schema cannot double its traffic.
                        OnInvalidOutput::Retry
                            if !retried_invalid && budget.try_spend(&p.attempt.provider) =>
                        {
                            retried_invalid = true;
                            retries += 1;
                            kept = Some((v, i));
                            metrics::counter!("switchyard_retries_total", "provider" => p.attempt.provider.to_string()).increment(1);
                        }
                        OnInvalidOutput::Retry => return Ok((v, i, traces)),
                        OnInvalidOutput::Fallback => {
                            kept = Some((v, i));
                            if let Some(next) = plan.get(i + 1) {
                                metrics::counter!("switchyard_fallbacks_total", "from" => p.attempt.provider.to_string(), "to" => next.attempt.provider.to_string(), "reason" => INVALID_OUTPUT.as_str()).increment(1);
                            }
                            break;
                        }
                    }
                }
                Tried::Cancelled => {
                    let error = Error::new(ErrorClass::Timeout, CANCELLED);
                    return Err(Failed {
                        error,
                        trace: traces,
                        cancelled: true,
                    });
                }
                Tried::Failed(e) => {
                    let mut t = trace(p, AttemptOutcome::Failed(e.class), started, retries > 0);
                    t.retry_after_ms = e.retry_after.map(|d| d.as_millis() as u64);
                    traces.push(t);
                    metrics::counter!("switchyard_attempts_total", "provider" => p.attempt.provider.to_string(), "outcome" => e.class.as_str()).increment(1);
                    let more = plan[i + 1..]
                        .iter()
                        .any(|q| min_context.is_none_or(|c| q.context_length > c));
                    match decide(&e, retries, more, s, budget, &p.attempt.provider) {
                        Next::Retry(wait) => {
                            metrics::counter!("switchyard_retries_total", "provider" => p.attempt.provider.to_string()).increment(1);
                            retries += 1;
                            tokio::select! {
                                _ = cancel.cancelled() => {
                                    let error = Error::new(ErrorClass::Timeout, CANCELLED);
                                    return Err(Failed { error, trace: traces, cancelled: true });
                                }
                                _ = tokio::time::sleep(wait) => {}
                            }
                            last = Some(e);
                        }
                        Next::OtherEndpoint => {
                            if e.class == ErrorClass::ContextLengthExceeded {
                                min_context = Some(min_context.unwrap_or(0).max(p.context_length));
                            }
                            if let Some(next) = plan[i + 1..]
                                .iter()
                                .find(|q| min_context.is_none_or(|c| q.context_length > c))
                            {
                                metrics::counter!("switchyard_fallbacks_total", "from" => p.attempt.provider.to_string(), "to" => next.attempt.provider.to_string(), "reason" => e.class.as_str()).increment(1);
                            }
                            last = Some(e);
                            break;
                        }
                        Next::Stop => give_up!(e.to_error()),
                    }
                }
            }
        }
        i += 1;
    }
    let error = match last {
        Some(e) => e.to_error(),
        None => Error::new(ErrorClass::NoEligibleRoute, "no attempt could be made"),
    };
    give_up!(error)
}

/// Why a cancelled request ended (the router's drain deadline passed while it waited).
const CANCELLED: &str =
    "the request was cancelled before an upstream answered: the router is shutting down";

/// The trace outcome of an attempt whose output failed its JSON Schema.
pub const INVALID_OUTPUT: AttemptOutcome = AttemptOutcome::InvalidOutput;

/// How replies are validated: the request's schemas, and where validity is counted.
#[derive(Debug, Clone, Copy)]
pub struct OutputCheck<'a> {
    /// The compiled schemas.
    pub validator: &'a Validator,
    /// Passive outcomes, for the endpoint's tool-call validity rate.
    pub outcomes: Option<&'a crate::outcomes::OutcomeWriter>,
}

/// Runs a non-streamed request along `plan`.
pub async fn complete(
    client: &ProviderClient,
    plan: &[PlannedAttempt],
    request: &ChatRequest,
    s: &EngineSettings,
    budget: &RetryBudget,
    cancel: &CancellationToken,
    check: Option<OutputCheck<'_>>,
) -> Result<Completed, Failed> {
    let ((response, validity), served, mut trace) =
        drive(plan, s, budget, cancel, |i, timeouts| {
            let target = &plan[i].target;
            async move {
                match client
                    .chat(Call {
                        target,
                        request,
                        timeouts,
                        malformed: s.malformed,
                        cancel,
                    })
                    .await
                {
                    Ok(r) => match check {
                        Some(c) => {
                            let validity = c.validator.check(&r);
                            Validator::count(&target.endpoint, &validity, c.outcomes);
                            if validity.valid {
                                Tried::Served((r, Some(validity)))
                            } else {
                                Tried::Invalid((r, Some(validity)))
                            }
                        }
                        None => Tried::Served((r, None)),
                    },
                    Err(CallError::Upstream(e)) => Tried::Failed(e),
                    Err(CallError::Cancelled) => Tried::Cancelled,
                }
            }
        })
        .await?;
    // The served reply is the last attempt that answered (later ones, if any, failed).
    if let Some(t) = trace.iter_mut().rev().find(|t| t.outcome.answered()) {
        t.validity = validity;
    }
    Ok(Completed {
        response,
        served,
        trace,
    })
}

/// Runs an embeddings request along `plan`.
pub async fn embed(
    client: &ProviderClient,
    plan: &[PlannedAttempt],
    request: &EmbeddingRequest,
    s: &EngineSettings,
    budget: &RetryBudget,
    cancel: &CancellationToken,
) -> Result<Completed<EmbeddingResponse>, Failed> {
    let (response, served, trace) = drive(plan, s, budget, cancel, |i, timeouts| {
        let target = &plan[i].target;
        async move {
            match client
                .embed(EmbedCall {
                    target,
                    request,
                    timeouts,
                    cancel,
                })
                .await
            {
                Ok(r) => Tried::Served(r),
                Err(CallError::Upstream(e)) => Tried::Failed(e),
                Err(CallError::Cancelled) => Tried::Cancelled,
            }
        }
    })
    .await?;
    Ok(Completed {
        response,
        served,
        trace,
    })
}

/// Runs a streamed request along `plan`, falling back until an attempt yields its first
/// content (text, reasoning, a tool call or a finish; a role-only opening does not commit).
pub async fn stream(
    client: &ProviderClient,
    plan: &[PlannedAttempt],
    request: &ChatRequest,
    s: &EngineSettings,
    budget: &RetryBudget,
    cancel: &CancellationToken,
) -> Result<Streaming, Failed> {
    let ((first, rest), served, trace) = drive(plan, s, budget, cancel, |i, timeouts| {
        let target = &plan[i].target;
        async move {
            let mut rest = match client
                .chat_stream(Call {
                    target,
                    request,
                    timeouts,
                    malformed: s.malformed,
                    cancel,
                })
                .await
            {
                Ok(s) => s,
                Err(CallError::Upstream(e)) => return Tried::Failed(e),
                Err(CallError::Cancelled) => return Tried::Cancelled,
            };
            // Committed at the first content: a role-only opening can still fall back.
            let mut first = Vec::new();
            loop {
                match rest.next().await {
                    Some(Ok(chunk)) => {
                        let content = chunk.carries_answer();
                        first.push(chunk);
                        if content {
                            return Tried::Served((first, rest));
                        }
                    }
                    Some(Err(CallError::Upstream(e))) => return Tried::Failed(e),
                    Some(Err(CallError::Cancelled)) => return Tried::Cancelled,
                    None => {
                        return Tried::Failed(UpstreamError::malformed(
                            switchyard_providers::Phase::FirstByte,
                            "stream ended before any content",
                        ));
                    }
                }
            }
        }
    })
    .await?;
    Ok(Streaming {
        first,
        rest,
        served,
        trace,
    })
}
