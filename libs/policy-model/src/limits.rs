//! Client rate limits an operator sets: requests per minute, tokens per minute and concurrent
//! requests, for an org, one of its keys or one of its workflows. Declared in the policy file,
//! or set and removed at run time (`switchyard ctl limits set|remove`, audited), which takes
//! precedence over the file for the same scope. The snapshot carries the result; routers
//! enforce it in the same atomic step that holds the request's budget.
//!
//! ```yaml
//! orgs:
//!   - id: acme
//!     limits:
//!       - { rpm: 600, tpm: 2000000 }                 # the whole org
//!       - { key: k1, rpm: 100, concurrent: 8 }       # one key
//!       - { workflow: batch, tpm: 500000 }           # one workflow
//! ```
//!
//! Tokens per minute count each request's prompt bound plus its maximum output when it is
//! admitted, reconciled to the tokens it really used when it is settled. Windows are UTC
//! minutes.

use serde::{Deserialize, Serialize};
use switchyard_config::Validator;
use switchyard_core::OrgId;

/// The limits of one scope; an unset one is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSetting {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens per minute (prompt and output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<u64>,
}

impl LimitSetting {
    /// Whether it limits anything.
    pub fn is_empty(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none() && self.concurrent.is_none()
    }
}

/// Limits declared in the policy file, under their org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// One API key of the org (its id); with neither `key` nor `workflow`, the whole org.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// One workflow of the org.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<u64>,
}

impl LimitConfig {
    /// Its limits.
    pub fn setting(&self) -> LimitSetting {
        LimitSetting {
            rpm: self.rpm,
            tpm: self.tpm,
            concurrent: self.concurrent,
        }
    }
}

/// Where limits in force come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitSource {
    /// The policy file.
    PolicyFile,
    /// `ctl limits set`.
    Operator,
}

/// Limits in force for one scope, as the snapshot carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredLimit {
    /// The org.
    pub org: OrgId,
    /// One key of it, or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// One workflow of it, or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The limits.
    pub set: LimitSetting,
    /// Where they come from.
    pub source: LimitSource,
}

/// The id of a scope (`acme/org`, `acme/key:k1`, `acme/wf:batch`).
pub fn doc_id(org: &str, key: Option<&str>, workflow: Option<&str>) -> String {
    format!("{org}/{}", crate::budgets::scope_label(key, workflow))
}

impl DeclaredLimit {
    /// The scope, as a document id.
    pub fn id(&self) -> String {
        doc_id(
            self.org.as_str(),
            self.key.as_deref(),
            self.workflow.as_deref(),
        )
    }
}

/// An operator's change, as stored: limits set, or removed (`set: None`), which also hides the
/// file's limits of the same scope until the operator sets them again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitDoc {
    /// The org.
    pub org: OrgId,
    /// One key, or none.
    #[serde(default)]
    pub key: Option<String>,
    /// One workflow, or none.
    #[serde(default)]
    pub workflow: Option<String>,
    /// The limits, or none for a removal.
    #[serde(default)]
    pub set: Option<LimitSetting>,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
}

impl LimitDoc {
    /// The scope, as a document id.
    pub fn id(&self) -> String {
        doc_id(
            self.org.as_str(),
            self.key.as_deref(),
            self.workflow.as_deref(),
        )
    }
}

/// The limits in force: the file's, with the operator's changes over them, by id.
pub fn in_force(file: &[(OrgId, Vec<LimitConfig>)], docs: &[LimitDoc]) -> Vec<DeclaredLimit> {
    let mut out: std::collections::BTreeMap<String, DeclaredLimit> = Default::default();
    for (org, limits) in file {
        for l in limits {
            let d = DeclaredLimit {
                org: org.clone(),
                key: l.key.clone(),
                workflow: l.workflow.clone(),
                set: l.setting(),
                source: LimitSource::PolicyFile,
            };
            out.insert(d.id(), d);
        }
    }
    for doc in docs {
        match doc.set {
            Some(set) => {
                out.insert(
                    doc.id(),
                    DeclaredLimit {
                        org: doc.org.clone(),
                        key: doc.key.clone(),
                        workflow: doc.workflow.clone(),
                        set,
                        source: LimitSource::Operator,
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

/// Checks a setting (the file's and the operator's alike).
pub fn check_setting(s: &LimitSetting) -> Result<(), String> {
    if s.is_empty() {
        return Err("set at least one of rpm, tpm, concurrent".into());
    }
    if [s.rpm, s.tpm, s.concurrent].contains(&Some(0)) {
        return Err("a limit of 0 refuses everything: remove the scope's access instead".into());
    }
    Ok(())
}

/// Checks an org's declared limits: one scope each (key or workflow, not both, naming one of
/// the org's), a valid setting, no scope twice.
pub fn validate(limits: &[LimitConfig], keys: &[&str], workflows: &[&str], v: &mut Validator) {
    let mut seen = std::collections::HashSet::new();
    v.each("limits", limits, |v, _, l| {
        if l.key.is_some() && l.workflow.is_some() {
            v.error(
                "limits are for the org, one key or one workflow: not both a key and a workflow",
            );
        }
        if let Some(k) = &l.key
            && !keys.contains(&k.as_str())
        {
            v.error_at("key", format!("unknown key id `{k}` of this org"));
        }
        if let Some(w) = &l.workflow
            && !workflows.contains(&w.as_str())
        {
            v.error_at("workflow", format!("unknown workflow `{w}` of this org"));
        }
        if let Err(e) = check_setting(&l.setting()) {
            v.error(e);
        }
        if !seen.insert((l.key.clone(), l.workflow.clone())) {
            v.error("two limits for the same scope: put rpm, tpm and concurrent in one entry");
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_operator_overrides_the_file_per_scope() {
        let file = vec![(
            OrgId::from("acme"),
            vec![
                LimitConfig {
                    key: None,
                    workflow: None,
                    rpm: Some(600),
                    tpm: None,
                    concurrent: None,
                },
                LimitConfig {
                    key: Some("k1".into()),
                    workflow: None,
                    rpm: Some(100),
                    tpm: None,
                    concurrent: Some(4),
                },
            ],
        )];
        let docs = vec![
            LimitDoc {
                org: OrgId::from("acme"),
                key: Some("k1".into()),
                workflow: None,
                set: Some(LimitSetting {
                    rpm: Some(50),
                    ..LimitSetting::default()
                }),
                actor: "ops".into(),
                reason: "noisy".into(),
            },
            LimitDoc {
                org: OrgId::from("acme"),
                key: None,
                workflow: None,
                set: None,
                actor: "ops".into(),
                reason: "lifted".into(),
            },
        ];
        let limits = in_force(&file, &docs);
        assert_eq!(limits.len(), 1);
        assert_eq!(limits[0].id(), "acme/key:k1");
        assert_eq!(limits[0].set.rpm, Some(50));
        assert_eq!(limits[0].set.concurrent, None);
        assert_eq!(limits[0].source, LimitSource::Operator);
        assert!(check_setting(&LimitSetting::default()).is_err());
        assert!(
            check_setting(&LimitSetting {
                rpm: Some(0),
                ..LimitSetting::default()
            })
            .is_err()
        );
    }
}
