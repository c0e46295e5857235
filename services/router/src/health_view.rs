//! The router's view of endpoint health: follows the shared records (announcements plus a
//! periodic re-read), keeps serving the last snapshot — marked stale — while the store is
//! unreachable, and overlays short local penalties: right after a failure an endpoint is treated
//! as degraded here, before the prober's shared record catches up.
//!
//! When there is no fresh shared record for an endpoint (the prober is down, or never saw it),
//! the router falls back to its own outlier detection: [`LOCAL_EJECT_AFTER`] failed attempts in a
//! row eject the endpoint here for [`LOCAL_EJECTION`]. When the ejection ends the endpoint is
//! half-open: one request is let through as a trial (another only if the first brings no
//! outcome within [`LOCAL_EJECTION`]) while the others still plan without it. A trial that
//! succeeds restores the endpoint and resets its backoff; one that fails ejects it again for
//! twice as long (up to 8 ×). A fresh shared record always wins, so while the prober runs every
//! router plans alike.
//!
//! An upstream's Retry-After is honoured beyond the request that got it: the endpoint is left
//! out of this router's plans until then (unless every candidate is out and the workflow's panic
//! rule tries them anyway).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_core::{EndpointId, EndpointState, FastMap, HealthSnapshot};
use switchyard_state::{HealthStore, snapshot};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Failed attempts in a row after which a router ejects an endpoint on its own (only while no
/// fresh shared record exists for it).
pub const LOCAL_EJECT_AFTER: u32 = 3;
/// The first local ejection; it doubles with each repeat, up to 8 ×.
pub const LOCAL_EJECTION: Duration = Duration::from_secs(10);
/// The longest Retry-After a router honours by leaving an endpoint out of its plans.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
struct Outlier {
    consecutive_failures: u32,
    ejected_until: Option<Instant>,
    /// Ejections since the endpoint last succeeded; > 0 with the ejection over is half-open.
    ejections: u32,
    /// A half-open endpoint's trial request, let through until then.
    trial_until: Option<Instant>,
}

impl Outlier {
    fn ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|t| t > now)
    }

    fn half_open(&self, now: Instant) -> bool {
        self.ejections > 0 && !self.ejected(now)
    }

    /// Ejects for the current backoff, doubled with each ejection since the last success.
    fn eject(&mut self, endpoint: &EndpointId, now: Instant) {
        let factor = 1u32 << self.ejections.min(3);
        self.ejected_until = Some(now + LOCAL_EJECTION * factor);
        self.ejections += 1;
        self.consecutive_failures = 0;
        self.trial_until = None;
        metrics::counter!("switchyard_local_ejections_total").increment(1);
        tracing::warn!(endpoint = %endpoint, for_s = (LOCAL_EJECTION * factor).as_secs(), "failing endpoint ejected locally (used while no fresh shared record exists)");
    }
}

/// A router's health view.
pub struct HealthView {
    current: watch::Sender<Arc<HealthSnapshot>>,
    stale: AtomicBool,
    penalties: Mutex<FastMap<EndpointId, Instant>>,
    outliers: Mutex<FastMap<EndpointId, Outlier>>,
    cooldowns: Mutex<FastMap<EndpointId, Instant>>,
    store: Arc<dyn HealthStore>,
    /// Recent times to first token, for hedging at a percentile.
    ttft: crate::hedge::TtftWindows,
}

impl std::fmt::Debug for HealthView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthView")
            .field("version", &self.current.borrow().version)
            .field("stale", &self.is_stale())
            .finish()
    }
}

