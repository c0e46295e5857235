//! A committed stream, the engine's streamed output carried to its end: each chunk goes to the
//! client with the served model, provider and (on a usage chunk) cost; the end is settled once,
//! with the upstream's usage or what was streamed; a client that goes away is settled for what it
//! got by a guard; at a shutdown's drain deadline the stream ends with an explicit error. Both
//! transports render its [`StreamEvent`]s and nothing more.

use std::sync::Arc;

use futures::StreamExt;
use switchyard_core::tokens::estimate_text;
use switchyard_core::{AttemptOutcome, ChatChunk, EndpointId, Error, ErrorClass, Usage};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admission::Admitted;
use crate::engine::{AttemptTrace, Streaming};
use crate::settlement::Settlement;

/// Settles a request whose client went away, if it is dropped before it finished normally.
pub struct Unfinished {
    settlement: Arc<Settlement>,
    admitted: Option<Arc<Admitted>>,
    prompt_tokens: u32,
    /// For a committed stream: the serving attempt and the completion tokens streamed so far.
    pub streamed: Option<(usize, u32)>,
    /// The usage the upstream reported, if it did.
    reported: Option<Usage>,
}

impl Unfinished {
    pub fn new(settlement: &Arc<Settlement>, admitted: &Arc<Admitted>) -> Self {
        Unfinished {
            settlement: settlement.clone(),
            admitted: Some(Arc::clone(admitted)),
            prompt_tokens: admitted.prompt_tokens,
            streamed: None,
            reported: None,
        }
    }

    /// Notes a chunk on its way to the client: its usage, if it carries the upstream's, and
    /// its content tokens (estimated).
    pub fn observe(&mut self, chunk: &ChatChunk) {
        if let Some(u) = chunk.usage {
            self.reported = Some(u);
        }
        if let Some((_, tokens)) = self.streamed.as_mut() {
            let content: u32 = chunk
                .choices
                .iter()
                .map(|c| estimate_text(c.delta.content.as_deref().unwrap_or("")))
                .sum();
            *tokens = tokens.saturating_add(content);
        }
    }

    /// What to settle: the upstream's report when it sent one, otherwise the estimated prompt
    /// and the completion tokens streamed so far.
    pub fn usage(&self) -> Usage {
        match self.reported {
            Some(u) if u.prompt_tokens > 0 || u.completion_tokens > 0 => u,
            _ => Usage {
                prompt_tokens: self.prompt_tokens,
                completion_tokens: self.streamed.map(|(_, t)| t).unwrap_or(0),
                ..Usage::default()
            },
        }
    }

    /// The request finished normally: nothing to do on drop.
    pub fn disarm(&mut self) {
        self.admitted = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(a) = self.admitted.take() {
            let streamed = self.streamed.map(|(served, _)| (served, self.usage()));
            let settlement = self.settlement.clone();
            tokio::spawn(async move { settlement.finish_cancelled(&a, streamed).await });
        }
    }
}

/// How a committed stream goes on: content for the client, then one final event, sent after
/// the request was settled.
#[derive(Debug)]
pub enum StreamEvent {
    /// A chunk, with the served model and provider, and the cost on a usage chunk.
    Chunk(ChatChunk),
    /// The upstream finished: the usage settled, with its cost (what validation found is on the
    /// serving attempt's trace).
    Done(Usage),
    /// The upstream failed after content went out: no fallback any more, the usage so far is
    /// settled, and the client must be told.
    Failed(Error),
}

/// A stream past its first chunk. Dropping it before the final event settles what the client
/// got (a disconnect).
pub struct StreamSession {
    settlement: Arc<Settlement>,
    /// Fires at the drain deadline of a shutdown.
    abort: CancellationToken,
    /// The request.
    pub admitted: Arc<Admitted>,
    endpoint: EndpointId,
    served: usize,
    /// Every attempt.
    pub trace: Vec<AttemptTrace>,
    first: std::collections::VecDeque<ChatChunk>,
    rest: switchyard_providers::ChunkStream,
    guard: Unfinished,
    ended: bool,
    first_chunk_at: Instant,
    assembly: Option<crate::validate::Assembly>,
}

impl StreamSession {
    /// Carries a stream the engine committed to. The attempts before the serving one are
    /// recorded now; the serving one when the stream ends, with how it ended and its time to
    /// first chunk (what `sort: latency` orders streamed requests by). `guard` is the one that
    /// watched the engine run; it now settles what was streamed if the client goes away.
    pub fn new(
        settlement: &Arc<Settlement>,
        abort: &CancellationToken,
        admitted: &Arc<Admitted>,
        started: Streaming,
        mut guard: Unfinished,
    ) -> Self {
        let Streaming {
            first,
            rest,
            served,
            mut trace,
        } = started;
        let failed = trace.len().saturating_sub(1);
        settlement.note_attempts(&trace[..failed], 0);
        if let Some(last) = trace.last_mut() {
            last.ttft_ms = Some(last.latency_ms);
        }
        guard.streamed = Some((served, 0));
        StreamSession {
            settlement: settlement.clone(),
            abort: abort.clone(),
            admitted: admitted.clone(),
            endpoint: admitted.plan[served].attempt.endpoint.clone(),
            served,
            trace,
            first: first.into(),
            rest,
            guard,
            ended: false,
            first_chunk_at: Instant::now(),
            assembly: admitted
                .validator
                .as_ref()
                .map(|_| crate::validate::Assembly::default()),
        }
    }

