//! The router's HTTP API with the real policy service, billing over gRPC and the provider
//! simulator on loopback ports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_config::Catalog;
use switchyard_core::Money;
use switchyard_provider_sim::SimHandle;
use switchyard_providers::{ClientOptions, ProviderClient};
use switchyard_router::handler::Router;
use switchyard_router::health_view::HealthView;
use switchyard_router::policy_view::PolicyWatcher;
use switchyard_router::reporter::Reporter;
use switchyard_state::{
    BudgetDef, BudgetStore, MemoryBudgetStore, MemoryHealthStore, MemoryPolicyStore, Period, Scope,
};
use switchyard_testkit::{SimControl, start_sim};
use tokio_util::sync::CancellationToken;

const KEY: &str = "sk-test-router-key";

struct Env {
    sim: SimHandle,
    url: String,
    http: reqwest::Client,
    budgets: Arc<dyn BudgetStore>,
    health: Arc<dyn switchyard_state::HealthStore>,
    grpc: String,
    /// The router's drain-deadline token.
    abort: CancellationToken,
    _dir: tempfile::TempDir,
    _services: (
        switchyard_policy::server::PolicyHandle,
        switchyard_billing::run::BillingHandle,
    ),
}

async fn env() -> Env {
    let sim = start_sim("providers:\n  - { id: a, format: openai }\n  - { id: b, format: openai }\n  - { id: c, format: anthropic }\n").await.unwrap();
    let mut cat = String::from("providers:\n");
    for p in ["a", "b", "c"] {
        let format = if p == "c" { "anthropic" } else { "openai" };
        cat.push_str(&format!("  - {{ id: {p}, format: {format}, base_url: \"{}\", data_policy: {{ retains_prompts: false, trains_on_data: false, zero_retention: true }} }}\n", sim.base_url(p).unwrap()));
    }
    cat.push_str("models:\n  - { id: m, context_length: 8000, max_output: 500 }\n  - { id: big, context_length: 100000, max_output: 500 }\nendpoints:\n");
    cat.push_str(
        "  - { model: m, provider: a, upstream_model: m-a, price: { prompt: 1, completion: 2 } }\n",
    );
    cat.push_str(
        "  - { model: m, provider: b, upstream_model: m-b, price: { prompt: 1, completion: 2 } }\n",
    );
    cat.push_str("  - { model: big, provider: c, upstream_model: big-c, price: { prompt: 3, completion: 15 } }\n");
    let catalog = Catalog::from_yaml("catalog", &cat).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    let sha = switchyard_policy::keys::hash(KEY);
    std::fs::write(
        &file,
        format!(
            "orgs:\n  - id: acme\n    api_keys: [{{ id: k1, sha256: \"{sha}\", prefix: sk-test }}]\n    default_workflow: main\n    workflows:\n      - {{ id: main, models: [m, big], retry: {{ max_retries: 0 }} }}\n      - {{ id: strict, models: [m], provider: {{ order: [a], allow_fallbacks: false }}, retry: {{ max_retries: 0 }} }}\n"
        ),
    )
    .unwrap();
    let stop = CancellationToken::new();
    let listen = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let policy = switchyard_policy::server::start(
        file,
        None,
        Arc::new(MemoryPolicyStore::default()),
        None,
        listen().await,
        listen().await,
        false,
    )
    .await
    .unwrap();
    let budgets: Arc<dyn BudgetStore> = Arc::new(MemoryBudgetStore::default());
    let billing = switchyard_billing::run::start(
        budgets.clone(),
        Duration::from_secs(60),
        listen().await,
        listen().await,
    )
    .await
    .unwrap();
    let watcher = PolicyWatcher::spawn(format!("http://{}", policy.grpc_addr), None, stop.clone());
    let health_store: Arc<dyn switchyard_state::HealthStore> =
        Arc::new(MemoryHealthStore::default());
    let health = HealthView::spawn(
        health_store.clone(),
        Duration::from_secs(30),
        Duration::from_secs(1),
        stop.clone(),
    );
    let (reporter, _) = Reporter::spawn(
        format!("http://{}", billing.grpc_addr),
        10_000,
        stop.clone(),
        Duration::from_secs(2),
    );
    let mut router = Router::from_catalog(
        &catalog,
        watcher.clone(),
        health,
        budgets.clone(),
        reporter,
        ProviderClient::new(ClientOptions::default()).unwrap(),
    );
    router.outcomes = Some(switchyard_router::outcomes::OutcomeWriter::spawn(
        health_store.clone(),
        Duration::from_millis(100),
        stop.clone(),
    ));
    router.idempotency = Some(Arc::new(switchyard_state::MemoryIdempotencyStore::default()));
    let abort = CancellationToken::new();
    router.abort = abort.clone();
    let router = Arc::new(router.build());
    let listener = listen().await;
    let url = format!("http://{}", listener.local_addr().unwrap());
    let grpc_listener = listen().await;
    let grpc = format!("http://{}", grpc_listener.local_addr().unwrap());
    let grpc_service = switchyard_proto::v1::router_server::RouterServer::new(
        switchyard_router::grpc::RouterGrpc::new(router.clone()),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(grpc_service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc_listener)),
    );
    tokio::spawn(async move {
        axum::serve(
            listener,
            switchyard_router::http::routes(router, Default::default()),
        )
        .await
    });
    let started = Instant::now();
    while watcher.current().is_none() {
        assert!(started.elapsed() < Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Env {
        sim,
        url,
        http: reqwest::Client::new(),
        budgets,
        health: health_store,
        grpc,
        abort,
        _dir: dir,
        _services: (policy, billing),
    }
}

impl Env {
    async fn chat(&self, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/v1/chat/completions", self.url))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn faults(&self, id: &str, faults: Value) {
        SimControl::new(self.sim.control_url())
            .set_faults(id, &faults)
            .await
            .unwrap();
    }
}

fn hi(extra: Value) -> Value {
    let mut body =
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn auth_models_and_a_served_request() {
    let e = env().await;
    let resp = e
        .http
        .post(format!("{}/v1/chat/completions", e.url))
        .json(&hi(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unauthenticated");
    let models: Value = e
        .http
        .get(format!("{}/v1/models", e.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"].as_array().unwrap().len(), 2);

    let (status, v) = e.chat(hi(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "m");
    assert!(["a", "b"].contains(&v["provider"].as_str().unwrap()));
    assert!(
        Money::parse_usd(v["usage"]["cost"].as_str().unwrap())
            .unwrap()
            .nanos()
            > 0
    );
    assert_eq!(v["routing"]["attempts"][0]["outcome"], "ok");
    assert_eq!(v["routing"]["workflow"], "main");

    let (status, v) = e.chat(json!({"model": "m", "messages": []})).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, v) = e.chat(hi(json!({"model": "unknown-model"}))).await;
    assert_eq!(status, 400, "{v}");
}

async fn seeded(e: &Env, seed: &str) -> (u16, Value) {
    let resp = e
        .http
        .post(format!("{}/v1/chat/completions", e.url))
        .bearer_auth(KEY)
        .header("x-switchyard-route-seed", seed)
        .json(&hi(json!({})))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn a_route_seed_gives_the_same_plan_and_is_reported() {
    let e = env().await;
    let mut firsts = std::collections::BTreeSet::new();
    for seed in 0..24u64 {
        let (status, one) = seeded(&e, &seed.to_string()).await;
        assert_eq!(status, 200, "{one}");
        let (_, two) = seeded(&e, &seed.to_string()).await;
        assert_eq!(one["routing"]["plan"], two["routing"]["plan"]);
        assert_eq!(one["routing"]["seed"], seed.to_string());
        assert_eq!(one["routing"]["plan"].as_array().unwrap().len(), 2, "{one}");
        firsts.insert(one["routing"]["plan"][0].as_str().unwrap().to_string());
    }
    // Equal prices: the seed alone decides the order, and both orders occur.
    assert_eq!(firsts.len(), 2, "{firsts:?}");
    // Unseeded requests are given a fresh seed, reported for replay.
    let (_, v) = e.chat(hi(json!({}))).await;
    assert!(
        v["routing"]["seed"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );

    let (status, v) = seeded(&e, "not-a-number").await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("route seed `not-a-number`"),
        "{v}"
    );
}

#[tokio::test]
async fn an_outage_is_invisible_and_no_fallback_is_a_clear_error() {
    let e = env().await;
    e.faults("a", json!({"errors": [{"status": 500, "rate": 1.0}]}))
        .await;
    for _ in 0..12 {
        let (status, v) = e.chat(hi(json!({}))).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["provider"], "b");
    }
    let (status, v) = e.chat(hi(json!({"workflow": "strict"}))).await;
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["error"]["code"], "unavailable");
    assert_eq!(
        v["error"]["metadata"]["routing"]["attempts"][0]["provider"],
        "a"
    );
}

#[tokio::test]
async fn streams_end_with_done_or_an_explicit_error_event() {
    let e = env().await;
    let text = e
        .http
        .post(format!("{}/v1/chat/completions", e.url))
        .bearer_auth(KEY)
        .json(&hi(json!({"stream": true})))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    e.faults("a", json!({"cut_stream_after": 2})).await;
    let text = e
        .http
        .post(format!("{}/v1/chat/completions", e.url))
        .bearer_auth(KEY)
        .json(&hi(json!({"stream": true, "workflow": "strict"})))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("[DONE]"), "{text}");
    let last = text.lines().rfind(|l| l.starts_with("data: ")).unwrap();
    let v: Value = serde_json::from_str(&last["data: ".len()..]).unwrap();
    assert_eq!(v["error"]["code"], "unavailable", "{text}");
}

#[tokio::test]
async fn budgets_deny_and_usage_reaches_billing() {
    let e = env().await;
    let (status, _) = e.chat(hi(json!({}))).await;
    assert_eq!(status, 200);
    let started = Instant::now();
    while e.budgets.ledger("acme", "", 100).await.unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "usage never reached billing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let entry = &e.budgets.ledger("acme", "", 100).await.unwrap()[0].1;
    assert_eq!(
        (
            entry.api_key.as_str(),
            entry.workflow.as_str(),
            entry.model.as_str()
        ),
        ("k1", "main", "m")
    );
    assert!(entry.cost.nanos() > 0);
    let budgets = e
        .budgets
        .budgets("acme", switchyard_core::clock::now_ms())
        .await
        .unwrap();
    assert!(budgets.is_empty());

    org_budget(&e, Money::from_nanos(1)).await;
    let (status, v) = e.chat(hi(json!({}))).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (402, Some("budget_exceeded")),
        "{v}"
    );
    assert_eq!(v["error"]["metadata"]["scope"], "org");
}

/// A hard day budget for the org's whole spend.
async fn org_budget(e: &Env, limit: Money) {
    e.budgets
        .set_budget(
            "acme",
            &Scope::org(),
            Period::Day,
            &BudgetDef {
                limit,
                hard: true,
                thresholds: vec![],
            },
        )
        .await
        .unwrap();
}

async fn held(e: &Env) -> Money {
    e.budgets
        .budgets("acme", switchyard_core::clock::now_ms())
        .await
        .unwrap()
        .iter()
        .find(|b| b.scope == Scope::org())
        .unwrap()
        .held
}

#[tokio::test]
async fn a_client_that_disconnects_is_charged_for_what_it_got_and_no_more() {
    let e = env().await;
    org_budget(&e, Money::from_usd(100)).await;

    // A stream abandoned after a few chunks: settled for the prompt and the tokens streamed.
    e.faults("a", json!({"latency": {"per_token_ms": 100}}))
        .await;
    let mut resp = e
        .http
        .post(format!("{}/v1/chat/completions", e.url))
        .bearer_auth(KEY)
        .json(&hi(json!({"stream": true, "workflow": "strict"})))
        .send()
        .await
        .unwrap();
    let mut got = 0;
    while got < 3 {
        if resp.chunk().await.unwrap().is_some() {
            got += 1;
        }
    }
    drop(resp);
    let started = Instant::now();
    let entry = loop {
        if let Some((_, entry)) = e
            .budgets
            .ledger("acme", "", 100)
            .await
            .unwrap()
            .into_iter()
            .next()
        {
            break entry;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the abandoned stream was never settled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(entry.outcome, "cancelled");
    assert!(
        entry.completion_tokens > 0 && entry.completion_tokens < 16,
        "{entry:?}"
    );
    assert_eq!(
        held(&e).await,
        Money::ZERO,
        "no hold left to expire and over-charge"
    );

    // A non-streamed request abandoned while the upstream hangs: the hold is released, no charge.
    e.faults("a", json!({"hang_rate": 1.0})).await;
    let err = e
        .http
        .post(format!("{}/v1/chat/completions", e.url))
        .bearer_auth(KEY)
        .timeout(Duration::from_millis(300))
        .json(&hi(json!({"workflow": "strict"})))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    let started = Instant::now();
    while held(&e).await != Money::ZERO {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the abandoned request's hold was not released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(e.budgets.ledger("acme", "", 100).await.unwrap().len(), 1);
}

#[tokio::test]
async fn every_attempt_becomes_a_passive_outcome() {
    let e = env().await;
    e.faults("a", json!({"errors": [{"status": 503, "rate": 1.0}]}))
        .await;
    // A prober's fresh records: the router does not eject on its own.
    for ep in ["m@a", "m@b"] {
        let record = switchyard_state::HealthRecord {
            state: switchyard_core::EndpointState::Healthy,
            updated_ms: switchyard_core::clock::now_ms(),
            ..Default::default()
        };
        e.health.put_record(&ep.into(), &record).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // `a` first every time, so the counts are exact.
    for _ in 0..6 {
        let (status, _) = e.chat(hi(json!({"provider": {"order": ["a", "b"]}}))).await;
        assert_eq!(status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = switchyard_core::clock::now_ms();
    let (from, to) = (
        switchyard_state::bucket_of(now) - 1,
        switchyard_state::bucket_of(now),
    );
    let a = e.health.outcomes(&"m@a".into(), from, to).await.unwrap();
    let b = e.health.outcomes(&"m@b".into(), from, to).await.unwrap();
    assert_eq!((a.failed, a.ok), (6, 0), "{a:?}");
    assert_eq!(a.by_class.get("unavailable").copied(), Some(a.failed));
    assert_eq!(b.ok, 6, "{b:?}");
    // Six replies of 16 tokens each (latency on loopback can round to 0 ms).
    assert_eq!(b.tokens_out, 96);
}

fn grpc_request<T>(body: T, key: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    if let Some(k) = key {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    r
}

fn grpc_hi() -> switchyard_proto::v1::ChatRequest {
    use switchyard_proto::v1 as pb;
    pb::ChatRequest {
        model: "m".into(),
        messages: vec![pb::Message {
            role: pb::Role::User as i32,
            content: vec![pb::ContentPart {
                part: Some(pb::content_part::Part::Text("hi".into())),
            }],
            ..Default::default()
        }],
        max_tokens: Some(20),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_grpc_api_serves_chat_streams_and_models() {
    use switchyard_proto::v1 as pb;
    let e = env().await;
    let mut client = pb::router_client::RouterClient::connect(e.grpc.clone())
        .await
        .unwrap();
    let err = client
        .chat(grpc_request(grpc_hi(), None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let resp = client
        .chat(grpc_request(grpc_hi(), Some(KEY)))
        .await
        .unwrap()
        .into_inner();
    assert!(["a", "b"].contains(&resp.provider.as_str()));
    assert_eq!(resp.model, "m");
    assert!(resp.usage.unwrap().cost_nano_usd > 0);
    assert_eq!(resp.trace.unwrap().attempts[0].outcome, "ok");

    // The same route seed gives the same plan over gRPC too.
    let seeded = || {
        let mut r = grpc_request(grpc_hi(), Some(KEY));
        r.metadata_mut()
            .insert("switchyard-route-seed", "42".parse().unwrap());
        r
    };
    let one = client
        .chat(seeded())
        .await
        .unwrap()
        .into_inner()
        .trace
        .unwrap();
    let two = client
        .chat(seeded())
        .await
        .unwrap()
        .into_inner()
        .trace
        .unwrap();
    assert_eq!((one.seed, one.plan.len()), (42, 2));
    assert_eq!(one.plan, two.plan);
    let mut bad = grpc_request(grpc_hi(), Some(KEY));
    bad.metadata_mut()
        .insert("switchyard-route-seed", "-1".parse().unwrap());
    assert_eq!(
        client.chat(bad).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let text: String = resp.choices[0]
        .message
        .as_ref()
        .unwrap()
        .content
        .iter()
        .filter_map(|c| match &c.part {
            Some(pb::content_part::Part::Text(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert!(text.starts_with("Hello from"), "{text}");

    let mut stream = client
        .chat_stream(grpc_request(grpc_hi(), Some(KEY)))
        .await
        .unwrap()
        .into_inner();
    let mut content = String::new();
    let mut done = None;
    while let Some(ev) = stream.message().await.unwrap() {
        match ev.event {
            Some(pb::chat_stream_event::Event::Chunk(c)) => content.push_str(&c.content),
            Some(pb::chat_stream_event::Event::Done(d)) => done = Some(d),
            None => {}
        }
    }
    assert!(content.starts_with("Hello from"), "{content}");
    let done = done.expect("a done event");
    assert_eq!(done.usage.unwrap().completion_tokens, 16);

    // A stream cut after its first chunks ends with a non-OK status, not a clean end.
    e.faults("a", json!({"cut_stream_after": 2})).await;
    let mut req = grpc_hi();
    req.workflow = "strict".into();
    let mut stream = client
        .chat_stream(grpc_request(req, Some(KEY)))
        .await
        .unwrap()
        .into_inner();
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the cut stream ended cleanly"),
            Err(s) => break s,
        }
    };
    assert_eq!(status.code(), tonic::Code::Unavailable);

    // Idempotency over gRPC metadata: the repeat is the stored reply, with no upstream call.
    e.faults("a", json!({})).await;
    let with_key = || {
        let mut r = grpc_request(grpc_hi(), Some(KEY));
        r.metadata_mut()
            .insert("idempotency-key", "grpc-order-1".parse().unwrap());
        r
    };
    let first = client.chat(with_key()).await.unwrap().into_inner();
    let calls = sim_requests(&e).await;
    let again = client.chat(with_key()).await.unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.into_inner().id, first.id);
    assert_eq!(sim_requests(&e).await, calls);

    let models = client
        .list_models(grpc_request(pb::ListModelsRequest::default(), Some(KEY)))
        .await
        .unwrap()
        .into_inner();
    let m = models.models.iter().find(|m| m.id == "m").unwrap();
    assert_eq!(m.providers, ["a", "b"]);

    org_budget(&e, Money::from_nanos(1)).await;
    let err = client
        .chat(grpc_request(grpc_hi(), Some(KEY)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        err.metadata().get("switchyard-error-class").unwrap(),
        "budget_exceeded"
    );
}

async fn post_idem(e: &Env, key: &str, body: &Value) -> reqwest::Response {
    e.http
        .post(format!("{}/v1/chat/completions", e.url))
        .bearer_auth(KEY)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn sim_requests(e: &Env) -> u64 {
    SimControl::new(e.sim.control_url())
        .requests(&["a", "b"])
        .await
        .unwrap()
}

#[tokio::test]
async fn idempotency_keys_replay_without_a_second_call_or_charge() {
    let e = env().await;
    let body = hi(json!({}));
    let first = post_idem(&e, "order-42", &body).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let calls = sim_requests(&e).await;
    let again = post_idem(&e, "order-42", &body).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(
        again["routing"]["request_id"],
        first["routing"]["request_id"]
    );
    assert_eq!(sim_requests(&e).await, calls, "no second upstream call");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        e.budgets.ledger("acme", "", 100).await.unwrap().len(),
        1,
        "charged once"
    );

    // The same key for a different request is refused.
    let other = post_idem(&e, "order-42", &hi(json!({"max_tokens": 5}))).await;
    assert_eq!(other.status(), 400);
    let v: Value = other.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("different request"),
        "{v}"
    );

    // A duplicate while the first is still running is refused.
    e.faults("b", json!({"latency": {"ttft_ms": 600}})).await;
    e.faults("a", json!({"latency": {"ttft_ms": 600}})).await;
    let slow = hi(json!({"max_tokens": 7}));
    let (e2, slow2) = (&e, slow.clone());
    let (running, dup) = tokio::join!(post_idem(e2, "order-43", &slow2), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        post_idem(&e, "order-43", &slow).await
    });
    assert_eq!(running.status(), 200);
    assert_eq!(dup.status(), 400);
    let v: Value = dup.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("in progress"),
        "{v}"
    );

    // A failed request frees its key: the retry runs.
    e.faults("a", json!({"errors": [{"status": 500, "rate": 1.0}]}))
        .await;
    let strict = hi(json!({"workflow": "strict"}));
    assert_eq!(post_idem(&e, "order-44", &strict).await.status(), 502);
    e.faults("a", json!({})).await;
    assert_eq!(post_idem(&e, "order-44", &strict).await.status(), 200);
}

#[tokio::test]
async fn a_streamed_attempt_feeds_its_time_to_first_token_into_health() {
    let e = env().await;
    e.faults("a", json!({"latency": {"ttft_ms": 40}})).await;
    let resp = e
        .http
        .post(format!("{}/v1/chat/completions", e.url))
        .bearer_auth(KEY)
        .json(&hi(json!({"stream": true, "provider": {"order": ["a"]}})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = switchyard_core::clock::now_ms();
    let a = e
        .health
        .outcomes(
            &"m@a".into(),
            switchyard_state::bucket_of(now) - 1,
            switchyard_state::bucket_of(now),
        )
        .await
        .unwrap();
    assert_eq!((a.ok, a.ttft_count), (1, 1), "{a:?}");
    assert!(a.ttft_ms_sum >= 40, "{a:?}");
}

#[tokio::test]
async fn an_idempotency_key_on_a_stream_gets_the_same_answer_on_both_apis() {
    use switchyard_proto::v1 as pb;
    let e = env().await;
    let resp = post_idem(&e, "s-1", &hi(json!({"stream": true}))).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("non-streamed requests only"), "{body}");

    let mut client = pb::router_client::RouterClient::connect(e.grpc.clone())
        .await
        .unwrap();
    let mut r = grpc_request(grpc_hi(), Some(KEY));
    r.metadata_mut()
        .insert("idempotency-key", "s-1".parse().unwrap());
    let calls = sim_requests(&e).await;
    let status = client.chat_stream(r).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), message);
    assert_eq!(sim_requests(&e).await, calls, "no upstream call");
}

#[tokio::test]
async fn a_failed_grpc_chat_carries_its_routing_trace() {
    use prost::Message;
    use switchyard_proto::v1 as pb;
    let e = env().await;
    e.faults("a", json!({"errors": [{"status": 500, "rate": 1.0}]}))
        .await;
    let mut client = pb::router_client::RouterClient::connect(e.grpc.clone())
        .await
        .unwrap();
    let mut req = grpc_hi();
    req.workflow = "strict".into();
    let status = client.chat(grpc_request(req, Some(KEY))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let bytes = status
        .metadata()
        .get_bin(switchyard_router::grpc::ROUTING_METADATA)
        .expect("the routing trace in the trailers")
        .to_bytes()
        .unwrap();
    let trace = pb::RoutingTrace::decode(bytes.as_ref()).unwrap();
    assert_eq!(trace.plan, ["m@a"]);
    assert_eq!(trace.attempts[0].provider, "a");
    assert_eq!(trace.attempts[0].outcome, "unavailable");
    // As the HTTP API shows it in the error body.
    let (status, v) = e.chat(hi(json!({"workflow": "strict"}))).await;
    assert_eq!(status, 502);
    assert_eq!(
        v["error"]["metadata"]["routing"]["attempts"][0]["outcome"],
        "unavailable"
    );
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_on_both_apis() {
    use switchyard_proto::v1 as pb;
    let e = env().await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let resp = e
            .http
            .post(format!("{}/v1/chat/completions", e.url))
            .header("authorization", format!("{scheme} {KEY}"))
            .json(&hi(json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{scheme}");
    }
    let mut client = pb::router_client::RouterClient::connect(e.grpc.clone())
        .await
        .unwrap();
    let mut r = tonic::Request::new(grpc_hi());
    r.metadata_mut()
        .insert("authorization", format!("bearer {KEY}").parse().unwrap());
    assert!(client.chat(r).await.is_ok());
}

#[tokio::test]
async fn at_the_drain_deadline_a_request_waiting_on_its_upstream_ends_and_is_released() {
    let e = env().await;
    org_budget(&e, Money::from_usd(100)).await;
    e.faults("a", json!({"hang_rate": 1.0})).await;
    let pending = {
        let (http, url) = (e.http.clone(), e.url.clone());
        tokio::spawn(async move {
            let resp = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(KEY)
                .json(&hi(json!({"workflow": "strict"})))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(held(&e).await > Money::ZERO, "held while it waits");
    let cancelled = Instant::now();
    e.abort.cancel();
    let (status, v) = tokio::time::timeout(Duration::from_secs(3), pending)
        .await
        .expect("the request ends at the drain deadline, not at its own timeout")
        .unwrap();
    assert!(cancelled.elapsed() < Duration::from_secs(2));
    assert_eq!(status, 504, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(held(&e).await, Money::ZERO, "the hold is released");
}

#[tokio::test]
async fn an_unknown_model_in_models_is_skipped_with_its_reason() {
    let e = env().await;
    let (status, v) = e
        .chat(json!({"models": ["no-such-model", "m"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "m");
    let excluded = v["routing"]["excluded"].as_array().unwrap();
    assert!(
        excluded
            .iter()
            .any(|x| x["reason"] == "unknown_model" && x["model"] == "no-such-model"),
        "{v}"
    );
    let resp = e
        .http
        .post(format!("{}/v1/routing/explain", e.url))
        .bearer_auth(KEY)
        .json(&json!({"models": ["no-such-model", "m"], "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let x: Value = resp.json().await.unwrap();
    assert!(
        x["excluded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["reason"] == "unknown_model"),
        "{x}"
    );
    let (status, v) = e
        .chat(json!({"models": ["no-such-model", "nor-this"], "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-model")
    );
}
