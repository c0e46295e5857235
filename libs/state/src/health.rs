//! Endpoint health: one record per endpoint (written by the prober, read by every router) with a
//! version bumped and announced atomically with each write; the routers' passive outcome counters
//! per endpoint per time bucket; and leases that split probing between prober replicas.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use switchyard_core::{AttemptOutcome, EndpointHealth, EndpointId, EndpointState, HealthSnapshot};
use tokio::sync::broadcast;

use crate::StateError;
use crate::capacity::{CapacityAnnouncement, CapacityRecord, CapacityUse};
use crate::health_stats::{Tier, bin_of};

/// Seconds per passive-outcome bucket.
pub const BUCKET_SECS: u64 = 10;

/// The pub/sub channel on which new health versions are announced.
pub fn health_channel() -> &'static str {
    "sy:health:changed"
}

/// One endpoint's full health record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthRecord {
    /// State.
    pub state: EndpointState,
    /// Ejected until, Unix ms (0 when not ejected).
    #[serde(default)]
    pub ejected_until_ms: u64,
    /// Error rate over the evaluation window.
    #[serde(default)]
    pub error_rate: f64,
    /// Latency EWMA, ms.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// Time-to-first-token EWMA, ms.
    #[serde(default)]
    pub ttft_ms: Option<f64>,
    /// Output tokens per second EWMA.
    #[serde(default)]
    pub tokens_per_s: Option<f64>,
    /// Written at, Unix ms.
    #[serde(default)]
    pub updated_ms: u64,
    /// Why it is in this state.
    #[serde(default)]
    pub reason: String,
    /// Failed probes in a row.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Ejections so far (the next one lasts longer); reset after a long healthy spell.
    #[serde(default)]
    pub ejections: u32,
    /// Last probe, Unix ms (shared, so a new lease holder keeps the cadence).
    #[serde(default)]
    pub last_probe_ms: u64,
    /// Since when the endpoint has been healthy, Unix ms.
    #[serde(default)]
    pub healthy_since_ms: u64,
    /// Share of tool calls with schema-valid arguments over the window, once enough were seen.
    #[serde(default)]
    pub tool_validity: Option<f64>,
    /// When it last came back from an ejection (a successful half-open probe or an operator's
    /// restore), Unix ms: passive outcomes from before that no longer count against it.
    #[serde(default)]
    pub recovered_ms: u64,
    /// Replies over the window that cost more than their budget hold: the endpoint breaks the
    /// bound a hold relies on (ignores `max_tokens`, or counts more prompt tokens than it).
    #[serde(default)]
    pub over_holds: u64,
}

impl HealthRecord {
    /// What routers plan with: a record older than `ttl` reads as unknown, never as unhealthy.
    pub fn view(&self, now_ms: u64, ttl: Duration) -> EndpointHealth {
        let stale = now_ms.saturating_sub(self.updated_ms) > ttl.as_millis() as u64;
        EndpointHealth {
            state: if stale && self.state != EndpointState::Disabled {
                EndpointState::Unknown
            } else {
                self.state
            },
            latency_ms: self.latency_ms,
            ttft_ms: self.ttft_ms,
            tokens_per_s: self.tokens_per_s,
            error_rate: self.error_rate,
            tool_validity: self.tool_validity,
        }
    }
}

/// Builds the planner's snapshot from records.
pub fn snapshot(
    version: u64,
    records: &BTreeMap<EndpointId, HealthRecord>,
    now_ms: u64,
    ttl: Duration,
) -> HealthSnapshot {
    HealthSnapshot {
        version,
        endpoints: records
            .iter()
            .map(|(id, r)| (id.clone(), r.view(now_ms, ttl)))
            .collect(),
    }
}

/// Counters of one endpoint over some buckets; what routers add after each attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    /// Successful attempts.
    pub ok: u64,
    /// Failed attempts that count against the endpoint's health.
    pub failed: u64,
    /// Every failure by error class label (rate limits and refusals included).
    pub by_class: BTreeMap<String, u64>,
    /// Sum of attempt latencies, ms.
    pub latency_ms_sum: u64,
    /// Sum of times to first token, ms.
    pub ttft_ms_sum: u64,
    /// Attempts that measured a first token.
    pub ttft_count: u64,
    /// Output tokens produced.
    pub tokens_out: u64,
    /// Generation time of those tokens, ms.
    pub generation_ms: u64,
    /// Tool calls whose arguments passed their schema.
    pub tool_calls_valid: u64,
    /// Tool calls whose arguments did not.
    pub tool_calls_invalid: u64,
    /// Replies that cost more than their budget hold.
    #[serde(default)]
    pub over_hold: u64,
    /// Latencies of answered attempts, ms, by [`crate::health_stats::bin_of`] bin.
    #[serde(default)]
    pub latency_hist: BTreeMap<u16, u64>,
    /// Times to first token, ms, by bin.
    #[serde(default)]
    pub ttft_hist: BTreeMap<u16, u64>,
    /// Output tokens per second of generating attempts, by bin.
    #[serde(default)]
    pub tps_hist: BTreeMap<u16, u64>,
}

