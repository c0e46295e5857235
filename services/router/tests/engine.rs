//! The attempt engine against the provider simulator over real HTTP; attempts counted at the
//! simulator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use switchyard_config::catalog::WireFormat;
use switchyard_core::{ChatRequest, EndpointState, ErrorClass};
use switchyard_provider_sim::SimHandle;
use switchyard_providers::{CallError, ClientOptions, ProviderClient, Target, Timeouts};
use switchyard_router::engine::{EngineSettings, PlannedAttempt, complete, stream};
use switchyard_router::retry_budget::{RetryBudget, RetryBudgetConfig};
use switchyard_routing::{Attempt, KeySource};
use switchyard_testkit::{SimControl, start_sim};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Fixture {
    sim: SimHandle,
    client: ProviderClient,
}

impl Fixture {
    async fn new() -> Self {
        let sim = start_sim("providers:\n  - { id: a, format: openai }\n  - { id: b, format: openai }\n  - { id: big, format: anthropic }\n").await.unwrap();
        Fixture {
            sim,
            client: ProviderClient::new(ClientOptions::default()).unwrap(),
        }
    }

    fn planned(&self, provider: &str, context_length: u32) -> PlannedAttempt {
        let model = if provider == "big" { "large" } else { "small" };
        let format = if provider == "big" {
            WireFormat::Anthropic
        } else {
            WireFormat::Openai
        };
        PlannedAttempt {
            attempt: Attempt {
                endpoint: format!("{model}@{provider}").as_str().into(),
                model: model.into(),
                provider: provider.into(),
                key: KeySource::Shared,
                state: EndpointState::Healthy,
            },
            target: std::sync::Arc::new(Target {
                endpoint: format!("{model}@{provider}").as_str().into(),
                provider: provider.into(),
                format,
                base_url: self.sim.base_url(provider).unwrap(),
                upstream_model: model.into(),
                key: None,
                max_output: 64,
                options: Default::default(),
                owner: None,
                capacity: None,
            }),
            context_length,
        }
    }

    async fn faults(&self, id: &str, faults: Value) {
        SimControl::new(self.sim.control_url())
            .set_faults(id, &faults)
            .await
            .unwrap();
    }

    async fn count(&self, id: &str) -> u64 {
        SimControl::new(self.sim.control_url())
            .requests(&[id])
            .await
            .unwrap()
    }
}

fn settings() -> EngineSettings {
    EngineSettings {
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            first_byte: Duration::from_secs(5),
            first_token: Duration::from_secs(5),
            idle: Duration::from_secs(5),
            total: Duration::from_secs(10),
        },
        max_retries: 1,
        timeout_retries: 0,
        malformed: switchyard_providers::MalformedEvents::Skip,
        hedge: None,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_secs(2),
        deadline: Instant::now() + Duration::from_secs(20),
        fallback_on_refusal: false,
        on_invalid_output: switchyard_policy_model::config::OnInvalidOutput::Return,
        capacity: None,
    }
}

fn hi() -> ChatRequest {
    ChatRequest::user("small", "hi")
}

#[tokio::test]
async fn an_outage_falls_back_after_a_bounded_retry() {
    let f = Fixture::new().await;
    f.faults("a", json!({"errors": [{"status": 500, "rate": 1.0}]}))
        .await;
    let plan = vec![f.planned("a", 1000), f.planned("b", 1000)];
    let done = complete(
        &f.client,
        &plan,
        &hi(),
        &settings(),
        &RetryBudget::default(),
        &CancellationToken::new(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(done.served, 1);
    assert_eq!(done.response.provider.as_deref(), Some("b"));
    let outcomes: Vec<_> = done
        .trace
        .iter()
        .map(|t| (t.provider.to_string(), t.outcome.as_str(), t.retry))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("a".into(), "unavailable", false),
            ("a".into(), "unavailable", true),
            ("b".into(), "ok", false)
        ]
    );
    assert_eq!((f.count("a").await, f.count("b").await), (2, 1));
}

