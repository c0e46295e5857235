//! The HTTP API: the OpenAI-compatible `POST /v1/chat/completions` (JSON and SSE) and
//! `GET /v1/models`, with OpenRouter-style routing fields in the request and the served model,
//! provider, `usage.cost` and the routing trace in the response, errors in the OpenAI envelope;
//! and beside it Anthropic's Messages API ([`crate::messages`]) and OpenAI's Responses API
//! ([`crate::responses`]), and embeddings ([`crate::embeddings`]). Every reply of an admitted request carries `x-switchyard-request-id`.

use std::sync::Arc;

use axum::Router as Axum;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use switchyard_core::{ChatChunk, ChatRequest, Error, Usage};

use crate::admission::Admitted;
use crate::edge::{Api, Incoming};
use crate::engine::AttemptTrace;
use crate::handler::{Failure, Reply, Router, Served};
use crate::listener::HttpLimits;
use crate::stream::{StreamEvent, StreamSession};
use crate::trace::{Routing, WithRouting};

/// The HTTP routes, behind the guards of [`crate::http_guard`] with `limits`.
pub fn routes(router: Arc<Router>, limits: HttpLimits) -> Axum {
    Axum::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/v1/models/{*path}", get(crate::model_endpoints::get))
        .route("/v1/routing/explain", post(explain))
        .route("/v1/messages", post(crate::messages::create))
        .route(
            "/v1/messages/count_tokens",
            post(crate::messages::count_tokens),
        )
        .route("/v1/responses", post(crate::responses::create))
        .route("/v1/embeddings", post(crate::embeddings::create))
        .route("/v1/generations/{id}", get(crate::generations::get))
        .route(
            "/v1/responses/{id}",
            get(crate::responses::get).delete(crate::responses::delete),
        )
        .fallback(crate::http_guard::not_found)
        .method_not_allowed_fallback(crate::http_guard::method_not_allowed)
        // The guard has read the body (within MAX_BODY and its deadline) before any handler.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            limits,
            crate::http_guard::guard,
        ))
        .with_state(router)
}

/// A request of `api` refused before it was routed (unauthenticated, unreadable, refused by
/// admission): its log line, with the caller's key once known, then the error as `render` puts
/// it in the API's envelope.
pub(crate) fn refused_in(
    api: Api,
    e: &Error,
    key: Option<&switchyard_policy_model::snapshot::KeyRecord>,
    render: fn(&Error) -> Response,
) -> Response {
    crate::observe::refused(api, e.class.as_str(), e.http_status().as_u16(), key);
    render(e)
}

pub(crate) fn refused(e: &Error) -> Response {
    refused_in(Api::Chat, e, None, error_response)
}

/// An error as an HTTP response.
pub fn error_response(e: &Error) -> Response {
    error_in(e, e.openai_body())
}

