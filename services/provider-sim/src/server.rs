//! The provider endpoints: one handler for every wire format (each a [`Dialect`]), applying the
//! fault profile in a fixed order (auth, parse, model, rate limit, drawn fault, context,
//! refusal, latency).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::json;
use switchyard_config::catalog::WireFormat;
use tokio_util::sync::CancellationToken;

use crate::config::Faults;
use crate::conn::ConnReset;
use crate::dialect::{Dialect, dialect_for};
use crate::generate::{self, Reply};
use crate::state::{ProviderState, RecentRequest};
use crate::wire::{Ctx, Event, Failure};

/// Shared by a provider's handlers.
#[derive(Clone)]
pub struct App {
    /// The provider.
    pub state: Arc<ProviderState>,
    /// Ends hanging requests at shutdown.
    pub shutdown: CancellationToken,
}

/// The routes of one simulated provider.
pub fn router(app: App) -> Router {
    let embed = || post(crate::embeddings::embed);
    let vertex =
        "/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{action}";
    let chat = match app.state.config.format {
        WireFormat::Openai => Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/chat/completions", post(chat))
            .route("/v1/embeddings", embed())
            .route("/embeddings", embed()),
        WireFormat::Azure => Router::new()
            .route(
                "/openai/deployments/{deployment}/chat/completions",
                post(chat),
            )
            .route("/openai/v1/chat/completions", post(chat))
            .route("/openai/deployments/{deployment}/embeddings", embed())
            .route("/openai/v1/embeddings", embed()),
        WireFormat::Anthropic => Router::new().route("/v1/messages", post(chat)),
        WireFormat::Gemini => Router::new().route("/v1beta/models/{action}", post(gemini_action)),
        WireFormat::Vertex => Router::new()
            .route(vertex, post(gemini_action))
            .route("/token", post(crate::cloud::token)),
        WireFormat::VertexAnthropic => Router::new()
            .route(vertex, post(chat))
            .route("/token", post(crate::cloud::token)),
        WireFormat::Bedrock => Router::new()
            .route("/model/{model}/converse", post(chat))
            .route("/model/{model}/converse-stream", post(chat)),
    };
    chat.route("/v1/models", get(models))
        .route("/models", get(models))
        .with_state(app)
}

async fn models(State(app): State<App>) -> Response<Body> {
    let data: Vec<_> = app
        .state
        .config
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "owned_by": app.state.config.id}))
        .collect();
    crate::wire::json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

/// The fault a request draws, at most one.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Drawn {
    None,
    Reset,
    Hang,
    Status(u16),
    Malformed,
}

fn draw(state: &ProviderState, faults: &Faults) -> Drawn {
    let total = faults.reset_rate
        + faults.hang_rate
        + faults.malformed_rate
        + faults.errors.iter().map(|e| e.rate).sum::<f64>();
    if total <= 0.0 {
        return Drawn::None;
    }
    let u = state.draw();
    let mut edge = faults.reset_rate;
    if u < edge {
        return Drawn::Reset;
    }
    edge += faults.hang_rate;
    if u < edge {
        return Drawn::Hang;
    }
    for e in &faults.errors {
        edge += e.rate;
        if u < edge {
            return Drawn::Status(e.status);
        }
    }
    edge += faults.malformed_rate;
    if u < edge {
        return Drawn::Malformed;
    }
    Drawn::None
}

/// Gemini's `models/{m}:{action}`: generation or embeddings.
async fn gemini_action(
    state: State<App>,
    reset: Option<axum::Extension<ConnReset>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if uri.path().ends_with(":batchEmbedContents") {
        crate::embeddings::embed(state, reset, uri, headers, body).await
    } else {
        chat(state, reset, uri, headers, body).await
    }
}

/// Every answer of a provider with a capacity reports what its key has left, in its format's
/// headers (after the request is counted, or refused).
pub(crate) fn with_capacity(app: &App, mut resp: Response<Body>) -> Response<Body> {
    if let Some(cap) = &app.state.faults().capacity {
        let left = app.state.capacity_reading(cap);
        dialect_for(app.state.config.format).rate_limit_headers(&left, resp.headers_mut());
    }
    resp
}

async fn chat(
    State(app): State<App>,
    reset: Option<axum::Extension<ConnReset>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let resp = answer_chat(&app, reset, uri, headers, body).await;
    with_capacity(&app, resp)
}

