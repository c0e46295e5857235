//! The record a request leaves for operators: the fields of its log line (org, key id, workflow,
//! models, every attempt with endpoint, class and latency, tokens, cost, the versions and seed it
//! was routed with, its outcome) and never its content or its key. Routers write records in
//! batches; any router reads them back by id (`GET /v1/generations/{id}`) or lists them
//! (`ctl requests`).
//!
//! Records are kept per org and UTC minute of the request's id (an id begins with the time it
//! was received, see [`received_ms`]), so reading one is a single lookup and listing walks the
//! minutes newest first. Both bounds are the operator's ([`Retention`]): a minute keeps at most
//! `per_minute` records of an org (later ones are dropped and counted), and a minute's records
//! expire `ttl` after it ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::StateError;

/// One request, as routed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The request id (`x-switchyard-request-id`).
    pub id: String,
    /// When it was received, Unix ms.
    pub created_ms: u64,
    /// The caller's org and key id (never the key).
    pub org: String,
    pub key_id: String,
    /// `chat_completions`, `messages`, `responses`, `embeddings` or `grpc`.
    pub api: String,
    pub stream: bool,
    pub workflow: String,
    /// The model the caller asked for, and the one that served it (if any).
    pub requested_model: String,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub endpoint: Option<String>,
    /// Every attempt, in order.
    pub attempts: Vec<RecordedAttempt>,
    pub retries: u32,
    /// Attempts on another endpoint than the one before.
    pub fallbacks: u32,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// What it cost, nano-USD, and as a decimal.
    pub cost_nano_usd: i64,
    pub cost_usd: String,
    /// From receipt to the last byte, and to the first token of a stream.
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    /// What it was routed with: `ctl explain` with this seed and these versions gives its plan.
    pub policy_version: u64,
    pub health_version: u64,
    pub catalog_version: String,
    /// As text: JSON numbers lose a u64's precision in many clients.
    pub route_seed: String,
    /// `ok`, `cancelled` or the error class.
    pub outcome: String,
}

/// One attempt of a [`RequestRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedAttempt {
    pub endpoint: String,
    pub provider: String,
    pub model: String,
    /// `ok` or the error class.
    pub outcome: String,
    pub latency_ms: u64,
    /// A retry of the previous attempt's endpoint.
    pub retry: bool,
}

/// How long records are kept and how many: see the module's documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub ttl: Duration,
    pub per_minute: u64,
}

impl Default for Retention {
    /// Six hours, and 1,000 requests per org and minute (about 17 a second, each one kept): at
    /// most 360,000 records of an org, some 300 MB at 800 bytes each.
    fn default() -> Self {
        Retention {
            ttl: Duration::from_secs(6 * 3600),
            per_minute: 1_000,
        }
    }
}

/// Which records to list.
#[derive(Debug, Clone, Default)]
pub struct RecordQuery {
    /// One org, or every org.
    pub org: Option<String>,
    /// Received at or after (Unix ms).
    pub since_ms: u64,
    /// At most this many, newest first.
    pub limit: usize,
}

/// The time a request id carries: ids are `req_` and 12 hex digits of the Unix ms the request
/// was received, then 12 random ones (see [`request_id`]).
pub fn received_ms(id: &str) -> Option<u64> {
    let hex = id.strip_prefix("req_")?.get(..12)?;
    u64::from_str_radix(hex, 16).ok()
}

/// A new request id for a request received at `now_ms`.
pub fn request_id(now_ms: u64, random: u64) -> String {
    // Written digit by digit: this runs for every request, and `format!` costs several times more.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(28);
    id.push_str("req_");
    for n in [now_ms, random] {
        for shift in (0..12).rev() {
            id.push(char::from(DIGITS[((n >> (shift * 4)) & 0xf) as usize]));
        }
    }
    id
}

/// Which records a listing keeps.
pub type Keep = dyn for<'r> Fn(&'r RequestRecord) -> bool + Send + Sync;

/// Where request records live.
#[async_trait]
pub trait RequestLog: Send + Sync + 'static {
    /// Keeps `records`; how many were dropped because their org's minute was full.
    async fn put(&self, records: &[RequestRecord]) -> Result<u64, StateError>;
    /// The record of `id` if it is `org`'s (any org's with `None`), unless it is unknown or
    /// expired.
    async fn get(&self, org: Option<&str>, id: &str) -> Result<Option<RequestRecord>, StateError>;
    /// The newest records `q` selects that `keep` accepts.
    async fn list(&self, q: &RecordQuery, keep: &Keep) -> Result<Vec<RequestRecord>, StateError>;
    /// How long records are kept.
    fn retention(&self) -> Retention;
}