/// An error's status and Retry-After with `body` (the API's envelope for it).
pub(crate) fn error_in(e: &Error, body: Value) -> Response {
    let mut resp = (e.http_status(), axum::Json(body)).into_response();
    if let Some(after) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&(after.as_secs_f64().ceil() as u64).to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// The header naming the request id on every reply of an admitted request.
pub const REQUEST_ID: &str = "x-switchyard-request-id";

/// Marks `resp` with the request id.
pub(crate) fn with_request_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

/// What the request carries besides its body.
pub(crate) fn incoming(api: Api, headers: &HeaderMap) -> Incoming {
    Incoming::read(api, |name| headers.get(name)?.to_str().ok())
}

/// A failure as an HTTP response in an API's envelope (`render`), with the routing trace when
/// attempts were made.
pub(crate) fn failure_in(f: Failure, render: impl Fn(&Error) -> Response) -> Response {
    match f.routing {
        Some((a, trace)) => with_request_id(
            render(&f.error.with_metadata("routing", trace_json(&a, &trace))),
            &a.id,
        ),
        None => render(&f.error),
    }
}

fn failure_response(f: Failure) -> Response {
    failure_in(f, error_response)
}

/// A stored reply (idempotency): the text as JSON, marked when replayed.
pub(crate) fn stored(text: String, replayed: bool) -> Response {
    let mut resp = Response::new(Body::from(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if replayed {
        resp.headers_mut()
            .insert(crate::edge::REPLAYED, HeaderValue::from_static("true"));
    }
    resp
}

/// The routing trace of a request: plan, attempts, exclusions, seed and versions.
pub(crate) fn trace_json(a: &Admitted, trace: &[AttemptTrace]) -> Value {
    Routing::of(a, trace).to_value()
}

/// A reply with its routing trace, as JSON text.
fn reply_body(s: &Served) -> Vec<u8> {
    WithRouting {
        body: &s.response,
        routing: Routing::of(&s.admitted, &s.trace),
    }
    .to_vec()
}

/// A JSON reply of an admitted request.
fn json_reply(body: Vec<u8>, id: &str) -> Response {
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    with_request_id(resp, id)
}

/// Parses a chat completion request body; errors name the field they are about.
pub(crate) fn parse(body: &[u8]) -> Result<ChatRequest, Error> {
    parse_as(body, "a chat completion request")
}

/// Parses a request body of an API whose request is `what`; errors name the field.
pub(crate) fn parse_as<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, Error> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Error::invalid(format!(
            "the request body must be a JSON object: {what}"
        )));
    }
    // Tracking the path costs on every field, so it is done only to explain a body that failed.
    if let Ok(parsed) = T::deserialize(&mut serde_json::Deserializer::from_slice(body)) {
        return Ok(parsed);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        Error::invalid(if path == "." || path.is_empty() {
            format!("invalid request body: {inner}")
        } else {
            format!("invalid request body at `{path}`: {inner}")
        })
    })
}

