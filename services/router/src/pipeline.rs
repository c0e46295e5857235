//! The request path shared by the router's APIs: authenticate, resolve the workflow, plan,
//! hold the maximum cost, run the attempts, and report the usage (settling the hold), or
//! release the hold when nothing was served.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use secrecy::SecretString;
use switchyard_billing::pricing::PriceBook;
use switchyard_config::Catalog;
use switchyard_core::tokens::estimate_text;
use switchyard_core::{
    ChatChunk, ChatRequest, ChatResponse, EndpointId, Error, ErrorClass, Money, Usage,
};
use switchyard_policy::config::FailMode;
use switchyard_policy::snapshot::{CompiledWorkflow, KeyRecord};
use switchyard_proto::v1 as pb;
use switchyard_providers::{ProviderClient, Target, Timeouts, resolve_key};
use switchyard_routing::{KeySource, PlanInput, RoutingCatalog, plan};
use switchyard_state::{BudgetStore, HoldOutcome, HoldRequest, Scope};
use tokio::time::Instant;

use crate::engine::{AttemptTrace, EngineSettings, PlannedAttempt};
use crate::health_view::HealthView;
use crate::policy_view::{PolicyView, PolicyWatcher};
use crate::reporter::Reporter;
use crate::retry_budget::RetryBudget;

/// How long a completed response is kept for idempotent replays.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// The text an idempotent request answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Idempotent {
    /// Just produced (and stored).
    Fresh(String),
    /// Stored by an earlier request with the same key.
    Replay(String),
}

/// Longest a request may ask to generate.
pub const MAX_OUTPUT_TOKENS: u32 = 1_000_000;
/// Most messages in one request.
pub const MAX_MESSAGES: usize = 10_000;

/// Everything the request path needs, shared by every request of a router.
pub struct Router {
    /// Planner view of the catalog.
    pub routing: RoutingCatalog,
    /// Prices.
    pub prices: PriceBook,
    /// Call targets with the shared keys, by endpoint.
    pub targets: HashMap<EndpointId, (Target, u32)>,
    /// Policy.
    pub policy: Arc<PolicyWatcher>,
    /// Health.
    pub health: Arc<HealthView>,
    /// Budgets.
    pub budgets: Arc<dyn BudgetStore>,
    /// Usage reports.
    pub reporter: Reporter,
    /// Upstream client.
    pub client: ProviderClient,
    /// Retry budgets.
    pub retry_budget: RetryBudget,
    /// Unsettled holds expire this long after their request's deadline.
    pub hold_grace: Duration,
    /// Models as listed by `/v1/models`.
    pub models: Vec<(String, u32, u32)>,
    /// Passive outcomes for the prober.
    pub outcomes: Option<Arc<crate::outcomes::OutcomeWriter>>,
    /// Idempotency keys; without a store, `Idempotency-Key` is refused.
    pub idempotency: Option<Arc<dyn switchyard_state::IdempotencyStore>>,
    /// How long a budget hold may take before the budget store counts as down.
    pub hold_timeout: Duration,
    /// Per org: the maximum cost admitted without a hold since the budget store last answered.
    pub fail_open_spent: std::sync::Mutex<HashMap<String, Money>>,
    /// Fires at the drain deadline of a shutdown: streams still open end with an error event.
    pub abort: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("endpoints", &self.targets.len())
            .finish_non_exhaustive()
    }
}

/// A request that passed auth, policy, planning and the budget hold.
pub struct Admitted {
    /// Request id (also the hold id).
    pub id: String,
    /// The caller's key.
    pub key: KeyRecord,
    /// The workflow.
    pub workflow: CompiledWorkflow,
    /// Attempts in order.
    pub plan: Vec<PlannedAttempt>,
    /// Engine settings from the workflow.
    pub settings: EngineSettings,
    /// Whether the budget store confirmed the hold (otherwise the org failed open: the usage
    /// report still names the hold, and billing charges it if no hold was ever taken).
    pub held: bool,
    /// Policy version, for the trace.
    pub policy_version: u64,
    /// Health version, for the trace.
    pub health_version: u64,
    /// Estimated prompt tokens (what a cancelled stream is billed for at least).
    pub prompt_tokens: u32,
    /// The seed the plan was drawn with.
    pub seed: u64,
    /// When admission began.
    pub received: Instant,
    /// The model asked for (the first of `models` when those are given).
    pub requested_model: String,
    /// A streamed request.
    pub stream: bool,
    /// The request's tool and output schemas, compiled; `None` when it has neither.
    pub validator: Option<crate::validate::Validator>,
    /// Counts the request in `switchyard_requests_in_flight` while it lives.
    _in_flight: InFlight,
}

