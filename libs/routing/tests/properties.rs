//! Properties that hold for random catalogs, policies, requests, health and seeds:
//! no plan holds an endpoint a rule excludes; the same inputs give the same plan; every
//! candidate is either planned or excluded, exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use proptest::prelude::*;
use switchyard_config::Catalog;
use switchyard_config::catalog::{
    DataPolicy, Endpoint, KeyRef, Model, Price, Provider, WireFormat,
};
use switchyard_core::{
    ChatRequest, DataCollection, EndpointHealth, EndpointState, HealthSnapshot, MaxPrice, Message,
    Money, Parameter, ProviderPreferences, Quantization, Role, Tool,
};
use switchyard_routing::{
    ByokMode, Degradation, KeySource, PanicMode, Plan, PlanError, PlanInput, Policy,
    RoutingCatalog, plan,
};

const PROVIDERS: [&str; 5] = ["p0", "p1", "p2", "p3", "p4"];
const MODELS: [&str; 3] = ["m0", "m1", "m2"];
const REGIONS: [&str; 2] = ["us", "eu"];
const QUANTS: [Quantization; 3] = [Quantization::Fp8, Quantization::Fp16, Quantization::Int4];
const PARAMS: [Parameter; 4] = [
    Parameter::Tools,
    Parameter::ToolChoice,
    Parameter::Seed,
    Parameter::Stop,
];

fn subset<T: Clone + std::fmt::Debug + 'static>(
    items: &'static [T],
) -> impl Strategy<Value = Vec<T>> {
    sparse(items, 0.5)
}

/// Each item with probability `p`.
fn sparse<T: Clone + std::fmt::Debug + 'static>(
    items: &'static [T],
    p: f64,
) -> impl Strategy<Value = Vec<T>> {
    prop::collection::vec(prop::bool::weighted(p), items.len()).prop_map(move |mask| {
        items
            .iter()
            .zip(mask)
            .filter(|(_, m)| *m)
            .map(|(i, _)| i.clone())
            .collect()
    })
}

fn catalog() -> impl Strategy<Value = Catalog> {
    let w = |p| prop::bool::weighted(p);
    let providers = prop::collection::vec((w(0.5), w(0.3), w(0.3), 0usize..3), 5);
    let models = prop::collection::vec(500u32..50_000, 3);
    let endpoints = prop::collection::vec(
        (
            prop::bool::weighted(0.7),
            0i64..10_000_000_000,
            0i64..20_000_000_000,
            0i64..3,
            sparse(&PARAMS, 0.7),
            0usize..4,
        ),
        15,
    );
    (providers, models, endpoints).prop_map(|(providers, contexts, endpoints)| {
        let providers: Vec<Provider> = PROVIDERS
            .iter()
            .zip(providers)
            .map(|(id, (retains, trains, zdr, region))| Provider {
                id: (*id).into(),
                format: WireFormat::Openai,
                base_url: format!("http://{id}"),
                key: KeyRef::None,
                region: REGIONS.get(region).map(|r| r.to_string()),
                data_policy: DataPolicy {
                    retains_prompts: retains && !zdr,
                    trains_on_data: trains,
                    zero_retention: zdr,
                },
                preset: None,
                quirks: Default::default(),
                api_version: None,
                project: None,
                location: None,
                aws_region: None,
                aws_profile: None,
            })
            .collect();
        let models: Vec<Model> = MODELS
            .iter()
            .zip(contexts)
            .map(|(id, ctx)| Model {
                id: (*id).into(),
                context_length: ctx,
                max_output: ctx.min(4000),
                kind: Default::default(),
            })
            .collect();
        let endpoints = endpoints
            .into_iter()
            .enumerate()
            .filter(|(_, e)| e.0)
            .map(
                |(i, (_, prompt, completion, request, supports, quant))| Endpoint {
                    id: None,
                    model: MODELS[i / 5].into(),
                    provider: PROVIDERS[i % 5].into(),
                    upstream_model: "u".into(),
                    price: Price {
                        prompt: Money::from_nanos(prompt),
                        completion: Money::from_nanos(completion),
                        cached_prompt: None,
                        request: Money::from_nanos(request * 1_000_000),
                    },
                    supports,
                    quantization: QUANTS.get(quant).copied(),
                    context_length: None,
                    max_output: None,
                    capacity: None,
                },
            )
            .collect();
        Catalog {
            providers,
            models,
            endpoints,
        }
    })
}

fn names(v: Vec<&'static str>) -> Vec<String> {
    v.into_iter().map(str::to_string).collect()
}

