//! The transport-neutral handler: one request through the stages, in one direction. The edge
//! has authenticated the caller and read what the request carries; here it is admitted
//! ([`Admission`]), held ([`BudgetGate`]), run by the attempt engine, and settled
//! ([`Settlement`]), or, for a stream, handed on as a [`StreamSession`]. Idempotency keys
//! ([`crate::idempotency`]) wrap the non-streamed path. HTTP and gRPC decode into these calls and encode what they return.

use std::sync::Arc;
use std::time::Duration;

use switchyard_core::{ChatRequest, EmbeddingRequest, Error, Money, Usage};
use switchyard_providers::ProviderClient;
use switchyard_state::{IdempotencyStore, ResponseStore};
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, Admitted};
use crate::budget_gate::BudgetGate;
use crate::catalog_view::CatalogState;
use crate::continuation::Resume;
use crate::edge::{AdmitOptions, Caller, InFlight, Incoming};
use crate::explain::Explanation;
use crate::health_view::HealthView;
use crate::idempotency::{self, Begun};
use crate::policy_view::PolicyWatcher;
use crate::retry_budget::RetryBudget;
use crate::settlement::Settlement;
use crate::stream::{StreamSession, Unfinished};

pub use crate::parts::RouterParts;
pub use crate::reply::{Embedded, Failure, Reply, Served};

/// A router's stages, composed.
pub struct Router {
    pub(crate) policy: Arc<PolicyWatcher>,
    pub(crate) health: Arc<HealthView>,
    pub(crate) admission: Admission,
    pub(crate) gate: Arc<BudgetGate>,
    pub(crate) client: ProviderClient,
    pub(crate) retry_budget: RetryBudget,
    pub(crate) settlement: Arc<Settlement>,
    pub(crate) idempotency: Option<Arc<dyn IdempotencyStore>>,
    pub(crate) responses: Option<(Arc<dyn ResponseStore>, Duration)>,
    pub(crate) abort: CancellationToken,
    pub(crate) room: Arc<crate::queue::WaitingRoom>,
    pub(crate) records: Option<Arc<crate::records::Recorder>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("admission", &self.admission)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Authenticates what the edge read.
    pub fn authenticate(&self, incoming: &Incoming) -> Result<Caller, Error> {
        let result = crate::edge::authenticate(&self.policy, incoming.bearer.as_deref());
        if let Err(e) = &result {
            crate::observe::rejected(incoming.api, e.class.as_str());
        }
        result
    }

    /// Where Responses API responses are stored, and for how long.
    pub fn response_store(&self) -> Result<(Arc<dyn ResponseStore>, Duration), Error> {
        self.responses.clone().ok_or_else(|| {
            Error::invalid(
                "stored responses are not enabled on this router: send `store: false` and no `previous_response_id`",
            )
        })
    }

    /// Where request records are read from, if requests leave them.
    pub fn records(&self) -> Option<&Arc<dyn switchyard_state::RequestLog>> {
        self.records.as_ref().map(|r| r.log())
    }

    /// Health as this router sees it.
    pub fn health(&self) -> &Arc<HealthView> {
        &self.health
    }

    /// The catalog version in force: the planner's view, prices and targets.
    pub fn catalog(&self) -> Arc<CatalogState> {
        self.admission.catalog()
    }

    /// The route `req` would take, without running it or holding budget.
    pub fn explain(
        &self,
        caller: &Caller,
        incoming: &Incoming,
        req: &ChatRequest,
    ) -> Result<Explanation, Error> {
        Explanation::new(&self.admission, caller, req, incoming.options()?)
    }

