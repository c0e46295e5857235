//! Every fault the provider simulator can produce, through the real client over HTTP, for every
//! wire format (OpenAI, Anthropic, Gemini, Vertex AI's Gemini and Anthropic, Bedrock, Azure
//! OpenAI, each with the authentication it expects), streamed and not, each mapped to its class
//! (and Retry-After carried).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};
use switchyard_config::catalog::WireFormat;
use switchyard_core::{ChatRequest, ErrorClass, FinishReason, Tool, ToolChoice};
use switchyard_provider_sim::SimHandle;
use switchyard_providers::{
    Call, CallError, ClientOptions, MalformedEvents, Phase, ProviderClient, ProviderOptions,
    Target, Timeouts, UpstreamError,
};
use switchyard_testkit::{SimControl, start_sim};
use tokio_util::sync::CancellationToken;

const CONFIG: &str = r#"
seed: 11
providers:
  - { id: oai, format: openai, api_key: sk-oai-test-0001, models: [gpt-up] }
  - { id: ant, format: anthropic, api_key: sk-ant-test-0002, models: [claude-up] }
  - { id: gem, format: gemini, api_key: gm-test-0003, models: [gemini-up] }
  - { id: vtx, format: vertex, api_key: "switchyard-test@sim-project.iam.gserviceaccount.com", models: [gemini-up] }
  - { id: vant, format: vertex_anthropic, api_key: "switchyard-test@sim-project.iam.gserviceaccount.com", models: [claude-up] }
  - { id: brk, format: bedrock, api_key: ABSK-test-0004, aws_region: eu-west-1, models: ["anthropic.claude-up-v1:0"] }
  - { id: azr, format: azure, api_key: az-test-0005, models: [gpt-deployment] }
"#;

const FORMATS: [&str; 7] = ["oai", "ant", "gem", "vtx", "vant", "brk", "azr"];

/// The test service account's key file, pointed at `token_uri`.
pub fn service_account(token_uri: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vertex/service-account.json");
    let mut sa: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    sa["token_uri"] = json!(token_uri);
    sa.to_string()
}

struct Fixture {
    sim: SimHandle,
    client: ProviderClient,
}

impl Fixture {
    async fn new() -> Self {
        Fixture {
            sim: start_sim(CONFIG).await.unwrap(),
            client: ProviderClient::new(ClientOptions::default()).unwrap(),
        }
    }

    fn target(&self, id: &str) -> Target {
        let base_url = self.sim.base_url(id).unwrap();
        let sa = service_account(&format!("{base_url}/token"));
        let (format, model, key) = match id {
            "oai" => (WireFormat::Openai, "gpt-up", "sk-oai-test-0001"),
            "gem" => (WireFormat::Gemini, "gemini-up", "gm-test-0003"),
            "vtx" => (WireFormat::Vertex, "gemini-up", sa.as_str()),
            "vant" => (WireFormat::VertexAnthropic, "claude-up", sa.as_str()),
            "brk" => (
                WireFormat::Bedrock,
                "anthropic.claude-up-v1:0",
                "ABSK-test-0004",
            ),
            "azr" => (WireFormat::Azure, "gpt-deployment", "az-test-0005"),
            _ => (WireFormat::Anthropic, "claude-up", "sk-ant-test-0002"),
        };
        let options = ProviderOptions {
            api_version: (id == "azr").then(|| "2024-10-21".to_string()),
            project: Some("sim-project".into()),
            location: Some("europe-west4".into()),
            aws_region: Some("eu-west-1".into()),
            ..ProviderOptions::default()
        };
        Target {
            endpoint: format!("m@{id}").as_str().into(),
            provider: id.into(),
            format,
            base_url,
            upstream_model: model.into(),
            key: Some(SecretString::from(key)),
            max_output: 256,
            options: std::sync::Arc::new(options),
            owner: None,
            capacity: None,
        }
    }

    async fn faults(&self, id: &str, faults: Value) {
        SimControl::new(self.sim.control_url())
            .set_faults(id, &faults)
            .await
            .unwrap();
    }

    async fn stats(&self, id: &str) -> Value {
        SimControl::new(self.sim.control_url())
            .stats(id)
            .await
            .unwrap()
    }

