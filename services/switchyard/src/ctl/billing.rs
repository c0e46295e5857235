//! Commands of billing: budgets and usage.

use serde_json::json;
use switchyard_proto::v1 as pb;

use super::Out;
use super::args::*;
use super::client::Ctx;
use super::render::*;

pub(crate) fn scope_name(s: Option<&pb::Scope>) -> (String, String) {
    let Some(s) = s else {
        return ("?".into(), String::new());
    };
    let kind = match pb::ScopeKind::try_from(s.kind) {
        Ok(pb::ScopeKind::Org) => "org",
        Ok(pb::ScopeKind::ApiKey) => "key",
        Ok(pb::ScopeKind::Workflow) => "workflow",
        _ => "?",
    };
    (kind.into(), s.id.clone())
}

pub(crate) fn period_name(p: i32) -> &'static str {
    match pb::Period::try_from(p) {
        Ok(pb::Period::Day) => "day",
        Ok(pb::Period::Month) => "month",
        Ok(pb::Period::Total) => "total",
        _ => "?",
    }
}

/// `budgets set|remove`: a change through the policy service, which audits it and publishes a
/// version billing applies.
pub(crate) async fn change_budget(ctx: &Ctx, cmd: BudgetCmd) -> Result<Out, String> {
    let target = |s: &BudgetScope| -> Result<(pb::Scope, i32), String> {
        let period = match s.period.as_str() {
            "day" => pb::Period::Day,
            "month" => pb::Period::Month,
            "total" => pb::Period::Total,
            other => {
                return Err(format!(
                    "--period must be day, month or total, not `{other}`"
                ));
            }
        };
        Ok((s.who.to_proto(), period as i32))
    };
    let mut client = ctx.policy()?;
    let (what, scope, result) = match cmd {
        BudgetCmd::Set {
            scope,
            limit,
            soft,
            alerts,
        } => {
            let usd = switchyard_core::Money::parse_usd(&limit)
                .map_err(|e| format!("--limit `{limit}`: {e}"))?;
            let (s, period) = target(&scope)?;
            let r = client
                .put_budget(pb::PutBudgetRequest {
                    scope: Some(s),
                    period,
                    limit_nano_usd: usd.nanos(),
                    hard: !soft,
                    alert_thresholds_percent: alerts,
                    actor: ctx.actor.clone(),
                    reason: scope.who.reason.clone(),
                })
                .await;
            ("set", scope, r)
        }
        BudgetCmd::Remove { scope } => {
            let (s, period) = target(&scope)?;
            let r = client
                .remove_budget(pb::RemoveBudgetRequest {
                    scope: Some(s),
                    period,
                    actor: ctx.actor.clone(),
                    reason: scope.who.reason.clone(),
                })
                .await;
            ("removed", scope, r)
        }
    };
    let version = result
        .map_err(|s| ctx.policy.fail("changing the budget", &s))?
        .into_inner()
        .version;
    let (who, name) = (&scope.who, scope.who.name());
    Ok(Out {
        json: json!({"budget": what, "org": who.org, "key": who.key, "workflow": who.workflow, "period": scope.period, "policy_version": version}),
        text: format!(
            "{} budget of {name} {what} (policy version {version}; billing applies it within a second)\n",
            scope.period
        ),
    })
}

