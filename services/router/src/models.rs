//! What a caller may use: `GET /v1/models` and gRPC `ListModels` list the models the caller's org
//! (one workflow, when named) can be routed to, each with the endpoints that would serve it.
//!
//! Whether a model is usable is the planner's answer, not a second set of rules: each catalog
//! model is planned for the workflow as a request naming only that model, with no health (an
//! outage does not hide a model) and the org's own keys, and the endpoints the plan would try
//! (or holds back only by its attempt cap) are the model's. A model the workflow does not allow,
//! or whose every endpoint the org's provider lists, data class, regions, operator overrides or
//! the workflow's provider controls rule out, is not listed.
//!
//! Each entry has OpenRouter's fields: `context_length`, `pricing` (USD per token, as decimal
//! text, of the cheapest endpoint: `prompt`, `completion`, `request`), `top_provider`
//! (`context_length`, `max_completion_tokens`), `supported_parameters` (any endpoint's), and
//! Switchyard's `kind`, `max_output` and `providers`.

use serde_json::{Value, json};
use switchyard_core::{ChatRequest, Error, HealthSnapshot, ModelId, ModelKind, Money};
use switchyard_routing::{Candidate, ExclusionReason, PlanInput, RoutingCatalog, plan};

use crate::edge::Caller;

/// One model the caller may use, with the endpoints that would serve it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The model.
    pub id: ModelId,
    /// Chat or embedding.
    pub kind: ModelKind,
    /// Its usable endpoints, in catalog order.
    pub endpoints: Vec<Candidate>,
}

impl Listed {
    /// The largest context window among its endpoints.
    pub fn context_length(&self) -> u32 {
        self.endpoints
            .iter()
            .map(|c| c.context_length)
            .max()
            .unwrap_or(0)
    }

    /// The largest output cap among its endpoints.
    pub fn max_output(&self) -> u32 {
        self.endpoints
            .iter()
            .map(|c| c.max_output)
            .max()
            .unwrap_or(0)
    }

    /// Its providers, each once, in catalog order.
    pub fn providers(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in &self.endpoints {
            if !out.iter().any(|p| p == c.provider.as_str()) {
                out.push(c.provider.to_string());
            }
        }
        out
    }
}

/// The models `caller` may use through `workflow` (every workflow of its org when `None`).
pub fn listing(
    catalog: &RoutingCatalog,
    caller: &Caller,
    workflow: Option<&str>,
) -> Result<Vec<Listed>, Error> {
    let org = caller.key.org.as_str();
    let compiled = &caller.policy.compiled;
    let workflows: Vec<_> = match workflow {
        Some(w) => vec![compiled.workflow(org, Some(w)).ok_or_else(|| {
            Error::new(
                switchyard_core::ErrorClass::ForbiddenByPolicy,
                format!("workflow `{w}` does not exist for this org"),
            )
        })?],
        None => compiled
            .org(org)
            .map(|o| o.workflows.iter().collect())
            .unwrap_or_default(),
    };
    let byok = compiled.byok_providers(org);
    let health = HealthSnapshot::default();
    let mut out: Vec<Listed> = Vec::new();
    for model in catalog.models() {
        let (Some(kind), Some(candidates)) = (
            catalog.kind(model.as_str()),
            catalog.candidates(model.as_str()),
        ) else {
            continue;
        };
        let mut usable: Vec<&Candidate> = Vec::new();
        for w in &workflows {
            let mut req = ChatRequest::user(model.as_str(), "");
            req.kind = kind;
            req.workflow = Some(w.id.to_string());
            let Ok(p) = plan(&PlanInput {
                catalog,
                policy: &w.routing,
                request: &req,
                health: &health,
                byok: &byok,
                // What a caller may use does not change while a key waits for its reset.
                capacity: &switchyard_routing::Unlimited,
                seed: 0,
            }) else {
                continue;
            };
            let planned = p.attempts.iter().map(|a| (&a.endpoint, &a.model)).chain(
                p.excluded
                    .iter()
                    .filter(|e| e.reason == ExclusionReason::AttemptCap)
                    .map(|e| (&e.endpoint, &e.model)),
            );
            for (endpoint, m) in planned {
                if m == model
                    && let Some(c) = candidates.iter().find(|c| &c.endpoint == endpoint)
                    && !usable.iter().any(|u| u.endpoint == c.endpoint)
                {
                    usable.push(c);
                }
            }
        }
        if usable.is_empty() {
            continue;
        }
        // Catalog order, whatever order the plans tried them in.
        let endpoints = candidates
            .iter()
            .filter(|c| usable.iter().any(|u| u.endpoint == c.endpoint))
            .cloned()
            .collect();
        out.push(Listed {
            id: model.clone(),
            kind,
            endpoints,
        });
    }
    Ok(out)
}

/// USD per token, as decimal text, of a price per 1M tokens.
pub fn per_token(per_mtok: Money) -> String {
    // nano-USD per 1M tokens = 1e-15 USD per token.
    let nanos = per_mtok.nanos();
    let digits = format!("{:016}", nanos.unsigned_abs());
    let (int, frac) = digits.split_at(digits.len() - 15);
    let frac = frac.trim_end_matches('0');
    let sign = if nanos < 0 { "-" } else { "" };
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// The `/v1/models` document of `listed`.
pub fn json(listed: &[Listed]) -> Value {
    let data: Vec<Value> = listed
        .iter()
        .map(|m| {
            let cheapest = m.endpoints.iter().min_by_key(|c| {
                (
                    c.price.prompt.nanos() + c.price.completion.nanos(),
                    c.price.request.nanos(),
                )
            });
            let top = m.endpoints.iter().max_by_key(|c| c.context_length);
            let mut params: Vec<&str> = Vec::new();
            for c in &m.endpoints {
                for p in &c.supports {
                    if !params.contains(&p.as_str()) {
                        params.push(p.as_str());
                    }
                }
            }
            json!({
                "id": m.id,
                "object": "model",
                "owned_by": "switchyard",
                "name": m.id,
                "kind": m.kind.as_str(),
                "context_length": m.context_length(),
                "max_output": m.max_output(),
                "pricing": cheapest.map(|c| json!({
                    "prompt": per_token(c.price.prompt),
                    "completion": per_token(c.price.completion),
                    "request": c.price.request.to_string(),
                })),
                "top_provider": top.map(|c| json!({
                    "provider": c.provider,
                    "context_length": c.context_length,
                    "max_completion_tokens": c.max_output,
                })),
                "supported_parameters": params,
                "providers": m.providers(),
            })
        })
        .collect();
    json!({"object": "list", "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_per_million_become_prices_per_token() {
        let usd = |s: &str| Money::parse_usd(s).unwrap_or(Money::ZERO);
        assert_eq!(per_token(usd("0.15")), "0.00000015");
        assert_eq!(per_token(usd("3")), "0.000003");
        assert_eq!(per_token(usd("0")), "0");
        assert_eq!(per_token(usd("1000000")), "1");
        assert_eq!(per_token(usd("0.000000001")), "0.000000000000001");
    }
}
