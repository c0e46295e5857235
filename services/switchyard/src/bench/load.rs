//! The open-loop load generator: requests leave on a fixed schedule whatever the answers, and
//! each latency is measured from when its request was due (so a stalled server cannot hide its
//! queueing: no coordinated omission).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use switchyard_proto::v1 as pb;
use tokio::time::Instant;

/// What to send, where, how fast.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where: an OpenAI-compatible base URL (`http://host:port/v1`) or a gRPC address.
    pub target: Target,
    /// Bearer key.
    pub key: String,
    /// Model.
    pub model: String,
    /// Requests per second.
    pub rate: u32,
    /// For how long.
    pub duration: Duration,
    /// Streamed requests.
    pub stream: bool,
    /// `max_tokens` of each request.
    pub max_tokens: u32,
    /// Most requests in flight; past it, requests due are counted as dropped, not sent.
    pub max_in_flight: usize,
    /// How requests are sent on their schedule.
    pub pacing: Pacing,
}

/// How the generator keeps its schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Pacing {
    /// On the async runtime's timer, which fires on millisecond ticks: every request due within
    /// a tick leaves at its end, together (four at a time at 4,000 req/s), as open-loop tools
    /// that pace with the runtime's timer send them.
    #[default]
    Tick,
    /// Each request at its own time, from a thread of its own sleeping between requests:
    /// arrivals evenly spread, so the server cannot share a wake-up between requests.
    Even,
}

/// The API to drive.
#[derive(Debug, Clone)]
pub enum Target {
    /// `POST {base}/chat/completions`.
    Http(String),
    /// `switchyard.v1.Router` at this URL (`http://host:port`).
    Grpc(String),
}

/// One request's result.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ok: bool,
    latency: Duration,
    ttft: Option<Duration>,
}

/// What a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Requests per second asked for.
    pub target_rate: u32,
    /// Requests sent per second.
    pub achieved_rate: f64,
    /// Requests sent.
    pub sent: u64,
    /// Answered with success.
    pub ok: u64,
    /// Failed (status, transport, or a stream without its end).
    pub errors: u64,
    /// Not sent: too many in flight.
    pub dropped: u64,
    /// Latency percentiles, ms: p50, p90, p99, p99.9, max.
    pub latency_ms: Percentiles,
    /// Time to first token percentiles, ms (streams).
    pub ttft_ms: Option<Percentiles>,
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    fn of(mut v: Vec<Duration>) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let at = |q: f64| {
            let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
            v[i].as_secs_f64() * 1000.0
        };
        Some(Percentiles {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        })
    }
}

enum Driver {
    Http {
        client: Client<HttpConnector, Full<Bytes>>,
        url: String,
        auth: String,
        body: Bytes,
    },
    Grpc {
        client: pb::router_client::RouterClient<tonic::transport::Channel>,
        auth: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
        request: Box<pb::ChatRequest>,
    },
}

impl Driver {
    async fn new(plan: &Plan) -> Result<Self, String> {
        match &plan.target {
            Target::Http(base) => {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                let client = Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .pool_max_idle_per_host(4096)
                    .build(connector);
                let body = serde_json::json!({
                    "model": plan.model,
                    "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
                    "max_tokens": plan.max_tokens,
                    "stream": plan.stream,
                });
                Ok(Driver::Http {
                    client,
                    url: format!("{}/chat/completions", base.trim_end_matches('/')),
                    auth: format!("Bearer {}", plan.key),
                    body: Bytes::from(body.to_string()),
                })
            }
            Target::Grpc(url) => {
                let channel = tonic::transport::Endpoint::from_shared(url.clone())
                    .map_err(|e| format!("bad gRPC address {url}: {e}"))?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(|e| format!("cannot reach {url}: {e}"))?;
                let auth = format!("Bearer {}", plan.key)
                    .parse()
                    .map_err(|_| "the key is not valid in gRPC metadata".to_string())?;
                let request = pb::ChatRequest {
                    model: plan.model.clone(),
                    messages: vec![pb::Message {
                        role: pb::Role::User as i32,
                        content: vec![pb::ContentPart {
                            part: Some(pb::content_part::Part::Text(
                                "Say hello to the benchmark.".into(),
                            )),
                        }],
                        ..Default::default()
                    }],
                    max_tokens: Some(plan.max_tokens),
                    ..Default::default()
                };
                Ok(Driver::Grpc {
                    client: pb::router_client::RouterClient::new(channel),
                    auth,
                    request: Box::new(request),
                })
            }
        }
    }

