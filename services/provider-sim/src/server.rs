//! The provider endpoints: one handler for both wire formats, applying the fault profile in a
//! fixed order (auth, parse, model, rate limit, drawn fault, context, refusal, latency).

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
use crate::generate::{self, Reply};
use crate::state::{ProviderState, RecentRequest};
use crate::wire::{Ctx, Event, Failure};
use crate::{anthropic, openai};

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
    let chat = match app.state.config.format {
        WireFormat::Openai => Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/chat/completions", post(chat))
            .route("/v1/embeddings", post(crate::embeddings::embed))
            .route("/embeddings", post(crate::embeddings::embed)),
        WireFormat::Anthropic => Router::new().route("/v1/messages", post(chat)),
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

async fn chat(
    State(app): State<App>,
    reset: Option<axum::Extension<ConnReset>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let state = &app.state;
    let _in_flight = state.begin();
    let format = state.config.format;
    let faults = state.faults();
    let key = match format {
        WireFormat::Openai => openai::presented_key(&headers),
        WireFormat::Anthropic => anthropic::presented_key(&headers),
    };
    let mut recent = RecentRequest::new("chat", key.as_deref());
    let fail = |recent: &mut RecentRequest, failure: Failure| {
        recent.outcome = failure.label();
        state.record(recent.clone());
        match format {
            WireFormat::Openai => openai::error(&failure, faults.retry_after_s),
            WireFormat::Anthropic => anthropic::error(&failure, faults.retry_after_s),
        }
    };

    if let Some(expected) = &state.config.api_key
        && key.as_deref() != Some(expected.as_str())
    {
        return fail(&mut recent, Failure::Unauthorized);
    }
    let parsed = match format {
        WireFormat::Openai => openai::parse(&body, state.config.prompt_tokenizer),
        WireFormat::Anthropic => anthropic::parse(&headers, &body, state.config.prompt_tokenizer),
    };
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
        &app,
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
    if refuse && format == WireFormat::Openai {
        return fail(&mut recent, Failure::Refused);
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
        &state.config.id,
        &parsed,
        state.config.output_tokens,
        id,
        invalid_tool,
        refuse,
    );
    let ttft =
        Duration::from_millis(faults.latency.ttft_ms + state.draw_ms(faults.latency.jitter_ms));
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
        let body = match format {
            WireFormat::Openai => openai::completion(&ctx, &reply),
            WireFormat::Anthropic => anthropic::message(&ctx, &reply),
        };
        return crate::wire::json_response(StatusCode::OK, &body);
    }

    let mut events = match format {
        WireFormat::Openai => openai::events(&ctx, &reply, malformed),
        WireFormat::Anthropic => anthropic::events(&ctx, &reply, malformed),
    };
    if let Some(n) = faults.huge_chunk_bytes
        && let Some(first) = events.iter_mut().find(|e| e.content)
    {
        *first = huge_event(format, n as usize);
    }
    let content = events.iter().filter(|e| e.content).count() as u32;
    let cut_after = faults.cut_stream_after.filter(|n| *n < content);
    if cut_after.is_some() && !malformed {
        recent.outcome = "cut".into();
    }
    state.record(recent);
    let endless = faults.endless_stream;
    stream_response(events, ttft, per_token, cut_after, endless)
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

/// One content event whose text is `n` bytes long, in `format`'s wire shape.
fn huge_event(format: WireFormat, n: usize) -> crate::wire::Event {
    let text = "x".repeat(n);
    match format {
        WireFormat::Openai => crate::wire::sse(
            None,
            &serde_json::json!({"id": "chatcmpl-huge", "object": "chat.completion.chunk", "created": 0, "model": "sim", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]}).to_string(),
            true,
        ),
        WireFormat::Anthropic => crate::wire::sse(
            Some("content_block_delta"),
            &serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}).to_string(),
            true,
        ),
    }
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

struct StreamState {
    events: std::vec::IntoIter<Event>,
    first: bool,
    sent_content: u32,
    ttft: Duration,
    per_token: Duration,
    cut_after: Option<u32>,
    endless: bool,
    last_content: Option<Bytes>,
}

/// An SSE response that paces events (time to first token, then per token) and, for the cut
/// fault, aborts the connection after `cut_after` content events with no terminal event; an
/// `endless` stream repeats its last content event instead of ever ending.
fn stream_response(
    events: Vec<Event>,
    ttft: Duration,
    per_token: Duration,
    cut_after: Option<u32>,
    endless: bool,
) -> Response<Body> {
    let state = StreamState {
        events: events.into_iter(),
        first: true,
        sent_content: 0,
        ttft,
        per_token,
        cut_after,
        endless,
        last_content: None,
    };
    let stream = futures::stream::unfold(Some(state), |state| async move {
        let mut s = state?;
        if s.cut_after == Some(s.sent_content) {
            // Let hyper flush what was sent before the abort; an error straight after ready
            // chunks would discard them with the connection.
            tokio::time::sleep(Duration::from_millis(10)).await;
            let cut = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "stream cut");
            return Some((Err(cut), None));
        }
        if s.endless
            && let Some(last) = s.last_content.clone()
            && s.events.as_slice().first().is_none_or(|e| !e.content)
        {
            sleep(s.per_token.max(Duration::from_millis(10))).await;
            return Some((Ok(last), Some(s)));
        }
        let event = s.events.next()?;
        if event.content {
            s.last_content = Some(event.bytes.clone());
        }
        if s.first {
            sleep(s.ttft).await;
            s.first = false;
        } else if event.content {
            sleep(s.per_token).await;
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