/// One admitted request in the `switchyard_requests_in_flight` gauge (what a router's
/// autoscaler can follow), from admission until its last byte and report.
struct InFlight;

impl InFlight {
    fn new() -> Self {
        metrics::gauge!("switchyard_requests_in_flight").increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("switchyard_requests_in_flight").decrement(1.0);
    }
}

/// A request's route, planned but not run.
pub struct Routed {
    /// The workflow.
    pub workflow: CompiledWorkflow,
    /// Attempts in order, with where to send them.
    pub attempts: Vec<PlannedAttempt>,
    /// Every candidate left out, with its reason.
    pub excluded: Vec<switchyard_routing::Exclusion>,
    /// The models considered, in order.
    pub models: Vec<switchyard_core::ModelId>,
    /// Every candidate was ejected and the panic rule admitted them anyway.
    pub panic: bool,
    /// The health version planned under.
    pub health_version: u64,
    /// What the budget hold reserves: the most the request can cost on any planned endpoint.
    pub max_cost: Money,
}

/// An idempotency key and what identifies the request it was sent with.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The key, namespaced by API (`http:…`, `grpc:…`).
    pub key: &'a str,
    /// A hash of the request's content: the same key with other content is refused.
    pub request_hash: &'a str,
}

/// What the caller may set besides the request body.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitOptions {
    /// Plan with this seed (the same seed, health and policy give the same plan on every router).
    pub seed: Option<u64>,
    /// The caller's own deadline (a gRPC deadline), when shorter than the workflow's.
    pub timeout: Option<Duration>,
}

impl AdmitOptions {
    /// Reads a route seed as sent in a header or metadata value: a decimal `u64`.
    pub fn parse_seed(text: &str) -> Result<u64, Error> {
        text.trim().parse().map_err(|_| {
            Error::invalid(format!(
                "route seed `{text}` is not a decimal number from 0 to 18446744073709551615"
            ))
        })
    }
}

