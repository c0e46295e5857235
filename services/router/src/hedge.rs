//! Hedged requests (`hedge:` on a workflow): when a request's first attempt has not produced its
//! first token (a non-streamed request: its answer) after the workflow's delay, a second attempt
//! starts on the next endpoint of the plan; the first to answer wins and the other is cancelled.
//! Each hedge is a retry of its request: it spends a token of the retry budget of the first
//! attempt's provider, which every request there deposits into, so hedges add at most what
//! retries may (20 % of the requests, plus a burst); without a token the first attempt runs
//! alone. A cancelled
//! attempt is in the trace as `cancelled` (marked `hedge` when it was the second) and billed at
//! the prompt it was sent, as it streamed nothing.
//!
//! The delay is `after_ms`, or the first endpoint's time to first token at `after_percentile`
//! over this router's last [`WINDOW`] answers from it (once [`MIN_SAMPLES`] are known).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use switchyard_core::{AttemptOutcome, EndpointId, ErrorClass, FastMap};
use switchyard_providers::{Timeouts, UpstreamError};
use tokio::time::Instant;

use crate::engine::{AttemptTrace, EngineSettings, PlannedAttempt, Tried};
use crate::retry_budget::RetryBudget;

/// Answers kept per endpoint.
pub const WINDOW: usize = 256;
/// Answers needed before a percentile is used.
pub const MIN_SAMPLES: usize = 20;

#[derive(Debug, Default)]
struct Window {
    samples: VecDeque<u32>,
    sorted: Vec<u32>,
    /// Samples added since `sorted` was made.
    fresh: usize,
}

/// Recent times to first token per endpoint, as this router saw them.
#[derive(Debug, Default)]
pub struct TtftWindows {
    windows: Mutex<FastMap<EndpointId, Window>>,
}

impl TtftWindows {
    /// Notes an answer from `endpoint` after `ms`.
    pub fn record(&self, endpoint: &EndpointId, ms: u64) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let w = windows.entry(endpoint.clone()).or_default();
        if w.samples.len() == WINDOW {
            w.samples.pop_front();
        }
        w.samples.push_back(u32::try_from(ms).unwrap_or(u32::MAX));
        w.fresh += 1;
    }

    /// `endpoint`'s time to first token at percentile `p`, once enough answers are known.
    pub fn percentile(&self, endpoint: &EndpointId, p: f64) -> Option<Duration> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let w = windows.get_mut(endpoint)?;
        if w.samples.len() < MIN_SAMPLES {
            return None;
        }
        // Sorted again after every 16 new answers, not for every request.
        if w.fresh >= 16 || w.sorted.len() < MIN_SAMPLES {
            w.sorted.clear();
            w.sorted.extend(w.samples.iter().copied());
            w.sorted.sort_unstable();
            w.fresh = 0;
        }
        let n = w.sorted.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let ms = w.sorted[rank.clamp(1, n) - 1];
        Some(Duration::from_millis(u64::from(ms)))
    }
}

/// How a first attempt that may be hedged ended.
pub(crate) enum Race<T> {
    /// No hedge started (an answer or a failure came before the delay, or the budget was
    /// spent): the first attempt's result, as if unhedged.
    Alone(Tried<T>),
    /// One of the two answered: its value and plan index, and both attempts' traces.
    Won {
        value: T,
        served: usize,
        traces: Vec<AttemptTrace>,
    },
    /// Neither answered: both traces, the first attempt's failure (else the hedge's), and an
    /// answer that failed its schema, if one did.
    Lost {
        traces: Vec<AttemptTrace>,
        error: Option<UpstreamError>,
        kept: Option<(T, usize)>,
    },
}

