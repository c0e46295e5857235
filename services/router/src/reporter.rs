//! Usage reports to billing: accepted into a bounded queue without waiting, sent in batches, and
//! retried with backoff until billing acknowledges them, so a billing outage delays reports but
//! loses none that were accepted. Only a full queue refuses a report (counted and logged).
//!
//! A report waits at least [`MIN_AGE`] before it is sent. By then the lease renewal that recorded
//! its admission has reached the budget store (renewals follow admissions within
//! [`switchyard_state::lease::RENEW_AFTER_ADMISSION_MS`]), so billing counts it against its lease
//! at once instead of parking it until the next renewal. Every [`GATHER`] the sender takes what is
//! old enough, so reports travel in batches of that much traffic (about a hundred at a few
//! thousand requests a second) instead of one by one, which is what keeps billing's and Redis's
//! work per request small; and queueing a report wakes nobody.
//!
//! Each batch is sealed once: its reports are numbered in the order they are sent
//! (`report_seq`, from 1, increasing for as long as the router runs), and a batch billing did not
//! acknowledge is sent again exactly as it was, before anything newer. So under a lease, which
//! belongs to this router alone, a report numbered at or below the highest its lease has settled
//! is one billing has seen: a resent batch counts once without a marker per request.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_proto::v1 as pb;
use switchyard_proto::v1::billing_client::BillingClient;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Reports per batch, at most.
pub const BATCH: usize = 1024;

/// How long a report waits at least before it is sent (see the module docs).
pub const MIN_AGE: Duration = Duration::from_millis(60);

/// How often the sender takes the reports that are old enough.
pub const GATHER: Duration = Duration::from_millis(25);

/// Reports accepted and not yet taken by the sender, with when they arrived.
type Queue = Mutex<VecDeque<(Instant, pb::UsageRecord)>>;

/// Where reports go.
#[derive(Debug, Clone)]
pub struct Reporter {
    queue: Arc<Queue>,
    capacity: usize,
}

/// The queue is full: billing has been unreachable for too long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("usage report queue is full")]
pub struct QueueFull;

impl Reporter {
    /// Starts the sender task for billing at `url` (`http://host:port`), with room for
    /// `capacity` reports; it flushes for at most `drain` after `shutdown`.
    pub fn spawn(
        url: String,
        capacity: usize,
        shutdown: CancellationToken,
        drain: Duration,
    ) -> (Reporter, tokio::task::JoinHandle<()>) {
        let queue = Arc::new(Queue::default());
        let sender = Sender {
            url,
            queue: queue.clone(),
            waiting: VecDeque::new(),
            next_seq: 1,
            client: None,
            drain,
        };
        let task = tokio::spawn(sender.run(shutdown));
        let reporter = Reporter {
            queue,
            capacity: capacity.max(1),
        };
        (reporter, task)
    }

    /// Queues a report without waiting.
    pub fn report(&self, record: pb::UsageRecord) -> Result<(), QueueFull> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= self.capacity {
            drop(queue);
            metrics::counter!("switchyard_usage_reports_refused_total").increment(1);
            tracing::error!("usage report queue full; report refused");
            return Err(QueueFull);
        }
        queue.push_back((Instant::now(), record));
        Ok(())
    }
}

/// The sending side: reports taken off the queue wait in `waiting` until they are old enough,
/// then leave in a sealed batch.
struct Sender {
    url: String,
    queue: Arc<Queue>,
    waiting: VecDeque<(Instant, pb::UsageRecord)>,
    next_seq: u64,
    client: Option<BillingClient<tonic::transport::Channel>>,
    /// How long it flushes after shutdown.
    drain: Duration,
}