pub(crate) async fn budgets(ctx: &Ctx, org: Option<String>) -> Result<Out, String> {
    let mut client = ctx.billing()?;
    let mut list = Vec::new();
    let mut rows = Vec::new();
    for org in ctx.orgs(org).await? {
        let r = client
            .list_budgets(pb::ListBudgetsRequest {
                org_id: org.clone(),
            })
            .await
            .map_err(|s| {
                ctx.billing
                    .fail(&format!("listing the budgets of `{org}`"), &s)
            })?
            .into_inner();
        for b in r.budgets {
            let (kind, id) = scope_name(b.scope.as_ref());
            let remaining = b
                .limit_nano_usd
                .saturating_sub(b.spent_nano_usd)
                .saturating_sub(b.held_nano_usd);
            let used = if b.limit_nano_usd > 0 {
                (b.spent_nano_usd + b.held_nano_usd) as f64 * 100.0 / b.limit_nano_usd as f64
            } else {
                0.0
            };
            rows.push(vec![
                org.clone(),
                kind.clone(),
                if id.is_empty() {
                    "-".into()
                } else {
                    id.clone()
                },
                period_name(b.period).into(),
                b.period_key.clone(),
                usd(b.limit_nano_usd),
                usd(b.spent_nano_usd),
                usd(b.held_nano_usd),
                usd(remaining),
                format!("{used:.0}%"),
                if b.hard { "hard" } else { "soft" }.into(),
            ]);
            list.push(json!({
                "org": org, "scope": kind, "id": id, "period": period_name(b.period),
                "period_key": b.period_key, "hard": b.hard,
                "limit_usd": usd(b.limit_nano_usd), "spent_usd": usd(b.spent_nano_usd),
                "held_usd": usd(b.held_nano_usd), "remaining_usd": usd(remaining),
                "limit_nano_usd": b.limit_nano_usd, "spent_nano_usd": b.spent_nano_usd,
                "held_nano_usd": b.held_nano_usd, "remaining_nano_usd": remaining,
            }));
        }
    }
    let text = if rows.is_empty() {
        "no budgets\n".to_string()
    } else {
        table(
            &[
                "ORG",
                "SCOPE",
                "ID",
                "PERIOD",
                "OF",
                "LIMIT",
                "SPENT",
                "HELD",
                "REMAINING",
                "USED",
                "KIND",
            ],
            &rows,
        )
    };
    Ok(Out {
        json: json!({ "budgets": list }),
        text,
    })
}

pub(crate) async fn usage(
    ctx: &Ctx,
    org: Option<String>,
    by: GroupBy,
    from: Option<String>,
    to: Option<String>,
) -> Result<Out, String> {
    let (group_by, name) = match by {
        GroupBy::Day => (pb::UsageGroupBy::Day, "day"),
        GroupBy::Model => (pb::UsageGroupBy::Model, "model"),
        GroupBy::Provider => (pb::UsageGroupBy::Provider, "provider"),
        GroupBy::Key => (pb::UsageGroupBy::ApiKey, "key"),
        GroupBy::Workflow => (pb::UsageGroupBy::Workflow, "workflow"),
    };
    let mut client = ctx.billing()?;
    let (mut list, mut rows) = (Vec::new(), Vec::new());
    for org in ctx.orgs(org).await? {
        let r = client
            .get_usage(pb::GetUsageRequest {
                org_id: org.clone(),
                group_by: group_by as i32,
                from_day: from.clone().unwrap_or_default(),
                to_day: to.clone().unwrap_or_default(),
            })
            .await
            .map_err(|s| {
                ctx.billing
                    .fail(&format!("reading the usage of `{org}`"), &s)
            })?
            .into_inner();
        for u in r.rows {
            rows.push(vec![
                org.clone(),
                u.key.clone(),
                u.requests.to_string(),
                u.prompt_tokens.to_string(),
                u.completion_tokens.to_string(),
                usd(u.cost_nano_usd),
            ]);
            list.push(json!({
                "org": org, name: u.key, "requests": u.requests,
                "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                "cost_usd": usd(u.cost_nano_usd), "cost_nano_usd": u.cost_nano_usd,
            }));
        }
    }
    let header = name.to_uppercase();
    Ok(Out {
        json: json!({ "group_by": name, "rows": list }),
        text: table(
            &[
                "ORG",
                &header,
                "REQUESTS",
                "PROMPT",
                "COMPLETION",
                "COST_USD",
            ],
            &rows,
        ),
    })
}
