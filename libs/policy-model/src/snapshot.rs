//! The compiled policy every router receives: orgs with their workflows already turned into
//! planner bounds, key hashes, sealed BYOK keys and the overrides in force. Serialized
//! deterministically (ordered collections), so equal inputs give equal bytes and one version.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use switchyard_core::{ApiKeyId, ModelId, Money, OrgId, ProviderId, WorkflowId};
use switchyard_routing::Policy;

use crate::config::{FailMode, RetryPolicy, WorkflowTimeouts};
use crate::crypto::SealedSecret;

/// Everything a router needs to authorize and route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompiledPolicy {
    /// Tenants, in file order.
    pub orgs: Vec<CompiledOrg>,
    /// API keys (config and issued), by id.
    pub keys: Vec<KeyRecord>,
    /// Sealed BYOK keys.
    pub byok: Vec<SealedByok>,
    /// Operator overrides in force, by id.
    pub overrides: Vec<Override>,
    /// Budgets in force (the file's, with the operator's changes), by scope and period.
    #[serde(default)]
    pub budgets: Vec<crate::budgets::DeclaredBudget>,
    /// Client limits in force (the file's, with the operator's changes), by scope.
    #[serde(default)]
    pub limits: Vec<crate::limits::DeclaredLimit>,
    /// The catalog every process routes, probes and prices with, when the policy service
    /// publishes one (otherwise each process keeps its local catalog file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<crate::catalog::PublishedCatalog>,
    /// Key hash → index into `keys`, built on first use.
    #[serde(skip)]
    key_index: OnceLock<HashMap<String, usize>>,
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompiledOrg {
    /// Id.
    pub id: OrgId,
    /// Name.
    pub name: String,
    /// Budget fail mode.
    pub fail_mode: FailMode,
    /// Spend allowed while budgets are unreachable.
    pub fail_open_allowance: Money,
    /// Workflow of requests naming none.
    pub default_workflow: WorkflowId,
    /// Workflows.
    pub workflows: Vec<CompiledWorkflow>,
    /// Its weight in a router's fair queue.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// A workflow, compiled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompiledWorkflow {
    /// Id.
    pub id: WorkflowId,
    /// The planner bounds: org lists, data class, overrides and workflow controls merged.
    pub routing: Policy,
    /// Time limits.
    pub timeouts: WorkflowTimeouts,
    /// Retries.
    pub retry: RetryPolicy,
    /// Whether refusals may fall back.
    pub fallback_on_refusal: bool,
    /// What to do with output that fails its schema.
    #[serde(default)]
    pub on_invalid_output: crate::config::OnInvalidOutput,
    /// What a stream does with an event it cannot parse.
    #[serde(default)]
    pub on_malformed_event: crate::config::OnMalformedEvent,
    /// Whether a cut or stalled stream is finished elsewhere.
    #[serde(default)]
    pub continuation: crate::config::Continuation,
    /// Hedged requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge: Option<crate::config::Hedge>,
    /// Data class, for logs.
    pub data_class: Option<String>,
    /// Which waiting requests go first when capacity is short.
    #[serde(default)]
    pub priority: crate::config::Priority,
}

impl CompiledWorkflow {
    /// Workflow `w` as compiled, planning within `routing`.
    pub fn new(w: &crate::config::WorkflowConfig, routing: Policy) -> Self {
        CompiledWorkflow {
            id: w.id.clone(),
            routing,
            timeouts: w.timeouts,
            retry: w.retry,
            fallback_on_refusal: w.fallback_on_refusal,
            on_invalid_output: w.on_invalid_output,
            on_malformed_event: w.on_malformed_event,
            continuation: w.continuation,
            hedge: w.hedge,
            data_class: w.data_class.clone(),
            priority: w.priority,
        }
    }
}

/// Where a key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyOrigin {
    /// The policy file.
    Config,
    /// `IssueApiKey`.
    Issued,
}

/// An API key as routers check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Id.
    pub id: ApiKeyId,
    /// Owner.
    pub org: OrgId,
    /// Hex SHA-256.
    pub sha256: String,
    /// Display prefix.
    pub prefix: String,
    /// Scopes; empty means all but [`ADMIN_SCOPE`].
    pub scopes: Vec<String>,
    /// Revoked keys stay listed but never authenticate.
    pub revoked: bool,
    /// Origin.
    pub origin: KeyOrigin,
}

