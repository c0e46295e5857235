//! The reconciler: what routers left behind when they stopped (a hold never settled, a budget
//! lease never renewed) is settled once its TTL has passed, never under-charging.

use std::time::Duration;

use switchyard_core::Money;
use switchyard_core::clock::now_ms;
use switchyard_state::{LedgerEntry, SettleOutcome, StateError};

use crate::service::Billing;

impl Billing {
    /// Settles holds whose TTL passed at their held amount, marked unreconciled. Returns how many.
    pub async fn reconcile(&self, now: u64) -> Result<usize, StateError> {
        let expired = self.store.expired_holds(now, 500).await?;
        let mut n = 0;
        for (org, hold_id, amount) in expired {
            let entry = LedgerEntry {
                request_id: format!("unreconciled:{hold_id}"),
                org: org.clone(),
                cost: amount,
                hold_id: hold_id.clone(),
                unreconciled: true,
                finished_ms: now,
                outcome: "unreconciled".into(),
                ..Default::default()
            };
            let before = self.store.budgets(&org, now).await?;
            let outcome = self.store.settle(&org, &hold_id, &entry).await?;
            if self.settled(&org, &before, &outcome, now).await? {
                tracing::warn!(org, hold = %hold_id, amount = %amount, "expired hold settled at its held amount");
                metrics::counter!("switchyard_billing_unreconciled_total").increment(1);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Ends budget leases whose TTL passed (their router stopped renewing them): what the router
    /// had admitted under one and never reported is charged at its maximum cost (marked
    /// unreconciled), the rest given back. Returns how many ended.
    pub async fn reconcile_leases(&self, now: u64) -> Result<usize, StateError> {
        let mut n = 0;
        for (org, lease) in self.store.expired_leases(now, 500).await? {
            let before = self.store.budgets(&org, now).await?;
            let Some(charged) = self.store.expire_lease(&org, &lease, now).await? else {
                continue;
            };
            n += 1;
            metrics::counter!("switchyard_budget_leases_expired_total").increment(1);
            tracing::warn!(org, lease, charged = %charged, "expired budget lease ended: its unreported requests charged at their maximum cost, the rest given back");
            if charged > Money::ZERO {
                metrics::counter!("switchyard_billing_unreconciled_total").increment(1);
                self.settled(&org, &before, &SettleOutcome::Done(None), now)
                    .await?;
            }
        }
        Ok(n)
    }

    /// Runs the reconciler every `every` until shutdown.
    pub async fn run_reconciler(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.reconcile(now_ms()).await {
                tracing::warn!(error = %e, "reconciler pass failed");
            }
            if let Err(e) = self.reconcile_leases(now_ms()).await {
                tracing::warn!(error = %e, "reconciler pass over leases failed");
            }
        }
    }
}
