//! The router's catalog: the one the policy service publishes in its snapshot, taken within the
//! snapshot's announcement, or the local file until a published one arrives (a policy service
//! that does not publish one, or none reachable at start). Everything built from a catalog —
//! the planner's index, the price book, the call targets with their shared keys — is built once
//! per version and swapped whole, so a request plans, holds and settles against one version.

use std::sync::Arc;

use switchyard_config::Catalog;
use switchyard_core::{EndpointId, FastMap};
use switchyard_policy_model::catalog::PublishedCatalog;
use switchyard_pricing::PriceBook;
use switchyard_providers::{Target, resolve_key};
use switchyard_routing::RoutingCatalog;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::policy_view::PolicyWatcher;

/// One catalog version, ready to route with.
pub struct CatalogState {
    /// Its version (the same text is the same version on every process).
    pub version: String,
    /// Published by the policy service (otherwise the local bootstrap file).
    pub published: bool,
    /// The planner's view.
    pub routing: RoutingCatalog,
    /// Prices.
    pub prices: Arc<PriceBook>,
    /// Call targets with the shared keys, and context windows, by endpoint.
    pub targets: FastMap<EndpointId, (Arc<Target>, u32)>,
}

impl std::fmt::Debug for CatalogState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogState")
            .field("version", &self.version)
            .field("published", &self.published)
            .field("endpoints", &self.targets.len())
            .finish()
    }
}

impl CatalogState {
    /// Builds everything routing needs from `catalog`; shared provider keys are resolved now.
    pub fn build(catalog: &Catalog, version: String, published: bool) -> Self {
        let mut targets = FastMap::default();
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
                targets.insert(e.id(), (Arc::new(t), context));
            }
        }
        CatalogState {
            version,
            published,
            routing: RoutingCatalog::new(catalog),
            prices: Arc::new(PriceBook::from_catalog(catalog)),
            targets,
        }
    }
}

/// The catalog in force, swapped when a new version arrives.
pub struct CatalogView {
    current: watch::Sender<Arc<CatalogState>>,
}

impl std::fmt::Debug for CatalogView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogView")
            .field("current", &self.current.borrow())
            .finish()
    }
}

impl CatalogView {
    /// Starts with `catalog` (the local file, or a test's), known as `version`.
    pub fn new(catalog: &Catalog, version: String) -> Arc<Self> {
        Arc::new(CatalogView {
            current: watch::channel(Arc::new(CatalogState::build(catalog, version, false))).0,
        })
    }

    /// The version in force.
    pub fn current(&self) -> Arc<CatalogState> {
        self.current.borrow().clone()
    }

    /// Whether `published` is a version this router does not have, or the one it bootstrapped
    /// from the local file (then only its origin changes).
    fn is_new(&self, published: &PublishedCatalog) -> bool {
        let current = self.current.borrow();
        current.version != published.version || !current.published
    }

    /// Takes `published` if it is new; a catalog that does not parse (it was validated where
    /// it was published, so only a newer router could tell) keeps the current.
    pub fn apply(&self, published: &PublishedCatalog) -> bool {
        if !self.is_new(published) {
            return false;
        }
        match published.parse() {
            Ok(catalog) => {
                let next = CatalogState::build(&catalog, published.version.clone(), true);
                tracing::info!(version = %published.version, from = %published.source, endpoints = next.targets.len(), "catalog version in force");
                metrics::counter!("switchyard_catalog_changes_total").increment(1);
                self.current.send_replace(Arc::new(next));
                true
            }
            Err(e) => {
                tracing::error!(version = %published.version, "published catalog rejected, keeping version {}: {e}", self.current.borrow().version);
                false
            }
        }
    }

    /// Follows the catalog carried by `policy`'s snapshots until `shutdown`.
    pub fn follow(self: &Arc<Self>, policy: &PolicyWatcher, shutdown: CancellationToken) {
        let mut changes = policy.subscribe();
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                // Cloned only when it is a version (or an origin) this router does not have.
                let published = changes
                    .borrow_and_update()
                    .as_ref()
                    .and_then(|p| p.compiled.catalog.as_ref())
                    .filter(|c| me.is_new(c))
                    .cloned();
                if let Some(c) = published {
                    me.apply(&c);
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = changes.changed() => if r.is_err() { return },
                }
            }
        });
    }
}