    async fn chat(
        &self,
        target: &Target,
        req: &ChatRequest,
        timeouts: Timeouts,
    ) -> Result<switchyard_core::ChatResponse, CallError> {
        let cancel = CancellationToken::new();
        self.client
            .chat(Call {
                target,
                request: req,
                timeouts,
                malformed: MalformedEvents::Skip,
                cancel: &cancel,
            })
            .await
    }

    /// Runs a streamed call to its end: the chunks, and the error that ended it (None = a clean
    /// end after the terminal event).
    async fn stream(
        &self,
        target: &Target,
        req: &ChatRequest,
        timeouts: Timeouts,
    ) -> (Vec<switchyard_core::ChatChunk>, Option<CallError>) {
        let (chunks, end, _) = self
            .stream_with(target, req, timeouts, MalformedEvents::Skip)
            .await;
        (chunks, end)
    }

    /// [`Self::stream`] with a choice of what to do with broken events; also the number
    /// skipped.
    async fn stream_with(
        &self,
        target: &Target,
        req: &ChatRequest,
        timeouts: Timeouts,
        malformed: MalformedEvents,
    ) -> (Vec<switchyard_core::ChatChunk>, Option<CallError>, u32) {
        let cancel = CancellationToken::new();
        let mut stream = match self
            .client
            .chat_stream(Call {
                target,
                request: req,
                timeouts,
                malformed,
                cancel: &cancel,
            })
            .await
        {
            Ok(s) => s,
            Err(e) => return (Vec::new(), Some(e), 0),
        };
        let mut chunks = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(c) => chunks.push(c),
                Err(e) => {
                    assert!(stream.next().await.is_none(), "items after the error");
                    return (chunks, Some(e), stream.skipped());
                }
            }
        }
        let skipped = stream.skipped();
        (chunks, None, skipped)
    }
}

fn quick() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_secs(5),
        first_token: Duration::from_secs(5),
        idle: Duration::from_secs(5),
        total: Duration::from_secs(10),
    }
}

fn hello() -> ChatRequest {
    ChatRequest::user("ignored-routing-name", "hello")
}

fn upstream(e: Option<CallError>) -> UpstreamError {
    match e {
        Some(CallError::Upstream(u)) => u,
        other => panic!("expected an upstream error, got {other:?}"),
    }
}

fn text_of(chunks: &[switchyard_core::ChatChunk]) -> String {
    chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|c| c.delta.content.as_deref())
        .collect()
}

#[tokio::test]
async fn completions_and_streams_come_back_normalized() {
    let f = Fixture::new().await;
    for id in FORMATS {
        let t = f.target(id);
        let resp = f
            .chat(&t, &hello(), quick())
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(resp.provider.as_deref(), Some(id));
        let msg = &resp.choices[0].message;
        assert!(
            msg.text_content().starts_with(&format!("Hello from {id}")),
            "{id}: {resp:?}"
        );
        assert_eq!(resp.choices[0].finish_reason, Some(FinishReason::Stop));
        let usage = resp.usage.unwrap();
        assert_eq!(usage.completion_tokens, 16);
        assert!(usage.prompt_tokens > 0);

        let (chunks, end) = f.stream(&t, &hello(), quick()).await;
        assert!(end.is_none(), "{id}: {end:?}");
        assert!(text_of(&chunks).starts_with(&format!("Hello from {id}")));
        let last = chunks.last().unwrap();
        assert_eq!(
            last.usage.unwrap().completion_tokens,
            16,
            "{id}: usage at the end of the stream"
        );
        assert!(chunks.iter().any(|c| {
            c.choices
                .iter()
                .any(|ch| ch.finish_reason == Some(FinishReason::Stop))
        }));
        assert!(chunks.iter().all(|c| c.provider.as_deref() == Some(id)));
    }
    // The upstream saw the upstream model name and our key, never the routing name.
    let stats = f.stats("oai").await;
    assert_eq!(stats["by_model"]["gpt-up"], 2);
    assert_eq!(stats["recent"][0]["key_hint"], "0001");
}

