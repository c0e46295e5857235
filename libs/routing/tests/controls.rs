//! One test per control, the panic rule, BYOK, precedence and the default weighting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Setup, set_health};
use serde_json::json;
use switchyard_core::{DataCollection, EndpointState, Money, Sort};
use switchyard_routing::{ByokMode, Degradation, KeySource, PanicMode, PlanError};

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn req(extra: serde_json::Value) -> Setup {
    let mut body = json!({"model": "small", "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    Setup::new(body)
}

#[test]
fn default_plan_holds_every_endpoint_and_is_deterministic() {
    let mut s = Setup::small();
    let first = s.run().unwrap();
    assert_eq!(
        sorted(s.endpoints()),
        ["small@a", "small@b", "small@c", "small@d"]
    );
    assert_eq!(s.run().unwrap(), first, "same inputs and seed, same plan");
    let mut orders = std::collections::HashSet::new();
    for seed in 0..200 {
        s.seed = seed;
        orders.insert(s.endpoints());
    }
    assert!(orders.len() > 1, "the seed changes the default order");
}

#[test]
fn order_comes_first() {
    let s = req(json!({"provider": {"order": ["d", "b"], "sort": "price"}}));
    assert_eq!(s.endpoints(), ["small@d", "small@b", "small@c", "small@a"]);
}

#[test]
fn only_and_ignore() {
    let s = req(json!({"provider": {"only": ["a", "b"]}}));
    assert_eq!(sorted(s.endpoints()), ["small@a", "small@b"]);
    assert!(s.reasons().contains(&("small@c".into(), "not_in_only")));
    let s = req(json!({"provider": {"ignore": ["a"]}}));
    assert!(!s.endpoints().contains(&"small@a".to_string()));
    assert_eq!(s.reasons(), [("small@a".to_string(), "ignored")]);
}

#[test]
fn no_fallbacks_means_only_the_ordered_providers() {
    let s = req(json!({"provider": {"order": ["b"], "allow_fallbacks": false}}));
    assert_eq!(s.endpoints(), ["small@b"]);
    assert_eq!(
        s.reasons()
            .iter()
            .filter(|r| r.1 == "fallbacks_disabled")
            .count(),
        3
    );
}

#[test]
fn parameters_tools_always_and_others_on_request() {
    let s = req(json!({"seed": 3}));
    assert_eq!(
        sorted(s.endpoints()),
        ["small@a", "small@b", "small@d"],
        "seed alone does not require an endpoint to list it, but the Anthropic format cannot carry it"
    );
    assert!(
        s.reasons()
            .contains(&("small@c".into(), "missing_parameter"))
    );
    let s = req(json!({"seed": 3, "provider": {"require_parameters": true}}));
    assert_eq!(sorted(s.endpoints()), ["small@a", "small@d"]);
    assert!(
        s.reasons()
            .contains(&("small@b".into(), "missing_parameter"))
    );
    let s =
        req(json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}));
    assert_eq!(
        sorted(s.endpoints()),
        ["small@a", "small@c", "small@d"],
        "tools always require support"
    );
    let s = req(
        json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}),
    );
    assert_eq!(sorted(s.endpoints()), ["small@a", "small@d"]);
}

#[test]
fn data_collection_and_zdr() {
    let s = req(json!({"provider": {"data_collection": "deny"}}));
    assert_eq!(sorted(s.endpoints()), ["small@b", "small@d"]);
    assert_eq!(
        s.reasons().iter().filter(|r| r.1 == "data_policy").count(),
        2
    );
    let s = req(json!({"provider": {"zdr": true}}));
    assert_eq!(s.endpoints(), ["small@b"]);
}

#[test]
fn quantizations() {
    let s = req(json!({"provider": {"quantizations": ["fp8", "int4"]}}));
    assert_eq!(sorted(s.endpoints()), ["small@b", "small@c"]);
    let s = req(json!({"provider": {"quantizations": ["unknown"]}}));
    assert_eq!(
        s.endpoints(),
        ["small@d"],
        "an undisclosed quantization counts as unknown"
    );
}

#[test]
fn a_request_order_cannot_widen_a_no_fallback_workflow() {
    let mut s = req(json!({"provider": {"order": ["b", "a"]}}));
    s.policy.preferences.order = vec!["a".into()];
    s.policy.preferences.allow_fallbacks = Some(false);
    assert_eq!(s.endpoints(), ["small@a"]);
    assert!(
        s.reasons()
            .contains(&("small@b".into(), "fallbacks_disabled"))
    );
}

