//! The catalog compiled for planning: endpoints with their provider's facts resolved, grouped by
//! model, built once per catalog version rather than per request.

use switchyard_config::Catalog;
use switchyard_config::catalog::{DataPolicy, Price, WireFormat};
use switchyard_core::{
    EndpointId, FastMap, ModelId, ModelKind, Parameter, ProviderId, Quantization,
};

/// One endpoint with what the planner needs to judge it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Endpoint id.
    pub endpoint: EndpointId,
    /// Model.
    pub model: ModelId,
    /// The wire format its provider speaks.
    pub format: WireFormat,
    /// Parameters its provider refuses although the format carries them (catalog quirks).
    pub unsupported: Vec<Parameter>,
    /// Provider.
    pub provider: ProviderId,
    /// Provider region.
    pub region: Option<String>,
    /// Provider data policy.
    pub data_policy: DataPolicy,
    /// Prices.
    pub price: Price,
    /// Supported parameters.
    pub supports: Vec<Parameter>,
    /// Quantization.
    pub quantization: Option<Quantization>,
    /// Context window.
    pub context_length: u32,
    /// Output cap.
    pub max_output: u32,
}

impl Candidate {
    /// Whether a request using `p` can be sent here without dropping it.
    pub fn carries(&self, p: Parameter) -> bool {
        self.format.carries(p) && !self.unsupported.contains(&p)
    }
}

/// The catalog as the planner reads it.
#[derive(Debug, Clone, Default)]
pub struct RoutingCatalog {
    by_model: FastMap<ModelId, Vec<Candidate>>,
    kinds: FastMap<ModelId, ModelKind>,
    /// Model ids in catalog order.
    order: Vec<ModelId>,
}

impl RoutingCatalog {
    /// Compiles a validated catalog.
    pub fn new(catalog: &Catalog) -> Self {
        let mut by_model: FastMap<ModelId, Vec<Candidate>> = catalog
            .models
            .iter()
            .map(|m| (m.id.clone(), Vec::new()))
            .collect();
        for e in &catalog.endpoints {
            let (Some(p), Some(m)) = (
                catalog.provider(e.provider.as_str()),
                catalog.model(e.model.as_str()),
            ) else {
                continue;
            };
            by_model.entry(m.id.clone()).or_default().push(Candidate {
                endpoint: e.id(),
                model: m.id.clone(),
                format: p.format,
                unsupported: p.quirks.unsupported.clone(),
                provider: p.id.clone(),
                region: p.region.clone(),
                data_policy: p.data_policy,
                price: e.price,
                supports: e.supports.clone(),
                quantization: e.quantization,
                context_length: e.context_length.unwrap_or(m.context_length),
                max_output: e.max_output.unwrap_or(m.max_output),
            });
        }
        let kinds = catalog
            .models
            .iter()
            .map(|m| (m.id.clone(), m.kind))
            .collect();
        let order = catalog.models.iter().map(|m| m.id.clone()).collect();
        RoutingCatalog {
            by_model,
            kinds,
            order,
        }
    }

    /// What kind of model `model` is; `None` for an unknown model.
    pub fn kind(&self, model: &str) -> Option<ModelKind> {
        self.kinds.get(model).copied()
    }

    /// The endpoints of `model` in catalog order; `None` for an unknown model.
    pub fn candidates(&self, model: &str) -> Option<&[Candidate]> {
        self.by_model.get(model).map(Vec::as_slice)
    }

    /// Every model id, in catalog order.
    pub fn models(&self) -> &[ModelId] {
        &self.order
    }

    /// Whether `model` exists.
    pub fn has_model(&self, model: &str) -> bool {
        self.by_model.contains_key(model)
    }
}