fn new_id() -> String {
    format!(
        "req_{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

impl Router {
    /// Builds the router's static parts from the catalog. Shared provider keys are resolved now.
    pub fn from_catalog(
        catalog: &Catalog,
        policy: Arc<PolicyWatcher>,
        health: Arc<HealthView>,
        budgets: Arc<dyn BudgetStore>,
        reporter: Reporter,
        client: ProviderClient,
    ) -> Self {
        let mut targets = HashMap::new();
        for e in &catalog.endpoints {
            let key = match catalog
                .provider(e.provider.as_str())
                .map(|p| resolve_key(&p.key))
            {
                Some(Ok(k)) => k,
                Some(Err(msg)) => {
                    tracing::warn!(endpoint = %e.id(), "shared provider key unavailable: {msg}");
                    None
                }
                None => None,
            };
            let context = e
                .context_length
                .or_else(|| catalog.model(e.model.as_str()).map(|m| m.context_length))
                .unwrap_or(0);
            if let Some(t) = Target::from_catalog(catalog, e, key) {
                targets.insert(e.id(), (t, context));
            }
        }
        Router {
            routing: RoutingCatalog::new(catalog),
            prices: PriceBook::from_catalog(catalog),
            targets,
            policy,
            health,
            budgets,
            reporter,
            client,
            retry_budget: RetryBudget::default(),
            hold_grace: Duration::from_secs(300),
            models: catalog
                .models
                .iter()
                .map(|m| (m.id.to_string(), m.context_length, m.max_output))
                .collect(),
            outcomes: None,
            idempotency: None,
            hold_timeout: Duration::from_millis(500),
            fail_open_spent: std::sync::Mutex::new(HashMap::new()),
            abort: tokio_util::sync::CancellationToken::new(),
        }
    }

    fn policy(&self) -> Result<Arc<PolicyView>, Error> {
        self.policy.current().ok_or_else(|| {
            Error::new(
                ErrorClass::Unavailable,
                "no policy loaded yet; the policy service has not answered",
            )
        })
    }

    /// Authenticates a bearer key.
    pub fn authenticate(
        &self,
        bearer: Option<&str>,
    ) -> Result<(Arc<PolicyView>, KeyRecord), Error> {
        let policy = self.policy()?;
        let key = bearer.ok_or_else(|| {
            Error::new(
                ErrorClass::Unauthenticated,
                "missing API key: send `Authorization: Bearer <key>`",
            )
        })?;
        let record = policy.compiled.authenticate(key).cloned().ok_or_else(|| {
            crate::observe::rejected(ErrorClass::Unauthenticated.as_str());
            Error::new(ErrorClass::Unauthenticated, "invalid or revoked API key")
        })?;
        Ok((policy, record))
    }

    /// Everything before the first attempt: validation, workflow, plan, budget hold.
    pub async fn admit(
        &self,
        policy: &PolicyView,
        key: KeyRecord,
        req: &ChatRequest,
        options: AdmitOptions,
    ) -> Result<Arc<Admitted>, Error> {
        let received = Instant::now();
        let result = self.admit_inner(policy, key, req, options, received).await;
        if let Err(e) = &result {
            crate::observe::rejected(e.class.as_str());
        }
        result
    }

    async fn admit_inner(
        &self,
        policy: &PolicyView,
        key: KeyRecord,
        req: &ChatRequest,
        options: AdmitOptions,
        received: Instant,
    ) -> Result<Arc<Admitted>, Error> {
        validate(req)?;
        let validator = crate::validate::Validator::for_request(req)?;
        let seed = options.seed.unwrap_or_else(rand::random);
        let Routed {
            workflow,
            attempts,
            health_version,
            max_cost,
            ..
        } = self.route(policy, &key, req, seed)?;
        let id = new_id();
        let span = tracing::Span::current();
        span.record("request_id", id.as_str());
        span.record("workflow", workflow.id.as_str());
        let held = self.hold(policy, &key, &workflow, &id, max_cost).await?;
        let t = workflow.timeouts;
        let mut deadline = Instant::now() + Duration::from_millis(t.total_ms);
        if let Some(timeout) = options.timeout {
            deadline = deadline.min(Instant::now() + timeout);
        }
        let settings = EngineSettings {
            timeouts: Timeouts {
                connect: Duration::from_millis(t.connect_ms),
                first_byte: Duration::from_millis(t.first_byte_ms),
                total: Duration::from_millis(t.total_ms),
            },
            max_retries: workflow.retry.max_retries,
            base_backoff: Duration::from_millis(workflow.retry.base_backoff_ms),
            max_backoff: Duration::from_millis(workflow.retry.max_backoff_ms),
            deadline,
            fallback_on_refusal: workflow.fallback_on_refusal,
            on_invalid_output: workflow.on_invalid_output,
        };
        Ok(Arc::new(Admitted {
            id,
            key,
            workflow,
            plan: attempts,
            settings,
            held,
            policy_version: policy.version,
            health_version,
            prompt_tokens: req.estimated_prompt_tokens(),
            seed,
            received,
            requested_model: req
                .models
                .first()
                .cloned()
                .unwrap_or_else(|| req.model.clone()),
            stream: req.stream,
            validator,
            _in_flight: InFlight::new(),
        }))
    }

    /// The route of a request before anything runs: its workflow, the planned attempts with
    /// their targets, every candidate left out and the maximum cost. Admission follows it and
    /// explain shows it, so a dry run with a seed is the plan a request with that seed follows.
    pub fn route(
        &self,
        policy: &PolicyView,
        key: &KeyRecord,
        req: &ChatRequest,
        seed: u64,
    ) -> Result<Routed, Error> {
        let org = key.org.to_string();
        let workflow = policy
            .compiled
            .workflow(&org, req.workflow.as_deref())
            .cloned()
            .ok_or_else(|| {
                Error::new(
                    ErrorClass::ForbiddenByPolicy,
                    format!(
                        "workflow `{}` does not exist for this org",
                        req.workflow.as_deref().unwrap_or("(default)")
                    ),
                )
            })?;
        let byok: Vec<_> = policy
            .byok
            .keys()
            .filter(|(o, _)| *o == org)
            .map(|(_, p)| p.as_str().into())
            .collect();
        let health = self.health.snapshot();
        let planned = plan(&PlanInput {
            catalog: &self.routing,
            policy: &workflow.routing,
            request: req,
            health: &health,
            byok: &byok,
            seed,
        })
        .map_err(|e| e.to_error())?;
        let mut attempts = Vec::new();
        for a in planned.attempts {
            let Some((target, context)) = self.targets.get(&a.endpoint) else {
                continue;
            };
            let mut target = target.clone();
            if a.key == KeySource::Byok {
                target.key = policy
                    .byok
                    .get(&(org.clone(), a.provider.to_string()))
                    .map(|k| {
                        SecretString::from(secrecy::ExposeSecret::expose_secret(k).to_string())
                    });
            }
            attempts.push(PlannedAttempt {
                attempt: a,
                target,
                context_length: *context,
            });
        }
        let endpoints: Vec<EndpointId> = attempts
            .iter()
            .map(|p| p.attempt.endpoint.clone())
            .collect();
        let max_cost = self.prices.max_cost(
            &endpoints,
            req.estimated_prompt_tokens(),
            req.max_output_tokens(),
        );
        Ok(Routed {
            workflow,
            attempts,
            excluded: planned.excluded,
            models: planned.models,
            panic: planned.panic,
            health_version: health.version,
            max_cost,
        })
    }

    /// Holds `amount`; `Ok(false)` when the budget store is down or slow and the org fails open
    /// within its allowance on this router.
    async fn hold(
        &self,
        policy: &PolicyView,
        key: &KeyRecord,
        workflow: &CompiledWorkflow,
        id: &str,
        amount: Money,
    ) -> Result<bool, Error> {
        let org = key.org.to_string();
        let req = HoldRequest {
            org: org.clone(),
            hold_id: id.to_string(),
            amount,
            scopes: vec![
                Scope::org(),
                Scope::key(key.id.as_str()),
                Scope::workflow(workflow.id.as_str()),
            ],
            now_ms: switchyard_billing::service::now_ms(),
            // The request's deadline plus time to deliver its usage report; after that the
            // reconciler settles the hold at its amount (a router that died mid-request).
            ttl_ms: workflow.timeouts.total_ms + self.hold_grace.as_millis() as u64,
        };
        let outcome = match tokio::time::timeout(self.hold_timeout, self.budgets.hold(&req)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(switchyard_state::StateError::Unavailable(format!(
                "no answer within {:?}",
                self.hold_timeout
            ))),
        };
        if outcome.is_ok() {
            self.fail_open_spent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&org);
        }
        match outcome {
            Ok(HoldOutcome::Held) => Ok(true),
            Ok(HoldOutcome::Duplicate(_)) => Ok(true),
            Ok(HoldOutcome::Denied {
                scope,
                period,
                limit,
                spent,
                held,
            }) => Err(Error::new(
                ErrorClass::BudgetExceeded,
                format!(
                    "the {} budget of {} would be exceeded",
                    period.as_str(),
                    scope.as_str()
                ),
            )
            .with_metadata("scope", scope.as_str().into())
            .with_metadata("period", period.as_str().into())
            .with_metadata("limit_usd", limit.to_string().into())
            .with_metadata("spent_usd", spent.to_string().into())
            .with_metadata("held_usd", held.to_string().into())),
            Err(e) => {
                let allowance = policy
                    .compiled
                    .org(&org)
                    .filter(|o| o.fail_mode == FailMode::FailOpen)
                    .map(|o| o.fail_open_allowance);
                tracing::warn!(org, error = %e, fail_open = allowance.is_some(), "budget store unreachable");
                metrics::counter!("switchyard_budget_store_errors_total").increment(1);
                if let Some(allowance) = allowance {
                    let mut spent = self
                        .fail_open_spent
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    let spent = spent.entry(org).or_insert(Money::ZERO);
                    let next = spent.saturating_add(amount);
                    if next > allowance {
                        return Err(Error::new(
                            ErrorClass::BudgetExceeded,
                            format!(
                                "budgets cannot be checked right now and this org's fail-open allowance of {allowance} USD is used up on this router"
                            ),
                        )
                        .with_metadata("reason", "fail_open_allowance_used".into()));
                    }
                    *spent = next;
                    metrics::counter!("switchyard_budget_fail_open_total").increment(1);
                    Ok(false)
                } else {
                    Err(Error::new(
                        ErrorClass::BudgetExceeded,
                        "budgets cannot be checked right now and this org fails closed",
                    )
                    .with_metadata("reason", "budget_store_unavailable".into()))
                }
            }
        }
    }

    /// Records the end of a request: usage to billing (settling the hold), or the hold released.
    pub async fn finish(
        &self,
        a: &Admitted,
        served: Option<(&EndpointId, Usage)>,
        trace: &[AttemptTrace],
        outcome: &str,
        ttft: Option<Duration>,
    ) -> Option<Money> {
        let cost = self.settle(a, served, trace.len(), outcome).await;
        crate::observe::request(
            a,
            &crate::observe::Ending {
                served,
                cost,
                trace,
                outcome,
                ttft,
            },
        );
        cost
    }

    /// The usage report (which settles the hold), or the hold released.
    async fn settle(
        &self,
        a: &Admitted,
        served: Option<(&EndpointId, Usage)>,
        attempts: usize,
        outcome: &str,
    ) -> Option<Money> {
        let org = a.key.org.to_string();
        match served {
            Some((endpoint, usage)) => {
                let cost = self
                    .prices
                    .cost(endpoint.as_str(), &usage)
                    .unwrap_or(Money::ZERO);
                let p = a.plan.iter().find(|p| &p.attempt.endpoint == endpoint);
                let record = pb::UsageRecord {
                    request_id: a.id.clone(),
                    org_id: org,
                    api_key_id: a.key.id.to_string(),
                    workflow: a.workflow.id.to_string(),
                    model: p.map(|p| p.attempt.model.to_string()).unwrap_or_default(),
                    provider: p
                        .map(|p| p.attempt.provider.to_string())
                        .unwrap_or_default(),
                    endpoint: endpoint.to_string(),
                    prompt_tokens: usage.prompt_tokens,
                    completion_tokens: usage.completion_tokens,
                    cached_prompt_tokens: usage.cached_prompt_tokens,
                    cost_nano_usd: cost.nanos(),
                    // Named even when the store never confirmed it: billing settles the hold if
                    // it exists and charges otherwise, so an ambiguous hold is never paid twice.
                    hold_id: a.id.clone(),
                    finished_unix_ms: switchyard_billing::service::now_ms() as i64,
                    attempts: attempts as u32,
                    outcome: outcome.to_string(),
                };
                let _ = self.reporter.report(record);
                Some(cost)
            }
            None => {
                if a.held
                    && let Err(e) = self.budgets.release(&org, &a.id).await
                {
                    // The hold expires and the reconciler settles it; logged, not lost.
                    tracing::warn!(error = %e, "budget hold not released; it will expire");
                }
                None
            }
        }
    }

    /// Runs a non-streamed request along its plan and records how it ended: passive outcomes,
    /// the usage report (or the released hold), and the response carrying the served model,
    /// provider and cost. If the caller is dropped midway (client disconnect), the disconnect
    /// guard settles instead.
    pub async fn run_complete(
        self: &Arc<Self>,
        a: &Arc<Admitted>,
        req: &ChatRequest,
    ) -> Result<(ChatResponse, Vec<AttemptTrace>), (Error, Vec<AttemptTrace>)> {
        let mut unfinished = Unfinished::new(self, a);
        let cancel = tokio_util::sync::CancellationToken::new();
        let result = crate::engine::complete(
            &self.client,
            &a.plan,
            req,
            &a.settings,
            &self.retry_budget,
            &cancel,
            a.validator
                .as_ref()
                .map(|validator| crate::engine::OutputCheck {
                    validator,
                    outcomes: self.outcomes.as_deref(),
                }),
        )
        .await;
        unfinished.disarm();
        match result {
            Ok(done) => {
                let usage = done.response.usage.unwrap_or_default();
                self.note_attempts(&done.trace, u64::from(usage.completion_tokens));
                let served = &a.plan[done.served].attempt;
                let cost = self
                    .finish(a, Some((&served.endpoint, usage)), &done.trace, "ok", None)
                    .await;
                let mut resp = done.response;
                resp.model = served.model.to_string();
                resp.provider = Some(served.provider.to_string());
                resp.usage = Some(Usage { cost, ..usage });
                Ok((resp, done.trace))
            }
            Err(failed) => {
                self.note_attempts(&failed.trace, 0);
                self.finish(a, None, &failed.trace, failed.error.class.as_str(), None)
                    .await;
                Err((failed.error, failed.trace))
            }
        }
    }

    /// Starts a streamed request: falls back along the plan until an attempt yields its first
    /// chunk. On failure (nothing was sent yet) the attempts are recorded and the hold released;
    /// on success the returned guard settles what was streamed if the client goes away.
    pub async fn start_stream(
        self: &Arc<Self>,
        a: &Arc<Admitted>,
        req: &ChatRequest,
    ) -> Result<StreamSession, (Error, Vec<AttemptTrace>)> {
        let mut unfinished = Unfinished::new(self, a);
        let cancel = tokio_util::sync::CancellationToken::new();
        match crate::engine::stream(
            &self.client,
            &a.plan,
            req,
            &a.settings,
            &self.retry_budget,
            &cancel,
        )
        .await
        {
            Ok(started) => {
                // The serving attempt is recorded when the stream ends, with how it ended.
                let failed = started.trace.len().saturating_sub(1);
                self.note_attempts(&started.trace[..failed], 0);
                unfinished.streamed = Some((started.served, 0));
                Ok(StreamSession {
                    router: self.clone(),
                    admitted: a.clone(),
                    endpoint: a.plan[started.served].attempt.endpoint.clone(),
                    served: started.served,
                    trace: started.trace,
                    first: Some(started.first),
                    rest: started.rest,
                    guard: unfinished,
                    ended: false,
                    first_chunk_at: Instant::now(),
                    assembly: a
                        .validator
                        .as_ref()
                        .map(|_| crate::validate::Assembly::default()),
                })
            }
            Err(failed) => {
                unfinished.disarm();
                self.note_attempts(&failed.trace, 0);
                self.finish(a, None, &failed.trace, failed.error.class.as_str(), None)
                    .await;
                Err((failed.error, failed.trace))
            }
        }
    }

    /// A non-streamed request with an idempotency claim: a repeat gets the stored response (no
    /// second upstream call or charge); a duplicate still running, or the key reused for another
    /// request, is refused; a failed request frees the key. `encode` turns a fresh response (with
    /// its trace) into the text stored and returned.
    pub async fn run_idempotent(
        self: &Arc<Self>,
        policy: &PolicyView,
        key: KeyRecord,
        req: &ChatRequest,
        options: AdmitOptions,
        claim: Claim<'_>,
        encode: impl Fn(&ChatResponse, &[AttemptTrace], &Admitted) -> String,
    ) -> Result<Idempotent, Error> {
        use switchyard_state::Begin;
        let Claim {
            key: idem,
            request_hash: hash,
        } = claim;
        let store = self
            .idempotency
            .clone()
            .ok_or_else(|| Error::invalid("idempotency keys are not enabled on this router"))?;
        if req.stream {
            return Err(Error::invalid(
                "idempotency keys are supported for non-streamed requests only",
            ));
        }
        if idem.is_empty() || idem.len() > 256 {
            return Err(Error::invalid(
                "an idempotency key must be 1 to 256 characters",
            ));
        }
        let org = key.org.to_string();
        // The claim outlives the request's deadline; a client that vanishes frees it by expiry.
        match store
            .begin(&org, idem, hash, Duration::from_secs(600))
            .await
        {
            Ok(Begin::New) => {}
            Ok(Begin::Done(stored)) => return Ok(Idempotent::Replay(stored)),
            Ok(Begin::InFlight) => {
                return Err(Error::invalid(
                    "a request with this idempotency key is still in progress",
                ));
            }
            Ok(Begin::Mismatch) => {
                return Err(Error::invalid(
                    "this idempotency key was already used for a different request",
                ));
            }
            Err(e) => {
                return Err(Error::new(
                    ErrorClass::Unavailable,
                    format!("idempotency keys cannot be checked right now: {e}"),
                ));
            }
        }
        let a = match self.admit(policy, key, req, options).await {
            Ok(a) => a,
            Err(e) => {
                let _ = store.abandon(&org, idem).await;
                return Err(e);
            }
        };
        match self.run_complete(&a, req).await {
            Ok((resp, trace)) => {
                let text = encode(&resp, &trace, &a);
                if let Err(e) = store.complete(&org, idem, &text, IDEMPOTENCY_TTL).await {
                    tracing::warn!(error = %e, "response not stored for idempotent replay");
                }
                Ok(Idempotent::Fresh(text))
            }
            Err((error, trace)) => {
                let _ = store.abandon(&org, idem).await;
                Err(error
                    .with_metadata("attempts", serde_json::to_value(&trace).unwrap_or_default()))
            }
        }
    }

    /// Records a request whose client went away: a stream is settled for what it delivered (the
    /// prompt and the completion tokens streamed so far, estimated, unless the upstream reported
    /// them); anything else has its hold released.
    pub async fn finish_cancelled(&self, a: &Admitted, streamed: Option<(usize, Usage)>) {
        metrics::counter!("switchyard_requests_cancelled_total").increment(1);
        match streamed {
            Some((served, usage)) => {
                let endpoint = a.plan[served].attempt.endpoint.clone();
                self.finish(a, Some((&endpoint, usage)), &[], "cancelled", None)
                    .await;
            }
            None => {
                self.finish(a, None, &[], "cancelled", None).await;
            }
        }
    }

    /// Records every attempt as a passive outcome, and penalizes endpoints that just failed,
    /// before the prober's shared record catches up. `tokens_out` belongs to the last attempt.
    pub fn note_attempts(&self, trace: &[AttemptTrace], tokens_out: u64) {
        if let Some(w) = &self.outcomes {
            for (i, t) in trace.iter().enumerate() {
                let tokens = if i + 1 == trace.len() { tokens_out } else { 0 };
                // Output that failed its schema was still served: availability is fine, and
                // validity is counted apart (an endpoint can be good for chat, bad for tools).
                let outcome = if t.outcome == crate::engine::INVALID_OUTPUT {
                    "ok"
                } else {
                    t.outcome
                };
                w.record(&t.endpoint, outcome, t.latency_ms, tokens);
            }
        }
        self.note_failures(trace);
    }

    fn note_failures(&self, trace: &[AttemptTrace]) {
        for (i, t) in trace.iter().enumerate() {
            if let Some(ms) = t.retry_after_ms {
                // Waited out within the request and then served by the same endpoint: nothing
                // left to honour.
                let served_later = trace[i + 1..]
                    .iter()
                    .any(|l| l.endpoint == t.endpoint && l.outcome == "ok");
                if served_later {
                    continue;
                }
                // The upstream said when to come back: exactly then. Being throttled says
                // nothing about its health, so it neither penalizes nor counts as an outlier.
                self.health
                    .cool_down(&t.endpoint, Duration::from_millis(ms));
                continue;
            }
            let failed = t.outcome != "ok"
                && t.outcome != "context_length_exceeded"
                && t.outcome != "content_policy"
                && t.outcome != crate::engine::INVALID_OUTPUT;
            self.health.observe(&t.endpoint, failed);
            if failed {
                self.health.penalize(&t.endpoint, Duration::from_secs(5));
            }
        }
    }
}

pub(crate) fn validate(req: &ChatRequest) -> Result<(), Error> {
    if req.messages.is_empty() {
        return Err(Error::invalid(
            "`messages` must contain at least one message",
        ));
    }
    if req.messages.len() > MAX_MESSAGES {
        return Err(Error::invalid(format!(
            "at most {MAX_MESSAGES} messages per request"
        )));
    }
    if req
        .max_output_tokens()
        .is_some_and(|n| n == 0 || n > MAX_OUTPUT_TOKENS)
    {
        return Err(Error::invalid(format!(
            "`max_tokens` must be between 1 and {MAX_OUTPUT_TOKENS}"
        )));
    }
    if req.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return Err(Error::invalid("`temperature` must be between 0 and 2"));
    }
    if req.top_p.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
        return Err(Error::invalid("`top_p` must be between 0 and 1"));
    }
    if req.n.is_some_and(|n| n != 1) {
        return Err(Error::invalid(
            "`n` must be 1: one choice per request is served",
        ));
    }
    Ok(())
}