use switchyard_core::clock::now_ms;

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
            penalties: Mutex::new(FastMap::default()),
            outliers: Mutex::new(FastMap::default()),
            cooldowns: Mutex::new(FastMap::default()),
            store: store.clone(),
            ttft: crate::hedge::TtftWindows::default(),
        });
        let v = view.clone();
        tokio::spawn(async move {
            let mut changes = store.subscribe();
            let mut tick = tokio::time::interval(refresh);
            loop {
                match store.records().await {
                    Ok((version, records)) => {
                        // Cooldowns other routers were told about (Retry-After) apply here too.
                        match store.cooldowns(now_ms()).await {
                            Ok(shared) => v.merge_cooldowns(&shared),
                            Err(e) => tracing::debug!(error = %e, "shared cooldowns unreadable"),
                        }
                        v.current.send_replace(Arc::new(snapshot(
                            version,
                            &records,
                            now_ms(),
                            ttl,
                        )));
                        export_states(&v.current.borrow());
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

    /// Recent times to first token (a non-streamed answer: the whole answer) per endpoint.
    pub fn ttft(&self) -> &crate::hedge::TtftWindows {
        &self.ttft
    }

    /// The shared store the records come from.
    pub fn store(&self) -> &Arc<dyn HealthStore> {
        &self.store
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

    /// The upstream asked not to be called for `duration` (Retry-After): the endpoint is left
    /// out of plans here until then (capped at [`MAX_COOLDOWN`]).
    /// It is shared through the store so every router honours it (best effort: if the store
    /// is down, this router still does).
    pub fn cool_down(&self, endpoint: &EndpointId, duration: Duration) {
        let duration = duration.min(MAX_COOLDOWN);
        self.cool_down_until(endpoint, Instant::now() + duration);
        let (store, endpoint) = (self.store.clone(), endpoint.clone());
        let until_ms = now_ms() + duration.as_millis() as u64;
        tokio::spawn(async move {
            if let Err(e) = store.put_cooldown(&endpoint, until_ms).await {
                tracing::warn!(endpoint = %endpoint, error = %e, "Retry-After not shared with the other routers");
            }
        });
    }

    fn cool_down_until(&self, endpoint: &EndpointId, until: Instant) {
        let mut cooldowns = self.cooldowns.lock().unwrap_or_else(|e| e.into_inner());
        let entry = cooldowns.entry(endpoint.clone()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Applies shared cooldowns (end times in Unix ms).
    fn merge_cooldowns(&self, shared: &std::collections::BTreeMap<EndpointId, u64>) {
        let (now, now_ms) = (Instant::now(), now_ms());
        for (ep, until_ms) in shared {
            let left = Duration::from_millis(until_ms.saturating_sub(now_ms)).min(MAX_COOLDOWN);
            self.cool_down_until(ep, now + left);
        }
    }

    /// Notes an attempt's outcome for local outlier detection: `failed` for failures that
    /// speak about the endpoint (not context-length or content-policy answers).
    pub fn observe(&self, endpoint: &EndpointId, failed: bool) {
        let mut outliers = self.outliers.lock().unwrap_or_else(|e| e.into_inner());
        let o = outliers.entry(endpoint.clone()).or_default();
        let now = Instant::now();
        if !failed {
            if o.ejected(now) {
                // An answer to a request sent before the ejection does not end it early: the
                // trial after it decides.
                o.consecutive_failures = 0;
            } else {
                if o.ejections > 0 {
                    tracing::info!(endpoint = %endpoint, "locally ejected endpoint answered its trial; restored");
                }
                // Restored, and the backoff starts over.
                *o = Outlier::default();
            }
            // It answered: whatever it asked for before is over.
            self.cooldowns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(endpoint);
            return;
        }
        if o.half_open(now) {
            // The trial (or anything that reached it while half-open) failed.
            o.eject(endpoint, now);
            return;
        }
        o.consecutive_failures += 1;
        if o.consecutive_failures >= LOCAL_EJECT_AFTER && !o.ejected(now) {
            o.eject(endpoint, now);
        }
    }

    /// The snapshot a request plans with: [`Self::snapshot`], except that one half-open
    /// endpoint whose trial is not taken is left in, and the trial is this request's. The
    /// endpoint is returned so that a plan without it gives the trial back
    /// ([`Self::release_trial`]).
    pub fn snapshot_with_trial(&self) -> (Arc<HealthSnapshot>, Option<EndpointId>) {
        let now = Instant::now();
        let trial = {
            let shared = self.current.borrow();
            let mut outliers = self.outliers.lock().unwrap_or_else(|e| e.into_inner());
            outliers
                .iter_mut()
                .find(|(ep, o)| {
                    o.half_open(now)
                        && o.trial_until.is_none_or(|t| t <= now)
                        && local_only(&shared, ep)
                })
                .map(|(ep, o)| {
                    o.trial_until = Some(now + LOCAL_EJECTION);
                    ep.clone()
                })
        };
        (self.planning_snapshot(trial.as_ref()), trial)
    }

    /// Gives back a trial its request will not make.
    pub fn release_trial(&self, endpoint: &EndpointId) {
        if let Some(o) = self
            .outliers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(endpoint)
        {
            o.trial_until = None;
        }
    }

    /// The snapshot to plan with: the shared one, with live local penalties applied, and local
    /// ejections for endpoints without a fresh shared record.
    pub fn snapshot(&self) -> Arc<HealthSnapshot> {
        self.planning_snapshot(None)
    }

    /// The snapshot with `trial` (a half-open endpoint) left in.
    fn planning_snapshot(&self, trial: Option<&EndpointId>) -> Arc<HealthSnapshot> {
        let shared = self.current.borrow().clone();
        let mut penalties = self.penalties.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        penalties.retain(|_, until| *until > now);
        let mut ejected: Vec<EndpointId> = self
            .outliers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(ep, o)| {
                (o.ejected(now) || (o.half_open(now) && trial != Some(*ep)))
                    && local_only(&shared, ep)
            })
            .map(|(ep, _)| ep.clone())
            .collect();
        {
            let mut cooldowns = self.cooldowns.lock().unwrap_or_else(|e| e.into_inner());
            cooldowns.retain(|_, until| *until > now);
            ejected.extend(cooldowns.keys().cloned());
        }
        if penalties.is_empty() && ejected.is_empty() {
            return shared;
        }
        let mut s = (*shared).clone();
        for ep in ejected {
            s.endpoints.entry(ep).or_default().state = EndpointState::Ejected;
        }
        for ep in penalties.keys() {
            let h = s.endpoints.entry(ep.clone()).or_default();
            if matches!(h.state, EndpointState::Healthy | EndpointState::Unknown) {
                h.state = EndpointState::Degraded;
            }
        }
        Arc::new(s)
    }
}

/// Whether the router's own outlier detection speaks for `endpoint`: no fresh shared record.
fn local_only(shared: &HealthSnapshot, endpoint: &EndpointId) -> bool {
    shared
        .endpoints
        .get(endpoint)
        .is_none_or(|h| h.state == EndpointState::Unknown)
}

/// The shared state of every endpoint as this router sees it: one gauge per endpoint and state,
/// 1 for the current one.
fn export_states(s: &HealthSnapshot) {
    for (ep, h) in &s.endpoints {
        for state in EndpointState::ALL {
            let v = if state == h.state { 1.0 } else { 0.0 };
            metrics::gauge!("switchyard_router_endpoint_state", "endpoint" => ep.to_string(), "state" => state.as_str()).set(v);
        }
    }
}
