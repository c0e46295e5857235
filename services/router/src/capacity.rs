//! What each provider key has left on each endpoint, as this router knows it and shares it.
//!
//! Two sources, the more restrictive wins:
//! - **Reported**: every answer's rate-limit headers (`x-ratelimit-*`, `anthropic-ratelimit-*`)
//!   give what the key has left and when it resets. This router subtracts what it sends after
//!   that and shares its newest observation through the health store every [`FLUSH`]; when a key
//!   runs out it shares at once, published whole so every router applies it without a read, and
//!   the answer that said so waits until the announcement came back to this router (up to
//!   `SHARE_WAIT`) before it goes on: the others got it at the same moment.
//! - **Declared**: an endpoint's `capacity` in the catalog (the shared key) or a BYOK key's in
//!   the policy file (`rpm`, `tpm`), counted per UTC minute across routers: each adds what it
//!   sent to shared counters every [`FLUSH`] and reads the totals back.
//!
//! The planner leaves out a key that has no request, or fewer tokens than the request reserves,
//! left on an endpoint (`capacity_exhausted`) until the reset; then it is planned again, with
//! no write needed. A scope is `endpoint` for the shared key and `byok:ORG:endpoint` for an
//! org's own key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use switchyard_core::EndpointId;
use switchyard_core::clock::now_ms;
use switchyard_providers::{CapacityObserver, RateLimits, Sharing, Target};
use switchyard_routing::{CapacityLeft, CapacityTable, KeySource};
use switchyard_state::{CapacityRecord, CapacityUse, HealthStore, minute_of};

use crate::capacity_scope::{ScopeState, absorb, current, near, window};

/// How often observations and declared use are shared and the others' read.
pub const FLUSH: Duration = Duration::from_millis(250);
/// How often while a declared capacity is near its limit (a quarter or less left, or 8 or
/// fewer).
pub const NEAR_FLUSH: Duration = Duration::from_millis(25);
/// How long a limit reported without a reset time is taken to last.
pub const DEFAULT_RESET: Duration = Duration::from_secs(1);

/// A router's capacity view.
pub struct CapacityView {
    me: Weak<CapacityView>,
    scopes: Mutex<HashMap<String, ScopeState>>,
    /// Whether any scope is known (planning skips the lock until one is).
    known: AtomicBool,
    store: Arc<dyn HealthStore>,
    /// Announcements were applied.
    heard: tokio::sync::Notify,
}

impl std::fmt::Debug for CapacityView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CapacityView")
    }
}

/// The scope of a key on an endpoint.
pub fn scope(endpoint: &str, owner: Option<&str>) -> String {
    match owner {
        None => endpoint.to_string(),
        Some(org) => format!("byok:{org}:{endpoint}"),
    }
}