/// The scope that reads every org's request records and, in the console, changes things; never
/// implied by a key without scopes.
pub const ADMIN_SCOPE: &str = "admin";

impl KeyRecord {
    /// Whether the key has [`ADMIN_SCOPE`].
    pub fn is_admin(&self) -> bool {
        self.scopes.iter().any(|s| s == ADMIN_SCOPE)
    }
}

/// An org's sealed key for a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedByok {
    /// Org.
    pub org: OrgId,
    /// Provider.
    pub provider: ProviderId,
    /// Sealed key.
    pub sealed: SealedSecret,
    /// What the provider grants the key, when declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<switchyard_config::catalog::Capacity>,
}

/// What an override does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverrideKind {
    /// Disable a provider (target = provider id).
    DisableProvider,
    /// Disable an endpoint (target = endpoint id).
    DisableEndpoint,
    /// Force a model for a workflow (target = workflow id, `model` set; org required).
    ForceModel,
}

/// An operator override with its audit fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// Id.
    pub id: String,
    /// Kind.
    pub kind: OverrideKind,
    /// Only this org; all orgs when absent.
    pub org: Option<OrgId>,
    /// Provider, endpoint or workflow id.
    pub target: String,
    /// The forced model.
    pub model: Option<ModelId>,
    /// Why.
    pub reason: String,
    /// Who.
    pub actor: String,
    /// When, Unix milliseconds.
    pub created_ms: u64,
}

impl CompiledPolicy {
    /// The key record a presented key authenticates as: looked up by hash, compared in constant
    /// time, never if revoked.
    pub fn authenticate(&self, presented: &str) -> Option<&KeyRecord> {
        self.keys.get(self.authenticate_index(presented)?)
    }

    /// Where in `keys` the record a presented key authenticates as is.
    pub fn authenticate_index(&self, presented: &str) -> Option<usize> {
        let h = crate::keys::hash(presented);
        let index = self.key_index.get_or_init(|| {
            self.keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.sha256.clone(), i))
                .collect()
        });
        let i = *index.get(&h)?;
        let k = self.keys.get(i)?;
        // The map found it by hash; the constant-time compare is the decision.
        (bool::from(k.sha256.as_bytes().ct_eq(h.as_bytes())) && !k.revoked).then_some(i)
    }

    /// A policy from its parts (the index is built on first use).
    pub fn new(
        orgs: Vec<CompiledOrg>,
        keys: Vec<KeyRecord>,
        byok: Vec<SealedByok>,
        overrides: Vec<Override>,
    ) -> Self {
        CompiledPolicy {
            orgs,
            keys,
            byok,
            overrides,
            budgets: Vec::new(),
            limits: Vec::new(),
            catalog: None,
            key_index: OnceLock::new(),
        }
    }

    /// The same policy with `budgets` in force.
    pub fn with_budgets(mut self, budgets: Vec<crate::budgets::DeclaredBudget>) -> Self {
        self.budgets = budgets;
        self
    }

    /// The same policy with `limits` in force.
    pub fn with_limits(mut self, limits: Vec<crate::limits::DeclaredLimit>) -> Self {
        self.limits = limits;
        self
    }

    /// The limits that apply to a request of `org` with key `key` through `workflow`.
    pub fn limits_for<'a>(
        &'a self,
        org: &'a str,
        key: &'a str,
        workflow: &'a str,
    ) -> impl Iterator<Item = &'a crate::limits::DeclaredLimit> + 'a {
        self.limits.iter().filter(move |l| {
            l.org.as_str() == org
                && l.key.as_deref().is_none_or(|k| k == key)
                && l.workflow.as_deref().is_none_or(|w| w == workflow)
        })
    }

    /// An org.
    pub fn org(&self, id: &str) -> Option<&CompiledOrg> {
        self.orgs.iter().find(|o| o.id.as_str() == id)
    }

    /// A workflow of `org`, or its default when `workflow` is `None`.
    pub fn workflow(&self, org: &str, workflow: Option<&str>) -> Option<&CompiledWorkflow> {
        let o = self.org(org)?;
        let id = workflow.unwrap_or(o.default_workflow.as_str());
        o.workflows.iter().find(|w| w.id.as_str() == id)
    }

    /// The providers for which `org` has its own key.
    pub fn byok_providers(&self, org: &str) -> Vec<ProviderId> {
        self.byok
            .iter()
            .filter(|b| b.org.as_str() == org)
            .map(|b| b.provider.clone())
            .collect()
    }
}
