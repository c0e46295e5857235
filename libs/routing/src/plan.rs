//! The planner: a pure function from (catalog, policy, request, health, BYOK keys, seed) to the
//! ordered attempts and, for every candidate left out, the reason.

use serde::Serialize;
use serde_json::json;
use switchyard_core::{
    ChatRequest, DataCollection, EndpointId, EndpointState, Error, ErrorClass, HealthSnapshot,
    ModelId, ModelKind, ProviderId, ProviderPreferences, Quantization,
};

use crate::capacity::CapacityTable;
use crate::index::{Candidate, RoutingCatalog};
use crate::order::{ASSUMED_OUTPUT_TOKENS, SplitMix, order};
use crate::policy::{ByokMode, Degradation, PanicMode, Policy, narrow};
use crate::reason::{Exclusion, ExclusionReason};

/// Which key an attempt uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// The org's own provider key.
    Byok,
    /// The gateway's shared key.
    Shared,
}

/// One planned attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// Endpoint.
    pub endpoint: EndpointId,
    /// Model.
    pub model: ModelId,
    /// Provider.
    pub provider: ProviderId,
    /// Key.
    pub key: KeySource,
    /// Health when planned.
    pub state: EndpointState,
}

/// The ordered attempts and the explained exclusions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Attempts, in order.
    pub attempts: Vec<Attempt>,
    /// Every candidate not in `attempts`, with its reason.
    pub excluded: Vec<Exclusion>,
    /// The models considered, in order.
    pub models: Vec<ModelId>,
    /// Every candidate was ejected and the panic rule admitted them anyway.
    pub panic: bool,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Neither the request nor the workflow names a model.
    #[error("no model given and the workflow has none")]
    NoModel,
    /// The request names a model the catalog does not have.
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    /// The request names only models of another kind than its API serves.
    #[error("model `{0}` is {1} model; this API needs {2} model")]
    WrongKind(String, &'static str, &'static str),
    /// Every candidate was excluded.
    #[error("no eligible route: every candidate was excluded")]
    NoEligibleRoute {
        /// Every candidate and its reason.
        excluded: Vec<Exclusion>,
    },
    /// Every candidate was excluded, some of them only until their capacity resets.
    #[error("every eligible endpoint is out of capacity for now")]
    NoCapacity {
        /// Every candidate and its reason.
        excluded: Vec<Exclusion>,
        /// The earliest reset among them, ms from planning.
        retry_after_ms: u64,
    },
}

impl PlanError {
    /// The client-facing error; `no_eligible_route` lists each candidate's reason.
    pub fn to_error(&self) -> Error {
        match self {
            PlanError::NoModel | PlanError::UnknownModel(_) | PlanError::WrongKind(..) => {
                Error::invalid(self.to_string())
            }
            PlanError::NoEligibleRoute { excluded } => {
                let list: Vec<_> = excluded
                    .iter()
                    .map(|e| json!({"endpoint": e.endpoint, "key": e.key, "reason": e.reason.as_str(), "detail": e.reason.to_string()}))
                    .collect();
                Error::new(ErrorClass::NoEligibleRoute, self.to_string())
                    .with_metadata("excluded", list.into())
            }
            PlanError::NoCapacity {
                excluded,
                retry_after_ms,
            } => {
                let list: Vec<_> = excluded
                    .iter()
                    .map(|e| json!({"endpoint": e.endpoint, "key": e.key, "reason": e.reason.as_str(), "detail": e.reason.to_string()}))
                    .collect();
                Error::new(
                    ErrorClass::RateLimited,
                    format!(
                        "{self}: the first is whole again in {:.1} s",
                        *retry_after_ms as f64 / 1000.0
                    ),
                )
                .with_retry_after(std::time::Duration::from_millis(*retry_after_ms))
                .with_metadata("reason", "capacity_exhausted".into())
                .with_metadata("excluded", list.into())
            }
        }
    }
}

/// Everything the planner reads.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The compiled catalog.
    pub catalog: &'a RoutingCatalog,
    /// The org and workflow bounds.
    pub policy: &'a Policy,
    /// The request.
    pub request: &'a ChatRequest,
    /// Health.
    pub health: &'a HealthSnapshot,
    /// Providers for which the org has its own key.
    pub byok: &'a [ProviderId],
    /// What each key has left on each endpoint.
    pub capacity: &'a dyn CapacityTable,
    /// Seed of the default weighting.
    pub seed: u64,
}

