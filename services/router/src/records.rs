//! Request records (see [`switchyard_state::request_log`]): each request that ends leaves its
//! record here, without waiting, and they are written to the shared log in one batch every
//! [`FLUSH_EVERY`]; so a record can be read from any router a moment after its request ended.
//! Past what the log keeps of an org's minute, a router builds no more of them that minute.
//! While the log is unreachable records wait (at most [`MAX_PENDING`], the oldest dropped
//! first and counted in `switchyard_request_records_dropped_total`) and are written when it
//! returns.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_core::FastMap;
use switchyard_state::{RequestLog, RequestRecord};
use tokio_util::sync::CancellationToken;

/// How often records are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Most records waiting for the log.
pub const MAX_PENDING: usize = 50_000;
/// Most records in one write.
const BATCH: usize = 2_048;

/// Queues and writes records.
pub struct Recorder {
    log: Arc<dyn RequestLog>,
    pending: Mutex<VecDeque<RequestRecord>>,
    /// The minute and, per org, how many records of it this router has queued: past what the
    /// log keeps of one org's minute, the rest would be dropped there.
    queued: Mutex<(u64, FastMap<String, u64>)>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recorder")
    }
}

fn dropped(n: u64) {
    if n > 0 {
        metrics::counter!("switchyard_request_records_dropped_total").increment(n);
    }
}

impl Recorder {
    /// Writes to `log` every [`FLUSH_EVERY`] until `shutdown` (with a last write); the task is
    /// returned to be awaited at shutdown.
    pub fn spawn(
        log: Arc<dyn RequestLog>,
        shutdown: CancellationToken,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let r = Arc::new(Recorder {
            log,
            pending: Mutex::default(),
            queued: Mutex::default(),
        });
        let me = r.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            loop {
                let stopping = tokio::select! {
                    _ = shutdown.cancelled() => true,
                    _ = tick.tick() => false,
                };
                while me.flush().await {}
                if stopping {
                    return;
                }
            }
        });
        (r, task)
    }

    /// The log records are read from.
    pub fn log(&self) -> &Arc<dyn RequestLog> {
        &self.log
    }

    /// Whether to record a request of `org` received at `at_ms`, counting it: not once this
    /// router has queued as many of the org's records of that minute as the log keeps (they
    /// would be dropped there), so they are not even built.
    pub fn wants(&self, org: &str, at_ms: u64) -> bool {
        let minute = switchyard_state::minute_of(at_ms);
        let cap = self.log.retention().per_minute;
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        if minute > queued.0 {
            *queued = (minute, FastMap::default());
        } else if minute < queued.0 {
            // Received in a minute this router has moved past: the log bounds it.
            return true;
        }
        let n = match queued.1.get_mut(org) {
            Some(n) => n,
            None => queued.1.entry(org.to_string()).or_default(),
        };
        if *n >= cap {
            dropped(1);
            return false;
        }
        *n += 1;
        true
    }

    /// Queues the record of a request that ended.
    pub fn record(&self, r: RequestRecord) {
        let mut pending = self.lock();
        if pending.len() >= MAX_PENDING {
            pending.pop_front();
            dropped(1);
        }
        pending.push_back(r);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<RequestRecord>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a batch; whether more are waiting (after a successful write).
    async fn flush(&self) -> bool {
        let batch: Vec<RequestRecord> = {
            let mut pending = self.lock();
            let n = pending.len().min(BATCH);
            pending.drain(..n).collect()
        };
        if batch.is_empty() {
            return false;
        }
        match self.log.put(&batch).await {
            Ok(full) => {
                dropped(full);
                !self.lock().is_empty()
            }
            Err(e) => {
                tracing::warn!(error = %e, records = batch.len(), "request records not written; kept for the next try");
                let mut pending = self.lock();
                for r in batch.into_iter().rev() {
                    if pending.len() >= MAX_PENDING {
                        dropped(1);
                        continue;
                    }
                    pending.push_front(r);
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_state::{MemoryRequestLog, RecordQuery, Retention};

    fn record(id: &str) -> RequestRecord {
        RequestRecord {
            id: id.into(),
            created_ms: switchyard_core::clock::now_ms(),
            org: "acme".into(),
            key_id: "k1".into(),
            api: "chat_completions".into(),
            stream: false,
            workflow: "default".into(),
            requested_model: "m".into(),
            model: None,
            provider: None,
            endpoint: None,
            attempts: vec![],
            retries: 0,
            fallbacks: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_nano_usd: 0,
            cost_usd: "0".into(),
            latency_ms: 1.0,
            ttft_ms: None,
            policy_version: 1,
            health_version: 1,
            catalog_version: "v".into(),
            route_seed: "7".into(),
            outcome: "ok".into(),
        }
    }

    #[tokio::test]
    async fn past_what_the_log_keeps_of_a_minute_no_record_is_built() {
        let log = Arc::new(MemoryRequestLog::new(Retention {
            per_minute: 2,
            ..Retention::default()
        }));
        let (r, _task) = Recorder::spawn(log, CancellationToken::new());
        let minute = 29_000_000 * 60_000;
        assert!(r.wants("acme", minute));
        assert!(r.wants("acme", minute + 1));
        assert!(!r.wants("acme", minute + 2));
        assert!(r.wants("beta", minute + 3), "another org counts apart");
        assert!(
            r.wants("acme", minute + 60_000),
            "the next minute starts again"
        );
        assert!(
            r.wants("acme", minute + 5),
            "a late one of a past minute is the log's to bound"
        );
    }

    #[tokio::test]
    async fn records_are_written_in_the_background_and_the_rest_at_shutdown() {
        let log = Arc::new(MemoryRequestLog::new(Retention::default()));
        let stop = CancellationToken::new();
        let (r, task) = Recorder::spawn(log.clone(), stop.clone());
        let id = crate::admission::new_id();
        r.record(record(&id));
        tokio::time::sleep(FLUSH_EVERY * 2).await;
        assert_eq!(log.get(Some("acme"), &id).await.unwrap().unwrap().id, id);
        assert_eq!(log.get(Some("other"), &id).await.unwrap(), None);
        let last = crate::admission::new_id();
        r.record(record(&last));
        stop.cancel();
        task.await.unwrap();
        let all = log
            .list(
                &RecordQuery {
                    limit: 10,
                    ..RecordQuery::default()
                },
                &|_| true,
            )
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
    }
}