#[test]
fn disjoint_quantization_lists_allow_nothing() {
    let mut s = req(json!({"provider": {"quantizations": ["int4"]}}));
    s.policy.preferences.quantizations = vec![switchyard_core::Quantization::Fp8];
    let err = s.run().unwrap_err();
    let PlanError::NoEligibleRoute { excluded } = err else {
        panic!()
    };
    assert!(excluded.iter().all(|e| e.reason.as_str() == "quantization"));
}

#[test]
fn max_price() {
    let s = req(json!({"provider": {"max_price": {"prompt": 1}}}));
    assert_eq!(sorted(s.endpoints()), ["small@a", "small@c"]);
    let plan_err = req(json!({"provider": {"max_price": {"prompt": "0.1"}}}))
        .run()
        .unwrap_err();
    let PlanError::NoEligibleRoute { excluded } = plan_err else {
        panic!()
    };
    assert!(
        excluded
            .iter()
            .all(|e| e.reason.as_str() == "over_max_price")
    );
    let s = req(json!({"provider": {"max_price": {"request": 0}}}));
    assert!(
        !s.endpoints().contains(&"small@d".to_string()),
        "d charges per request"
    );
}

#[test]
fn sorts() {
    let s = req(json!({"provider": {"sort": "price"}}));
    assert_eq!(s.endpoints(), ["small@c", "small@a", "small@b", "small@d"]);
    let mut s = req(json!({"provider": {"sort": "latency"}}));
    for (e, ms) in [("small@a", 300.0), ("small@b", 100.0), ("small@c", 200.0)] {
        s.health.endpoints.entry(e.into()).or_default().latency_ms = Some(ms);
    }
    assert_eq!(
        s.endpoints(),
        ["small@b", "small@c", "small@a", "small@d"],
        "unmeasured last"
    );
    // A streamed request is ordered by time to first token where the endpoint has one.
    let mut s = req(json!({"provider": {"sort": "latency"}, "stream": true}));
    for (e, ms, ttft) in [
        ("small@a", 300.0, Some(20.0)),
        ("small@b", 100.0, Some(90.0)),
        ("small@c", 200.0, None),
    ] {
        let h = s.health.endpoints.entry(e.into()).or_default();
        h.latency_ms = Some(ms);
        h.ttft_ms = ttft;
    }
    assert_eq!(
        s.endpoints(),
        ["small@a", "small@b", "small@c", "small@d"],
        "by ttft, then latency where no ttft is known"
    );
    let mut s = req(json!({"provider": {"sort": "throughput"}}));
    for (e, tps) in [("small@a", 50.0), ("small@d", 90.0)] {
        s.health.endpoints.entry(e.into()).or_default().tokens_per_s = Some(tps);
    }
    assert_eq!(&s.endpoints()[..2], ["small@d", "small@a"]);
    assert_eq!(
        s.request.provider.as_ref().unwrap().sort,
        Some(Sort::Throughput)
    );
}

#[test]
fn context_fit_falls_back_to_a_larger_model() {
    let long = "word ".repeat(8000);
    let s = Setup::new(
        json!({"models": ["small", "large"], "messages": [{"role": "user", "content": long}]}),
    );
    let plan = s.run().unwrap();
    assert!(plan.attempts.iter().all(|a| a.model.as_str() == "large"));
    assert!(
        s.reasons()
            .iter()
            .filter(|r| r.0.starts_with("small"))
            .all(|r| r.1 == "context_too_small")
    );
    let s = req(json!({"max_tokens": 5000, "models": ["small", "large"]}));
    assert!(
        s.endpoints().iter().all(|e| e.starts_with("large")),
        "output above small's cap"
    );
}

#[test]
fn health_ejects_and_orders_degraded_last() {
    let mut s = Setup::small();
    set_health(&mut s.health, "small@a", EndpointState::Ejected);
    set_health(&mut s.health, "small@c", EndpointState::Degraded);
    for seed in 0..50 {
        s.seed = seed;
        let e = s.endpoints();
        assert_eq!(e.len(), 3);
        assert_eq!(
            e.last().unwrap(),
            "small@c",
            "degraded after healthy and unknown"
        );
    }
    assert_eq!(s.reasons(), [("small@a".to_string(), "unhealthy")]);
    set_health(&mut s.health, "small@b", EndpointState::Disabled);
    assert!(s.reasons().contains(&("small@b".into(), "disabled")));
}

