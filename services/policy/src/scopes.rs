//! Operator changes to what an org, one of its keys or one of its workflows may spend and send:
//! budgets (`ctl budgets set|remove`) and client limits (`ctl limits set|remove`). Each is a
//! document over the policy file's declaration of the same scope, checked against the policy in
//! force, audited with actor and reason, and published in a new version.

use switchyard_core::OrgId;

use crate::budgets::BudgetDoc;
use crate::core::{BUDGETS, CoreError, LIMITS, PolicyCore};
use crate::limits::LimitDoc;

impl PolicyCore {
    /// Checks that the scope exists in the policy in force: the org, and the key or workflow
    /// named (not both).
    fn check_scope(
        &self,
        org: &OrgId,
        key: Option<&str>,
        workflow: Option<&str>,
        reason: &str,
        what: &str,
    ) -> Result<(), CoreError> {
        if reason.trim().is_empty() {
            return Err(CoreError::Invalid(format!(
                "a {what} change needs a reason (it is recorded in the audit)"
            )));
        }
        if key.is_some() && workflow.is_some() {
            return Err(CoreError::Invalid(format!(
                "a {what} is for the org, one key or one workflow: not both"
            )));
        }
        let current = self
            .current()
            .ok_or_else(|| CoreError::Invalid("no policy loaded".into()))?;
        let compiled = &current.compiled;
        let Some(o) = compiled.org(org.as_str()) else {
            return Err(CoreError::NotFound(format!("org `{org}`")));
        };
        if let Some(w) = workflow
            && !o.workflows.iter().any(|x| x.id.as_str() == w)
        {
            return Err(CoreError::NotFound(format!(
                "workflow `{w}` of org `{org}`"
            )));
        }
        if let Some(k) = key
            && !compiled
                .keys
                .iter()
                .any(|x| x.id.as_str() == k && &x.org == org)
        {
            return Err(CoreError::NotFound(format!("key `{k}` of org `{org}`")));
        }
        Ok(())
    }

    /// Sets a budget (`doc.set`) or removes one (`doc.set` empty) for an org, one of its keys or
    /// one of its workflows, over the policy file's; audited.
    pub async fn change_budget(&self, doc: BudgetDoc) -> Result<u64, CoreError> {
        self.check_scope(
            &doc.org,
            doc.key.as_deref(),
            doc.workflow.as_deref(),
            &doc.reason,
            "budget",
        )?;
        let id = doc.id();
        let (action, detail) = match &doc.set {
            Some(s) => {
                crate::budgets::check_setting(s.limit, &s.alerts).map_err(CoreError::Invalid)?;
                (
                    "set_budget",
                    format!(
                        "{id} {} USD {}",
                        s.limit,
                        if s.hard { "hard" } else { "soft" }
                    ),
                )
            }
            None => {
                let in_force = self
                    .current()
                    .is_some_and(|c| c.compiled.budgets.iter().any(|b| b.id() == id));
                if !in_force {
                    return Err(CoreError::NotFound(format!("budget `{id}`")));
                }
                ("remove_budget", id.clone())
            }
        };
        let json = serde_json::to_string(&doc).map_err(|e| CoreError::Invalid(e.to_string()))?;
        self.store.put_doc(BUDGETS, &id, &json).await?;
        self.audit(&doc.actor, action, &detail, &doc.reason).await?;
        self.publish().await
    }

    /// Sets the limits of a scope (`doc.set`) or removes them (`doc.set` empty), over the
    /// policy file's; audited.
    pub async fn change_limits(&self, doc: LimitDoc) -> Result<u64, CoreError> {
        self.check_scope(
            &doc.org,
            doc.key.as_deref(),
            doc.workflow.as_deref(),
            &doc.reason,
            "limit",
        )?;
        let id = doc.id();
        let (action, detail) = match &doc.set {
            Some(s) => {
                crate::limits::check_setting(s).map_err(CoreError::Invalid)?;
                let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
                (
                    "set_limits",
                    format!(
                        "{id} rpm {} tpm {} concurrent {}",
                        show(s.rpm),
                        show(s.tpm),
                        show(s.concurrent)
                    ),
                )
            }
            None => {
                let in_force = self
                    .current()
                    .is_some_and(|c| c.compiled.limits.iter().any(|l| l.id() == id));
                if !in_force {
                    return Err(CoreError::NotFound(format!("limits of `{id}`")));
                }
                ("remove_limits", id.clone())
            }
        };
        let json = serde_json::to_string(&doc).map_err(|e| CoreError::Invalid(e.to_string()))?;
        self.store.put_doc(LIMITS, &id, &json).await?;
        self.audit(&doc.actor, action, &detail, &doc.reason).await?;
        self.publish().await
    }
}
