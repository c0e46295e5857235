//! OpenAI's Responses API over HTTP: `POST /v1/responses` (a Response object, or its semantic
//! stream events), `GET` and `DELETE /v1/responses/{id}`. The request is translated to the
//! normalized one ([`switchyard_apis::responses`]) and goes through the same stages as a chat
//! completion. A response with `store` (the default) is kept per org in the state store, with
//! the conversation it ends, so that `previous_response_id` continues it on any router; it is
//! stored before the client sees its last byte. Errors use the OpenAI envelope.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use switchyard_apis::responses::{
    self as wire, Envelope, ResponsesRequest, StreamEncoder, assistant_message,
};
use switchyard_core::{ChatChunk, Error, ErrorClass, Message, Usage};
use switchyard_state::ResponseStore;

use crate::edge::{Api, Caller};
use crate::handler::{Reply, Router, Served};
use crate::http::{
    EventEncoder, encoded_stream, error_response, failure_in, incoming, parse_as, refused_in,
    stored, trace_json, with_request_id,
};
use crate::stream::StreamSession;

const WHAT: &str = "a Responses API request";

/// Refused before routing: the log line, then the error.
fn refused(e: &Error, caller: Option<&Caller>) -> Response {
    refused_in(Api::Responses, e, caller.map(|c| &*c.key), error_response)
}

fn store_unreachable(e: switchyard_state::StateError) -> Error {
    Error::new(
        ErrorClass::Unavailable,
        format!("the response store is unreachable: {e}"),
    )
}

/// Where this response goes once done: the store, the org, how long, and the conversation
/// before its output.
struct Keep {
    store: Arc<dyn ResponseStore>,
    org: String,
    ttl: Duration,
    conversation: Vec<Message>,
}

impl Keep {
    /// Stores `response` with the conversation it ends. A failure is logged and counted: the
    /// reply was served and billed, only its continuation is lost.
    async fn put(&self, response: &Value) {
        let mut conversation = self.conversation.clone();
        conversation.push(assistant_message(response));
        let body = json!({"response": response, "conversation": conversation}).to_string();
        let id = response["id"].as_str().unwrap_or_default();
        if let Err(e) = self.store.put(&self.org, id, &body, self.ttl).await {
            metrics::counter!("switchyard_responses_store_failures_total").increment(1);
            tracing::warn!(response_id = id, error = %e, "storing a response failed");
        }
    }
}

