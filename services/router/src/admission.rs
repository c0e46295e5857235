//! Admission, the first stage after the edge: the request is checked, its workflow resolved and
//! its route planned (attempts with their targets, every candidate left out with its reason, and
//! the most it can cost). It holds the catalog's static parts and the health view, nothing else:
//! no budgets, no upstream client. Explain stops after [`Admission::route`]; a request goes on to
//! the budget gate with an [`Admitted`].

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use switchyard_core::{ChatRequest, EndpointId, Error, ErrorClass, ModelId, Money};
use switchyard_policy_model::config::{OnMalformedEvent, Priority};
use switchyard_policy_model::snapshot::{CompiledWorkflow, KeyRecord};
use switchyard_providers::{MalformedEvents, Timeouts};
use switchyard_routing::{Exclusion, KeySource, PlanInput, plan};
use tokio::time::Instant;

use crate::capacity::CapacityView;
use crate::catalog_view::{CatalogState, CatalogView};
use crate::edge::{AdmitOptions, Caller, InFlight};
use crate::engine::{EngineSettings, PlannedAttempt};
use crate::health_view::HealthView;
use crate::policy_view::PolicyView;
use crate::refusal::deadline_of;
pub use crate::refusal::{QUEUE_POLL, Refused, RouteError, Wait};

/// Longest a request may ask to generate.
pub const MAX_OUTPUT_TOKENS: u32 = 1_000_000;
/// Most messages in one request.
pub const MAX_MESSAGES: usize = 10_000;

/// A request that passed validation and planning, on its way through the later stages.
#[derive(Debug)]
pub struct Admitted {
    /// Request id (also the hold id).
    pub id: String,
    /// The caller's key.
    pub key: Arc<KeyRecord>,
    /// The workflow.
    pub workflow: Arc<CompiledWorkflow>,
    /// Attempts in order.
    pub plan: Vec<PlannedAttempt>,
    /// Candidates left out of the plan, with their reasons.
    pub excluded: Vec<Exclusion>,
    /// Engine settings from the workflow.
    pub settings: EngineSettings,
    /// What the budget hold reserves: the most the request can cost on any planned endpoint.
    pub max_cost: Money,
    /// Whether the budget store confirmed the hold (otherwise the org failed open: the usage
    /// report still names the hold, and billing charges it if no hold was ever taken). Set by
    /// the budget gate.
    pub held: bool,
    /// The budget lease it was admitted under, if any (then `held` is true and no hold of its
    /// own exists). Set by the budget gate.
    pub lease: Option<crate::budget_lease::LeaseTicket>,
    /// The rate slices it was admitted against, if any (then it counts against its client
    /// limits already; what it uses is given back when it ends). Set by the budget gate.
    pub rate: Option<crate::rate_lease::RateTicket>,
    /// Policy version, for the trace.
    pub policy_version: u64,
    /// Health version, for the trace.
    pub health_version: u64,
    /// The catalog version it was planned and held with; it is settled at these prices too,
    /// whatever version is in force by then.
    pub catalog: Arc<CatalogState>,
    /// Estimated prompt tokens (what a cancelled stream is billed for at least).
    pub prompt_tokens: u32,
    /// What the request reserves against tokens-per-minute limits: its prompt bound and its
    /// maximum output on the planned endpoints.
    pub token_reservation: u64,
    /// The output cap asked for (`max_completion_tokens` or `max_tokens`), if any.
    pub max_output_tokens: Option<u32>,
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
    /// Keeps the request in `switchyard_requests_in_flight` until its last byte and report.
    pub(crate) in_flight: Option<InFlight>,
    /// The API it came in on (set by the handler).
    pub api: crate::edge::Api,
}

/// A request's route, planned but not run.
pub struct Routed {
    /// The workflow.
    pub workflow: Arc<CompiledWorkflow>,
    /// Attempts in order, with where to send them.
    pub attempts: Vec<PlannedAttempt>,
    /// Every candidate left out, with its reason.
    pub excluded: Vec<Exclusion>,
    /// The models considered, in order.
    pub models: Vec<ModelId>,
    /// Every candidate was ejected and the panic rule admitted them anyway.
    pub panic: bool,
    /// The health version planned under.
    pub health_version: u64,
    /// The catalog version planned with.
    pub catalog: Arc<CatalogState>,
    /// What the budget hold reserves: the most the request can cost on any planned endpoint.
    pub max_cost: Money,
}

/// The admission stage.
pub struct Admission {
    catalog: Arc<CatalogView>,
    health: Arc<HealthView>,
    capacity: Arc<CapacityView>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("catalog", &self.catalog)
            .finish_non_exhaustive()
    }
}

/// A fresh request id: the time it was received, then 48 random bits (records are found by
/// their time, see [`switchyard_state::request_log`]).
pub fn new_id() -> String {
    switchyard_state::request_log::request_id(
        switchyard_core::clock::now_ms(),
        rand::random::<u64>(),
    )
}