/// The minutes a query walks, newest first: from now back to its start or the retention.
pub(crate) fn minutes(q: &RecordQuery, retention: Retention, now_ms: u64) -> Vec<u64> {
    let oldest = now_ms.saturating_sub(retention.ttl.as_millis() as u64 + 60_000);
    let first = crate::minute_of(q.since_ms.max(oldest));
    (first..=crate::minute_of(now_ms)).rev().collect()
}

/// Adds a minute's `found` to `out`, newest first; whether `out` is full.
pub(crate) fn gather(
    out: &mut Vec<RequestRecord>,
    mut found: Vec<RequestRecord>,
    q: &RecordQuery,
) -> bool {
    found.retain(|r| r.created_ms >= q.since_ms);
    found.sort_by(|a, b| b.id.cmp(&a.id));
    out.extend(found);
    if out.len() >= q.limit {
        out.truncate(q.limit);
        return true;
    }
    false
}

/// Records by minute, org and id.
type Minutes = BTreeMap<u64, HashMap<String, HashMap<String, RequestRecord>>>;

/// The in-memory [`RequestLog`].
#[derive(Debug, Default)]
pub struct MemoryRequestLog {
    retention: Retention,
    minutes: Mutex<Minutes>,
}

impl MemoryRequestLog {
    /// A log keeping records for `retention`.
    pub fn new(retention: Retention) -> Self {
        MemoryRequestLog {
            retention,
            minutes: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Minutes> {
        self.minutes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl RequestLog for MemoryRequestLog {
    async fn put(&self, records: &[RequestRecord]) -> Result<u64, StateError> {
        let now = switchyard_core::clock::now_ms();
        let expired = crate::minute_of(now.saturating_sub(self.retention.ttl.as_millis() as u64));
        let mut minutes = self.lock();
        *minutes = minutes.split_off(&expired);
        let mut dropped = 0;
        for r in records {
            let org = minutes
                .entry(crate::minute_of(r.created_ms))
                .or_default()
                .entry(r.org.clone())
                .or_default();
            if org.contains_key(&r.id) {
                continue;
            }
            if (org.len() as u64) < self.retention.per_minute {
                org.insert(r.id.clone(), r.clone());
            } else {
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    async fn get(&self, org: Option<&str>, id: &str) -> Result<Option<RequestRecord>, StateError> {
        let Some(at) = received_ms(id) else {
            return Ok(None);
        };
        let expired = crate::minute_of(
            switchyard_core::clock::now_ms().saturating_sub(self.retention.ttl.as_millis() as u64),
        );
        let minute = crate::minute_of(at);
        if minute < expired {
            return Ok(None);
        }
        Ok(self
            .lock()
            .get(&minute)
            .into_iter()
            .flat_map(|orgs| orgs.iter())
            .filter(|(o, _)| org.is_none_or(|org| org == o.as_str()))
            .find_map(|(_, rs)| rs.get(id).cloned()))
    }

    async fn list(&self, q: &RecordQuery, keep: &Keep) -> Result<Vec<RequestRecord>, StateError> {
        let now = switchyard_core::clock::now_ms();
        let minutes = self.lock();
        let mut out = Vec::new();
        for m in self::minutes(q, self.retention, now) {
            let Some(orgs) = minutes.get(&m) else {
                continue;
            };
            let found = orgs
                .iter()
                .filter(|(org, _)| q.org.as_ref().is_none_or(|o| o == *org))
                .flat_map(|(_, rs)| rs.values().filter(|r| keep(r)).cloned())
                .collect();
            if gather(&mut out, found, q) {
                break;
            }
        }
        Ok(out)
    }

    fn retention(&self) -> Retention {
        self.retention
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_carries_the_time_it_was_received() {
        let id = request_id(1_796_000_000_123, u64::MAX);
        assert_eq!(id.len(), 28);
        assert_eq!(received_ms(&id), Some(1_796_000_000_123));
        assert_eq!(
            request_id(0x1234, 0xfedc_ba98_7654_3210),
            "req_000000001234ba9876543210"
        );
        assert_eq!(received_ms("req_zz"), None);
        assert_eq!(received_ms("chatcmpl-1"), None);
    }
}
