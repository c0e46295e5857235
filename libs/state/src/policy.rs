//! Policy state: the published snapshot (versioned by content, so replicas agree), the dynamic
//! policy documents (issued keys, revocations, overrides) and the audit trail.

use async_trait::async_trait;
use bytes::Bytes;
use switchyard_core::clock::now_ms;
use tokio::sync::broadcast;

use crate::StateError;

/// A published policy snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// Monotonic version.
    pub version: u64,
    /// Hex SHA-256 of `body`.
    pub sha256: String,
    /// The encoded snapshot.
    pub body: Bytes,
    /// When it was published, Unix milliseconds.
    pub created_ms: u64,
}

/// One entry of the audit trail: who changed what, when and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// Who (as the caller named itself).
    pub actor: String,
    /// What: `issue_key`, `revoke_key`, `put_override`, `remove_override`, `eject`, `restore`.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// Why, as given.
    #[serde(default)]
    pub reason: String,
}

impl AuditRecord {
    /// A record stamped now.
    pub fn now(actor: &str, action: &str, target: &str, reason: &str) -> Self {
        AuditRecord {
            at_ms: now_ms(),
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Appends it to `store`'s trail (and logs it).
    pub async fn append(&self, store: &dyn PolicyStore) -> Result<(), StateError> {
        tracing::info!(actor = %self.actor, action = %self.action, target = %self.target, reason = %self.reason, "audit");
        let json = serde_json::to_string(self).map_err(|e| StateError::Corrupt {
            key: "audit".into(),
            detail: e.to_string(),
        })?;
        store.append_audit(&json).await
    }
}

/// The pub/sub channel on which new snapshot versions are announced.
pub fn snapshot_channel() -> &'static str {
    "sy:policy:changed"
}

/// Where policy replicas publish snapshots and keep the documents they compile them from.
#[async_trait]
pub trait PolicyStore: Send + Sync + 'static {
    /// Publishes `body` unless a snapshot with the same `sha256` is already current; returns the
    /// current version either way. Atomic: two replicas publishing the same content get the same
    /// version, never two.
    async fn publish_snapshot(&self, sha256: &str, body: Bytes) -> Result<u64, StateError>;

    /// The current snapshot, if any was ever published.
    async fn current_snapshot(&self) -> Result<Option<StoredSnapshot>, StateError>;

    /// Announcements of new versions. Best effort: a consumer also re-reads periodically.
    fn subscribe(&self) -> broadcast::Receiver<u64>;

    /// Stores document `id` of `collection` (JSON).
    async fn put_doc(&self, collection: &str, id: &str, json: &str) -> Result<(), StateError>;

    /// Removes a document; `true` if it existed.
    async fn remove_doc(&self, collection: &str, id: &str) -> Result<bool, StateError>;

    /// Every document of `collection`, sorted by id.
    async fn list_docs(&self, collection: &str) -> Result<Vec<(String, String)>, StateError>;

    /// Appends an audit record (JSON); the trail keeps the latest 100,000.
    async fn append_audit(&self, json: &str) -> Result<(), StateError>;

    /// The latest `limit` audit records, oldest first.
    async fn audit_tail(&self, limit: usize) -> Result<Vec<String>, StateError>;
}