impl CapacityView {
    /// A view sharing through `store`, until the view is dropped.
    pub fn spawn(store: Arc<dyn HealthStore>) -> Arc<Self> {
        let view = Arc::new_cyclic(|me| CapacityView {
            me: me.clone(),
            scopes: Mutex::new(HashMap::new()),
            known: AtomicBool::new(false),
            store: store.clone(),
            heard: tokio::sync::Notify::new(),
        });
        tokio::spawn(follow(Arc::downgrade(&view), store));
        view
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ScopeState>> {
        self.scopes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the key of `owner` (`None`: the shared key) has left on `endpoint`.
    pub fn left(&self, endpoint: &str, owner: Option<&str>) -> Option<CapacityLeft> {
        if !self.known.load(Ordering::Relaxed) {
            return None;
        }
        let scopes = self.lock();
        let st = match owner {
            None => scopes.get(endpoint),
            Some(org) => scopes.get(&scope(endpoint, Some(org))),
        }?;
        let left = st.left(now_ms());
        (left.requests.is_some() || left.tokens.is_some()).then_some(left)
    }

    /// The planner's table for `org`'s requests.
    pub fn for_org<'a>(&'a self, org: &'a str) -> OrgCapacity<'a> {
        OrgCapacity { view: self, org }
    }

    /// Whether a declared capacity is [`near`] its limit (its use is then shared and read
    /// every [`NEAR_FLUSH`]).
    fn near_a_limit(&self) -> bool {
        let now = now_ms();
        self.lock().values().any(|st| {
            if st.declared.is_none() {
                return false;
            }
            let left = st.left(now);
            [left.requests, left.tokens].iter().flatten().any(near)
        })
    }

    /// Shares what changed here and reads what the others shared.
    async fn flush(&self, store: &dyn HealthStore) {
        let now = now_ms();
        let minute = minute_of(now);
        let (records, announce, counts) = {
            let mut scopes = self.lock();
            let mut records = Vec::new();
            let mut counts = Vec::new();
            for (key, st) in scopes.iter_mut() {
                if st.dirty
                    && let Some(r) = st.reported
                {
                    st.dirty = false;
                    records.push((key.clone(), r));
                }
                if st.declared.is_some() {
                    st.roll(minute);
                    counts.push((key.clone(), st.take_pending()));
                }
            }
            let announce = records.iter().any(|(_, r)| r.exhausted(now));
            (records, announce, counts)
        };
        if let Err(e) = store.put_capacity(&records, announce).await {
            tracing::debug!(error = %e, "capacity not shared; retried at the next flush");
            let mut scopes = self.lock();
            for (key, r) in &records {
                if let Some(st) = scopes.get_mut(key)
                    && st.reported == Some(*r)
                {
                    st.dirty = true;
                }
            }
        }
        self.count(store, minute, counts).await;
        self.read(store).await;
    }

    /// Adds what was sent here to the shared counters of declared capacity and takes the
    /// totals back.
    async fn count(
        &self,
        store: &dyn HealthStore,
        minute: u64,
        counts: Vec<(String, CapacityUse)>,
    ) {
        if counts.is_empty() {
            return;
        }
        let totals = store.count_capacity(minute, &counts).await;
        if let Err(e) = &totals {
            tracing::debug!(error = %e, "declared capacity use not counted; retried at the next flush");
        }
        let mut scopes = self.lock();
        for (i, (key, sent)) in counts.iter().enumerate() {
            let Some(st) = scopes.get_mut(key).filter(|st| st.minute == minute) else {
                continue;
            };
            match totals.as_ref().ok().and_then(|t| t.get(i)) {
                Some(total) => st.counted(*sent, *total),
                None => st.not_counted(*sent),
            }
        }
    }

    /// Takes every newer observation the others shared.
    async fn read(&self, store: &dyn HealthStore) {
        match store.capacity().await {
            Ok(shared) => self.merge(shared, false),
            Err(e) => tracing::debug!(error = %e, "shared capacity unreadable"),
        }
    }

    /// Takes the records newer than what is known here.
    fn merge(&self, shared: impl IntoIterator<Item = (String, CapacityRecord)>, announced: bool) {
        let now = now_ms();
        let mut scopes = self.lock();
        for (key, r) in shared {
            if !r.live(now) {
                continue;
            }
            let st = scopes.entry(key).or_default();
            if announced {
                st.announced_ms = st.announced_ms.max(r.observed_ms);
            }
            if st
                .reported
                .is_none_or(|mine| mine.observed_ms < r.observed_ms)
            {
                st.reported = Some(absorb(st.reported, r, now));
                st.dirty = false;
            }
            self.known.store(true, Ordering::Relaxed);
        }
        drop(scopes);
        if announced {
            self.heard.notify_waiters();
        }
    }

    /// Waits until the announcement of `key`'s record observed at `observed_ms` came back to
    /// this router: every router's subscription got it at the same moment, so by then the
    /// others have it too (or are applying it).
    async fn heard_back(&self, key: &str, observed_ms: u64) {
        loop {
            let heard = self.heard.notified();
            tokio::pin!(heard);
            heard.as_mut().enable();
            if self
                .lock()
                .get(key)
                .is_some_and(|st| st.announced_ms >= observed_ms)
            {
                return;
            }
            heard.await;
        }
    }
}

async fn follow(view: Weak<CapacityView>, store: Arc<dyn HealthStore>) {
    let mut announced = store.subscribe_capacity();
    let mut next = tokio::time::Instant::now() + FLUSH;
    loop {
        let Some(me) = view.upgrade() else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                me.flush(store.as_ref()).await;
                next = tokio::time::Instant::now() + if me.near_a_limit() { NEAR_FLUSH } else { FLUSH };
            }
            r = announced.recv() => match r {
                // A key ran out at another router: applied now, as published.
                Ok(records) => me.merge(records.iter().cloned(), true),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    me.read(store.as_ref()).await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

impl CapacityView {
    /// A request is about to use `target`'s key, reserving `tokens` (its prompt bound plus the
    /// output it may produce): counted down from what is known to be left, and counted against
    /// a declared capacity. Admission takes it for a request's first attempt (so waiting
    /// requests let in one after another see each other's), the engine for every later one.
    pub fn reserve(&self, target: &Target, tokens: u64) {
        let now = now_ms();
        let key = scope_of(target);
        let mut scopes = self.lock();
        if !scopes.contains_key(&*key) {
            if target.capacity.is_none() {
                return; // nothing known, nothing declared: nothing to count
            }
            scopes.insert(key.clone().into_owned(), ScopeState::default());
        }
        let Some(st) = scopes.get_mut(&*key) else {
            return;
        };
        if let Some(r) = &mut st.reported {
            for (w, n) in [(&mut r.requests, 1), (&mut r.tokens, tokens)] {
                // A window past its reset starts again whole first.
                *w = w.and_then(|w| current(w, now)).map(|mut w| {
                    w.remaining = w.remaining.saturating_sub(n);
                    w
                });
            }
        }
        let mut eager = None;
        if let Some(c) = target.capacity {
            st.declared = Some(c);
            let minute = minute_of(now);
            st.roll(minute);
            st.pending.requests += 1;
            st.pending.tokens += tokens;
            // Near the limit, every request is counted at once rather than at the next flush,
            // and every router reads the totals every NEAR_FLUSH.
            let left = st.left(now);
            if [left.requests, left.tokens].iter().flatten().any(near) {
                eager = Some((minute, vec![(key.clone().into_owned(), st.take_pending())]));
            }
        }
        drop(scopes);
        self.known.store(true, Ordering::Relaxed);
        if let Some((minute, counts)) = eager
            && let Some(me) = self.me.upgrade()
        {
            tokio::spawn(async move {
                let store = me.store.clone();
                me.count(store.as_ref(), minute, counts).await;
            });
        }
    }
}

impl CapacityObserver for CapacityView {
    fn reported(&self, target: &Target, limits: &RateLimits) -> Option<Sharing> {
        let now = now_ms();
        let record = CapacityRecord {
            requests: limits.requests.as_ref().map(|w| window(w, now)),
            tokens: limits.tokens.as_ref().map(|w| window(w, now)),
            observed_ms: now,
        };
        let exhausted = record.exhausted(now);
        let key = scope_of(target).into_owned();
        {
            let mut scopes = self.lock();
            let st = scopes.entry(key.clone()).or_default();
            st.reported = Some(absorb(st.reported, record, now));
            // Shared at the next flush, unless at once below.
            st.dirty = !exhausted;
            if target.capacity.is_some() {
                st.declared = target.capacity;
            }
        }
        self.known.store(true, Ordering::Relaxed);
        if target.owner.is_none() {
            let ep = target.endpoint.to_string();
            for (kind, w) in [("requests", &record.requests), ("tokens", &record.tokens)] {
                if let Some(w) = w {
                    metrics::gauge!("switchyard_capacity_remaining", "endpoint" => ep.clone(), "kind" => kind).set(w.remaining as f64);
                }
            }
        }
        if !exhausted {
            return None;
        }
        metrics::counter!("switchyard_capacity_exhausted_total", "endpoint" => target.endpoint.to_string()).increment(1);
        tracing::info!(endpoint = %target.endpoint, byok = target.owner.is_some(), "provider reports the key out of capacity; planned around until its reset");
        // Spawned, so it completes even if the answer stops waiting for it.
        let store = self.store.clone();
        let shared = {
            let key = key.clone();
            tokio::spawn(async move {
                if let Err(e) = store.put_capacity(&[(key, record)], true).await {
                    tracing::warn!(error = %e, "an exhausted key not shared with the other routers");
                }
            })
        };
        let me = self.me.upgrade()?;
        Some(Box::pin(async move {
            if shared.await.is_ok() {
                me.heard_back(&key, record.observed_ms).await;
            }
        }))
    }
}

fn scope_of(target: &Target) -> std::borrow::Cow<'_, str> {
    match &target.owner {
        None => std::borrow::Cow::Borrowed(target.endpoint.as_str()),
        Some(org) => std::borrow::Cow::Owned(scope(target.endpoint.as_str(), Some(org))),
    }
}

/// [`CapacityView`] as the planner reads it for one org.
#[derive(Debug, Clone, Copy)]
pub struct OrgCapacity<'a> {
    view: &'a CapacityView,
    org: &'a str,
}

impl CapacityTable for OrgCapacity<'_> {
    fn left(&self, endpoint: &EndpointId, key: KeySource) -> Option<CapacityLeft> {
        let owner = (key == KeySource::Byok).then_some(self.org);
        self.view.left(endpoint.as_str(), owner)
    }
}
