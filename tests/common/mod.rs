//! A Switchyard cluster of real processes for cross-service scenarios: a `redis-server` from the
//! testkit, the provider simulator, and the `switchyard` binary as policy, billing, optionally a
//! health prober, and one or more routers, every listener on an ephemeral loopback port.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_proto::v1 as pb;
use switchyard_testkit::{RedisServer, ServiceProcess, SimControl, SimProcess};

/// The cluster's API key (org `acme`).
pub const KEY: &str = "sk-e2e-cluster-key";
const KEY_SHA256: &str = "4c5f32e12dd892a053ebfbc3d99244c81a1cc6c91931cab33f86cf501ff01964";

/// Simulated providers: `fast` and `open` serve `m` at the same low price (`open` retains prompts
/// and trains on them), `premium` serves `m` at six times the price, `claude` (Anthropic wire)
/// serves the large-context model `big`.
const SIM: &str = "providers:
  - { id: fast, format: openai }
  - { id: open, format: openai }
  - { id: premium, format: openai }
  - { id: claude, format: anthropic }
";

/// Workflows the scenarios use.
const POLICY: &str = "orgs:
  - id: acme
    budget_fail_mode: fail_closed
    api_keys: [{ id: k1, sha256: \"KEY_SHA256\", prefix: sk-e2e }]
    default_workflow: main
    workflows:
      - id: main
        models: [m, big]
        retry: { max_retries: 1, base_backoff_ms: 20, max_backoff_ms: 200 }
      - id: strict
        models: [m]
        provider: { order: [fast], allow_fallbacks: false }
        retry: { max_retries: 0 }
      - id: patient
        models: [m]
        provider: { order: [fast], allow_fallbacks: false }
        retry: { max_retries: 2, base_backoff_ms: 10, max_backoff_ms: 100 }
        timeouts: { first_byte_ms: 2000, total_ms: 5000 }
      - id: retrying
        models: [m]
        provider: { order: [fast], allow_fallbacks: false }
        retry: { max_retries: 3, base_backoff_ms: 1, max_backoff_ms: 4 }
";

/// What to start.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Router processes.
    pub routers: usize,
    /// A health prober, with this config (YAML), or none.
    pub prober: Option<String>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            routers: 1,
            prober: None,
        }
    }
}

/// A running cluster; every process is killed when it is dropped.
pub struct Cluster {
    /// The shared Redis.
    pub redis: RedisServer,
    /// The provider simulator.
    pub sim: SimProcess,
    /// The policy service.
    pub policy: ServiceProcess,
    /// The billing service.
    pub billing: ServiceProcess,
    /// The health prober, if started.
    pub prober: Option<ServiceProcess>,
    /// The routers.
    pub routers: Vec<ServiceProcess>,
    /// Plain HTTP client.
    pub http: reqwest::Client,
    dir: tempfile::TempDir,
}

fn catalog(sim: &SimProcess) -> String {
    let provider = |id: &str, format: &str, policy: &str| {
        format!(
            "  - {{ id: {id}, format: {format}, base_url: \"{}\", data_policy: {policy} }}\n",
            sim.base_url(id).unwrap()
        )
    };
    let private = "{ retains_prompts: false, trains_on_data: false, zero_retention: true }";
    let mut c = String::from("providers:\n");
    c += &provider("fast", "openai", private);
    c += &provider(
        "open",
        "openai",
        "{ retains_prompts: true, trains_on_data: true, zero_retention: false }",
    );
    c += &provider("premium", "openai", private);
    c += &provider("claude", "anthropic", private);
    c += "models:
  - { id: m, context_length: 8000, max_output: 500 }
  - { id: big, context_length: 100000, max_output: 1000 }
endpoints:
  - { model: m, provider: fast, upstream_model: m-fast, price: { prompt: 1, completion: 2 } }
  - { model: m, provider: open, upstream_model: m-open, price: { prompt: 1, completion: 2 } }
  - { model: m, provider: premium, upstream_model: m-premium, price: { prompt: 6, completion: 12 } }
  - { model: big, provider: claude, upstream_model: big-claude, price: { prompt: 3, completion: 15 } }
";
    c
}

fn loopback() -> [&'static str; 4] {
    ["--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"]
}

