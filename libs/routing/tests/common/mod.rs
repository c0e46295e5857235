//! Shared builders for the planner tests.
#![allow(dead_code)]

use std::collections::HashMap;
use switchyard_config::Catalog;
use switchyard_core::{ChatRequest, HealthSnapshot};

use switchyard_core::EndpointId;
use switchyard_routing::{
    CapacityLeft, CapacityTable, KeySource, Plan, PlanError, PlanInput, Policy, RoutingCatalog,
    plan,
};

/// Capacity by endpoint and key; anything absent is unknown.
#[derive(Debug, Default)]
pub struct Capacity(pub HashMap<(String, KeySource), CapacityLeft>);

impl CapacityTable for Capacity {
    fn left(&self, endpoint: &EndpointId, key: KeySource) -> Option<CapacityLeft> {
        self.0.get(&(endpoint.to_string(), key)).copied()
    }
}

pub const CATALOG: &str = r#"
providers:
  - { id: a, format: openai, base_url: "http://a", region: us, data_policy: { retains_prompts: true, trains_on_data: false, zero_retention: false } }
  - { id: b, format: openai, base_url: "http://b", region: eu, data_policy: { retains_prompts: false, trains_on_data: false, zero_retention: true } }
  - { id: c, format: anthropic, base_url: "http://c", region: us, data_policy: { retains_prompts: false, trains_on_data: true, zero_retention: false } }
  - { id: d, format: openai, base_url: "http://d", region: eu, data_policy: { retains_prompts: false, trains_on_data: false, zero_retention: false } }
models:
  - { id: small, context_length: 8000, max_output: 1000 }
  - { id: large, context_length: 200000, max_output: 8000 }
endpoints:
  - { model: small, provider: a, upstream_model: s, price: { prompt: 1, completion: 2 }, quantization: fp16,
      supports: [tools, tool_choice, response_format, json_schema, stop, seed, temperature, max_tokens] }
  - { model: small, provider: b, upstream_model: s, price: { prompt: 2, completion: 4 }, quantization: fp8,
      supports: [stop, temperature, max_tokens] }
  - { model: small, provider: c, upstream_model: s, price: { prompt: "0.5", completion: 1 }, quantization: int4,
      supports: [tools, tool_choice, stop, temperature, max_tokens] }
  - { model: small, provider: d, upstream_model: s, price: { prompt: 4, completion: 8, request: "0.01" },
      supports: [tools, tool_choice, response_format, json_schema, stop, seed, temperature, max_tokens] }
  - { model: large, provider: a, upstream_model: l, price: { prompt: 3, completion: 15 },
      supports: [tools, tool_choice, response_format, json_schema, stop, seed, temperature, max_tokens] }
  - { model: large, provider: b, upstream_model: l, price: { prompt: 5, completion: 20 },
      supports: [tools, tool_choice, response_format, json_schema, stop, seed, temperature, max_tokens] }
"#;

pub fn catalog() -> RoutingCatalog {
    RoutingCatalog::new(&Catalog::from_yaml("test catalog", CATALOG).unwrap())
}

pub struct Setup {
    pub catalog: RoutingCatalog,
    pub policy: Policy,
    pub request: ChatRequest,
    pub health: HealthSnapshot,
    pub byok: Vec<switchyard_core::ProviderId>,
    pub capacity: Capacity,
    pub seed: u64,
}

impl Setup {
    pub fn new(request: serde_json::Value) -> Self {
        Setup {
            catalog: catalog(),
            policy: Policy::default(),
            request: serde_json::from_value(request).unwrap(),
            health: HealthSnapshot::default(),
            byok: Vec::new(),
            capacity: Capacity::default(),
            seed: 1,
        }
    }

    pub fn small() -> Self {
        Self::new(
            serde_json::json!({"model": "small", "messages": [{"role": "user", "content": "hi"}]}),
        )
    }

    pub fn run(&self) -> Result<Plan, PlanError> {
        plan(&PlanInput {
            catalog: &self.catalog,
            policy: &self.policy,
            request: &self.request,
            health: &self.health,
            byok: &self.byok,
            capacity: &self.capacity,
            seed: self.seed,
        })
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.run()
            .unwrap()
            .attempts
            .iter()
            .map(|a| a.endpoint.to_string())
            .collect()
    }

    /// The reason label each excluded endpoint got.
    pub fn reasons(&self) -> Vec<(String, &'static str)> {
        let excluded = match self.run() {
            Ok(p) => p.excluded,
            Err(
                PlanError::NoEligibleRoute { excluded } | PlanError::NoCapacity { excluded, .. },
            ) => excluded,
            Err(e) => panic!("{e}"),
        };
        excluded
            .iter()
            .map(|e| (e.endpoint.to_string(), e.reason.as_str()))
            .collect()
    }
}

pub fn set_health(
    health: &mut HealthSnapshot,
    endpoint: &str,
    state: switchyard_core::EndpointState,
) {
    health.endpoints.entry(endpoint.into()).or_default().state = state;
}
