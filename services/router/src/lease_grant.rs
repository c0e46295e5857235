//! Asking the budget store for a lease's slice (see [`crate::budget_lease`]), and taking in
//! what it answers. Grants are numbered per lease: one whose answer was lost (a timeout, a
//! dropped connection) is asked again with its number before anything else, and the store applies
//! each number once, so the slice is counted here once instead of staying reserved, unused, until
//! the lease's TTL.

use std::time::Instant;

use switchyard_core::Money;
use switchyard_core::clock::now_ms;
use switchyard_state::{LeaseGrant, LeaseOutcome, LeaseStanding};

use crate::budget_lease::{HEADROOM_SHARE, LeaseBook, NEAR_LIMIT_FOR, Slot, SlotState};

impl LeaseBook {
    /// Asks the store for `amount` more (the caller holds `slot.grant`); on `Granted` the
    /// amount is free here, and the answer carries the amount asked. A grant left unanswered
    /// is asked again first, with its own number and amount, so that one the store applied
    /// without its answer arriving here is counted once, not left reserved until the TTL.
    pub(crate) async fn grant(
        &self,
        slot: &Slot,
        amount: i64,
    ) -> Result<(LeaseOutcome, i64), String> {
        let (number, amount) = {
            let mut s = slot.lock();
            match s.unanswered {
                Some((number, amount, _)) => (number, amount),
                None => {
                    s.grants += 1;
                    (s.grants, amount)
                }
            }
        };
        let grant = LeaseGrant {
            org: slot.org.clone(),
            lease_id: slot.lease_id.clone(),
            scopes: slot.scopes.clone(),
            amount: Money::from_nanos(amount),
            created_ms: slot.created_ms,
            now_ms: now_ms(),
            ttl_ms: self.ttl.as_millis() as u64,
            number,
        };
        metrics::counter!("switchyard_budget_lease_grants_total").increment(1);
        let answer = match tokio::time::timeout(self.timeout, self.store.grant_lease(&grant)).await
        {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        let mut s = slot.lock();
        match &answer {
            Ok(LeaseOutcome::Granted(standing)) => {
                s.unanswered = None;
                s.free += amount;
                Self::stood(&mut s, *standing);
            }
            Ok(_) => s.unanswered = None,
            Err(_) => {
                s.unanswered.get_or_insert((number, amount, Instant::now()));
            }
        }
        answer.map(|o| (o, amount))
    }

    /// Asks an unanswered grant again (a tick of the upkeep); `true` while it stays unanswered.
    /// After a TTL it is forgotten: the store has expired the lease by then.
    pub(crate) async fn ask_again(&self, slot: &Slot) -> bool {
        {
            let mut s = slot.lock();
            match s.unanswered {
                None => return false,
                Some((_, _, since)) if since.elapsed() >= self.ttl => {
                    s.unanswered = None;
                    return false;
                }
                Some(_) => {}
            }
        }
        let Ok(_grant) = slot.grant.try_lock() else {
            return true;
        };
        self.grant(slot, 0).await.is_err()
    }

    /// Takes in what the store said of the lease.
    pub(crate) fn stood(s: &mut SlotState, standing: LeaseStanding) {
        s.renewed = Some(Instant::now());
        s.amount = standing.amount.nanos();
        s.headroom = standing.headroom.map(|m| m.nanos());
        // Near a limit: everything free goes back, and requests are held one by one.
        if let Some(left) = s.headroom
            && (left + s.free) / HEADROOM_SHARE < 2 * s.request_cost.max(1)
        {
            s.bypass_until = Some(Instant::now() + NEAR_LIMIT_FOR);
        }
    }
}