fn prefs() -> impl Strategy<Value = ProviderPreferences> {
    let w = |p| prop::bool::weighted(p);
    (
        (
            sparse(&PROVIDERS, 0.3),
            prop::option::weighted(0.2, subset(&PROVIDERS)),
            sparse(&PROVIDERS, 0.1),
            prop::option::weighted(0.3, any::<bool>()),
        ),
        (
            w(0.2),
            w(0.15),
            w(0.1),
            prop::option::weighted(0.15, subset(&QUANTS)),
        ),
        prop::option::weighted(0.2, 0i64..15_000_000_000),
    )
        .prop_map(
            |(
                (order, only, ignore, allow_fallbacks),
                (req_params, deny, zdr, quantizations),
                max_prompt,
            )| {
                ProviderPreferences {
                    order: names(order),
                    only: names(only.unwrap_or_default()),
                    ignore: names(ignore),
                    allow_fallbacks,
                    require_parameters: req_params.then_some(true),
                    data_collection: deny.then_some(DataCollection::Deny),
                    zdr: zdr.then_some(true),
                    sort: None,
                    max_price: max_prompt.map(|p| MaxPrice {
                        prompt: Some(Money::from_nanos(p)),
                        ..Default::default()
                    }),
                    quantizations: quantizations.unwrap_or_default(),
                }
            },
        )
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        (
            prop::option::weighted(0.2, subset(&PROVIDERS)),
            sparse(&PROVIDERS, 0.1),
            sparse(&PROVIDERS, 0.05),
        ),
        (prop::option::weighted(0.15, subset(&REGIONS)), prefs()),
        (
            prop::sample::select(vec![0usize, 0, 0, 1, 2]),
            prop::bool::weighted(0.2),
            any::<bool>(),
            1usize..8,
        ),
    )
        .prop_map(
            |(
                (only, deny, disabled),
                (regions, preferences),
                (byok, fail_safe, panic_fail, cap),
            )| Policy {
                providers_only: only.map(|v| v.into_iter().map(Into::into).collect()),
                providers_deny: deny.into_iter().map(Into::into).collect(),
                disabled_providers: disabled.into_iter().map(Into::into).collect(),
                regions: regions.map(names),
                preferences,
                byok: [ByokMode::Prefer, ByokMode::Strict, ByokMode::Off][byok],
                degradation: if fail_safe {
                    Degradation::FailSafe
                } else {
                    Degradation::Fallback
                },
                panic: if panic_fail {
                    PanicMode::Fail
                } else {
                    PanicMode::TryAnyway
                },
                attempt_cap: cap,
                ..Policy::default()
            },
        )
}

fn request() -> impl Strategy<Value = ChatRequest> {
    let w = |p| prop::bool::weighted(p);
    (
        subset(&MODELS),
        w(0.25),
        w(0.3),
        prop::option::of(1u32..3000),
        0usize..16_000,
        prefs(),
        w(0.4),
    )
        .prop_map(
            |(models, tools, seed, max_tokens, prompt_chars, provider, with_prefs)| ChatRequest {
                models: names(if models.is_empty() {
                    vec!["m0"]
                } else {
                    models
                }),
                messages: vec![Message::text(Role::User, "x".repeat(prompt_chars))],
                tools: if tools {
                    vec![Tool {
                        name: "t".into(),
                        description: None,
                        parameters: serde_json::json!({}),
                        strict: None,
                    }]
                } else {
                    Vec::new()
                },
                seed: seed.then_some(1),
                max_tokens,
                provider: with_prefs.then_some(provider),
                ..Default::default()
            },
        )
}

fn health() -> impl Strategy<Value = HealthSnapshot> {
    let states = [
        EndpointState::Healthy,
        EndpointState::Degraded,
        EndpointState::Ejected,
        EndpointState::Unknown,
        EndpointState::Disabled,
    ];
    let pick = prop::sample::select(vec![0usize, 0, 0, 0, 1, 1, 3, 3, 2, 2, 4]);
    prop::collection::vec(pick, 15).prop_map(move |picks| HealthSnapshot {
        version: 1,
        endpoints: picks
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    format!("{}@{}", MODELS[i / 5], PROVIDERS[i % 5])
                        .as_str()
                        .into(),
                    EndpointHealth {
                        state: states[s],
                        ..Default::default()
                    },
                )
            })
            .collect(),
    })
}

