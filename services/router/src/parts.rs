//! How a router is assembled: its required parts, the optional ones with their defaults, and
//! the stages built from them.

use std::sync::Arc;
use std::time::Duration;

use switchyard_config::Catalog;
use switchyard_policy_model::catalog::PublishedCatalog;
use switchyard_providers::ProviderClient;
use switchyard_state::{BudgetStore, IdempotencyStore, ResponseStore};
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::budget_gate::BudgetGate;
use crate::capacity::CapacityView;
use crate::catalog_view::CatalogView;
use crate::handler::Router;
use crate::health_view::HealthView;
use crate::outcomes::OutcomeWriter;
use crate::policy_view::PolicyWatcher;
use crate::reporter::Reporter;
use crate::retry_budget::RetryBudget;
use crate::settlement::Settlement;

/// What a router is built from; the optional parts have defaults.
pub struct RouterParts {
    catalog: Catalog,
    policy: Arc<PolicyWatcher>,
    health: Arc<HealthView>,
    budgets: Arc<dyn BudgetStore>,
    reporter: Reporter,
    client: ProviderClient,
    /// Passive outcomes for the prober.
    pub outcomes: Option<Arc<OutcomeWriter>>,
    /// Idempotency keys; without a store, `Idempotency-Key` is refused.
    pub idempotency: Option<Arc<dyn IdempotencyStore>>,
    /// Stored Responses API responses and how long they are kept; without a store, `store:
    /// true` and `previous_response_id` are refused.
    pub responses: Option<(Arc<dyn ResponseStore>, Duration)>,
    /// Unsettled holds expire this long after their request's deadline.
    pub hold_grace: Duration,
    /// A budget hold not answered within this counts as failed (the org's fail mode applies).
    pub hold_timeout: Duration,
    /// Fires at the drain deadline of a shutdown: requests still waiting on an upstream and
    /// streams still open end with an error.
    pub abort: CancellationToken,
    /// Requests that may wait for a route at once (see [`crate::queue`]).
    pub queue_capacity: usize,
    /// Budget leases (see [`crate::budget_lease`]); without them every request is held on its
    /// own.
    pub leases: Option<Arc<crate::budget_lease::LeaseBook>>,
    /// Where each request's record goes and is read from (`GET /v1/generations/{id}`);
    /// without it, requests leave no record.
    pub records: Option<Arc<crate::records::Recorder>>,
}

impl RouterParts {
    /// Builds the stages. Shared provider keys are resolved now.
    pub fn build(self) -> Router {
        let catalog = CatalogView::new(&self.catalog, PublishedCatalog::version_of(&self.catalog));
        catalog.follow(&self.policy, self.abort.clone());
        let mut gate = BudgetGate::new(self.budgets, self.hold_grace, self.hold_timeout);
        if let Some(book) = self.leases {
            gate = gate.with_leases(book);
        }
        let gate = Arc::new(gate);
        let capacity = CapacityView::spawn(self.health.store().clone());
        let settlement = Arc::new(Settlement::new(
            self.reporter,
            self.outcomes,
            self.health.clone(),
            gate.clone(),
            self.records.clone(),
        ));
        Router {
            policy: self.policy,
            health: self.health.clone(),
            admission: Admission::new(catalog, self.health, capacity.clone()),
            gate,
            client: self.client.with_observer(capacity),
            retry_budget: RetryBudget::default(),
            settlement,
            idempotency: self.idempotency,
            responses: self.responses,
            abort: self.abort,
            room: crate::queue::WaitingRoom::new(self.queue_capacity),
            records: self.records,
        }
    }
}

impl Router {
    /// The parts of a router for `catalog`; set the optional ones, then [`RouterParts::build`].
    pub fn from_catalog(
        catalog: &Catalog,
        policy: Arc<PolicyWatcher>,
        health: Arc<HealthView>,
        budgets: Arc<dyn BudgetStore>,
        reporter: Reporter,
        client: ProviderClient,
    ) -> RouterParts {
        RouterParts {
            catalog: catalog.clone(),
            policy,
            health,
            budgets,
            reporter,
            client,
            outcomes: None,
            idempotency: None,
            responses: None,
            hold_grace: Duration::from_secs(300),
            hold_timeout: crate::budget_gate::HOLD_TIMEOUT,
            abort: CancellationToken::new(),
            queue_capacity: crate::queue::DEFAULT_CAPACITY,
            leases: None,
            records: None,
        }
    }
}
