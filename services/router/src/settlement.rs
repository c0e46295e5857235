//! Settlement, the last stage: a request that ended is priced and reported to billing (which
//! settles its hold), or its hold is released when nothing was served; every attempt becomes a
//! passive outcome for the prober, an endpoint that just failed is penalized locally until the
//! shared record catches up, a Retry-After becomes a cooldown, and the request leaves its metrics
//! and log line. What counts against an endpoint is asked of
//! [`switchyard_core::AttemptOutcome::counts_against_health`].

use std::sync::Arc;
use std::time::Duration;

use switchyard_core::clock::now_ms;
use switchyard_core::{AttemptOutcome, EndpointId, Money, Usage};
use switchyard_proto::v1 as pb;

use crate::admission::Admitted;
use crate::budget_gate::BudgetGate;
use crate::engine::AttemptTrace;
use crate::health_view::HealthView;
use crate::outcomes::OutcomeWriter;
use crate::reporter::Reporter;

/// The settlement stage.
pub struct Settlement {
    reporter: Reporter,
    outcomes: Option<Arc<OutcomeWriter>>,
    health: Arc<HealthView>,
    gate: Arc<BudgetGate>,
    records: Option<Arc<crate::records::Recorder>>,
}

impl std::fmt::Debug for Settlement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settlement")
            .field("outcomes", &self.outcomes.is_some())
            .finish_non_exhaustive()
    }
}

impl Settlement {
    /// Settles through `reporter` and `gate`, feeding `health`, `outcomes` and `records`.
    pub fn new(
        reporter: Reporter,
        outcomes: Option<Arc<OutcomeWriter>>,
        health: Arc<HealthView>,
        gate: Arc<BudgetGate>,
        records: Option<Arc<crate::records::Recorder>>,
    ) -> Self {
        Settlement {
            reporter,
            outcomes,
            records,
            health,
            gate,
        }
    }

    /// Passive outcomes, for the tool-call validity counts.
    pub fn outcomes(&self) -> Option<&OutcomeWriter> {
        self.outcomes.as_deref()
    }

    /// What `usage` costs at `endpoint`, at the prices `a` was held with.
    pub fn cost(a: &Admitted, endpoint: &EndpointId, usage: &Usage) -> Option<Money> {
        a.catalog.prices.cost(endpoint.as_str(), usage)
    }

    /// Records the end of a request: usage to billing (settling the hold), or the hold
    /// released; then its metrics and log line. Returns the cost when something was served.
    pub async fn finish(
        &self,
        a: &Admitted,
        served: Option<(&EndpointId, Usage)>,
        trace: &[AttemptTrace],
        outcome: &'static str,
        ttft: Option<Duration>,
    ) -> Option<Money> {
        match served {
            Some((endpoint, usage)) => {
                self.finish_parts(a, &[(endpoint.clone(), usage)], trace, outcome, ttft)
                    .await
            }
            None => self.finish_parts(a, &[], trace, outcome, ttft).await,
        }
    }

    /// [`Self::finish`] for an answer made of `parts`, each an endpoint and what it used (a
    /// stream and its continuation elsewhere): settled once, at the sum of their costs, in the
    /// name of the endpoint that began it. No parts: nothing was served.
    pub async fn finish_parts(
        &self,
        a: &Admitted,
        parts: &[(EndpointId, Usage)],
        trace: &[AttemptTrace],
        outcome: &'static str,
        ttft: Option<Duration>,
    ) -> Option<Money> {
        // A hedge race's loser was sent the prompt and streamed nothing: billed at the prompt.
        let with_hedges: Vec<(EndpointId, Usage)>;
        let parts =
            if !parts.is_empty() && trace.iter().any(|t| t.outcome == AttemptOutcome::Cancelled) {
                let prompt = Usage {
                    prompt_tokens: a.prompt_tokens,
                    ..Usage::default()
                };
                with_hedges = parts
                    .iter()
                    .cloned()
                    .chain(
                        trace
                            .iter()
                            .filter(|t| t.outcome == AttemptOutcome::Cancelled)
                            .map(|t| (t.endpoint.clone(), prompt)),
                    )
                    .collect();
                &with_hedges[..]
            } else {
                parts
            };
        let served = parts.first().map(|(endpoint, _)| {
            let usage = parts[1..].iter().fold(parts[0].1, |u, (_, p)| u.plus(p));
            (endpoint, usage)
        });
        let cost = match served {
            Some((endpoint, usage)) => {
                let cost = parts.iter().fold(Money::ZERO, |sum, (ep, u)| {
                    sum.saturating_add(Self::cost(a, ep, u).unwrap_or(Money::ZERO))
                });
                Some(self.report(a, endpoint, usage, cost, trace.len(), outcome))
            }
            None => {
                self.gate.release(a).await;
                None
            }
        };
        crate::observe::request(
            a,
            &crate::observe::Ending {
                served,
                cost,
                trace,
                outcome,
                ttft,
            },
            self.records.as_deref(),
        );
        cost
    }