/// Every rule checked from scratch, except health (checked apart because of the panic rule).
fn violates(
    cat: &Catalog,
    policy: &Policy,
    req: &ChatRequest,
    a: &switchyard_routing::Attempt,
    model_index: usize,
) -> Option<&'static str> {
    let e = cat.endpoints.iter().find(|e| e.id() == a.endpoint).unwrap();
    let p = cat.provider(e.provider.as_str()).unwrap();
    let m = cat.model(e.model.as_str()).unwrap();
    let id = p.id.to_string();
    let mut layers = vec![&policy.preferences];
    if let Some(r) = &req.provider {
        layers.push(r);
    }
    if policy.disabled_providers.contains(&p.id) {
        return Some("disabled");
    }
    if policy.degradation == Degradation::FailSafe && model_index > 0 {
        return Some("fail_safe");
    }
    if policy
        .providers_only
        .as_ref()
        .is_some_and(|o| !o.contains(&p.id))
        || policy.providers_deny.contains(&p.id)
    {
        return Some("policy");
    }
    if let Some(regions) = &policy.regions
        && !p.region.as_ref().is_some_and(|r| regions.contains(r))
    {
        return Some("region");
    }
    for l in &layers {
        if l.data_collection == Some(DataCollection::Deny) && !p.data_policy.no_collection() {
            return Some("data_policy");
        }
        if l.zdr == Some(true) && !p.data_policy.zero_retention {
            return Some("zdr");
        }
        if !l.only.is_empty() && !l.only.contains(&id) {
            return Some("only");
        }
        if l.ignore.contains(&id) {
            return Some("ignore");
        }
        if l.allow_fallbacks == Some(false) && !l.order.is_empty() && !l.order.contains(&id) {
            return Some("fallbacks");
        }
        if !l.quantizations.is_empty()
            && !l
                .quantizations
                .contains(&e.quantization.unwrap_or(Quantization::Unknown))
        {
            return Some("quantization");
        }
        if l.max_price
            .and_then(|mp| mp.prompt)
            .is_some_and(|max| e.price.prompt > max)
        {
            return Some("max_price");
        }
        if l.require_parameters == Some(true)
            && req
                .used_parameters()
                .iter()
                .any(|u| !e.supports.contains(u))
        {
            return Some("parameters");
        }
    }
    if !req.tools.is_empty() && !e.supports.contains(&Parameter::Tools) {
        return Some("tools");
    }
    let needed = req.estimated_prompt_tokens() + req.max_tokens.unwrap_or(0);
    if needed > m.context_length || req.max_tokens.is_some_and(|t| t > m.max_output) {
        return Some("context");
    }
    match (policy.byok, a.key) {
        (ByokMode::Strict, KeySource::Shared) | (ByokMode::Off, KeySource::Byok) => {
            return Some("byok");
        }
        _ => {}
    }
    None
}

fn all_candidates(
    cat: &Catalog,
    models: &[switchyard_core::ModelId],
    byok: &[switchyard_core::ProviderId],
) -> BTreeSet<(String, KeySource)> {
    let mut out = BTreeSet::new();
    for m in models {
        for e in cat.endpoints_of(m.as_str()) {
            out.insert((e.id().to_string(), KeySource::Shared));
            if byok.contains(&e.provider) {
                out.insert((e.id().to_string(), KeySource::Byok));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn plans_respect_every_rule(
        cat in catalog(),
        policy in policy(),
        req in request(),
        health in health(),
        byok in subset(&PROVIDERS),
        seed in any::<u64>(),
    ) {
        let index = RoutingCatalog::new(&cat);
        let byok: Vec<switchyard_core::ProviderId> = byok.into_iter().map(Into::into).collect();
        let input = PlanInput { catalog: &index, policy: &policy, request: &req, health: &health, byok: &byok, capacity: &switchyard_routing::Unlimited, seed };
        let result = plan(&input);
        prop_assert_eq!(&result, &plan(&input), "same inputs and seed, same plan");
        let (planned, excluded, panic, models): (Vec<_>, Vec<_>, bool, Vec<_>) = match result {
            Ok(Plan { attempts, excluded, panic, models }) => (attempts, excluded, panic, models),
            Err(PlanError::NoEligibleRoute { excluded }) => {
                let models = req.models.iter().map(|m| m.as_str().into()).collect::<Vec<switchyard_core::ModelId>>();
                (Vec::new(), excluded, false, models)
            }
            Err(other) => return Err(TestCaseError::fail(format!("unexpected {other}"))),
        };
        prop_assert!(planned.len() <= policy.attempt_cap);
        for a in &planned {
            let model_index = models.iter().position(|m| *m == a.model).unwrap();
            prop_assert_eq!(violates(&cat, &policy, &req, a, model_index), None, "{:?} in the plan", a);
            let state = health.get(a.endpoint.as_str()).state;
            prop_assert!(state != EndpointState::Disabled, "disabled endpoint planned");
            if !panic {
                prop_assert!(state != EndpointState::Ejected, "ejected endpoint planned without panic");
            }
        }
        if panic {
            prop_assert_eq!(policy.panic, PanicMode::TryAnyway);
            prop_assert!(planned.iter().all(|a| a.state == EndpointState::Ejected));
        }
        // Every candidate exactly once, in the plan or in the exclusions.
        let mut seen = BTreeSet::new();
        for (endpoint, key) in planned.iter().map(|a| (a.endpoint.to_string(), a.key)).chain(excluded.iter().map(|e| (e.endpoint.to_string(), e.key))) {
            prop_assert!(seen.insert((endpoint.clone(), key)), "{} {:?} twice", endpoint, key);
        }
        prop_assert_eq!(seen, all_candidates(&cat, &models, &byok));
    }
}
