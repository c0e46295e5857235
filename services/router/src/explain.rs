//! Explain (dry run): the route a request would take — the plan with the capacity each planned
//! key has left, every candidate left out with its reason, the prices and policy it was judged
//! under, the health, policy and catalog versions — from
//! the same code admission uses, without calling upstream or holding budget.

use serde_json::{Value, json};
use switchyard_core::{ChatRequest, Error};
use switchyard_proto::v1 as pb;

use crate::admission::{Admission, Routed};
use crate::edge::{AdmitOptions, Caller};

/// A request's route, explained.
pub struct Explanation {
    /// The seed the plan was drawn with.
    pub seed: u64,
    /// The caller's org.
    pub org: String,
    /// Policy version.
    pub policy_version: u64,
    /// Estimated prompt tokens.
    pub prompt_tokens: u32,
    /// The prompt tokens the hold prices (an upper bound).
    pub prompt_token_bound: u32,
    /// The route.
    pub routed: Routed,
    /// The request's own provider preferences, as sent.
    pub request_provider: Value,
    /// The client limits of its scopes.
    pub limits: Value,
    /// What each planned attempt's key has left on its endpoint, in plan order.
    pub capacity: Vec<Option<switchyard_routing::CapacityLeft>>,
}

impl Explanation {
    /// Checks and plans `req` for `caller` as admission does, and stops there.
    pub fn new(
        admission: &Admission,
        caller: &Caller,
        req: &ChatRequest,
        options: AdmitOptions,
    ) -> Result<Explanation, Error> {
        crate::admission::validate(req)?;
        crate::validate::Validator::for_request(req)?;
        let seed = options.seed.unwrap_or_else(rand::random);
        let routed = admission.route(&caller.policy, &caller.key, req, seed, false)?;
        metrics::counter!("switchyard_explain_total").increment(1);
        let org = caller.key.org.as_str();
        let capacity = routed
            .attempts
            .iter()
            .map(|p| {
                let owner = (p.attempt.key == switchyard_routing::KeySource::Byok).then_some(org);
                admission
                    .capacity()
                    .left(p.attempt.endpoint.as_str(), owner)
            })
            .collect();
        Ok(Explanation {
            seed,
            org: caller.key.org.to_string(),
            policy_version: caller.policy.version,
            prompt_tokens: req.estimated_prompt_tokens(),
            prompt_token_bound: req.prompt_token_bound(),
            limits: serde_json::to_value(
                caller
                    .policy
                    .compiled
                    .limits_for(
                        caller.key.org.as_str(),
                        caller.key.id.as_str(),
                        routed.workflow.id.as_str(),
                    )
                    .collect::<Vec<_>>(),
            )
            .unwrap_or(Value::Null),
            routed,
            capacity,
            request_provider: serde_json::to_value(&req.provider).unwrap_or(Value::Null),
        })
    }
}

impl Explanation {
    /// The routing bounds the request was judged under.
    fn policy(&self) -> Value {
        json!({
            "workflow": serde_json::to_value(&self.routed.workflow.routing).unwrap_or(Value::Null),
            "request_provider": self.request_provider,
            "limits": self.limits,
        })
    }

    /// The gRPC API's form (the HTTP API and `ctl --json` render it with [`json`]).
    pub fn to_proto(&self) -> pb::ExplainResponse {
        let r = &self.routed;
        let prices = &r.catalog.prices;
        pb::ExplainResponse {
            seed: self.seed,
            policy_version: self.policy_version,
            health_version: r.health_version,
            org_id: self.org.clone(),
            workflow: r.workflow.id.to_string(),
            models: r.models.iter().map(ToString::to_string).collect(),
            panic: r.panic,
            plan: r
                .attempts
                .iter()
                .zip(&self.capacity)
                .map(|(p, capacity)| {
                    let a = &p.attempt;
                    let price = prices.price(a.endpoint.as_str());
                    pb::PlannedEndpoint {
                        endpoint: a.endpoint.to_string(),
                        provider: a.provider.to_string(),
                        model: a.model.to_string(),
                        key: crate::convert::key_source(a.key),
                        state: a.state.as_str().to_string(),
                        prompt_nano_usd_per_mtok: price.map_or(0, |p| p.prompt.nanos()),
                        completion_nano_usd_per_mtok: price.map_or(0, |p| p.completion.nanos()),
                        request_nano_usd: price.map_or(0, |p| p.request.nanos()),
                        cached_prompt_nano_usd_per_mtok: price
                            .map_or(0, |p| p.cached_prompt.unwrap_or(p.prompt).nanos()),
                        capacity_json: capacity
                            .and_then(|c| serde_json::to_string(&c).ok())
                            .unwrap_or_default(),
                    }
                })
                .collect(),
            excluded: r.excluded.iter().map(crate::convert::excluded).collect(),
            max_cost_nano_usd: r.max_cost.nanos(),
            estimated_prompt_tokens: self.prompt_tokens,
            prompt_token_bound: self.prompt_token_bound,
            policy_json: self.policy().to_string(),
            catalog_version: r.catalog.version.clone(),
        }
    }
}

/// A left-out candidate as JSON (in an explanation and in a routing trace).
pub fn excluded_json(e: &pb::ExcludedEndpoint) -> Value {
    json!({
        "endpoint": e.endpoint, "provider": e.provider, "model": e.model, "key": e.key,
        "reason": e.reason, "detail": e.detail,
    })
}

/// The JSON form of an explanation, as `POST /v1/routing/explain` answers and `switchyard ctl
/// explain --json` prints. Money is exact decimal USD as text; the seed is text (JSON numbers
/// lose u64 precision in most clients), as in a response's routing trace.
pub fn json(x: &pb::ExplainResponse) -> Value {
    let usd = |nanos: i64| switchyard_core::Money::from_nanos(nanos).to_string();
    let plan: Vec<Value> = x
        .plan
        .iter()
        .map(|p| {
            json!({
                "endpoint": p.endpoint, "provider": p.provider, "model": p.model, "key": p.key,
                "state": p.state,
                "price": {
                    "prompt": usd(p.prompt_nano_usd_per_mtok),
                    "cached_prompt": usd(p.cached_prompt_nano_usd_per_mtok),
                    "completion": usd(p.completion_nano_usd_per_mtok),
                    "request": usd(p.request_nano_usd),
                },
                "capacity": serde_json::from_str::<Value>(&p.capacity_json).unwrap_or(Value::Null),
            })
        })
        .collect();
    let excluded: Vec<Value> = x.excluded.iter().map(excluded_json).collect();
    json!({
        "object": "routing.explanation",
        "dry_run": true,
        "seed": x.seed.to_string(),
        "org": x.org_id,
        "workflow": x.workflow,
        "policy_version": x.policy_version,
        "health_version": x.health_version,
        "catalog_version": x.catalog_version,
        "models": x.models,
        "panic": x.panic,
        "plan": plan,
        "excluded": excluded,
        "estimated_prompt_tokens": x.estimated_prompt_tokens,
        "prompt_token_bound": x.prompt_token_bound,
        "max_cost_usd": usd(x.max_cost_nano_usd),
        "policy": serde_json::from_str::<Value>(&x.policy_json).unwrap_or(Value::Null),
    })
}