struct Ctx<'a> {
    input: &'a PlanInput<'a>,
    prefs: ProviderPreferences,
    used: Vec<switchyard_core::Parameter>,
    needed: u32,
    max_tokens: Option<u32>,
    /// The prompt at the bound any tokenizer stays under (what capacity reserves).
    prompt_bound: u32,
    /// Acceptable quantizations: `None` for any; an empty list (disjoint workflow and request
    /// lists) for none.
    quantizations: Option<Vec<Quantization>>,
    /// The `order` lists of every layer (workflow, request) that disallows fallbacks: a provider
    /// must be in each.
    no_fallback_orders: Vec<Vec<String>>,
}

fn contains(list: &[String], id: &str) -> bool {
    list.iter().any(|p| p == id)
}

impl Ctx<'_> {
    /// The first rule `c` (with `key`, for the `index`-th model) fails, or its health state.
    fn judge(
        &self,
        c: &Candidate,
        key: KeySource,
        index: usize,
    ) -> Result<EndpointState, ExclusionReason> {
        let policy = self.input.policy;
        let prefs = &self.prefs;
        let provider = c.provider.as_str();
        let state = self.input.health.get(c.endpoint.as_str()).state;
        if policy.disabled_endpoints.contains(&c.endpoint)
            || policy.disabled_providers.contains(&c.provider)
            || state == EndpointState::Disabled
        {
            return Err(ExclusionReason::Disabled);
        }
        if policy.forced_model.is_none()
            && !policy.models.is_empty()
            && !policy.models.contains(&c.model)
        {
            return Err(ExclusionReason::ModelNotAllowed);
        }
        if policy.degradation == Degradation::FailSafe && index > 0 {
            return Err(ExclusionReason::NoSubstitution);
        }
        if policy.degradation == Degradation::Queue
            && (index > 0
                || policy
                    .preferences
                    .order
                    .first()
                    .is_some_and(|first| first != provider))
        {
            return Err(ExclusionReason::NotPreferred);
        }
        if policy
            .providers_only
            .as_ref()
            .is_some_and(|only| !only.contains(&c.provider))
            || policy.providers_deny.contains(&c.provider)
        {
            return Err(ExclusionReason::PolicyDenied);
        }
        if let Some(regions) = &policy.regions
            && !c.region.as_ref().is_some_and(|r| regions.contains(r))
        {
            return Err(ExclusionReason::Region);
        }
        if prefs.data_collection == Some(DataCollection::Deny) && !c.data_policy.no_collection() {
            return Err(ExclusionReason::DataPolicy);
        }
        if prefs.zdr == Some(true) && !c.data_policy.zero_retention {
            return Err(ExclusionReason::Zdr);
        }
        if !prefs.only.is_empty() && !contains(&prefs.only, provider) {
            return Err(ExclusionReason::NotInOnly);
        }
        if contains(&prefs.ignore, provider) {
            return Err(ExclusionReason::Ignored);
        }
        if self
            .no_fallback_orders
            .iter()
            .any(|order| !contains(order, provider))
        {
            return Err(ExclusionReason::FallbacksDisabled);
        }
        if self
            .quantizations
            .as_ref()
            .is_some_and(|q| !q.contains(&c.quantization.unwrap_or(Quantization::Unknown)))
        {
            return Err(ExclusionReason::Quantization);
        }
        if let Some(max) = prefs.max_price {
            for (which, price, ceiling) in [
                ("prompt", c.price.prompt, max.prompt),
                ("completion", c.price.completion, max.completion),
                ("request", c.price.request, max.request),
            ] {
                if let Some(ceiling) = ceiling
                    && price > ceiling
                {
                    return Err(ExclusionReason::OverMaxPrice {
                        which,
                        price,
                        max: ceiling,
                    });
                }
            }
        }
        // A parameter the endpoint's format cannot carry would be dropped on the way: always
        // excluded. One it does not list is excluded when the answer's shape depends on it, or
        // when the request requires every parameter.
        let strict = prefs.require_parameters == Some(true);
        if let Some(p) = self.used.iter().find(|p| {
            !c.carries(**p) || ((strict || p.always_required()) && !c.supports.contains(p))
        }) {
            return Err(ExclusionReason::MissingParameter { parameter: *p });
        }
        if self.needed > c.context_length {
            return Err(ExclusionReason::ContextTooSmall {
                needed: self.needed,
                available: c.context_length,
            });
        }
        if let Some(out) = self.max_tokens
            && out > c.max_output
        {
            return Err(ExclusionReason::ContextTooSmall {
                needed: out,
                available: c.max_output,
            });
        }
        match (policy.byok, key) {
            (ByokMode::Strict, KeySource::Shared) => return Err(ExclusionReason::ByokRequired),
            (ByokMode::Off, KeySource::Byok) => return Err(ExclusionReason::ByokDisabled),
            _ => {}
        }
        if let Some(min) = policy.min_tool_validity
            && !self.input.request.tools.is_empty()
            && let Some(rate) = self.input.health.get(c.endpoint.as_str()).tool_validity
            && rate < min
        {
            return Err(ExclusionReason::LowToolValidity {
                percent: (rate * 100.0).floor() as u32,
                min_percent: (min * 100.0).ceil() as u32,
            });
        }
        // Before health: a key out of capacity waits for its reset, and the panic rule (which
        // tries ejected endpoints anyway) must not send to it meanwhile.
        if let Some(left) = self.input.capacity.left(&c.endpoint, key) {
            let output = self.max_tokens.unwrap_or(c.max_output);
            let reserve = u64::from(self.prompt_bound) + u64::from(output);
            if let Some((which, l)) = left.short_for(reserve) {
                return Err(ExclusionReason::CapacityExhausted {
                    which,
                    remaining: l.remaining,
                    reset_in_ms: l.reset_in_ms,
                });
            }
        }
        if state == EndpointState::Ejected {
            return Err(ExclusionReason::Unhealthy);
        }
        Ok(state)
    }
}