impl Sender {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut drain_until: Option<Instant> = None;
        let mut tick = tokio::time::interval(GATHER);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if drain_until.is_none() {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => drain_until = Some(Instant::now() + self.drain),
                }
            }
            let draining = drain_until.is_some();
            self.take();
            if draining && self.waiting.is_empty() {
                return;
            }
            // What is old enough at the tick (everything while draining), in batches; once per
            // tick, so what grows old meanwhile waits for the next and joins its batch.
            let now = Instant::now();
            loop {
                let batch = self.seal(now, draining);
                let full = batch.len() == BATCH;
                if batch.is_empty() {
                    break;
                }
                if !self.deliver(batch, &shutdown, &mut drain_until).await {
                    return;
                }
                if !full {
                    break;
                }
                self.take();
            }
        }
    }

    /// Moves what was queued to `waiting` (at most a few batches: the rest stays queued, where
    /// the queue's capacity bounds it) and updates the gauge.
    fn take(&mut self) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let room = (4 * BATCH).saturating_sub(self.waiting.len());
        let n = queue.len().min(room);
        self.waiting.extend(queue.drain(..n));
        let queued = queue.len() + self.waiting.len();
        drop(queue);
        metrics::gauge!("switchyard_usage_reports_queued").set(queued as f64);
    }

    /// The reports at least [`MIN_AGE`] old at `now` (every waiting one when `all`), at most
    /// [`BATCH`], numbered.
    fn seal(&mut self, now: Instant, all: bool) -> Vec<pb::UsageRecord> {
        let mut batch = Vec::with_capacity(self.waiting.len().min(BATCH));
        while batch.len() < BATCH {
            match self.waiting.front() {
                Some((at, _)) if all || *at + MIN_AGE <= now => {}
                _ => break,
            }
            let Some((_, mut r)) = self.waiting.pop_front() else {
                break;
            };
            r.report_seq = self.next_seq;
            self.next_seq += 1;
            batch.push(r);
        }
        batch
    }

    /// Sends `batch` until billing acknowledges it, the same batch every time; `false` when the
    /// drain deadline passed first (what is left is logged as lost).
    async fn deliver(
        &mut self,
        batch: Vec<pb::UsageRecord>,
        shutdown: &CancellationToken,
        drain_until: &mut Option<Instant>,
    ) -> bool {
        let mut backoff = Duration::from_millis(50);
        loop {
            if drain_until.is_some_and(|d| Instant::now() >= d) {
                let queued = self.queue.lock().unwrap_or_else(|e| e.into_inner()).len();
                tracing::error!(
                    unsent = batch.len() + self.waiting.len() + queued,
                    "shutting down with usage reports billing never acknowledged"
                );
                return false;
            }
            match send(&self.url, &mut self.client, batch.clone()).await {
                Ok(()) => {
                    let n = batch.len() as u64;
                    metrics::counter!("switchyard_usage_reports_delivered_total").increment(n);
                    metrics::counter!("switchyard_usage_report_batches_total").increment(1);
                    return true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, pending = batch.len() + self.waiting.len(), retry_in_ms = backoff.as_millis() as u64, "billing unreachable; usage reports kept");
                    self.client = None;
                    let wait = tokio::time::sleep(backoff);
                    if drain_until.is_some() {
                        wait.await;
                    } else {
                        tokio::select! {
                            _ = wait => {}
                            _ = shutdown.cancelled() => *drain_until = Some(Instant::now() + self.drain),
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Sends one batch; `Ok` once billing acknowledged every report in it.
async fn send(
    url: &str,
    client: &mut Option<BillingClient<tonic::transport::Channel>>,
    batch: Vec<pb::UsageRecord>,
) -> Result<(), String> {
    if client.is_none() {
        let channel = switchyard_runtime::tls::endpoint(url)?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        *client = Some(BillingClient::new(channel));
    }
    let Some(c) = client.as_mut() else {
        return Err("no billing client".into());
    };
    let n = batch.len();
    let ack = c
        .report_usage(pb::ReportUsageRequest { records: batch })
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
    let acked = ack.into_inner().acknowledged.len();
    if acked < n {
        return Err(format!("billing acknowledged {acked} of {n} reports"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender() -> Sender {
        Sender {
            url: String::new(),
            queue: Arc::new(Queue::default()),
            waiting: VecDeque::new(),
            next_seq: 1,
            client: None,
            drain: Duration::from_secs(1),
        }
    }

    fn record(id: &str) -> pb::UsageRecord {
        pb::UsageRecord {
            request_id: id.into(),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reports_leave_once_old_enough_numbered_in_order() {
        let mut s = sender();
        let start = Instant::now();
        s.waiting.push_back((start, record("a")));
        s.waiting.push_back((start + GATHER, record("b")));
        s.waiting.push_back((start + 2 * GATHER, record("c")));
        // At MIN_AGE + GATHER, a and b are old enough; c, younger, waits.
        let batch = s.seal(start + MIN_AGE + GATHER, false);
        let sent: Vec<(&str, u64)> = batch
            .iter()
            .map(|r| (r.request_id.as_str(), r.report_seq))
            .collect();
        assert_eq!(sent, [("a", 1), ("b", 2)]);
        assert!(s.seal(start + MIN_AGE + GATHER, false).is_empty());
        // Draining sends everything; numbers go on from where they were.
        let batch = s.seal(start + 2 * GATHER, true);
        assert_eq!(batch[0].request_id, "c");
        assert_eq!(batch[0].report_seq, 3);
        assert!(s.waiting.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_holds_at_most_batch_reports_and_the_queue_its_capacity() {
        let mut s = sender();
        let now = Instant::now();
        for i in 0..BATCH + 5 {
            s.waiting.push_back((now, record(&format!("r{i}"))));
        }
        let later = now + MIN_AGE;
        assert_eq!(s.seal(later, false).len(), BATCH);
        assert_eq!(s.seal(later, false).len(), 5);
        let reporter = Reporter {
            queue: s.queue.clone(),
            capacity: 2,
        };
        assert!(reporter.report(record("x")).is_ok());
        assert!(reporter.report(record("y")).is_ok());
        assert_eq!(reporter.report(record("z")), Err(QueueFull));
        s.take();
        assert_eq!(s.waiting.len(), 2);
        assert!(reporter.report(record("z")).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_with_billing_gone_ends_at_the_drain_deadline() {
        let port = switchyard_testkit::free_port().unwrap_or(1);
        let stop = CancellationToken::new();
        let (reporter, task) = Reporter::spawn(
            format!("http://127.0.0.1:{port}"),
            64,
            stop.clone(),
            Duration::from_secs(3),
        );
        assert!(reporter.report(record("x")).is_ok());
        stop.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(10), task).await;
        assert!(ended.is_ok(), "the sender ends at its drain deadline");
    }
}