impl Admission {
    /// Plans with the catalog version in force in `catalog`, the health in `health` and the
    /// provider capacity in `capacity`.
    pub fn new(
        catalog: Arc<CatalogView>,
        health: Arc<HealthView>,
        capacity: Arc<CapacityView>,
    ) -> Self {
        Admission {
            catalog,
            health,
            capacity,
        }
    }

    /// The provider capacity planned with.
    pub fn capacity(&self) -> &Arc<CapacityView> {
        &self.capacity
    }

    /// The catalog version in force.
    pub fn catalog(&self) -> Arc<CatalogState> {
        self.catalog.current()
    }

    /// Checks, plans and prices `req` for `caller`, and takes the capacity of its first attempt;
    /// the budget gate comes next. A request whose routes are all out of capacity for now (or,
    /// for a `queue` workflow, whose preferred route is down) is refused with what it needs to
    /// wait; so is one whose first endpoint `contested` says waiting requests of its priority
    /// or a higher one are queued for (so it queues behind them).
    pub fn admit(
        &self,
        caller: &Caller,
        req: &ChatRequest,
        options: AdmitOptions,
        contested: &dyn Fn(&EndpointId, Priority) -> bool,
    ) -> Result<Admitted, Refused> {
        let received = Instant::now();
        validate(req)?;
        let validator = crate::validate::Validator::for_request(req)?;
        let seed = options.seed.unwrap_or_else(rand::random);
        let waiting = |retry_after: Duration, blocked: Vec<EndpointId>| {
            let org = caller.key.org.as_str();
            let compiled = &caller.policy.compiled;
            let workflow = compiled.workflow(org, req.workflow.as_deref())?;
            Some(Box::new(Wait {
                retry_after,
                deadline: deadline_of(workflow, &options, received),
                priority: workflow.priority,
                weight: compiled.org(org).map_or(1, |o| o.weight),
                blocked,
            }))
        };
        let routed = match self.route(&caller.policy, &caller.key, req, seed, true) {
            Ok(r) => r,
            Err(RouteError { error, wait }) => {
                return Err(Refused {
                    wait: wait.and_then(|(after, blocked)| waiting(after, blocked)),
                    error,
                });
            }
        };
        if let Some(first) = routed.attempts.first()
            && contested(&first.attempt.endpoint, routed.workflow.priority)
        {
            let endpoint = first.attempt.endpoint.clone();
            return Err(Refused {
                error: Error::new(
                    ErrorClass::RateLimited,
                    format!("requests are waiting for the capacity of `{endpoint}`"),
                ),
                wait: waiting(Duration::ZERO, vec![endpoint]),
            });
        }
        let Routed {
            workflow,
            attempts,
            excluded,
            health_version,
            catalog,
            max_cost,
            ..
        } = routed;
        let token_reservation = token_reservation(req, &catalog, &attempts);
        if let Some(first) = attempts.first() {
            self.capacity.reserve(&first.target, token_reservation);
        }
        let id = new_id();
        let span = tracing::Span::current();
        span.record("request_id", id.as_str());
        span.record("workflow", workflow.id.as_str());
        let t = workflow.timeouts;
        let deadline = deadline_of(&workflow, &options, received);
        let settings = EngineSettings {
            timeouts: Timeouts {
                connect: Duration::from_millis(t.connect_ms),
                first_byte: Duration::from_millis(t.first_byte_ms),
                first_token: Duration::from_millis(t.first_token_ms()),
                idle: Duration::from_millis(t.idle_ms),
                total: Duration::from_millis(t.total_ms),
            },
            max_retries: workflow.retry.max_retries,
            timeout_retries: workflow.retry.timeout_retries,
            malformed: match workflow.on_malformed_event {
                OnMalformedEvent::Skip => MalformedEvents::Skip,
                OnMalformedEvent::Fail => MalformedEvents::Fail,
            },
            base_backoff: Duration::from_millis(workflow.retry.base_backoff_ms),
            max_backoff: Duration::from_millis(workflow.retry.max_backoff_ms),
            deadline,
            fallback_on_refusal: workflow.fallback_on_refusal,
            on_invalid_output: workflow.on_invalid_output,
            capacity: Some((self.capacity.clone(), token_reservation)),
            hedge: self.hedge_delay(&workflow, &attempts, req, &options),
        };
        Ok(Admitted {
            id,
            key: caller.key.clone(),
            workflow,
            plan: attempts,
            excluded,
            settings,
            max_cost,
            held: false,
            lease: None,
            rate: None,
            policy_version: caller.policy.version,
            health_version,
            catalog,
            prompt_tokens: req.estimated_prompt_tokens(),
            token_reservation,
            max_output_tokens: req.max_output_tokens(),
            seed,
            received,
            requested_model: req
                .models
                .first()
                .cloned()
                .unwrap_or_else(|| req.model.clone()),
            stream: req.stream,
            validator,
            in_flight: None,
            api: crate::edge::Api::default(),
        })
    }