    async fn one(&self, due: Instant, stream: bool) -> Sample {
        let failed = |due: Instant| Sample {
            ok: false,
            latency: due.elapsed(),
            ttft: None,
        };
        match self {
            Driver::Http {
                client,
                url,
                auth,
                body,
            } => {
                let Ok(req) = hyper::Request::post(url.as_str())
                    .header("content-type", "application/json")
                    .header("authorization", auth.as_str())
                    .body(Full::new(body.clone()))
                else {
                    return failed(due);
                };
                let Ok(resp) = client.request(req).await else {
                    return failed(due);
                };
                let ok_status = resp.status().is_success();
                let mut body = resp.into_body();
                let mut ttft = None;
                let mut tail = Vec::new();
                while let Some(frame) = body.frame().await {
                    let Ok(frame) = frame else {
                        return failed(due);
                    };
                    if let Ok(data) = frame.into_data() {
                        if ttft.is_none() && stream {
                            ttft = Some(due.elapsed());
                        }
                        // Keep only the end: enough to see `[DONE]` or an error event.
                        tail.extend_from_slice(&data);
                        if tail.len() > 4096 {
                            tail.drain(..tail.len() - 256);
                        }
                    }
                }
                let ended = !stream || tail.windows(6).any(|w| w == b"[DONE]");
                Sample {
                    ok: ok_status && ended,
                    latency: due.elapsed(),
                    ttft,
                }
            }
            Driver::Grpc {
                client,
                auth,
                request,
            } => {
                let mut client = client.clone();
                let mut req = tonic::Request::new((**request).clone());
                req.metadata_mut().insert("authorization", auth.clone());
                if !stream {
                    let ok = client.chat(req).await.is_ok();
                    return Sample {
                        ok,
                        latency: due.elapsed(),
                        ttft: None,
                    };
                }
                let Ok(resp) = client.chat_stream(req).await else {
                    return failed(due);
                };
                let mut events = resp.into_inner();
                let mut ttft = None;
                let mut done = false;
                loop {
                    match events.message().await {
                        Ok(Some(event)) => {
                            if ttft.is_none() {
                                ttft = Some(due.elapsed());
                            }
                            if matches!(event.event, Some(pb::chat_stream_event::Event::Done(_))) {
                                done = true;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => return failed(due),
                    }
                }
                Sample {
                    ok: done,
                    latency: due.elapsed(),
                    ttft,
                }
            }
        }
    }
}

/// Requests sent, how many were dropped (too many in flight) and how long sending took.
type Sent = (Vec<tokio::task::JoinHandle<Sample>>, u64, Duration);

/// The schedule of `plan`: how many requests, how far apart.
fn schedule(plan: &Plan) -> (u64, Duration) {
    (
        (plan.duration.as_secs_f64() * f64::from(plan.rate)).round() as u64,
        Duration::from_secs_f64(1.0 / f64::from(plan.rate)),
    )
}

/// Starts request `due` unless too many are in flight (`None`: dropped).
fn launch(
    driver: &Arc<Driver>,
    in_flight: &Arc<tokio::sync::Semaphore>,
    runtime: &tokio::runtime::Handle,
    due: Instant,
    stream: bool,
) -> Option<tokio::task::JoinHandle<Sample>> {
    let permit = in_flight.clone().try_acquire_owned().ok()?;
    let driver = driver.clone();
    Some(runtime.spawn(async move {
        let sample = driver.one(due, stream).await;
        drop(permit);
        sample
    }))
}

/// [`Pacing::Tick`]: sleeps on the runtime's timer until each request is due.
async fn pace_on_ticks(driver: Arc<Driver>, plan: &Plan) -> Sent {
    let (total, interval) = schedule(plan);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(plan.max_in_flight));
    let runtime = tokio::runtime::Handle::current();
    let mut tasks = Vec::with_capacity(total as usize);
    let started = Instant::now();
    let mut dropped = 0;
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        match launch(&driver, &in_flight, &runtime, due, plan.stream) {
            Some(task) => tasks.push(task),
            None => dropped += 1,
        }
    }
    (tasks, dropped, started.elapsed())
}

/// [`Pacing::Even`]: a thread of its own sleeps until each request is due (the kernel's
/// high-resolution timers, late by tens of microseconds) and hands it to the runtime.
fn pace_evenly(driver: Arc<Driver>, plan: &Plan, runtime: tokio::runtime::Handle) -> Sent {
    let (total, interval) = schedule(plan);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(plan.max_in_flight));
    let mut tasks = Vec::with_capacity(total as usize);
    let started = std::time::Instant::now();
    let mut dropped = 0;
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        let now = std::time::Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let due = Instant::from_std(due);
        match launch(&driver, &in_flight, &runtime, due, plan.stream) {
            Some(task) => tasks.push(task),
            None => dropped += 1,
        }
    }
    (tasks, dropped, started.elapsed())
}

/// Runs `plan` and reports what it measured.
pub async fn run(plan: &Plan) -> Result<Report, String> {
    if plan.rate == 0 {
        return Err("the rate must be at least 1 request per second".into());
    }
    let driver = Arc::new(Driver::new(plan).await?);
    let (tasks, dropped, sending) = match plan.pacing {
        Pacing::Tick => pace_on_ticks(driver, plan).await,
        Pacing::Even => {
            let runtime = tokio::runtime::Handle::current();
            let paced = plan.clone();
            tokio::task::spawn_blocking(move || pace_evenly(driver, &paced, runtime))
                .await
                .map_err(|e| format!("the load generator stopped: {e}"))?
        }
    };
    let mut samples: Vec<Sample> = Vec::with_capacity(tasks.len());
    for task in tasks {
        samples.push(
            task.await
                .map_err(|e| format!("a request task failed: {e}"))?,
        );
    }
    let sent = samples.len() as u64;
    let ok = samples.iter().filter(|s| s.ok).count() as u64;
    let latency = Percentiles::of(samples.iter().filter(|s| s.ok).map(|s| s.latency).collect());
    let ttft = Percentiles::of(samples.iter().filter_map(|s| s.ttft).collect());
    Ok(Report {
        target_rate: plan.rate,
        achieved_rate: sent as f64 / sending.as_secs_f64().max(1e-9),
        sent,
        ok,
        errors: sent - ok,
        dropped,
        latency_ms: latency.unwrap_or(Percentiles {
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            p999: 0.0,
            max: 0.0,
        }),
        ttft_ms: ttft,
    })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = &self.latency_ms;
        write!(
            f,
            "rate {}/s achieved {:.0}/s  sent {} ok {} errors {} dropped {}  latency ms p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}",
            self.target_rate,
            self.achieved_rate,
            self.sent,
            self.ok,
            self.errors,
            self.dropped,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max
        )?;
        if let Some(t) = &self.ttft_ms {
            write!(f, "  ttft ms p50 {:.3} p99 {:.3}", t.p50, t.p99)?;
        }
        Ok(())
    }
}
