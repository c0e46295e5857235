//! Client rate limits on this router without a round trip per request: per org and limited scope,
//! a slice of the current UTC minute's requests-per-minute and tokens-per-minute limits is
//! reserved in the budget store (see [`switchyard_state::rate_slice`]) and requests are admitted
//! against it in memory. A request that used fewer tokens than it reserved gives the rest back
//! to the slice. A slice is about a second of this router's requests (at least two) and never
//! more than an eighth of what the minute has left; when that is under two requests, the scope
//! is near its limit and requests are held one by one (the budget gate's per-request hold, which
//! checks the limits exactly), and what the router's slice has left is given back. A slice
//! unused for a second is given back too, within its minute. Slices end with their minute: the
//! window starts again from zero, so the limit is never exceeded, and a router that dies leaves
//! at most its slices of one minute unused. Requests in flight (`concurrent`) are always held
//! one by one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_core::clock::now_ms;
use switchyard_state::{BudgetStore, LimitCheck, RateAsk, Scope, minute_of};

use crate::budget_lease::NoLease;
use crate::rate_lease_slice::{IDLE, NEAR_LIMIT_FOR, Slice};

/// How often idle slices are looked for.
pub const UPKEEP_EVERY: Duration = Duration::from_millis(250);

/// A request admitted against rate slices.
#[derive(Debug)]
pub struct RateTicket {
    book: Arc<RateBook>,
    org: String,
    scopes: Vec<Scope>,
    minute: u64,
    tokens: u64,
}

impl RateTicket {
    /// The request ended having used `used` tokens: what it reserved beyond that is the
    /// slice's again (within its minute).
    pub fn finish(&self, used: u64) {
        self.give_back(0, self.tokens.saturating_sub(used));
    }

    /// The request was not admitted after all (the budget gate holds it on its own): all of it
    /// is the slice's again.
    pub fn undo(&self) {
        self.give_back(1, self.tokens);
    }

    fn give_back(&self, requests: u64, tokens: u64) {
        let mut slices = self.book.lock();
        for scope in &self.scopes {
            if let Some(s) = slices.get_mut(&(self.org.clone(), scope.clone()))
                && s.minute == self.minute
            {
                s.requests += requests;
                s.tokens += tokens;
            }
        }
    }
}

/// This router's rate slices.
pub struct RateBook {
    store: Arc<dyn BudgetStore>,
    timeout: Duration,
    slices: Mutex<HashMap<(String, Scope), Slice>>,
    grant: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for RateBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateBook").finish_non_exhaustive()
    }
}

