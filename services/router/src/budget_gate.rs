//! The budget gate, between admission and the attempt engine: holds a request's maximum cost for
//! its org, key and workflow scopes in the budget store, refuses it (402, with the scope, period
//! and figures) when a scope would go over its limit, and, while the store is down or slow, lets
//! an org that fails open through within its allowance on this router. A request that ends with
//! nothing served has its hold released here; anything served is settled by billing from the
//! usage report. The same atomic step checks and counts the client limits of the request's
//! scopes (requests and tokens per minute, requests in flight), so one round trip carries both,
//! and a request over a limit is refused with a 429 and Retry-After. Far from their limits,
//! requests are admitted with no round trip instead: against this router's budget lease
//! ([`crate::budget_lease`]) and slices of their per-minute limits ([`crate::rate_lease`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_core::clock::now_ms;
use switchyard_core::{Error, ErrorClass, Money};
use switchyard_policy_model::config::FailMode;
use switchyard_state::{
    BudgetStore, HoldOutcome, HoldRequest, LimitCheck, LimitKind, Scope, StateError,
};

use crate::admission::Admitted;
use crate::budget_lease::{LeaseBook, NoLease};
use crate::policy_view::PolicyView;
use crate::rate_lease::RateBook;

/// The gate.
pub struct BudgetGate {
    budgets: Arc<dyn BudgetStore>,
    /// Budget leases, when on: requests are admitted against them, and against rate slices of
    /// their client limits.
    leases: Option<(Arc<LeaseBook>, Arc<RateBook>)>,
    /// How long a hold may take before the budget store counts as down.
    hold_timeout: Duration,
    /// Unsettled holds expire this long after their request's deadline.
    hold_grace: Duration,
    /// Per org: the maximum cost admitted without a hold since the budget store last answered.
    fail_open_spent: Mutex<HashMap<String, Money>>,
}

impl std::fmt::Debug for BudgetGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetGate")
            .field("hold_timeout", &self.hold_timeout)
            .field("hold_grace", &self.hold_grace)
            .finish_non_exhaustive()
    }
}

/// The client limits of the request's scopes (org, key, workflow) in the policy in force.
fn limit_checks(policy: &PolicyView, a: &Admitted) -> Vec<LimitCheck> {
    policy
        .compiled
        .limits_for(
            a.key.org.as_str(),
            a.key.id.as_str(),
            a.workflow.id.as_str(),
        )
        .map(|l| LimitCheck {
            scope: match (&l.key, &l.workflow) {
                (Some(k), _) => Scope::key(k),
                (None, Some(w)) => Scope::workflow(w),
                (None, None) => Scope::org(),
            },
            rpm: l.set.rpm,
            tpm: l.set.tpm,
            concurrent: l.set.concurrent,
        })
        .collect()
}

/// The refusal of a request over a client limit: a 429 (gRPC RESOURCE_EXHAUSTED) with
/// Retry-After and what was exceeded, told from an upstream's by its code `limit_exceeded` and
/// `reason: client_limit`.
fn limited(
    scope: &Scope,
    kind: LimitKind,
    limit: u64,
    used: u64,
    reset_ms: u64,
    tokens: u64,
) -> Error {
    let now = now_ms();
    let wait = if reset_ms > now {
        Duration::from_millis(reset_ms - now)
    } else {
        // Requests in flight: one is likely to end soon.
        Duration::from_secs(1)
    };
    let message = match kind {
        LimitKind::Tokens if tokens > limit => format!(
            "this request reserves {tokens} tokens (its prompt and maximum output), more than the {} limit of {} ({limit})",
            kind.as_str(),
            scope.as_str()
        ),
        _ => format!(
            "the {} limit of {} ({limit}) is reached",
            kind.as_str(),
            scope.as_str()
        ),
    };
    metrics::counter!("switchyard_client_limited_total", "limit" => kind.as_str()).increment(1);
    let mut e = Error::new(ErrorClass::LimitExceeded, message)
        .with_retry_after(Duration::from_secs(
            wait.as_secs_f64().ceil().max(1.0) as u64
        ))
        .with_metadata("reason", "client_limit".into())
        .with_metadata("scope", scope.as_str().into())
        .with_metadata("limit", kind.as_str().into())
        .with_metadata("limit_value", limit.into())
        .with_metadata("used", used.into());
    if reset_ms > 0 {
        e = e.with_metadata("reset_unix_ms", reset_ms.into());
    }
    e
}

/// How long a budget hold may take by default before it counts as failed.
pub const HOLD_TIMEOUT: Duration = Duration::from_millis(500);

impl BudgetGate {
    /// A gate on `budgets`; a hold without an answer within `hold_timeout` counts as failed.
    pub fn new(
        budgets: Arc<dyn BudgetStore>,
        hold_grace: Duration,
        hold_timeout: Duration,
    ) -> Self {
        BudgetGate {
            budgets,
            leases: None,
            hold_timeout,
            hold_grace,
            fail_open_spent: Mutex::new(HashMap::new()),
        }
    }

    /// Admits requests against budget leases from `book`, and rate slices on the same store,
    /// where they can be.
    pub fn with_leases(mut self, book: Arc<LeaseBook>) -> Self {
        let rates = book.rates().clone();
        self.leases = Some((book, rates));
        self
    }