#[tokio::test]
async fn error_statuses_map_to_classes_with_retry_after() {
    let f = Fixture::new().await;
    let cases: [(&str, u16, ErrorClass, bool); 9] = [
        ("oai", 429, ErrorClass::RateLimited, true),
        ("oai", 500, ErrorClass::Unavailable, false),
        ("oai", 502, ErrorClass::Unavailable, false),
        ("oai", 503, ErrorClass::Unavailable, true),
        ("oai", 504, ErrorClass::Timeout, false),
        ("ant", 429, ErrorClass::RateLimited, true),
        ("ant", 500, ErrorClass::Unavailable, false),
        ("ant", 529, ErrorClass::Unavailable, true),
        ("ant", 401, ErrorClass::UpstreamAuth, false),
    ];
    for (id, status, class, has_retry_after) in cases {
        f.faults(
            id,
            json!({"errors": [{"status": status, "rate": 1.0}], "retry_after_s": 2}),
        )
        .await;
        let t = f.target(id);
        for stream in [false, true] {
            let e = if stream {
                upstream(f.stream(&t, &hello(), quick()).await.1)
            } else {
                upstream(f.chat(&t, &hello(), quick()).await.err())
            };
            assert_eq!(e.class, class, "{id} {status} stream={stream}: {e}");
            assert_eq!(e.status, Some(status));
            assert_eq!(e.phase, Phase::FirstByte);
            let expected = has_retry_after.then(|| Duration::from_secs(2));
            assert_eq!(e.retry_after, expected, "{id} {status} stream={stream}");
        }
    }
}

#[tokio::test]
async fn a_wrong_key_and_an_unknown_model() {
    let f = Fixture::new().await;
    for id in FORMATS {
        let mut t = f.target(id);
        t.key = Some(SecretString::from("sk-wrong"));
        let e = upstream(f.chat(&t, &hello(), quick()).await.err());
        assert_eq!(e.class, ErrorClass::UpstreamAuth, "{id}: {e}");
        assert!(!e.message.contains("sk-wrong"), "the key leaked into {e}");

        let mut t = f.target(id);
        t.upstream_model = "retired".into();
        let e = upstream(f.chat(&t, &hello(), quick()).await.err());
        assert_eq!(
            (e.class, e.status),
            (ErrorClass::Unavailable, Some(404)),
            "{id}: {e}"
        );
    }
}

