//! Reading request records back (see [`crate::records`]): `GET /v1/generations/{id}` over HTTP
//! and `GetRequest` / `ListRequests` over gRPC (what `ctl request` and `ctl requests` call).
//! A key reads its own org's records; a key with the `admin` scope reads any org's.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use switchyard_core::{Error, ErrorClass};
use switchyard_state::{RecordQuery, RequestLog, RequestRecord};

use crate::edge::{Api, Caller};
use crate::handler::Router;
use crate::http::{incoming, refused};

/// Most records one listing returns.
pub const MAX_LIST: usize = 1_000;

/// Why a record cannot be read.
#[derive(Debug)]
pub enum Unreadable {
    /// None of the caller's (or, for an admin, of the named org).
    NotFound(String),
    /// The caller asked for another org without the admin scope.
    Forbidden,
    /// The log is unreachable, or this router keeps no records.
    Failed(Error),
}

fn log(r: &Router) -> Result<&Arc<dyn RequestLog>, Unreadable> {
    r.records().ok_or_else(|| {
        Unreadable::Failed(Error::invalid(
            "this router keeps no request records (it runs with --records-ttl-s 0)",
        ))
    })
}

fn unreachable(e: switchyard_state::StateError) -> Unreadable {
    Unreadable::Failed(Error::new(
        ErrorClass::Unavailable,
        format!("the request records are unreachable: {e}"),
    ))
}

/// The org whose records `caller` reads: its own, or (admin only) `org` — every org when an
/// admin names none.
fn org_for(caller: &Caller, org: Option<&str>) -> Result<Option<String>, Unreadable> {
    let own = caller.key.org.as_str();
    match org.filter(|o| !o.is_empty()) {
        Some(o) if o != own && !caller.key.is_admin() => Err(Unreadable::Forbidden),
        Some(o) => Ok(Some(o.to_string())),
        None if caller.key.is_admin() => Ok(None),
        None => Ok(Some(own.to_string())),
    }
}

/// The record of `id` that `caller` may read (`org` as in [`list`]).
pub async fn find(
    r: &Router,
    caller: &Caller,
    org: Option<&str>,
    id: &str,
) -> Result<RequestRecord, Unreadable> {
    let log = log(r)?;
    let org = org_for(caller, org)?;
    log.get(org.as_deref(), id)
        .await
        .map_err(unreachable)?
        .ok_or_else(|| {
            Unreadable::NotFound(format!(
                "no request `{id}` (records are kept for {} s)",
                log.retention().ttl.as_secs()
            ))
        })
}

/// What a listing keeps besides org and time.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The outcome (`ok`, `cancelled` or an error class).
    pub outcome: Option<String>,
    /// Requests with an attempt on this endpoint.
    pub endpoint: Option<String>,
}

impl Filter {
    fn keeps(&self, r: &RequestRecord) -> bool {
        self.outcome.as_ref().is_none_or(|o| &r.outcome == o)
            && self
                .endpoint
                .as_ref()
                .is_none_or(|e| r.attempts.iter().any(|a| &a.endpoint == e))
    }
}

/// The newest records `caller` may read: of its org, or of `org` (every org when `None`) with
/// the admin scope; received since `since_ms`; at most `limit` (up to [`MAX_LIST`]).
pub async fn list(
    r: &Router,
    caller: &Caller,
    org: Option<&str>,
    since_ms: u64,
    filter: Filter,
    limit: usize,
) -> Result<Vec<RequestRecord>, Unreadable> {
    let log = log(r)?;
    let query = RecordQuery {
        org: org_for(caller, org)?,
        since_ms,
        limit: limit.clamp(1, MAX_LIST),
    };
    log.list(&query, &move |rec| filter.keeps(rec))
        .await
        .map_err(unreachable)
}

/// `GET /v1/generations/{id}`: the record of one of the caller's org's requests, as
/// `{"data": …}`; another org's is a 404.
pub async fn get(
    State(r): State<Arc<Router>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let caller = match r.authenticate(&incoming(Api::Chat, &headers)) {
        Ok(c) => c,
        Err(e) => return refused(&e),
    };
    let own = caller.key.org.to_string();
    match find(&r, &caller, Some(&own), &id).await {
        Ok(record) => axum::Json(serde_json::json!({ "data": record })).into_response(),
        Err(Unreadable::NotFound(m)) => {
            crate::http_guard::refuse(Api::Chat, StatusCode::NOT_FOUND, "not_found", m, false)
        }
        Err(Unreadable::Forbidden) => crate::http_guard::refuse(
            Api::Chat,
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no request `{id}`"),
            false,
        ),
        Err(Unreadable::Failed(e)) => crate::http::error_response(&e),
    }
}
