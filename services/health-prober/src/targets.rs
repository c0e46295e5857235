//! What a prober watches: the endpoints of one catalog version as probe targets, with their
//! shared keys resolved and what a probe of each costs.

use std::collections::HashMap;

use switchyard_config::Catalog;
use switchyard_core::ModelId;
use switchyard_providers::{Target, resolve_key};

use crate::probe::ProbeTarget;

/// Prompt tokens a probe is assumed to cost.
const PROBE_PROMPT_TOKENS: u64 = 12;

/// The endpoints of one catalog version, as probe targets.
#[derive(Debug, Default)]
pub struct Targets {
    /// The catalog version they come from.
    pub version: String,
    /// One per endpoint.
    pub list: Vec<ProbeTarget>,
    /// Endpoints per model (the ejection cap keeps one of each).
    pub(crate) model_sizes: HashMap<ModelId, usize>,
}

impl Targets {
    /// Every endpoint of `catalog`. Keys are resolved now; an endpoint whose key is missing is
    /// still watched (its probes fail as upstream_auth).
    pub fn from_catalog(catalog: &Catalog, version: String) -> Self {
        let mut list = Vec::new();
        let mut model_sizes: HashMap<ModelId, usize> = HashMap::new();
        for e in &catalog.endpoints {
            let key = catalog
                .provider(e.provider.as_str())
                .map(|p| resolve_key(&p.key))
                .transpose();
            let key = match key {
                Ok(k) => k.flatten(),
                Err(msg) => {
                    tracing::warn!(endpoint = %e.id(), "provider key unavailable: {msg}");
                    None
                }
            };
            let Some(target) = Target::from_catalog(catalog, e, key) else {
                continue;
            };
            let cost = e
                .price
                .prompt_per_mtok()
                .cost_of(PROBE_PROMPT_TOKENS)
                .saturating_add(e.price.completion_per_mtok().cost_of(1))
                .saturating_add(e.price.request);
            *model_sizes.entry(e.model.clone()).or_default() += 1;
            let kind = catalog
                .model(e.model.as_str())
                .map(|m| m.kind)
                .unwrap_or_default();
            list.push(ProbeTarget {
                kind,
                target,
                model: e.model.clone(),
                cost,
            });
        }
        Targets {
            version,
            list,
            model_sizes,
        }
    }

    /// The target of `endpoint`.
    pub fn get(&self, endpoint: &str) -> Option<&ProbeTarget> {
        self.list
            .iter()
            .find(|t| t.target.endpoint.as_str() == endpoint)
    }
}
