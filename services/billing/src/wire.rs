//! The billing API's wire shapes and the store's types, each way: scopes, periods, budgets,
//! usage records and ledger entries.

use switchyard_core::Money;
use switchyard_core::clock::now_ms;
use switchyard_proto::v1 as pb;
use switchyard_state::{BudgetView, LeasedReport, LedgerEntry, Period, Scope};
use tonic::Status;

pub(crate) fn scope_of(s: Option<pb::Scope>) -> Result<(String, Scope), Status> {
    let s = s.ok_or_else(|| Status::invalid_argument("scope is required"))?;
    if s.org_id.is_empty() {
        return Err(Status::invalid_argument("scope.org_id is required"));
    }
    let scope = match pb::ScopeKind::try_from(s.kind) {
        Ok(pb::ScopeKind::Org) => Scope::org(),
        Ok(pb::ScopeKind::ApiKey) if !s.id.is_empty() => Scope::key(&s.id),
        Ok(pb::ScopeKind::Workflow) if !s.id.is_empty() => Scope::workflow(&s.id),
        _ => {
            return Err(Status::invalid_argument(
                "scope.kind must be org, api_key (with id) or workflow (with id)",
            ));
        }
    };
    Ok((s.org_id, scope))
}

pub(crate) fn period_of(p: i32) -> Result<Period, Status> {
    match pb::Period::try_from(p) {
        Ok(pb::Period::Day) => Ok(Period::Day),
        Ok(pb::Period::Month) => Ok(Period::Month),
        Ok(pb::Period::Total) => Ok(Period::Total),
        _ => Err(Status::invalid_argument(
            "period must be day, month or total",
        )),
    }
}

pub(crate) fn budget_proto(org: &str, v: &BudgetView) -> pb::Budget {
    let (kind, id) = match v.scope.as_str().split_once(':') {
        Some(("key", id)) => (pb::ScopeKind::ApiKey, id.to_string()),
        Some(("wf", id)) => (pb::ScopeKind::Workflow, id.to_string()),
        _ => (pb::ScopeKind::Org, String::new()),
    };
    pb::Budget {
        scope: Some(pb::Scope {
            kind: kind as i32,
            org_id: org.to_string(),
            id,
        }),
        period: match v.period {
            Period::Day => pb::Period::Day,
            Period::Month => pb::Period::Month,
            Period::Total => pb::Period::Total,
        } as i32,
        limit_nano_usd: v.def.limit.nanos(),
        spent_nano_usd: v.spent.nanos(),
        held_nano_usd: v.held.nanos(),
        hard: v.def.hard,
        alert_thresholds_percent: v.def.thresholds.clone(),
        period_key: v.period_key.clone(),
    }
}

pub(crate) fn entry_of(r: &pb::UsageRecord, unreconciled: bool) -> LedgerEntry {
    LedgerEntry {
        request_id: r.request_id.clone(),
        org: r.org_id.clone(),
        api_key: r.api_key_id.clone(),
        workflow: r.workflow.clone(),
        model: r.model.clone(),
        provider: r.provider.clone(),
        endpoint: r.endpoint.clone(),
        prompt_tokens: u64::from(r.prompt_tokens),
        completion_tokens: u64::from(r.completion_tokens),
        cached_prompt_tokens: u64::from(r.cached_prompt_tokens),
        cost: Money::from_nanos(r.cost_nano_usd.max(0)),
        hold_id: r.hold_id.clone(),
        unreconciled,
        finished_ms: if r.finished_unix_ms > 0 {
            r.finished_unix_ms as u64
        } else {
            now_ms()
        },
        attempts: r.attempts,
        outcome: r.outcome.clone(),
        over_hold: r.over_hold,
        max_cost: Money::from_nanos(r.max_cost_nano_usd.max(0)),
    }
}

/// A report under a lease, as the store settles it.
pub(crate) fn leased_report(r: &pb::UsageRecord) -> LeasedReport {
    LeasedReport {
        seq: r.lease_seq,
        number: r.report_seq,
        entry: entry_of(r, false),
    }
}

pub(crate) fn record_of(e: &LedgerEntry) -> pb::UsageRecord {
    pb::UsageRecord {
        request_id: e.request_id.clone(),
        org_id: e.org.clone(),
        api_key_id: e.api_key.clone(),
        workflow: e.workflow.clone(),
        model: e.model.clone(),
        provider: e.provider.clone(),
        endpoint: e.endpoint.clone(),
        prompt_tokens: e.prompt_tokens as u32,
        completion_tokens: e.completion_tokens as u32,
        cached_prompt_tokens: e.cached_prompt_tokens as u32,
        cost_nano_usd: e.cost.nanos(),
        hold_id: e.hold_id.clone(),
        finished_unix_ms: e.finished_ms as i64,
        attempts: e.attempts,
        outcome: e.outcome.clone(),
        over_hold: e.over_hold,
        max_cost_nano_usd: e.max_cost.nanos(),
        lease_seq: 0,
        report_seq: 0,
    }
}
