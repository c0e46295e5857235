//! What operators see: the router's Prometheus series after a request that fell back, and its
//! one structured log line per request (with no API key in it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, KEY, Spec, hi, provider};
use serde_json::{Value, json};

/// A received span: its name and attributes.
type Span = (String, Vec<(String, String)>);

/// An OTLP/gRPC collector that keeps every span it receives: (name, attributes).
#[derive(Clone, Default)]
struct Collector {
    spans: std::sync::Arc<std::sync::Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for Collector
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let attrs = span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(V::StringValue(s)) => s.clone(),
                                Some(V::BoolValue(b)) => b.to_string(),
                                Some(V::IntValue(i)) => i.to_string(),
                                other => format!("{other:?}"),
                            };
                            (kv.key.clone(), v)
                        })
                        .collect();
                    spans.push((span.name, attrs));
                }
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

type Labels = Vec<(&'static str, &'static str)>;

/// The value of the series `name{labels}` whose label set contains every `key="value"` given.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_show_a_fallback_and_the_log_line_tells_the_whole_story() {
    let c = Cluster::start(Spec::default()).await;
    c.break_provider("fast", 500).await;
    let body = hi(json!({"provider": {"order": ["fast", "open"]}}));
    let (status, v) = c.chat(0, &body).await;
    assert_eq!((status, provider(&v)), (200, "open"), "{v}");
    let (status, _) = c
        .chat(0, &hi(json!({"provider": {"order": ["open"]}})))
        .await;
    assert_eq!(status, 200);
    let resp = c
        .http
        .post(format!("{}/v1/chat/completions", c.routers[0].url("http")))
        .bearer_auth("sk-not-a-key")
        .json(&hi(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let m = c.metrics(0).await;
    let checks: Vec<(&str, Labels, f64)> = vec![
        (
            "switchyard_requests_total",
            vec![
                ("workflow", "main"),
                ("model", "m"),
                ("provider", "open"),
                ("outcome", "ok"),
            ],
            2.0,
        ),
        (
            "switchyard_requests_total",
            vec![("outcome", "unauthenticated")],
            1.0,
        ),
        (
            "switchyard_attempts_total",
            vec![("provider", "fast"), ("outcome", "unavailable")],
            2.0, // the first attempt and its retry
        ),
        (
            "switchyard_fallbacks_total",
            vec![("from", "fast"), ("to", "open"), ("reason", "unavailable")],
            1.0,
        ),
        ("switchyard_retries_total", vec![("provider", "fast")], 1.0),
        (
            "switchyard_tokens_total",
            vec![("direction", "out"), ("provider", "open")],
            32.0,
        ),
        ("switchyard_router_overhead_seconds_count", vec![], 1.0),
        (
            "switchyard_request_duration_seconds_count",
            vec![("workflow", "main")],
            2.0,
        ),
        (
            "switchyard_upstream_duration_seconds_count",
            vec![("provider", "fast"), ("outcome", "unavailable")],
            2.0,
        ),
    ];
    for (name, labels, want) in checks {
        let got = series(&m, name, &labels);
        eprintln!("{name}{labels:?} = {got}");
        assert_eq!(got, want, "{name} {labels:?}\n{m}");
    }
    assert!(
        series(
            &m,
            "switchyard_cost_nano_usd_total",
            &[("workflow", "main")]
        ) > 0.0
    );
    // Histograms have buckets (not summaries), down to 100 µs.
    assert!(
        m.contains("switchyard_router_overhead_seconds_bucket{le=\"0.0001\"}"),
        "{m}"
    );

    // One log line per request, with its story, and never the key.
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines: Vec<Value> = loop {
        let log = c.routers[0].log();
        let lines: Vec<Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["target"] == "switchyard::request")
            .collect();
        if lines.len() >= 3 || Instant::now() > deadline {
            assert!(!log.contains(KEY), "the API key is in the log");
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Every request leaves one: the two served, and the refused one (marked, with its status).
    assert_eq!(lines.len(), 3, "{lines:?}");
    let refused: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["refused"] == true)
        .collect();
    assert_eq!(refused.len(), 1, "{lines:?}");
    assert_eq!(refused[0]["fields"]["status"], 401);
    assert_eq!(refused[0]["fields"]["outcome"], "unauthenticated");
    let lines: Vec<Value> = lines
        .into_iter()
        .filter(|l| l["fields"]["refused"] != true)
        .collect();
    let f = &lines[0]["fields"];
    eprintln!("{}", lines[0]);
    for (field, want) in [
        ("org", json!("acme")),
        ("key_prefix", json!("sk-e2e")),
        ("key_id", json!("k1")),
        ("workflow", json!("main")),
        ("requested_model", json!("m")),
        ("served_model", json!("m")),
        ("provider", json!("open")),
        ("attempt_count", json!(3)),
        ("retries", json!(1)),
        ("fallbacks", json!(1)),
        ("outcome", json!("ok")),
        ("stream", json!(false)),
        ("policy_version", json!(1)),
    ] {
        assert_eq!(f[field], want, "{field}: {f}");
    }
    assert_eq!(f["request_id"], v["routing"]["request_id"]);
    assert!(
        f["attempts"]
            .as_str()
            .unwrap()
            .starts_with("m@fast:unavailable:"),
        "{f}"
    );
    for field in [
        "latency_ms",
        "overhead_ms",
        "prompt_tokens",
        "completion_tokens",
        "health_version",
        "route_seed",
    ] {
        assert!(f[field].is_number(), "{field}: {f}");
    }
    assert!(f["cost_usd"].as_str().unwrap().parse::<f64>().unwrap() > 0.0);
}

#[tokio::test]
async fn with_an_otlp_endpoint_every_attempt_is_a_span() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = switchyard_runtime::grpc::grpc_server(
        listener,
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
            collector.clone(),
        ),
        stop.clone(),
        stop.clone(),
    )
    .await
    .unwrap();
    tokio::spawn(server);
    let c = Cluster::start(Spec {
        router_env: vec![("SWITCHYARD_OTLP_ENDPOINT".into(), format!("http://{addr}"))],
        ..Spec::default()
    })
    .await;
    c.break_provider("fast", 500).await;
    let (status, v) = c
        .chat(0, &hi(json!({"provider": {"order": ["fast", "open"]}})))
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["routing"]["request_id"].as_str().unwrap().to_string();
    // Spans leave in batches (every 5 s by default).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let spans = collector.spans.lock().unwrap().clone();
        let request = spans.iter().find(|(name, attrs)| {
            name == "request" && attrs.iter().any(|(k, v)| k == "request_id" && *v == id)
        });
        let attempts: Vec<&Vec<(String, String)>> = spans
            .iter()
            .filter(|(name, _)| name == "attempt")
            .map(|(_, a)| a)
            .collect();
        if request.is_some() && attempts.len() >= 3 {
            let outcome = |a: &Vec<(String, String)>| {
                a.iter()
                    .find(|(k, _)| k == "outcome")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let outcomes: Vec<String> = attempts.iter().map(|a| outcome(a)).collect();
            eprintln!("exported: request {id}, attempts {outcomes:?}");
            assert_eq!(outcomes, ["unavailable", "unavailable", "ok"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans so far: {spans:?}\n{}",
            c.routers[0].log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
}
