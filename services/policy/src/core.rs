//! The replica's state: the last valid config, the served snapshot, and every operation that
//! changes them. Mutations write a document and an audit record to the store, recompile and
//! publish; the served snapshot always comes from the store, so every replica serves the same.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use secrecy::SecretString;
use serde_json::json;
use switchyard_config::{ConfigError, FieldError};
use switchyard_core::{ApiKeyId, OrgId};
use switchyard_state::{AuditRecord, PolicyStore, StateError};
use tokio::sync::watch;

use crate::budgets::BudgetDoc;
use crate::catalog::PublishedCatalog;
use crate::compile::{Dynamic, compile};
use crate::config::{ENV_PREFIX, PolicyConfig};
use crate::crypto::{MasterKey, open};
use crate::keys;
use crate::snapshot::{CompiledPolicy, KeyOrigin, KeyRecord, Override, OverrideKind};

const KEYS: &str = "keys";
const REVOKED: &str = "revoked";
const OVERRIDES: &str = "overrides";
pub(crate) const BUDGETS: &str = "budgets";
pub(crate) const LIMITS: &str = "limits";

/// A snapshot as this replica serves it.
pub struct Served {
    /// Version.
    pub version: u64,
    /// Content hash.
    pub sha256: String,
    /// Publication time, Unix ms.
    pub created_ms: u64,
    /// Encoded compiled policy.
    pub body: Bytes,
    /// Decoded.
    pub compiled: Arc<CompiledPolicy>,
    /// BYOK keys opened for routers: (org, provider, key). Never logged.
    pub byok: Vec<(String, String, SecretString)>,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("version", &self.version)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// Something named does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request or the resulting policy is invalid.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The state store is unreachable.
    #[error(transparent)]
    State(#[from] StateError),
}

/// One replica's policy state.
pub struct PolicyCore {
    pub(crate) store: Arc<dyn PolicyStore>,
    file: PathBuf,
    config: RwLock<Option<Arc<PolicyConfig>>>,
    last_text: Mutex<Option<String>>,
    catalog_file: Option<PathBuf>,
    catalog: RwLock<Option<PublishedCatalog>>,
    last_catalog_text: Mutex<Option<String>>,
    catalog_error: Mutex<Option<String>>,
    master: Option<MasterKey>,
    served: watch::Sender<Option<Arc<Served>>>,
    rebuild: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for PolicyCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyCore")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

use switchyard_core::clock::now_ms;

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl PolicyCore {
    /// A replica reading `file`, publishing to `store`.
    pub fn new(store: Arc<dyn PolicyStore>, file: PathBuf, master: Option<MasterKey>) -> Arc<Self> {
        Self::with_catalog(store, file, None, master)
    }

    /// A replica that also loads the catalog from `catalog_file` and publishes it in every
    /// snapshot.
    pub fn with_catalog(
        store: Arc<dyn PolicyStore>,
        file: PathBuf,
        catalog_file: Option<PathBuf>,
        master: Option<MasterKey>,
    ) -> Arc<Self> {
        Arc::new(PolicyCore {
            store,
            file,
            config: RwLock::new(None),
            last_text: Mutex::new(None),
            catalog_file,
            catalog: RwLock::new(None),
            last_catalog_text: Mutex::new(None),
            catalog_error: Mutex::new(None),
            master,
            served: watch::channel(None).0,
            rebuild: tokio::sync::Mutex::new(()),
        })
    }

    /// The snapshot served now.
    pub fn current(&self) -> Option<Arc<Served>> {
        self.served.borrow().clone()
    }

    /// Changes of the served snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Served>>> {
        self.served.subscribe()
    }

    fn config(&self) -> Option<Arc<PolicyConfig>> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn dynamic(&self) -> Result<Dynamic, StateError> {
        fn decode<T: serde::de::DeserializeOwned>(
            collection: &str,
            (id, json): (String, String),
        ) -> Result<T, StateError> {
            serde_json::from_str(&json).map_err(|e| StateError::Corrupt {
                key: format!("{collection}/{id}"),
                detail: e.to_string(),
            })
        }
        let issued = self
            .store
            .list_docs(KEYS)
            .await?
            .into_iter()
            .map(|d| decode(KEYS, d))
            .collect::<Result<Vec<KeyRecord>, _>>()?;
        let overrides = self
            .store
            .list_docs(OVERRIDES)
            .await?
            .into_iter()
            .map(|d| decode(OVERRIDES, d))
            .collect::<Result<Vec<Override>, _>>()?;
        let budgets = self
            .store
            .list_docs(BUDGETS)
            .await?
            .into_iter()
            .map(|d| decode(BUDGETS, d))
            .collect::<Result<Vec<BudgetDoc>, _>>()?;
        let limits = self
            .store
            .list_docs(LIMITS)
            .await?
            .into_iter()
            .map(|d| decode(LIMITS, d))
            .collect::<Result<Vec<crate::limits::LimitDoc>, _>>()?;
        let revoked = self
            .store
            .list_docs(REVOKED)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        Ok(Dynamic {
            issued,
            revoked,
            overrides,
            budgets,
            limits,
        })
    }