#[tokio::test]
async fn a_hang_times_out_at_the_first_byte_limit() {
    let f = Fixture::new().await;
    let limits = Timeouts {
        first_byte: Duration::from_millis(300),
        first_token: Duration::from_millis(300),
        ..quick()
    };
    for id in FORMATS {
        f.faults(id, json!({"hang_rate": 1.0})).await;
        let t = f.target(id);
        for stream in [false, true] {
            let started = Instant::now();
            let e = if stream {
                upstream(f.stream(&t, &hello(), limits).await.1)
            } else {
                upstream(f.chat(&t, &hello(), limits).await.err())
            };
            assert_eq!(
                (e.class, e.phase),
                (ErrorClass::Timeout, Phase::FirstByte),
                "{id}: {e}"
            );
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(300) && took < Duration::from_secs(3),
                "{took:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_slow_first_token_and_a_slow_stream_hit_their_limits() {
    let f = Fixture::new().await;
    for id in FORMATS {
        let t = f.target(id);
        // Headers come at once, the first token late: the first-token limit covers it.
        f.faults(id, json!({"latency": {"ttft_ms": 600}})).await;
        let limits = Timeouts {
            first_token: Duration::from_millis(200),
            ..quick()
        };
        let e = upstream(f.stream(&t, &hello(), limits).await.1);
        assert_eq!(
            (e.class, e.phase),
            (ErrorClass::Timeout, Phase::FirstByte),
            "{id}: {e}"
        );

        // Tokens trickle: the total limit ends the stream mid-way, with an error, not a clean end.
        f.faults(id, json!({"latency": {"per_token_ms": 100}}))
            .await;
        let limits = Timeouts {
            total: Duration::from_millis(700),
            ..quick()
        };
        let (chunks, end) = f.stream(&t, &hello(), limits).await;
        let e = upstream(end);
        assert_eq!(
            (e.class, e.phase),
            (ErrorClass::Timeout, Phase::Stream),
            "{id}: {e}"
        );
        assert!(
            !text_of(&chunks).is_empty(),
            "{id}: some tokens arrived first"
        );
    }
}

#[tokio::test]
async fn a_reset_is_unavailable() {
    let f = Fixture::new().await;
    for id in FORMATS {
        f.faults(id, json!({"reset_rate": 1.0})).await;
        let t = f.target(id);
        for stream in [false, true] {
            let e = if stream {
                upstream(f.stream(&t, &hello(), quick()).await.1)
            } else {
                upstream(f.chat(&t, &hello(), quick()).await.err())
            };
            assert_eq!(e.class, ErrorClass::Unavailable, "{id} {stream}: {e}");
            assert_eq!(e.status, None);
        }
    }
}

#[tokio::test]
async fn malformed_answers_are_unavailable() {
    let f = Fixture::new().await;
    for id in FORMATS {
        f.faults(id, json!({"malformed_rate": 1.0})).await;
        let t = f.target(id);
        let e = upstream(f.chat(&t, &hello(), quick()).await.err());
        assert_eq!(
            (e.class, e.phase),
            (ErrorClass::Unavailable, Phase::Body),
            "{id}: {e}"
        );
        assert!(e.message.contains("malformed"), "{e}");
        let (_, end, _) = f
            .stream_with(&t, &hello(), quick(), MalformedEvents::Fail)
            .await;
        let e = upstream(end);
        assert_eq!(e.class, ErrorClass::Unavailable, "{id}: {e}");
        assert!(e.message.contains("malformed"), "{e}");
    }
}

#[tokio::test]
async fn a_broken_event_among_good_ones_is_skipped_and_counted_unless_fatal() {
    let f = Fixture::new().await;
    for id in FORMATS {
        let t = f.target(id);
        f.faults(id, json!({})).await;
        let (whole, end) = f.stream(&t, &hello(), quick()).await;
        assert!(end.is_none(), "{id}: {end:?}");
        f.faults(id, json!({"malformed_event_after": 3})).await;
        let (chunks, end, skipped) = f
            .stream_with(&t, &hello(), quick(), MalformedEvents::Skip)
            .await;
        assert!(end.is_none(), "{id}: {end:?}");
        assert_eq!(skipped, 1, "{id}");
        assert_eq!(text_of(&chunks), text_of(&whole), "{id}");
        assert!(chunks.iter().any(|c| c.usage.is_some()), "{id}");
        let (_, end, _) = f
            .stream_with(&t, &hello(), quick(), MalformedEvents::Fail)
            .await;
        let e = upstream(end);
        assert!(e.malformed && e.phase == Phase::Stream, "{id}: {e}");
    }
}

#[tokio::test]
async fn a_stream_that_finished_is_whole_without_its_terminal_event() {
    let f = Fixture::new().await;
    for id in FORMATS {
        let t = f.target(id);
        f.faults(id, json!({"omit_terminal_event": true})).await;
        let (chunks, end) = f.stream(&t, &hello(), quick()).await;
        assert!(end.is_none(), "{id}: {end:?}");
        let finish = chunks
            .iter()
            .flat_map(|c| c.choices.iter())
            .find_map(|ch| ch.finish_reason);
        assert_eq!(finish, Some(FinishReason::Stop), "{id}");
        assert!(!text_of(&chunks).is_empty(), "{id}");
        // Cut before the finish: still an error.
        f.faults(
            id,
            json!({"omit_terminal_event": true, "cut_stream_after": 4}),
        )
        .await;
        let e = upstream(f.stream(&t, &hello(), quick()).await.1);
        assert_eq!(e.class, ErrorClass::Unavailable, "{id}: {e}");
    }
}

#[tokio::test]
async fn a_stall_ends_within_the_idle_limit_and_slow_tokens_are_not_one() {
    let f = Fixture::new().await;
    let limits = Timeouts {
        idle: Duration::from_millis(300),
        ..quick()
    };
    for id in FORMATS {
        let t = f.target(id);
        f.faults(id, json!({"stall_stream_after": 5})).await;
        let started = Instant::now();
        let (chunks, end) = f.stream(&t, &hello(), limits).await;
        let took = started.elapsed();
        let e = upstream(end);
        assert_eq!(
            (e.class, e.phase),
            (ErrorClass::Timeout, Phase::Stream),
            "{id}: {e}"
        );
        assert!(e.message.contains("idle"), "{e}");
        assert!(took < Duration::from_secs(2), "{id}: {took:?}");
        assert!(!text_of(&chunks).is_empty(), "{id}");
        // Slow tokens within the idle limit are not a stall.
        f.faults(id, json!({"latency": {"per_token_ms": 100}}))
            .await;
        assert!(f.stream(&t, &hello(), limits).await.1.is_none(), "{id}");
    }
}

#[tokio::test]
async fn a_cut_stream_is_an_error_never_a_clean_end() {
    let f = Fixture::new().await;
    for id in FORMATS {
        f.faults(id, json!({"cut_stream_after": 4})).await;
        let t = f.target(id);
        let (chunks, end) = f.stream(&t, &hello(), quick()).await;
        let e = upstream(end);
        assert_eq!(
            (e.class, e.phase),
            (ErrorClass::Unavailable, Phase::Stream),
            "{id}: {e}"
        );
        let content_chunks = chunks
            .iter()
            .filter(|c| {
                c.choices
                    .iter()
                    .any(|ch| ch.delta.content.as_deref().is_some_and(|t| !t.is_empty()))
            })
            .count();
        assert_eq!(
            content_chunks, 4,
            "{id}: the chunks before the cut are delivered"
        );
        assert!(
            chunks.iter().all(|c| c.usage.is_none()),
            "{id}: no final usage chunk after a cut"
        );
    }
}

#[tokio::test]
async fn the_rate_limit_carries_retry_after() {
    let f = Fixture::new().await;
    for id in FORMATS {
        f.faults(id, json!({"rate_limit_rps": 1})).await;
        let t = f.target(id);
        let mut limited = None;
        for _ in 0..4 {
            if let Err(e) = f.chat(&t, &hello(), quick()).await {
                limited = Some(upstream(Some(e)));
                break;
            }
        }
        let e = limited.unwrap_or_else(|| panic!("{id}: never limited"));
        assert_eq!(e.class, ErrorClass::RateLimited, "{id}: {e}");
        assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
    }
}

/// What the client told its observer.
#[derive(Default)]
struct Seen {
    reported: std::sync::Mutex<Vec<switchyard_providers::RateLimits>>,
}

impl switchyard_providers::CapacityObserver for Seen {
    fn reported(
        &self,
        _: &Target,
        limits: &switchyard_providers::RateLimits,
    ) -> Option<switchyard_providers::Sharing> {
        self.reported.lock().unwrap().push(*limits);
        None
    }
}

#[tokio::test]
async fn every_answer_reports_the_capacity_left_in_its_formats_headers() {
    let f = Fixture::new().await;
    for id in ["oai", "azr", "ant", "vant"] {
        let seen = std::sync::Arc::new(Seen::default());
        let client = ProviderClient::new(ClientOptions::default())
            .unwrap()
            .with_observer(seen.clone());
        f.faults(
            id,
            json!({"capacity": {"requests": 2, "tokens": 100000, "window_ms": 5000}}),
        )
        .await;
        let t = f.target(id);
        let cancel = CancellationToken::new();
        let call = |stream: bool| {
            let client = client.clone();
            let (t, cancel) = (&t, &cancel);
            async move {
                let request = &hello();
                let call = Call {
                    target: t,
                    request,
                    timeouts: quick(),
                    malformed: MalformedEvents::Skip,
                    cancel,
                };
                if stream {
                    client.chat_stream(call).await.map(|_| ())
                } else {
                    client.chat(call).await.map(|_| ())
                }
            }
        };
        call(false).await.unwrap();
        call(true).await.unwrap();
        let e = upstream(call(false).await.err());
        assert_eq!(e.class, ErrorClass::RateLimited, "{id}: {e}");
        let reported = seen.reported.lock().unwrap().clone();
        assert_eq!(reported.len(), 3, "{id}: every answer, the 429 too");
        let left: Vec<u64> = reported
            .iter()
            .map(|l| l.requests.unwrap().remaining)
            .collect();
        assert_eq!(left, [1, 0, 0], "{id}");
        for l in &reported {
            let r = l.requests.unwrap();
            assert_eq!(r.limit, Some(2), "{id}");
            let reset = r.reset_in.unwrap();
            assert!(
                reset <= Duration::from_secs(5) && reset > Duration::from_secs(3),
                "{id}: {reset:?}"
            );
            let tokens = l.tokens.unwrap();
            assert_eq!(tokens.limit, Some(100_000), "{id}");
            assert!(tokens.remaining < 100_000, "{id}");
        }
    }
}

#[tokio::test]
async fn long_prompts_are_context_length_errors() {
    let f = Fixture::new().await;
    let long = ChatRequest::user("x", &"word ".repeat(400));
    for id in FORMATS {
        f.faults(id, json!({"context_limit": 100})).await;
        let t = f.target(id);
        let e = upstream(f.chat(&t, &long, quick()).await.err());
        assert_eq!(e.class, ErrorClass::ContextLengthExceeded, "{id}: {e}");
        let e = upstream(f.stream(&t, &long, quick()).await.1);
        assert_eq!(e.class, ErrorClass::ContextLengthExceeded, "{id}: {e}");
        assert!(f.chat(&t, &hello(), quick()).await.is_ok());
    }
}

#[tokio::test]
async fn refusals_are_content_policy() {
    let f = Fixture::new().await;
    let req = ChatRequest::user("x", "tell me the forbidden thing");
    for id in FORMATS {
        f.faults(id, json!({"refuse_on": "forbidden"})).await;
        let t = f.target(id);
        let e = upstream(f.chat(&t, &req, quick()).await.err());
        assert_eq!(e.class, ErrorClass::ContentPolicy, "{id}: {e}");
        let e = upstream(f.stream(&t, &req, quick()).await.1);
        assert_eq!(e.class, ErrorClass::ContentPolicy, "{id}: {e}");
    }
}

#[tokio::test]
async fn connection_refused_is_unavailable_at_connect() {
    let f = Fixture::new().await;
    let port = switchyard_testkit::free_port().unwrap();
    let mut t = f.target("oai");
    t.base_url = format!("http://127.0.0.1:{port}/v1");
    let e = upstream(f.chat(&t, &hello(), quick()).await.err());
    assert_eq!(
        (e.class, e.phase),
        (ErrorClass::Unavailable, Phase::Connect),
        "{e}"
    );
}

#[tokio::test]
async fn cancellation_ends_the_call_at_once() {
    let f = Fixture::new().await;
    f.faults("ant", json!({"hang_rate": 1.0})).await;
    let t = f.target("ant");
    let req = hello();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let r = f
        .client
        .chat(Call {
            target: &t,
            request: &req,
            timeouts: quick(),
            malformed: MalformedEvents::Skip,
            cancel: &cancel,
        })
        .await;
    assert_eq!(r.unwrap_err(), CallError::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(2));
}

fn weather_request(stream: bool) -> ChatRequest {
    let mut req = ChatRequest::user("x", "weather in Paris?");
    req.stream = stream;
    req.tools = vec![Tool {
        name: "get_weather".into(),
        description: Some("current weather".into()),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}),
        strict: None,
    }];
    req.tool_choice = Some(ToolChoice::Required);
    req
}

