//! One pooled HTTP client for every upstream, and the two calls the router makes with it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http::Uri;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use switchyard_core::{ChatChunk, ChatResponse, EmbeddingResponse, ErrorClass};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::adapter::{Flow, StreamDecoder, adapter_for};
use crate::auth::TokenCache;
use crate::error::{CallError, Phase, UpstreamError};
use crate::eventstream::Framer;
use crate::ratelimit::{CapacityObserver, RateLimits, SHARE_WAIT};
use crate::sse::SseEvent;
use crate::target::{Call, EmbedCall, Target, Timeouts};
use switchyard_config::catalog::WireFormat;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest non-streamed body (or error body) read from an upstream.
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// Normalized chunks of a streamed completion. It ends with `None` only when the answer is
/// whole (the upstream's terminal event, or a clean end of the body after every choice's
/// finish); any other end is an `Err` item, never a silent clean end.
pub struct ChunkStream {
    chunks: Pin<Box<dyn Stream<Item = Result<ChatChunk, CallError>> + Send>>,
    skipped: Arc<AtomicU32>,
}

impl ChunkStream {
    /// Events skipped so far because they could not be understood
    /// ([`crate::MalformedEvents::Skip`]).
    pub fn skipped(&self) -> u32 {
        self.skipped.load(Ordering::Relaxed)
    }
}

impl Stream for ChunkStream {
    type Item = Result<ChatChunk, CallError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.chunks.as_mut().poll_next(cx)
    }
}

tokio::task_local! {
    /// The connect timeout of the attempt being made on this task.
    static CONNECT_LIMIT: Duration;
}

/// The connect limit was reached.
#[derive(Debug, thiserror::Error)]
#[error("connect timed out after {0:?}")]
struct ConnectTimeout(Duration);

/// Applies the current attempt's connect timeout. The pool calls the connector from the task
/// that needs the connection, so the attempt's limit is read from a task-local; a connection
/// finished in the background after another one was checked out uses the default.
#[derive(Clone)]
pub(crate) struct TimedConnector<C> {
    inner: C,
    default: Duration,
}

impl<C> tower::Service<Uri> for TimedConnector<C>
where
    C: tower::Service<Uri> + Clone + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let limit = CONNECT_LIMIT.try_with(|d| *d).unwrap_or(self.default);
        let fut = self.inner.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(Box::new(ConnectTimeout(limit)) as BoxError),
            }
        })
    }
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// The pooled HTTP client under [`ProviderClient`].
pub(crate) type HttpClient = Client<TimedConnector<Https>, Full<Bytes>>;

/// Settings of the shared client.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// Connect timeout when a call does not set one (background pool connections).
    pub default_connect_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            default_connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
        }
    }
}

/// The provider client: one connection pool (keep-alive, TCP_NODELAY, rustls, HTTP/2 where the
/// upstream offers it by ALPN) shared by every endpoint. Cheap to clone.
#[derive(Clone)]
pub struct ProviderClient {
    http: HttpClient,
    /// Builds the pools of threads that keep their own ([`crate::own_pools`]).
    pub(crate) pools: crate::own_pools::PoolMaker,
    /// Vertex AI access tokens.
    tokens: Arc<TokenCache>,
    /// Told about every call and the capacity its answer reported.
    observer: Option<Arc<dyn CapacityObserver>>,
}

impl std::fmt::Debug for ProviderClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProviderClient")
    }
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS for upstreams: {0}")]
pub struct ClientBuildError(String);

impl ProviderClient {
    /// A client with `options`.
    pub fn new(options: ClientOptions) -> Result<Self, ClientBuildError> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
        {
            Ok(b) => b,
            Err(e) => {
                // HTTPS upstreams then fail with a certificate error; HTTP ones (the simulator,
                // in-cluster models) keep working.
                tracing::warn!(error = %e, "no platform root certificates; https upstreams will fail");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| ClientBuildError(e.to_string()))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let https = builder
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let connector = TimedConnector {
            inner: https,
            default: options.default_connect_timeout,
        };
        let pools = crate::own_pools::PoolMaker::new(move || {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(options.pool_idle_timeout)
                .pool_max_idle_per_host(options.pool_max_idle_per_host)
                .build(connector.clone())
        });
        Ok(ProviderClient {
            http: pools.make(),
            pools,
            tokens: Arc::default(),
            observer: None,
        })
    }