/// Runs plan attempt `i` and, after `delay` without an answer, attempt `j` beside it.
pub(crate) async fn race<T, F, Fut>(
    once: &F,
    plan: &[PlannedAttempt],
    (i, j): (usize, usize),
    timeouts: Timeouts,
    delay: Duration,
    s: &EngineSettings,
    budget: &RetryBudget,
) -> Race<T>
where
    F: Fn(usize, Timeouts) -> Fut,
    Fut: std::future::Future<Output = Tried<T>>,
{
    let first_started = Instant::now();
    let primary = once(i, timeouts);
    tokio::pin!(primary);
    tokio::select! {
        biased;
        r = &mut primary => return Race::Alone(r),
        _ = tokio::time::sleep(delay) => {}
    }
    let hedged_to = &plan[j];
    let Some(hedge_timeouts) = crate::engine::attempt_timeouts(s) else {
        return Race::Alone(primary.await);
    };
    if !budget.try_spend(&plan[i].attempt.provider) {
        metrics::counter!("switchyard_hedges_total", "outcome" => "no_budget").increment(1);
        return Race::Alone(primary.await);
    }
    if let Some((capacity, tokens)) = &s.capacity {
        capacity.reserve(&hedged_to.target, *tokens);
    }
    let started = [first_started, Instant::now()];
    let secondary = once(j, hedge_timeouts);
    tokio::pin!(secondary);
    let index = [i, j];
    let mut ended: [Option<Tried<T>>; 2] = [None, None];
    let mut outcomes = [AttemptOutcome::Cancelled; 2];
    loop {
        let (who, r) = tokio::select! {
            r = &mut primary, if ended[0].is_none() => (0, r),
            r = &mut secondary, if ended[1].is_none() => (1, r),
        };
        let traces = |outcomes: &[AttemptOutcome; 2]| -> Vec<AttemptTrace> {
            (0..2)
                .map(|k| {
                    let mut t =
                        crate::engine::trace(&plan[index[k]], outcomes[k], started[k], false);
                    t.hedge = k == 1;
                    t
                })
                .collect()
        };
        match r {
            Tried::Served(value) => {
                outcomes[who] = AttemptOutcome::Ok;
                let label = if who == 1 { "hedge_won" } else { "first_won" };
                metrics::counter!("switchyard_hedges_total", "outcome" => label).increment(1);
                return Race::Won {
                    value,
                    served: index[who],
                    traces: traces(&outcomes),
                };
            }
            // The request itself is being cancelled (the router's drain deadline).
            Tried::Cancelled => return Race::Alone(Tried::Cancelled),
            Tried::Failed(e) => {
                outcomes[who] = AttemptOutcome::Failed(e.class);
                ended[who] = Some(Tried::Failed(e));
            }
            Tried::Invalid(v) => {
                outcomes[who] = AttemptOutcome::InvalidOutput;
                ended[who] = Some(Tried::Invalid(v));
            }
        }
        if ended.iter().all(Option::is_some) {
            metrics::counter!("switchyard_hedges_total", "outcome" => "both_failed").increment(1);
            let traces = traces(&outcomes);
            let (mut error, mut kept) = (None, None);
            for (k, e) in ended.into_iter().enumerate().rev() {
                match e {
                    Some(Tried::Failed(e)) => error = Some(e),
                    Some(Tried::Invalid(v)) => kept = Some((v, index[k])),
                    _ => {}
                }
            }
            return Race::Lost {
                traces,
                error,
                kept,
            };
        }
    }
}

/// Counts the attempts of a race, as the engine counts every attempt.
pub(crate) fn count_attempts(traces: &[AttemptTrace]) {
    for t in traces {
        metrics::counter!("switchyard_attempts_total", "provider" => t.provider.to_string(), "outcome" => t.outcome.as_str()).increment(1);
    }
}

/// Whether a request whose hedge race was lost with `error` may go on along the plan.
pub(crate) fn may_go_on(error: &UpstreamError, fallback_on_refusal: bool) -> bool {
    use switchyard_core::Fallback;
    match error.class.fallback() {
        Fallback::Yes | Fallback::LargerContext => true,
        Fallback::IfWorkflowAllows => fallback_on_refusal,
        _ => false,
    }
}

/// An error for a race lost without an upstream error (both answers failed their schema).
pub(crate) fn no_answer() -> UpstreamError {
    UpstreamError::new(
        ErrorClass::Unavailable,
        switchyard_providers::Phase::FirstByte,
        "neither the first attempt nor its hedge gave a usable answer",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_last_answers_once_enough_are_known() {
        let w = TtftWindows::default();
        let ep = EndpointId::from("m@a");
        for ms in 1..MIN_SAMPLES as u64 {
            w.record(&ep, ms);
        }
        assert_eq!(w.percentile(&ep, 90.0), None);
        for ms in MIN_SAMPLES as u64..=100 {
            w.record(&ep, ms);
        }
        assert_eq!(w.percentile(&ep, 90.0), Some(Duration::from_millis(90)));
        assert_eq!(w.percentile(&ep, 50.0), Some(Duration::from_millis(50)));
        // Only the last WINDOW answers count.
        for _ in 0..WINDOW {
            w.record(&ep, 7);
        }
        assert_eq!(w.percentile(&ep, 99.0), Some(Duration::from_millis(7)));
    }
}