    /// Admission (waiting for a route when there is none for now), then the budget gate.
    /// `deadline`: an earlier admission's, when the request is admitted again.
    async fn admit(
        &self,
        caller: &Caller,
        incoming: &Incoming,
        req: &ChatRequest,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Arc<Admitted>, Error> {
        let result: Result<Arc<Admitted>, Error> = async {
            let options = AdmitOptions {
                deadline,
                ..incoming.options()?
            };
            let mut a =
                crate::queue::admit(&self.admission, &self.room, caller, req, options).await?;
            self.gate.reserve(&caller.policy, &mut a).await?;
            a.in_flight = Some(InFlight::new());
            a.api = incoming.api;
            Ok(Arc::new(a))
        }
        .await;
        if let Err(e) = &result {
            crate::observe::rejected(incoming.api, e.class.as_str());
            crate::observe::refused(
                incoming.api,
                e.class.as_str(),
                e.http_status().as_u16(),
                Some(&caller.key),
            );
        }
        result
    }

    /// A non-streamed request. With an idempotency key, `encode` turns the fresh reply into the
    /// text stored for replays (the API's own encoding) and that text is returned.
    pub async fn complete(
        self: &Arc<Self>,
        caller: Caller,
        incoming: &Incoming,
        req: ChatRequest,
        encode: impl Fn(&Served) -> String,
    ) -> Result<Reply, Failure> {
        let run = || async {
            let mut deadline = None;
            loop {
                let a = self.admit(&caller, incoming, &req, deadline).await?;
                match self.run(&a, &req).await {
                    Err(f)
                        if crate::refusal::queue_again(&a, &f.error, self.admission.capacity()) =>
                    {
                        tokio::time::sleep(crate::admission::QUEUE_POLL).await;
                        deadline = Some(a.settings.deadline);
                    }
                    served => return served,
                }
            }
        };
        match &incoming.idempotency_key {
            Some(idem) => {
                self.idempotent(&caller, incoming, &req, idem, run, encode)
                    .await
            }
            None => run().await.map(Reply::Served),
        }
    }

    /// An embeddings request: planned and held as its planning request
    /// ([`EmbeddingRequest::to_planning`]), run along the plan, settled by its prompt tokens.
    /// Idempotency keys work as for [`Router::complete`].
    pub async fn embed(
        self: &Arc<Self>,
        caller: Caller,
        incoming: &Incoming,
        req: EmbeddingRequest,
        encode: impl Fn(&Embedded) -> String,
    ) -> Result<Reply<Embedded>, Failure> {
        if req.input.is_empty() {
            return Err(Error::invalid("input: must not be empty").into());
        }
        let planning = req.to_planning();
        let run = || async {
            let a = self.admit(&caller, incoming, &planning, None).await?;
            let mut unfinished = Unfinished::new(&self.settlement, &a);
            let cancel = self.abort.child_token();
            let result = crate::engine::embed(
                &self.client,
                &a.plan,
                &req,
                &a.settings,
                &self.retry_budget,
                &cancel,
            )
            .await;
            unfinished.disarm();
            let (done, cost) = self.settle(&a, result, 0, |r| r.usage).await?;
            let served = &a.plan[done.served].attempt;
            let mut response = done.response;
            response.model = served.model.to_string();
            response.provider = Some(served.provider.to_string());
            response.usage.cost = cost;
            Ok(Embedded {
                response,
                trace: done.trace,
                admitted: a,
            })
        };
        match &incoming.idempotency_key {
            Some(idem) => {
                self.idempotent(&caller, incoming, &req, idem, run, encode)
                    .await
            }
            None => run().await.map(Reply::Served),
        }
    }

    /// Settles a finished run: passive outcomes, the usage report (or the hold's release) and
    /// the log line; the served attempt and its cost, or the failure with its trace.
    async fn settle<R>(
        &self,
        a: &Arc<Admitted>,
        result: Result<crate::attempt::Completed<R>, crate::attempt::Failed>,
        tokens_out: u64,
        usage_of: impl Fn(&R) -> Usage,
    ) -> Result<(crate::attempt::Completed<R>, Option<Money>), Failure> {
        match result {
            Ok(done) => {
                let usage = usage_of(&done.response);
                self.settlement.note_attempts(&done.trace, tokens_out);
                let served = &a.plan[done.served].attempt;
                let cost = self
                    .settlement
                    .finish(a, Some((&served.endpoint, usage)), &done.trace, "ok", None)
                    .await;
                Ok((done, cost))
            }
            Err(failed) => {
                self.settlement.note_attempts(&failed.trace, 0);
                self.settlement
                    .finish(a, None, &failed.trace, failed.error.class.as_str(), None)
                    .await;
                Err(Failure {
                    error: failed.error,
                    routing: Some((a.clone(), failed.trace)),
                })
            }
        }
    }

    /// Runs an admitted request along its plan and settles it. If the caller is dropped midway
    /// (client disconnect), the guard settles instead.
    async fn run(
        self: &Arc<Self>,
        a: &Arc<Admitted>,
        req: &ChatRequest,
    ) -> Result<Served, Failure> {
        let mut unfinished = Unfinished::new(&self.settlement, a);
        // The request's own token, cancelled with the router's at the drain deadline (a child, so
        // concurrent requests do not share one waiter list).
        let cancel = self.abort.child_token();
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
                    outcomes: self.settlement.outcomes(),
                }),
        )
        .await;
        unfinished.disarm();
        let tokens_out = match &result {
            Ok(done) => u64::from(done.response.usage.unwrap_or_default().completion_tokens),
            Err(_) => 0,
        };
        let (done, cost) = self
            .settle(a, result, tokens_out, |r| r.usage.unwrap_or_default())
            .await?;
        let served = &a.plan[done.served].attempt;
        let mut response = done.response;
        response.model = served.model.to_string();
        response.provider = Some(served.provider.to_string());
        response.usage = Some(Usage {
            cost,
            ..response.usage.unwrap_or_default()
        });
        Ok(Served {
            response,
            trace: done.trace,
            admitted: a.clone(),
        })
    }

    /// A streamed request: falls back along the plan until an attempt yields its first chunk.
    /// On failure nothing was sent yet: the attempts are recorded and the hold released.
    pub async fn stream(
        self: &Arc<Self>,
        caller: Caller,
        incoming: &Incoming,
        req: ChatRequest,
    ) -> Result<StreamSession, Failure> {
        if incoming.idempotency_key.is_some() {
            self.idempotency_store()?;
            return Err(Error::invalid(
                "idempotency keys are supported for non-streamed requests only",
            )
            .into());
        }
        let mut deadline = None;
        loop {
            let a = self.admit(&caller, incoming, &req, deadline).await?;
            match self.start_stream(&a, &req).await {
                Err(f) if crate::refusal::queue_again(&a, &f.error, self.admission.capacity()) => {
                    tokio::time::sleep(crate::admission::QUEUE_POLL).await;
                    deadline = Some(a.settings.deadline);
                }
                started => return started,
            }
        }
    }

    /// Runs an admitted stream until its first chunk (or its failure, settled).
    async fn start_stream(
        self: &Arc<Self>,
        a: &Arc<Admitted>,
        req: &ChatRequest,
    ) -> Result<StreamSession, Failure> {
        let a = a.clone();
        let mut unfinished = Unfinished::new(&self.settlement, &a);
        let cancel = self.abort.child_token();
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
            Ok(started) => Ok(StreamSession::new(
                &self.settlement,
                &cancel,
                &a,
                (started, Resume::new(&self.client, req, &a)),
                unfinished,
            )),
            Err(failed) => {
                unfinished.disarm();
                self.settlement.note_attempts(&failed.trace, 0);
                self.settlement
                    .finish(&a, None, &failed.trace, failed.error.class.as_str(), None)
                    .await;
                Err(Failure {
                    error: failed.error,
                    routing: Some((a, failed.trace)),
                })
            }
        }
    }

    fn idempotency_store(&self) -> Result<Arc<dyn IdempotencyStore>, Error> {
        self.idempotency
            .clone()
            .ok_or_else(|| Error::invalid("idempotency keys are not enabled on this router"))
    }

    /// A non-streamed request with an idempotency key (see [`crate::idempotency`]): `run`
    /// admits and runs it once the key is claimed for `content`.
    async fn idempotent<T, Fut>(
        &self,
        caller: &Caller,
        incoming: &Incoming,
        content: &(impl serde::Serialize + ?Sized),
        idem: &str,
        run: impl FnOnce() -> Fut,
        encode: impl Fn(&T) -> String,
    ) -> Result<Reply<T>, Failure>
    where
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let store = self.idempotency_store()?;
        incoming.options()?;
        let org = caller.key.org.to_string();
        let claim = match idempotency::begin(store, &org, incoming.api, idem, content).await? {
            Begun::Replay(text) => {
                return Ok(Reply::Stored {
                    text,
                    replayed: true,
                });
            }
            Begun::Claimed(claim) => claim,
        };
        let result = run().await;
        match result {
            Ok(served) => {
                let text = encode(&served);
                claim.complete(&text).await;
                Ok(Reply::Stored {
                    text,
                    replayed: false,
                })
            }
            Err(failure) => {
                claim.abandon().await;
                Err(failure)
            }
        }
    }
}
