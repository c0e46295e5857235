//! Budget leases on this router: per (org, key, workflow, UTC day) a slice of the scopes' remaining
//! budget reserved in the budget store, from which requests are admitted locally, with no round
//! trip, while the scopes are far from their limits. A background task renews each lease soon
//! after it was used (it records what was admitted and released, so a lease whose router dies is
//! charged for its requests and gives the rest back), tops it up before it runs dry, gives back
//! what it holds beyond its target, and closes it once idle.
//!
//! The slice adapts: its target is about a second of this router's spending (at least 16 of the
//! request's maximum cost) and never more than an eighth of what the scopes have left. When an
//! eighth of what is left is less than two requests' maximum cost, the scopes are near their
//! limit: the lease gives everything back and requests are held one by one (the budget gate's
//! per-request hold), which keeps the bound exact where it matters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_core::clock::now_ms;
use switchyard_core::{FastMap, Money};
use switchyard_state::{BudgetStore, LEASE_PREFIX, LeaseOutcome, Scope};

/// How long a lease lives unrenewed, by default.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// How long requests are held one by one after a scope was found near its limit.
pub(crate) const NEAR_LIMIT_FOR: Duration = Duration::from_secs(1);
/// A slice is at least this many of the request's maximum cost.
const MIN_SLICE_REQUESTS: i64 = 16;
/// A slice is at most this fraction (1/n) of the least budget left in its scopes.
pub(crate) const HEADROOM_SHARE: i64 = 8;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SlotKey {
    org: String,
    key: String,
    workflow: String,
    day: u64,
}

#[derive(Debug, Default)]
pub(crate) struct SlotState {
    /// Reserved in the store and not allocated to a request.
    pub(crate) free: i64,
    /// Cumulative maximum cost admitted, and released with nothing served.
    pub(crate) admitted: i64,
    pub(crate) released: i64,
    /// Admitted, not released, not yet reported to billing.
    pub(crate) in_flight: i64,
    /// The slice this lease aims to hold free.
    pub(crate) target: i64,
    /// The largest maximum cost admitted lately (the slice's floor is a multiple of it).
    pub(crate) request_cost: i64,
    /// Last successful grant or renewal.
    pub(crate) renewed: Option<Instant>,
    pub(crate) last_admit: Option<Instant>,
    /// Admissions or releases since the last renewal.
    pub(crate) dirty: bool,
    /// Per-request holds until then (the scopes are near a limit, or the store failed).
    pub(crate) bypass_until: Option<Instant>,
    /// Least budget left in the scopes, as of the last answer.
    pub(crate) headroom: Option<i64>,
    /// What the store reserved for the lease as of the last answer.
    pub(crate) amount: i64,
    /// Admitted since the rate was last measured, and when.
    pub(crate) window_admitted: i64,
    pub(crate) window_start: Option<Instant>,
    /// Maximum cost admitted per second (EWMA).
    pub(crate) rate: f64,
    /// The store no longer has the lease, or it is closing: admit nothing more under it.
    pub(crate) done: bool,
    /// The number of the last grant asked for.
    pub(crate) grants: u64,
    /// A grant that got no answer (number, amount, since): the store may have applied it, so it
    /// is asked again, with its number, before anything else.
    pub(crate) unanswered: Option<(u64, i64, Instant)>,
}

/// One lease.
#[derive(Debug)]
pub struct Slot {
    pub(crate) lease_id: String,
    pub(crate) org: String,
    pub(crate) scopes: Vec<Scope>,
    pub(crate) created_ms: u64,
    pub(crate) state: Mutex<SlotState>,
    pub(crate) grant: tokio::sync::Mutex<()>,
}

impl Slot {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lease's id (the usage report's `hold_id`).
    pub fn lease_id(&self) -> &str {
        &self.lease_id
    }
}

/// A request admitted under a lease.
#[derive(Debug, Clone)]
pub struct LeaseTicket {
    slot: Arc<Slot>,
    /// What the router had admitted under the lease before this request.
    pub seq: u64,
    cost: i64,
}

impl LeaseTicket {
    /// The lease's id.
    pub fn lease_id(&self) -> &str {
        self.slot.lease_id()
    }

    /// The request ended with nothing served: its allocation is free again.
    pub fn release(&self) {
        let mut s = self.slot.lock();
        s.free += self.cost;
        s.released += self.cost;
        s.in_flight -= self.cost;
        s.dirty = true;
    }

    /// The request's usage report is on its way to billing, which settles it against the lease.
    pub fn reported(&self) {
        self.slot.lock().in_flight -= self.cost;
    }
}

/// Why a request was not admitted under a lease (the gate then holds it on its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoLease {
    /// A scope is near its limit.
    NearLimit,
    /// The store did not answer, or the lease is closing.
    Unavailable,
}

/// This router's leases.
pub struct LeaseBook {
    pub(crate) store: Arc<dyn BudgetStore>,
    pub(crate) router: String,
    pub(crate) ttl: Duration,
    pub(crate) timeout: Duration,
    pub(crate) slots: Mutex<FastMap<SlotKey, Arc<Slot>>>,
    /// Replaced leases still closing.
    pub(crate) retired: Mutex<Vec<Arc<Slot>>>,
    pub(crate) next: AtomicU64,
    /// Slices of client rate limits on the same store.
    rates: Arc<crate::rate_lease::RateBook>,
}

