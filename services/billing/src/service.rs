//! gRPC `switchyard.v1.Billing` over a [`BudgetStore`], the reconciler of expired holds, and
//! budget alerts.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use switchyard_core::Money;
use switchyard_proto::v1 as pb;
use switchyard_runtime::status::state_status;
use switchyard_state::{
    BudgetDef, BudgetStore, BudgetView, LeasedReport, Scope, SettleOutcome, StateError, day_of,
    is_lease,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use switchyard_core::clock::now_ms;

use crate::wire::{budget_proto, entry_of, leased_report, period_of, record_of, scope_of};

/// The billing service.
#[derive(Clone)]
pub struct Billing {
    pub(crate) store: Arc<dyn BudgetStore>,
    pub(crate) shutdown: CancellationToken,
}

impl std::fmt::Debug for Billing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Billing")
    }
}

impl Billing {
    /// A service over `store`; streams end at `shutdown`.
    pub fn new(store: Arc<dyn BudgetStore>, shutdown: CancellationToken) -> Self {
        Billing { store, shutdown }
    }

    /// Settles one usage record against its hold or lease, or charges it when there is none (no
    /// hold named, or the named one was never taken: a router that failed open while the budget
    /// store was unreachable); `true` when it was new.
    pub async fn apply(&self, r: &pb::UsageRecord) -> Result<bool, StateError> {
        let before = self.store.budgets(&r.org_id, now_ms()).await?;
        let outcome = self.settle(r).await?;
        self.settled(&r.org_id, &before, &outcome, now_ms()).await
    }

    /// Settles a batch: each org's budgets are read once before and once after (for the
    /// alerts), and its records are settled concurrently, so their scripts travel pipelined on
    /// one connection. Returns how many were new.
    pub async fn apply_batch(&self, records: &[pb::UsageRecord]) -> Result<usize, StateError> {
        let mut by_org: std::collections::BTreeMap<&str, Vec<&pb::UsageRecord>> =
            std::collections::BTreeMap::new();
        for r in records {
            by_org.entry(r.org_id.as_str()).or_default().push(r);
        }
        let mut new = 0;
        for (org, records) in by_org {
            let before = self.store.budgets(org, now_ms()).await?;
            // Reports under one lease settle in one step, in the order their router numbered
            // them; the rest one by one, concurrently.
            let mut leased: std::collections::BTreeMap<&str, Vec<&pb::UsageRecord>> =
                std::collections::BTreeMap::new();
            let mut single = Vec::new();
            for r in records {
                if is_lease(&r.hold_id) {
                    leased.entry(r.hold_id.as_str()).or_default().push(r);
                } else {
                    single.push(r);
                }
            }
            let mut outcomes: Vec<SettleOutcome> = Vec::new();
            for (lease, mut group) in leased {
                group.sort_by_key(|r| r.report_seq);
                let reports: Vec<LeasedReport> = group.iter().map(|r| leased_report(r)).collect();
                let settled = self.store.settle_leased_batch(org, lease, &reports).await?;
                for (r, outcome) in group.iter().zip(settled) {
                    outcomes.push(if outcome == SettleOutcome::Unknown {
                        self.charge(r).await?
                    } else {
                        outcome
                    });
                }
            }
            for outcome in futures::future::join_all(single.iter().map(|r| self.settle(r))).await {
                outcomes.push(outcome?);
            }
            let fresh = outcomes
                .iter()
                .filter(|o| matches!(o, SettleOutcome::Done(_)))
                .count();
            if fresh > 0 {
                metrics::counter!("switchyard_billing_settled_total").increment(fresh as u64);
                self.alerts(org, &before, now_ms()).await?;
            }
            new += fresh;
        }
        Ok(new)
    }

