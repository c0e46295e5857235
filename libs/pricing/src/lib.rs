//! The price book: every endpoint's prices from the catalog, the cost of a finished request
//! from its usage, and the maximum cost of a request before it runs (what a budget hold reserves).
//! Integer nano-USD throughout, rounded up so nothing is under-charged.
//!
//! Routers price requests with it (holds, `usage.cost`) and billing charges what they report, so
//! the rule lives here, in one place, and no service links another to reach it.

use switchyard_config::Catalog;
use switchyard_config::catalog::Price;
use switchyard_core::{EndpointId, FastMap, Money, Usage};

/// Prices by endpoint.
#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    prices: FastMap<EndpointId, (Price, u32)>,
}

impl PriceBook {
    /// From a validated catalog.
    pub fn from_catalog(catalog: &Catalog) -> Self {
        let prices = catalog
            .endpoints
            .iter()
            .filter_map(|e| {
                let max_out = e
                    .max_output
                    .or_else(|| catalog.model(e.model.as_str()).map(|m| m.max_output))?;
                Some((e.id(), (e.price, max_out)))
            })
            .collect();
        PriceBook { prices }
    }

    /// An endpoint's prices.
    pub fn price(&self, endpoint: &str) -> Option<Price> {
        self.prices.get(endpoint).map(|(p, _)| *p)
    }

    /// The cost of `usage` at `endpoint`: uncached prompt, cached prompt and completion tokens,
    /// plus the per-request fee.
    pub fn cost(&self, endpoint: &str, usage: &Usage) -> Option<Money> {
        let (p, _) = self.prices.get(endpoint)?;
        let cached = u64::from(usage.cached_prompt_tokens.min(usage.prompt_tokens));
        let uncached = u64::from(usage.prompt_tokens) - cached;
        Some(
            p.prompt_per_mtok()
                .cost_of(uncached)
                .saturating_add(p.cached_prompt_per_mtok().cost_of(cached))
                .saturating_add(
                    p.completion_per_mtok()
                        .cost_of(u64::from(usage.completion_tokens)),
                )
                .saturating_add(p.request),
        )
    }

    /// The most a request can cost on any of `endpoints`: its estimated prompt plus `max_tokens`
    /// (or the endpoint's output cap) at the most expensive of them.
    pub fn max_cost(
        &self,
        endpoints: &[EndpointId],
        prompt_tokens: u32,
        max_tokens: Option<u32>,
    ) -> Money {
        endpoints
            .iter()
            .filter_map(|e| {
                let (_, max_out) = self.prices.get(e)?;
                let usage = Usage {
                    prompt_tokens,
                    completion_tokens: max_tokens.unwrap_or(*max_out).min(*max_out),
                    ..Default::default()
                };
                self.cost(e.as_str(), &usage)
            })
            .max()
            .unwrap_or(Money::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_and_maximum_costs() {
        let catalog = Catalog::from_yaml(
            "c",
            r#"
providers:
  - { id: a, format: openai, base_url: "http://a", data_policy: { retains_prompts: false, trains_on_data: false, zero_retention: true } }
models:
  - { id: m, context_length: 10000, max_output: 1000 }
endpoints:
  - { model: m, provider: a, upstream_model: x, price: { prompt: 2, completion: 8, cached_prompt: "0.5", request: "0.001" } }
  - { id: cheap, model: m, provider: a, upstream_model: y, price: { prompt: 1, completion: 1 }, max_output: 100 }
"#,
        )
        .unwrap();
        let book = PriceBook::from_catalog(&catalog);
        let usage = Usage {
            prompt_tokens: 1_000,
            cached_prompt_tokens: 400,
            completion_tokens: 100,
            cost: None,
            ..Usage::default()
        };
        // 600 × $2/M + 400 × $0.5/M + 100 × $8/M + $0.001 = 1200 + 200 + 800 + 1000 µ$.
        assert_eq!(book.cost("m@a", &usage), Some(Money::from_nanos(3_200_000)));
        assert_eq!(book.cost("nope", &usage), None);
        let eps = vec![EndpointId::from("m@a"), EndpointId::from("cheap")];
        // 500 prompt + 1000 output (the cap) at m@a: 1000 + 8000 + 1000 µ$.
        assert_eq!(
            book.max_cost(&eps, 500, None),
            Money::from_nanos(10_000_000)
        );
        assert_eq!(
            book.max_cost(&eps, 500, Some(10)),
            Money::from_nanos(1_000_000 + 80_000 + 1_000_000)
        );
        assert_eq!(book.max_cost(&[], 500, None), Money::ZERO);
    }
}