async fn answer_chat(
    app: &App,
    reset: Option<axum::Extension<ConnReset>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let state = &app.state;
    let _in_flight = state.begin();
    let dialect: &dyn Dialect = dialect_for(state.config.format);
    let faults = state.faults();
    let route = dialect.route(uri.path(), uri.query().unwrap_or(""));
    let (key, authorized) = dialect.authenticate(&state.config, &headers, &route, &state.tokens);
    let mut recent = RecentRequest::new("chat", key.as_deref());
    let fail = |recent: &mut RecentRequest, failure: Failure| {
        recent.outcome = failure.label();
        state.record(recent.clone());
        dialect.error(&failure, faults.retry_after_s)
    };

    if !authorized {
        return fail(&mut recent, Failure::Unauthorized);
    }
    let parsed = dialect.parse(&route, &headers, &body, state.config.prompt_tokenizer);
    let parsed = match parsed {
        Ok(p) => p,
        Err(f) => return fail(&mut recent, f),
    };
    recent.model = parsed.model.clone();
    recent.stream = parsed.stream;
    recent.prompt_tokens = parsed.prompt_tokens;
    recent.tools = parsed.tools;
    if !state.config.models.is_empty() && !state.config.models.contains(&parsed.model) {
        return fail(&mut recent, Failure::ModelNotFound(parsed.model.clone()));
    }
    let malformed = match meet_faults(
        app,
        &faults,
        &mut recent,
        parsed.prompt_tokens,
        reset,
        &fail,
    )
    .await
    {
        Ok(malformed) => malformed,
        Err(resp) => return resp,
    };
    let refuse = faults.refuse_on.as_ref().is_some_and(|word| {
        parsed
            .prompt_text
            .to_lowercase()
            .contains(&word.to_lowercase())
    });
    if refuse && dialect.refusal_is_error() {
        return fail(&mut recent, Failure::Refused);
    }
    if parsed.prefill.is_some() && faults.refuse_prefill {
        return fail(
            &mut recent,
            Failure::BadRequest("assistant prefill is not supported by this model".into()),
        );
    }

    let mut parsed = parsed;
    if faults.ignore_max_tokens {
        parsed.max_tokens = None;
    }
    let id = state.next_id();
    let invalid_tool = parsed.tool.is_some()
        && faults.invalid_tool_call_rate > 0.0
        && state.draw() < faults.invalid_tool_call_rate;
    let reply = generate::reply(
        state.config.voice.as_deref().unwrap_or(&state.config.id),
        &parsed,
        state.config.output_tokens,
        id,
        invalid_tool,
        refuse,
    );
    let ttft = state.ttft(&faults.latency);
    let per_token = Duration::from_millis(faults.latency.per_token_ms);
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let ctx = Ctx {
        provider: &state.config.id,
        id,
        created,
        parsed: &parsed,
    };
    recent.outcome = outcome_label(&reply, malformed);

    if !parsed.stream {
        state.record(recent);
        let tokens = reply.completion_tokens();
        sleep(ttft + per_token * tokens).await;
        if malformed {
            return crate::wire::malformed_json();
        }
        return crate::wire::json_response(StatusCode::OK, &dialect.reply(&ctx, &reply));
    }

    let mut events = dialect.events(&ctx, &reply, malformed);
    if let Some(n) = faults.huge_chunk_bytes
        && let Some(first) = events.iter_mut().find(|e| e.content)
    {
        *first = dialect.huge_event(n as usize);
    }
    if faults.omit_terminal_event && !malformed {
        let n = dialect.terminal_events().min(events.len());
        events.truncate(events.len() - n);
        recent.outcome = "no_terminal_event".into();
    }
    if let Some(after) = faults.malformed_event_after
        && !malformed
    {
        let content_at: Vec<usize> = (0..events.len()).filter(|i| events[*i].content).collect();
        let at = match after as usize {
            0 => content_at.first().copied().unwrap_or(0),
            n => content_at.get(n - 1).map_or(events.len(), |i| i + 1),
        };
        events.insert(at.min(events.len()), dialect.broken_event());
        recent.outcome = "malformed_event".into();
    }
    let content = events.iter().filter(|e| e.content).count() as u32;
    let cut_after = faults.cut_stream_after.filter(|n| *n < content);
    if cut_after.is_some() && !malformed {
        recent.outcome = "cut".into();
    }
    let stall_after = faults.stall_stream_after.filter(|n| *n < content);
    if stall_after.is_some() && !malformed {
        recent.outcome = "stalled".into();
    }
    state.record(recent);
    let endless = faults.endless_stream;
    let pace = Pace {
        ttft,
        per_token,
        cut_after,
        stall_after,
        endless,
    };
    let mut resp = stream_response(events, pace);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(dialect.stream_content_type()),
    );
    resp
}