/// Settles a request whose client went away, if it is dropped before it finished normally.
pub struct Unfinished {
    router: Arc<Router>,
    admitted: Option<Arc<Admitted>>,
    prompt_tokens: u32,
    /// For a committed stream: the serving attempt and the completion tokens streamed so far.
    pub streamed: Option<(usize, u32)>,
    /// The usage the upstream reported, if it did.
    reported: Option<Usage>,
}

impl Unfinished {
    pub fn new(router: &Arc<Router>, admitted: &Arc<Admitted>) -> Self {
        Unfinished {
            router: router.clone(),
            admitted: Some(Arc::clone(admitted)),
            prompt_tokens: admitted.prompt_tokens,
            streamed: None,
            reported: None,
        }
    }

    /// Notes a chunk on its way to the client: its usage, if it carries the upstream's, and
    /// its content tokens (estimated).
    pub fn observe(&mut self, chunk: &ChatChunk) {
        if let Some(u) = chunk.usage {
            self.reported = Some(u);
        }
        if let Some((_, tokens)) = self.streamed.as_mut() {
            let content: u32 = chunk
                .choices
                .iter()
                .map(|c| estimate_text(c.delta.content.as_deref().unwrap_or("")))
                .sum();
            *tokens = tokens.saturating_add(content);
        }
    }

