//! A Switchyard cluster of real processes for cross-service scenarios: a `redis-server` from the
//! testkit, the provider simulator, and the `switchyard` binary as policy, billing, optionally a
//! health prober, and one or more routers, every listener on an ephemeral loopback port.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_proto::v1 as pb;
use switchyard_testkit::{RedisServer, ServiceProcess, SimControl, SimProcess};

pub mod up;

/// The cluster's API key (org `acme`, which fails closed when budgets cannot be checked).
pub const KEY: &str = "sk-e2e-cluster-key";
const KEY_SHA256: &str = "4c5f32e12dd892a053ebfbc3d99244c81a1cc6c91931cab33f86cf501ff01964";
/// The key of org `beta`, which fails open within an allowance of 0.002 USD per router.
pub const BETA_KEY: &str = "sk-e2e-beta-key";
const BETA_KEY_SHA256: &str = "bccd8e716dccac65ef96df6aec1916a05e403fae8c50f7743d2de7b017640168";

/// Simulated providers: `fast` and `open` serve `m` at the same low price (`open` retains prompts
/// and trains on them), `premium` serves `m` at six times the price, `claude` (Anthropic wire)
/// serves the large-context model `big`.
const SIM: &str = "providers:
  - { id: fast, format: openai }
  - { id: open, format: openai }
  - { id: premium, format: openai }
  - { id: claude, format: anthropic }
";

/// A prober that leaves the endpoints alone (probes every 30 s) and evaluates passive outcomes
/// every 200 ms.
pub const QUIET_PROBER: &str = "probe: { interval_ms: 30000 }
lease_ttl_ms: 60000
evaluate_ms: 200
";

