//! In-memory health store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use switchyard_core::EndpointId;
use tokio::sync::broadcast;

use crate::StateError;
use crate::capacity::{CapacityAnnouncement, CapacityRecord, CapacityUse};
use crate::health::{BUCKET_SECS, HealthRecord, HealthStore, Outcomes};
use crate::health_stats::Tier;

#[derive(Default)]
struct Inner {
    version: u64,
    records: BTreeMap<EndpointId, HealthRecord>,
    outcomes: HashMap<(EndpointId, u64), Outcomes>,
    tiers: HashMap<(EndpointId, Tier, u64), Outcomes>,
    leases: HashMap<String, (String, Instant)>,
    cooldowns: BTreeMap<EndpointId, u64>,
    capacity: BTreeMap<String, CapacityRecord>,
    capacity_use: HashMap<(u64, String), CapacityUse>,
}

/// The in-memory [`HealthStore`].
pub struct MemoryHealthStore {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<u64>,
    capacity_changes: broadcast::Sender<CapacityAnnouncement>,
}

impl std::fmt::Debug for MemoryHealthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryHealthStore")
    }
}

impl Default for MemoryHealthStore {
    fn default() -> Self {
        MemoryHealthStore {
            inner: Mutex::new(Inner::default()),
            changes: broadcast::channel(256).0,
            capacity_changes: broadcast::channel(256).0,
        }
    }
}

impl MemoryHealthStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl HealthStore for MemoryHealthStore {
    async fn records(&self) -> Result<(u64, BTreeMap<EndpointId, HealthRecord>), StateError> {
        let inner = self.lock();
        Ok((inner.version, inner.records.clone()))
    }

    async fn put_record(
        &self,
        endpoint: &EndpointId,
        record: &HealthRecord,
    ) -> Result<u64, StateError> {
        let v = {
            let mut inner = self.lock();
            inner.records.insert(endpoint.clone(), record.clone());
            inner.version += 1;
            inner.version
        };
        let _ = self.changes.send(v);
        Ok(v)
    }

    async fn replace_record(
        &self,
        endpoint: &EndpointId,
        read_updated_ms: u64,
        record: &HealthRecord,
    ) -> Result<Option<u64>, StateError> {
        let v = {
            let mut inner = self.lock();
            let current = inner.records.get(endpoint).map_or(0, |r| r.updated_ms);
            if current != read_updated_ms {
                return Ok(None);
            }
            inner.records.insert(endpoint.clone(), record.clone());
            inner.version += 1;
            inner.version
        };
        let _ = self.changes.send(v);
        Ok(Some(v))
    }

    fn subscribe(&self) -> broadcast::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn add_outcomes(&self, batch: &[(EndpointId, u64, Outcomes)]) -> Result<(), StateError> {
        let mut inner = self.lock();
        let mut newest = 0;
        for (ep, bucket, o) in batch {
            inner
                .outcomes
                .entry((ep.clone(), *bucket))
                .or_default()
                .add(&o.without_histograms());
            for tier in [Tier::Minute, Tier::Hour] {
                inner
                    .tiers
                    .entry((ep.clone(), tier, tier.of_bucket(*bucket)))
                    .or_default()
                    .add(&tier.kept(o));
            }
            newest = newest.max(*bucket);
        }
        // Kept as long as their Redis counterparts.
        let oldest = newest.saturating_sub(30);
        inner.outcomes.retain(|(_, b), _| *b >= oldest);
        let now_s = newest * BUCKET_SECS;
        inner
            .tiers
            .retain(|(_, tier, b), _| (b + 1) * tier.secs() + tier.ttl_secs() > now_s);
        Ok(())
    }

    async fn tier_outcomes(
        &self,
        endpoint: &EndpointId,
        tier: Tier,
        from: u64,
        to: u64,
    ) -> Result<Vec<Outcomes>, StateError> {
        let inner = self.lock();
        Ok((from..=to)
            .map(|b| {
                inner
                    .tiers
                    .get(&(endpoint.clone(), tier, b))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect())
    }

    async fn outcomes(
        &self,
        endpoint: &EndpointId,
        from: u64,
        to: u64,
    ) -> Result<Outcomes, StateError> {
        let inner = self.lock();
        let mut sum = Outcomes::default();
        for b in from..=to {
            if let Some(o) = inner.outcomes.get(&(endpoint.clone(), b)) {
                sum.add(o);
            }
        }
        Ok(sum)
    }

    async fn put_cooldown(&self, endpoint: &EndpointId, until_ms: u64) -> Result<u64, StateError> {
        let v = {
            let mut inner = self.lock();
            let until = inner.cooldowns.entry(endpoint.clone()).or_insert(until_ms);
            *until = (*until).max(until_ms);
            inner.version += 1;
            inner.version
        };
        let _ = self.changes.send(v);
        Ok(v)
    }

    async fn cooldowns(&self, now_ms: u64) -> Result<BTreeMap<EndpointId, u64>, StateError> {
        let mut inner = self.lock();
        inner.cooldowns.retain(|_, until| *until > now_ms);
        Ok(inner.cooldowns.clone())
    }

    async fn put_capacity(
        &self,
        batch: &[(String, CapacityRecord)],
        announce: bool,
    ) -> Result<(), StateError> {
        {
            let mut inner = self.lock();
            for (scope, r) in batch {
                let cur = inner.capacity.entry(scope.clone()).or_default();
                if r.observed_ms > cur.observed_ms {
                    *cur = *r;
                }
            }
        }
        if announce {
            let _ = self
                .capacity_changes
                .send(std::sync::Arc::new(batch.to_vec()));
        }
        Ok(())
    }

    fn subscribe_capacity(&self) -> broadcast::Receiver<CapacityAnnouncement> {
        self.capacity_changes.subscribe()
    }

    async fn capacity(&self) -> Result<BTreeMap<String, CapacityRecord>, StateError> {
        Ok(self.lock().capacity.clone())
    }

    async fn count_capacity(
        &self,
        minute: u64,
        batch: &[(String, CapacityUse)],
    ) -> Result<Vec<CapacityUse>, StateError> {
        let mut inner = self.lock();
        inner.capacity_use.retain(|(m, _), _| *m + 1 >= minute);
        Ok(batch
            .iter()
            .map(|(scope, add)| {
                let u = inner
                    .capacity_use
                    .entry((minute, scope.clone()))
                    .or_default();
                u.requests += add.requests;
                u.tokens += add.tokens;
                *u
            })
            .collect())
    }

    async fn release(&self, name: &str, owner: &str) -> Result<(), StateError> {
        let mut inner = self.lock();
        if inner
            .leases
            .get(name)
            .is_some_and(|(holder, _)| holder == owner)
        {
            inner.leases.remove(name);
        }
        Ok(())
    }

    async fn lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StateError> {
        let mut inner = self.lock();
        let now = Instant::now();
        match inner.leases.get(name) {
            Some((holder, until)) if holder != owner && *until > now => Ok(false),
            _ => {
                inner
                    .leases
                    .insert(name.to_string(), (owner.to_string(), now + ttl));
                Ok(true)
            }
        }
    }
}