    /// The same client, handing `observer` the rate-limit headers of every answer.
    pub fn with_observer(mut self, observer: Arc<dyn CapacityObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Hands the rate-limit headers of an answer from `target` to the observer, and waits
    /// briefly for what it shares.
    async fn answered(&self, target: &Target, headers: &http::HeaderMap) {
        if let Some(o) = &self.observer
            && let Some(limits) = RateLimits::from_headers(headers, std::time::SystemTime::now())
            && let Some(sharing) = o.reported(target, &limits)
        {
            let _ = tokio::time::timeout(SHARE_WAIT, sharing).await;
        }
    }

    /// `target` ready to be called: for Vertex AI, with its service-account key exchanged for
    /// an access token (cached).
    async fn authorized<'t>(
        &self,
        target: &'t Target,
        timeouts: Timeouts,
        deadline: Instant,
    ) -> Result<std::borrow::Cow<'t, Target>, UpstreamError> {
        let (WireFormat::Vertex | WireFormat::VertexAnthropic, Some(key)) =
            (target.format, &target.key)
        else {
            return Ok(std::borrow::Cow::Borrowed(target));
        };
        let token = self
            .tokens
            .token(key, |req| async move {
                let resp = self.send_request(req, timeouts, deadline).await?;
                let status = resp.status();
                let body = read_body(resp.into_body(), deadline, timeouts).await?;
                Ok((status, body))
            })
            .await?;
        let mut t = target.clone();
        t.key = Some(token);
        Ok(std::borrow::Cow::Owned(t))
    }

    /// Sends the request and waits for the response head, within the connect and first-byte
    /// limits and the attempt deadline.
    async fn send(
        &self,
        call: &Call<'_>,
        stream: bool,
        deadline: Instant,
    ) -> Result<http::Response<hyper::body::Incoming>, UpstreamError> {
        let target = self
            .authorized(call.target, call.timeouts, deadline)
            .await?;
        let adapter = adapter_for(target.format);
        let req = adapter.request(&target, call.request, stream)?;
        let resp = self.send_request(req, call.timeouts, deadline).await?;
        self.answered(call.target, resp.headers()).await;
        Ok(resp)
    }

    async fn send_request(
        &self,
        req: http::Request<Full<Bytes>>,
        timeouts: Timeouts,
        deadline: Instant,
    ) -> Result<http::Response<hyper::body::Incoming>, UpstreamError> {
        let head_deadline = deadline.min(Instant::now() + timeouts.first_byte);
        let sent = CONNECT_LIMIT.scope(timeouts.connect, self.pools.request(&self.http, req));
        match tokio::time::timeout_at(head_deadline, sent).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(request_error(&e)),
            Err(_) => Err(deadline_error(
                Phase::FirstByte,
                head_deadline == deadline,
                timeouts,
            )),
        }
    }

    /// Embeddings: one vector per input, in input order.
    pub async fn embed(&self, call: EmbedCall<'_>) -> Result<EmbeddingResponse, CallError> {
        let deadline = Instant::now() + call.timeouts.total;
        let work = async {
            let target = self
                .authorized(call.target, call.timeouts, deadline)
                .await?;
            let adapter = adapter_for(target.format);
            let req = adapter.embed_request(&target, call.request)?;
            let resp = self.send_request(req, call.timeouts, deadline).await?;
            self.answered(call.target, resp.headers()).await;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = read_body(resp.into_body(), deadline, call.timeouts).await?;
            if !status.is_success() {
                return Err(adapter.classify(status, &headers, &body));
            }
            let mut reply = adapter.parse_embeddings(call.target, &body)?;
            if reply.usage.prompt_tokens == 0 {
                // Gemini reports no token count: bill on an estimate rather than nothing.
                reply.usage.prompt_tokens =
                    crate::gemini::estimated_embedding_tokens(&call.request.input);
            }
            if reply.data.len() != call.request.input.len() {
                return Err(UpstreamError::malformed(
                    Phase::Body,
                    format!(
                        "{} embeddings for {} inputs",
                        reply.data.len(),
                        call.request.input.len()
                    ),
                ));
            }
            Ok(reply)
        };
        tokio::select! {
            biased;
            _ = call.cancel.cancelled() => Err(CallError::Cancelled),
            r = work => r.map_err(CallError::Upstream),
        }
    }

    /// A non-streamed chat completion.
    pub async fn chat(&self, call: Call<'_>) -> Result<ChatResponse, CallError> {
        let deadline = Instant::now() + call.timeouts.total;
        let work = async {
            let resp = self.send(&call, false, deadline).await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = read_body(resp.into_body(), deadline, call.timeouts).await?;
            let adapter = adapter_for(call.target.format);
            if !status.is_success() {
                return Err(adapter.classify(status, &headers, &body));
            }
            adapter.parse_response(call.target, &body)
        };
        tokio::select! {
            biased;
            _ = call.cancel.cancelled() => Err(CallError::Cancelled),
            r = work => r.map_err(CallError::Upstream),
        }
    }

    /// A streamed chat completion: returns once the upstream accepted the request (status 2xx);
    /// an error status is classified and returned here instead.
    pub async fn chat_stream(&self, call: Call<'_>) -> Result<ChunkStream, CallError> {
        let started = Instant::now();
        let deadline = started + call.timeouts.total;
        let work = async {
            let resp = self.send(&call, true, deadline).await?;
            let status = resp.status();
            if !status.is_success() {
                let headers = resp.headers().clone();
                let body = read_body(resp.into_body(), deadline, call.timeouts).await?;
                return Err(adapter_for(call.target.format).classify(status, &headers, &body));
            }
            Ok(resp.into_body())
        };
        let body = tokio::select! {
            biased;
            _ = call.cancel.cancelled() => return Err(CallError::Cancelled),
            r = work => r?,
        };
        let adapter = adapter_for(call.target.format);
        let skipped = Arc::new(AtomicU32::new(0));
        let state = StreamState {
            body,
            parser: Framer::new(adapter.framing()),
            decoder: adapter.decoder(call.target),
            events: Vec::new(),
            pending: VecDeque::new(),
            error: None,
            done: false,
            first_deadline: Some(started + call.timeouts.first_token),
            idle_deadline: None,
            deadline,
            timeouts: call.timeouts,
            malformed: call.malformed,
            skipped: skipped.clone(),
            cancel: call.cancel.clone(),
        };
        Ok(ChunkStream {
            chunks: Box::pin(futures::stream::unfold(state, next_chunk)),
            skipped,
        })
    }
}

