//! Idempotency keys, for the non-streamed path of every API: a key is claimed for one request
//! (identified by the hash of its normalized content), the reply is stored under it once served,
//! and a repeat gets the stored reply with no second upstream call or charge. A duplicate still
//! running, or the key reused for another request, is refused; a failed request frees the key.
//! Keys are namespaced per org and per API (the stored reply is in that API's encoding).

use std::sync::Arc;
use std::time::Duration;

use switchyard_core::{Error, ErrorClass};
use switchyard_state::{Begin, IdempotencyStore};

use crate::edge::Api;

/// How long a completed response is kept for idempotent replays.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a claim outlives its request's deadline; a client that vanishes frees it by expiry.
const CLAIM_TTL: Duration = Duration::from_secs(600);

/// What claiming a key found.
pub enum Begun {
    /// An earlier request with this key was served: its stored reply.
    Replay(String),
    /// The key is this request's now.
    Claimed(Claim),
}

/// A claimed key: completed with the reply, or abandoned.
pub struct Claim {
    store: Arc<dyn IdempotencyStore>,
    org: String,
    key: String,
}

/// Claims `idem` for `req` (its normalized content) of `org` on `api`.
pub async fn begin<T: serde::Serialize + ?Sized>(
    store: Arc<dyn IdempotencyStore>,
    org: &str,
    api: Api,
    idem: &str,
    req: &T,
) -> Result<Begun, Error> {
    if idem.is_empty() || idem.len() > 256 {
        return Err(Error::invalid(
            "an idempotency key must be 1 to 256 characters",
        ));
    }
    let key = format!("{}:{idem}", api.as_str());
    let hash = crate::edge::request_hash(serde_json::to_vec(req).unwrap_or_default().as_slice());
    match store.begin(org, &key, &hash, CLAIM_TTL).await {
        Ok(Begin::New) => Ok(Begun::Claimed(Claim {
            store,
            org: org.to_string(),
            key,
        })),
        Ok(Begin::Done(text)) => Ok(Begun::Replay(text)),
        Ok(Begin::InFlight) => Err(Error::invalid(
            "a request with this idempotency key is still in progress",
        )),
        Ok(Begin::Mismatch) => Err(Error::invalid(
            "this idempotency key was already used for a different request",
        )),
        Err(e) => Err(Error::new(
            ErrorClass::Unavailable,
            format!("idempotency keys cannot be checked right now: {e}"),
        )),
    }
}

impl Claim {
    /// Stores the reply for replays.
    pub async fn complete(self, text: &str) {
        if let Err(e) = self
            .store
            .complete(&self.org, &self.key, text, IDEMPOTENCY_TTL)
            .await
        {
            tracing::warn!(error = %e, "response not stored for idempotent replay");
        }
    }

    /// Frees the key (the request failed).
    pub async fn abandon(self) {
        let _ = self.store.abandon(&self.org, &self.key).await;
    }
}