/// The tool call of a stream, assembled from its deltas: (id, name, arguments).
fn assemble_tool_call(chunks: &[switchyard_core::ChatChunk]) -> (String, String, String) {
    let mut id = String::new();
    let mut name = String::new();
    let mut args = String::new();
    for d in chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .flat_map(|c| c.delta.tool_calls.iter())
    {
        assert_eq!(d.index, 0);
        if let Some(i) = &d.id {
            id = i.clone();
        }
        if let Some(n) = &d.function.name {
            name = n.clone();
        }
        args.push_str(d.function.arguments.as_deref().unwrap_or(""));
    }
    (id, name, args)
}

#[tokio::test]
async fn tool_calls_round_trip_in_both_formats() {
    let f = Fixture::new().await;
    for id in FORMATS {
        let t = f.target(id);
        let resp = f.chat(&t, &weather_request(false), quick()).await.unwrap();
        assert_eq!(
            resp.choices[0].finish_reason,
            Some(FinishReason::ToolCalls),
            "{id}"
        );
        let call = &resp.choices[0].message.tool_calls[0];
        assert_eq!(call.name, "get_weather");
        assert!(!call.id.is_empty());
        let args: Value = serde_json::from_str(&call.arguments).unwrap();
        assert!(
            args["city"].is_string() && args["days"].is_i64(),
            "{id}: {args}"
        );

        let (chunks, end) = f.stream(&t, &weather_request(true), quick()).await;
        assert!(end.is_none(), "{id}: {end:?}");
        let (call_id, name, args) = assemble_tool_call(&chunks);
        assert!(!call_id.is_empty() && name == "get_weather", "{id}");
        let args: Value = serde_json::from_str(&args).unwrap();
        assert!(args["city"].is_string(), "{id}: {args}");
        assert!(chunks.iter().any(|c| {
            c.choices
                .iter()
                .any(|ch| ch.finish_reason == Some(FinishReason::ToolCalls))
        }));

        // The tool's result goes back upstream in the format's own shape, and the model answers.
        let mut follow_up = weather_request(false);
        follow_up.tool_choice = Some(ToolChoice::None);
        follow_up.messages.push(resp.choices[0].message.clone());
        let mut result =
            switchyard_core::Message::text(switchyard_core::Role::Tool, "18C and sunny");
        result.tool_call_id = Some(call.id.clone());
        follow_up.messages.push(result);
        let answer = f.chat(&t, &follow_up, quick()).await.unwrap();
        assert!(
            answer.choices[0]
                .message
                .text_content()
                .starts_with("Hello"),
            "{id}: {answer:?}"
        );
        let recent = &f.stats(id).await["recent"];
        assert_eq!(recent[recent.as_array().unwrap().len() - 1]["tools"], 1);
    }
}