#[test]
fn panic_rule_when_everything_is_ejected() {
    let mut s = Setup::small();
    for e in ["small@a", "small@b", "small@c", "small@d"] {
        set_health(&mut s.health, e, EndpointState::Ejected);
    }
    s.policy.panic = PanicMode::TryAnyway;
    let plan = s.run().unwrap();
    assert!(plan.panic);
    assert_eq!(plan.attempts.len(), 4);
    assert!(plan.excluded.is_empty());
    s.policy.panic = PanicMode::Fail;
    let err = s.run().unwrap_err();
    let e = err.to_error();
    assert_eq!(e.class, switchyard_core::ErrorClass::NoEligibleRoute);
    assert_eq!(e.metadata["excluded"].as_array().unwrap().len(), 4);
    assert_eq!(e.metadata["excluded"][0]["reason"], "unhealthy");
    // One healthy endpoint left: no panic, the ejected ones stay out.
    s.policy.panic = PanicMode::TryAnyway;
    set_health(&mut s.health, "small@d", EndpointState::Healthy);
    let plan = s.run().unwrap();
    assert!(!plan.panic);
    assert_eq!(plan.attempts.len(), 1);
}

#[test]
fn byok_modes() {
    let mut s = Setup::small();
    s.byok = vec!["b".into()];
    s.policy.preferences.sort = Some(Sort::Price);
    let plan = s.run().unwrap();
    let b: Vec<_> = plan
        .attempts
        .iter()
        .filter(|a| a.provider.as_str() == "b")
        .map(|a| a.key)
        .collect();
    assert_eq!(
        b,
        [KeySource::Byok, KeySource::Shared],
        "the org's key right before shared capacity"
    );

    s.policy.byok = ByokMode::Strict;
    let plan = s.run().unwrap();
    assert_eq!(plan.attempts.len(), 1);
    assert_eq!(
        (plan.attempts[0].endpoint.as_str(), plan.attempts[0].key),
        ("small@b", KeySource::Byok)
    );
    assert_eq!(
        plan.excluded
            .iter()
            .filter(|e| e.reason.as_str() == "byok_required")
            .count(),
        4
    );

    s.policy.byok = ByokMode::Off;
    let plan = s.run().unwrap();
    assert!(plan.attempts.iter().all(|a| a.key == KeySource::Shared));
    assert_eq!(plan.excluded.len(), 1);
    assert_eq!(plan.excluded[0].reason.as_str(), "byok_disabled");
}

#[test]
fn a_request_can_only_narrow_its_policy() {
    let mut s = req(json!({"provider": {"only": ["c"], "data_collection": "allow", "zdr": false}}));
    s.policy.providers_deny = vec!["c".into()];
    let err = s.run().unwrap_err();
    let PlanError::NoEligibleRoute { excluded } = err else {
        panic!()
    };
    assert!(
        excluded
            .iter()
            .any(|e| e.endpoint.as_str() == "small@c" && e.reason.as_str() == "policy_denied")
    );

    // The workflow demands zero retention; the request's zdr: false cannot lift it.
    let mut s = req(json!({"provider": {"zdr": false, "data_collection": "allow"}}));
    s.policy.preferences.zdr = Some(true);
    assert_eq!(s.endpoints(), ["small@b"]);
    s.policy.preferences.zdr = None;
    s.policy.preferences.data_collection = Some(DataCollection::Deny);
    assert_eq!(sorted(s.endpoints()), ["small@b", "small@d"]);

    // Allow-lists intersect; a disjoint request list allows nothing.
    let mut s = req(json!({"provider": {"only": ["c"]}}));
    s.policy.preferences.only = vec!["a".into(), "b".into()];
    assert!(s.run().is_err());
    // Price ceilings take the stricter.
    let mut s = req(json!({"provider": {"max_price": {"prompt": 10}}}));
    s.policy.preferences.max_price = Some(switchyard_core::MaxPrice {
        prompt: Some(Money::from_usd(1)),
        ..Default::default()
    });
    assert_eq!(sorted(s.endpoints()), ["small@a", "small@c"]);
}

#[test]
fn org_lists_regions_and_operator_disables() {
    let mut s = Setup::small();
    s.policy.providers_only = Some(vec!["a".into(), "b".into(), "c".into()]);
    s.policy.regions = Some(vec!["eu".into()]);
    assert_eq!(s.endpoints(), ["small@b"]);
    let reasons = s.reasons();
    assert!(reasons.contains(&("small@d".into(), "policy_denied")));
    assert!(reasons.contains(&("small@a".into(), "region")));
    let mut s = Setup::small();
    s.policy.disabled_endpoints = vec!["small@a".into()];
    s.policy.disabled_providers = vec!["c".into()];
    assert_eq!(sorted(s.endpoints()), ["small@b", "small@d"]);
    assert_eq!(s.reasons().iter().filter(|r| r.1 == "disabled").count(), 2);
}

