//! gRPC `switchyard.v1.Policy` over [`PolicyCore`].

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use secrecy::ExposeSecret;
use switchyard_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::core::{CoreError, PolicyCore, Served};
use crate::snapshot::{KeyRecord, Override, OverrideKind};

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct PolicyGrpc {
    core: Arc<PolicyCore>,
    shutdown: tokio_util::sync::CancellationToken,
    allow_plaintext_secrets: bool,
}

impl PolicyGrpc {
    /// Serves `core`; watch streams end when `shutdown` fires (graceful shutdown waits for them).
    /// BYOK keys go only over mutual TLS or to a loopback peer, unless `allow_plaintext_secrets`.
    pub fn new(
        core: Arc<PolicyCore>,
        shutdown: tokio_util::sync::CancellationToken,
        allow_plaintext_secrets: bool,
    ) -> Self {
        PolicyGrpc {
            core,
            shutdown,
            allow_plaintext_secrets,
        }
    }

    /// Whether snapshots with BYOK keys may go to the peer of `request`.
    fn secrets_check<T>(&self, request: &Request<T>) -> Result<(), String> {
        let tls = matches!(switchyard_runtime::tls::current(), Ok(Some(_)));
        may_send_secrets(tls, self.allow_plaintext_secrets, request.remote_addr())
    }
}

/// Where decrypted BYOK keys may travel: over mutual TLS, to a peer on this host (loopback), or
/// anywhere when the operator allowed plaintext explicitly. Otherwise the reason, for the caller
/// and the log.
pub fn may_send_secrets(
    tls: bool,
    allow_plaintext: bool,
    peer: Option<std::net::SocketAddr>,
) -> Result<(), String> {
    if tls || allow_plaintext || peer.is_some_and(|p| p.ip().to_canonical().is_loopback()) {
        return Ok(());
    }
    let peer = peer.map_or_else(|| "an unknown peer".to_string(), |p| p.ip().to_string());
    Err(format!(
        "this policy holds BYOK provider keys and does not send them in plaintext to {peer}: \
         enable mutual TLS (SWITCHYARD_TLS_CERT, SWITCHYARD_TLS_KEY, SWITCHYARD_TLS_CA on every \
         service) or start the policy service with --allow-plaintext-secrets"
    ))
}

/// A snapshot for a peer that may not receive secrets: refused when it carries BYOK keys.
fn guarded(s: &Served, refused: &Option<String>) -> Result<pb::PolicySnapshot, Status> {
    match refused {
        Some(why) if !s.byok.is_empty() => {
            metrics::counter!("switchyard_policy_secrets_refused_total").increment(1);
            tracing::warn!(reason = %why, "policy snapshot with BYOK keys refused to a plaintext peer");
            Err(Status::failed_precondition(why.clone()))
        }
        _ => Ok(to_proto(s)),
    }
}

fn status(e: CoreError) -> Status {
    match e {
        CoreError::NotFound(m) => Status::not_found(m),
        CoreError::Invalid(m) => Status::invalid_argument(m),
        CoreError::State(e) => switchyard_runtime::status::state_status(e),
    }
}

/// The wire form of a served snapshot, BYOK keys opened for the receiving router.
pub fn to_proto(s: &Served) -> pb::PolicySnapshot {
    pb::PolicySnapshot {
        version: s.version,
        created_unix_ms: s.created_ms as i64,
        sha256: s.sha256.clone(),
        compiled_json: s.body.to_vec(),
        byok_keys: s
            .byok
            .iter()
            .map(|(org, provider, key)| pb::ByokKey {
                org_id: org.clone(),
                provider: provider.clone(),
                key: key.expose_secret().to_string(),
            })
            .collect(),
    }
}

fn key_proto(k: &KeyRecord) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.to_string(),
        org_id: k.org.to_string(),
        sha256_hex: k.sha256.clone(),
        prefix: k.prefix.clone(),
        scopes: k.scopes.clone(),
        revoked: k.revoked,
    }
}