#[tokio::test]
async fn invalid_tool_arguments_arrive_as_sent() {
    let f = Fixture::new().await;
    // Gemini carries arguments as an object, so they cannot arrive as broken JSON text.
    for id in FORMATS
        .into_iter()
        .filter(|id| !["gem", "vtx"].contains(id))
    {
        f.faults(id, json!({"invalid_tool_call_rate": 1.0})).await;
        let t = f.target(id);
        let (chunks, end) = f.stream(&t, &weather_request(true), quick()).await;
        assert!(
            end.is_none(),
            "{id}: a broken tool call is content, not a transport error"
        );
        let (_, _, args) = assemble_tool_call(&chunks);
        assert!(
            serde_json::from_str::<Value>(&args).is_err(),
            "{id}: {args}"
        );
    }
}

#[tokio::test]
async fn structured_output_comes_back_as_json_in_every_format() {
    let f = Fixture::new().await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "number"}}, "required": ["city", "temp"], "additionalProperties": false});
    for id in FORMATS {
        let t = f.target(id);
        let mut req = hello();
        req.response_format = Some(switchyard_core::ResponseFormat::JsonSchema {
            json_schema: switchyard_core::chat::JsonSchemaSpec {
                name: "weather".into(),
                description: None,
                schema: schema.clone(),
                strict: Some(true),
            },
        });
        let resp = f
            .chat(&t, &req, quick())
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let v: Value = serde_json::from_str(&resp.choices[0].message.text_content())
            .unwrap_or_else(|e| panic!("{id}: {e}: {resp:?}"));
        assert!(v["city"].is_string() && v["temp"].is_number(), "{id}: {v}");
        assert_eq!(
            resp.choices[0].finish_reason,
            Some(FinishReason::Stop),
            "{id}"
        );
        assert!(resp.choices[0].message.tool_calls.is_empty(), "{id}");

        req.stream = true;
        let (chunks, end) = f.stream(&t, &req, quick()).await;
        assert!(end.is_none(), "{id}: {end:?}");
        let v: Value = serde_json::from_str(&text_of(&chunks)).unwrap();
        assert!(v["city"].is_string(), "{id}: {v}");
    }
}