impl RateBook {
    /// Slices on `store`; a grant without an answer within `timeout` counts as failed.
    pub fn new(store: Arc<dyn BudgetStore>, timeout: Duration) -> Arc<Self> {
        Arc::new(RateBook {
            store,
            timeout,
            slices: Mutex::new(HashMap::new()),
            grant: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Scope), Slice>> {
        self.slices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a request reserving `tokens` against the slices of its limited scopes (`checks`):
    /// locally while they have room, else after one grant.
    pub async fn admit(
        self: &Arc<Self>,
        org: &str,
        checks: &[LimitCheck],
        tokens: u64,
    ) -> Result<RateTicket, NoLease> {
        if checks.iter().any(|c| c.concurrent.is_some()) {
            return Err(NoLease::Unavailable);
        }
        let now = now_ms();
        let minute = minute_of(now);
        if let Some(t) = self.take(org, checks, tokens, minute)? {
            return Ok(t);
        }
        let _grant = self.grant.lock().await;
        if let Some(t) = self.take(org, checks, tokens, minute)? {
            return Ok(t);
        }
        // What to ask for, or, near a limit, what is left to give back; and what was left of
        // slices granted under limits the policy has changed since.
        let mut stale = Vec::new();
        let asks: Result<Vec<RateAsk>, Option<RateAsk>> = {
            let mut slices = self.lock();
            let mut asks = Vec::new();
            let mut near = None;
            for c in checks {
                let s = slices
                    .entry((org.to_string(), c.scope.clone()))
                    .or_default()
                    .at(minute);
                stale.extend(s.limit_to(c));
                if s.has(tokens) {
                    continue;
                }
                match s.ask(c, tokens) {
                    Some(a) => asks.push(a),
                    None => {
                        s.near_until = Some(Instant::now() + NEAR_LIMIT_FOR);
                        near = Some(s.drain(&c.scope));
                        break;
                    }
                }
            }
            match near {
                Some(unused) => Err(unused),
                None => Ok(asks),
            }
        };
        let asks = match asks {
            Ok(asks) => {
                self.give_back(org, now, stale).await;
                asks
            }
            Err(unused) => {
                metrics::counter!("switchyard_rate_slice_grants_total", "outcome" => "near_limit")
                    .increment(1);
                stale.extend(unused);
                self.give_back(org, now, stale).await;
                return Err(NoLease::NearLimit);
            }
        };
        let answer =
            tokio::time::timeout(self.timeout, self.store.grant_rate(org, now, &asks)).await;
        let grants = match answer {
            Ok(Ok(g)) if g.len() == asks.len() => g,
            Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
                tracing::warn!("rate slice not granted: the budget store did not answer");
                metrics::counter!("switchyard_rate_slice_grants_total", "outcome" => "error")
                    .increment(1);
                return Err(NoLease::Unavailable);
            }
        };
        let mut near = false;
        let mut unused = Vec::new();
        {
            let mut slices = self.lock();
            for (a, g) in asks.iter().zip(&grants) {
                let s = slices
                    .entry((org.to_string(), a.scope.clone()))
                    .or_default()
                    .at(minute);
                s.requests_left = g.requests_left;
                s.tokens_left = g.tokens_left;
                s.taken = 0;
                s.since = Some(Instant::now());
                if g.granted {
                    s.requests += a.requests;
                    s.tokens += a.tokens;
                } else {
                    s.near_until = Some(Instant::now() + NEAR_LIMIT_FOR);
                    unused.extend(s.drain(&a.scope));
                    near = true;
                }
            }
        }
        let outcome = if near { "near_limit" } else { "granted" };
        metrics::counter!("switchyard_rate_slice_grants_total", "outcome" => outcome).increment(1);
        if near {
            self.give_back(org, now, unused).await;
            return Err(NoLease::NearLimit);
        }
        self.take(org, checks, tokens, minute)?
            .ok_or(NoLease::Unavailable)
    }

    /// Gives `unused` back to the store (within the minute of `now`); a failure only leaves it
    /// unused until the minute ends.
    async fn give_back(&self, org: &str, now: u64, unused: Vec<RateAsk>) {
        if unused.is_empty() {
            return;
        }
        match tokio::time::timeout(self.timeout, self.store.return_rate(org, now, &unused)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "rate slice not given back"),
            Err(_) => tracing::debug!("rate slice not given back in time"),
        }
    }

    /// Gives back every slice of the current minute unused for [`IDLE`].
    pub async fn tick(&self) {
        let now = now_ms();
        let minute = minute_of(now);
        let mut idle: HashMap<String, Vec<RateAsk>> = HashMap::new();
        {
            let mut slices = self.lock();
            slices.retain(|(org, scope), s| {
                if s.minute + 1 < minute {
                    return false;
                }
                if s.minute == minute
                    && s.used.is_none_or(|t| t.elapsed() >= IDLE)
                    && let Some(u) = s.drain(scope)
                {
                    idle.entry(org.clone()).or_default().push(u);
                }
                true
            });
        }
        for (org, unused) in idle {
            self.give_back(&org, now, unused).await;
        }
    }

    /// Gives idle slices back every [`UPKEEP_EVERY`] until `shutdown`, then everything left.
    pub async fn run(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.tick().await,
            }
        }
        for s in self.lock().values_mut() {
            s.used = None;
        }
        self.tick().await;
    }

    /// Takes a request and `tokens` from every scope's slice; `Ok(None)` when one needs a grant
    /// first.
    fn take(
        self: &Arc<Self>,
        org: &str,
        checks: &[LimitCheck],
        tokens: u64,
        minute: u64,
    ) -> Result<Option<RateTicket>, NoLease> {
        let mut slices = self.lock();
        let now = Instant::now();
        for c in checks {
            let s = slices
                .entry((org.to_string(), c.scope.clone()))
                .or_default()
                .at(minute);
            if !s.under(c) {
                return Ok(None);
            }
            if s.near_until.is_some_and(|t| now < t) {
                return Err(NoLease::NearLimit);
            }
            if !s.has(tokens) {
                return Ok(None);
            }
        }
        for c in checks {
            if let Some(s) = slices.get_mut(&(org.to_string(), c.scope.clone())) {
                s.requests -= 1;
                s.tokens -= tokens;
                s.taken += 1;
                s.used = Some(now);
            }
        }
        Ok(Some(RateTicket {
            book: self.clone(),
            org: org.to_string(),
            scopes: checks.iter().map(|c| c.scope.clone()).collect(),
            minute,
            tokens,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_lease_slice::MIN_SLICE_REQUESTS;
    use switchyard_state::MemoryBudgetStore;

    fn rpm(n: u64) -> LimitCheck {
        LimitCheck {
            scope: Scope::key("k1"),
            rpm: Some(n),
            tpm: None,
            concurrent: None,
        }
    }

    fn book() -> Arc<RateBook> {
        RateBook::new(
            Arc::new(MemoryBudgetStore::default()),
            Duration::from_secs(1),
        )
    }

    #[tokio::test]
    async fn far_from_the_limit_one_grant_admits_several_requests() {
        let book = book();
        let t = book.admit("acme", &[rpm(1000)], 10).await.unwrap();
        let s = &book.lock()[&("acme".to_string(), Scope::key("k1"))];
        assert_eq!(s.requests, MIN_SLICE_REQUESTS - 1);
        assert_eq!(s.requests_left, Some(1000 - MIN_SLICE_REQUESTS));
        drop(t);
    }

    #[tokio::test]
    async fn near_the_limit_requests_are_held_one_by_one() {
        let book = book();
        // The first slice (two requests) leaves 13, an eighth of which is under two: once it is
        // used, no more slices.
        for _ in 0..MIN_SLICE_REQUESTS {
            assert!(book.admit("acme", &[rpm(15)], 1).await.is_ok());
        }
        assert_eq!(
            book.admit("acme", &[rpm(15)], 1).await.err(),
            Some(NoLease::NearLimit)
        );
        // In flight limits are never sliced.
        let mut c = rpm(1000);
        c.concurrent = Some(5);
        assert_eq!(
            book.admit("acme", &[c], 1).await.err(),
            Some(NoLease::Unavailable)
        );
    }

    #[tokio::test]
    async fn an_idle_slice_and_one_near_a_limit_are_given_back() {
        let store = Arc::new(MemoryBudgetStore::default());
        let book = RateBook::new(store.clone(), Duration::from_secs(1));
        // The whole test in one minute (slices end with theirs).
        let into = now_ms() % 60_000;
        if into > 55_000 {
            tokio::time::sleep(Duration::from_millis(60_100 - into)).await;
        }
        let left = |store: Arc<MemoryBudgetStore>| async move {
            let probe = RateAsk {
                scope: Scope::key("k1"),
                rpm: Some(100),
                tpm: None,
                requests: 0,
                tokens: 0,
            };
            store.grant_rate("acme", now_ms(), &[probe]).await.unwrap()[0].requests_left
        };
        book.admit("acme", &[rpm(100)], 1).await.unwrap();
        assert_eq!(left(store.clone()).await, Some(100 - MIN_SLICE_REQUESTS));
        book.tick().await;
        assert_eq!(
            left(store.clone()).await,
            Some(100 - MIN_SLICE_REQUESTS),
            "in use"
        );
        tokio::time::sleep(IDLE + Duration::from_millis(50)).await;
        book.tick().await;
        assert_eq!(
            left(store.clone()).await,
            Some(99),
            "the unused request is back"
        );
    }

    #[tokio::test]
    async fn unused_tokens_come_back_to_the_slice_and_an_undone_request_whole() {
        let book = book();
        let tpm = LimitCheck {
            scope: Scope::org(),
            rpm: None,
            tpm: Some(1_000_000),
            concurrent: None,
        };
        let t = book
            .admit("acme", std::slice::from_ref(&tpm), 100)
            .await
            .unwrap();
        let tokens = |b: &RateBook| b.lock()[&("acme".to_string(), Scope::org())].tokens;
        let before = tokens(&book);
        t.finish(30);
        assert_eq!(tokens(&book), before + 70);
        let t = book.admit("acme", &[tpm], 100).await.unwrap();
        let requests = book.lock()[&("acme".to_string(), Scope::org())].requests;
        t.undo();
        let s = &book.lock()[&("acme".to_string(), Scope::org())];
        assert_eq!((s.requests, s.tokens), (requests + 1, before + 70));
    }
}
