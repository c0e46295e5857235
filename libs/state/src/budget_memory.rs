//! In-memory budgets for `switchyard up` and tests: the same operations, atomic under one lock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use switchyard_core::Money;

use crate::StateError;
use crate::budget::{
    BudgetDef, BudgetStore, BudgetView, DayUsage, HoldOutcome, HoldRequest, LedgerEntry, Period,
    Scope, SettleOutcome, day_of,
};
use crate::lease::{LeaseGrant, LeaseOutcome, LeaseRenewal, LeasedReport, RenewOutcome};
use crate::rate_slice::{RateAsk, RateGrant};

struct Hold {
    amount: i64,
    counters: Vec<String>,
    expires_ms: u64,
    state: &'static str,
    /// Reserved tokens, the minute they count in, and the scopes counted there.
    tokens: i64,
    minute: u64,
    rate_scopes: Vec<String>,
    /// Scopes whose requests in flight it counts in.
    concurrent_scopes: Vec<String>,
}

#[derive(Default)]
pub(crate) struct Org {
    pub(crate) defs: BTreeMap<(Scope, Period), BudgetDef>,
    pub(crate) counters: HashMap<String, i64>,
    holds: HashMap<String, Hold>,
    pub(crate) reported: HashSet<String>,
    pub(crate) ledger: Vec<(String, LedgerEntry)>,
    pub(crate) usage: HashMap<String, DayUsage>,
    /// (minute, scope) → (requests, tokens).
    pub(crate) rate: HashMap<(u64, String), (u64, i64)>,
    /// scope → requests in flight.
    in_flight: HashMap<String, u64>,
    /// Budget leases by id.
    pub(crate) leases: HashMap<String, crate::lease_memory::MemLease>,
}

/// The in-memory [`BudgetStore`].
#[derive(Default)]
pub struct MemoryBudgetStore {
    orgs: Mutex<HashMap<String, Org>>,
    seq: Mutex<u64>,
}

impl std::fmt::Debug for MemoryBudgetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryBudgetStore")
    }
}

impl MemoryBudgetStore {
    pub(crate) fn with<T>(&self, org: &str, f: impl FnOnce(&mut Org) -> T) -> T {
        let mut orgs = self.orgs.lock().unwrap_or_else(|e| e.into_inner());
        f(orgs.entry(org.to_string()).or_default())
    }

    pub(crate) fn next_id(&self) -> String {
        let mut seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        *seq += 1;
        format!("{}-0", *seq)
    }
}

pub(crate) fn record(o: &mut Org, id: String, entry: &LedgerEntry, day: &str) {
    let usage = o.usage.entry(day.to_string()).or_default();
    for (f, v) in entry.usage_fields() {
        *usage.entry(f).or_default() += v;
    }
    o.ledger.push((id, entry.clone()));
}

/// A hold ends: its requests in flight end, and its reserved tokens become the `used` ones
/// (while their minute is still counted).
fn finish_limits(o: &mut Org, hold_id: &str, used: i64) {
    let Some(h) = o.holds.get(hold_id) else {
        return;
    };
    let (minute, delta) = (h.minute, used - h.tokens);
    let (rate, flying) = (h.rate_scopes.clone(), h.concurrent_scopes.clone());
    for s in rate {
        if let Some(e) = o.rate.get_mut(&(minute, s)) {
            e.1 += delta;
        }
    }
    for s in flying {
        if let Some(n) = o.in_flight.get_mut(&s) {
            *n = n.saturating_sub(1);
        }
    }
}

#[async_trait]
impl BudgetStore for MemoryBudgetStore {
    async fn set_budget(
        &self,
        org: &str,
        scope: &Scope,
        period: Period,
        def: &BudgetDef,
    ) -> Result<(), StateError> {
        self.with(org, |o| o.defs.insert((scope.clone(), period), def.clone()));
        Ok(())
    }

    async fn remove_budget(
        &self,
        org: &str,
        scope: &Scope,
        period: Period,
    ) -> Result<bool, StateError> {
        Ok(self.with(org, |o| o.defs.remove(&(scope.clone(), period)).is_some()))
    }

    async fn budgets(&self, org: &str, now_ms: u64) -> Result<Vec<BudgetView>, StateError> {
        Ok(self.with(org, |o| {
            o.defs
                .iter()
                .map(|((scope, period), def)| {
                    let pk = period.key(now_ms);
                    let base = format!("{}|{pk}", scope.as_str());
                    let get = |f: &str| {
                        Money::from_nanos(
                            o.counters.get(&format!("{base}|{f}")).copied().unwrap_or(0),
                        )
                    };
                    BudgetView {
                        scope: scope.clone(),
                        period: *period,
                        def: def.clone(),
                        period_key: pk,
                        spent: get("spent"),
                        held: get("held"),
                    }
                })
                .collect()
        }))
    }