impl std::fmt::Debug for LeaseBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseBook")
            .field("router", &self.router)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

pub(crate) fn fresh(s: &SlotState, ttl: Duration) -> bool {
    s.renewed.is_some_and(|t| t.elapsed() < ttl / 2)
}

/// The slice to ask for: about a second of spending, at least `MIN_SLICE_REQUESTS` requests, at
/// most `1/HEADROOM_SHARE` of what is left; `None` when that is under two requests (near the
/// limit).
pub(crate) fn slice(s: &SlotState, cost: i64) -> Option<i64> {
    let floor = MIN_SLICE_REQUESTS * cost.max(s.request_cost).max(1);
    let want = (s.rate as i64).max(floor);
    let want = match s.headroom {
        Some(left) => want.min((left + s.free) / HEADROOM_SHARE),
        None => want,
    };
    (want >= 2 * cost.max(1)).then_some(want)
}

impl LeaseBook {
    /// Leases on `store` named after this process, living `ttl` unrenewed; a grant without an
    /// answer within `timeout` counts as failed.
    pub fn new(store: Arc<dyn BudgetStore>, ttl: Duration, timeout: Duration) -> Arc<Self> {
        let router = format!("{:016x}", rand::random::<u64>());
        Arc::new(LeaseBook {
            router,
            ttl,
            timeout,
            slots: Mutex::new(FastMap::default()),
            retired: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
            rates: crate::rate_lease::RateBook::new(store.clone(), timeout),
            store,
        })
    }

    /// The slices of client rate limits kept beside the leases (their upkeep runs apart:
    /// [`crate::rate_lease::RateBook::run`]).
    pub fn rates(&self) -> &Arc<crate::rate_lease::RateBook> {
        &self.rates
    }