    /// What to settle: the upstream's report when it sent one, otherwise the estimated prompt
    /// and the completion tokens streamed so far.
    pub fn usage(&self) -> Usage {
        match self.reported {
            Some(u) if u.prompt_tokens > 0 || u.completion_tokens > 0 => u,
            _ => Usage {
                prompt_tokens: self.prompt_tokens,
                completion_tokens: self.streamed.map(|(_, t)| t).unwrap_or(0),
                ..Usage::default()
            },
        }
    }

    /// The request finished normally: nothing to do on drop.
    pub fn disarm(&mut self) {
        self.admitted = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(a) = self.admitted.take() {
            let streamed = self.streamed.map(|(served, _)| (served, self.usage()));
            let router = self.router.clone();
            tokio::spawn(async move { router.finish_cancelled(&a, streamed).await });
        }
    }
}

/// How a committed stream goes on: content for the client, then one final event, sent after
/// the request was settled.
#[derive(Debug)]
pub enum StreamEvent {
    /// A chunk, with the served model and provider, and the cost on a usage chunk.
    Chunk(ChatChunk),
    /// The upstream finished: the usage settled, with its cost (what validation found is on the
    /// serving attempt's trace).
    Done(Usage),
    /// The upstream failed after content went out: no fallback any more, the usage so far is
    /// settled, and the client must be told.
    Failed(Error),
}