fn article(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::Chat => "a chat",
        ModelKind::Embedding => "an embedding",
    }
}

/// The models to consider, in order, checked against the catalog, and the requested ones it does
/// not know or that are of another kind than the request's API serves. As OpenRouter documents
/// for `models`, an unknown model in the list is skipped and the next one tried; only when none
/// is known is it an error. A workflow's own list may mix kinds: the other kind is left out.
fn models(input: &PlanInput<'_>) -> Result<(Vec<ModelId>, Vec<Exclusion>), PlanError> {
    let mut from_workflow = false;
    let names: Vec<&str> = match &input.policy.forced_model {
        Some(forced) => vec![forced.as_str()],
        None => {
            let asked = input.request.requested_models();
            if asked.is_empty() {
                from_workflow = true;
                input.policy.models.iter().map(ModelId::as_str).collect()
            } else {
                asked
            }
        }
    };
    if names.is_empty() {
        return Err(PlanError::NoModel);
    }
    let want = input.request.kind;
    let mut out: Vec<ModelId> = Vec::new();
    let mut skipped: Vec<Exclusion> = Vec::new();
    let mut wrong: Option<(&str, ModelKind)> = None;
    for name in &names {
        let reason = match input.catalog.kind(name) {
            Some(k) if k == want => None,
            Some(k) if from_workflow => {
                wrong.get_or_insert((name, k));
                continue;
            }
            Some(k) => {
                wrong.get_or_insert((name, k));
                Some(ExclusionReason::WrongKind { kind: k })
            }
            None => Some(ExclusionReason::UnknownModel),
        };
        match reason {
            None if !out.iter().any(|m| m.as_str() == *name) => out.push(ModelId::from(*name)),
            None => {}
            Some(reason) if !skipped.iter().any(|e| e.model.as_str() == *name) => {
                skipped.push(Exclusion {
                    endpoint: EndpointId::from(*name),
                    model: ModelId::from(*name),
                    provider: ProviderId::from(""),
                    key: KeySource::Shared,
                    reason,
                })
            }
            Some(_) => {}
        }
    }
    if out.is_empty() {
        return Err(match wrong {
            Some((name, kind)) => {
                PlanError::WrongKind(name.to_string(), article(kind), article(want))
            }
            None => PlanError::UnknownModel(names[0].to_string()),
        });
    }
    Ok((out, skipped))
}

