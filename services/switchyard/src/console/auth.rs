//! Who is at the console: the API key in `Authorization: Bearer`, checked against the policy
//! in force (fetched from the policy service, kept for a second), as routers check it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use switchyard_policy_model::snapshot::CompiledPolicy;
use switchyard_proto::v1 as pb;

use crate::ctl::client::Ctx;

/// How long a fetched policy answers sign-ins.
const FRESH: Duration = Duration::from_secs(1);

/// A signed-in operator.
#[derive(Debug, Clone)]
pub struct Operator {
    pub org: String,
    pub key_id: String,
    pub prefix: String,
    pub admin: bool,
    /// The key itself, passed on to routers (never logged, never returned).
    pub key: String,
}

impl Operator {
    /// How the audit trail names them.
    pub fn actor(&self) -> String {
        format!("key {} of {} (console)", self.key_id, self.org)
    }
}

/// A refusal, as the API returns it.
pub type Refusal = (StatusCode, String);

/// Signs operators in against the policy in force.
#[derive(Default)]
pub struct Gate {
    policy: Mutex<Option<(Instant, Arc<CompiledPolicy>)>>,
}

impl Gate {
    async fn policy(&self, ctx: &Ctx) -> Result<Arc<CompiledPolicy>, Refusal> {
        if let Some((at, p)) = self
            .policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && at.elapsed() < FRESH
        {
            return Ok(p.clone());
        }
        let unavailable = |e: String| (StatusCode::SERVICE_UNAVAILABLE, e);
        let snapshot = ctx
            .policy()
            .map_err(unavailable)?
            .get_snapshot(pb::GetSnapshotRequest {})
            .await
            .map_err(|s| unavailable(ctx.policy.fail("reading the policy", &s)))?
            .into_inner();
        let compiled: CompiledPolicy =
            serde_json::from_slice(&snapshot.compiled_json).map_err(|e| {
                unavailable(format!("the policy service sent an unreadable policy: {e}"))
            })?;
        let compiled = Arc::new(compiled);
        *self.policy.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), compiled.clone()));
        Ok(compiled)
    }

    /// The operator whose key `headers` carry.
    pub async fn operator(&self, ctx: &Ctx, headers: &HeaderMap) -> Result<Operator, Refusal> {
        let unauthenticated = || {
            (
                StatusCode::UNAUTHORIZED,
                "sign in with an API key (Authorization: Bearer)".to_string(),
            )
        };
        let key = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(unauthenticated)?;
        let policy = self.policy(ctx).await?;
        let record = policy.authenticate(key).ok_or_else(|| {
            (
                StatusCode::UNAUTHORIZED,
                "this API key is unknown or revoked".to_string(),
            )
        })?;
        Ok(Operator {
            org: record.org.to_string(),
            key_id: record.id.to_string(),
            prefix: record.prefix.clone(),
            admin: record.is_admin(),
            key: key.to_string(),
        })
    }
}