fn override_proto(o: &Override) -> pb::Override {
    pb::Override {
        id: o.id.clone(),
        kind: match o.kind {
            OverrideKind::DisableProvider => pb::OverrideKind::DisableProvider,
            OverrideKind::DisableEndpoint => pb::OverrideKind::DisableEndpoint,
            OverrideKind::ForceModel => pb::OverrideKind::ForceModel,
        } as i32,
        org_id: o.org.as_ref().map(ToString::to_string).unwrap_or_default(),
        target: o.target.clone(),
        model: o
            .model
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        reason: o.reason.clone(),
        actor: o.actor.clone(),
        created_unix_ms: o.created_ms as i64,
    }
}

fn override_from(p: pb::Override) -> Result<Override, Status> {
    let kind = match pb::OverrideKind::try_from(p.kind) {
        Ok(pb::OverrideKind::DisableProvider) => OverrideKind::DisableProvider,
        Ok(pb::OverrideKind::DisableEndpoint) => OverrideKind::DisableEndpoint,
        Ok(pb::OverrideKind::ForceModel) => OverrideKind::ForceModel,
        _ => {
            return Err(Status::invalid_argument(
                "override kind must be disable_provider, disable_endpoint or force_model",
            ));
        }
    };
    let opt = |s: String| (!s.is_empty()).then_some(s);
    Ok(Override {
        id: p.id,
        kind,
        org: opt(p.org_id).map(Into::into),
        target: p.target,
        model: opt(p.model).map(Into::into),
        reason: p.reason,
        actor: opt(p.actor).unwrap_or_else(|| "unknown".into()),
        created_ms: 0,
    })
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::PolicySnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl pb::policy_server::Policy for PolicyGrpc {
    type WatchStream = SnapshotStream;

    async fn watch(
        &self,
        request: Request<pb::WatchPolicyRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let refused = self.secrets_check(&request).err();
        let mut known = request.into_inner().known_version;
        let updates = tokio_stream::wrappers::WatchStream::new(self.core.subscribe());
        metrics::gauge!("switchyard_policy_watchers").increment(1.0);
        let guard = WatcherGuard;
        let stream = updates.filter_map(move |served| {
            let _alive = &guard;
            let out = served.filter(|s| s.version > known).map(|s| {
                known = s.version;
                guarded(&s, &refused)
            });
            futures::future::ready(out)
        });
        let stream = stream.take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::PolicySnapshot>, Status> {
        let refused = self.secrets_check(&request).err();
        let s = self
            .core
            .current()
            .ok_or_else(|| Status::unavailable("no policy snapshot published yet"))?;
        guarded(&s, &refused).map(Response::new)
    }

    async fn issue_api_key(
        &self,
        request: Request<pb::IssueApiKeyRequest>,
    ) -> Result<Response<pb::IssueApiKeyResponse>, Status> {
        let r = request.into_inner();
        let actor = if r.actor.is_empty() {
            "unknown"
        } else {
            &r.actor
        };
        let (record, secret, version) = self
            .core
            .issue_key(&r.org_id, r.scopes, actor)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::IssueApiKeyResponse {
            key: Some(key_proto(&record)),
            secret: secret.expose_secret().to_string(),
            version,
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let r = request.into_inner();
        let version = self
            .core
            .revoke_key(&r.key_id, &r.actor, &r.reason)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RevokeApiKeyResponse { version }))
    }

    async fn put_override(
        &self,
        request: Request<pb::PutOverrideRequest>,
    ) -> Result<Response<pb::Override>, Status> {
        let o = request
            .into_inner()
            .r#override
            .ok_or_else(|| Status::invalid_argument("override missing"))?;
        let (o, _) = self
            .core
            .put_override(override_from(o)?)
            .await
            .map_err(status)?;
        Ok(Response::new(override_proto(&o)))
    }

    async fn remove_override(
        &self,
        request: Request<pb::RemoveOverrideRequest>,
    ) -> Result<Response<pb::RemoveOverrideResponse>, Status> {
        let r = request.into_inner();
        let version = self
            .core
            .remove_override(&r.id, &r.actor, &r.reason)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RemoveOverrideResponse { version }))
    }

    async fn list_overrides(
        &self,
        _: Request<pb::ListOverridesRequest>,
    ) -> Result<Response<pb::ListOverridesResponse>, Status> {
        let overrides = self
            .core
            .current()
            .map(|s| s.compiled.overrides.iter().map(override_proto).collect())
            .unwrap_or_default();
        Ok(Response::new(pb::ListOverridesResponse { overrides }))
    }

    async fn get_status(
        &self,
        _: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::PolicyStatus>, Status> {
        let s = self
            .core
            .current()
            .ok_or_else(|| Status::unavailable("no policy snapshot published yet"))?;
        let c = &s.compiled;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(pb::PolicyStatus {
            version: s.version,
            sha256: s.sha256.clone(),
            created_unix_ms: s.created_ms as i64,
            org_ids: c.orgs.iter().map(|o| o.id.to_string()).collect(),
            api_keys: count(c.keys.len()),
            revoked_api_keys: count(c.keys.iter().filter(|k| k.revoked).count()),
            overrides: count(c.overrides.len()),
            catalog_version: c
                .catalog
                .as_ref()
                .map(|c| c.version.clone())
                .unwrap_or_default(),
            catalog_error: self.core.catalog_error().unwrap_or_default(),
            limits_json: serde_json::to_string(&c.limits).unwrap_or_default(),
        }))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => 100,
            n => n.min(10_000) as usize,
        };
        let records = self
            .core
            .audit_tail(limit)
            .await
            .map_err(|e| status(e.into()))?
            .into_iter()
            .map(|r| pb::AuditRecord {
                at_unix_ms: r.at_ms as i64,
                actor: r.actor,
                action: r.action,
                target: r.target,
                reason: r.reason,
            })
            .collect();
        Ok(Response::new(pb::ListAuditResponse { records }))
    }

    async fn put_budget(
        &self,
        request: Request<pb::PutBudgetRequest>,
    ) -> Result<Response<pb::ChangeBudgetResponse>, Status> {
        let r = request.into_inner();
        let mut doc = budget_doc(r.scope, r.period, r.actor, r.reason)?;
        doc.set = Some(crate::budgets::BudgetSetting {
            limit: switchyard_core::Money::from_nanos(r.limit_nano_usd),
            hard: r.hard,
            alerts: r.alert_thresholds_percent,
        });
        let version = self.core.change_budget(doc).await.map_err(status)?;
        Ok(Response::new(pb::ChangeBudgetResponse { version }))
    }

    async fn remove_budget(
        &self,
        request: Request<pb::RemoveBudgetRequest>,
    ) -> Result<Response<pb::ChangeBudgetResponse>, Status> {
        let r = request.into_inner();
        let doc = budget_doc(r.scope, r.period, r.actor, r.reason)?;
        let version = self.core.change_budget(doc).await.map_err(status)?;
        Ok(Response::new(pb::ChangeBudgetResponse { version }))
    }

    async fn put_limits(
        &self,
        request: Request<pb::PutLimitsRequest>,
    ) -> Result<Response<pb::ChangeBudgetResponse>, Status> {
        let r = request.into_inner();
        let mut doc = limit_doc(r.scope, r.actor, r.reason)?;
        doc.set = Some(crate::limits::LimitSetting {
            rpm: r.requests_per_minute,
            tpm: r.tokens_per_minute,
            concurrent: r.concurrent_requests,
        });
        let version = self.core.change_limits(doc).await.map_err(status)?;
        Ok(Response::new(pb::ChangeBudgetResponse { version }))
    }

    async fn remove_limits(
        &self,
        request: Request<pb::RemoveLimitsRequest>,
    ) -> Result<Response<pb::ChangeBudgetResponse>, Status> {
        let r = request.into_inner();
        let doc = limit_doc(r.scope, r.actor, r.reason)?;
        let version = self.core.change_limits(doc).await.map_err(status)?;
        Ok(Response::new(pb::ChangeBudgetResponse { version }))
    }
}

