//! Passive outcomes: every attempt's result, aggregated here per endpoint and time bucket and
//! flushed to the shared store in one pipelined write per interval. While the store is down the
//! counters keep aggregating (bounded by the number of endpoint-buckets, not by traffic) and are
//! flushed when it returns.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_core::{AttemptOutcome, EndpointId, FastMap};
use switchyard_state::{HealthStore, Outcomes, bucket_of};
use tokio_util::sync::CancellationToken;

/// Most endpoint-buckets held while the store is unreachable; older ones are dropped first.
pub const MAX_PENDING: usize = 100_000;

/// Aggregates and flushes outcomes.
pub struct OutcomeWriter {
    pending: Mutex<FastMap<(EndpointId, u64), Outcomes>>,
}

impl std::fmt::Debug for OutcomeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutcomeWriter")
    }
}

use switchyard_core::clock::now_ms;

impl OutcomeWriter {
    /// Starts flushing to `store` every `every` until `shutdown` (with a last flush).
    pub fn spawn(
        store: Arc<dyn HealthStore>,
        every: Duration,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let w = Arc::new(OutcomeWriter {
            pending: Mutex::new(FastMap::default()),
        });
        let me = w.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                let stopping = tokio::select! {
                    _ = shutdown.cancelled() => true,
                    _ = tick.tick() => false,
                };
                me.flush(store.as_ref()).await;
                if stopping {
                    return;
                }
            }
        });
        w
    }

    /// Records how many of an attempt's tool calls passed their schema (the prober turns them
    /// into the endpoint's tool-call validity rate).
    pub fn record_tool_calls(&self, endpoint: &EndpointId, valid: u64, invalid: u64) {
        if valid + invalid == 0 {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let o = pending
            .entry((endpoint.clone(), bucket_of(now_ms())))
            .or_default();
        o.tool_calls_valid += valid;
        o.tool_calls_invalid += invalid;
    }

    /// Records a reply that cost more than its budget hold.
    pub fn record_over_hold(&self, endpoint: &EndpointId) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .entry((endpoint.clone(), bucket_of(now_ms())))
            .or_default()
            .over_hold += 1;
    }

    /// Records one attempt (see [`Outcomes::count`] for what counts against the endpoint).
    pub fn record(
        &self,
        endpoint: &EndpointId,
        outcome: AttemptOutcome,
        latency_ms: u64,
        tokens_out: u64,
        ttft_ms: Option<u64>,
    ) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING {
            if let Some(oldest) = pending.keys().min_by_key(|k| k.1).cloned() {
                pending.remove(&oldest);
            }
            metrics::counter!("switchyard_outcomes_dropped_total").increment(1);
        }
        pending
            .entry((endpoint.clone(), bucket_of(now_ms())))
            .or_default()
            .count(outcome, latency_ms, tokens_out, ttft_ms);
    }

    async fn flush(&self, store: &dyn HealthStore) {
        let batch: Vec<(EndpointId, u64, Outcomes)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().map(|((e, b), o)| (e, b, o)).collect()
        };
        if batch.is_empty() {
            return;
        }
        if let Err(e) = store.add_outcomes(&batch).await {
            tracing::debug!(error = %e, buckets = batch.len(), "outcomes kept until the store answers");
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (ep, b, o) in batch {
                pending.entry((ep, b)).or_default().add(&o);
            }
        }
    }
}
