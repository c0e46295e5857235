//! The console's routes: the page and its assets, and `/api/…`, each the JSON of the `ctl`
//! command that does the same. A signed-in key reads its own org (budgets, usage, requests) and
//! the endpoints; a key with the `admin` scope reads every org, the overrides and the audit
//! trail, and changes things.
//! Errors are `{"error": "…"}`: 401 without a valid key, 403 for a change without the admin scope,
//! 400 for bad input, 502 when a service failed (the message says which and what to check).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router as Axum;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Backends;
use super::auth::{Gate, Operator, Refusal};
use super::changes;
use crate::ctl::args::{GroupBy, OverrideCmd};
use crate::ctl::client::Ctx;
use crate::ctl::{billing, policy, prober, requests};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// The console's state.
pub struct Console {
    backends: Backends,
    gate: Gate,
}

impl Console {
    pub fn new(backends: Backends) -> Self {
        Console {
            backends,
            gate: Gate::default(),
        }
    }

    fn ctx(&self, actor: String) -> Ctx {
        crate::ctl::context(self.backends.addrs.clone(), self.backends.timeout, actor)
    }

    /// The operator and the services, acting as them.
    async fn signed_in(&self, headers: &HeaderMap) -> Result<(Operator, Ctx), Refusal> {
        let op = self
            .gate
            .operator(&self.ctx("console".into()), headers)
            .await?;
        let ctx = self.ctx(op.actor());
        Ok((op, ctx))
    }

    /// As [`Console::signed_in`], for a change or what only admins read.
    pub(super) async fn admin(&self, headers: &HeaderMap) -> Result<(Operator, Ctx), Refusal> {
        let (op, ctx) = self.signed_in(headers).await?;
        if !op.admin {
            return Err((
                StatusCode::FORBIDDEN,
                format!(
                    "key {} is read-only here: changes need a key with the `admin` scope",
                    op.key_id
                ),
            ));
        }
        Ok((op, ctx))
    }
}

pub(super) type Shared = State<Arc<Console>>;

/// Whose data `op` reads: an admin any org's (`None`: every org), anyone else their own only.
fn org_for(op: &Operator, asked: Option<String>) -> Result<Option<String>, Refusal> {
    match asked.filter(|o| !o.is_empty()) {
        Some(o) if o != op.org && !op.admin => Err((
            StatusCode::FORBIDDEN,
            format!(
                "key {} reads org {} only: other orgs need the `admin` scope",
                op.key_id, op.org
            ),
        )),
        Some(o) => Ok(Some(o)),
        None if op.admin => Ok(None),
        None => Ok(Some(op.org.clone())),
    }
}

/// A `ctl` failure: bad input (400) unless a service failed (502, its lines start `error:`).
pub(super) fn failed(message: String) -> Refusal {
    if message.starts_with("error:") {
        (StatusCode::BAD_GATEWAY, message)
    } else {
        (StatusCode::BAD_REQUEST, message)
    }
}

pub(super) fn reply(result: Result<Value, Refusal>) -> Response {
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err((status, message)) => (status, axum::Json(json!({ "error": message }))).into_response(),
    }
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The routes.
pub fn routes(console: Arc<Console>) -> Axum {
    Axum::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/api/me", get(me))
        .route("/api/overview", get(overview))
        .route("/api/endpoints", get(endpoints))
        .route("/api/endpoints/eject", post(changes::eject))
        .route("/api/endpoints/restore", post(changes::restore))
        .route("/api/budgets", get(budgets))
        .route("/api/budgets/set", post(changes::set_budget))
        .route("/api/budgets/remove", post(changes::remove_budget))
        .route("/api/limits/set", post(changes::set_limits))
        .route("/api/limits/remove", post(changes::remove_limits))
        .route("/api/usage", get(usage))
        .route("/api/requests", get(list_requests))
        .route("/api/requests/{id}", get(one_request))
        .route("/api/explain", post(explain))
        .route("/api/overrides", get(overrides))
        .route("/api/overrides/remove", post(changes::remove_override))
        .route("/api/audit", get(audit))
        .with_state(console)
}

async fn me(State(c): Shared, headers: HeaderMap) -> Response {
    reply(c.signed_in(&headers).await.map(|(op, _)| {
        json!({"org": op.org, "key_id": op.key_id, "prefix": op.prefix, "admin": op.admin})
    }))
}

