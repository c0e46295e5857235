//! Planning cost with 50 candidate endpoints (10 models × 5 providers, a request naming all 10
//! models, mixed health), printed as time per plan. `cargo bench -p switchyard-routing`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::hint::black_box;
use std::time::Instant;

use switchyard_config::Catalog;
use switchyard_core::{ChatRequest, EndpointState, HealthSnapshot};
use switchyard_routing::{PlanInput, Policy, RoutingCatalog, plan};

fn catalog() -> Catalog {
    let mut yaml = String::from("providers:\n");
    for p in 0..5 {
        yaml.push_str(&format!(
            "  - {{ id: p{p}, format: openai, base_url: 'http://p{p}', region: us, data_policy: {{ retains_prompts: false, trains_on_data: false, zero_retention: {} }} }}\n",
            p % 2 == 0
        ));
    }
    yaml.push_str("models:\n");
    for m in 0..10 {
        yaml.push_str(&format!(
            "  - {{ id: m{m}, context_length: 128000, max_output: 8000 }}\n"
        ));
    }
    yaml.push_str("endpoints:\n");
    for m in 0..10 {
        for p in 0..5 {
            yaml.push_str(&format!(
                "  - {{ model: m{m}, provider: p{p}, upstream_model: u, price: {{ prompt: '{}.{p}', completion: '{}' }}, supports: [tools, stop, seed, max_tokens, temperature] }}\n",
                m + 1,
                2 * (m + 1)
            ));
        }
    }
    Catalog::from_yaml("bench", &yaml).unwrap()
}

fn main() {
    let index = RoutingCatalog::new(&catalog());
    let mut req = ChatRequest::user("m0", &"hello world ".repeat(50));
    req.models = (0..10).map(|m| format!("m{m}")).collect();
    req.max_tokens = Some(512);
    let mut health = HealthSnapshot::default();
    for (i, state) in [
        EndpointState::Healthy,
        EndpointState::Degraded,
        EndpointState::Ejected,
    ]
    .iter()
    .cycle()
    .take(50)
    .enumerate()
    {
        health
            .endpoints
            .entry(format!("m{}@p{}", i / 5, i % 5).as_str().into())
            .or_default()
            .state = *state;
    }
    let policy = Policy {
        attempt_cap: 5,
        ..Policy::default()
    };
    let byok = vec!["p1".into()];
    let iterations = 20_000u64;
    for round in 0..3 {
        let started = Instant::now();
        let mut attempts = 0usize;
        for seed in 0..iterations {
            let input = PlanInput {
                catalog: &index,
                policy: &policy,
                request: &req,
                health: &health,
                byok: &byok,
                capacity: &switchyard_routing::Unlimited,
                seed,
            };
            attempts += black_box(plan(&input))
                .map(|p| p.attempts.len())
                .unwrap_or(0);
        }
        let per = started.elapsed() / iterations as u32;
        println!(
            "round {round}: {per:?} per plan over 50 candidates ({iterations} plans, {attempts} attempts)"
        );
    }
}
