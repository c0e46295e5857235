//! In-memory policy store: one process, same semantics as Redis.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::broadcast;

use crate::StateError;
use crate::policy::{PolicyStore, StoredSnapshot};
use switchyard_core::clock::now_ms;

const AUDIT_CAP: usize = 100_000;

#[derive(Default)]
struct Inner {
    snapshot: Option<StoredSnapshot>,
    version: u64,
    docs: BTreeMap<String, BTreeMap<String, String>>,
    audit: VecDeque<String>,
}

/// The in-memory [`PolicyStore`].
pub struct MemoryPolicyStore {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<u64>,
}

impl std::fmt::Debug for MemoryPolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryPolicyStore")
    }
}

impl Default for MemoryPolicyStore {
    fn default() -> Self {
        MemoryPolicyStore {
            inner: Mutex::new(Inner::default()),
            changes: broadcast::channel(64).0,
        }
    }
}

impl MemoryPolicyStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl PolicyStore for MemoryPolicyStore {
    async fn publish_snapshot(&self, sha256: &str, body: Bytes) -> Result<u64, StateError> {
        let version = {
            let mut inner = self.lock();
            if let Some(s) = &inner.snapshot
                && s.sha256 == sha256
            {
                return Ok(s.version);
            }
            inner.version += 1;
            let version = inner.version;
            inner.snapshot = Some(StoredSnapshot {
                version,
                sha256: sha256.to_string(),
                body,
                created_ms: now_ms(),
            });
            version
        };
        let _ = self.changes.send(version);
        Ok(version)
    }

    async fn current_snapshot(&self) -> Result<Option<StoredSnapshot>, StateError> {
        Ok(self.lock().snapshot.clone())
    }

    fn subscribe(&self) -> broadcast::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn put_doc(&self, collection: &str, id: &str, json: &str) -> Result<(), StateError> {
        self.lock()
            .docs
            .entry(collection.to_string())
            .or_default()
            .insert(id.to_string(), json.to_string());
        Ok(())
    }

    async fn remove_doc(&self, collection: &str, id: &str) -> Result<bool, StateError> {
        Ok(self
            .lock()
            .docs
            .get_mut(collection)
            .is_some_and(|c| c.remove(id).is_some()))
    }

    async fn list_docs(&self, collection: &str) -> Result<Vec<(String, String)>, StateError> {
        Ok(self
            .lock()
            .docs
            .get(collection)
            .map(|c| c.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    async fn append_audit(&self, json: &str) -> Result<(), StateError> {
        let mut inner = self.lock();
        if inner.audit.len() == AUDIT_CAP {
            inner.audit.pop_front();
        }
        inner.audit.push_back(json.to_string());
        Ok(())
    }

    async fn audit_tail(&self, limit: usize) -> Result<Vec<String>, StateError> {
        let inner = self.lock();
        let skip = inner.audit.len().saturating_sub(limit);
        Ok(inner.audit.iter().skip(skip).cloned().collect())
    }
}