    /// Re-reads the policy file. `Ok(false)` when unchanged; `Ok(true)` when a new valid version
    /// was compiled and published; an invalid file is rejected with every error and the old
    /// config keeps serving.
    pub async fn reload(&self) -> Result<bool, ConfigError> {
        let text = std::fs::read_to_string(&self.file).map_err(|source| ConfigError::Io {
            path: self.file.clone(),
            source,
        })?;
        {
            let mut last = self.last_text.lock().unwrap_or_else(|e| e.into_inner());
            if last.as_deref() == Some(text.as_str()) {
                return Ok(false);
            }
            *last = Some(text.clone());
        }
        let result = self.apply_text(&text).await;
        let outcome = if result.is_ok() { "ok" } else { "invalid" };
        metrics::counter!("switchyard_policy_reloads_total", "result" => outcome).increment(1);
        metrics::gauge!("switchyard_policy_last_reload_ok").set(if result.is_ok() {
            1.0
        } else {
            0.0
        });
        match &result {
            Ok(()) => tracing::info!(file = %self.file.display(), "policy file loaded"),
            Err(e) => {
                tracing::error!(file = %self.file.display(), "policy file rejected, previous version keeps serving: {e}")
            }
        }
        result.map(|()| true)
    }

    /// The catalog this replica publishes, if it loads one.
    pub fn catalog(&self) -> Option<PublishedCatalog> {
        self.catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why the last change of the catalog file was rejected (every error with its path), while
    /// the previous version keeps serving; `None` once a valid file is loaded.
    pub fn catalog_error(&self) -> Option<String> {
        self.catalog_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the catalog file (when this replica has one). `Ok(false)` when unchanged;
    /// `Ok(true)` when a new valid version was published; an invalid file is rejected with
    /// every error, reported by [`PolicyCore::catalog_error`], and the old version keeps
    /// serving.
    pub async fn reload_catalog(&self) -> Result<bool, ConfigError> {
        let Some(path) = &self.catalog_file else {
            return Ok(false);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        {
            let mut last = self
                .last_catalog_text
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.as_deref() == Some(text.as_str()) {
                return Ok(false);
            }
            *last = Some(text);
        }
        let name = path.display().to_string();
        let result = switchyard_config::Catalog::read(path);
        let outcome = if result.is_ok() { "ok" } else { "invalid" };
        metrics::counter!("switchyard_catalog_reloads_total", "result" => outcome).increment(1);
        let (catalog, yaml) = match result {
            Ok(loaded) => loaded,
            Err(e) => {
                let serving = self.catalog().map(|c| c.version);
                tracing::error!(file = %name, serving = serving.as_deref().unwrap_or("none"), "catalog file rejected, the previous version keeps serving: {e}");
                *self.catalog_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                return Err(e);
            }
        };
        *self.catalog_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let next = PublishedCatalog::new(&name, yaml, &catalog);
        if self.catalog().is_some_and(|c| c.sha256 == next.sha256) {
            return Ok(false);
        }
        tracing::info!(file = %name, version = %next.version, "catalog loaded");
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = Some(next);
        if self.config().is_some()
            && let Err(e) = self.publish().await
        {
            tracing::warn!(error = %e, "catalog loaded but not published yet; will retry");
        }
        Ok(true)
    }

    async fn apply_text(&self, text: &str) -> Result<(), ConfigError> {
        let name = self.file.display().to_string();
        let source = switchyard_config::read_text(&name, text, ENV_PREFIX)?;
        let cfg: PolicyConfig = switchyard_config::parse_value(&name, source.value)?;
        // Prove it compiles (BYOK keys open) before it replaces the serving config.
        let dynamic = self.dynamic().await.unwrap_or_default();
        compile(&cfg, &dynamic, self.master.as_ref()).map_err(|errors| ConfigError::Invalid {
            source_name: name.clone(),
            errors,
        })?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(cfg));
        if let Err(e) = self.publish().await {
            tracing::warn!(error = %e, "policy loaded but not published yet; will retry");
        }
        Ok(())
    }

    /// Compiles the current config with the store's documents and publishes the result.
    pub async fn publish(&self) -> Result<u64, CoreError> {
        let _one_at_a_time = self.rebuild.lock().await;
        let Some(cfg) = self.config() else {
            return Err(CoreError::Invalid("no valid policy file loaded".into()));
        };
        let dynamic = self.dynamic().await?;
        let mut compiled = compile(&cfg, &dynamic, self.master.as_ref())
            .map_err(|e| CoreError::Invalid(list(&e)))?;
        compiled.catalog = self.catalog();
        let body = serde_json::to_vec(&compiled).map_err(|e| CoreError::Invalid(e.to_string()))?;
        let sha = keys::hex(&<sha2::Sha256 as sha2::Digest>::digest(&body));
        let version = self.store.publish_snapshot(&sha, Bytes::from(body)).await?;
        self.refresh().await?;
        Ok(version)
    }

    /// Serves the store's current snapshot if it is newer than the one served.
    pub async fn refresh(&self) -> Result<(), StateError> {
        let Some(stored) = self.store.current_snapshot().await? else {
            return Ok(());
        };
        if self.current().is_some_and(|s| s.version >= stored.version) {
            return Ok(());
        }
        let compiled: CompiledPolicy =
            serde_json::from_slice(&stored.body).map_err(|e| StateError::Corrupt {
                key: "policy snapshot".into(),
                detail: e.to_string(),
            })?;
        let byok = match &self.master {
            Some(master) => compiled
                .byok
                .iter()
                .filter_map(|b| match open(master, b.org.as_str(), b.provider.as_str(), &b.sealed) {
                    Ok(key) => Some((b.org.to_string(), b.provider.to_string(), key)),
                    Err(e) => {
                        tracing::error!(org = %b.org, provider = %b.provider, "byok key not served: {e}");
                        None
                    }
                })
                .collect(),
            None => Vec::new(),
        };
        metrics::gauge!("switchyard_policy_snapshot_version").set(stored.version as f64);
        tracing::info!(version = stored.version, sha256 = %stored.sha256, "serving policy snapshot");
        self.served.send_replace(Some(Arc::new(Served {
            version: stored.version,
            sha256: stored.sha256,
            created_ms: stored.created_ms,
            body: stored.body,
            compiled: Arc::new(compiled),
            byok,
        })));
        Ok(())
    }

    pub(crate) async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        reason: &str,
    ) -> Result<(), StateError> {
        AuditRecord::now(actor, action, target, reason)
            .append(self.store.as_ref())
            .await
    }

    /// The latest `limit` audit records, oldest first (unreadable ones are skipped).
    pub async fn audit_tail(&self, limit: usize) -> Result<Vec<AuditRecord>, StateError> {
        let raw = self.store.audit_tail(limit).await?;
        Ok(raw
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect())
    }

    /// Issues a key for `org`; the secret is returned once and never stored.
    pub async fn issue_key(
        &self,
        org: &str,
        scopes: Vec<String>,
        actor: &str,
    ) -> Result<(KeyRecord, SecretString, u64), CoreError> {
        let cfg = self
            .config()
            .ok_or_else(|| CoreError::Invalid("no policy loaded".into()))?;
        if !cfg.orgs.iter().any(|o| o.id.as_str() == org) {
            return Err(CoreError::NotFound(format!("org `{org}`")));
        }
        let (secret, sha256, prefix) = keys::issue();
        let record = KeyRecord {
            id: ApiKeyId::from(keys::new_id("key")),
            org: OrgId::from(org),
            sha256,
            prefix,
            scopes,
            revoked: false,
            origin: KeyOrigin::Issued,
        };
        let json = serde_json::to_string(&record).map_err(|e| CoreError::Invalid(e.to_string()))?;
        self.store.put_doc(KEYS, record.id.as_str(), &json).await?;
        self.audit(
            actor,
            "issue_key",
            &format!("{} ({})", record.id, record.prefix),
            "",
        )
        .await?;
        let version = self.publish().await?;
        Ok((record, secret, version))
    }

    /// Revokes a key (configured or issued).
    pub async fn revoke_key(&self, id: &str, actor: &str, reason: &str) -> Result<u64, CoreError> {
        let known = self
            .current()
            .is_some_and(|s| s.compiled.keys.iter().any(|k| k.id.as_str() == id));
        if !known {
            return Err(CoreError::NotFound(format!("key `{id}`")));
        }
        let doc = json!({"actor": actor, "reason": reason, "at_ms": now_ms()}).to_string();
        self.store.put_doc(REVOKED, id, &doc).await?;
        self.audit(actor, "revoke_key", id, reason).await?;
        self.publish().await
    }

    /// Adds or replaces an override.
    pub async fn put_override(&self, mut o: Override) -> Result<(Override, u64), CoreError> {
        if o.target.trim().is_empty() {
            return Err(CoreError::Invalid("an override needs a target".into()));
        }
        if o.reason.trim().is_empty() {
            return Err(CoreError::Invalid(
                "an override needs a reason (it is recorded in the audit)".into(),
            ));
        }
        if o.kind == OverrideKind::ForceModel && (o.org.is_none() || o.model.is_none()) {
            return Err(CoreError::Invalid(
                "force_model needs an org and a model".into(),
            ));
        }
        if o.id.is_empty() {
            o.id = keys::new_id("ovr");
        }
        o.created_ms = now_ms();
        let json = serde_json::to_string(&o).map_err(|e| CoreError::Invalid(e.to_string()))?;
        self.store.put_doc(OVERRIDES, &o.id, &json).await?;
        self.audit(
            &o.actor,
            "put_override",
            &format!("{} {:?} {}", o.id, o.kind, o.target),
            &o.reason,
        )
        .await?;
        let version = self.publish().await?;
        Ok((o, version))
    }

    /// Removes an override.
    pub async fn remove_override(
        &self,
        id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<u64, CoreError> {
        if !self.store.remove_doc(OVERRIDES, id).await? {
            return Err(CoreError::NotFound(format!("override `{id}`")));
        }
        self.audit(actor, "remove_override", id, reason).await?;
        self.publish().await
    }
}
