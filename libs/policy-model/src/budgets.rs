//! Budgets an operator sets: declared per org in the policy file (the org, one of its keys or
//! one of its workflows; a period; a limit; hard or soft; alert thresholds), or set and removed
//! at run time (`switchyard ctl budgets set|remove`, audited), which takes precedence over the
//! file for the same scope and period. The snapshot carries the result; billing applies it
//! whenever the version changes. A limit is a definition only: what was spent in the period is
//! never reset by a change of limit.
//!
//! ```yaml
//! orgs:
//!   - id: acme
//!     budgets:
//!       - { period: day, limit: "50", alerts: [50, 80, 100] }       # the whole org, hard
//!       - { key: k1, period: month, limit: "200", hard: false }     # one key, soft
//!       - { workflow: batch, period: total, limit: "1000" }         # one workflow
//! ```

use serde::{Deserialize, Serialize};
use switchyard_config::Validator;
use switchyard_core::{Money, OrgId};

/// The period a budget's spend is counted over (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    /// A UTC day.
    Day,
    /// A UTC month.
    Month,
    /// Ever.
    Total,
}

impl BudgetPeriod {
    /// Text form.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Month => "month",
            BudgetPeriod::Total => "total",
        }
    }

    /// Parses `day`, `month` or `total`.
    pub fn parse(s: &str) -> Option<BudgetPeriod> {
        match s {
            "day" => Some(BudgetPeriod::Day),
            "month" => Some(BudgetPeriod::Month),
            "total" => Some(BudgetPeriod::Total),
            _ => None,
        }
    }
}

fn yes() -> bool {
    true
}

/// A budget declared in the policy file, under its org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// One API key of the org (its id); with neither `key` nor `workflow`, the whole org.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// One workflow of the org.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The period.
    pub period: BudgetPeriod,
    /// USD.
    pub limit: Money,
    /// Hard (refuse over the limit, the default) or soft (alert only).
    #[serde(default = "yes")]
    pub hard: bool,
    /// Alert thresholds, percent of the limit (1 to 1000).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<u32>,
}

/// Where a budget in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetSource {
    /// The policy file.
    PolicyFile,
    /// `ctl budgets set`.
    Operator,
}

/// A budget in force, as the snapshot carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredBudget {
    /// The org.
    pub org: OrgId,
    /// One key of it, or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// One workflow of it, or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Period.
    pub period: BudgetPeriod,
    /// Limit.
    pub limit: Money,
    /// Hard or soft.
    pub hard: bool,
    /// Alert thresholds.
    #[serde(default)]
    pub alerts: Vec<u32>,
    /// Where it comes from.
    pub source: BudgetSource,
}

impl DeclaredBudget {
    /// The scope and period, as a document id (`acme/org/day`, `acme/key:k1/month`).
    pub fn id(&self) -> String {
        doc_id(
            self.org.as_str(),
            self.key.as_deref(),
            self.workflow.as_deref(),
            self.period,
        )
    }
}

/// The id of a scope and period.
pub fn doc_id(
    org: &str,
    key: Option<&str>,
    workflow: Option<&str>,
    period: BudgetPeriod,
) -> String {
    format!("{org}/{}/{}", scope_label(key, workflow), period.as_str())
}

/// A scope of an org as text: `org`, `key:<id>` or `wf:<id>` (a key wins over a workflow).
pub fn scope_label(key: Option<&str>, workflow: Option<&str>) -> String {
    match (key, workflow) {
        (Some(k), _) => format!("key:{k}"),
        (None, Some(w)) => format!("wf:{w}"),
        (None, None) => "org".to_string(),
    }
}

/// An operator's change, as stored: a budget set, or a budget removed (`set: None`), which also
/// hides the file's budget of the same scope and period until the operator sets it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetDoc {
    /// The org.
    pub org: OrgId,
    /// One key, or none.
    #[serde(default)]
    pub key: Option<String>,
    /// One workflow, or none.
    #[serde(default)]
    pub workflow: Option<String>,
    /// Period.
    pub period: BudgetPeriod,
    /// The definition, or none for a removal.
    #[serde(default)]
    pub set: Option<BudgetSetting>,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
}

/// A limit, hard or soft, with its alerts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetSetting {
    /// Limit.
    pub limit: Money,
    /// Hard or soft.
    pub hard: bool,
    /// Alert thresholds.
    #[serde(default)]
    pub alerts: Vec<u32>,
}

impl BudgetDoc {
    /// The scope and period, as a document id.
    pub fn id(&self) -> String {
        doc_id(
            self.org.as_str(),
            self.key.as_deref(),
            self.workflow.as_deref(),
            self.period,
        )
    }
}