    async fn hold(&self, req: &HoldRequest) -> Result<HoldOutcome, StateError> {
        Ok(self.with(&req.org, |o| {
            if let Some(h) = o.holds.get(&req.hold_id) {
                return HoldOutcome::Duplicate(h.state.to_string());
            }
            let amount = req.amount.nanos();
            let mut bases = Vec::new();
            for scope in &req.scopes {
                for period in Period::ALL {
                    let base = format!("{}|{}", scope.as_str(), period.key(req.now_ms));
                    if let Some(def) = o.defs.get(&(scope.clone(), period))
                        && def.hard
                    {
                        let spent = o
                            .counters
                            .get(&format!("{base}|spent"))
                            .copied()
                            .unwrap_or(0);
                        let held = o
                            .counters
                            .get(&format!("{base}|held"))
                            .copied()
                            .unwrap_or(0);
                        if spent + held + amount > def.limit.nanos() {
                            return HoldOutcome::Denied {
                                scope: scope.clone(),
                                period,
                                limit: def.limit,
                                spent: Money::from_nanos(spent),
                                held: Money::from_nanos(held),
                            };
                        }
                    }
                    bases.push(base);
                }
            }
            let minute = crate::budget::minute_of(req.now_ms);
            o.rate.retain(|(m, _), _| *m + 1 >= minute);
            let tokens = req.tokens as i64;
            for l in &req.limits {
                let s = l.scope.as_str().to_string();
                let (reqs, toks) = o.rate.get(&(minute, s.clone())).copied().unwrap_or((0, 0));
                let reset_ms = (minute + 1) * 60_000;
                let refuse = |kind, limit, used| HoldOutcome::Limited {
                    scope: l.scope.clone(),
                    kind,
                    limit,
                    used,
                    reset_ms,
                };
                if let Some(rpm) = l.rpm
                    && reqs + 1 > rpm
                {
                    return refuse(crate::budget::LimitKind::Requests, rpm, reqs);
                }
                if let Some(tpm) = l.tpm
                    && toks.max(0) as u64 + req.tokens > tpm
                {
                    return refuse(crate::budget::LimitKind::Tokens, tpm, toks.max(0) as u64);
                }
                let flying = o.in_flight.get(&s).copied().unwrap_or(0);
                if let Some(c) = l.concurrent
                    && flying + 1 > c
                {
                    return HoldOutcome::Limited {
                        scope: l.scope.clone(),
                        kind: crate::budget::LimitKind::Concurrent,
                        limit: c,
                        used: flying,
                        reset_ms: 0,
                    };
                }
            }
            for b in &bases {
                *o.counters.entry(format!("{b}|held")).or_default() += amount;
            }
            let (mut rate_scopes, mut concurrent_scopes) = (Vec::new(), Vec::new());
            for l in &req.limits {
                let s = l.scope.as_str().to_string();
                if l.rpm.is_some() || l.tpm.is_some() {
                    let e = o.rate.entry((minute, s.clone())).or_default();
                    e.0 += 1;
                    e.1 += tokens;
                    rate_scopes.push(s.clone());
                }
                if l.concurrent.is_some() {
                    *o.in_flight.entry(s.clone()).or_default() += 1;
                    concurrent_scopes.push(s);
                }
            }
            o.holds.insert(
                req.hold_id.clone(),
                Hold {
                    amount,
                    counters: bases,
                    expires_ms: req.now_ms + req.ttl_ms,
                    state: "held",
                    tokens,
                    minute,
                    rate_scopes,
                    concurrent_scopes,
                },
            );
            HoldOutcome::Held
        }))
    }

    async fn settle(
        &self,
        org: &str,
        hold_id: &str,
        entry: &LedgerEntry,
    ) -> Result<SettleOutcome, StateError> {
        let id = self.next_id();
        let day = day_of(if entry.finished_ms > 0 {
            entry.finished_ms
        } else {
            switchyard_core::clock::now_ms()
        });
        Ok(self.with(org, |o| {
            let Some(h) = o.holds.get_mut(hold_id) else {
                return SettleOutcome::Unknown;
            };
            if h.state != "held" {
                return SettleOutcome::Duplicate(h.state.to_string());
            }
            h.state = "settled";
            let used = if entry.unreconciled {
                h.tokens
            } else {
                (entry.prompt_tokens + entry.completion_tokens) as i64
            };
            let (amount, counters) = (h.amount, h.counters.clone());
            finish_limits(o, hold_id, used);
            let actual = entry.cost.nanos().max(0);
            for b in counters {
                *o.counters.entry(format!("{b}|held")).or_default() -= amount;
                *o.counters.entry(format!("{b}|spent")).or_default() += actual;
            }
            record(o, id.clone(), entry, &day);
            SettleOutcome::Done(Some(id))
        }))
    }

    async fn release(&self, org: &str, hold_id: &str) -> Result<SettleOutcome, StateError> {
        Ok(self.with(org, |o| {
            let Some(h) = o.holds.get_mut(hold_id) else {
                return SettleOutcome::Unknown;
            };
            if h.state != "held" {
                return SettleOutcome::Duplicate(h.state.to_string());
            }
            h.state = "released";
            let (amount, counters) = (h.amount, h.counters.clone());
            finish_limits(o, hold_id, 0);
            for b in counters {
                *o.counters.entry(format!("{b}|held")).or_default() -= amount;
            }
            SettleOutcome::Done(None)
        }))
    }