/// A stream past its first chunk. Dropping it before the final event settles what the client
/// got (a disconnect).
pub struct StreamSession {
    router: Arc<Router>,
    /// The request.
    pub admitted: Arc<Admitted>,
    endpoint: EndpointId,
    served: usize,
    /// Every attempt.
    pub trace: Vec<AttemptTrace>,
    first: Option<ChatChunk>,
    rest: switchyard_providers::ChunkStream,
    guard: Unfinished,
    ended: bool,
    first_chunk_at: Instant,
    assembly: Option<crate::validate::Assembly>,
}

impl StreamSession {
    /// Records the serving attempt as it ended: a passive outcome (with the tokens it streamed,
    /// over the whole stream's time) and, on a failure, the local penalty.
    fn note_served(&mut self, tokens_out: u32) {
        if let Some(last) = self.trace.last_mut() {
            last.latency_ms += self.first_chunk_at.elapsed().as_millis() as u64;
            last.elapsed += self.first_chunk_at.elapsed();
        }
        let served = self.trace.len().saturating_sub(1);
        self.router
            .note_attempts(&self.trace[served..], u64::from(tokens_out));
    }

    /// Ends the stream at a shutdown's drain deadline: billed for what it streamed, not held
    /// against the endpoint, and an explicit error for the client (never a silent end).
    async fn cut_for_shutdown(&mut self) -> StreamEvent {
        self.ended = true;
        self.guard.disarm();
        let usage = self.guard.usage();
        self.router
            .finish_cancelled(&self.admitted, Some((self.served, usage)))
            .await;
        StreamEvent::Failed(Error::new(
            ErrorClass::Unavailable,
            "the router is shutting down and this stream outlived its drain deadline; what was streamed is billed",
        ))
    }