/// The faults a parsed request meets before any reply, in order: the per-second rate limit,
/// the drawn fault (reset, hang, error status, malformed), the context limit. `Err` is the
/// answer to send (already recorded); `Ok` says whether the reply is to be malformed.
pub(crate) async fn meet_faults(
    app: &App,
    faults: &Faults,
    recent: &mut RecentRequest,
    prompt_tokens: u32,
    reset: Option<axum::Extension<ConnReset>>,
    fail: &(dyn Fn(&mut RecentRequest, Failure) -> Response<Body> + Sync),
) -> Result<bool, Response<Body>> {
    let state = &app.state;
    if let Some(cap) = &faults.capacity
        && let Err(wait) = state.take_capacity(cap, u64::from(prompt_tokens))
    {
        return Err(fail(recent, Failure::RateLimited(wait)));
    }
    if let Some(rps) = faults.rate_limit_rps
        && let Some(wait) = state.over_rate_limit(rps)
    {
        return Err(fail(recent, Failure::RateLimited(wait)));
    }
    let drawn = draw(state, faults);
    match drawn {
        Drawn::Reset => {
            recent.outcome = "reset".into();
            state.record(recent.clone());
            if let Some(axum::Extension(reset)) = reset {
                reset.reset();
            }
            // Never written: the connection fails first.
            return Err(Response::new(Body::empty()));
        }
        Drawn::Hang => {
            recent.outcome = "hang".into();
            state.record(recent.clone());
            app.shutdown.cancelled().await;
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return Err(resp);
        }
        Drawn::Status(status) => return Err(fail(recent, Failure::Injected(status))),
        Drawn::Malformed | Drawn::None => {}
    }
    if let Some(limit) = faults.context_limit
        && prompt_tokens > limit
    {
        let tokens = prompt_tokens;
        return Err(fail(recent, Failure::ContextLength { tokens, limit }));
    }
    Ok(drawn == Drawn::Malformed)
}

fn outcome_label(reply: &Reply, malformed: bool) -> String {
    if malformed {
        return "malformed".into();
    }
    match reply {
        Reply::Tool { valid: false, .. } => "invalid_tool_call".into(),
        Reply::Refusal => "refused".into(),
        _ => "ok".into(),
    }
}

pub(crate) async fn sleep(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// How a stream's events are sent.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Before the first event.
    ttft: Duration,
    /// Before each later content event.
    per_token: Duration,
    /// Abort the connection after this many content events.
    cut_after: Option<u32>,
    /// Go silent, the connection open, after this many content events.
    stall_after: Option<u32>,
    /// Repeat the last content event instead of ending.
    endless: bool,
}

struct StreamState {
    events: std::vec::IntoIter<Event>,
    first: bool,
    sent_content: u32,
    pace: Pace,
    last_content: Option<Bytes>,
}

/// The longest a stalled stream keeps its connection open.
const STALL: Duration = Duration::from_secs(3600);

/// An SSE response that paces events (time to first token, then per token) and, for the cut
/// fault, aborts the connection after `cut_after` content events with no terminal event; a
/// stalled stream sends nothing more after `stall_after` content events but stays open; an
/// `endless` stream repeats its last content event instead of ever ending.
fn stream_response(events: Vec<Event>, pace: Pace) -> Response<Body> {
    let state = StreamState {
        events: events.into_iter(),
        first: true,
        sent_content: 0,
        pace,
        last_content: None,
    };
    let stream = futures::stream::unfold(Some(state), |state| async move {
        let mut s = state?;
        if s.pace.stall_after == Some(s.sent_content) {
            tokio::time::sleep(STALL).await;
            let cut = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "stalled");
            return Some((Err(cut), None));
        }
        if s.pace.cut_after == Some(s.sent_content) {
            // Let hyper flush what was sent before the abort; an error straight after ready
            // chunks would discard them with the connection.
            tokio::time::sleep(Duration::from_millis(10)).await;
            let cut = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "stream cut");
            return Some((Err(cut), None));
        }
        if s.pace.endless
            && let Some(last) = s.last_content.clone()
            && s.events.as_slice().first().is_none_or(|e| !e.content)
        {
            sleep(s.pace.per_token.max(Duration::from_millis(10))).await;
            return Some((Ok(last), Some(s)));
        }
        let event = s.events.next()?;
        if event.content {
            s.last_content = Some(event.bytes.clone());
        }
        if s.first {
            sleep(s.pace.ttft).await;
            s.first = false;
        } else if event.content {
            sleep(s.pace.per_token).await;
        }
        if event.content {
            s.sent_content += 1;
        }
        Some((Ok::<Bytes, std::io::Error>(event.bytes), Some(s)))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