/// Workflows the scenarios use.
const POLICY: &str = "orgs:
  - id: acme
    budget_fail_mode: fail_closed
    weight: 3
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
      - id: short
        models: [m]
        provider: { order: [fast, open] }
        timeouts: { first_byte_ms: 2000, total_ms: 4000 }
      - id: tools_return
        models: [m]
        provider: { order: [fast, open] }
        retry: { max_retries: 0 }
        on_invalid_output: return
      - id: tools_retry
        models: [m]
        provider: { order: [fast, open] }
        retry: { max_retries: 0 }
        on_invalid_output: retry
      - id: tools_fallback
        models: [m]
        provider: { order: [fast, open] }
        retry: { max_retries: 0 }
        on_invalid_output: fallback
      - id: tools_guarded
        models: [m]
        provider: { order: [fast, open] }
        retry: { max_retries: 0 }
        on_invalid_output: fallback
        min_tool_validity: 0.8
      - id: embed
        models: [e]
        retry: { max_retries: 1, base_backoff_ms: 20, max_backoff_ms: 200 }
      - id: clouds
        models: [c]
        provider: { order: [gem, brk, fast] }
        retry: { max_retries: 0 }
      - id: capped
        models: [m]
        provider: { order: [fast, open] }
        max_price: { prompt: 3, completion: 5 }
        retry: { max_retries: 0 }
      - id: retrying
        models: [m]
        provider: { order: [fast], allow_fallbacks: false }
        retry: { max_retries: 3, base_backoff_ms: 1, max_backoff_ms: 4 }
      - id: paced
        models: [m]
        provider: { order: [fast], allow_fallbacks: false }
        retry: { max_retries: 0 }
        timeouts: { first_byte_ms: 5000, total_ms: 20000 }
      - id: paced_batch
        models: [m]
        provider: { order: [fast], allow_fallbacks: false }
        retry: { max_retries: 0 }
        timeouts: { first_byte_ms: 5000, total_ms: 20000 }
        priority: batch
      - id: patient_batch
        models: [m]
        provider: { order: [fast, open] }
        retry: { max_retries: 0 }
        timeouts: { first_byte_ms: 2000, total_ms: 40000 }
        priority: batch
        degradation: queue
      - id: strict_events
        models: [m]
        provider: { order: [fast], allow_fallbacks: false }
        retry: { max_retries: 0 }
        on_malformed_event: fail
      - id: continued
        models: [m]
        provider: { order: [fast, open], allow_fallbacks: false }
        retry: { max_retries: 0 }
        timeouts: { first_byte_ms: 2000, idle_ms: 1000, total_ms: 20000 }
        continuation: auto
      - id: continued_prefill
        models: [m]
        provider: { order: [fast, claude], allow_fallbacks: false }
        retry: { max_retries: 0 }
        timeouts: { first_byte_ms: 2000, idle_ms: 1000, total_ms: 20000 }
        continuation: auto
      - id: unhedged
        models: [m]
        provider: { order: [fast, open], allow_fallbacks: false }
        retry: { max_retries: 0 }
      - id: hedged
        models: [m]
        provider: { order: [fast, open], allow_fallbacks: false }
        retry: { max_retries: 0 }
        hedge: { after_percentile: 90, after_ms: 150 }
      - id: hang_fallback
        models: [m]
        provider: { order: [fast, open], allow_fallbacks: false }
        retry: { max_retries: 2, base_backoff_ms: 10, max_backoff_ms: 100 }
        timeouts: { first_byte_ms: 1500, total_ms: 20000 }
  - id: beta
    budget_fail_mode: fail_open
    fail_open_allowance: \"0.002\"
    api_keys: [{ id: b1, sha256: \"BETA_KEY_SHA256\", prefix: sk-e2e }]
    default_workflow: main
    workflows:
      - id: main
        models: [m, big]
        retry: { max_retries: 1, base_backoff_ms: 20, max_backoff_ms: 200 }
      - id: paced
        models: [m]
        provider: { order: [fast], allow_fallbacks: false }
        retry: { max_retries: 0 }
        timeouts: { first_byte_ms: 5000, total_ms: 20000 }
";

/// What to start.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Router processes.
    pub routers: usize,
    /// A health prober, with this config (YAML), or none.
    pub prober: Option<String>,
    /// Redis with an append-only file (`appendfsync always`), so a `kill -9` loses nothing.
    pub aof: bool,
    /// Extra arguments for every router.
    pub router_args: Vec<String>,
    /// Extra environment for every router.
    pub router_env: Vec<(String, String)>,
    /// Extra environment for every service and `ctl` (e.g. mutual TLS).
    pub env: Vec<(String, String)>,
    /// Which Redis the services share.
    pub redis: RedisKind,
    /// Settings added to every simulated provider (YAML flow-map entries such as
    /// `prompt_tokenizer: o200k`).
    pub sim_provider: Option<String>,
    /// Models added to the catalog (YAML list items, one per line).
    pub extra_models: Vec<String>,
    /// Endpoints added to the catalog (YAML list items, one per line).
    pub extra_endpoints: Vec<String>,
    /// The cloud formats too: simulated `gem` (Gemini, key checked) and `brk` (Bedrock, SigV4
    /// checked for `us-east-1` and the access key id) serve the model `c` beside `fast`, with
    /// the keys and AWS credentials in every service's environment.
    pub clouds: bool,
    /// Budgets declared in the policy file for org `acme` (a YAML flow list).
    pub acme_budgets: Option<String>,
}

/// The cloud providers' simulator entries.
const CLOUD_SIM: &str = "  - { id: gem, format: gemini, api_key: gm-e2e-key, models: [gemini-e2e] }
  - { id: brk, format: bedrock, api_key: AKIDE2EEXAMPLE, aws_region: us-east-1, models: [\"anthropic.e2e-v1:0\"] }
";

/// The environment the cloud providers' credentials come from.
pub const CLOUD_ENV: [(&str, &str); 3] = [
    ("SY_E2E_GEMINI_KEY", "gm-e2e-key"),
    ("AWS_ACCESS_KEY_ID", "AKIDE2EEXAMPLE"),
    ("AWS_SECRET_ACCESS_KEY", "e2e-secret-access-key"),
];

/// The Redis deployment of a cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RedisKind {
    /// One `redis-server` (the `redis` field).
    #[default]
    Standalone,
    /// A 3-primary Redis Cluster.
    Cluster,
    /// A primary with two replicas and three Sentinels.
    Sentinel,
}

/// A highly available Redis the services use instead of the standalone one.
#[derive(Debug)]
pub enum Ha {
    /// A Redis Cluster.
    Cluster(switchyard_testkit::RedisCluster),
    /// A Sentinel-managed primary.
    Sentinel(switchyard_testkit::RedisSentinels),
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            routers: 1,
            prober: None,
            aof: false,
            router_args: Vec::new(),
            router_env: Vec::new(),
            env: Vec::new(),
            redis: RedisKind::Standalone,
            sim_provider: None,
            extra_models: Vec::new(),
            extra_endpoints: Vec::new(),
            clouds: false,
            acme_budgets: None,
        }
    }
}