#[tokio::test]
async fn cloud_error_envelopes_map_to_classes_with_their_retry_delays() {
    let f = Fixture::new().await;
    let cases: [(&str, u16, ErrorClass, Option<u16>); 10] = [
        ("gem", 429, ErrorClass::RateLimited, Some(429)),
        ("gem", 500, ErrorClass::Unavailable, Some(500)),
        ("gem", 503, ErrorClass::Unavailable, Some(503)),
        ("gem", 504, ErrorClass::Timeout, Some(504)),
        ("vtx", 429, ErrorClass::RateLimited, Some(429)),
        ("brk", 429, ErrorClass::RateLimited, Some(429)),
        ("brk", 503, ErrorClass::Unavailable, Some(503)),
        ("brk", 529, ErrorClass::Unavailable, Some(429)),
        ("brk", 504, ErrorClass::Timeout, Some(408)),
        ("azr", 429, ErrorClass::RateLimited, Some(429)),
    ];
    for (id, status, class, answered) in cases {
        f.faults(
            id,
            json!({"errors": [{"status": status, "rate": 1.0}], "retry_after_s": 3}),
        )
        .await;
        let t = f.target(id);
        for stream in [false, true] {
            let e = if stream {
                upstream(f.stream(&t, &hello(), quick()).await.1)
            } else {
                upstream(f.chat(&t, &hello(), quick()).await.err())
            };
            assert_eq!(e.class, class, "{id} {status} stream={stream}: {e}");
            assert_eq!(e.status, answered, "{id} {status}");
            if class == ErrorClass::RateLimited {
                assert_eq!(e.retry_after, Some(Duration::from_secs(3)), "{id}: {e:?}");
            }
        }
    }
    // Bedrock names the exception it answered with.
    f.faults("brk", json!({"errors": [{"status": 429, "rate": 1.0}]}))
        .await;
    let e = upstream(f.chat(&f.target("brk"), &hello(), quick()).await.err());
    assert_eq!(e.provider_code.as_deref(), Some("ThrottlingException"));
}