/// Plans one request.
pub fn plan(input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    let (models, skipped) = models(input)?;
    let request = input.request;
    let max_tokens = request.max_output_tokens();
    let prompt = request.estimated_prompt_tokens();
    let ctx = Ctx {
        input,
        prefs: narrow(&input.policy.preferences, request.provider.as_ref()),
        used: request.used_parameters(),
        needed: prompt.saturating_add(max_tokens.unwrap_or(0)),
        max_tokens,
        prompt_bound: request.prompt_token_bound(),
        no_fallback_orders: [Some(&input.policy.preferences), request.provider.as_ref()]
            .into_iter()
            .flatten()
            .filter(|p| p.allow_fallbacks == Some(false) && !p.order.is_empty())
            .map(|p| p.order.clone())
            .collect(),
        quantizations: quantizations(
            &input.policy.preferences.quantizations,
            request
                .provider
                .as_ref()
                .map(|p| p.quantizations.as_slice())
                .unwrap_or(&[]),
        ),
    };

    // (model index, candidate, key, state)
    let mut eligible: Vec<(usize, &Candidate, KeySource, EndpointState)> = Vec::new();
    let mut ejected: Vec<(usize, &Candidate, KeySource)> = Vec::new();
    let mut excluded: Vec<Exclusion> = skipped;
    for (index, model) in models.iter().enumerate() {
        for c in input.catalog.candidates(model.as_str()).unwrap_or(&[]) {
            let keys: &[KeySource] = if input.byok.contains(&c.provider) {
                &[KeySource::Byok, KeySource::Shared]
            } else {
                &[KeySource::Shared]
            };
            for key in keys {
                match ctx.judge(c, *key, index) {
                    Ok(state) => eligible.push((index, c, *key, state)),
                    Err(reason) => {
                        if reason == ExclusionReason::Unhealthy {
                            ejected.push((index, c, *key));
                        }
                        excluded.push(exclusion(c, *key, reason));
                    }
                }
            }
        }
    }

    // A queueing workflow waits for its route to recover rather than try it ejected.
    let panic = eligible.is_empty()
        && !ejected.is_empty()
        && input.policy.panic == PanicMode::TryAnyway
        && input.policy.degradation != Degradation::Queue;
    if panic {
        excluded.retain(|e| e.reason != ExclusionReason::Unhealthy);
        eligible.extend(
            ejected
                .into_iter()
                .map(|(i, c, k)| (i, c, k, EndpointState::Ejected)),
        );
    }

    let mut rng = SplitMix::new(input.seed);
    let output = max_tokens.unwrap_or(ASSUMED_OUTPUT_TOKENS);
    let mut attempts = Vec::new();
    for index in 0..models.len() {
        let entries: Vec<_> = eligible.iter().filter(|e| e.0 == index).collect();
        // Order endpoints, then give each its entries with the org's key first.
        let mut cands: Vec<&Candidate> = Vec::new();
        for e in &entries {
            if !cands.iter().any(|c| c.endpoint == e.1.endpoint) {
                cands.push(e.1);
            }
        }
        let mut idx: Vec<usize> = (0..cands.len()).collect();
        order(
            &mut idx,
            &cands,
            &ctx.prefs.order,
            ctx.prefs.sort,
            input.health,
            (prompt, output),
            input.request.stream,
            &mut rng,
        );
        for i in idx {
            let mut mine: Vec<_> = entries
                .iter()
                .filter(|e| e.1.endpoint == cands[i].endpoint)
                .collect();
            mine.sort_by_key(|e| e.2);
            for e in mine {
                attempts.push(Attempt {
                    endpoint: e.1.endpoint.clone(),
                    model: e.1.model.clone(),
                    provider: e.1.provider.clone(),
                    key: e.2,
                    state: e.3,
                });
            }
        }
    }

    let cap = input.policy.attempt_cap.max(1);
    if attempts.len() > cap {
        for a in attempts.split_off(cap) {
            excluded.push(Exclusion {
                endpoint: a.endpoint,
                model: a.model,
                provider: a.provider,
                key: a.key,
                reason: ExclusionReason::AttemptCap,
            });
        }
    }
    if attempts.is_empty() {
        let reset = excluded
            .iter()
            .filter_map(|e| match e.reason {
                ExclusionReason::CapacityExhausted { reset_in_ms, .. } => Some(reset_in_ms),
                _ => None,
            })
            .min();
        return Err(match reset {
            Some(retry_after_ms) => PlanError::NoCapacity {
                excluded,
                retry_after_ms,
            },
            None => PlanError::NoEligibleRoute { excluded },
        });
    }
    Ok(Plan {
        attempts,
        excluded,
        models,
        panic,
    })
}

fn quantizations(workflow: &[Quantization], request: &[Quantization]) -> Option<Vec<Quantization>> {
    match (workflow.is_empty(), request.is_empty()) {
        (true, true) => None,
        (false, true) => Some(workflow.to_vec()),
        (true, false) => Some(request.to_vec()),
        (false, false) => Some(
            request
                .iter()
                .filter(|q| workflow.contains(q))
                .copied()
                .collect(),
        ),
    }
}

fn exclusion(c: &Candidate, key: KeySource, reason: ExclusionReason) -> Exclusion {
    Exclusion {
        endpoint: c.endpoint.clone(),
        model: c.model.clone(),
        provider: c.provider.clone(),
        key,
        reason,
    }
}