/// Chat completion URLs a load is spread over.
pub type Pool = Arc<RwLock<Vec<String>>>;

/// A running cluster; every process is killed when it is dropped.
pub struct Cluster {
    /// The standalone Redis (the services use it unless `ha` is set).
    pub redis: RedisServer,
    /// The Redis Cluster or Sentinel setup the services use, when the spec asked for one.
    pub ha: Option<Ha>,
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
    spec: Spec,
    dir: tempfile::TempDir,
}

fn catalog(
    sim: &SimProcess,
    extra_models: &[String],
    extra_endpoints: &[String],
    clouds: bool,
) -> String {
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
    if clouds {
        c += &format!(
            "  - {{ id: gem, format: gemini, base_url: \"{}\", key: env:SY_E2E_GEMINI_KEY, data_policy: {private} }}\n",
            sim.base_url("gem").unwrap()
        );
        c += &format!(
            "  - {{ id: brk, format: bedrock, base_url: \"{}\", aws_region: us-east-1, data_policy: {private} }}\n",
            sim.base_url("brk").unwrap()
        );
    }
    c += "models:
  - { id: m, context_length: 8000, max_output: 500 }
  - { id: big, context_length: 100000, max_output: 1000 }
";
    for m in extra_models {
        c += &format!("  - {m}\n");
    }
    if clouds {
        c += "  - { id: c, context_length: 8000, max_output: 500 }\n";
    }
    c += "endpoints:
  - { model: m, provider: fast, upstream_model: m-fast, supports: [tools, tool_choice, response_format, json_schema, max_tokens], price: { prompt: 1, completion: 2 } }
  - { model: m, provider: open, upstream_model: m-open, supports: [tools, tool_choice, response_format, json_schema, max_tokens], price: { prompt: 1, completion: 2 } }
  - { model: m, provider: premium, upstream_model: m-premium, supports: [tools, tool_choice, response_format, json_schema, max_tokens], price: { prompt: 6, completion: 12 } }
  - { model: big, provider: claude, upstream_model: big-claude, price: { prompt: 3, completion: 15 } }
";
    for e in extra_endpoints {
        c += &format!("  - {e}\n");
    }
    if clouds {
        let supports = "supports: [tools, tool_choice, response_format, json_schema, max_tokens]";
        c += &format!(
            "  - {{ model: c, provider: gem, upstream_model: gemini-e2e, {supports}, price: {{ prompt: 1, completion: 2 }} }}\n"
        );
        c += &format!(
            "  - {{ model: c, provider: brk, upstream_model: \"anthropic.e2e-v1:0\", {supports}, price: {{ prompt: 1, completion: 2 }} }}\n"
        );
        c += &format!(
            "  - {{ model: c, provider: fast, upstream_model: c-fast, {supports}, price: {{ prompt: 1, completion: 2 }} }}\n"
        );
    }
    c
}

/// A service on any free ports, with extra environment.
async fn service(
    name: &str,
    command: &str,
    args: &[&str],
    extra: &[(String, String)],
) -> ServiceProcess {
    service_at(name, command, args, "127.0.0.1:0", "127.0.0.1:0", extra).await
}