/// A scope on the wire, checked: the org, and the key or workflow (`(key, workflow)`).
type ScopeIds = (switchyard_core::OrgId, Option<String>, Option<String>);

fn scope_ids(scope: Option<pb::Scope>) -> Result<ScopeIds, Status> {
    let scope = scope.ok_or_else(|| Status::invalid_argument("scope is required"))?;
    if scope.org_id.is_empty() {
        return Err(Status::invalid_argument("scope.org_id is required"));
    }
    let id = (!scope.id.is_empty()).then(|| scope.id.clone());
    let (key, workflow) = match pb::ScopeKind::try_from(scope.kind) {
        Ok(pb::ScopeKind::Org) => (None, None),
        Ok(pb::ScopeKind::ApiKey) if id.is_some() => (id, None),
        Ok(pb::ScopeKind::Workflow) if id.is_some() => (None, id),
        _ => {
            return Err(Status::invalid_argument(
                "scope.kind must be ORG, API_KEY or WORKFLOW (the last two with an id)",
            ));
        }
    };
    Ok((scope.org_id.as_str().into(), key, workflow))
}

fn actor_or_unknown(actor: String) -> String {
    if actor.is_empty() {
        "unknown".into()
    } else {
        actor
    }
}

/// A limits change's scope, checked, with nothing set yet.
fn limit_doc(
    scope: Option<pb::Scope>,
    actor: String,
    reason: String,
) -> Result<crate::limits::LimitDoc, Status> {
    let (org, key, workflow) = scope_ids(scope)?;
    Ok(crate::limits::LimitDoc {
        org,
        key,
        workflow,
        set: None,
        actor: actor_or_unknown(actor),
        reason,
    })
}