impl Outcomes {
    /// Counts one attempt. What bears on health (answers, and failures that count against the
    /// endpoint by [`AttemptOutcome::counts_against_health`]) goes into `ok`/`failed` and the
    /// latency sum; every failure is also counted by class, so a rate limit stays visible
    /// without making the endpoint look ill. `ttft_ms` is the attempt's time to its first
    /// chunk, for streamed attempts.
    pub fn count(
        &mut self,
        outcome: AttemptOutcome,
        latency_ms: u64,
        tokens_out: u64,
        ttft_ms: Option<u64>,
    ) {
        if let AttemptOutcome::Failed(class) = outcome {
            *self.by_class.entry(class.as_str().to_string()).or_default() += 1;
        }
        if !outcome.bears_on_health() {
            return;
        }
        if outcome.answered() {
            self.ok += 1;
            self.tokens_out += tokens_out;
            if tokens_out > 0 {
                self.generation_ms += latency_ms;
                // Tokens over the time spent generating them (after the first, when known).
                let generating = latency_ms.saturating_sub(ttft_ms.unwrap_or(0)).max(1);
                let tps = tokens_out as f64 * 1000.0 / generating as f64;
                *self.tps_hist.entry(bin_of(tps)).or_default() += 1;
            }
            if let Some(ttft) = ttft_ms {
                self.ttft_ms_sum += ttft;
                self.ttft_count += 1;
                *self.ttft_hist.entry(bin_of(ttft as f64)).or_default() += 1;
            }
            *self
                .latency_hist
                .entry(bin_of(latency_ms as f64))
                .or_default() += 1;
        } else {
            self.failed += 1;
        }
        self.latency_ms_sum += latency_ms;
    }

    /// Adds another set of counters.
    pub fn add(&mut self, o: &Outcomes) {
        self.ok += o.ok;
        self.failed += o.failed;
        for (k, v) in &o.by_class {
            *self.by_class.entry(k.clone()).or_default() += v;
        }
        self.latency_ms_sum += o.latency_ms_sum;
        self.ttft_ms_sum += o.ttft_ms_sum;
        self.ttft_count += o.ttft_count;
        self.tokens_out += o.tokens_out;
        self.generation_ms += o.generation_ms;
        self.tool_calls_valid += o.tool_calls_valid;
        self.tool_calls_invalid += o.tool_calls_invalid;
        self.over_hold += o.over_hold;
        for (mine, theirs) in [
            (&mut self.latency_hist, &o.latency_hist),
            (&mut self.ttft_hist, &o.ttft_hist),
            (&mut self.tps_hist, &o.tps_hist),
        ] {
            for (b, n) in theirs {
                *mine.entry(*b).or_default() += n;
            }
        }
    }

    /// The same counters without the histograms (what the short buckets keep: the prober's
    /// evaluation needs sums, the live statistics read the minute buckets).
    pub fn without_histograms(&self) -> Outcomes {
        Outcomes {
            latency_hist: BTreeMap::new(),
            ttft_hist: BTreeMap::new(),
            tps_hist: BTreeMap::new(),
            ..self.clone()
        }
    }

    /// Attempts counted.
    pub fn total(&self) -> u64 {
        self.ok + self.failed
    }

    pub(crate) fn fields(&self) -> Vec<(String, u64)> {
        let mut f = vec![
            ("ok".to_string(), self.ok),
            ("failed".to_string(), self.failed),
            ("lat".to_string(), self.latency_ms_sum),
            ("ttft".to_string(), self.ttft_ms_sum),
            ("ttft_n".to_string(), self.ttft_count),
            ("tok".to_string(), self.tokens_out),
            ("gen".to_string(), self.generation_ms),
            ("tv".to_string(), self.tool_calls_valid),
            ("ti".to_string(), self.tool_calls_invalid),
            ("oh".to_string(), self.over_hold),
        ];
        f.extend(self.by_class.iter().map(|(k, v)| (format!("c:{k}"), *v)));
        for (prefix, hist) in [
            ("hl:", &self.latency_hist),
            ("ht:", &self.ttft_hist),
            ("hp:", &self.tps_hist),
        ] {
            f.extend(hist.iter().map(|(b, n)| (format!("{prefix}{b}"), *n)));
        }
        f.retain(|(_, v)| *v > 0);
        f
    }