#[test]
fn models_fallbacks_fail_safe_forced_and_cap() {
    let mut s = Setup::new(
        json!({"models": ["small", "large"], "messages": [{"role": "user", "content": "hi"}]}),
    );
    s.policy.attempt_cap = 10;
    let plan = s.run().unwrap();
    assert_eq!(plan.attempts.len(), 6);
    assert!(
        plan.attempts[..4]
            .iter()
            .all(|a| a.model.as_str() == "small"),
        "models in order"
    );

    s.policy.degradation = Degradation::FailSafe;
    assert!(s.endpoints().iter().all(|e| e.starts_with("small")));
    assert_eq!(
        s.reasons()
            .iter()
            .filter(|r| r.1 == "no_substitution")
            .count(),
        2
    );

    s.policy.degradation = Degradation::Fallback;
    s.policy.attempt_cap = 2;
    let plan = s.run().unwrap();
    assert_eq!(plan.attempts.len(), 2);
    assert_eq!(
        plan.excluded
            .iter()
            .filter(|e| e.reason.as_str() == "attempt_cap")
            .count(),
        4
    );

    s.policy.attempt_cap = 10;
    s.policy.forced_model = Some("large".into());
    assert!(s.endpoints().iter().all(|e| e.starts_with("large")));

    let mut s =
        Setup::new(json!({"model": "large", "messages": [{"role": "user", "content": "hi"}]}));
    s.policy.models = vec!["small".into()];
    assert!(s.reasons().iter().all(|r| r.1 == "model_not_allowed"));
    let s = Setup::new(json!({"messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(s.run().unwrap_err(), PlanError::NoModel);
    let s = Setup::new(json!({"model": "nope", "messages": []}));
    assert_eq!(s.run().unwrap_err(), PlanError::UnknownModel("nope".into()));
    // In `models`, an unknown model is skipped with its reason and the next one planned, as
    // OpenRouter documents; only a list with no known model is refused.
    let s = Setup::new(
        json!({"models": ["nope", "large"], "messages": [{"role": "user", "content": "hi"}]}),
    );
    let plan = s.run().unwrap();
    assert!(plan.attempts.iter().all(|a| a.model.as_str() == "large"));
    let unknown: Vec<_> = plan
        .excluded
        .iter()
        .filter(|e| e.reason.as_str() == "unknown_model")
        .map(|e| e.model.to_string())
        .collect();
    assert_eq!(unknown, ["nope"]);
    let s = Setup::new(
        json!({"models": ["nope", "gone"], "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(s.run().unwrap_err(), PlanError::UnknownModel("nope".into()));
}

#[test]
fn default_split_follows_inverse_square_price() {
    // a, b and d have estimated costs (prompt 3 + output 256 tokens) of about 1:2:4 plus d's
    // request fee; c is ignored to keep three.
    let mut s = req(json!({"provider": {"ignore": ["c"]}, "max_tokens": 256}));
    let costs: Vec<f64> = ["small@a", "small@b", "small@d"]
        .iter()
        .map(|e| {
            let c = s
                .catalog
                .candidates("small")
                .unwrap()
                .iter()
                .find(|c| c.endpoint.as_str() == *e)
                .unwrap();
            switchyard_routing::inverse_square(switchyard_routing::estimated_cost(
                c,
                s.request.estimated_prompt_tokens(),
                256,
            ))
        })
        .collect();
    let total: f64 = costs.iter().sum();
    let expected: Vec<f64> = costs.iter().map(|w| w / total).collect();
    let n = 20_000;
    let mut firsts = [0u32; 3];
    for seed in 0..n {
        s.seed = seed;
        let first = s.endpoints()[0].clone();
        let i = ["small@a", "small@b", "small@d"]
            .iter()
            .position(|e| *e == first)
            .unwrap();
        firsts[i] += 1;
    }
    for i in 0..3 {
        let share = f64::from(firsts[i]) / n as f64;
        assert!(
            (share - expected[i]).abs() < 0.015,
            "endpoint {i}: {share:.4} vs expected {:.4}",
            expected[i]
        );
    }
}

#[test]
fn tool_requests_skip_endpoints_with_low_tool_validity() {
    let tools = json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]});
    let mut s = req(tools);
    s.policy.min_tool_validity = Some(0.8);
    s.health
        .endpoints
        .entry("small@a".into())
        .or_default()
        .tool_validity = Some(0.5);
    // Measured 0.95: stays; unmeasured: stays.
    s.health
        .endpoints
        .entry("small@b".into())
        .or_default()
        .tool_validity = Some(0.95);
    let low: Vec<String> = s
        .reasons()
        .into_iter()
        .filter(|(_, r)| *r == "low_tool_validity")
        .map(|(e, _)| e)
        .collect();
    assert_eq!(low, ["small@a"]);
    // Without tools, the rate does not matter.
    let mut plain = req(json!({}));
    plain.policy.min_tool_validity = Some(0.8);
    plain.health = s.health.clone();
    assert!(
        plain
            .reasons()
            .iter()
            .all(|(_, r)| *r != "low_tool_validity")
    );
}

#[test]
fn an_endpoint_out_of_capacity_is_planned_around_until_nothing_else_is_left() {
    use switchyard_core::ErrorClass;
    use switchyard_routing::{CapacityLeft, ExclusionReason, Left};
    let left = |remaining, reset_in_ms| Left {
        remaining,
        limit: Some(100),
        reset_in_ms,
    };
    let mut s = req(json!({"max_tokens": 100}));
    // No request left on a's shared key; b has tokens, but fewer than the request reserves.
    s.capacity.0.insert(
        ("small@a".into(), KeySource::Shared),
        CapacityLeft {
            requests: Some(left(0, 4_000)),
            tokens: None,
        },
    );
    s.capacity.0.insert(
        ("small@b".into(), KeySource::Shared),
        CapacityLeft {
            requests: Some(left(5, 1_000)),
            tokens: Some(left(50, 2_500)),
        },
    );
    // c has enough of both.
    s.capacity.0.insert(
        ("small@c".into(), KeySource::Shared),
        CapacityLeft {
            requests: Some(left(1, 1_000)),
            tokens: Some(left(10_000, 1_000)),
        },
    );
    assert_eq!(sorted(s.endpoints()), ["small@c", "small@d"]);
    let plan = s.run().unwrap();
    let reason = |ep: &str| {
        plan.excluded
            .iter()
            .find(|e| e.endpoint.as_str() == ep)
            .map(|e| e.reason.clone())
    };
    assert_eq!(
        reason("small@a"),
        Some(ExclusionReason::CapacityExhausted {
            which: "requests",
            remaining: 0,
            reset_in_ms: 4_000
        })
    );
    assert_eq!(
        reason("small@b"),
        Some(ExclusionReason::CapacityExhausted {
            which: "tokens",
            remaining: 50,
            reset_in_ms: 2_500
        })
    );

    // The org's own key on a is another key with its own capacity.
    s.byok = vec!["a".into()];
    assert!(s.endpoints().contains(&"small@a".to_string()));
    s.byok.clear();

    // With nothing else left, the answer is a rate limit with the earliest reset.
    s.policy.providers_only = Some(vec!["a".into(), "b".into()]);
    let err = s.run().unwrap_err();
    let PlanError::NoCapacity { retry_after_ms, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*retry_after_ms, 2_500);
    let e = err.to_error();
    assert_eq!(e.class, ErrorClass::RateLimited);
    assert_eq!(e.retry_after, Some(std::time::Duration::from_millis(2_500)));
    assert_eq!(e.metadata["reason"], "capacity_exhausted");
}

#[test]
fn queue_degradation_plans_only_the_preferred_route_and_never_panics_onto_it() {
    let mut s = Setup::small();
    s.policy.degradation = Degradation::Queue;
    s.policy.preferences.order = vec!["c".into(), "a".into()];
    assert_eq!(s.endpoints(), ["small@c"]);
    assert!(s.reasons().contains(&("small@a".into(), "not_preferred")));
    // Ejected, it is not tried anyway: the request waits for it.
    set_health(&mut s.health, "small@c", EndpointState::Ejected);
    let err = s.run().unwrap_err();
    let PlanError::NoEligibleRoute { excluded } = err else {
        panic!("{err:?}")
    };
    assert!(
        excluded
            .iter()
            .any(|e| e.endpoint.as_str() == "small@c" && e.reason.as_str() == "unhealthy")
    );
    // Without an order, the first model's endpoints are the preferred route.
    s.policy.preferences.order.clear();
    assert_eq!(sorted(s.endpoints()), ["small@a", "small@b", "small@d"]);
}
