//! The control API: read what each provider received, change its faults at run time, reset.
//!
//! | method | path | body / answer |
//! |---|---|---|
//! | GET | `/healthz` | `ok` |
//! | GET | `/providers` | `[{id, format, addr, base_url, faults}]` |
//! | GET | `/providers/{id}/stats` | counters and the latest requests |
//! | GET / PUT | `/providers/{id}/faults` | the fault profile (PUT replaces it; absent fields are off) |
//! | POST | `/reset` | zero every counter; `?faults=config` also restores configured faults |

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use switchyard_config::Validate;
use switchyard_config::catalog::WireFormat;

use crate::config::Faults;
use crate::state::{ProviderState, Stats};

/// A provider as the control API lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// Id.
    pub id: String,
    /// Wire format.
    pub format: WireFormat,
    /// Bound address.
    pub addr: std::net::SocketAddr,
    /// Base URL to put in a catalog.
    pub base_url: String,
    /// Faults in force.
    pub faults: Faults,
}

/// Shared by the control handlers.
#[derive(Clone)]
pub struct Control {
    /// Providers by id, with their bound addresses.
    pub providers: Arc<BTreeMap<String, (Arc<ProviderState>, std::net::SocketAddr)>>,
}

/// The control routes.
pub fn router(control: Control) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/providers", get(list))
        .route("/providers/{id}/stats", get(stats))
        .route("/providers/{id}/faults", get(get_faults).put(put_faults))
        .route("/reset", post(reset))
        .with_state(control)
}

/// The base URL clients should use for a provider at `addr`.
pub fn base_url(format: WireFormat, addr: std::net::SocketAddr) -> String {
    match format {
        WireFormat::Openai => format!("http://{addr}/v1"),
        _ => format!("http://{addr}"),
    }
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"error": format!("no simulated provider `{id}`")})),
    )
        .into_response()
}

async fn list(State(c): State<Control>) -> Json<Vec<ProviderInfo>> {
    Json(
        c.providers
            .values()
            .map(|(p, addr)| ProviderInfo {
                id: p.config.id.clone(),
                format: p.config.format,
                addr: *addr,
                base_url: base_url(p.config.format, *addr),
                faults: (*p.faults()).clone(),
            })
            .collect(),
    )
}

async fn stats(State(c): State<Control>, Path(id): Path<String>) -> Result<Json<Stats>, Response> {
    match c.providers.get(&id) {
        Some((p, _)) => Ok(Json(p.stats())),
        None => Err(not_found(&id)),
    }
}

async fn get_faults(
    State(c): State<Control>,
    Path(id): Path<String>,
) -> Result<Json<Faults>, Response> {
    match c.providers.get(&id) {
        Some((p, _)) => Ok(Json((*p.faults()).clone())),
        None => Err(not_found(&id)),
    }
}

async fn put_faults(
    State(c): State<Control>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Faults>, Response> {
    let Some((p, _)) = c.providers.get(&id) else {
        return Err(not_found(&id));
    };
    let faults: Faults = serde_json::from_slice(&body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": format!("invalid faults: {e}")})),
        )
            .into_response()
    })?;
    let mut v = switchyard_config::Validator::new();
    faults.validate(&mut v);
    if !v.is_ok() {
        let errors: Vec<String> = v.into_errors().iter().map(|e| e.to_string()).collect();
        return Err((
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "invalid faults", "errors": errors})),
        )
            .into_response());
    }
    tracing::info!(provider = %id, "faults replaced");
    p.set_faults(faults.clone());
    Ok(Json(faults))
}

#[derive(Deserialize)]
struct ResetQuery {
    faults: Option<String>,
}

async fn reset(State(c): State<Control>, Query(q): Query<ResetQuery>) -> StatusCode {
    for (p, _) in c.providers.values() {
        p.reset_stats();
        if q.faults.as_deref() == Some("config") {
            p.set_faults(p.config.faults.clone());
        }
    }
    StatusCode::NO_CONTENT
}
