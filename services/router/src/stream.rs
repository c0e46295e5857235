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
    /// For a continued stream: each attempt that streamed part of the answer before the
    /// serving one, with what it used.
    earlier: Vec<(usize, Usage)>,
}

impl Unfinished {
    pub fn new(settlement: &Arc<Settlement>, admitted: &Arc<Admitted>) -> Self {
        Unfinished {
            settlement: settlement.clone(),
            admitted: Some(Arc::clone(admitted)),
            prompt_tokens: admitted.prompt_tokens,
            streamed: None,
            reported: None,
            earlier: Vec::new(),
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

    /// Every part of the answer so far: the earlier attempts' and the serving one's.
    fn parts(&self) -> Vec<(usize, Usage)> {
        let mut parts = self.earlier.clone();
        parts.extend(self.streamed.map(|(served, _)| (served, self.usage())));
        parts
    }

    /// The serving attempt's part is done; `served` streams the rest.
    fn continued_on(&mut self, served: usize) {
        let done = self.streamed.map(|(s, _)| (s, self.usage()));
        self.earlier.extend(done);
        self.streamed = Some((served, 0));
        self.reported = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(a) = self.admitted.take() {
            let parts = self.parts();
            let settlement = self.settlement.clone();
            tokio::spawn(async move { settlement.finish_cancelled(&a, &parts).await });
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
    /// When the serving attempt's part began (its first chunk, or its continuation).
    part_started: Instant,
    assembly: Option<crate::validate::Assembly>,
    /// Set when the workflow continues cut streams; then the text sent so far is kept.
    resume: Option<Box<crate::continuation::Resume>>,
    sent: String,
    /// A tool call was streamed: the answer cannot be continued.
    tool_calls_sent: bool,
    /// The id of the first chunk, kept on a continuation's chunks.
    stream_id: Option<String>,
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
        (started, resume): (Streaming, Option<Box<crate::continuation::Resume>>),
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
            part_started: Instant::now(),
            resume,
            sent: String::new(),
            tool_calls_sent: false,
            stream_id: None,
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
            last.latency_ms += self.part_started.elapsed().as_millis() as u64;
            last.elapsed += self.part_started.elapsed();
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
        self.settlement
            .finish_cancelled(&self.admitted, &self.guard.parts())
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
        loop {
            let item = match self.first.pop_front() {
                Some(first) => Some(Ok(first)),
                None => {
                    // The upstream call follows the same token, so at the drain deadline both
                    // branches can be ready: the shutdown's ending wins.
                    tokio::select! {
                        biased;
                        _ = self.abort.cancelled() => return Some(Box::pin(self.cut_for_shutdown()).await),
                        item = self.rest.next() => item,
                    }
                }
            };
            let ttft = Some(
                self.first_chunk_at
                    .saturating_duration_since(self.admitted.received),
            );
            return match item {
                Some(Ok(chunk)) => Some(StreamEvent::Chunk(self.pass(chunk))),
                Some(Err(switchyard_providers::CallError::Cancelled))
                    if self.abort.is_cancelled() =>
                {
                    Some(Box::pin(self.cut_for_shutdown()).await)
                }
                Some(Err(e)) => {
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
                    // Boxed: the continuation's futures are large and rare, and every open
                    // stream's pending `next` would otherwise carry their size.
                    if Box::pin(self.continued(&error)).await {
                        continue;
                    }
                    self.ended = true;
                    self.guard.disarm();
                    let parts = self.parts();
                    // Boxed, as the settlement at the end below: an open stream's pending
                    // `next` should hold what waiting for the next chunk needs, no more.
                    Box::pin(self.settlement.finish_parts(
                        &self.admitted,
                        &parts,
                        &self.trace,
                        error.class.as_str(),
                        ttft,
                    ))
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
                    let parts = self.parts();
                    let cost = Box::pin(self.settlement.finish_parts(
                        &self.admitted,
                        &parts,
                        &self.trace,
                        "ok",
                        ttft,
                    ))
                    .await;
                    let total = self.with_earlier(usage);
                    Some(StreamEvent::Done(Usage { cost, ..total }))
                }
            };
        }
    }

    /// A chunk on its way to the client: counted, assembled for validation, kept for a
    /// continuation, and labelled with the serving model, provider and (with usage) cost.
    fn pass(&mut self, mut chunk: ChatChunk) -> ChatChunk {
        self.guard.observe(&chunk);
        if let Some(a) = self.assembly.as_mut() {
            a.add(&chunk);
        }
        if self.resume.is_some() {
            match &self.stream_id {
                Some(id) => chunk.id.clone_from(id),
                None => self.stream_id = Some(chunk.id.clone()),
            }
            if let Some(c) = chunk.choices.first() {
                self.sent.push_str(c.delta.content.as_deref().unwrap_or(""));
                self.tool_calls_sent |= !c.delta.tool_calls.is_empty();
            }
        }
        let attempt = &self.admitted.plan[self.served].attempt;
        chunk.model = attempt.model.to_string();
        chunk.provider = Some(attempt.provider.to_string());
        if let Some(u) = chunk.usage.as_mut() {
            u.cost = Settlement::cost(&self.admitted, &self.endpoint, u);
            *u = self.with_earlier(*u);
        }
        chunk
    }

    /// Every part of the answer so far, by endpoint.
    fn parts(&self) -> Vec<(EndpointId, Usage)> {
        self.guard
            .parts()
            .into_iter()
            .map(|(i, u)| (self.admitted.plan[i].attempt.endpoint.clone(), u))
            .collect()
    }

    /// `usage` of the serving attempt with the earlier parts' added (and their costs).
    fn with_earlier(&self, usage: Usage) -> Usage {
        self.guard.earlier.iter().fold(usage, |total, (i, u)| {
            let endpoint = &self.admitted.plan[*i].attempt.endpoint;
            let cost = Settlement::cost(&self.admitted, endpoint, u);
            total.plus(&Usage { cost, ..*u })
        })
    }

    /// After the serving attempt failed with `error`: whether another endpoint now continues
    /// the answer (the workflow allows it, nothing rules it out, and one could). The failed
    /// attempts that tried are in the trace either way.
    async fn continued(&mut self, error: &Error) -> bool {
        let Some(resume) = &self.resume else {
            return false;
        };
        if self.tool_calls_sent || !crate::continuation::continuable(error.class) {
            return false;
        }
        let (resumed, failed) = resume
            .resume(&self.admitted, &self.sent, self.served, &self.abort)
            .await;
        self.settlement.note_attempts(&failed, 0);
        self.trace.extend(failed);
        let Some(r) = resumed else {
            return false;
        };
        tracing::info!(from = %self.endpoint, to = %self.admitted.plan[r.served].attempt.endpoint, mode = ?r.trace.continuation, error = %error, "stream continued on another endpoint");
        self.guard.continued_on(r.served);
        self.served = r.served;
        self.endpoint = self.admitted.plan[r.served].attempt.endpoint.clone();
        self.rest = r.rest;
        self.first = r.first.into();
        self.trace.push(r.trace);
        self.part_started = Instant::now();
        true
    }
}