/// Today's cost and requests per workflow (billing), and the last hour's success and fallback
/// rates (the request records).
async fn overview(State(c): Shared, headers: HeaderMap) -> Response {
    reply(
        async {
            let (op, ctx) = c.signed_in(&headers).await?;
            let today = switchyard_state::day_of(switchyard_core::clock::now_ms());
            let usage = billing::usage(
                &ctx,
                org_for(&op, None)?,
                GroupBy::Workflow,
                Some(today.clone()),
                Some(today.clone()),
            )
            .await
            .map_err(failed)?
            .json;
            let selection = requests::Selection {
                org: None,
                outcome: None,
                endpoint: None,
                since: "1h".into(),
                limit: 1000,
            };
            let recent = requests::list(&ctx, &op.key, selection)
                .await
                .map_err(failed)?
                .json;
            let recent = recent.as_array().cloned().unwrap_or_default();
            let count = |f: &dyn Fn(&Value) -> bool| recent.iter().filter(|r| f(r)).count();
            let ok = count(&|r| r["outcome"] == "ok");
            let fell_back = count(&|r| r["fallbacks"].as_u64().unwrap_or(0) > 0);
            let mut per_workflow: HashMap<String, (u64, u64, u64)> = HashMap::new();
            for r in &recent {
                let w = per_workflow
                    .entry(r["workflow"].as_str().unwrap_or("-").to_string())
                    .or_default();
                w.0 += 1;
                w.1 += u64::from(r["outcome"] == "ok");
                w.2 += u64::from(r["fallbacks"].as_u64().unwrap_or(0) > 0);
            }
            let workflows: Vec<Value> = per_workflow
                .into_iter()
                .map(|(w, (n, ok, fb))| json!({"workflow": w, "requests": n, "ok": ok, "fallbacks": fb}))
                .collect();
            Ok(json!({
                "day": today,
                "usage_today": usage["rows"],
                "last_hour": {
                    "requests": recent.len(),
                    "ok": ok,
                    "fell_back": fell_back,
                    "workflows": workflows,
                },
            }))
        }
        .await,
    )
}

async fn endpoints(State(c): Shared, headers: HeaderMap) -> Response {
    reply(
        async {
            let (_, ctx) = c.signed_in(&headers).await?;
            Ok(prober::health(&ctx).await.map_err(failed)?.json)
        }
        .await,
    )
}

async fn budgets(State(c): Shared, headers: HeaderMap) -> Response {
    reply(
        async {
            let (op, ctx) = c.signed_in(&headers).await?;
            let org = org_for(&op, None)?;
            let budgets = billing::budgets(&ctx, org.clone())
                .await
                .map_err(failed)?
                .json;
            let limits = crate::ctl::limits::list(&ctx, org)
                .await
                .map_err(failed)?
                .json;
            Ok(json!({"budgets": budgets["budgets"], "limits": limits}))
        }
        .await,
    )
}

async fn usage(
    State(c): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    reply(
        async {
            let (op, ctx) = c.signed_in(&headers).await?;
            let asked = q.get("by").map_or("day", String::as_str);
            // The values `ctl usage --by` takes, parsed as it parses them.
            let by = <GroupBy as clap::ValueEnum>::from_str(asked, false).map_err(|_| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("`by` is day, model, provider, key or workflow, not `{asked}`"),
                )
            })?;
            let org = org_for(&op, q.get("org").cloned())?;
            Ok(billing::usage(&ctx, org, by, None, None)
                .await
                .map_err(failed)?
                .json)
        }
        .await,
    )
}

async fn list_requests(
    State(c): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    reply(
        async {
            let (op, ctx) = c.signed_in(&headers).await?;
            let some = |k: &str| q.get(k).cloned().filter(|v| !v.is_empty());
            let selection = requests::Selection {
                org: some("org"),
                outcome: some("outcome"),
                endpoint: some("endpoint"),
                since: some("since").unwrap_or_else(|| "1h".into()),
                limit: some("limit").and_then(|l| l.parse().ok()).unwrap_or(100),
            };
            Ok(requests::list(&ctx, &op.key, selection)
                .await
                .map_err(failed)?
                .json)
        }
        .await,
    )
}

async fn one_request(
    State(c): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    reply(
        async {
            let (op, ctx) = c.signed_in(&headers).await?;
            let org = q.get("org").cloned().filter(|o| !o.is_empty());
            Ok(requests::one(&ctx, &op.key, id, org)
                .await
                .map_err(failed)?
                .json)
        }
        .await,
    )
}

#[derive(Deserialize)]
struct ExplainBody {
    request: Value,
    #[serde(default)]
    seed: Option<u64>,
}

async fn explain(State(c): Shared, headers: HeaderMap, body: axum::Json<ExplainBody>) -> Response {
    reply(
        async {
            let (op, ctx) = c.signed_in(&headers).await?;
            let request = body.request.to_string();
            Ok(
                crate::ctl::router::explain_body(&ctx, request, &op.key, body.seed)
                    .await
                    .map_err(failed)?
                    .json,
            )
        }
        .await,
    )
}

async fn overrides(State(c): Shared, headers: HeaderMap) -> Response {
    reply(
        async {
            let (_, ctx) = c.admin(&headers).await?;
            Ok(policy::overrides(&ctx, OverrideCmd::List)
                .await
                .map_err(failed)?
                .json)
        }
        .await,
    )
}

async fn audit(State(c): Shared, headers: HeaderMap) -> Response {
    reply(
        async {
            let (_, ctx) = c.admin(&headers).await?;
            Ok(policy::audit(&ctx, 200).await.map_err(failed)?.json)
        }
        .await,
    )
}
