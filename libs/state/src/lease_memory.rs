//! Leases in memory, with the same semantics as the Redis scripts (`budget_lease_redis.rs`).

use switchyard_core::Money;

use crate::budget::{LedgerEntry, Period, Scope, SettleOutcome, day_of};
use crate::budget_memory::{Org, record};
use crate::lease::{
    LeaseGrant, LeaseOutcome, LeaseRenewal, LeaseStanding, LeasedReport, RenewOutcome, lease_pairs,
    unreported,
};

/// A lease as the memory store keeps it.
pub(crate) struct MemLease {
    pub(crate) state: &'static str,
    amount: i64,
    counters: Vec<String>,
    pub(crate) expires_ms: u64,
    admitted: i64,
    released: i64,
    counted: i64,
    /// The number of the last grant applied.
    grants: u64,
    /// The highest report number settled.
    reported: u64,
    /// Settled before a renewal covered them: (end of the allocation, maximum cost).
    early: Vec<(i64, i64)>,
}

impl MemLease {
    /// Settled requests the last renewal covers count now.
    fn migrate(&mut self) {
        let admitted = self.admitted;
        let (covered, rest): (Vec<_>, Vec<_>) =
            self.early.drain(..).partition(|(end, _)| *end <= admitted);
        self.counted += covered.iter().map(|(_, m)| m).sum::<i64>();
        self.early = rest;
    }
}

/// The reconciler's ledger entry for an expired lease that charged `charge`.
pub(crate) fn expiry_entry(org: &str, lease_id: &str, charge: i64, now_ms: u64) -> LedgerEntry {
    LedgerEntry {
        request_id: format!("unreconciled:{lease_id}:{now_ms}"),
        org: org.to_string(),
        cost: Money::from_nanos(charge),
        hold_id: lease_id.to_string(),
        unreconciled: true,
        finished_ms: now_ms,
        outcome: "unreconciled".into(),
        ..Default::default()
    }
}

fn counter(o: &Org, name: &str) -> i64 {
    o.counters.get(name).copied().unwrap_or(0)
}

/// The least `limit − spent − held − extra` over the hard budgets of `pairs`, and the first pair
/// it makes negative.
fn headroom(
    o: &Org,
    pairs: &[(Scope, Period, String)],
    extra: i64,
) -> (Option<i64>, Option<(Scope, Period, i64)>) {
    let (mut least, mut denied) = (None::<i64>, None);
    for (scope, period, pk) in pairs {
        let Some(def) = o.defs.get(&(scope.clone(), *period)).filter(|d| d.hard) else {
            continue;
        };
        let base = format!("{}|{pk}", scope.as_str());
        let left = def.limit.nanos()
            - counter(o, &format!("{base}|spent"))
            - counter(o, &format!("{base}|held"));
        if left - extra < 0 && denied.is_none() {
            denied = Some((scope.clone(), *period, left));
        }
        least = Some(least.map_or(left - extra, |l| l.min(left - extra)));
    }
    (least, denied)
}

pub(crate) fn grant(o: &mut Org, g: &LeaseGrant) -> LeaseOutcome {
    if o.leases.get(&g.lease_id).is_some_and(|l| l.state != "held") {
        return LeaseOutcome::Gone;
    }
    let amount = g.amount.nanos();
    let pairs = lease_pairs(&g.scopes, g.created_ms);
    if let Some(l) = o.leases.get(&g.lease_id).filter(|l| g.number <= l.grants) {
        let standing = l.amount;
        let (least, _) = headroom(o, &pairs, 0);
        return LeaseOutcome::Granted(LeaseStanding {
            amount: Money::from_nanos(standing),
            headroom: least.map(Money::from_nanos),
        });
    }
    let (least, denied) = headroom(o, &pairs, amount);
    if let Some((scope, period, left)) = denied {
        return LeaseOutcome::Denied {
            scope,
            period,
            headroom: Money::from_nanos(left),
        };
    }
    let bases: Vec<String> = pairs
        .iter()
        .map(|(s, _, pk)| format!("{}|{pk}", s.as_str()))
        .collect();
    for b in &bases {
        *o.counters.entry(format!("{b}|held")).or_default() += amount;
    }
    let lease = o.leases.entry(g.lease_id.clone()).or_insert(MemLease {
        state: "held",
        amount: 0,
        counters: bases,
        expires_ms: 0,
        admitted: 0,
        released: 0,
        counted: 0,
        grants: 0,
        reported: 0,
        early: Vec::new(),
    });
    lease.amount += amount;
    lease.grants = g.number;
    lease.expires_ms = g.now_ms + g.ttl_ms;
    LeaseOutcome::Granted(LeaseStanding {
        amount: Money::from_nanos(lease.amount),
        headroom: least.map(Money::from_nanos),
    })
}