    fn slot(&self, org: &str, key: &str, workflow: &str) -> Arc<Slot> {
        let now = now_ms();
        let k = SlotKey {
            org: org.to_string(),
            key: key.to_string(),
            workflow: workflow.to_string(),
            day: now / 86_400_000,
        };
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slots.get(&k)
            && !s.lock().done
        {
            return s.clone();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            lease_id: format!("{LEASE_PREFIX}{}:{n}", self.router),
            org: org.to_string(),
            scopes: vec![Scope::org(), Scope::key(key), Scope::workflow(workflow)],
            created_ms: now,
            state: Mutex::new(SlotState::default()),
            grant: tokio::sync::Mutex::new(()),
        });
        // A replaced lease (closing) is still renewed by the task until it closes.
        if let Some(old) = slots.insert(k, slot.clone()) {
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(old);
        }
        slot
    }

    /// Admits a request of maximum cost `cost` under the lease of its scopes: locally while the
    /// lease has it free, else after one grant.
    pub async fn admit(
        &self,
        org: &str,
        key: &str,
        workflow: &str,
        cost: Money,
    ) -> Result<LeaseTicket, NoLease> {
        let cost = cost.nanos().max(0);
        let slot = self.slot(org, key, workflow);
        if let Some(t) = self.take(&slot, cost)? {
            return Ok(t);
        }
        let _grant = slot.grant.lock().await;
        if let Some(t) = self.take(&slot, cost)? {
            return Ok(t);
        }
        let amount = {
            let mut s = slot.lock();
            s.request_cost = s.request_cost.max(cost);
            match slice(&s, cost) {
                Some(a) => a,
                None => {
                    s.bypass_until = Some(Instant::now() + NEAR_LIMIT_FOR);
                    return Err(NoLease::NearLimit);
                }
            }
        };
        let mut amount = amount;
        for _ in 0..2 {
            match self.grant(&slot, amount).await {
                Ok((LeaseOutcome::Granted(_), granted)) => {
                    {
                        let mut s = slot.lock();
                        s.target = s.target.max(granted);
                    }
                    return self.take(&slot, cost)?.ok_or(NoLease::Unavailable);
                }
                Ok((LeaseOutcome::Denied { headroom, .. }, _)) => {
                    let mut s = slot.lock();
                    s.headroom = Some(headroom.nanos());
                    match slice(&s, cost) {
                        Some(a) if a < amount => amount = a,
                        _ => {
                            s.bypass_until = Some(Instant::now() + NEAR_LIMIT_FOR);
                            return Err(NoLease::NearLimit);
                        }
                    }
                }
                Ok((LeaseOutcome::Gone, _)) => {
                    slot.lock().done = true;
                    return Err(NoLease::Unavailable);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "budget lease not granted");
                    slot.lock().bypass_until = Some(Instant::now() + NEAR_LIMIT_FOR);
                    return Err(NoLease::Unavailable);
                }
            }
        }
        slot.lock().bypass_until = Some(Instant::now() + NEAR_LIMIT_FOR);
        Err(NoLease::NearLimit)
    }

    /// Takes `cost` from the lease's free part; `Ok(None)` when it needs a grant first.
    fn take(&self, slot: &Arc<Slot>, cost: i64) -> Result<Option<LeaseTicket>, NoLease> {
        let mut s = slot.lock();
        if s.done {
            return Err(NoLease::Unavailable);
        }
        if s.bypass_until.is_some_and(|t| Instant::now() < t) {
            return Err(NoLease::NearLimit);
        }
        if !(s.free >= cost && fresh(&s, self.ttl)) {
            return Ok(None);
        }
        let seq = s.admitted as u64;
        s.free -= cost;
        s.admitted += cost;
        s.in_flight += cost;
        s.window_admitted += cost;
        s.request_cost = s.request_cost.max(cost);
        s.last_admit = Some(Instant::now());
        s.dirty = true;
        Ok(Some(LeaseTicket {
            slot: slot.clone(),
            seq,
            cost,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_state::{BudgetDef, LeaseGrant, MemoryBudgetStore, Period};

    async fn book_with_limit(limit: i64) -> (Arc<LeaseBook>, Arc<MemoryBudgetStore>) {
        let store = Arc::new(MemoryBudgetStore::default());
        store
            .set_budget(
                "acme",
                &Scope::org(),
                Period::Day,
                &BudgetDef {
                    limit: Money::from_nanos(limit),
                    hard: true,
                    thresholds: vec![],
                },
            )
            .await
            .unwrap();
        let book = LeaseBook::new(store.clone(), LEASE_TTL, Duration::from_secs(1));
        (book, store)
    }

    async fn held(store: &MemoryBudgetStore) -> (i64, i64) {
        let b = store.budgets("acme", now_ms()).await.unwrap();
        (b[0].spent.nanos(), b[0].held.nanos())
    }

    #[tokio::test]
    async fn far_from_the_limit_one_grant_admits_many_requests() {
        let (book, store) = book_with_limit(1_000_000_000).await;
        let mut tickets = Vec::new();
        for _ in 0..16 {
            tickets.push(
                book.admit("acme", "k", "w", Money::from_nanos(1000))
                    .await
                    .unwrap(),
            );
        }
        // One grant of 16 requests' worth, held in the store.
        assert_eq!(held(&store).await, (0, 16_000));
        assert_eq!(tickets[3].seq, 3000);
        tickets[0].release();
        let t = book
            .admit("acme", "k", "w", Money::from_nanos(1000))
            .await
            .unwrap();
        assert_eq!(t.seq, 16_000);
    }

    #[tokio::test]
    async fn a_grant_whose_answer_was_lost_is_asked_again_and_counted_once() {
        let (book, store) = book_with_limit(1_000_000_000).await;
        let slot = book.slot("acme", "k", "w");
        // The store applied grant 1 of 16 000, but its answer never came back.
        let grant = LeaseGrant {
            org: "acme".into(),
            lease_id: slot.lease_id.clone(),
            scopes: slot.scopes.clone(),
            amount: Money::from_nanos(16_000),
            created_ms: slot.created_ms,
            now_ms: now_ms(),
            ttl_ms: LEASE_TTL.as_millis() as u64,
            number: 1,
        };
        store.grant_lease(&grant).await.unwrap();
        {
            let mut s = slot.lock();
            s.grants = 1;
            s.unanswered = Some((1, 16_000, Instant::now()));
        }
        // The next admission asks grant 1 again: the store does not reserve it twice, and the
        // router has it free.
        let t = book
            .admit("acme", "k", "w", Money::from_nanos(1000))
            .await
            .unwrap();
        assert_eq!(held(&store).await, (0, 16_000));
        assert_eq!(t.seq, 0);
        let s = slot.lock();
        assert_eq!((s.free, s.unanswered), (15_000, None));
    }

    #[tokio::test]
    async fn near_the_limit_requests_are_held_one_by_one() {
        // 8 × 2 requests' worth is 16 000: below that, no lease.
        let (book, _store) = book_with_limit(15_000).await;
        assert_eq!(
            book.admit("acme", "k", "w", Money::from_nanos(1000))
                .await
                .err(),
            Some(NoLease::NearLimit)
        );
    }

    #[tokio::test]
    async fn an_idle_lease_gives_everything_back_and_closes() {
        let (book, store) = book_with_limit(1_000_000_000).await;
        let t = book
            .admit("acme", "k", "w", Money::from_nanos(1000))
            .await
            .unwrap();
        t.reported();
        let entry = switchyard_state::LedgerEntry {
            request_id: "r1".into(),
            org: "acme".into(),
            cost: Money::from_nanos(400),
            max_cost: Money::from_nanos(1000),
            ..Default::default()
        };
        let report = switchyard_state::LeasedReport {
            seq: t.seq,
            number: 1,
            entry,
        };
        store
            .settle_leased("acme", t.lease_id(), &report)
            .await
            .unwrap();
        book.give_back_all().await;
        assert_eq!(held(&store).await, (400, 0));
        assert!(book.slots.lock().unwrap().values().all(|s| s.lock().done));
    }
}