    /// The next event; `None` after the final one.
    pub async fn next(&mut self) -> Option<StreamEvent> {
        if self.ended {
            return None;
        }
        let item = match self.first.take() {
            Some(first) => Some(Ok(first)),
            None => {
                tokio::select! {
                    item = self.rest.next() => item,
                    _ = self.router.abort.cancelled() => return Some(self.cut_for_shutdown().await),
                }
            }
        };
        let ttft = Some(
            self.first_chunk_at
                .saturating_duration_since(self.admitted.received),
        );
        match item {
            Some(Ok(mut chunk)) => {
                self.guard.observe(&chunk);
                if let Some(a) = self.assembly.as_mut() {
                    a.add(&chunk);
                }
                let attempt = &self.admitted.plan[self.served].attempt;
                chunk.model = attempt.model.to_string();
                chunk.provider = Some(attempt.provider.to_string());
                if let Some(u) = chunk.usage.as_mut() {
                    u.cost = self.router.prices.cost(self.endpoint.as_str(), u);
                }
                Some(StreamEvent::Chunk(chunk))
            }
            Some(Err(e)) => {
                self.ended = true;
                self.guard.disarm();
                let error = match e {
                    switchyard_providers::CallError::Upstream(u) => u.to_error(),
                    switchyard_providers::CallError::Cancelled => {
                        Error::new(ErrorClass::Timeout, "the upstream call was cancelled")
                    }
                };
                let usage = self.guard.usage();
                if let Some(last) = self.trace.last_mut() {
                    last.outcome = error.class.as_str();
                }
                self.note_served(usage.completion_tokens);
                self.router
                    .finish(
                        &self.admitted,
                        Some((&self.endpoint, usage)),
                        &self.trace,
                        error.class.as_str(),
                        ttft,
                    )
                    .await;
                Some(StreamEvent::Failed(error))
            }
            None => {
                self.ended = true;
                self.guard.disarm();
                let usage = self.guard.usage();
                // Validated at the end, before the final event; too late to go elsewhere.
                if let (Some(v), Some(a)) = (&self.admitted.validator, &self.assembly) {
                    let validity = v.check_stream(a);
                    crate::validate::Validator::count(
                        &self.endpoint,
                        &validity,
                        self.router.outcomes.as_deref(),
                    );
                    if let Some(last) = self.trace.last_mut() {
                        if !validity.valid {
                            last.outcome = crate::engine::INVALID_OUTPUT;
                        }
                        last.validity = Some(validity);
                    }
                }
                self.note_served(usage.completion_tokens);
                let cost = self
                    .router
                    .finish(
                        &self.admitted,
                        Some((&self.endpoint, usage)),
                        &self.trace,
                        "ok",
                        ttft,
                    )
                    .await;
                Some(StreamEvent::Done(Usage { cost, ..usage }))
            }
        }
    }
}