    pub(crate) fn from_fields(fields: impl IntoIterator<Item = (String, u64)>) -> Outcomes {
        let mut o = Outcomes::default();
        for (k, v) in fields {
            match k.as_str() {
                "ok" => o.ok += v,
                "failed" => o.failed += v,
                "lat" => o.latency_ms_sum += v,
                "ttft" => o.ttft_ms_sum += v,
                "ttft_n" => o.ttft_count += v,
                "tok" => o.tokens_out += v,
                "gen" => o.generation_ms += v,
                "tv" => o.tool_calls_valid += v,
                "ti" => o.tool_calls_invalid += v,
                "oh" => o.over_hold += v,
                other => {
                    if let Some(class) = other.strip_prefix("c:") {
                        *o.by_class.entry(class.to_string()).or_default() += v;
                    }
                    for (prefix, hist) in [
                        ("hl:", &mut o.latency_hist),
                        ("ht:", &mut o.ttft_hist),
                        ("hp:", &mut o.tps_hist),
                    ] {
                        if let Some(b) = other.strip_prefix(prefix).and_then(|b| b.parse().ok()) {
                            *hist.entry(b).or_default() += v;
                        }
                    }
                }
            }
        }
        o
    }
}

/// The bucket a Unix-ms time falls in.
pub fn bucket_of(ms: u64) -> u64 {
    ms / 1000 / BUCKET_SECS
}

/// Where health lives.
#[async_trait]
pub trait HealthStore: Send + Sync + 'static {
    /// Every record and the current version.
    async fn records(&self) -> Result<(u64, BTreeMap<EndpointId, HealthRecord>), StateError>;
    /// Writes one record, bumps the version and announces it, atomically; returns the version.
    async fn put_record(
        &self,
        endpoint: &EndpointId,
        record: &HealthRecord,
    ) -> Result<u64, StateError>;
    /// Writes one record as [`HealthStore::put_record`] does, but only if the stored record is
    /// still the one the writer read (its `updated_ms` is `read_updated_ms`; 0 for none): a
    /// writer that decided from a record another writer has since replaced (an operator's
    /// ejection during an evaluation round) gets `None` and nothing is written.
    async fn replace_record(
        &self,
        endpoint: &EndpointId,
        read_updated_ms: u64,
        record: &HealthRecord,
    ) -> Result<Option<u64>, StateError>;
    /// Announcements of new versions.
    fn subscribe(&self) -> broadcast::Receiver<u64>;
    /// Adds outcome counters to their short buckets and to the minute and hour history (one
    /// pipelined round trip for the whole batch).
    async fn add_outcomes(&self, batch: &[(EndpointId, u64, Outcomes)]) -> Result<(), StateError>;
    /// `endpoint`'s counters in each `tier` bucket `from..=to` (written by
    /// [`HealthStore::add_outcomes`] beside the short buckets), oldest first; one round trip.
    async fn tier_outcomes(
        &self,
        endpoint: &EndpointId,
        tier: Tier,
        from: u64,
        to: u64,
    ) -> Result<Vec<Outcomes>, StateError>;
    /// The sum of `endpoint`'s counters over buckets `from..=to`.
    async fn outcomes(
        &self,
        endpoint: &EndpointId,
        from: u64,
        to: u64,
    ) -> Result<Outcomes, StateError>;
    /// Takes or extends the lease `name` for `owner`; `false` while someone else holds it.
    async fn lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StateError>;
    /// Gives the lease `name` back if `owner` holds it.
    async fn release(&self, name: &str, owner: &str) -> Result<(), StateError>;
    /// The upstream asked not to be called before `until_ms` (Retry-After): shared so every
    /// router honours it, kept at the latest of the times written, and announced with a new
    /// version like a record. Returns the version.
    async fn put_cooldown(&self, endpoint: &EndpointId, until_ms: u64) -> Result<u64, StateError>;
    /// Cooldowns that end after `now_ms`.
    async fn cooldowns(&self, now_ms: u64) -> Result<BTreeMap<EndpointId, u64>, StateError>;
    /// Shares what providers reported about capacity, by capacity scope: each record replaces
    /// the stored one only if it was observed later. With `announce` the batch is also
    /// published whole (a key just ran out: every router should know at once, without a read).
    async fn put_capacity(
        &self,
        batch: &[(String, CapacityRecord)],
        announce: bool,
    ) -> Result<(), StateError>;
    /// Announced capacity records.
    fn subscribe_capacity(&self) -> broadcast::Receiver<CapacityAnnouncement>;
    /// Every capacity record, by scope.
    async fn capacity(&self) -> Result<BTreeMap<String, CapacityRecord>, StateError>;
    /// Adds each scope's use in `minute` (Unix minutes) to the shared counters and returns the
    /// totals, in the batch's order (an addition of zero reads a counter).
    async fn count_capacity(
        &self,
        minute: u64,
        batch: &[(String, CapacityUse)],
    ) -> Result<Vec<CapacityUse>, StateError>;
}
