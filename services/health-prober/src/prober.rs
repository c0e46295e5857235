//! The probing loop of one replica: take or extend the lease of every endpoint, probe the owned
//! ones that are due (within the spend cap), fold in the routers' passive outcomes, run the state
//! machine and write records that changed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use switchyard_config::Catalog;
use switchyard_core::{EndpointId, EndpointState, Money};
use switchyard_policy_model::catalog::PublishedCatalog;
use switchyard_policy_model::snapshot::{CompiledPolicy, OverrideKind};
use switchyard_providers::ProviderClient;
use switchyard_state::{HealthRecord, HealthStore, PolicyStore, StateError, bucket_of};
use tokio_util::sync::CancellationToken;

use crate::config::ProberConfig;
use crate::machine::{Inputs, ProbeResult, evaluate};

pub use crate::probe::ProbeTarget;
pub use crate::targets::Targets;

/// One prober replica.
pub struct Prober {
    store: Arc<dyn HealthStore>,
    policy: Option<Arc<dyn PolicyStore>>,
    targets: RwLock<Arc<Targets>>,
    client: ProviderClient,
    cfg: ProberConfig,
    owner: String,
    spend: Mutex<VecDeque<(Instant, i64)>>,
    disabled: Mutex<(u64, BTreeSet<EndpointId>)>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field("owner", &self.owner)
            .field("endpoints", &self.targets().list.len())
            .finish()
    }
}

use switchyard_core::clock::now_ms;