    /// One record's settlement, without alerts.
    async fn settle(&self, r: &pb::UsageRecord) -> Result<SettleOutcome, StateError> {
        let settled = if r.hold_id.is_empty() {
            SettleOutcome::Unknown
        } else if is_lease(&r.hold_id) {
            self.store
                .settle_leased(&r.org_id, &r.hold_id, &leased_report(r))
                .await?
        } else {
            self.store
                .settle(&r.org_id, &r.hold_id, &entry_of(r, false))
                .await?
        };
        if settled != SettleOutcome::Unknown {
            return Ok(settled);
        }
        self.charge(r).await
    }

    /// Charges a report that settles no hold or lease the store knows.
    async fn charge(&self, r: &pb::UsageRecord) -> Result<SettleOutcome, StateError> {
        let entry = entry_of(r, false);
        let mut scopes = vec![Scope::org()];
        if !r.api_key_id.is_empty() {
            scopes.push(Scope::key(&r.api_key_id));
        }
        if !r.workflow.is_empty() {
            scopes.push(Scope::workflow(&r.workflow));
        }
        self.store
            .charge(&r.org_id, &scopes, entry.finished_ms, &entry)
            .await
    }

    /// After a settlement: counts it and raises the alerts it caused; `true` when it was new.
    pub(crate) async fn settled(
        &self,
        org: &str,
        before: &[BudgetView],
        outcome: &SettleOutcome,
        now: u64,
    ) -> Result<bool, StateError> {
        let new = matches!(outcome, SettleOutcome::Done(_));
        if new {
            metrics::counter!("switchyard_billing_settled_total").increment(1);
            self.alerts(org, before, now).await?;
        }
        Ok(new)
    }

    /// Emits an alert for every threshold a budget crossed since `before`, and the usage gauges.
    async fn alerts(&self, org: &str, before: &[BudgetView], now: u64) -> Result<(), StateError> {
        for after in self.store.budgets(org, now).await? {
            let limit = after.def.limit.nanos();
            if limit <= 0 {
                continue;
            }
            let pct = |spent: Money| (spent.nanos() as f64 / limit as f64) * 100.0;
            let was = before
                .iter()
                .find(|b| {
                    b.scope == after.scope
                        && b.period == after.period
                        && b.period_key == after.period_key
                })
                .map(|b| pct(b.spent))
                .unwrap_or(0.0);
            let now_pct = pct(after.spent);
            metrics::gauge!("switchyard_budget_used_ratio", "org" => org.to_string(), "scope" => after.scope.as_str().to_string(), "period" => after.period.as_str())
                .set(now_pct / 100.0);
            let usd = |m: Money| m.nanos() as f64 / 1e9;
            metrics::gauge!("switchyard_budget_spent_usd", "org" => org.to_string(), "scope" => after.scope.as_str().to_string(), "period" => after.period.as_str())
                .set(usd(after.spent));
            metrics::gauge!("switchyard_budget_remaining_usd", "org" => org.to_string(), "scope" => after.scope.as_str().to_string(), "period" => after.period.as_str())
                .set(usd(after.def.limit) - usd(after.spent) - usd(after.held));
            for t in &after.def.thresholds {
                let t = f64::from(*t);
                if was < t && now_pct >= t {
                    tracing::warn!(
                        org,
                        scope = after.scope.as_str(),
                        period = after.period.as_str(),
                        threshold = t,
                        used_percent = now_pct,
                        hard = after.def.hard,
                        "budget threshold crossed"
                    );
                    metrics::counter!("switchyard_budget_alerts_total", "org" => org.to_string(), "scope" => after.scope.as_str().to_string(), "threshold" => t.to_string()).increment(1);
                }
            }
        }
        Ok(())
    }
}

type LedgerStream = Pin<Box<dyn Stream<Item = Result<pb::LedgerEntry, Status>> + Send>>;

#[tonic::async_trait]
impl pb::billing_server::Billing for Billing {
    type ExportLedgerStream = LedgerStream;

