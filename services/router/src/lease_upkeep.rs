//! The upkeep of this router's budget leases (see [`crate::budget_lease`]): every
//! [`RENEW_AFTER_ADMISSION_MS`] each lease that was used, is due, holds too much or is idle is
//! renewed with what was admitted and released, topped up, shrunk or closed; at shutdown
//! everything free is given back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_core::Money;
use switchyard_core::clock::now_ms;
use switchyard_state::lease::RENEW_AFTER_ADMISSION_MS;
use switchyard_state::{LeaseRenewal, RenewOutcome};
use tokio_util::sync::CancellationToken;

use crate::budget_lease::{LeaseBook, Slot, SlotKey, slice};

/// A lease unused this long gives its slice back and closes.
const IDLE: Duration = Duration::from_secs(2);
/// After this long idle, what billing has not settled yet is given back too (it settles as
/// spend when it arrives).
const ABANDON: Duration = Duration::from_secs(30);

impl LeaseBook {
    /// A renewal failed: nothing is admitted under the lease until one succeeds (the budget
    /// store is down or slow, and the org's fail mode applies as it does to holds), and it is
    /// tried again next tick. What was given back stays given back: the store may have it.
    fn unrenewed(slot: &Slot) {
        let mut s = slot.lock();
        s.renewed = None;
        s.dirty = true;
    }

    /// Renews every lease that needs it; run every [`RENEW_AFTER_ADMISSION_MS`].
    pub async fn tick(&self) {
        let slots: Vec<(SlotKey, Arc<Slot>)> = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        let work = slots.iter().map(|(k, slot)| async move {
            if self.maintain(slot).await {
                let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
                if slots.get(k).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                    slots.remove(k);
                }
            }
        });
        futures::future::join_all(work).await;
        let retired: Vec<Arc<Slot>> = self
            .retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let finished = futures::future::join_all(retired.iter().map(|s| self.maintain(s))).await;
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| {
                !retired
                    .iter()
                    .zip(&finished)
                    .any(|(r, done)| *done && Arc::ptr_eq(r, s))
            });
        metrics::gauge!("switchyard_budget_leases")
            .set(self.slots.lock().unwrap_or_else(|e| e.into_inner()).len() as f64);
    }

    /// One lease's upkeep; `true` when it is over (closed or gone).
    async fn maintain(&self, slot: &Arc<Slot>) -> bool {
        if self.ask_again(slot).await {
            return false;
        }
        let now = Instant::now();
        let (give_back, close, top_up, admitted, released) = {
            let mut s = slot.lock();
            if let Some(start) = s.window_start {
                let secs = now.duration_since(start).as_secs_f64();
                if secs >= 0.25 {
                    let r = s.window_admitted as f64 / secs;
                    s.rate = if s.rate == 0.0 {
                        r
                    } else {
                        0.7 * s.rate + 0.3 * r
                    };
                    s.window_admitted = 0;
                    s.window_start = Some(now);
                }
            } else {
                s.window_start = Some(now);
            }
            let idle = s.last_admit.is_none_or(|t| now.duration_since(t) >= IDLE);
            let abandoned = s
                .last_admit
                .is_none_or(|t| now.duration_since(t) >= ABANDON);
            let near = s.bypass_until.is_some_and(|t| now < t);
            let due = s.dirty
                || s.renewed
                    .is_none_or(|t| now.duration_since(t) >= self.ttl / 4);
            let close = s.done || (idle && s.in_flight <= 0);
            let give_back = if close && abandoned {
                s.free.max(s.amount)
            } else if close || near {
                s.free
            } else {
                (s.free - 2 * s.target.max(1)).max(0)
            };
            if s.renewed.is_none() && s.free == 0 && s.amount == 0 {
                // Never granted (or a grant under way): nothing in the store to renew.
                return close && slot.grant.try_lock().is_ok();
            }
            if !due && give_back == 0 {
                return false;
            }
            if close {
                s.done = true;
            }
            s.free -= give_back.min(s.free);
            s.dirty = false;
            let top_up = if close || near {
                0
            } else {
                let target = slice(&s, s.request_cost).unwrap_or(0);
                s.target = target;
                if s.free < target / 2 && !idle {
                    target - s.free
                } else {
                    0
                }
            };
            (give_back, close, top_up, s.admitted, s.released)
        };
        let renewal = LeaseRenewal {
            org: slot.org.clone(),
            lease_id: slot.lease_id.clone(),
            scopes: slot.scopes.clone(),
            created_ms: slot.created_ms,
            give_back: Money::from_nanos(give_back),
            admitted: Money::from_nanos(admitted),
            released: Money::from_nanos(released),
            now_ms: now_ms(),
            ttl_ms: self.ttl.as_millis() as u64,
            close,
        };
        match tokio::time::timeout(self.timeout, self.store.renew_lease(&renewal)).await {
            Ok(Ok(RenewOutcome::Renewed(standing))) => {
                Self::stood(&mut slot.lock(), standing);
            }
            Ok(Ok(RenewOutcome::Closed)) => return true,
            Ok(Ok(RenewOutcome::Gone)) => {
                let mut s = slot.lock();
                s.done = true;
                s.free = 0;
                tracing::warn!(lease = %slot.lease_id, "budget lease expired before its renewal");
                return true;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "budget lease not renewed");
                Self::unrenewed(slot);
                return false;
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "budget lease not renewed in time");
                Self::unrenewed(slot);
                return false;
            }
        }
        if top_up > 0 {
            let _grant = slot.grant.lock().await;
            if let Err(e) = self.grant(slot, top_up).await {
                tracing::debug!(error = %e, "budget lease not topped up");
            }
        }
        false
    }

    /// Renews leases every [`RENEW_AFTER_ADMISSION_MS`] until `shutdown`, then gives back what
    /// is free and closes what it can.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(RENEW_AFTER_ADMISSION_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.tick().await,
            }
        }
        self.give_back_all().await;
    }

    /// Gives back everything free (at shutdown, once requests have drained).
    pub async fn give_back_all(&self) {
        let mut slots: Vec<Arc<Slot>> = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        slots.extend(
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        for slot in &slots {
            {
                let mut s = slot.lock();
                s.done = true;
                s.last_admit = None;
            }
            self.maintain(slot).await;
        }
    }
}