    /// Records the serving attempt as it ended: a passive outcome (with the tokens it streamed,
    /// over the whole stream's time) and, on a failure, the local penalty.
    fn note_served(&mut self, tokens_out: u32) {
        let skipped = self.rest.skipped();
        if skipped > 0 {
            metrics::counter!("switchyard_stream_anomalies_total", "endpoint" => self.endpoint.to_string(), "kind" => "malformed_event").increment(u64::from(skipped));
        }
        if let Some(last) = self.trace.last_mut() {
            last.latency_ms += self.first_chunk_at.elapsed().as_millis() as u64;
            last.elapsed += self.first_chunk_at.elapsed();
            last.malformed_events = skipped;
        }
        let served = self.trace.len().saturating_sub(1);
        self.settlement
            .note_attempts(&self.trace[served..], u64::from(tokens_out));
    }

    /// Ends the stream at a shutdown's drain deadline: billed for what it streamed, not held
    /// against the endpoint, and an explicit error for the client (never a silent end).
    async fn cut_for_shutdown(&mut self) -> StreamEvent {
        self.ended = true;
        self.guard.disarm();
        let usage = self.guard.usage();
        self.settlement
            .finish_cancelled(&self.admitted, Some((self.served, usage)))
            .await;
        StreamEvent::Failed(Error::new(
            ErrorClass::Unavailable,
            "the router is shutting down and this stream outlived its drain deadline; what was streamed is billed",
        ))
    }

    /// The next event; `None` after the final one.
    pub async fn next(&mut self) -> Option<StreamEvent> {
        if self.ended {
            return None;
        }
        let item = match self.first.pop_front() {
            Some(first) => Some(Ok(first)),
            None => {
                // The upstream call follows the same token, so at the drain deadline both
                // branches can be ready: the shutdown's ending wins.
                tokio::select! {
                    biased;
                    _ = self.abort.cancelled() => return Some(self.cut_for_shutdown().await),
                    item = self.rest.next() => item,
                }
            }
        };
        let ttft = Some(
            self.first_chunk_at
                .saturating_duration_since(self.admitted.received),
        );
        match item {
            Some(Ok(mut chunk)) => {
                self.guard.observe(&chunk);
                if let Some(a) = self.assembly.as_mut() {
                    a.add(&chunk);
                }
                let attempt = &self.admitted.plan[self.served].attempt;
                chunk.model = attempt.model.to_string();
                chunk.provider = Some(attempt.provider.to_string());
                if let Some(u) = chunk.usage.as_mut() {
                    u.cost = Settlement::cost(&self.admitted, &self.endpoint, u);
                }
                Some(StreamEvent::Chunk(chunk))
            }
            Some(Err(switchyard_providers::CallError::Cancelled)) if self.abort.is_cancelled() => {
                Some(self.cut_for_shutdown().await)
            }
            Some(Err(e)) => {
                self.ended = true;
                self.guard.disarm();
                let error = match e {
                    switchyard_providers::CallError::Upstream(u) => u.to_error(),
                    switchyard_providers::CallError::Cancelled => {
                        Error::new(ErrorClass::Timeout, "the upstream call was cancelled")
                    }
                };
                let usage = self.guard.usage();
                if let Some(last) = self.trace.last_mut() {
                    last.outcome = AttemptOutcome::Failed(error.class);
                }
                self.note_served(usage.completion_tokens);
                self.settlement
                    .finish(
                        &self.admitted,
                        Some((&self.endpoint, usage)),
                        &self.trace,
                        error.class.as_str(),
                        ttft,
                    )
                    .await;
                Some(StreamEvent::Failed(error))
            }
            None => {
                self.ended = true;
                self.guard.disarm();
                let usage = self.guard.usage();
                // Validated at the end, before the final event; too late to go elsewhere.
                if let (Some(v), Some(a)) = (&self.admitted.validator, &self.assembly) {
                    let validity = v.check_stream(a);
                    crate::validate::Validator::count(
                        &self.endpoint,
                        &validity,
                        self.settlement.outcomes(),
                    );
                    if let Some(last) = self.trace.last_mut() {
                        if !validity.valid {
                            last.outcome = AttemptOutcome::InvalidOutput;
                        }
                        last.validity = Some(validity);
                    }
                }
                self.note_served(usage.completion_tokens);
                let cost = self
                    .settlement
                    .finish(
                        &self.admitted,
                        Some((&self.endpoint, usage)),
                        &self.trace,
                        "ok",
                        ttft,
                    )
                    .await;
                Some(StreamEvent::Done(Usage { cost, ..usage }))
            }
        }
    }
}
