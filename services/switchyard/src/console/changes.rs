//! The console's changes: eject and restore an endpoint, set and remove a budget or a scope's
//! client limits, remove an override. Each needs a key with the `admin` scope, is made by the
//! `ctl` command that does the same, and is audited with the key as the actor.

use std::future::Future;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::api::{Shared, failed, reply};
use crate::ctl::Out;
use crate::ctl::args::{BudgetCmd, BudgetScope, LimitCmd, OverrideCmd, ScopeArgs};
use crate::ctl::client::Ctx;
use crate::ctl::{billing, limits, policy, prober};

/// Runs `change` as the signed-in admin: what its `ctl` command prints with `--json`.
async fn as_admin<F, Fut>(State(c): Shared, headers: HeaderMap, change: F) -> Response
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<Out, String>>,
{
    reply(
        async {
            let (_, ctx) = c.admin(&headers).await?;
            Ok(change(ctx).await.map_err(failed)?.json)
        }
        .await,
    )
}

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

pub(super) async fn eject(c: Shared, headers: HeaderMap, e: axum::Json<Ejection>) -> Response {
    let e = e.0;
    as_admin(c, headers, |ctx| async move {
        prober::eject(&ctx, e.endpoint, e.seconds, e.reason).await
    })
    .await
}

pub(super) async fn restore(c: Shared, headers: HeaderMap, e: axum::Json<Ejection>) -> Response {
    let e = e.0;
    as_admin(c, headers, |ctx| async move {
        prober::restore(&ctx, e.endpoint, e.reason).await
    })
    .await
}

/// Whose budget or limits: an org, or one of its keys or workflows, and why.
#[derive(Deserialize)]
pub(super) struct Who {
    org: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    workflow: Option<String>,
    #[serde(default)]
    reason: String,
}

impl Who {
    fn scope(self) -> ScopeArgs {
        let given = |s: Option<String>| s.filter(|s| !s.is_empty());
        ScopeArgs {
            org: self.org,
            key: given(self.key),
            workflow: given(self.workflow),
            reason: self.reason,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct BudgetChange {
    #[serde(flatten)]
    who: Who,
    period: String,
    #[serde(default)]
    limit: String,
    #[serde(default)]
    soft: bool,
}

impl BudgetChange {
    fn scope(self) -> (BudgetScope, String, bool) {
        let scope = BudgetScope {
            who: self.who.scope(),
            period: self.period,
        };
        (scope, self.limit, self.soft)
    }
}

pub(super) async fn set_budget(
    c: Shared,
    headers: HeaderMap,
    b: axum::Json<BudgetChange>,
) -> Response {
    let (scope, limit, soft) = b.0.scope();
    let cmd = BudgetCmd::Set {
        scope,
        limit,
        soft,
        alerts: vec![],
    };
    as_admin(c, headers, |ctx| async move {
        billing::change_budget(&ctx, cmd).await
    })
    .await
}

pub(super) async fn remove_budget(
    c: Shared,
    headers: HeaderMap,
    b: axum::Json<BudgetChange>,
) -> Response {
    let cmd = BudgetCmd::Remove {
        scope: b.0.scope().0,
    };
    as_admin(c, headers, |ctx| async move {
        billing::change_budget(&ctx, cmd).await
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct LimitChange {
    #[serde(flatten)]
    who: Who,
    #[serde(default)]
    rpm: Option<u64>,
    #[serde(default)]
    tpm: Option<u64>,
    #[serde(default)]
    concurrent: Option<u64>,
}

pub(super) async fn set_limits(
    c: Shared,
    headers: HeaderMap,
    l: axum::Json<LimitChange>,
) -> Response {
    let l = l.0;
    let cmd = LimitCmd::Set {
        scope: l.who.scope(),
        rpm: l.rpm,
        tpm: l.tpm,
        concurrent: l.concurrent,
    };
    as_admin(
        c,
        headers,
        |ctx| async move { limits::change(&ctx, cmd).await },
    )
    .await
}

pub(super) async fn remove_limits(
    c: Shared,
    headers: HeaderMap,
    l: axum::Json<LimitChange>,
) -> Response {
    let cmd = LimitCmd::Remove {
        scope: l.0.who.scope(),
    };
    as_admin(
        c,
        headers,
        |ctx| async move { limits::change(&ctx, cmd).await },
    )
    .await
}

#[derive(Deserialize)]
pub(super) struct OverrideRemoval {
    id: String,
    #[serde(default)]
    reason: String,
}

pub(super) async fn remove_override(
    c: Shared,
    headers: HeaderMap,
    o: axum::Json<OverrideRemoval>,
) -> Response {
    let o = o.0;
    let cmd = OverrideCmd::Remove {
        id: o.id,
        reason: o.reason,
    };
    as_admin(c, headers, |ctx| async move {
        policy::overrides(&ctx, cmd).await
    })
    .await
}
