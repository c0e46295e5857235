//! The console's changes: eject and restore an endpoint, set and remove a budget or a scope's
//! client limits, remove an override. Each needs a key with the `admin` scope and is audited with it as the actor.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::api::{Shared, failed, reply};
use crate::ctl::args::{BudgetCmd, BudgetScope, LimitCmd, OverrideCmd, ScopeArgs};
use crate::ctl::{billing, policy, prober};

#[derive(Deserialize)]
pub(super) struct Ejection {
    endpoint: String,
    #[serde(default = "five_minutes")]
    seconds: u32,
    #[serde(default)]
    reason: String,
}

fn five_minutes() -> u32 {
    300
}

pub(super) async fn eject(
    State(c): Shared,
    headers: HeaderMap,
    body: axum::Json<Ejection>,
) -> Response {
    reply(
        async {
            let (_, ctx) = c.admin(&headers).await?;
            let e = body.0;
            Ok(prober::eject(&ctx, e.endpoint, e.seconds, e.reason)
                .await
                .map_err(failed)?
                .json)
        }
        .await,
    )
}

pub(super) async fn restore(
    State(c): Shared,
    headers: HeaderMap,
    body: axum::Json<Ejection>,
) -> Response {
    reply(
        async {
            let (_, ctx) = c.admin(&headers).await?;
            let e = body.0;
            Ok(prober::restore(&ctx, e.endpoint, e.reason)
                .await
                .map_err(failed)?
                .json)
        }
        .await,
    )
}

#[derive(Deserialize)]
pub(super) struct BudgetChange {
    org: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    workflow: Option<String>,
    period: String,
    #[serde(default)]
    limit: String,
    #[serde(default)]
    soft: bool,
    #[serde(default)]
    reason: String,
}

impl BudgetChange {
    fn scope(&self) -> BudgetScope {
        let some = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        BudgetScope {
            who: ScopeArgs {
                org: self.org.clone(),
                key: some(&self.key),
                workflow: some(&self.workflow),
                reason: self.reason.clone(),
            },
            period: self.period.clone(),
        }
    }
}

pub(super) async fn set_budget(
    State(c): Shared,
    headers: HeaderMap,
    body: axum::Json<BudgetChange>,
) -> Response {
    reply(
        async {
            let (_, ctx) = c.admin(&headers).await?;
            let cmd = BudgetCmd::Set {
                scope: body.scope(),
                limit: body.limit.clone(),
                soft: body.soft,
                alerts: vec![],
            };
            Ok(billing::change_budget(&ctx, cmd)
                .await
                .map_err(failed)?
                .json)
        }
        .await,
    )
}

pub(super) async fn remove_budget(
    State(c): Shared,
    headers: HeaderMap,
    body: axum::Json<BudgetChange>,
) -> Response {
    reply(
        async {
            let (_, ctx) = c.admin(&headers).await?;
            let cmd = BudgetCmd::Remove {
                scope: body.scope(),
            };
            Ok(billing::change_budget(&ctx, cmd)
                .await
                .map_err(failed)?
                .json)
        }
        .await,
    )
}

#[derive(Deserialize)]
pub(super) struct OverrideRemoval {
    id: String,
    #[serde(default)]
    reason: String,
}

pub(super) async fn remove_override(
    State(c): Shared,
    headers: HeaderMap,
    body: axum::Json<OverrideRemoval>,
) -> Response {
    reply(
        async {
            let (_, ctx) = c.admin(&headers).await?;
            let cmd = OverrideCmd::Remove {
                id: body.id.clone(),
                reason: body.reason.clone(),
            };
            Ok(policy::overrides(&ctx, cmd).await.map_err(failed)?.json)
        }
        .await,
    )
}

#[derive(Deserialize)]
pub(super) struct LimitChange {
    org: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    workflow: Option<String>,
    #[serde(default)]
    rpm: Option<u64>,
    #[serde(default)]
    tpm: Option<u64>,
    #[serde(default)]
    concurrent: Option<u64>,
    #[serde(default)]
    reason: String,
}

impl LimitChange {
    fn scope(&self) -> ScopeArgs {
        let some = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        ScopeArgs {
            org: self.org.clone(),
            key: some(&self.key),
            workflow: some(&self.workflow),
            reason: self.reason.clone(),
        }
    }
}

pub(super) async fn set_limits(
    State(c): Shared,
    headers: HeaderMap,
    body: axum::Json<LimitChange>,
) -> Response {
    reply(
        async {
            let (_, ctx) = c.admin(&headers).await?;
            let cmd = LimitCmd::Set {
                scope: body.scope(),
                rpm: body.rpm,
                tpm: body.tpm,
                concurrent: body.concurrent,
            };
            Ok(crate::ctl::limits::change(&ctx, cmd)
                .await
                .map_err(failed)?
                .json)
        }
        .await,
    )
}

pub(super) async fn remove_limits(
    State(c): Shared,
    headers: HeaderMap,
    body: axum::Json<LimitChange>,
) -> Response {
    reply(
        async {
            let (_, ctx) = c.admin(&headers).await?;
            let cmd = LimitCmd::Remove {
                scope: body.scope(),
            };
            Ok(crate::ctl::limits::change(&ctx, cmd)
                .await
                .map_err(failed)?
                .json)
        }
        .await,
    )
}