    /// When to hedge the first attempt, for a workflow with `hedge` and a request it may apply
    /// to: more than one planned attempt, and no tools unless it carries an idempotency key.
    fn hedge_delay(
        &self,
        workflow: &CompiledWorkflow,
        attempts: &[PlannedAttempt],
        req: &ChatRequest,
        options: &AdmitOptions,
    ) -> Option<Duration> {
        let h = workflow.hedge?;
        let first = attempts.first().filter(|_| attempts.len() > 1)?;
        if !req.tools.is_empty() && !options.idempotent {
            return None;
        }
        h.after_percentile
            .and_then(|p| self.health.ttft().percentile(&first.attempt.endpoint, p))
            .or(h.after_ms.map(Duration::from_millis))
    }

    /// The route of a request before anything runs: its workflow, the planned attempts with
    /// their targets, every candidate left out and the maximum cost. Admission follows it and
    /// explain shows it, so a dry run with a seed is the plan a request with that seed follows.
    /// `trial`: a request that will run may take a locally half-open endpoint's trial (explain
    /// never does).
    pub fn route(
        &self,
        policy: &PolicyView,
        key: &KeyRecord,
        req: &ChatRequest,
        seed: u64,
        trial: bool,
    ) -> Result<Routed, RouteError> {
        let org = key.org.to_string();
        let workflow = policy
            .workflow(&org, req.workflow.as_deref())
            .ok_or_else(|| {
                Error::new(
                    ErrorClass::ForbiddenByPolicy,
                    format!(
                        "workflow `{}` does not exist for this org",
                        req.workflow.as_deref().unwrap_or("(default)")
                    ),
                )
            })?;
        let byok = policy.byok_providers(&org);
        let (health, trial) = if trial {
            self.health.snapshot_with_trial()
        } else {
            (self.health.snapshot(), None)
        };
        let catalog = self.catalog.current();
        let planned = plan(&PlanInput {
            catalog: &catalog.routing,
            policy: &workflow.routing,
            request: req,
            health: &health,
            byok,
            capacity: &self.capacity.for_org(&org),
            seed,
        });
        // The trial is this request's only if it goes there first.
        if let Some(t) = &trial
            && planned
                .as_ref()
                .ok()
                .and_then(|p| p.attempts.first())
                .is_none_or(|a| &a.endpoint != t)
        {
            self.health.release_trial(t);
        }
        let planned = planned.map_err(|e| RouteError::of(&e, workflow.routing.degradation))?;
        let mut attempts = Vec::new();
        for a in planned.attempts {
            let Some((target, context)) = catalog.targets.get(&a.endpoint) else {
                continue;
            };
            let mut target = target.clone();
            if a.key == KeySource::Byok {
                let target = Arc::make_mut(&mut target);
                target.key = policy
                    .byok
                    .get(&(org.clone(), a.provider.to_string()))
                    .map(|k| SecretString::from(k.expose_secret().to_string()));
                // The org's own key: its own capacity, not the shared key's.
                target.owner = Some(org.as_str().into());
                target.capacity = policy
                    .byok_capacity
                    .get(&(org.clone(), a.provider.to_string()))
                    .copied();
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
        // An upper bound of what any of them can cost: the prompt at the bound of what a
        // provider's tokenizer counts, the output at the cap asked for or the endpoint's.
        let max_cost = catalog.prices.max_cost(
            &endpoints,
            req.prompt_token_bound(),
            req.max_output_tokens(),
        );
        Ok(Routed {
            workflow,
            attempts,
            excluded: planned.excluded,
            models: planned.models,
            panic: planned.panic,
            health_version: health.version,
            catalog,
            max_cost,
        })
    }
}

/// What a request reserves against tokens-per-minute limits: its prompt at the bound any
/// tokenizer stays under, plus the output it asked for or, without a cap, the largest output
/// any planned endpoint allows.
fn token_reservation(req: &ChatRequest, catalog: &CatalogState, plan: &[PlannedAttempt]) -> u64 {
    let output = match req.max_output_tokens() {
        Some(n) => n,
        None => plan
            .iter()
            .filter_map(|p| {
                catalog
                    .routing
                    .candidates(p.attempt.model.as_str())?
                    .iter()
                    .find(|c| c.endpoint == p.attempt.endpoint)
                    .map(|c| c.max_output)
            })
            .max()
            .unwrap_or(0),
    };
    u64::from(req.prompt_token_bound()) + u64::from(output)
}

/// The request checks that need no policy: sizes and parameter ranges.
pub fn validate(req: &ChatRequest) -> Result<(), Error> {
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