/// The stored record of `id` for the caller's org.
async fn load(r: &Router, caller: &Caller, id: &str) -> Result<Option<Value>, Error> {
    let (store, _) = r.response_store()?;
    let text = store
        .get(caller.key.org.as_str(), id)
        .await
        .map_err(store_unreachable)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

fn envelope(a_id: &str, req: &ResponsesRequest) -> Envelope {
    Envelope {
        id: wire::response_id(a_id),
        created_at: (switchyard_core::clock::now_ms() / 1000) as i64,
        echo: req.echo(),
    }
}

fn reply_json(s: &Served, req: &ResponsesRequest) -> Value {
    let mut body = wire::response_json(&s.response, &envelope(&s.admitted.id, req));
    body["routing"] = trace_json(&s.admitted, &s.trace);
    body
}

/// `POST /v1/responses`.
pub async fn create(state: State<Arc<Router>>, headers: HeaderMap, body: Bytes) -> Response {
    let span = crate::edge::request_span(Api::Responses);
    tracing::Instrument::instrument(create_inner(state, headers, body), span).await
}

async fn create_inner(State(r): State<Arc<Router>>, headers: HeaderMap, body: Bytes) -> Response {
    let incoming = incoming(Api::Responses, &headers);
    let caller = match r.authenticate(&incoming) {
        Ok(v) => v,
        Err(e) => return refused(&e, None),
    };
    let req = match parse_as::<ResponsesRequest>(&body, WHAT) {
        Ok(req) => req,
        Err(e) => return refused(&e, Some(&caller)),
    };
    let prepared = async {
        let input = req.input_messages()?;
        let earlier = match &req.previous_response_id {
            None => Vec::new(),
            Some(id) => {
                let record = load(&r, &caller, id).await?.ok_or_else(|| {
                    Error::invalid(format!(
                        "previous_response_id: no stored response `{id}` (unknown, expired, stored with `store: false`, or another organization's)"
                    ))
                })?;
                serde_json::from_value::<Vec<Message>>(record["conversation"].clone())
                    .map_err(|e| Error::new(ErrorClass::Internal, format!("stored response `{id}` is unreadable: {e}")))?
            }
        };
        let chat = req.to_chat(earlier.clone(), input.clone())?;
        let keep = if req.stores() {
            let (store, ttl) = r.response_store()?;
            let mut conversation = earlier;
            conversation.extend(input);
            Some(Keep {
                store,
                org: caller.key.org.to_string(),
                ttl,
                conversation,
            })
        } else {
            None
        };
        Ok::<_, Error>((chat, keep))
    }
    .await;
    let (chat, keep) = match prepared {
        Ok(v) => v,
        Err(e) => return refused(&e, Some(&caller)),
    };
    if chat.stream {
        return match r.stream(caller, &incoming, chat).await {
            Ok(session) => stream(session, &req, keep),
            Err(f) => failure_in(f, error_response),
        };
    }
    match r
        .complete(caller, &incoming, chat, |s| reply_json(s, &req).to_string())
        .await
    {
        Ok(Reply::Served(s)) => {
            let body = reply_json(&s, &req);
            if let Some(keep) = &keep {
                keep.put(&body).await;
            }
            with_request_id(axum::Json(body).into_response(), &s.admitted.id)
        }
        Ok(Reply::Stored { text, replayed }) => {
            // A fresh idempotent reply is stored as a response; a replay already was.
            if let (Some(keep), false) = (&keep, replayed)
                && let Ok(body) = serde_json::from_str::<Value>(&text)
            {
                keep.put(&body).await;
            }
            stored(text, replayed)
        }
        Err(f) => failure_in(f, error_response),
    }
}

/// The Responses event sequence of a committed stream; the final response is stored (when it
/// is to be) before the client reads `response.completed`, so a follow-up sent on seeing it
/// finds it.
struct Events {
    encoder: StreamEncoder,
    keep: Option<Keep>,
}

fn routing_field(routing: Value) -> Map<String, Value> {
    let mut extra = Map::new();
    extra.insert("routing".into(), routing);
    extra
}

impl EventEncoder for Events {
    fn chunk(&mut self, chunk: &ChatChunk) -> Vec<(String, Value)> {
        self.encoder.chunk(chunk)
    }

    async fn done(&mut self, usage: &Usage, routing: Value) -> Vec<(String, Value)> {
        let (events, response) = self.encoder.done(usage, routing_field(routing));
        if let Some(keep) = &self.keep {
            keep.put(&response).await;
        }
        events
    }

    fn failed(&mut self, error: Error, routing: Value) -> Vec<(String, Value)> {
        self.encoder.failed(&error, routing_field(routing))
    }
}

fn stream(session: StreamSession, req: &ResponsesRequest, keep: Option<Keep>) -> Response {
    let encoder = StreamEncoder::new(envelope(&session.admitted.id, req));
    encoded_stream(session, Events { encoder, keep })
}

fn not_found(id: &str) -> Response {
    crate::http_guard::refuse(
        Api::Responses,
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no stored response `{id}`"),
        false,
    )
}

/// `GET /v1/responses/{id}`: a stored response of the caller's org.
pub async fn get(
    State(r): State<Arc<Router>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let caller = match r.authenticate(&incoming(Api::Responses, &headers)) {
        Ok(v) => v,
        Err(e) => return refused(&e, None),
    };
    match load(&r, &caller, &id).await {
        Ok(Some(record)) => axum::Json(record["response"].clone()).into_response(),
        Ok(None) => not_found(&id),
        Err(e) => refused(&e, Some(&caller)),
    }
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(
    State(r): State<Arc<Router>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let caller = match r.authenticate(&incoming(Api::Responses, &headers)) {
        Ok(v) => v,
        Err(e) => return refused(&e, None),
    };
    let deleted = async {
        let (store, _) = r.response_store()?;
        store
            .delete(caller.key.org.as_str(), &id)
            .await
            .map_err(store_unreachable)
    }
    .await;
    match deleted {
        Ok(true) => {
            axum::Json(json!({"id": id, "object": "response", "deleted": true})).into_response()
        }
        Ok(false) => not_found(&id),
        Err(e) => refused(&e, Some(&caller)),
    }
}
