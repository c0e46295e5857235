//! What an org and its workflow allow: the bounds a request can only narrow. The policy service
//! compiles orgs, workflows, data classes and operator overrides into this.

use serde::{Deserialize, Serialize};
use switchyard_core::{
    EndpointId, MaxPrice, ModelId, ProviderId, ProviderPreferences, Quantization,
};

/// Whether the org's own provider keys are used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ByokMode {
    /// The org's key first, shared capacity after.
    #[default]
    Prefer,
    /// Only the org's keys; never shared capacity.
    Strict,
    /// Never the org's keys.
    Off,
}

/// What a workflow gives up first when its first choice fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Degradation {
    /// Fall back broadly: other providers, then other models.
    #[default]
    Fallback,
    /// Same model only: other providers of it, never a substitute model.
    FailSafe,
    /// The preferred route only (the first model, on the first provider of the workflow's
    /// `order` when it has one): while it is down or out of capacity the request waits for it,
    /// up to its deadline, and is never served elsewhere. For `batch` workflows.
    Queue,
}

/// What to do when every candidate is ejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PanicMode {
    /// Try the ejected endpoints anyway (health may be stale; failing for sure is worse).
    #[default]
    TryAnyway,
    /// Fail with `no_eligible_route`.
    Fail,
}

/// The effective bounds for one request's org and workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Models used when the request names none; when non-empty, also the only models allowed.
    pub models: Vec<ModelId>,
    /// An operator forced this model for the workflow: it replaces whatever was asked.
    pub forced_model: Option<ModelId>,
    /// Only these providers (the org's allow-list and its data class's, intersected).
    pub providers_only: Option<Vec<ProviderId>>,
    /// Never these providers.
    pub providers_deny: Vec<ProviderId>,
    /// Operator-disabled providers (globally or for this org).
    pub disabled_providers: Vec<ProviderId>,
    /// Operator-disabled endpoints.
    pub disabled_endpoints: Vec<EndpointId>,
    /// Only providers processing in these regions.
    pub regions: Option<Vec<String>>,
    /// Workflow-level provider controls; the request's narrow them.
    pub preferences: ProviderPreferences,
    /// BYOK mode.
    pub byok: ByokMode,
    /// Degradation rule.
    pub degradation: Degradation,
    /// Panic rule.
    pub panic: PanicMode,
    /// Most attempts in one plan.
    pub attempt_cap: usize,
    /// For requests with tools: leave out endpoints whose measured tool-call validity is below
    /// this share (endpoints without a measured rate stay in).
    pub min_tool_validity: Option<f64>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            models: Vec::new(),
            forced_model: None,
            providers_only: None,
            providers_deny: Vec::new(),
            disabled_providers: Vec::new(),
            disabled_endpoints: Vec::new(),
            regions: None,
            preferences: ProviderPreferences::default(),
            byok: ByokMode::default(),
            degradation: Degradation::default(),
            panic: PanicMode::default(),
            attempt_cap: DEFAULT_ATTEMPT_CAP,
            min_tool_validity: None,
        }
    }
}

/// Attempts in a plan unless the policy says otherwise.
pub const DEFAULT_ATTEMPT_CAP: usize = 5;

/// Request preferences merged into the workflow's: every field can only get stricter.
pub(crate) fn narrow(
    workflow: &ProviderPreferences,
    request: Option<&ProviderPreferences>,
) -> ProviderPreferences {
    let Some(r) = request else {
        return workflow.clone();
    };
    let w = workflow;
    let only = match (w.only.is_empty(), r.only.is_empty()) {
        (true, _) => r.only.clone(),
        (false, true) => w.only.clone(),
        // Both set: the intersection. An empty intersection means nothing is allowed, which a
        // sentinel keeps distinct from "no list".
        (false, false) => {
            let both: Vec<String> = r
                .only
                .iter()
                .filter(|p| w.only.contains(p))
                .cloned()
                .collect();
            if both.is_empty() {
                vec![String::new()]
            } else {
                both
            }
        }
    };
    let mut ignore = w.ignore.clone();
    ignore.extend(r.ignore.iter().filter(|p| !w.ignore.contains(p)).cloned());
    let quantizations: Vec<Quantization> =
        match (w.quantizations.is_empty(), r.quantizations.is_empty()) {
            (true, _) => r.quantizations.clone(),
            (false, true) => w.quantizations.clone(),
            (false, false) => r
                .quantizations
                .iter()
                .filter(|q| w.quantizations.contains(q))
                .copied()
                .collect(),
        };
    let min = |a: Option<switchyard_core::Money>, b: Option<switchyard_core::Money>| match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    let (wp, rp) = (
        w.max_price.unwrap_or_default(),
        r.max_price.unwrap_or_default(),
    );
    let max_price = MaxPrice {
        prompt: min(wp.prompt, rp.prompt),
        completion: min(wp.completion, rp.completion),
        request: min(wp.request, rp.request),
    };
    let deny = |a: Option<switchyard_core::DataCollection>, b| {
        use switchyard_core::DataCollection::Deny;
        (a == Some(Deny) || b == Some(Deny))
            .then_some(Deny)
            .or(a)
            .or(b)
    };
    ProviderPreferences {
        order: if r.order.is_empty() {
            w.order.clone()
        } else {
            r.order.clone()
        },
        only,
        ignore,
        allow_fallbacks: match (w.allow_fallbacks, r.allow_fallbacks) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (a, b) => b.or(a),
        },
        require_parameters: (w.require_parameters == Some(true)
            || r.require_parameters == Some(true))
        .then_some(true),
        data_collection: deny(w.data_collection, r.data_collection),
        zdr: (w.zdr == Some(true) || r.zdr == Some(true)).then_some(true),
        sort: r.sort.or(w.sort),
        max_price: (max_price != MaxPrice::default()).then_some(max_price),
        quantizations,
    }
}