#[tokio::test]
async fn vertex_exchanges_the_service_account_once_for_many_requests() {
    let f = Fixture::new().await;
    for _ in 0..3 {
        for id in ["vtx", "vant"] {
            f.chat(&f.target(id), &hello(), quick())
                .await
                .unwrap_or_else(|e| panic!("{id}: {e}"));
        }
    }
    let exchanges = f.stats("vtx").await["token_exchanges"].as_u64().unwrap()
        + f.stats("vant").await["token_exchanges"].as_u64().unwrap();
    assert_eq!(exchanges, 1, "one token for the account, cached");
    // The token endpoint refuses an account it does not know, and that is an auth failure.
    let sa = service_account(&format!("{}/token", f.sim.base_url("vtx").unwrap()))
        .replace("switchyard-test@", "intruder@");
    let mut t = f.target("vtx");
    t.key = Some(SecretString::from(sa));
    let e = upstream(f.chat(&t, &hello(), quick()).await.err());
    assert_eq!(e.class, ErrorClass::UpstreamAuth, "{e}");
    assert!(!e.message.contains("PRIVATE KEY"), "{e}");
}

#[tokio::test]
async fn bedrock_accepts_our_sigv4_signature_for_its_region_only() {
    let f = Fixture::new().await;
    let creds = aws_credential_types::Credentials::new(
        "ABSK-test-0004",
        "sim-secret",
        Some("session-token".into()),
        None,
        "test",
    );
    let mut t = f.target("brk");
    t.key = None;
    let send = |req: http::Request<http_body_util::Full<bytes::Bytes>>| async move {
        use http_body_util::BodyExt;
        let (parts, body) = req.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let client = reqwest::Client::new();
        let mut r = client.request(parts.method, parts.uri.to_string());
        for (k, v) in &parts.headers {
            r = r.header(k, v);
        }
        r.body(body).send().await.unwrap()
    };
    let req = switchyard_providers::bedrock::signed_request(
        &t,
        &hello(),
        false,
        &creds,
        std::time::SystemTime::now(),
    )
    .unwrap();
    let auth = req.headers()["authorization"].to_str().unwrap().to_string();
    assert!(auth.contains("/eu-west-1/bedrock/aws4_request"), "{auth}");
    assert!(auth.contains("x-amz-content-sha256") && auth.contains("x-amz-security-token"));
    let resp = send(req).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(body["output"]["message"]["content"][0]["text"].is_string());

    let mut elsewhere = t.clone();
    elsewhere.options = std::sync::Arc::new(ProviderOptions {
        aws_region: Some("us-east-1".into()),
        ..(*t.options).clone()
    });
    let req = switchyard_providers::bedrock::signed_request(
        &elsewhere,
        &hello(),
        false,
        &creds,
        std::time::SystemTime::now(),
    )
    .unwrap();
    let resp = send(req).await;
    assert_eq!(resp.status(), 403);
    assert!(
        resp.headers()["x-amzn-errortype"]
            .to_str()
            .unwrap()
            .starts_with("UnrecognizedClientException")
    );
}

#[tokio::test]
async fn azure_speaks_the_v1_path_and_names_the_filtered_categories() {
    let f = Fixture::new().await;
    let mut t = f.target("azr");
    t.options = std::sync::Arc::new(ProviderOptions::default());
    let resp = f.chat(&t, &hello(), quick()).await.unwrap();
    assert!(
        resp.choices[0]
            .message
            .text_content()
            .starts_with("Hello from azr")
    );
    let recent = &f.stats("azr").await["recent"];
    assert_eq!(recent[0]["model"], "gpt-deployment");

    f.faults("azr", json!({"refuse_on": "forbidden"})).await;
    let e = upstream(
        f.chat(
            &f.target("azr"),
            &ChatRequest::user("x", "something forbidden"),
            quick(),
        )
        .await
        .err(),
    );
    assert_eq!(e.class, ErrorClass::ContentPolicy, "{e}");
    assert!(e.message.contains("violence (medium)"), "{e}");
}