/// `GET /v1/models[?workflow=ID]`: what the caller's org (that workflow, when named; the
/// `x-switchyard-workflow` header works too) may use (see [`crate::models`]).
async fn models(
    State(r): State<Arc<Router>>,
    headers: HeaderMap,
    query: axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let caller = match r.authenticate(&incoming(Api::Chat, &headers)) {
        Ok(c) => c,
        Err(e) => return refused(&e),
    };
    let workflow = query.get("workflow").cloned().or_else(|| {
        headers
            .get("x-switchyard-workflow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    match crate::models::listing(&r.catalog().routing, &caller, workflow.as_deref()) {
        Ok(listed) => axum::Json(crate::models::json(&listed)).into_response(),
        Err(e) => error_response(&e),
    }
}

/// `POST /v1/routing/explain`: a chat request's route without running it (see
/// [`Router::explain`]); the route seed header works as for chat completions.
async fn explain(State(r): State<Arc<Router>>, headers: HeaderMap, body: Bytes) -> Response {
    let incoming = incoming(Api::Chat, &headers);
    let result = r.authenticate(&incoming).and_then(|caller| {
        let req = parse(&body)?;
        r.explain(&caller, &incoming, &req)
    });
    match result {
        Ok(x) => axum::Json(crate::explain::json(&x.to_proto())).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn chat(state: State<Arc<Router>>, headers: HeaderMap, body: Bytes) -> Response {
    let span = crate::edge::request_span(Api::Chat);
    tracing::Instrument::instrument(chat_inner(state, headers, body), span).await
}

async fn chat_inner(State(r): State<Arc<Router>>, headers: HeaderMap, body: Bytes) -> Response {
    let incoming = incoming(Api::Chat, &headers);
    let caller = match r.authenticate(&incoming) {
        Ok(v) => v,
        Err(e) => return refused(&e),
    };
    let req: ChatRequest = match parse(&body) {
        Ok(req) => req,
        Err(e) => return refused_in(Api::Chat, &e, Some(&caller.key), error_response),
    };
    if req.stream {
        let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
        return match r.stream(caller, &incoming, req).await {
            Ok(session) => stream(session, include_usage),
            // Nothing was sent yet: an ordinary error response.
            Err(f) => failure_response(f),
        };
    }
    match r
        .complete(caller, &incoming, req, |s| {
            String::from_utf8(reply_body(s)).unwrap_or_default()
        })
        .await
    {
        Ok(Reply::Served(s)) => json_reply(reply_body(&s), &s.admitted.id),
        Ok(Reply::Stored { text, replayed }) => stored(text, replayed),
        Err(f) => failure_response(f),
    }
}

fn sse(v: &impl serde::Serialize) -> Bytes {
    let mut out = b"data: ".to_vec();
    if serde_json::to_writer(&mut out, v).is_err() {
        out.truncate(6);
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// A chunk as an SSE event; the usage-only chunk (and usage on others) only when the client
/// asked for it with `stream_options.include_usage`.
fn render(mut chunk: ChatChunk, include_usage: bool) -> Option<Bytes> {
    if !include_usage {
        if chunk.choices.is_empty() {
            return None;
        }
        chunk.usage = None;
    }
    Some(sse(&chunk))
}

fn stream(session: StreamSession, include_usage: bool) -> Response {
    let id = session.admitted.id.clone();
    let body = futures::stream::unfold(session, move |mut s| async move {
        loop {
            let bytes = match s.next().await? {
                StreamEvent::Chunk(chunk) => match render(chunk, include_usage) {
                    Some(bytes) => bytes,
                    None => continue,
                },
                // The routing trace (and what validation found), then the end.
                StreamEvent::Done(_) => {
                    let routing = trace_json(&s.admitted, &s.trace);
                    let last = json!({"object": "chat.completion.chunk", "choices": [], "routing": routing});
                    let mut out = sse(&last).to_vec();
                    out.extend_from_slice(b"data: [DONE]\n\n");
                    Bytes::from(out)
                }
                // After the first chunk there is no fallback: an explicit error event ends the
                // stream, never a silent clean end. What was generated is billed.
                StreamEvent::Failed(error) => {
                    let mut body = error.openai_body();
                    body["error"]["metadata"]["routing"] = trace_json(&s.admitted, &s.trace);
                    sse(&body)
                }
            };
            return Some((Ok::<Bytes, std::convert::Infallible>(bytes), s));
        }
    });
    event_stream(Body::from_stream(body), &id)
}

/// A `text/event-stream` response of an admitted request.
pub(crate) fn event_stream(body: Body, id: &str) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    with_request_id(resp, id)
}

/// An API's encoding of a committed stream as named server-sent events (Messages, Responses).
pub(crate) trait EventEncoder: Send + 'static {
    /// The events for one chunk.
    fn chunk(&mut self, chunk: &ChatChunk) -> Vec<(String, Value)>;
    /// The events that end a finished stream, given its settled usage and routing trace.
    fn done(
        &mut self,
        usage: &Usage,
        routing: Value,
    ) -> impl std::future::Future<Output = Vec<(String, Value)>> + Send;
    /// The events that end a stream failed after its first event.
    fn failed(&mut self, error: Error, routing: Value) -> Vec<(String, Value)>;
}

/// A committed stream encoded by `encoder`: after the first event there is no fallback, so a
/// failure ends the stream with the API's error event (what was generated is billed).
pub(crate) fn encoded_stream<E: EventEncoder>(session: StreamSession, encoder: E) -> Response {
    let id = session.admitted.id.clone();
    let body = futures::stream::unfold(
        (session, encoder, false),
        |(mut s, mut enc, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let (events, last) = match s.next().await? {
                    StreamEvent::Chunk(chunk) => (enc.chunk(&chunk), false),
                    StreamEvent::Done(usage) => {
                        let routing = trace_json(&s.admitted, &s.trace);
                        (enc.done(&usage, routing).await, true)
                    }
                    StreamEvent::Failed(error) => {
                        let routing = trace_json(&s.admitted, &s.trace);
                        (enc.failed(error, routing), true)
                    }
                };
                if events.is_empty() {
                    continue;
                }
                let mut out = String::new();
                for (name, data) in &events {
                    out.push_str(&switchyard_apis::sse(name, data));
                }
                return Some((
                    Ok::<Bytes, std::convert::Infallible>(Bytes::from(out)),
                    (s, enc, last),
                ));
            }
        },
    );
    event_stream(Body::from_stream(body), &id)
}