    /// Reserves the request's maximum cost, and counts it against its client limits: under this
    /// router's lease of its scopes and slices of their per-minute limits while they are far
    /// from their limits, else with a hold of its own. Sets `a.lease` (and `a.rate`) or
    /// `a.held` (`false` when the budget store is down or slow and the org fails open within
    /// its allowance on this router).
    pub async fn reserve(&self, policy: &PolicyView, a: &mut Admitted) -> Result<(), Error> {
        let limits = limit_checks(policy, a);
        if let Some((book, rates)) = &self.leases {
            let org = a.key.org.as_str();
            let rate = if limits.is_empty() {
                Ok(None)
            } else {
                rates
                    .admit(org, &limits, a.token_reservation)
                    .await
                    .map(Some)
            };
            let lease = match rate {
                Ok(rate) => match book
                    .admit(org, a.key.id.as_str(), a.workflow.id.as_str(), a.max_cost)
                    .await
                {
                    Ok(ticket) => Ok((ticket, rate)),
                    Err(why) => Err((why, rate)),
                },
                Err(why) => Err((why, None)),
            };
            match lease {
                Ok((ticket, rate)) => {
                    metrics::counter!("switchyard_budget_reservations_total", "by" => "lease")
                        .increment(1);
                    a.lease = Some(ticket);
                    a.rate = rate;
                    a.held = true;
                    return Ok(());
                }
                Err((why, rate)) => {
                    if let Some(r) = rate {
                        r.undo();
                    }
                    let by = match why {
                        NoLease::NearLimit => "hold_near_limit",
                        NoLease::Unavailable => "hold",
                    };
                    metrics::counter!("switchyard_budget_reservations_total", "by" => by)
                        .increment(1);
                }
            }
        }
        a.held = self.hold(policy, a, limits).await?;
        Ok(())
    }

    /// Holds the request's maximum cost; `Ok(false)` when the budget store is down or slow and
    /// the org fails open within its allowance on this router.
    async fn hold(
        &self,
        policy: &PolicyView,
        a: &Admitted,
        limits: Vec<LimitCheck>,
    ) -> Result<bool, Error> {
        let org = a.key.org.to_string();
        let req = HoldRequest {
            org: org.clone(),
            hold_id: a.id.clone(),
            amount: a.max_cost,
            scopes: vec![
                Scope::org(),
                Scope::key(a.key.id.as_str()),
                Scope::workflow(a.workflow.id.as_str()),
            ],
            now_ms: now_ms(),
            // The request's deadline plus time to deliver its usage report; after that the
            // reconciler settles the hold at its amount (a router that died mid-request).
            ttl_ms: a.workflow.timeouts.total_ms + self.hold_grace.as_millis() as u64,
            tokens: a.token_reservation,
            limits,
        };
        let outcome = match tokio::time::timeout(self.hold_timeout, self.budgets.hold(&req)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StateError::Unavailable(format!(
                "no answer within {:?}",
                self.hold_timeout
            ))),
        };
        if outcome.is_ok() {
            self.spent().remove(&org);
        }
        match outcome {
            Ok(HoldOutcome::Held) | Ok(HoldOutcome::Duplicate(_)) => Ok(true),
            Ok(HoldOutcome::Denied {
                scope,
                period,
                limit,
                spent,
                held,
            }) => Err(Error::new(
                ErrorClass::BudgetExceeded,
                format!(
                    "the {} budget of {} would be exceeded",
                    period.as_str(),
                    scope.as_str()
                ),
            )
            .with_metadata("scope", scope.as_str().into())
            .with_metadata("period", period.as_str().into())
            .with_metadata("limit_usd", limit.to_string().into())
            .with_metadata("spent_usd", spent.to_string().into())
            .with_metadata("held_usd", held.to_string().into())),
            Ok(HoldOutcome::Limited {
                scope,
                kind,
                limit,
                used,
                reset_ms,
            }) => Err(limited(
                &scope,
                kind,
                limit,
                used,
                reset_ms,
                a.token_reservation,
            )),
            Err(e) => self.fail_open(policy, org, a.max_cost, &e),
        }
    }

    /// The budget store did not answer: admit within the org's fail-open allowance, or refuse.
    fn fail_open(
        &self,
        policy: &PolicyView,
        org: String,
        amount: Money,
        error: &StateError,
    ) -> Result<bool, Error> {
        let allowance = policy
            .compiled
            .org(&org)
            .filter(|o| o.fail_mode == FailMode::FailOpen)
            .map(|o| o.fail_open_allowance);
        tracing::warn!(org, error = %error, fail_open = allowance.is_some(), "budget store unreachable");
        metrics::counter!("switchyard_budget_store_errors_total").increment(1);
        let Some(allowance) = allowance else {
            return Err(Error::new(
                ErrorClass::BudgetExceeded,
                "budgets cannot be checked right now and this org fails closed",
            )
            .with_metadata("reason", "budget_store_unavailable".into()));
        };
        let mut spent = self.spent();
        let spent = spent.entry(org).or_insert(Money::ZERO);
        let next = spent.saturating_add(amount);
        if next > allowance {
            return Err(Error::new(
                ErrorClass::BudgetExceeded,
                format!(
                    "budgets cannot be checked right now and this org's fail-open allowance of {allowance} USD is used up on this router"
                ),
            )
            .with_metadata("reason", "fail_open_allowance_used".into()));
        }
        *spent = next;
        metrics::counter!("switchyard_budget_fail_open_total").increment(1);
        Ok(false)
    }

    fn spent(&self) -> std::sync::MutexGuard<'_, HashMap<String, Money>> {
        self.fail_open_spent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Releases the hold of a request that ended with nothing served (under a lease, its share
    /// is free again at once).
    pub async fn release(&self, a: &Admitted) {
        if let Some(rate) = &a.rate {
            rate.finish(0);
        }
        if let Some(ticket) = &a.lease {
            ticket.release();
            return;
        }
        if a.held
            && let Err(e) = self.budgets.release(a.key.org.as_str(), &a.id).await
        {
            // The hold expires and the reconciler settles it; logged, not lost.
            tracing::warn!(error = %e, "budget hold not released; it will expire");
        }
    }
}