/// A service on given addresses (`127.0.0.1:0` for any free port), with extra environment.
async fn service_at(
    name: &str,
    command: &str,
    args: &[&str],
    grpc: &str,
    http: &str,
    extra: &[(String, String)],
) -> ServiceProcess {
    let mut all = vec![command];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--grpc", grpc, "--http", http]);
    // JSON logs, one object per line, as an operator would collect them.
    let mut env = vec![("RUST_LOG", "info"), ("SWITCHYARD_LOG_FORMAT", "json")];
    env.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    ServiceProcess::spawn(name, "switchyard", "switchyard", all, &env)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

impl Cluster {
    /// Starts everything in `spec` and waits until every router has loaded the policy.
    pub async fn start(mut spec: Spec) -> Cluster {
        if spec.clouds {
            spec.env
                .extend(CLOUD_ENV.map(|(k, v)| (k.to_string(), v.to_string())));
        }
        let redis = RedisServer::start_with(switchyard_testkit::RedisOptions {
            aof: spec.aof,
            ..Default::default()
        })
        .await
        .unwrap();
        let base = if spec.clouds {
            format!("{SIM}{CLOUD_SIM}")
        } else {
            SIM.to_string()
        };
        let sim_yaml = match &spec.sim_provider {
            Some(extra) => base.replace(" }\n", &format!(", {extra} }}\n")),
            None => base,
        };
        let sim = SimProcess::spawn(&sim_yaml, &[]).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let catalog_file = dir.path().join("catalog.yaml");
        std::fs::write(
            &catalog_file,
            catalog(&sim, &spec.extra_models, &spec.extra_endpoints, spec.clouds),
        )
        .unwrap();
        let policy_file = dir.path().join("policy.yaml");
        std::fs::write(
            &policy_file,
            match &spec.acme_budgets {
                Some(b) => POLICY.replacen(
                    "    workflows:\n",
                    &format!("    budgets: {b}\n    workflows:\n"),
                    1,
                ),
                None => POLICY.to_string(),
            }
            .replace("BETA_KEY_SHA256", BETA_KEY_SHA256)
            .replace("KEY_SHA256", KEY_SHA256),
        )
        .unwrap();
        let ha = match spec.redis {
            RedisKind::Standalone => None,
            RedisKind::Cluster => Some(Ha::Cluster(
                switchyard_testkit::RedisCluster::start(3).await.unwrap(),
            )),
            RedisKind::Sentinel => Some(Ha::Sentinel(
                switchyard_testkit::RedisSentinels::start(2).await.unwrap(),
            )),
        };
        let url = match &ha {
            None => redis.url(),
            Some(Ha::Cluster(c)) => c.url(),
            Some(Ha::Sentinel(s)) => s.url(),
        };
        let path = |p: &PathBuf| p.to_str().unwrap().to_string();
        // The policy service publishes the catalog (as in production); the other services'
        // own copy of the file is their bootstrap.
        let policy = service(
            "policy",
            "policy",
            &[
                "--config",
                &path(&policy_file),
                "--catalog",
                &path(&catalog_file),
                "--redis",
                &url,
            ],
            &spec.env,
        )
        .await;
        let billing = service(
            "billing",
            "billing",
            &["--redis", &url, "--reconcile-ms", "500"],
            &spec.env,
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
                        &spec.env,
                    )
                    .await,
                )
            }
        };
        let mut cluster = Cluster {
            redis,
            ha,
            sim,
            policy,
            billing,
            prober,
            routers: Vec::new(),
            http: reqwest::Client::new(),
            spec: spec.clone(),
            dir,
        };
        for _ in 0..spec.routers {
            cluster.add_router().await;
        }
        cluster
    }

    /// Starts one more router and waits until it is ready.
    pub async fn add_router(&mut self) -> usize {
        self.add_router_with(&[]).await
    }

    /// Starts one more router with `extra` arguments after the spec's, and waits until it is
    /// ready.
    pub async fn add_router_with(&mut self, extra: &[&str]) -> usize {
        let n = self.routers.len();
        let catalog = self.dir.path().join("catalog.yaml");
        let (redis, policy, billing) = (
            self.redis_url(),
            self.policy.url("grpc"),
            self.billing.url("grpc"),
        );
        let mut args = vec![
            "--catalog",
            catalog.to_str().unwrap(),
            "--redis",
            &redis,
            "--policy",
            &policy,
            "--billing",
            &billing,
        ];
        args.extend(self.spec.router_args.iter().map(String::as_str));
        args.extend(extra);
        let env: Vec<(String, String)> = self
            .spec
            .env
            .iter()
            .chain(&self.spec.router_env)
            .cloned()
            .collect();
        let router = service(&format!("router-{n}"), "router", &args, &env).await;
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

    /// Starts billing again on the addresses it had (after it was killed).
    pub async fn restart_billing(&mut self) {
        let (grpc, http) = (
            self.billing.addr("grpc").unwrap().to_string(),
            self.billing.addr("http").unwrap().to_string(),
        );
        let url = self.redis_url();
        self.billing = service_at(
            "billing",
            "billing",
            &["--redis", &url, "--reconcile-ms", "500"],
            &grpc,
            &http,
            &self.spec.env,
        )
        .await;
    }

    /// Starts the policy service again on the addresses it had (after it was killed).
    pub async fn restart_policy(&mut self) {
        let (grpc, http) = (
            self.policy.addr("grpc").unwrap().to_string(),
            self.policy.addr("http").unwrap().to_string(),
        );
        let file = self.dir.path().join("policy.yaml");
        let catalog = self.catalog_file();
        let url = self.redis_url();
        self.policy = service_at(
            "policy",
            "policy",
            &[
                "--config",
                file.to_str().unwrap(),
                "--catalog",
                catalog.to_str().unwrap(),
                "--redis",
                &url,
            ],
            &grpc,
            &http,
            &self.spec.env,
        )
        .await;
    }

    /// The catalog file the policy service publishes (and the others start from).
    pub fn catalog_file(&self) -> PathBuf {
        self.dir.path().join("catalog.yaml")
    }

    /// Router `n`'s `/readyz` detail.
    pub async fn readyz(&self, n: usize) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}/readyz", self.routers[n].url("http")))
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// The Redis URL the services use.
    pub fn redis_url(&self) -> String {
        match &self.ha {
            None => self.redis.url(),
            Some(Ha::Cluster(c)) => c.url(),
            Some(Ha::Sentinel(s)) => s.url(),
        }
    }

    /// Waits until every router follows policy `version` or a later one.
    pub async fn wait_policy(&self, version: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in 0..self.routers.len() {
            loop {
                let (_, v) = self.readyz(n).await;
                if v["policy_version"]
                    .as_u64()
                    .is_some_and(|have| have >= version)
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "router-{n} never reached policy version {version}: {v}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// `POST /v1/routing/explain` on router `n` with a route seed: status and JSON body.
    pub async fn explain(&self, n: usize, body: &Value, seed: u64) -> (u16, Value) {
        let resp = self
            .http
            .post(format!(
                "{}/v1/routing/explain",
                self.routers[n].url("http")
            ))
            .bearer_auth(KEY)
            .header("x-switchyard-route-seed", seed.to_string())
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `switchyard ctl --json ARGS` pointed at this cluster (router 0 for `explain`).
    pub async fn ctl(&self, args: &[&str]) -> Ctl {
        let bin = switchyard_testkit::workspace_bin("switchyard", "switchyard").unwrap();
        let out = tokio::process::Command::new(bin)
            .arg("ctl")
            .arg("--json")
            .args(["--policy", &self.policy.url("grpc")])
            .args(["--billing", &self.billing.url("grpc")])
            .args([
                "--prober",
                &self
                    .prober
                    .as_ref()
                    .map_or("http://127.0.0.1:1".into(), |p| p.url("grpc")),
            ])
            .args(["--router", &self.routers[0].url("grpc")])
            .args(["--actor", "e2e"])
            .args(args)
            .env_remove("SWITCHYARD_API_KEY")
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Ctl {
            code: out.status.code().unwrap_or(-1),
            json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Router `n`'s Prometheus metrics text.
    pub async fn metrics(&self, n: usize) -> String {
        self.http
            .get(format!("{}/metrics", self.routers[n].url("http")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A load generator sending `body` at `rate` requests per second, round robin over every
    /// router, as `key`.
    pub fn load(&self, rate: u32, key: &'static str, body: Value) -> Load {
        let urls: Vec<String> = self
            .routers
            .iter()
            .map(|r| format!("{}/v1/chat/completions", r.url("http")))
            .collect();
        Load::start(self.http.clone(), urls, rate, key, body)
    }

    /// The simulator's control API.
    pub fn sim(&self) -> SimControl {
        self.sim.control()
    }

    /// Makes simulated provider `id` answer every request with `status`.
    pub async fn break_provider(&self, id: &str, status: u16) {
        self.sim()
            .set_faults(id, &json!({"errors": [{"status": status, "rate": 1.0}]}))
            .await
            .unwrap();
    }

    /// Posts a chat completion to router `n`; `headers` are extra headers.
    pub async fn post(
        &self,
        n: usize,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        self.post_to(n, "/v1/chat/completions", body, headers).await
    }

    /// Posts `body` as JSON to `path` on router `n` with the cluster key (as a bearer token,
    /// unless `headers` carry `x-api-key`) and extra `headers`.
    pub async fn post_to(
        &self,
        n: usize,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}{path}", self.routers[n].url("http")))
            .json(body);
        if !headers.iter().any(|(k, _)| *k == "x-api-key") {
            req = req.bearer_auth(KEY);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    /// [`Cluster::post_to`], read: status and JSON body (`Null` when not JSON).
    pub async fn post_json(
        &self,
        n: usize,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let resp = self.post_to(n, path, body, headers).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// A non-streamed chat completion on router `n`: status and JSON body.
    pub async fn chat(&self, n: usize, body: &Value) -> (u16, Value) {
        self.chat_with(n, body, &[]).await
    }

    /// A non-streamed chat completion on router `n` with extra headers: status and JSON body.
    pub async fn chat_with(
        &self,
        n: usize,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let resp = self.post(n, body, headers).await;
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
        self.ledger_of("acme").await
    }

    /// Every ledger entry of `org`.
    pub async fn ledger_of(&self, org: &str) -> Vec<pb::LedgerEntry> {
        let mut client = self.billing().await;
        let mut stream = client
            .export_ledger(pb::ExportLedgerRequest {
                org_id: org.into(),
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

/// What a `ctl` command did.
#[derive(Debug)]
pub struct Ctl {
    /// Exit code.
    pub code: i32,
    /// Its stdout as JSON (`Null` when it is not JSON).
    pub json: Value,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Ctl {
    /// The JSON output of a command that must succeed.
    pub fn ok(self) -> Value {
        assert_eq!(self.code, 0, "ctl failed: {}{}", self.stderr, self.stdout);
        self.json
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

/// The exclusion of `endpoint` in a list of them (an explanation's `excluded`, or a routing
/// trace's).
pub fn exclusion<'a>(excluded: &'a Value, endpoint: &str) -> Option<&'a Value> {
    excluded
        .as_array()?
        .iter()
        .find(|e| e["endpoint"] == endpoint)
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

/// What one request of a load run got.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was sent, from the start of the run.
    pub sent: Duration,
    /// HTTP status (0: no response at all).
    pub status: u16,
    /// The routing trace's request id, when the request was served.
    pub request_id: Option<String>,
    /// The serving provider.
    pub provider: Option<String>,
    /// Attempts made.
    pub attempts: usize,
    /// The error code, if any.
    pub error: Option<String>,
    /// How long it took.
    pub latency: Duration,
}

/// An open-loop load generator: one request every 1/rate seconds, whatever the answers.
pub struct Load {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Load {
    fn start(
        http: reqwest::Client,
        urls: Vec<String>,
        rate: u32,
        key: &'static str,
        body: Value,
    ) -> Load {
        Load::over(http, Arc::new(RwLock::new(urls)), rate, key, body)
    }

    /// Load over a pool of chat completion URLs that may change while it runs (what a load
    /// balancer would send to); with an empty pool, the request is recorded as not sent
    /// (status 0).
    pub fn over(
        http: reqwest::Client,
        urls: Pool,
        rate: u32,
        key: &'static str,
        body: Value,
    ) -> Load {
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut inflight = tokio::task::JoinSet::new();
            let mut n = 0usize;
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let url = {
                    let urls = urls.read().unwrap();
                    (!urls.is_empty()).then(|| urls[n % urls.len()].clone())
                };
                n += 1;
                let (http, body) = (http.clone(), body.clone());
                let sent = started.elapsed();
                inflight.spawn(async move {
                    let t = Instant::now();
                    let Some(url) = url else {
                        return Sample {
                            sent,
                            status: 0,
                            request_id: None,
                            provider: None,
                            attempts: 0,
                            error: Some("no router in the pool".into()),
                            latency: t.elapsed(),
                        };
                    };
                    let resp = http
                        .post(url)
                        .bearer_auth(key)
                        .json(&body)
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await;
                    let (status, v) = match resp {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            (status, r.json::<Value>().await.unwrap_or(Value::Null))
                        }
                        Err(_) => (0, Value::Null),
                    };
                    let routing = if v["routing"].is_object() {
                        &v["routing"]
                    } else {
                        &v["error"]["metadata"]["routing"]
                    };
                    Sample {
                        sent,
                        status,
                        request_id: (status == 200)
                            .then(|| v["routing"]["request_id"].as_str().map(str::to_string))
                            .flatten(),
                        provider: v["provider"].as_str().map(str::to_string),
                        attempts: routing["attempts"].as_array().map_or(0, Vec::len),
                        error: v["error"]["code"].as_str().map(str::to_string),
                        latency: t.elapsed(),
                    }
                });
            }
            inflight.join_all().await
        });
        Load { stop, task }
    }

    /// Stops sending, waits for the answers still due, and returns every sample in send order.
    pub async fn finish(self) -> Vec<Sample> {
        self.stop.cancel();
        let mut samples = self.task.await.unwrap();
        samples.sort_by_key(|s| s.sent);
        samples
    }
}

/// Counts of a load run: total, served, and errors by code.
pub fn summary(samples: &[Sample]) -> String {
    let served = samples.iter().filter(|s| s.status == 200).count();
    let mut errors = BTreeMap::<String, usize>::new();
    for s in samples.iter().filter(|s| s.status != 200) {
        *errors
            .entry(format!(
                "{} {}",
                s.status,
                s.error.as_deref().unwrap_or("(no body)")
            ))
            .or_default() += 1;
    }
    let attempts: usize = samples.iter().map(|s| s.attempts).sum();
    format!(
        "{} requests, {served} served ({:.1} %), {:.2} attempts per request, errors {errors:?}",
        samples.len(),
        100.0 * served as f64 / samples.len().max(1) as f64,
        attempts as f64 / samples.len().max(1) as f64
    )
}

/// Sets a hard day budget for `org`'s whole spend.
pub async fn set_day_budget(c: &Cluster, org: &str, nano_usd: i64) {
    c.billing()
        .await
        .set_budget(pb::SetBudgetRequest {
            scope: Some(pb::Scope {
                kind: pb::ScopeKind::Org as i32,
                org_id: org.into(),
                id: String::new(),
            }),
            period: pb::Period::Day as i32,
            limit_nano_usd: nano_usd,
            hard: true,
            alert_thresholds_percent: vec![],
        })
        .await
        .unwrap();
}

/// The SSE events of a response body: (event name, data as JSON; `[DONE]` and other non-JSON
/// data as `Value::Null`).
pub fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = String::new();
            for line in e.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            (name, serde_json::from_str(&data).unwrap_or(Value::Null))
        })
        .collect()
}