/// The budgets in force: the file's, with the operator's changes applied over them, in a stable
/// order (by id).
pub fn in_force(file: &[(OrgId, Vec<BudgetConfig>)], docs: &[BudgetDoc]) -> Vec<DeclaredBudget> {
    let mut out: std::collections::BTreeMap<String, DeclaredBudget> = Default::default();
    for (org, budgets) in file {
        for b in budgets {
            let d = DeclaredBudget {
                org: org.clone(),
                key: b.key.clone(),
                workflow: b.workflow.clone(),
                period: b.period,
                limit: b.limit,
                hard: b.hard,
                alerts: b.alerts.clone(),
                source: BudgetSource::PolicyFile,
            };
            out.insert(d.id(), d);
        }
    }
    for doc in docs {
        match &doc.set {
            Some(s) => {
                out.insert(
                    doc.id(),
                    DeclaredBudget {
                        org: doc.org.clone(),
                        key: doc.key.clone(),
                        workflow: doc.workflow.clone(),
                        period: doc.period,
                        limit: s.limit,
                        hard: s.hard,
                        alerts: s.alerts.clone(),
                        source: BudgetSource::Operator,
                    },
                );
            }
            None => {
                out.remove(&doc.id());
            }
        }
    }
    out.into_values().collect()
}

/// Checks a limit and its alerts (the file's and the operator's alike).
pub fn check_setting(limit: Money, alerts: &[u32]) -> Result<(), String> {
    if limit.is_negative() {
        return Err("the limit must not be negative".into());
    }
    if alerts.iter().any(|a| *a == 0 || *a > 1_000) {
        return Err("alert thresholds are percentages between 1 and 1000".into());
    }
    Ok(())
}

/// Checks an org's declared budgets: one scope each (key or workflow, not both, naming one of
/// the org's), a valid setting, no scope and period twice.
pub fn validate(budgets: &[BudgetConfig], keys: &[&str], workflows: &[&str], v: &mut Validator) {
    let mut seen = std::collections::HashSet::new();
    v.each("budgets", budgets, |v, _, b| {
        if b.key.is_some() && b.workflow.is_some() {
            v.error(
                "a budget is for the org, one key or one workflow: not both a key and a workflow",
            );
        }
        if let Some(k) = &b.key
            && !keys.contains(&k.as_str())
        {
            v.error_at("key", format!("unknown key id `{k}` of this org"));
        }
        if let Some(w) = &b.workflow
            && !workflows.contains(&w.as_str())
        {
            v.error_at("workflow", format!("unknown workflow `{w}` of this org"));
        }
        if let Err(e) = check_setting(b.limit, &b.alerts) {
            v.error(e);
        }
        if !seen.insert((b.key.clone(), b.workflow.clone(), b.period)) {
            v.error(format!(
                "two budgets for the same scope and period `{}`",
                b.period.as_str()
            ));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Vec<(OrgId, Vec<BudgetConfig>)> {
        vec![(
            OrgId::from("acme"),
            vec![
                BudgetConfig {
                    key: None,
                    workflow: None,
                    period: BudgetPeriod::Day,
                    limit: Money::from_nanos(5_000_000_000),
                    hard: true,
                    alerts: vec![80],
                },
                BudgetConfig {
                    key: None,
                    workflow: Some("batch".into()),
                    period: BudgetPeriod::Total,
                    limit: Money::from_nanos(1),
                    hard: false,
                    alerts: vec![],
                },
            ],
        )]
    }

    #[test]
    fn operator_changes_apply_over_the_file() {
        let set = BudgetDoc {
            org: "acme".into(),
            key: None,
            workflow: None,
            period: BudgetPeriod::Day,
            set: Some(BudgetSetting {
                limit: Money::from_nanos(7),
                hard: true,
                alerts: vec![],
            }),
            actor: "ops".into(),
            reason: "incident".into(),
        };
        let removed = BudgetDoc {
            workflow: Some("batch".into()),
            period: BudgetPeriod::Total,
            set: None,
            ..set.clone()
        };
        let all = in_force(&file(), std::slice::from_ref(&set));
        assert_eq!(all.len(), 2);
        let day = all.iter().find(|b| b.id() == "acme/org/day").unwrap();
        assert_eq!((day.limit.nanos(), day.source), (7, BudgetSource::Operator));
        let all = in_force(&file(), &[set, removed]);
        assert_eq!(all.len(), 1, "{all:?}");
    }
}
