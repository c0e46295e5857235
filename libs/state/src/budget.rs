//! Budgets: limits per scope (org, API key, workflow) and period (UTC day, month, total), spend and
//! holds as integer nano-USD counters, and the operations that must be atomic across any number of
//! routers: hold (every scope of a request at once, all or nothing), settle (replace a hold by the
//! actual cost and append the ledger), release, and charge (usage without a hold). Each is
//! idempotent by its id, so a retried call never counts twice. Every key of an org carries the
//! `{org:ID}` hash tag, so each script stays in one Redis Cluster slot.
//!
//! Lua numbers are doubles: amounts are exact up to 2^53 nano-USD (about 9 million USD) per
//! counter, far above any per-period budget this is meant for.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use switchyard_core::Money;

use crate::StateError;
use crate::lease::{LeaseGrant, LeaseOutcome, LeaseRenewal, LeasedReport, RenewOutcome};
use crate::rate_slice::{RateAsk, RateGrant};

/// A budget period, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// A calendar day.
    Day,
    /// A calendar month.
    Month,
    /// Since the budget was set.
    Total,
}

impl Period {
    /// Every period.
    pub const ALL: [Period; 3] = [Period::Day, Period::Month, Period::Total];

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
            Period::Total => "total",
        }
    }

    /// The key of the period containing `now_ms`: `d:2026-11-25`, `m:2026-11`, `t`.
    pub fn key(self, now_ms: u64) -> String {
        let (y, m, d) = civil_from_days((now_ms / 86_400_000) as i64);
        match self {
            Period::Day => format!("d:{y:04}-{m:02}-{d:02}"),
            Period::Month => format!("m:{y:04}-{m:02}"),
            Period::Total => "t".into(),
        }
    }
}