fn deadline_error(phase: Phase, total: bool, t: Timeouts) -> UpstreamError {
    let (which, limit) = if total {
        ("total", t.total)
    } else {
        ("first byte", t.first_byte)
    };
    UpstreamError::new(
        ErrorClass::Timeout,
        phase,
        format!(
            "no {} within the {which} timeout of {limit:?}",
            match phase {
                Phase::FirstByte => "answer",
                _ => "complete answer",
            }
        ),
    )
}

/// The limit a stream's current wait runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Total,
    FirstToken,
    Idle,
}

impl Limit {
    /// The nearest of the stream's limits now.
    fn of(s: &StreamState) -> (Instant, Limit) {
        let tighter = match (s.first_deadline, s.idle_deadline) {
            (Some(first), _) => Some((first, Limit::FirstToken)),
            (None, Some(idle)) => Some((idle, Limit::Idle)),
            (None, None) => None,
        };
        match tighter {
            Some(t) if t.0 < s.deadline => t,
            _ => (s.deadline, Limit::Total),
        }
    }

    /// The error when it passed.
    fn passed(self, phase: Phase, t: Timeouts) -> UpstreamError {
        match self {
            Limit::Total => deadline_error(phase, true, t),
            Limit::FirstToken => UpstreamError::new(
                ErrorClass::Timeout,
                phase,
                format!(
                    "no first token within the first-token timeout of {:?}",
                    t.first_token
                ),
            ),
            Limit::Idle => UpstreamError::new(
                ErrorClass::Timeout,
                phase,
                format!(
                    "stream stalled: no chunk within the idle timeout of {:?}",
                    t.idle
                ),
            ),
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn request_error(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(t) = s.downcast_ref::<ConnectTimeout>() {
            return UpstreamError::new(ErrorClass::Timeout, Phase::Connect, t.to_string());
        }
        source = s.source();
    }
    if e.is_connect() {
        UpstreamError::new(
            ErrorClass::Unavailable,
            Phase::Connect,
            format!("cannot connect: {}", root_cause(e)),
        )
    } else {
        UpstreamError::new(
            ErrorClass::Unavailable,
            Phase::FirstByte,
            format!("connection failed before the answer: {}", root_cause(e)),
        )
    }
}

async fn read_body(
    body: hyper::body::Incoming,
    deadline: Instant,
    timeouts: Timeouts,
) -> Result<Bytes, UpstreamError> {
    match tokio::time::timeout_at(deadline, Limited::new(body, MAX_BODY).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => Err(UpstreamError::new(
            ErrorClass::Unavailable,
            Phase::Body,
            format!("body failed: {}", root_cause(e.as_ref())),
        )),
        Err(_) => Err(deadline_error(Phase::Body, true, timeouts)),
    }
}

struct StreamState {
    body: hyper::body::Incoming,
    parser: Framer,
    decoder: Box<dyn StreamDecoder>,
    events: Vec<SseEvent>,
    pending: VecDeque<ChatChunk>,
    /// Yielded once the chunks decoded before it are out.
    error: Option<CallError>,
    /// The terminal event was seen.
    done: bool,
    /// Until the first content: the first-token deadline.
    first_deadline: Option<Instant>,
    /// After it: when the silence since the last chunk becomes a stall.
    idle_deadline: Option<Instant>,
    deadline: Instant,
    timeouts: Timeouts,
    malformed: crate::MalformedEvents,
    skipped: Arc<AtomicU32>,
    cancel: CancellationToken,
}

async fn next_chunk(mut s: StreamState) -> Option<(Result<ChatChunk, CallError>, StreamState)> {
    loop {
        if let Some(chunk) = s.pending.pop_front() {
            if s.first_deadline.is_none() || chunk.carries_answer() {
                s.first_deadline = None;
                s.idle_deadline = Some(Instant::now() + s.timeouts.idle);
            }
            return Some((Ok(chunk), s));
        }
        if let Some(e) = s.error.take() {
            s.done = true;
            return Some((Err(e), s));
        }
        if s.done {
            return None;
        }
        let (at, limit) = Limit::of(&s);
        let frame = tokio::select! {
            biased;
            _ = s.cancel.cancelled() => {
                s.error = Some(CallError::Cancelled);
                continue;
            }
            frame = tokio::time::timeout_at(at, s.body.frame()) => frame,
        };
        let phase = if s.first_deadline.is_some() {
            Phase::FirstByte
        } else {
            Phase::Stream
        };
        let failure = match frame {
            Err(_) => Some(limit.passed(phase, s.timeouts)),
            Ok(None) => {
                let mut last = Vec::new();
                if s.decoder.ended(&mut last) {
                    s.pending.extend(last);
                    s.done = true;
                    continue;
                }
                Some(UpstreamError::new(
                    ErrorClass::Unavailable,
                    phase,
                    "stream ended without its terminal event",
                ))
            }
            Ok(Some(Err(e))) => Some(UpstreamError::new(
                ErrorClass::Unavailable,
                phase,
                format!("stream cut: {}", root_cause(&e)),
            )),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => decode(&mut s, &data),
                Err(_) => None, // trailers carry nothing we use
            },
        };
        if let Some(e) = failure {
            s.error = Some(CallError::Upstream(e));
        }
    }
}

fn decode(s: &mut StreamState, data: &[u8]) -> Option<UpstreamError> {
    if let Err(e) = s.parser.push(data, &mut s.events) {
        return Some(UpstreamError::malformed(Phase::Stream, e));
    }
    let mut out = Vec::new();
    for event in s.events.drain(..) {
        match s.decoder.event(&event, &mut out) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Done) => {
                s.done = true;
                break;
            }
            Err(e) if e.malformed && s.malformed == crate::MalformedEvents::Skip => {
                s.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "malformed stream event skipped");
            }
            Err(e) => {
                s.pending.extend(out);
                return Some(e);
            }
        }
    }
    s.pending.extend(out);
    None
}
