//! Budget leases: a router reserves a slice of its scopes' remaining budget in one step and admits
//! requests against it locally, with no round trip per request. A lease is held like a hold (the
//! slice counts as `held` in every scope and period of it, so the budget check of every other
//! router sees it), renewed in the background with what the router admitted and released since,
//! and shrunk or closed by giving unused budget back. A request served under a lease is settled
//! against it: its maximum cost leaves the lease's `held`, its actual cost becomes `spent`.
//!
//! A lease that is not renewed (its router died or lost the store) expires: the reconciler
//! charges what the router had admitted by its last renewal and not yet settled, at those
//! requests' maximum cost (marked unreconciled, as an expired hold is), and gives the rest back.
//! Requests a router admitted after its last renewal and never reported are the one thing a
//! dead router can leave uncharged; renewals follow admissions within
//! [`RENEW_AFTER_ADMISSION_MS`], which bounds them to that long of one router's admissions.

use switchyard_core::Money;

use crate::budget::{LedgerEntry, Period, Scope};

/// Every lease id starts with this, so a usage report or a reconciler tells leases from holds.
pub const LEASE_PREFIX: &str = "lease:";

/// How soon after an admission a router renews its lease with it.
pub const RENEW_AFTER_ADMISSION_MS: u64 = 50;

/// Whether an id (a usage report's `hold_id`) names a lease.
pub fn is_lease(id: &str) -> bool {
    id.starts_with(LEASE_PREFIX)
}

/// A slice of budget to reserve (a new lease, or more for an existing one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The org.
    pub org: String,
    /// The lease (starts with [`LEASE_PREFIX`]).
    pub lease_id: String,
    /// Every scope the lease's requests are charged to.
    pub scopes: Vec<Scope>,
    /// How much more to reserve.
    pub amount: Money,
    /// When the lease was created, Unix ms: its periods (the day, the month) are those of this
    /// time for as long as it lives.
    pub created_ms: u64,
    /// Now, Unix ms.
    pub now_ms: u64,
    /// Unrenewed for this long, the lease expires.
    pub ttl_ms: u64,
    /// This grant's number on its lease, counting from 1. A grant whose answer was lost is sent
    /// again with the same number; the store applies each number once and answers a repeat
    /// with the lease as it stands.
    pub number: u64,
}

/// The answer to a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// Reserved.
    Granted(LeaseStanding),
    /// A hard budget would go over its limit with this much more reserved: nothing changed.
    Denied {
        /// Which scope.
        scope: Scope,
        /// Which period.
        period: Period,
        /// What is left of it (limit − spent − held), which may be below one request's cost.
        headroom: Money,
    },
    /// The lease exists no more (expired, or closed): start another.
    Gone,
}

/// A lease as the store has it after a grant or a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseStanding {
    /// What the lease reserves now: unused budget plus requests admitted and not yet settled.
    pub amount: Money,
    /// The least budget left in any hard budget of its scopes (limit − spent − held), or `None`
    /// when none of them has a hard budget.
    pub headroom: Option<Money>,
}

/// A renewal: the lease's new expiry, what the router admitted and released so far, and what it
/// gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRenewal {
    /// The org.
    pub org: String,
    /// The lease.
    pub lease_id: String,
    /// Its scopes, as granted.
    pub scopes: Vec<Scope>,
    /// When it was created, Unix ms, as granted.
    pub created_ms: u64,
    /// Unused budget given back now.
    pub give_back: Money,
    /// The maximum cost of every request admitted under the lease so far (cumulative).
    pub admitted: Money,
    /// The maximum cost of every admitted request that ended with nothing served (cumulative).
    pub released: Money,
    /// Now, Unix ms.
    pub now_ms: u64,
    /// Unrenewed for this long again, the lease expires.
    pub ttl_ms: u64,
    /// Close the lease once nothing is left reserved by it.
    pub close: bool,
}

/// The answer to a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewOutcome {
    /// Renewed.
    Renewed(LeaseStanding),
    /// Nothing was left reserved after the give-back: the lease is closed.
    Closed,
    /// The lease expired before the renewal (the reconciler settled it): start another.
    Gone,
}

/// The (scope, period, period key) triples a lease with `scopes` created at `created_ms` holds in.
pub fn lease_pairs(scopes: &[Scope], created_ms: u64) -> Vec<(Scope, Period, String)> {
    scopes
        .iter()
        .flat_map(|s| {
            Period::ALL
                .into_iter()
                .map(move |p| (s.clone(), p, p.key(created_ms)))
        })
        .collect()
}

/// A request served under a lease, as billing settles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedReport {
    /// What its router had admitted under the lease before it (the report's `lease_seq`).
    pub seq: u64,
    /// Its router's number for the report (`report_seq`): increasing in the order the router
    /// sends its reports, a batch sent again unchanged. A lease belongs to one router, so a
    /// report numbered at or below the highest its lease has settled is a duplicate. 0: not
    /// numbered; the report is then idempotent by its request id (a marker per request).
    pub number: u64,
    /// Its ledger entry.
    pub entry: LedgerEntry,
}

/// What the reconciler charges for an expired lease: the requests its router had admitted by the
/// last renewal, released nothing for and not yet settled, at their maximum cost; never more than
/// the lease still reserves.
pub fn unreported(amount: i64, admitted: i64, released: i64, counted: i64) -> i64 {
    (admitted - released - counted).clamp(0, amount.max(0))
}