    async fn report_usage(
        &self,
        request: Request<pb::ReportUsageRequest>,
    ) -> Result<Response<pb::ReportUsageResponse>, Status> {
        let records = request.into_inner().records;
        if records
            .iter()
            .any(|r| r.request_id.is_empty() || r.org_id.is_empty())
        {
            return Err(Status::invalid_argument(
                "every record needs request_id and org_id",
            ));
        }
        self.apply_batch(&records).await.map_err(state_status)?;
        let acknowledged = records.into_iter().map(|r| r.request_id).collect();
        Ok(Response::new(pb::ReportUsageResponse { acknowledged }))
    }

    async fn get_budget(
        &self,
        request: Request<pb::GetBudgetRequest>,
    ) -> Result<Response<pb::Budget>, Status> {
        let r = request.into_inner();
        let (org, scope) = scope_of(r.scope)?;
        let period = period_of(r.period)?;
        let all = self
            .store
            .budgets(&org, now_ms())
            .await
            .map_err(state_status)?;
        all.iter()
            .find(|v| v.scope == scope && v.period == period)
            .map(|v| Response::new(budget_proto(&org, v)))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no {} budget for {} of org `{org}`",
                    period.as_str(),
                    scope.as_str()
                ))
            })
    }

    async fn list_budgets(
        &self,
        request: Request<pb::ListBudgetsRequest>,
    ) -> Result<Response<pb::ListBudgetsResponse>, Status> {
        let org = request.into_inner().org_id;
        let all = self
            .store
            .budgets(&org, now_ms())
            .await
            .map_err(state_status)?;
        Ok(Response::new(pb::ListBudgetsResponse {
            budgets: all.iter().map(|v| budget_proto(&org, v)).collect(),
        }))
    }

    async fn set_budget(
        &self,
        request: Request<pb::SetBudgetRequest>,
    ) -> Result<Response<pb::Budget>, Status> {
        let r = request.into_inner();
        let (org, scope) = scope_of(r.scope)?;
        let period = period_of(r.period)?;
        if r.limit_nano_usd < 0 {
            return Err(Status::invalid_argument(
                "limit_nano_usd must not be negative",
            ));
        }
        if r.alert_thresholds_percent
            .iter()
            .any(|t| *t == 0 || *t > 1_000)
        {
            return Err(Status::invalid_argument(
                "alert thresholds are percentages between 1 and 1000",
            ));
        }
        let def = BudgetDef {
            limit: Money::from_nanos(r.limit_nano_usd),
            hard: r.hard,
            thresholds: r.alert_thresholds_percent,
        };
        self.store
            .set_budget(&org, &scope, period, &def)
            .await
            .map_err(state_status)?;
        tracing::info!(org, scope = scope.as_str(), period = period.as_str(), limit = %def.limit, hard = def.hard, "budget set");
        let all = self
            .store
            .budgets(&org, now_ms())
            .await
            .map_err(state_status)?;
        all.iter()
            .find(|v| v.scope == scope && v.period == period)
            .map(|v| Response::new(budget_proto(&org, v)))
            .ok_or_else(|| Status::internal("budget not readable after being set"))
    }

    async fn get_usage(
        &self,
        request: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::GetUsageResponse>, Status> {
        let r = request.into_inner();
        let dim = match pb::UsageGroupBy::try_from(r.group_by) {
            Ok(pb::UsageGroupBy::ApiKey) => "key",
            Ok(pb::UsageGroupBy::Workflow) => "workflow",
            Ok(pb::UsageGroupBy::Model) => "model",
            Ok(pb::UsageGroupBy::Provider) => "provider",
            _ => "day",
        };
        let today = day_of(now_ms());
        let to = if r.to_day.is_empty() {
            today.clone()
        } else {
            r.to_day.clone()
        };
        let from = if r.from_day.is_empty() {
            to.clone()
        } else {
            r.from_day.clone()
        };
        let days = days_between(&from, &to).ok_or_else(|| {
            Status::invalid_argument(
                "from_day and to_day are YYYY-MM-DD, at most 400 days apart, in order",
            )
        })?;
        let usage = self
            .store
            .usage(&r.org_id, &days)
            .await
            .map_err(state_status)?;
        let mut rows: std::collections::BTreeMap<String, pb::UsageRow> =
            std::collections::BTreeMap::new();
        for (day, fields) in usage {
            for (field, v) in fields {
                let mut parts = field.splitn(3, '|');
                let (Some(metric), Some(d), Some(value)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if d != dim {
                    continue;
                }
                let key = if dim == "day" {
                    day.clone()
                } else {
                    value.to_string()
                };
                let row = rows.entry(key.clone()).or_insert_with(|| pb::UsageRow {
                    key,
                    ..Default::default()
                });
                match metric {
                    "cost" => row.cost_nano_usd += v,
                    "req" => row.requests += v.max(0) as u64,
                    "in" => row.prompt_tokens += v.max(0) as u64,
                    "out" => row.completion_tokens += v.max(0) as u64,
                    _ => {}
                }
            }
        }
        Ok(Response::new(pb::GetUsageResponse {
            rows: rows.into_values().collect(),
        }))
    }

    async fn export_ledger(
        &self,
        request: Request<pb::ExportLedgerRequest>,
    ) -> Result<Response<Self::ExportLedgerStream>, Status> {
        let r = request.into_inner();
        let store = self.store.clone();
        let stream = futures::stream::unfold(Some(r.after_id), move |after| {
            let store = store.clone();
            let org = r.org_id.clone();
            async move {
                let after = after?;
                match store.ledger(&org, &after, 500).await {
                    Ok(page) if page.is_empty() => None,
                    Ok(page) => {
                        let next = page.last().map(|(id, _)| id.clone());
                        let items: Vec<Result<pb::LedgerEntry, Status>> = page
                            .iter()
                            .map(|(id, e)| {
                                Ok(pb::LedgerEntry {
                                    id: id.clone(),
                                    record: Some(record_of(e)),
                                    unreconciled: e.unreconciled,
                                })
                            })
                            .collect();
                        Some((futures::stream::iter(items), next))
                    }
                    Err(e) => Some((futures::stream::iter(vec![Err(state_status(e))]), None)),
                }
            }
        });
        let stream = futures::StreamExt::take_until(
            futures::StreamExt::flatten(stream),
            self.shutdown.clone().cancelled_owned(),
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Every `YYYY-MM-DD` from `from` to `to` inclusive (at most 400).
fn days_between(from: &str, to: &str) -> Option<Vec<String>> {
    let parse = |s: &str| -> Option<u64> {
        let mut it = s.splitn(3, '-');
        let (y, m, d): (i64, i64, i64) = (
            it.next()?.parse().ok()?,
            it.next()?.parse().ok()?,
            it.next()?.parse().ok()?,
        );
        // Days since the epoch for a civil date (inverse of the store's conversion).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let ms = u64::try_from(days).ok()? * 86_400_000;
        (day_of(ms) == s).then_some(ms)
    };
    let (a, b) = (parse(from)?, parse(to)?);
    if b < a || (b - a) / 86_400_000 > 400 {
        return None;
    }
    Some(
        (0..=(b - a) / 86_400_000)
            .map(|i| day_of(a + i * 86_400_000))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::days_between;

    #[test]
    fn day_ranges() {
        assert_eq!(
            days_between("2026-02-27", "2026-03-01").unwrap(),
            ["2026-02-27", "2026-02-28", "2026-03-01"]
        );
        assert_eq!(
            days_between("2024-02-28", "2024-03-01").unwrap().len(),
            3,
            "leap year"
        );
        assert!(days_between("2026-03-01", "2026-02-27").is_none());
        assert!(days_between("2026-13-01", "2026-13-02").is_none());
        assert!(
            days_between("2020-01-01", "2026-01-01").is_none(),
            "too long"
        );
    }
}