impl Prober {
    /// A prober for every endpoint of `catalog` (until the policy publishes another catalog
    /// version: then its endpoints).
    pub fn new(
        catalog: &Catalog,
        store: Arc<dyn HealthStore>,
        policy: Option<Arc<dyn PolicyStore>>,
        client: ProviderClient,
        cfg: ProberConfig,
        owner: String,
    ) -> Self {
        let version = PublishedCatalog::version_of(catalog);
        Prober {
            store,
            policy,
            targets: RwLock::new(Arc::new(Targets::from_catalog(catalog, version))),
            client,
            cfg,
            owner,
            spend: Mutex::new(VecDeque::new()),
            disabled: Mutex::new((0, BTreeSet::new())),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn HealthStore> {
        &self.store
    }

    /// The watched endpoints, of the catalog version in force.
    pub fn targets(&self) -> Arc<Targets> {
        self.targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Watches the endpoints of `published` from now on, if it is another version.
    fn take_catalog(&self, published: &PublishedCatalog) {
        if self.targets().version == published.version {
            return;
        }
        match published.parse() {
            Ok(catalog) => {
                let next = Targets::from_catalog(&catalog, published.version.clone());
                tracing::info!(version = %next.version, endpoints = next.list.len(), "catalog version in force");
                *self.targets.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
            }
            Err(e) => {
                tracing::error!(version = %published.version, "published catalog rejected, keeping the endpoints of version {}: {e}", self.targets().version);
            }
        }
    }

    /// Runs ticks every `evaluate_ms` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(
            self.cfg.evaluate_ms.min(self.cfg.probe.interval_ms),
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "health evaluation failed; retrying next tick");
            }
        }
    }

    /// Reserves `cost` in the hourly spend cap; false when it would go over.
    fn spend_allows(&self, cost: Money) -> bool {
        let mut spend = self.spend.lock().unwrap_or_else(|e| e.into_inner());
        let hour_ago = Instant::now().checked_sub(Duration::from_secs(3600));
        while spend
            .front()
            .is_some_and(|(at, _)| hour_ago.is_some_and(|h| *at < h))
        {
            spend.pop_front();
        }
        let used: i64 = spend.iter().map(|(_, c)| c).sum();
        if used.saturating_add(cost.nanos()) > self.cfg.probe.max_spend_per_hour.nanos() {
            return false;
        }
        spend.push_back((Instant::now(), cost.nanos()));
        true
    }

    /// Endpoints disabled by global operator overrides in the published policy.
    async fn disabled(&self) -> BTreeSet<EndpointId> {
        let Some(policy) = &self.policy else {
            return BTreeSet::new();
        };
        let Ok(Some(snap)) = policy.current_snapshot().await else {
            return self
                .disabled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .clone();
        };
        {
            let cached = self.disabled.lock().unwrap_or_else(|e| e.into_inner());
            if cached.0 == snap.version {
                return cached.1.clone();
            }
        }
        let Ok(compiled) = serde_json::from_slice::<CompiledPolicy>(&snap.body) else {
            return BTreeSet::new();
        };
        // The catalog rides in the same snapshot.
        if let Some(c) = &compiled.catalog {
            self.take_catalog(c);
        }
        let targets = self.targets();
        let mut set = BTreeSet::new();
        for o in compiled.overrides.iter().filter(|o| o.org.is_none()) {
            for t in &targets.list {
                let hit = match o.kind {
                    OverrideKind::DisableProvider => t.target.provider.as_str() == o.target,
                    OverrideKind::DisableEndpoint => t.target.endpoint.as_str() == o.target,
                    OverrideKind::ForceModel => false,
                };
                if hit {
                    set.insert(t.target.endpoint.clone());
                }
            }
        }
        *self.disabled.lock().unwrap_or_else(|e| e.into_inner()) = (snap.version, set.clone());
        set
    }

    /// One active probe (see [`crate::probe::probe`]).
    pub async fn probe(&self, t: &ProbeTarget) -> ProbeResult {
        let timeout = Duration::from_millis(self.cfg.probe.timeout_ms);
        crate::probe::probe(&self.client, timeout, t).await
    }

    /// One evaluation round over the endpoints this replica holds.
    pub async fn tick(&self) -> Result<(), StateError> {
        let now = now_ms();
        let (_, mut records) = self
            .store
            .records()
            .await
            .map_err(|e| context("reading health records", e))?;
        let disabled = self.disabled().await;
        let targets = self.targets();
        let lease_ttl = Duration::from_millis(self.cfg.lease_ttl_ms);
        let mut owned = Vec::new();
        for t in &targets.list {
            if self
                .store
                .lease(t.target.endpoint.as_str(), &self.owner, lease_ttl)
                .await
                .map_err(|e| context("taking a lease", e))?
            {
                owned.push(t);
            }
        }
        let interval = self.cfg.probe.interval_ms;
        let due: Vec<&ProbeTarget> = owned
            .iter()
            .copied()
            .filter(|t| {
                let last = records
                    .get(&t.target.endpoint)
                    .map(|r| r.last_probe_ms)
                    .unwrap_or(0);
                now.saturating_sub(last) + self.cfg.evaluate_ms / 2 >= interval
            })
            .filter(|t| {
                let allowed = self.spend_allows(t.cost);
                if !allowed {
                    metrics::counter!("switchyard_probes_skipped_total", "reason" => "spend_cap")
                        .increment(1);
                }
                allowed
            })
            .collect();
        let jitter = self.cfg.probe.jitter_ms;
        let probes = futures::future::join_all(due.iter().map(|t| async move {
            if jitter > 0 {
                let delay = rand::random_range(0..=jitter);
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            (t.target.endpoint.clone(), self.probe(t).await)
        }))
        .await;
        let probes: HashMap<EndpointId, ProbeResult> = probes.into_iter().collect();
        let now = now_ms();
        for t in owned {
            let ep = &t.target.endpoint;
            let prev = records.get(ep).cloned().unwrap_or_default();
            let next = self
                .evaluate_one(
                    &targets,
                    t,
                    &prev,
                    probes.get(ep).copied(),
                    disabled.contains(ep),
                    &records,
                    now,
                )
                .await?;
            let due = changed(&prev, &next)
                || now.saturating_sub(prev.updated_ms) > self.cfg.record_ttl_ms / 3;
            if due && self.write(ep, &prev, &next).await?.is_none() {
                continue;
            }
            records.insert(ep.clone(), next);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn evaluate_one(
        &self,
        targets: &Targets,
        t: &ProbeTarget,
        prev: &HealthRecord,
        probe: Option<ProbeResult>,
        disabled: bool,
        records: &BTreeMap<EndpointId, HealthRecord>,
        now: u64,
    ) -> Result<HealthRecord, StateError> {
        let th = &self.cfg.thresholds;
        let window_start = now.saturating_sub(th.window_ms);
        // Outcomes from before a recovery do not count against the recovered endpoint (at the
        // granularity of a bucket). A first sighting or a degraded spell is no recovery: every
        // outcome in the window counts.
        let from = if prev.recovered_ms > window_start {
            bucket_of(prev.recovered_ms) + 1
        } else {
            bucket_of(window_start)
        };
        let window = self
            .store
            .outcomes(&t.target.endpoint, from, bucket_of(now))
            .await
            .map_err(|e| context("reading passive outcomes", e))?;
        let others = targets
            .list
            .iter()
            .filter(|o| o.model == t.model && o.target.endpoint != t.target.endpoint)
            .filter(|o| {
                records
                    .get(&o.target.endpoint)
                    .is_some_and(|r| r.state == EndpointState::Ejected && r.ejected_until_ms > now)
            })
            .count();
        let inputs = Inputs {
            now_ms: now,
            probe,
            window: &window,
            disabled,
            model_endpoints: targets.model_sizes.get(&t.model).copied().unwrap_or(1),
            model_ejected_others: others,
        };
        Ok(evaluate(prev, &inputs, th))
    }

    async fn write(
        &self,
        ep: &EndpointId,
        prev: &HealthRecord,
        next: &HealthRecord,
    ) -> Result<Option<u64>, StateError> {
        // A record is told from the one it replaces by its write time, so that moves forward.
        let bumped;
        let next = if next.updated_ms > prev.updated_ms {
            next
        } else {
            bumped = HealthRecord {
                updated_ms: prev.updated_ms + 1,
                ..next.clone()
            };
            &bumped
        };
        let written = self
            .store
            .replace_record(ep, prev.updated_ms, next)
            .await
            .map_err(|e| context("writing a health record", e))?;
        if written.is_none() {
            // Someone wrote it since we read it (an operator, or another replica's round):
            // what we decided from the older record is dropped; the next read decides again.
            metrics::counter!("switchyard_health_write_conflicts_total").increment(1);
            tracing::debug!(endpoint = %ep, "health record changed while evaluated; not written");
            return Ok(None);
        }
        if prev.state != next.state {
            tracing::info!(endpoint = %ep, from = prev.state.as_str(), to = next.state.as_str(), reason = %next.reason, "endpoint state changed");
            if next.state == EndpointState::Ejected {
                metrics::counter!("switchyard_ejections_total", "endpoint" => ep.to_string())
                    .increment(1);
            }
        }
        for s in EndpointState::ALL {
            let v = if s == next.state { 1.0 } else { 0.0 };
            metrics::gauge!("switchyard_endpoint_state", "endpoint" => ep.to_string(), "state" => s.as_str()).set(v);
        }
        Ok(written)
    }

    /// Probes `endpoint` now (whoever holds its lease) and records the result.
    pub async fn probe_now(&self, endpoint: &str) -> Result<Option<HealthRecord>, StateError> {
        let targets = self.targets();
        let Some(t) = targets.get(endpoint) else {
            return Ok(None);
        };
        let probe = self.probe(t).await;
        let disabled = self.disabled().await.contains(&t.target.endpoint);
        for _ in 0..WRITE_ATTEMPTS {
            let (_, records) = self.store.records().await?;
            let prev = records.get(&t.target.endpoint).cloned().unwrap_or_default();
            let next = self
                .evaluate_one(
                    &targets,
                    t,
                    &prev,
                    Some(probe),
                    disabled,
                    &records,
                    now_ms(),
                )
                .await?;
            if self
                .write(&t.target.endpoint, &prev, &next)
                .await?
                .is_some()
            {
                return Ok(Some(next));
            }
        }
        Err(busy(endpoint))
    }

    /// Hands back every lease this replica holds (at shutdown), so the other replicas take its
    /// endpoints at their next tick instead of after the lease TTL.
    pub async fn release_leases(&self) {
        for t in &self.targets().list {
            if let Err(e) = self
                .store
                .release(t.target.endpoint.as_str(), &self.owner)
                .await
            {
                tracing::warn!(error = %e, "leases not released; they expire on their own");
                return;
            }
        }
        tracing::info!(owner = %self.owner, "leases released");
    }

    /// Records an operator action in the policy audit trail (when the prober has the policy
    /// store); a failure to record is logged, not fatal: the action itself was taken.
    pub async fn audit(&self, actor: &str, action: &str, target: &str, reason: &str) {
        let record = switchyard_state::AuditRecord::now(actor, action, target, reason);
        match &self.policy {
            Some(store) => {
                if let Err(e) = record.append(store.as_ref()).await {
                    tracing::warn!(error = %e, action, target, "operator action not recorded in the audit trail");
                }
            }
            None => tracing::info!(
                actor,
                action,
                target,
                reason,
                "operator action (no audit store)"
            ),
        }
    }

    /// Ejects `endpoint` for `duration` (operator action), or restores it when `duration` is None.
    pub async fn set_manual(
        &self,
        endpoint: &str,
        duration: Option<Duration>,
        why: &str,
    ) -> Result<Option<HealthRecord>, StateError> {
        let targets = self.targets();
        let Some(t) = targets.get(endpoint) else {
            return Ok(None);
        };
        for _ in 0..WRITE_ATTEMPTS {
            let (_, records) = self.store.records().await?;
            let prev = records.get(&t.target.endpoint).cloned().unwrap_or_default();
            let now = now_ms();
            let mut next = prev.clone();
            next.updated_ms = now;
            match duration {
                Some(d) => {
                    next.state = EndpointState::Ejected;
                    next.ejected_until_ms = now + d.as_millis() as u64;
                    next.reason = format!("ejected by an operator: {why}");
                }
                None => {
                    next.state = EndpointState::Healthy;
                    next.ejected_until_ms = 0;
                    next.consecutive_failures = 0;
                    next.healthy_since_ms = now;
                    next.recovered_ms = now;
                    next.reason = format!("restored by an operator: {why}");
                }
            }
            if self
                .write(&t.target.endpoint, &prev, &next)
                .await?
                .is_some()
            {
                return Ok(Some(next));
            }
        }
        Err(busy(endpoint))
    }
}

/// Reads and writes of one record before a manual action gives up on a record that keeps
/// changing under it.
const WRITE_ATTEMPTS: usize = 5;

fn busy(endpoint: &str) -> StateError {
    StateError::Unavailable(format!(
        "the health record of `{endpoint}` kept changing while it was written; try again"
    ))
}

fn context(what: &str, e: StateError) -> StateError {
    match e {
        StateError::Unavailable(m) => StateError::Unavailable(format!("{what}: {m}")),
        other => other,
    }
}

fn changed(a: &HealthRecord, b: &HealthRecord) -> bool {
    a.state != b.state
        || a.reason != b.reason
        || a.ejected_until_ms != b.ejected_until_ms
        || a.consecutive_failures != b.consecutive_failures
        || a.last_probe_ms != b.last_probe_ms
        // An endpoint breaking its budget holds (or no longer): operators look for it.
        || a.over_holds != b.over_holds
        // Whether tool requests may use it: a move of 5 points is worth telling the routers.
        || match (a.tool_validity, b.tool_validity) {
            (Some(x), Some(y)) => (x - y).abs() >= 0.05,
            (x, y) => x.is_some() != y.is_some(),
        }
}
