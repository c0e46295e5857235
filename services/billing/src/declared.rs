//! Budgets declared in the policy (the policy file's and `ctl budgets set`'s) applied to the
//! budget store: whenever the published snapshot's version changes, every declared budget is
//! set (a definition only: the period's spend is kept) and every budget this process applied
//! that is no longer declared is removed. Budgets set through `Billing.SetBudget` directly are
//! left alone. Every billing replica does the same idempotent writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_policy_model::budgets::{BudgetPeriod, DeclaredBudget};
use switchyard_policy_model::snapshot::CompiledPolicy;
use switchyard_state::{BudgetDef, BudgetStore, Period, PolicyStore, Scope, StateError};
use tokio_util::sync::CancellationToken;

fn period(p: BudgetPeriod) -> Period {
    match p {
        BudgetPeriod::Day => Period::Day,
        BudgetPeriod::Month => Period::Month,
        BudgetPeriod::Total => Period::Total,
    }
}

fn scope(b: &DeclaredBudget) -> Scope {
    match (&b.key, &b.workflow) {
        (Some(k), _) => Scope::key(k),
        (None, Some(w)) => Scope::workflow(w),
        (None, None) => Scope::org(),
    }
}

/// What this process applied, by budget id.
type Applied = HashMap<String, (String, Scope, Period)>;

async fn apply(
    store: &dyn BudgetStore,
    budgets: &[DeclaredBudget],
    applied: &mut Applied,
) -> Result<(), StateError> {
    let mut now: Applied = HashMap::new();
    for b in budgets {
        let (org, scope, period) = (b.org.to_string(), scope(b), period(b.period));
        let def = BudgetDef {
            limit: b.limit,
            hard: b.hard,
            thresholds: b.alerts.clone(),
        };
        store.set_budget(&org, &scope, period, &def).await?;
        now.insert(b.id(), (org, scope, period));
    }
    for (id, (org, scope, period)) in applied.iter() {
        if !now.contains_key(id) {
            store.remove_budget(org, scope, *period).await?;
            tracing::info!(budget = %id, "declared budget removed");
        }
    }
    *applied = now;
    Ok(())
}

/// Follows the published policy every `every` until `shutdown`, applying its budgets.
pub async fn follow(
    policy: Arc<dyn PolicyStore>,
    store: Arc<dyn BudgetStore>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut version = 0;
    let mut applied = Applied::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snapshot = match policy.current_snapshot().await {
            Ok(Some(s)) if s.version > version => s,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "policy snapshot unreadable; declared budgets unchanged");
                continue;
            }
        };
        let compiled: CompiledPolicy = match serde_json::from_slice(&snapshot.body) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(version = snapshot.version, error = %e, "policy snapshot undecodable");
                version = snapshot.version;
                continue;
            }
        };
        match apply(store.as_ref(), &compiled.budgets, &mut applied).await {
            Ok(()) => {
                version = snapshot.version;
                metrics::gauge!("switchyard_billing_declared_budgets")
                    .set(compiled.budgets.len() as f64);
                tracing::info!(
                    version,
                    budgets = compiled.budgets.len(),
                    "declared budgets applied"
                );
            }
            Err(e) => tracing::warn!(error = %e, "declared budgets not applied yet; will retry"),
        }
    }
}