/// A budget change's scope and period, checked, with nothing set yet.
fn budget_doc(
    scope: Option<pb::Scope>,
    period: i32,
    actor: String,
    reason: String,
) -> Result<crate::budgets::BudgetDoc, Status> {
    use crate::budgets::BudgetPeriod;
    let (org, key, workflow) = scope_ids(scope)?;
    let period = match pb::Period::try_from(period) {
        Ok(pb::Period::Day) => BudgetPeriod::Day,
        Ok(pb::Period::Month) => BudgetPeriod::Month,
        Ok(pb::Period::Total) => BudgetPeriod::Total,
        _ => {
            return Err(Status::invalid_argument(
                "period must be DAY, MONTH or TOTAL",
            ));
        }
    };
    Ok(crate::budgets::BudgetDoc {
        org,
        key,
        workflow,
        period,
        set: None,
        actor: actor_or_unknown(actor),
        reason,
    })
}

struct WatcherGuard;

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        metrics::gauge!("switchyard_policy_watchers").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byok_keys_go_over_tls_to_loopback_or_where_allowed() {
        let remote: std::net::SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let local: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let v6: std::net::SocketAddr = "[::1]:5000".parse().unwrap();
        let mapped: std::net::SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        assert!(may_send_secrets(false, false, Some(local)).is_ok());
        assert!(may_send_secrets(false, false, Some(v6)).is_ok());
        assert!(may_send_secrets(false, false, Some(mapped)).is_ok());
        assert!(may_send_secrets(true, false, Some(remote)).is_ok());
        assert!(may_send_secrets(false, true, Some(remote)).is_ok());
        let why = may_send_secrets(false, false, Some(remote)).unwrap_err();
        assert!(
            why.contains("10.1.2.3") && why.contains("--allow-plaintext-secrets"),
            "{why}"
        );
        assert!(may_send_secrets(false, false, None).is_err());
    }
}
