//! Mid-stream continuation (`continuation: auto`): when a committed stream is cut or stalls,
//! the next endpoints of the plan are asked, in order, to finish the answer, and only what the
//! client lacks is streamed, so it receives one coherent answer.
//!
//! - An endpoint whose catalog entry lists `prefill` gets the request with the text sent so far
//!   as a trailing assistant message (without trailing whitespace, which Anthropic refuses; the
//!   whitespace is taken off the continuation's start when it repeats it), marked
//!   `"prefix": true` for OpenAI-compatible formats.
//! - Another endpoint of the same model regenerates the answer, which is spliced only when it
//!   begins with exactly what was sent; otherwise it is cancelled and the next one is asked.
//!
//! Not continued: a stream that carried tool-call deltas, or several choices, or one that ended
//! for a reason that says nothing about the endpoint (a refusal, an invalid request). An endpoint
//! that cannot continue (it refuses the prefill, fails, or regenerates something else) never
//! shows its error: when none can, the stream ends with the original one.

use serde::Serialize;
use switchyard_core::{
    AttemptOutcome, ChatChunk, ChatRequest, ErrorClass, Message, Parameter, Role,
};
use switchyard_policy_model::config::Continuation;
use switchyard_providers::{Call, CallError, ChunkStream, ProviderClient};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admission::Admitted;
use crate::engine::AttemptTrace;

/// How an answer was continued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Given the text sent so far as an assistant prefill.
    Prefill,
    /// Regenerated on the same model and spliced after what was sent.
    Regenerate,
}

impl Mode {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Prefill => "prefill",
            Mode::Regenerate => "regenerate",
        }
    }
}

/// What a stream needs to be continued: the client, and the request as it came.
pub struct Resume {
    client: ProviderClient,
    request: ChatRequest,
}

/// A continuation under way.
pub struct Resumed {
    /// The chunks to send first, already cut to what the client lacks.
    pub first: Vec<ChatChunk>,
    /// The rest of the continuing stream.
    pub rest: ChunkStream,
    /// Index of the continuing attempt in the plan.
    pub served: usize,
    /// Its trace, so far.
    pub trace: AttemptTrace,
}

/// Whether a failure of a stream under way is worth finishing elsewhere: an outage, a stall
/// or a rate limit, not a refusal or anything about the request.
pub fn continuable(class: ErrorClass) -> bool {
    matches!(
        class,
        ErrorClass::Unavailable | ErrorClass::Timeout | ErrorClass::RateLimited
    )
}

impl Resume {
    /// For a workflow with `continuation: auto` and a request of one choice.
    /// Boxed: a stream without it carries only a pointer.
    pub fn new(client: &ProviderClient, req: &ChatRequest, a: &Admitted) -> Option<Box<Resume>> {
        (a.workflow.continuation == Continuation::Auto && req.n.unwrap_or(1) <= 1).then(|| {
            Box::new(Resume {
                client: client.clone(),
                request: req.clone(),
            })
        })
    }

    /// Asks the endpoints after `from` in the plan, in order, to continue an answer whose
    /// client has `sent`. Returns the continuation, if one could, and the attempts that could
    /// not.
    pub async fn resume(
        &self,
        a: &Admitted,
        sent: &str,
        from: usize,
        cancel: &CancellationToken,
    ) -> (Option<Resumed>, Vec<AttemptTrace>) {
        let mut failed = Vec::new();
        let model = &a.plan[from].attempt.model;
        for (i, p) in a.plan.iter().enumerate().skip(from + 1) {
            let prefill = !sent.trim_end().is_empty()
                && a.catalog
                    .routing
                    .candidates(p.attempt.model.as_str())
                    .and_then(|cs| cs.iter().find(|c| c.endpoint == p.attempt.endpoint))
                    .is_some_and(|c| c.supports.contains(&Parameter::Prefill));
            let mode = match (prefill, &p.attempt.model == model) {
                (true, _) => Mode::Prefill,
                (false, true) => Mode::Regenerate,
                (false, false) => continue,
            };
            let Some(timeouts) = crate::engine::attempt_timeouts(&a.settings) else {
                break;
            };
            if let Some((capacity, tokens)) = &a.settings.capacity {
                capacity.reserve(&p.target, *tokens);
            }
            let request = match mode {
                Mode::Prefill => with_prefill(&self.request, sent.trim_end()),
                Mode::Regenerate => self.request.clone(),
            };
            let started = Instant::now();
            let call = Call {
                target: &p.target,
                request: &request,
                timeouts,
                malformed: a.settings.malformed,
                cancel,
            };
            let attempt = |outcome| {
                let mut t = crate::engine::trace(p, outcome, started, false);
                t.continuation = Some(mode);
                t
            };
            let stream = match self.client.chat_stream(call).await {
                Ok(s) => s,
                Err(CallError::Upstream(e)) => {
                    failed.push(attempt(AttemptOutcome::Failed(e.class)));
                    continue;
                }
                Err(CallError::Cancelled) => break,
            };
            let joined = match mode {
                Mode::Prefill => after_prefill(stream, &sent[sent.trim_end().len()..]).await,
                Mode::Regenerate => splice(stream, sent).await,
            };
            match joined {
                Ok((first, rest)) => {
                    let mut trace = attempt(AttemptOutcome::Ok);
                    trace.ttft_ms = Some(trace.latency_ms);
                    metrics::counter!("switchyard_continuations_total", "mode" => mode.as_str(), "outcome" => "continued").increment(1);
                    return (
                        Some(Resumed {
                            first,
                            rest,
                            served: i,
                            trace,
                        }),
                        failed,
                    );
                }
                Err(outcome) => {
                    metrics::counter!("switchyard_continuations_total", "mode" => mode.as_str(), "outcome" => "failed").increment(1);
                    failed.push(attempt(outcome));
                }
            }
        }
        (None, failed)
    }
}