/// `YYYY-MM-DD` of a Unix-ms time (UTC).
pub fn day_of(now_ms: u64) -> String {
    let (y, m, d) = civil_from_days((now_ms / 86_400_000) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A scope a request is charged to: `org`, `key:<id>` or `wf:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scope(String);

impl Scope {
    /// The org itself.
    pub fn org() -> Self {
        Scope("org".into())
    }
    /// An API key of the org.
    pub fn key(id: &str) -> Self {
        Scope(format!("key:{}", clean(id)))
    }
    /// A workflow of the org.
    pub fn workflow(id: &str) -> Self {
        Scope(format!("wf:{}", clean(id)))
    }
    /// From its text form (`org`, `key:…`, `wf:…`).
    pub fn parse(text: &str) -> Option<Self> {
        (text == "org" || text.starts_with("key:") || text.starts_with("wf:"))
            .then(|| Scope(clean(text)))
    }
    /// Text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Separators of the stored field names cannot appear in ids.
fn clean(id: &str) -> String {
    id.replace(['|', '\n'], "_")
}

/// A budget's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetDef {
    /// The limit.
    pub limit: Money,
    /// Hard: deny over the limit. Soft: alert only.
    pub hard: bool,
    /// Alert thresholds in percent of the limit.
    #[serde(default)]
    pub thresholds: Vec<u32>,
}

/// A budget with where it stands in the current period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetView {
    /// Scope.
    pub scope: Scope,
    /// Period.
    pub period: Period,
    /// Definition.
    pub def: BudgetDef,
    /// The current period's key.
    pub period_key: String,
    /// Settled spend this period.
    pub spent: Money,
    /// Outstanding holds this period.
    pub held: Money,
}

/// A scope's client limits, checked and counted in the same step as the hold: requests and
/// tokens per UTC minute, and requests in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitCheck {
    /// The scope.
    pub scope: Scope,
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Requests in flight.
    pub concurrent: Option<u64>,
}

/// Which client limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// Requests in flight.
    Concurrent,
}

impl LimitKind {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests_per_minute",
            LimitKind::Tokens => "tokens_per_minute",
            LimitKind::Concurrent => "concurrent_requests",
        }
    }

    /// From its wire name.
    pub fn parse(s: &str) -> Option<LimitKind> {
        match s {
            "requests_per_minute" => Some(LimitKind::Requests),
            "tokens_per_minute" => Some(LimitKind::Tokens),
            "concurrent_requests" => Some(LimitKind::Concurrent),
            _ => None,
        }
    }
}

/// The UTC minute of a Unix-ms time, the window of per-minute limits.
pub fn minute_of(now_ms: u64) -> u64 {
    now_ms / 60_000
}

/// A request to reserve budget before a request runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequest {
    /// The org.
    pub org: String,
    /// Unique id (the request id); a repeat returns the first answer.
    pub hold_id: String,
    /// The request's maximum cost.
    pub amount: Money,
    /// Every scope the request is charged to.
    pub scopes: Vec<Scope>,
    /// Now, Unix ms (periods are computed from it).
    pub now_ms: u64,
    /// Unsettled after this long, the reconciler settles it at the held amount.
    pub ttl_ms: u64,
    /// The tokens the request reserves against tokens-per-minute limits (its prompt bound and
    /// maximum output), reconciled to what it used when settled.
    pub tokens: u64,
    /// The client limits of its scopes.
    pub limits: Vec<LimitCheck>,
}

/// The answer to a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Reserved.
    Held,
    /// This id was already held (or settled / released): nothing changed.
    Duplicate(String),
    /// A hard budget would go over its limit.
    Denied {
        /// Which scope.
        scope: Scope,
        /// Which period.
        period: Period,
        /// Its limit.
        limit: Money,
        /// Spent so far.
        spent: Money,
        /// Held so far.
        held: Money,
    },
    /// A client limit would be exceeded.
    Limited {
        /// Which scope.
        scope: Scope,
        /// Which limit.
        kind: LimitKind,
        /// Its value.
        limit: u64,
        /// Used in the current window (requests, tokens, or requests in flight).
        used: u64,
        /// When the window ends, Unix ms (per-minute limits; 0 for concurrency).
        reset_ms: u64,
    },
}

/// One settled request, as the ledger keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Request id.
    pub request_id: String,
    /// Org.
    pub org: String,
    /// API key id.
    #[serde(default)]
    pub api_key: String,
    /// Workflow.
    #[serde(default)]
    pub workflow: String,
    /// Served model.
    #[serde(default)]
    pub model: String,
    /// Served provider.
    #[serde(default)]
    pub provider: String,
    /// Served endpoint.
    #[serde(default)]
    pub endpoint: String,
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Completion tokens.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Cached prompt tokens.
    #[serde(default)]
    pub cached_prompt_tokens: u64,
    /// Cost charged.
    pub cost: Money,
    /// The hold it settled, if any.
    #[serde(default)]
    pub hold_id: String,
    /// Settled by the reconciler at the held amount (the router never reported).
    #[serde(default)]
    pub unreconciled: bool,
    /// When the request finished, Unix ms.
    #[serde(default)]
    pub finished_ms: u64,
    /// Attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// `ok` or the final error class.
    #[serde(default)]
    pub outcome: String,
    /// The reply cost more than its hold (charged as reported all the same).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub over_hold: bool,
    /// The hold's amount: what the router reserved as the request's maximum cost (zero when
    /// unknown: the reconciler's entries, records from before it was reported).
    #[serde(default)]
    pub max_cost: Money,
}

impl LedgerEntry {
    /// The values of the usage dimensions besides the day (model, provider, key, workflow), as
    /// the aggregates' field names carry them.
    pub(crate) fn usage_dims(&self) -> [String; 4] {
        [
            clean(&self.model),
            clean(&self.provider),
            clean(&self.api_key),
            clean(&self.workflow),
        ]
    }

    /// Usage aggregate increments: cost, requests and tokens by day, model, provider, key and
    /// workflow, as `(field, amount)`.
    pub fn usage_fields(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for (dim, value) in [
            ("day", ""),
            ("model", self.model.as_str()),
            ("provider", self.provider.as_str()),
            ("key", self.api_key.as_str()),
            ("workflow", self.workflow.as_str()),
        ] {
            let v = clean(value);
            out.push((format!("cost|{dim}|{v}"), self.cost.nanos()));
            out.push((format!("req|{dim}|{v}"), 1));
            out.push((format!("in|{dim}|{v}"), self.prompt_tokens as i64));
            out.push((format!("out|{dim}|{v}"), self.completion_tokens as i64));
        }
        out
    }
}

/// The answer to a settle or release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOutcome {
    /// Done now; for a settle, the ledger id.
    Done(Option<String>),
    /// Already settled or released: nothing changed.
    Duplicate(String),
    /// No such hold (never taken, or long gone).
    Unknown,
}

/// Usage aggregates of one day: field (`cost|model|gpt-4o`) → amount.
pub type DayUsage = BTreeMap<String, i64>;

/// Where budgets live.
#[async_trait]
pub trait BudgetStore: Send + Sync + 'static {
    /// Defines (or replaces) a budget.
    async fn set_budget(
        &self,
        org: &str,
        scope: &Scope,
        period: Period,
        def: &BudgetDef,
    ) -> Result<(), StateError>;
    /// Removes a budget's definition (its spend stays counted, for a budget set again);
    /// `false` when there was none.
    async fn remove_budget(
        &self,
        org: &str,
        scope: &Scope,
        period: Period,
    ) -> Result<bool, StateError>;
    /// Every budget of an org, with its current period's standing.
    async fn budgets(&self, org: &str, now_ms: u64) -> Result<Vec<BudgetView>, StateError>;
    /// Reserves `amount` in every scope and period at once, or nothing.
    async fn hold(&self, req: &HoldRequest) -> Result<HoldOutcome, StateError>;
    /// Replaces a hold by the actual cost and appends `entry` to the ledger.
    async fn settle(
        &self,
        org: &str,
        hold_id: &str,
        entry: &LedgerEntry,
    ) -> Result<SettleOutcome, StateError>;
    /// Drops a hold without charging.
    async fn release(&self, org: &str, hold_id: &str) -> Result<SettleOutcome, StateError>;
    /// Charges usage that had no hold; idempotent by `entry.request_id`.
    async fn charge(
        &self,
        org: &str,
        scopes: &[Scope],
        now_ms: u64,
        entry: &LedgerEntry,
    ) -> Result<SettleOutcome, StateError>;
    /// Holds past their expiry: (org, hold id, held amount).
    async fn expired_holds(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(String, String, Money)>, StateError>;
    /// Ledger entries of an org after `after` (exclusive; empty for the start): (id, entry).
    async fn ledger(
        &self,
        org: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, LedgerEntry)>, StateError>;
    /// Usage aggregates of an org for each of `days` (`YYYY-MM-DD`).
    async fn usage(
        &self,
        org: &str,
        days: &[String],
    ) -> Result<Vec<(String, DayUsage)>, StateError>;
    /// Reserves a slice of budget for a lease (creating it, or adding to it), all or nothing.
    async fn grant_lease(&self, grant: &LeaseGrant) -> Result<LeaseOutcome, StateError>;
    /// Renews a lease, records what its router admitted and released, and takes back what it
    /// gives back.
    async fn renew_lease(&self, renewal: &LeaseRenewal) -> Result<RenewOutcome, StateError>;
    /// Settles a request served under a lease: its maximum cost (`entry.max_cost`) leaves the
    /// lease, its cost is spent, and `entry` is appended to the ledger; idempotent by its number
    /// (or, unnumbered, by `entry.request_id`). `Unknown` when the store never knew the lease.
    async fn settle_leased(
        &self,
        org: &str,
        lease_id: &str,
        report: &LeasedReport,
    ) -> Result<SettleOutcome, StateError> {
        let mut out = self
            .settle_leased_batch(org, lease_id, std::slice::from_ref(report))
            .await?;
        Ok(out.pop().unwrap_or(SettleOutcome::Unknown))
    }
    /// Settles requests served under one lease as [`BudgetStore::settle_leased`] does each, in
    /// one step: one outcome each, in order. Numbered reports come in increasing order of their
    /// numbers (a lower one after a higher one would count as a duplicate).
    async fn settle_leased_batch(
        &self,
        org: &str,
        lease_id: &str,
        reports: &[LeasedReport],
    ) -> Result<Vec<SettleOutcome>, StateError>;
    /// Reserves a rate slice in each scope of `asks` for the UTC minute of `now_ms` (see
    /// [`crate::rate_slice`]): each all or nothing, one answer each in order.
    async fn grant_rate(
        &self,
        org: &str,
        now_ms: u64,
        asks: &[RateAsk],
    ) -> Result<Vec<RateGrant>, StateError>;
    /// Gives back what slices of `returns` (their scopes, requests and tokens) were not used,
    /// while the UTC minute of `now_ms` lasts (the next one starts from zero anyway).
    async fn return_rate(
        &self,
        org: &str,
        now_ms: u64,
        returns: &[RateAsk],
    ) -> Result<(), StateError>;
    /// Leases past their expiry: (org, lease id).
    async fn expired_leases(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StateError>;
    /// Ends an expired lease: charges what its router admitted by the last renewal and never
    /// settled (at those requests' maximum cost, one unreconciled ledger entry) and gives the rest
    /// back. `Some(charged)` when it ended now; `None` when it was renewed or changed meanwhile,
    /// or had already ended.
    async fn expire_lease(
        &self,
        org: &str,
        lease_id: &str,
        now_ms: u64,
    ) -> Result<Option<Money>, StateError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_keys_are_utc_calendar_periods() {
        // 2026-11-24T23:59:59.999Z and one millisecond later.
        let before = 1_795_564_799_999u64;
        assert_eq!(Period::Day.key(before), "d:2026-11-24");
        assert_eq!(Period::Day.key(before + 1), "d:2026-11-25");
        assert_eq!(Period::Month.key(before), "m:2026-11");
        assert_eq!(Period::Total.key(before), "t");
        assert_eq!(day_of(0), "1970-01-01");
        // 2024-02-29 (leap day) and 2000-03-01.
        assert_eq!(day_of(1_709_164_800_000), "2024-02-29");
        assert_eq!(day_of(951_868_800_000), "2000-03-01");
        // Month rollover.
        assert_eq!(Period::Month.key(1_796_083_200_000), "m:2026-12");
    }

    #[test]
    fn scopes_cannot_smuggle_separators() {
        assert_eq!(Scope::key("a|b\nc").as_str(), "key:a_b_c");
        assert_eq!(Scope::parse("wf:x"), Some(Scope::workflow("x")));
        assert_eq!(Scope::parse("nope"), None);
    }
}
