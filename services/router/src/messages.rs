//! Anthropic's Messages API over HTTP: `POST /v1/messages` (JSON and its SSE event sequence)
//! and `POST /v1/messages/count_tokens`. The key comes as `x-api-key` or `Authorization: Bearer`;
//! `anthropic-version` and `anthropic-beta` are accepted and not needed. The request is
//! translated to the normalized one ([`switchyard_apis::messages`]) and goes through the same
//! stages as a chat completion, so it can be served by an endpoint of any wire format; replies
//! carry the routing trace as a top-level `routing` field (on `message_stop` when streamed),
//! errors use Anthropic's envelope.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use switchyard_apis::messages::{self as wire, MessagesRequest, StreamEncoder};
use switchyard_core::{ChatChunk, Error, Usage};

use crate::edge::Api;
use crate::handler::{Reply, Router, Served};
use crate::http::{
    EventEncoder, encoded_stream, error_in, failure_in, incoming, parse_as, refused_in, stored,
    trace_json, with_request_id,
};
use crate::stream::StreamSession;

const WHAT: &str = "a Messages API request";

fn error_response(e: &Error) -> Response {
    error_in(e, wire::error_json(e))
}

/// Refused before routing: the log line, then the error.
fn refused(e: &Error, key: Option<&switchyard_policy_model::snapshot::KeyRecord>) -> Response {
    refused_in(Api::Messages, e, key, error_response)
}

fn reply_json(s: &Served) -> Value {
    let mut body = wire::message_json(&s.response, &wire::message_id(&s.admitted.id));
    body["routing"] = trace_json(&s.admitted, &s.trace);
    body
}

/// `POST /v1/messages`.
pub async fn create(state: State<Arc<Router>>, headers: HeaderMap, body: Bytes) -> Response {
    let span = crate::edge::request_span(Api::Messages);
    tracing::Instrument::instrument(create_inner(state, headers, body), span).await
}

async fn create_inner(State(r): State<Arc<Router>>, headers: HeaderMap, body: Bytes) -> Response {
    let incoming = incoming(Api::Messages, &headers);
    let caller = match r.authenticate(&incoming) {
        Ok(v) => v,
        Err(e) => return refused(&e, None),
    };
    let req = match parse_as::<MessagesRequest>(&body, WHAT).and_then(|m| m.to_chat(true)) {
        Ok(req) => req,
        Err(e) => return refused(&e, Some(&caller.key)),
    };
    if req.stream {
        return match r.stream(caller, &incoming, req).await {
            Ok(session) => stream(session),
            Err(f) => failure_in(f, error_response),
        };
    }
    match r
        .complete(caller, &incoming, req, |s| reply_json(s).to_string())
        .await
    {
        Ok(Reply::Served(s)) => {
            with_request_id(axum::Json(reply_json(&s)).into_response(), &s.admitted.id)
        }
        Ok(Reply::Stored { text, replayed }) => stored(text, replayed),
        Err(f) => failure_in(f, error_response),
    }
}

/// The Messages event sequence of a committed stream; the routing trace rides on
/// `message_stop`, or on the `error` event's metadata.
struct Events(StreamEncoder);

fn named(events: Vec<wire::Event>) -> Vec<(String, Value)> {
    events
        .into_iter()
        .map(|(n, d)| (n.to_string(), d))
        .collect()
}

impl EventEncoder for Events {
    fn chunk(&mut self, chunk: &ChatChunk) -> Vec<(String, Value)> {
        named(self.0.chunk(chunk))
    }

    async fn done(&mut self, usage: &Usage, routing: Value) -> Vec<(String, Value)> {
        let mut extra = Map::new();
        extra.insert("routing".into(), routing);
        named(self.0.done(usage, extra))
    }

    fn failed(&mut self, error: Error, routing: Value) -> Vec<(String, Value)> {
        named(self.0.failed(&error.with_metadata("routing", routing)))
    }
}

fn stream(session: StreamSession) -> Response {
    let id = wire::message_id(&session.admitted.id);
    let prompt = session.admitted.prompt_tokens;
    encoded_stream(session, Events(StreamEncoder::new(id, prompt)))
}

/// `POST /v1/messages/count_tokens` (the request's body; `max_tokens` optional): the prompt's tokens under o200k_base with the chat framing
/// (see [`switchyard_apis::count`]), without routing, holding or calling anything.
pub async fn count_tokens(
    State(r): State<Arc<Router>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let incoming = incoming(Api::Messages, &headers);
    let caller = match r.authenticate(&incoming) {
        Ok(v) => v,
        Err(e) => return refused(&e, None),
    };
    match parse_as::<MessagesRequest>(&body, WHAT).and_then(|m| m.to_chat(false)) {
        Ok(req) => axum::Json(json!({"input_tokens": switchyard_apis::count::chat_request(&req)}))
            .into_response(),
        Err(e) => refused(&e, Some(&caller.key)),
    }
}