/// The request with `text` as the assistant's unfinished reply.
fn with_prefill(req: &ChatRequest, text: &str) -> ChatRequest {
    let mut r = req.clone();
    let mut m = Message::text(Role::Assistant, text);
    m.extra
        .insert("prefix".into(), serde_json::Value::Bool(true));
    r.messages.push(m);
    r
}

/// The text content of a chunk's first choice.
fn text(c: &ChatChunk) -> &str {
    c.choices
        .first()
        .and_then(|ch| ch.delta.content.as_deref())
        .unwrap_or("")
}

/// Replaces the text of a chunk's first choice.
fn set_text(c: &mut ChatChunk, t: String) {
    if let Some(ch) = c.choices.first_mut() {
        ch.delta.content = Some(t);
    }
}

/// Reads a prefill continuation to its first content: role-only openings are dropped, and
/// `whitespace` (what the prefill left off the end of the sent text) is taken off the start
/// when the continuation repeats it.
async fn after_prefill(
    mut stream: ChunkStream,
    whitespace: &str,
) -> Result<(Vec<ChatChunk>, ChunkStream), AttemptOutcome> {
    use futures::StreamExt;
    let mut skip = whitespace.to_string();
    loop {
        match stream.next().await {
            Some(Ok(mut chunk)) => {
                let t = text(&chunk);
                if !skip.is_empty() && !t.is_empty() {
                    let mut k = t
                        .bytes()
                        .zip(skip.bytes())
                        .take_while(|(a, b)| a == b)
                        .count();
                    while !t.is_char_boundary(k) {
                        k -= 1;
                    }
                    let rest = t[k..].to_string();
                    skip = if rest.is_empty() {
                        skip[k..].to_string()
                    } else {
                        String::new()
                    };
                    set_text(&mut chunk, rest);
                }
                if chunk.carries_answer() {
                    return Ok((vec![chunk], stream));
                }
            }
            Some(Err(CallError::Upstream(e))) => return Err(AttemptOutcome::Failed(e.class)),
            Some(Err(CallError::Cancelled)) => {
                return Err(AttemptOutcome::Failed(ErrorClass::Timeout));
            }
            None => return Err(AttemptOutcome::Failed(ErrorClass::Unavailable)),
        }
    }
}

/// Reads a regenerated answer until it covers `sent`: when it begins with exactly that, the
/// chunks past it are returned (the one across the boundary cut to its new part); otherwise
/// the regeneration is dropped (cancelling it).
async fn splice(
    mut stream: ChunkStream,
    sent: &str,
) -> Result<(Vec<ChatChunk>, ChunkStream), AttemptOutcome> {
    use futures::StreamExt;
    // It answered, with something else: recorded as output that could not be used.
    let mismatch = AttemptOutcome::InvalidOutput;
    let mut got = String::new();
    loop {
        match stream.next().await {
            Some(Ok(mut chunk)) => {
                if chunk
                    .choices
                    .first()
                    .is_some_and(|c| !c.delta.tool_calls.is_empty())
                {
                    return Err(mismatch);
                }
                let t = text(&chunk);
                let before = got.len();
                got.push_str(t);
                let covered = got.len().min(sent.len());
                if got.as_bytes()[..covered] != sent.as_bytes()[..covered] {
                    return Err(mismatch);
                }
                if got.len() >= sent.len() {
                    let new = t[sent.len() - before..].to_string();
                    set_text(&mut chunk, new);
                    return Ok((vec![chunk], stream));
                }
                if chunk
                    .choices
                    .first()
                    .is_some_and(|c| c.finish_reason.is_some())
                {
                    // Finished shorter than what was sent.
                    return Err(mismatch);
                }
            }
            Some(Err(CallError::Upstream(e))) => return Err(AttemptOutcome::Failed(e.class)),
            Some(Err(CallError::Cancelled)) => {
                return Err(AttemptOutcome::Failed(ErrorClass::Timeout));
            }
            None => return Err(mismatch),
        }
    }
}
