//! The HTTP API's guards, before any handler: a request head larger than the limit is a 431, a
//! body that does not arrive within its deadline a 408 (and one too large a 413), both closing
//! the connection; an unknown path is a 404 and a wrong method a 405. Every one of them answers
//! in the error envelope of the API its path belongs to (Anthropic's under `/v1/messages`,
//! OpenAI's elsewhere) and leaves the request log line, as handled requests do.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use crate::edge::Api;
use crate::listener::HttpLimits;

/// Largest request body accepted.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// The API whose error envelope a path answers in.
pub fn api_of(path: &str) -> Api {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if under("/v1/messages") {
        Api::Messages
    } else if under("/v1/responses") {
        Api::Responses
    } else if under("/v1/embeddings") {
        Api::Embeddings
    } else {
        Api::Chat
    }
}

/// An answer in `api`'s envelope for a request refused before any handler; `close` ends the
/// connection (its rest was not read).
pub fn refuse(api: Api, status: StatusCode, code: &str, message: String, close: bool) -> Response {
    crate::observe::refused(api, code, status.as_u16(), None);
    let body = match api {
        Api::Messages => {
            let kind = match status {
                StatusCode::NOT_FOUND => "not_found_error",
                StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
                StatusCode::REQUEST_TIMEOUT => "timeout_error",
                s if s.is_server_error() => "api_error",
                _ => "invalid_request_error",
            };
            switchyard_apis::messages::envelope(kind, &message, code, serde_json::Map::new())
        }
        Api::Chat | Api::Responses | Api::Embeddings | Api::Grpc => {
            let kind = if status.is_server_error() {
                "server_error"
            } else {
                "invalid_request_error"
            };
            json!({"error": {"message": message, "type": kind, "code": code, "metadata": {}}})
        }
    };
    let mut resp = (status, axum::Json(body)).into_response();
    if close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The head-size and body-deadline guard.
pub async fn guard(State(limits): State<HttpLimits>, req: Request, next: Next) -> Response {
    let api = api_of(req.uri().path());
    let head = req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head > limits.max_header_bytes {
        return refuse(
            api,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_header_fields_too_large",
            format!(
                "the request line and headers are larger than {} bytes",
                limits.max_header_bytes
            ),
            true,
        );
    }
    let (parts, body) = req.into_parts();
    let read = Limited::new(body, MAX_BODY).collect();
    let bytes: Bytes = match tokio::time::timeout(limits.body_read_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return refuse(
                api,
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!("request body larger than {MAX_BODY} bytes"),
                true,
            );
        }
        Ok(Err(e)) => {
            return refuse(
                api,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("request body unreadable: {e}"),
                true,
            );
        }
        Err(_) => {
            return refuse(
                api,
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {:?}",
                    limits.body_read_timeout
                ),
                true,
            );
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// An unknown path.
pub async fn not_found(req: Request) -> Response {
    refuse(
        api_of(req.uri().path()),
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such route: {} {}", req.method(), req.uri().path()),
        false,
    )
}

/// A known path with another method.
pub async fn method_not_allowed(req: Request) -> Response {
    refuse(
        api_of(req.uri().path()),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
        false,
    )
}