    async fn charge(
        &self,
        org: &str,
        scopes: &[Scope],
        now_ms: u64,
        entry: &LedgerEntry,
    ) -> Result<SettleOutcome, StateError> {
        let id = self.next_id();
        Ok(self.with(org, |o| {
            if !o.reported.insert(entry.request_id.clone()) {
                return SettleOutcome::Duplicate("reported".into());
            }
            for s in scopes {
                for p in Period::ALL {
                    *o.counters
                        .entry(format!("{}|{}|spent", s.as_str(), p.key(now_ms)))
                        .or_default() += entry.cost.nanos().max(0);
                }
            }
            record(o, id.clone(), entry, &day_of(now_ms));
            SettleOutcome::Done(Some(id))
        }))
    }

    async fn expired_holds(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(String, String, Money)>, StateError> {
        let orgs = self.orgs.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, String, Money)> = orgs
            .iter()
            .flat_map(|(org, o)| {
                o.holds
                    .iter()
                    .filter(|(_, h)| h.state == "held" && h.expires_ms <= now_ms)
                    .map(|(id, h)| (org.clone(), id.clone(), Money::from_nanos(h.amount)))
            })
            .collect();
        out.sort();
        out.truncate(limit);
        Ok(out)
    }

    async fn ledger(
        &self,
        org: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, LedgerEntry)>, StateError> {
        Ok(self.with(org, |o| {
            let start = if after.is_empty() {
                0
            } else {
                o.ledger
                    .iter()
                    .position(|(id, _)| id == after)
                    .map_or(o.ledger.len(), |i| i + 1)
            };
            o.ledger.iter().skip(start).take(limit).cloned().collect()
        }))
    }

    async fn usage(
        &self,
        org: &str,
        days: &[String],
    ) -> Result<Vec<(String, DayUsage)>, StateError> {
        Ok(self.with(org, |o| {
            days.iter()
                .filter_map(|d| o.usage.get(d).map(|u| (d.clone(), u.clone())))
                .collect()
        }))
    }

    async fn grant_lease(&self, grant: &LeaseGrant) -> Result<LeaseOutcome, StateError> {
        Ok(self.with(&grant.org, |o| crate::lease_memory::grant(o, grant)))
    }

    async fn renew_lease(&self, renewal: &LeaseRenewal) -> Result<RenewOutcome, StateError> {
        Ok(self.with(&renewal.org, |o| crate::lease_memory::renew(o, renewal)))
    }

    async fn settle_leased_batch(
        &self,
        org: &str,
        lease_id: &str,
        reports: &[LeasedReport],
    ) -> Result<Vec<SettleOutcome>, StateError> {
        let ids: Vec<String> = reports.iter().map(|_| self.next_id()).collect();
        Ok(self.with(org, |o| {
            reports
                .iter()
                .zip(ids)
                .map(|(r, id)| crate::lease_memory::settle(o, lease_id, r, id))
                .collect()
        }))
    }

    async fn grant_rate(
        &self,
        org: &str,
        now_ms: u64,
        asks: &[RateAsk],
    ) -> Result<Vec<RateGrant>, StateError> {
        let minute = crate::budget::minute_of(now_ms);
        Ok(self.with(org, |o| {
            o.rate.retain(|(m, _), _| *m + 1 >= minute);
            asks.iter()
                .map(|a| {
                    let counted = o
                        .rate
                        .entry((minute, a.scope.as_str().to_string()))
                        .or_default();
                    crate::rate_slice::grant(a, counted)
                })
                .collect()
        }))
    }

    async fn return_rate(
        &self,
        org: &str,
        now_ms: u64,
        returns: &[RateAsk],
    ) -> Result<(), StateError> {
        let minute = crate::budget::minute_of(now_ms);
        self.with(org, |o| {
            for r in returns {
                if let Some(c) = o.rate.get_mut(&(minute, r.scope.as_str().to_string())) {
                    c.0 = c.0.saturating_sub(r.requests);
                    c.1 -= r.tokens as i64;
                }
            }
        });
        Ok(())
    }

    async fn expired_leases(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StateError> {
        let orgs = self.orgs.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, String)> = orgs
            .iter()
            .flat_map(|(org, o)| {
                o.leases
                    .iter()
                    .filter(|(_, l)| l.state == "held" && l.expires_ms <= now_ms)
                    .map(|(id, _)| (org.clone(), id.clone()))
            })
            .collect();
        out.sort();
        out.truncate(limit);
        Ok(out)
    }

    async fn expire_lease(
        &self,
        org: &str,
        lease_id: &str,
        now_ms: u64,
    ) -> Result<Option<Money>, StateError> {
        let id = self.next_id();
        Ok(self.with(org, |o| {
            crate::lease_memory::expire(o, org, lease_id, now_ms, id)
        }))
    }
}
