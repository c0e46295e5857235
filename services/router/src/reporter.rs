//! Usage reports to billing: accepted into a bounded queue without waiting, sent in batches, and
//! retried with backoff until billing acknowledges them, so a billing outage delays reports but
//! loses none that were accepted. Billing settles idempotently, so a batch resent after a lost
//! acknowledgement still counts once. Only a full queue refuses a report (counted and logged).

use std::collections::VecDeque;
use std::time::Duration;

use switchyard_proto::v1 as pb;
use switchyard_proto::v1::billing_client::BillingClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Reports per batch.
pub const BATCH: usize = 256;

/// Where reports go.
#[derive(Debug, Clone)]
pub struct Reporter {
    tx: mpsc::Sender<pb::UsageRecord>,
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
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let task = tokio::spawn(run(url, rx, shutdown, drain));
        (Reporter { tx }, task)
    }

    /// Queues a report without waiting.
    pub fn report(&self, record: pb::UsageRecord) -> Result<(), QueueFull> {
        match self.tx.try_send(record) {
            Ok(()) => {
                metrics::gauge!("switchyard_usage_reports_queued").increment(1.0);
                Ok(())
            }
            Err(_) => {
                metrics::counter!("switchyard_usage_reports_refused_total").increment(1);
                tracing::error!("usage report queue full; report refused");
                Err(QueueFull)
            }
        }
    }
}

async fn run(
    url: String,
    mut rx: mpsc::Receiver<pb::UsageRecord>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let mut pending: VecDeque<pb::UsageRecord> = VecDeque::new();
    let mut client: Option<BillingClient<tonic::transport::Channel>> = None;
    let mut backoff = Duration::from_millis(50);
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        if pending.is_empty() {
            if drain_until.is_some() {
                // Draining: whatever is queued now is the last of it.
                match rx.try_recv() {
                    Ok(r) => pending.push_back(r),
                    Err(_) => return,
                }
                continue;
            }
            let next = tokio::select! {
                r = rx.recv() => r,
                _ = shutdown.cancelled(), if drain_until.is_none() => {
                    drain_until = Some(tokio::time::Instant::now() + drain);
                    continue;
                }
            };
            match next {
                Some(r) => pending.push_back(r),
                None => return,
            }
        }
        while pending.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => pending.push_back(r),
                Err(_) => break,
            }
        }
        if drain_until.is_some_and(|d| tokio::time::Instant::now() >= d) {
            tracing::error!(
                unsent = pending.len() + rx.len(),
                "shutting down with usage reports billing never acknowledged"
            );
            return;
        }
        let batch: Vec<pb::UsageRecord> = pending.iter().take(BATCH).cloned().collect();
        let sent = send(&url, &mut client, batch).await;
        match sent {
            Ok(acked) => {
                let n = acked.min(pending.len());
                pending.drain(..n);
                metrics::gauge!("switchyard_usage_reports_queued").decrement(n as f64);
                metrics::counter!("switchyard_usage_reports_delivered_total").increment(n as u64);
                backoff = Duration::from_millis(50);
            }
            Err(e) => {
                tracing::warn!(error = %e, pending = pending.len(), retry_in_ms = backoff.as_millis() as u64, "billing unreachable; usage reports kept");
                client = None;
                let wait = tokio::time::sleep(backoff);
                if drain_until.is_some() {
                    wait.await;
                } else {
                    tokio::select! {
                        _ = wait => {}
                        _ = shutdown.cancelled() => drain_until = Some(tokio::time::Instant::now() + drain),
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Sends one batch; the number of leading records acknowledged.
async fn send(
    url: &str,
    client: &mut Option<BillingClient<tonic::transport::Channel>>,
    batch: Vec<pb::UsageRecord>,
) -> Result<usize, String> {
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
    Ok(ack.into_inner().acknowledged.len().min(n))
}