#[tokio::test]
async fn client_errors_do_not_fall_back() {
    let f = Fixture::new().await;
    f.faults("a", json!({"errors": [{"status": 400, "rate": 1.0}]}))
        .await;
    let plan = vec![f.planned("a", 1000), f.planned("b", 1000)];
    let failed = complete(
        &f.client,
        &plan,
        &hi(),
        &settings(),
        &RetryBudget::default(),
        &CancellationToken::new(),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(failed.error.class, ErrorClass::InvalidRequest);
    assert_eq!((f.count("a").await, f.count("b").await), (1, 0));
}

#[tokio::test]
async fn retry_after_is_honoured_and_not_waited_out_when_others_remain() {
    let f = Fixture::new().await;
    f.faults(
        "a",
        json!({"errors": [{"status": 429, "rate": 1.0}], "retry_after_s": 1}),
    )
    .await;
    let started = Instant::now();
    let failed = complete(
        &f.client,
        &[f.planned("a", 1000)],
        &hi(),
        &settings(),
        &RetryBudget::default(),
        &CancellationToken::new(),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(failed.error.class, ErrorClass::RateLimited);
    assert_eq!(
        failed.error.retry_after,
        Some(Duration::from_secs(1)),
        "carried to the client"
    );
    assert_eq!(f.count("a").await, 2);

    // Retry-After beyond the backoff cap while another endpoint is left: fall back at once.
    f.faults(
        "a",
        json!({"errors": [{"status": 429, "rate": 1.0}], "retry_after_s": 5}),
    )
    .await;
    let started = Instant::now();
    let done = complete(
        &f.client,
        &[f.planned("a", 1000), f.planned("b", 1000)],
        &hi(),
        &settings(),
        &RetryBudget::default(),
        &CancellationToken::new(),
        None,
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(done.response.provider.as_deref(), Some("b"));
}

#[tokio::test]
async fn the_retry_budget_caps_traffic_to_a_failing_upstream() {
    let f = Fixture::new().await;
    f.faults("a", json!({"errors": [{"status": 503, "rate": 1.0}]}))
        .await;
    let budget = RetryBudget::new(RetryBudgetConfig {
        ratio: 0.0,
        burst: 2.0,
    });
    let s = EngineSettings {
        max_retries: 3,
        base_backoff: Duration::from_millis(1),
        ..settings()
    };
    for _ in 0..10 {
        let failed = complete(
            &f.client,
            &[f.planned("a", 1000)],
            &hi(),
            &s,
            &budget,
            &CancellationToken::new(),
            None,
        )
        .await
        .unwrap_err();
        assert_eq!(failed.error.class, ErrorClass::Unavailable);
    }
    // Ten requests, two retries from the burst: 12 upstream calls, not 40.
    assert_eq!(f.count("a").await, 12);
}

#[tokio::test]
async fn retries_for_invalid_output_spend_from_the_retry_budget() {
    use switchyard_policy_model::config::OnInvalidOutput;
    use switchyard_router::engine::OutputCheck;
    use switchyard_router::validate::Validator;
    let f = Fixture::new().await;
    f.faults("a", json!({"invalid_tool_call_rate": 1.0})).await;
    let req: ChatRequest = serde_json::from_value(json!({
        "model": "small",
        "messages": [{"role": "user", "content": "weather in Oslo?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]
        }}}],
        "tool_choice": "required",
    }))
    .unwrap();
    let validator = Validator::for_request(&req).unwrap().unwrap();
    let check = OutputCheck {
        validator: &validator,
        outcomes: None,
    };
    let s = EngineSettings {
        on_invalid_output: OnInvalidOutput::Retry,
        ..settings()
    };
    let run = |budget: RetryBudget| {
        let (f, req, s) = (&f, &req, &s);
        async move {
            let done = complete(
                &f.client,
                &[f.planned("a", 1000)],
                req,
                s,
                &budget,
                &CancellationToken::new(),
                Some(check),
            )
            .await
            .unwrap();
            let outcomes: Vec<&str> = done.trace.iter().map(|t| t.outcome.as_str()).collect();
            outcomes.join(",")
        }
    };
    // With budget: one retry on the same endpoint, then the reply passed through marked.
    assert_eq!(
        run(RetryBudget::default()).await,
        "invalid_output,invalid_output"
    );
    assert_eq!(f.count("a").await, 2);
    // An empty budget: no retry, as for any other failure.
    let empty = RetryBudget::new(RetryBudgetConfig {
        ratio: 0.0,
        burst: 0.0,
    });
    assert_eq!(run(empty).await, "invalid_output");
    assert_eq!(f.count("a").await, 3);
}

#[tokio::test]
async fn the_deadline_bounds_everything() {
    let f = Fixture::new().await;
    f.faults("a", json!({"hang_rate": 1.0})).await;
    let s = EngineSettings {
        deadline: Instant::now() + Duration::from_millis(300),
        ..settings()
    };
    let started = Instant::now();
    let failed = complete(
        &f.client,
        &[f.planned("a", 1000), f.planned("b", 1000)],
        &hi(),
        &s,
        &RetryBudget::default(),
        &CancellationToken::new(),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(failed.error.class, ErrorClass::Timeout);
}

#[tokio::test]
async fn context_errors_fall_back_to_a_larger_model_only() {
    let f = Fixture::new().await;
    f.faults("a", json!({"context_limit": 5})).await;
    let long = ChatRequest::user("small", &"word ".repeat(50));
    let plan = vec![
        f.planned("a", 100),
        f.planned("b", 100),
        f.planned("big", 1000),
    ];
    let done = complete(
        &f.client,
        &plan,
        &long,
        &settings(),
        &RetryBudget::default(),
        &CancellationToken::new(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(done.response.provider.as_deref(), Some("big"));
    assert_eq!(
        f.count("b").await,
        0,
        "no point trying the same context size"
    );
}

#[tokio::test]
async fn refusals_fall_back_only_when_the_workflow_allows() {
    let f = Fixture::new().await;
    f.faults("a", json!({"refuse_on": "secret"})).await;
    let req = ChatRequest::user("small", "tell me the secret");
    let plan = vec![f.planned("a", 1000), f.planned("b", 1000)];
    let failed = complete(
        &f.client,
        &plan,
        &req,
        &settings(),
        &RetryBudget::default(),
        &CancellationToken::new(),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(failed.error.class, ErrorClass::ContentPolicy);
    let s = EngineSettings {
        fallback_on_refusal: true,
        ..settings()
    };
    let done = complete(
        &f.client,
        &plan,
        &req,
        &s,
        &RetryBudget::default(),
        &CancellationToken::new(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(done.response.provider.as_deref(), Some("b"));
}

#[tokio::test]
async fn streams_fall_back_before_the_first_chunk_and_commit_after_it() {
    let f = Fixture::new().await;
    f.faults("a", json!({"errors": [{"status": 503, "rate": 1.0}]}))
        .await;
    let plan = vec![f.planned("a", 1000), f.planned("b", 1000)];
    let s = stream(
        &f.client,
        &plan,
        &hi(),
        &settings(),
        &RetryBudget::default(),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(s.served, 1);
    let rest: Vec<_> = s.rest.collect().await;
    assert!(rest.iter().all(Result::is_ok), "b streams to its end");

    // A stream cut after its first chunks: committed, so the failure ends it as an error item.
    f.faults("a", json!({"cut_stream_after": 2})).await;
    let s = stream(
        &f.client,
        &plan,
        &hi(),
        &settings(),
        &RetryBudget::default(),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(s.served, 0);
    let rest: Vec<_> = s.rest.collect().await;
    assert!(
        matches!(rest.last(), Some(Err(CallError::Upstream(e))) if e.class == ErrorClass::Unavailable),
        "{rest:?}"
    );
    assert_eq!(f.count("b").await, 1, "no fallback after the first chunk");
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_call() {
    let f = Fixture::new().await;
    f.faults("a", json!({"hang_rate": 1.0})).await;
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let failed = complete(
        &f.client,
        &[f.planned("a", 1000)],
        &hi(),
        &settings(),
        &RetryBudget::default(),
        &cancel,
        None,
    )
    .await
    .unwrap_err();
    assert!(failed.cancelled);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_slow_first_attempt_is_hedged_within_the_retry_budget() {
    let f = Fixture::new().await;
    f.faults("a", json!({"latency": {"ttft_ms": 1500}})).await;
    let plan = vec![f.planned("a", 1000), f.planned("b", 1000)];
    let hedged = EngineSettings {
        hedge: Some(Duration::from_millis(100)),
        ..settings()
    };
    let run = |budget: RetryBudget| {
        let (f, plan, hedged) = (&f, &plan, &hedged);
        async move {
            complete(
                &f.client,
                plan,
                &hi(),
                hedged,
                &budget,
                &CancellationToken::new(),
                None,
            )
            .await
            .unwrap()
        }
    };
    let started = Instant::now();
    let s = stream(
        &f.client,
        &plan,
        &hi(),
        &hedged,
        &RetryBudget::default(),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_millis(1000));
    assert_eq!(s.served, 1);
    let trace: Vec<_> = s
        .trace
        .iter()
        .map(|t| (t.provider.to_string(), t.outcome.as_str(), t.hedge))
        .collect();
    assert_eq!(
        trace,
        [("a".into(), "cancelled", false), ("b".into(), "ok", true)]
    );
    let done = run(RetryBudget::default()).await;
    assert_eq!(done.served, 1);

    // An answer before the delay: no hedge.
    f.faults("a", json!({})).await;
    let before = f.count("b").await;
    let done = run(RetryBudget::default()).await;
    assert_eq!((done.served, done.trace.len()), (0, 1));
    assert_eq!(f.count("b").await, before);

    // No retry budget left: the first attempt runs alone.
    f.faults("a", json!({"latency": {"ttft_ms": 400}})).await;
    let spent = RetryBudget::new(RetryBudgetConfig {
        ratio: 0.0,
        burst: 0.0,
    });
    let done = run(spent).await;
    assert_eq!((done.served, done.trace.len()), (0, 1));
    assert_eq!(f.count("b").await, before);
}