    /// The usage report, which settles the hold; returns the cost.
    fn report(
        &self,
        a: &Admitted,
        endpoint: &EndpointId,
        usage: Usage,
        cost: Money,
        attempts: usize,
        outcome: &'static str,
    ) -> Money {
        let p = a.plan.iter().find(|p| &p.attempt.endpoint == endpoint);
        // The hold was the most this request could cost; a reply above it breaks the bound the
        // budgets rely on. Charged as reported all the same, and made visible.
        let over_hold = cost > a.max_cost;
        if over_hold {
            let provider = p
                .map(|p| p.attempt.provider.to_string())
                .unwrap_or_default();
            metrics::counter!("switchyard_over_hold_total", "provider" => provider).increment(1);
            tracing::warn!(
                endpoint = %endpoint,
                request_id = %a.id,
                hold_usd = %a.max_cost,
                cost_usd = %cost,
                prompt_tokens = usage.prompt_tokens,
                completion_tokens = usage.completion_tokens,
                max_tokens = ?a.max_output_tokens,
                "reply cost more than its budget hold"
            );
            if let Some(w) = &self.outcomes {
                w.record_over_hold(endpoint);
            }
        }
        let record = pb::UsageRecord {
            request_id: a.id.clone(),
            org_id: a.key.org.to_string(),
            api_key_id: a.key.id.to_string(),
            workflow: a.workflow.id.to_string(),
            model: p.map(|p| p.attempt.model.to_string()).unwrap_or_default(),
            provider: p
                .map(|p| p.attempt.provider.to_string())
                .unwrap_or_default(),
            endpoint: endpoint.to_string(),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_prompt_tokens: usage.cached_prompt_tokens,
            cost_nano_usd: cost.nanos(),
            // Named even when the store never confirmed it: billing settles the hold if it
            // exists and charges otherwise, so an ambiguous hold is never paid twice.
            hold_id: a
                .lease
                .as_ref()
                .map_or_else(|| a.id.clone(), |t| t.lease_id().to_string()),
            lease_seq: a.lease.as_ref().map_or(0, |t| t.seq),
            report_seq: 0,
            finished_unix_ms: now_ms() as i64,
            attempts: attempts as u32,
            outcome: outcome.to_string(),
            over_hold,
            max_cost_nano_usd: a.max_cost.nanos(),
        };
        let _ = self.reporter.report(record);
        if let Some(t) = &a.lease {
            t.reported();
        }
        if let Some(r) = &a.rate {
            r.finish(u64::from(usage.total_tokens()));
        }
        cost
    }

    /// Records a request whose client went away: a stream is settled for what it delivered (the
    /// prompt and the completion tokens streamed so far, estimated, unless the upstream reported
    /// them; with a continuation, each part); anything else (no parts) has its hold released.
    pub async fn finish_cancelled(&self, a: &Admitted, streamed: &[(usize, Usage)]) {
        metrics::counter!("switchyard_requests_cancelled_total").increment(1);
        let parts: Vec<(EndpointId, Usage)> = streamed
            .iter()
            .map(|(served, usage)| (a.plan[*served].attempt.endpoint.clone(), *usage))
            .collect();
        self.finish_parts(a, &parts, &[], "cancelled", None).await;
    }

    /// Records every attempt as a passive outcome, and penalizes endpoints that just failed,
    /// before the prober's shared record catches up. `tokens_out` belongs to the last attempt.
    pub fn note_attempts(&self, trace: &[AttemptTrace], tokens_out: u64) {
        if let Some(w) = &self.outcomes {
            for (i, t) in trace.iter().enumerate() {
                if t.outcome == AttemptOutcome::Cancelled {
                    continue;
                }
                let tokens = if i + 1 == trace.len() { tokens_out } else { 0 };
                w.record(&t.endpoint, t.outcome, t.latency_ms, tokens, t.ttft_ms);
            }
        }
        for (i, t) in trace.iter().enumerate() {
            if let Some(ms) = t.retry_after_ms {
                // Waited out within the request and then served by the same endpoint: nothing
                // left to honour.
                let served_later = trace[i + 1..]
                    .iter()
                    .any(|l| l.endpoint == t.endpoint && l.outcome == AttemptOutcome::Ok);
                if !served_later {
                    // The upstream said when to come back: exactly then. Being throttled says
                    // nothing about its health, so it neither penalizes nor counts as an outlier.
                    self.health
                        .cool_down(&t.endpoint, Duration::from_millis(ms));
                }
                continue;
            }
            if t.outcome == AttemptOutcome::Ok {
                self.health
                    .ttft()
                    .record(&t.endpoint, t.ttft_ms.unwrap_or(t.latency_ms));
            }
            if !t.outcome.bears_on_health() {
                continue;
            }
            let failed = t.outcome.counts_against_health();
            self.health.observe(&t.endpoint, failed);
            if failed {
                self.health.penalize(&t.endpoint, Duration::from_secs(5));
            }
        }
    }
}