async fn service(name: &str, command: &str, args: &[&str]) -> ServiceProcess {
    let mut all = vec![command];
    all.extend_from_slice(args);
    all.extend_from_slice(&loopback());
    ServiceProcess::spawn(
        name,
        "switchyard",
        "switchyard",
        all,
        &[("RUST_LOG", "info")],
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

impl Cluster {
    /// Starts everything in `spec` and waits until every router has loaded the policy.
    pub async fn start(spec: Spec) -> Cluster {
        let redis = RedisServer::start().await.unwrap();
        let sim = SimProcess::spawn(SIM, &[]).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let catalog_file = dir.path().join("catalog.yaml");
        std::fs::write(&catalog_file, catalog(&sim)).unwrap();
        let policy_file = dir.path().join("policy.yaml");
        std::fs::write(&policy_file, POLICY.replace("KEY_SHA256", KEY_SHA256)).unwrap();
        let url = redis.url();
        let path = |p: &PathBuf| p.to_str().unwrap().to_string();
        let policy = service(
            "policy",
            "policy",
            &["--config", &path(&policy_file), "--redis", &url],
        )
        .await;
        let billing = service(
            "billing",
            "billing",
            &["--redis", &url, "--reconcile-ms", "500"],
        )
        .await;
        let prober = match &spec.prober {
            None => None,
            Some(config) => {
                let file = dir.path().join("prober.yaml");
                std::fs::write(&file, config).unwrap();
                Some(
                    service(
                        "prober",
                        "prober",
                        &[
                            "--catalog",
                            &path(&catalog_file),
                            "--config",
                            &path(&file),
                            "--redis",
                            &url,
                        ],
                    )
                    .await,
                )
            }
        };
        let mut cluster = Cluster {
            redis,
            sim,
            policy,
            billing,
            prober,
            routers: Vec::new(),
            http: reqwest::Client::new(),
            dir,
        };
        for _ in 0..spec.routers {
            cluster.add_router().await;
        }
        cluster
    }

    /// Starts one more router and waits until it is ready.
    pub async fn add_router(&mut self) -> usize {
        let n = self.routers.len();
        let catalog = self.dir.path().join("catalog.yaml");
        let router = service(
            &format!("router-{n}"),
            "router",
            &[
                "--catalog",
                catalog.to_str().unwrap(),
                "--redis",
                &self.redis.url(),
                "--policy",
                &self.policy.url("grpc"),
                "--billing",
                &self.billing.url("grpc"),
            ],
        )
        .await;
        let ready = format!("{}/readyz", router.url("http"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = self
                .http
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "router-{n} never ready:\n{}",
                router.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.routers.push(router);
        n
    }

    /// The simulator's control API.
    pub fn sim(&self) -> SimControl {
        self.sim.control()
    }

    /// Posts a chat completion to router `n`; `headers` are extra headers.
    pub async fn post(
        &self,
        n: usize,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!(
                "{}/v1/chat/completions",
                self.routers[n].url("http")
            ))
            .bearer_auth(KEY)
            .json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    /// A non-streamed chat completion on router `n`: status and JSON body.
    pub async fn chat(&self, n: usize, body: &Value) -> (u16, Value) {
        let resp = self.post(n, body, &[]).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// A streamed chat completion on router `n`: status and every SSE `data:` payload in order.
    pub async fn stream(&self, n: usize, body: &Value) -> (u16, Vec<String>) {
        let mut body = body.clone();
        body["stream"] = json!(true);
        let resp = self.post(n, &body, &[]).await;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let events = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.trim().to_string())
            .collect();
        (status, events)
    }

    /// A billing client.
    pub async fn billing(&self) -> pb::billing_client::BillingClient<tonic::transport::Channel> {
        pb::billing_client::BillingClient::connect(self.billing.url("grpc"))
            .await
            .unwrap()
    }

    /// Every ledger entry of org `acme`.
    pub async fn ledger(&self) -> Vec<pb::LedgerEntry> {
        let mut client = self.billing().await;
        let mut stream = client
            .export_ledger(pb::ExportLedgerRequest {
                org_id: "acme".into(),
                after_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(entry) = stream.message().await.unwrap() {
            out.push(entry);
        }
        out
    }

    /// Waits up to `within` until the ledger holds at least `n` entries; returns them all.
    pub async fn ledger_at_least(&self, n: usize, within: Duration) -> Vec<pb::LedgerEntry> {
        let deadline = Instant::now() + within;
        loop {
            let ledger = self.ledger().await;
            if ledger.len() >= n || Instant::now() > deadline {
                return ledger;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The prober's view of every endpoint.
    pub async fn endpoints(&self) -> pb::ListEndpointsResponse {
        let url = self.prober.as_ref().expect("no prober").url("grpc");
        let mut client = pb::health_client::HealthClient::connect(url).await.unwrap();
        client
            .list_endpoints(pb::ListEndpointsRequest {})
            .await
            .unwrap()
            .into_inner()
    }
}

/// A small chat request for model `m`, with `extra` fields merged in.
pub fn hi(extra: Value) -> Value {
    let mut body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 16
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// The providers that served, one per response.
pub fn provider(v: &Value) -> &str {
    v["provider"].as_str().unwrap_or("(none)")
}

/// The planned endpoints of a response's routing trace.
pub fn plan(v: &Value) -> Vec<String> {
    v["routing"]["plan"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The outcome of every attempt of a response (or an error's routing metadata).
pub fn outcomes(v: &Value) -> Vec<String> {
    let routing = if v["routing"].is_object() {
        &v["routing"]
    } else {
        &v["error"]["metadata"]["routing"]
    };
    routing["attempts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t["outcome"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}
