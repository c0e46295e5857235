//! The router's view of endpoint health: follows the shared records (announcements plus a
//! periodic re-read), keeps serving the last snapshot — marked stale — while the store is
//! unreachable, and overlays short local penalties: right after a failure an endpoint is treated
//! as degraded here, before the prober's shared record catches up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_core::{EndpointId, EndpointState, HealthSnapshot};
use switchyard_state::{HealthStore, snapshot};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A router's health view.
pub struct HealthView {
    current: watch::Sender<Arc<HealthSnapshot>>,
    stale: AtomicBool,
    penalties: Mutex<HashMap<EndpointId, Instant>>,
}

impl std::fmt::Debug for HealthView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthView")
            .field("version", &self.current.borrow().version)
            .field("stale", &self.is_stale())
            .finish()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl HealthView {
    /// Starts following `store`; records older than `ttl` read as unknown.
    pub fn spawn(
        store: Arc<dyn HealthStore>,
        ttl: Duration,
        refresh: Duration,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let view = Arc::new(HealthView {
            current: watch::channel(Arc::new(HealthSnapshot::default())).0,
            // Stale until the first successful read.
            stale: AtomicBool::new(true),
            penalties: Mutex::new(HashMap::new()),
        });
        let v = view.clone();
        tokio::spawn(async move {
            let mut changes = store.subscribe();
            let mut tick = tokio::time::interval(refresh);
            loop {
                match store.records().await {
                    Ok((version, records)) => {
                        v.current.send_replace(Arc::new(snapshot(
                            version,
                            &records,
                            now_ms(),
                            ttl,
                        )));
                        if v.stale.swap(false, Ordering::Relaxed) {
                            tracing::info!(version, "health state reachable again");
                        }
                        metrics::gauge!("switchyard_state_stale", "state" => "health").set(0.0);
                    }
                    Err(e) => {
                        if !v.stale.swap(true, Ordering::Relaxed) {
                            tracing::warn!(error = %e, "health state unreachable; routing on the last snapshot");
                        }
                        metrics::gauge!("switchyard_state_stale", "state" => "health").set(1.0);
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = changes.recv() => {}
                    _ = tick.tick() => {}
                }
            }
        });
        view
    }

    /// Whether the last read failed (the snapshot is the last one known).
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// Treats `endpoint` as degraded here for `duration`.
    pub fn penalize(&self, endpoint: &EndpointId, duration: Duration) {
        self.penalties
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(endpoint.clone(), Instant::now() + duration);
    }

    /// The snapshot to plan with: the shared one, with live local penalties applied.
    pub fn snapshot(&self) -> Arc<HealthSnapshot> {
        let shared = self.current.borrow().clone();
        let mut penalties = self.penalties.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        penalties.retain(|_, until| *until > now);
        if penalties.is_empty() {
            return shared;
        }
        let mut s = (*shared).clone();
        for ep in penalties.keys() {
            let h = s.endpoints.entry(ep.clone()).or_default();
            if matches!(h.state, EndpointState::Healthy | EndpointState::Unknown) {
                h.state = EndpointState::Degraded;
            }
        }
        Arc::new(s)
    }
}
