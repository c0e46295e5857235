//! The router's copy of the policy: follows `Policy.Watch` (reconnecting after any failure),
//! keeps the last snapshot — marked stale — while the policy service is unreachable, and, when it
//! has none yet (a router started during an outage), loads the snapshot the policy service
//! published in the state store. That copy has no BYOK keys: they are stored sealed, and only
//! the policy service opens them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use secrecy::SecretString;
use switchyard_config::catalog::Capacity;
use switchyard_core::{FastMap, ProviderId};
use switchyard_policy_model::snapshot::{CompiledPolicy, CompiledWorkflow, KeyRecord};
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::policy_client::PolicyClient;
use switchyard_state::PolicyStore;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One policy version as a router uses it.
pub struct PolicyView {
    /// Version.
    pub version: u64,
    /// The compiled policy.
    pub compiled: CompiledPolicy,
    /// BYOK keys by (org, provider).
    pub byok: HashMap<(String, String), SecretString>,
    /// The capacity declared for BYOK keys, by (org, provider).
    pub byok_capacity: HashMap<(String, String), Capacity>,
    /// Loaded from the state store (no BYOK keys) rather than from the policy service.
    pub from_store: bool,
    /// Each org's workflows, shared by the requests that run them, and its default's id.
    workflows: FastMap<String, (String, Vec<Arc<CompiledWorkflow>>)>,
    /// The providers each org has its own key for.
    byok_providers: FastMap<String, Vec<ProviderId>>,
    /// The key records, as `compiled.keys`, shared by the requests made with them.
    keys: Vec<Arc<KeyRecord>>,
}

impl PolicyView {
    /// The view of `compiled` with BYOK keys `byok` (what a request looks up is indexed once
    /// here, not on every request).
    pub fn new(
        version: u64,
        compiled: CompiledPolicy,
        byok: HashMap<(String, String), SecretString>,
        from_store: bool,
    ) -> Self {
        let workflows = compiled
            .orgs
            .iter()
            .map(|o| {
                let all = o.workflows.iter().cloned().map(Arc::new).collect();
                (o.id.to_string(), (o.default_workflow.to_string(), all))
            })
            .collect();
        let mut byok_providers: FastMap<String, Vec<ProviderId>> = FastMap::default();
        for (org, provider) in byok.keys() {
            byok_providers
                .entry(org.clone())
                .or_default()
                .push(provider.as_str().into());
        }
        let keys = compiled.keys.iter().cloned().map(Arc::new).collect();
        PolicyView {
            version,
            keys,
            byok_capacity: byok_capacity(&compiled),
            compiled,
            byok,
            from_store,
            workflows,
            byok_providers,
        }
    }

    /// Workflow `id` of `org` (its default without one), as `CompiledPolicy::workflow` finds it.
    pub fn workflow(&self, org: &str, id: Option<&str>) -> Option<Arc<CompiledWorkflow>> {
        let (default, all) = self.workflows.get(org)?;
        let id = id.unwrap_or(default);
        all.iter().find(|w| w.id.as_str() == id).cloned()
    }

    /// The record a presented key authenticates as (see `CompiledPolicy::authenticate`).
    pub fn authenticate(&self, presented: &str) -> Option<Arc<KeyRecord>> {
        self.keys
            .get(self.compiled.authenticate_index(presented)?)
            .cloned()
    }

    /// The providers `org` has its own key for.
    pub fn byok_providers(&self, org: &str) -> &[ProviderId] {
        self.byok_providers.get(org).map_or(&[], Vec::as_slice)
    }
}

impl std::fmt::Debug for PolicyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyView")
            .field("version", &self.version)
            .field("from_store", &self.from_store)
            .field("byok_keys", &self.byok.len())
            .finish()
    }
}

/// Follows the policy.
pub struct PolicyWatcher {
    current: watch::Sender<Option<Arc<PolicyView>>>,
    stale: AtomicBool,
}

impl std::fmt::Debug for PolicyWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyWatcher")
            .field("current", &self.current.borrow())
            .field("stale", &self.is_stale())
            .finish()
    }
}

fn byok_capacity(compiled: &CompiledPolicy) -> HashMap<(String, String), Capacity> {
    compiled
        .byok
        .iter()
        .filter_map(|b| Some(((b.org.to_string(), b.provider.to_string()), b.capacity?)))
        .collect()
}

fn decode(s: pb::PolicySnapshot) -> Result<PolicyView, String> {
    let compiled: CompiledPolicy = serde_json::from_slice(&s.compiled_json)
        .map_err(|e| format!("undecodable policy snapshot: {e}"))?;
    let byok = s
        .byok_keys
        .into_iter()
        .map(|k| ((k.org_id, k.provider), SecretString::from(k.key)))
        .collect();
    Ok(PolicyView::new(s.version, compiled, byok, false))
}

impl PolicyWatcher {
    /// Starts watching the policy service at `url`, with `store` as the fallback source.
    pub fn spawn(
        url: String,
        store: Option<Arc<dyn PolicyStore>>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let w = Arc::new(PolicyWatcher {
            current: watch::channel(None).0,
            stale: AtomicBool::new(true),
        });
        let me = w.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let result = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = me.follow(&url) => r,
                };
                if !me.stale.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %result.err().unwrap_or_default(), "policy service unreachable; serving the last policy");
                }
                metrics::gauge!("switchyard_state_stale", "state" => "policy").set(1.0);
                if me.current.borrow().is_none()
                    && let Some(store) = &store
                {
                    me.load_from_store(store.as_ref()).await;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        });
        w
    }

    /// Follows one Watch stream until it fails.
    async fn follow(&self, url: &str) -> Result<(), String> {
        let channel = switchyard_runtime::tls::endpoint(url)?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let known = self
            .current
            .borrow()
            .as_ref()
            .filter(|v| !v.from_store)
            .map(|v| v.version)
            .unwrap_or(0);
        let mut stream = PolicyClient::new(channel)
            .watch(pb::WatchPolicyRequest {
                known_version: known,
            })
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        if self.stale.swap(false, Ordering::Relaxed) {
            tracing::info!("following the policy service");
        }
        metrics::gauge!("switchyard_state_stale", "state" => "policy").set(0.0);
        while let Some(s) = stream
            .message()
            .await
            .map_err(|s| s.message().to_string())?
        {
            let view = decode(s)?;
            tracing::info!(version = view.version, "policy snapshot received");
            self.current.send_replace(Some(Arc::new(view)));
        }
        Err("watch stream ended".into())
    }

    async fn load_from_store(&self, store: &dyn PolicyStore) {
        match store.current_snapshot().await {
            Ok(Some(s)) => match serde_json::from_slice::<CompiledPolicy>(&s.body) {
                Ok(compiled) => {
                    tracing::warn!(
                        version = s.version,
                        "policy loaded from the state store (no BYOK keys until the policy service answers)"
                    );
                    self.current.send_replace(Some(Arc::new(PolicyView::new(
                        s.version,
                        compiled,
                        HashMap::new(),
                        true,
                    ))));
                }
                Err(e) => {
                    tracing::error!(error = %e, "undecodable policy snapshot in the state store")
                }
            },
            Ok(None) => tracing::warn!("no policy snapshot in the state store yet"),
            Err(e) => tracing::warn!(error = %e, "state store unreachable too"),
        }
    }

    /// The policy now, if any was ever received.
    pub fn current(&self) -> Option<Arc<PolicyView>> {
        self.current.borrow().clone()
    }

    /// Whether the policy service is unreachable (the policy is the last one known).
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// Changes of the policy.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<PolicyView>>> {
        self.current.subscribe()
    }
}