pub(crate) fn renew(o: &mut Org, r: &LeaseRenewal) -> RenewOutcome {
    let Some(lease) = o.leases.get_mut(&r.lease_id).filter(|l| l.state == "held") else {
        return RenewOutcome::Gone;
    };
    let give = r.give_back.nanos().clamp(0, lease.amount.max(0));
    lease.amount -= give;
    lease.admitted = r.admitted.nanos();
    lease.released = r.released.nanos();
    lease.migrate();
    let (amount, counters) = (lease.amount, lease.counters.clone());
    if r.close && amount <= 0 {
        lease.state = "closed";
    } else {
        lease.expires_ms = r.now_ms + r.ttl_ms;
    }
    for b in counters {
        *o.counters.entry(format!("{b}|held")).or_default() -= give;
    }
    if r.close && amount <= 0 {
        return RenewOutcome::Closed;
    }
    let (least, _) = headroom(o, &lease_pairs(&r.scopes, r.created_ms), 0);
    RenewOutcome::Renewed(LeaseStanding {
        amount: Money::from_nanos(amount),
        headroom: least.map(Money::from_nanos),
    })
}

pub(crate) fn settle(o: &mut Org, lease_id: &str, r: &LeasedReport, id: String) -> SettleOutcome {
    let (seq, entry) = (r.seq, &r.entry);
    let Some(lease) = o.leases.get_mut(lease_id) else {
        return SettleOutcome::Unknown;
    };
    let fresh = if r.number > 0 {
        let fresh = r.number > lease.reported;
        lease.reported = lease.reported.max(r.number);
        fresh
    } else {
        o.reported.insert(entry.request_id.clone())
    };
    if !fresh {
        return SettleOutcome::Duplicate("reported".into());
    }
    let (actual, maxc) = (entry.cost.nanos().max(0), entry.max_cost.nanos().max(0));
    let held = lease.state == "held";
    if held {
        lease.amount -= maxc;
        if seq as i64 + maxc <= lease.admitted {
            lease.counted += maxc;
        } else {
            lease.early.push((seq as i64 + maxc, maxc));
        }
    }
    for b in lease.counters.clone() {
        if held {
            *o.counters.entry(format!("{b}|held")).or_default() -= maxc;
        }
        *o.counters.entry(format!("{b}|spent")).or_default() += actual;
    }
    let day = day_of(if entry.finished_ms > 0 {
        entry.finished_ms
    } else {
        switchyard_core::clock::now_ms()
    });
    record(o, id.clone(), entry, &day);
    SettleOutcome::Done(Some(id))
}

pub(crate) fn expire(
    o: &mut Org,
    org: &str,
    lease_id: &str,
    now_ms: u64,
    id: String,
) -> Option<Money> {
    let lease = o
        .leases
        .get_mut(lease_id)
        .filter(|l| l.state == "held" && l.expires_ms <= now_ms)?;
    lease.migrate();
    let amount = lease.amount;
    let charge = unreported(amount, lease.admitted, lease.released, lease.counted);
    lease.state = "expired";
    lease.amount = 0;
    for b in lease.counters.clone() {
        *o.counters.entry(format!("{b}|held")).or_default() -= amount;
        *o.counters.entry(format!("{b}|spent")).or_default() += charge;
    }
    if charge > 0 {
        record(
            o,
            id,
            &expiry_entry(org, lease_id, charge, now_ms),
            &day_of(now_ms),
        );
    }
    Some(Money::from_nanos(charge))
}
