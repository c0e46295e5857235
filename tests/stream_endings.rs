//! Streams that finish: an end without `[DONE]` after the finish is a success; a broken event
//! among good ones is skipped and named; a stall is detected within the idle limit; a cut or
//! stalled stream is continued elsewhere (by prefill or by a regeneration that is spliced) so the
//! client's text is the whole answer, or ends with its original error when no endpoint can; a
//! hanging upstream costs one first-byte timeout before the fallback; a locally ejected
//! endpoint gets traffic back after one ejection period and one trial request, with no prober.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Spec, hi, outcomes, provider};
use serde_json::{Value, json};

/// Every provider answers in the same words (the same weights), 60 tokens long, so a
/// continuation on another one can be checked against the whole answer.
fn twins() -> Spec {
    Spec {
        sim_provider: Some("voice: twin, output_tokens: 60".into()),
        extra_endpoints: vec![
            "{ model: m, provider: claude, upstream_model: m-claude, supports: [max_tokens, prefill], price: { prompt: 1, completion: 2 } }".into(),
        ],
        ..Spec::default()
    }
}

/// A streamed request's parsed events, its text and its last event (the routing trace or the
/// error).
struct Streamed {
    status: u16,
    chunks: Vec<Value>,
    text: String,
    last: Value,
}

async fn stream(c: &Cluster, body: Value) -> Streamed {
    let mut body = body;
    body["stream_options"] = json!({"include_usage": true});
    let (status, events) = c.stream(0, &body).await;
    let chunks: Vec<Value> = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let last = chunks.last().cloned().unwrap_or_default();
    Streamed {
        status,
        chunks,
        text,
        last,
    }
}

fn long(workflow: &str) -> Value {
    hi(json!({"workflow": workflow, "max_tokens": 100}))
}

#[tokio::test]
async fn an_end_without_done_after_the_finish_is_a_success_and_broken_events_are_skipped() {
    let c = Cluster::start(Spec::default()).await;
    c.sim()
        .set_faults("fast", &json!({"omit_terminal_event": true}))
        .await
        .unwrap();
    for i in 0..10 {
        let s = stream(&c, hi(json!({"workflow": "strict"}))).await;
        assert_eq!(s.status, 200);
        assert!(s.last["error"].is_null(), "stream {i}: {}", s.last);
        assert_eq!(outcomes(&s.last), ["ok"], "stream {i}: {}", s.last);
        let finished = s
            .chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop");
        let usage = s.chunks.iter().find(|c| c["usage"].is_object()).unwrap();
        assert!(finished && usage["usage"]["completion_tokens"].as_u64() > Some(0));
        assert!(!s.text.is_empty());
    }
    // Still healthy after ten: nothing was counted against it.
    let (status, v) = c
        .chat(0, &hi(json!({"workflow": "short", "stream": false})))
        .await;
    assert_eq!((status, provider(&v)), (200, "fast"), "{v}");
    assert!(v["routing"]["excluded"].is_null(), "{v}");
    eprintln!("10 streams without [DONE]: all served, fast still planned first");

    // A broken event among good ones: skipped, counted, named; or fatal where the workflow says.
    c.sim()
        .set_faults("fast", &json!({"malformed_event_after": 3}))
        .await
        .unwrap();
    let s = stream(&c, hi(json!({"workflow": "strict"}))).await;
    assert!(s.last["error"].is_null(), "{}", s.last);
    let anomalies = &s.last["routing"]["anomalies"];
    assert_eq!(
        anomalies,
        &json!([{"endpoint": "m@fast", "kind": "malformed_event", "count": 1}]),
        "{}",
        s.last
    );
    assert_eq!(s.last["routing"]["attempts"][0]["malformed_events"], 1);
    let s = stream(&c, hi(json!({"workflow": "strict_events"}))).await;
    assert!(
        s.last["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("malformed")),
        "{}",
        s.last
    );
    let metrics = c.metrics(0).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_stream_anomalies_total")
                && l.contains("m@fast")
                && l.ends_with(" 1")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_stall_is_detected_within_the_idle_limit_and_continued_by_a_regeneration() {
    let c = Cluster::start(twins()).await;
    let whole = stream(&c, long("continued")).await;
    assert_eq!(whole.text.split(' ').count(), 60, "{}", whole.text);
    c.sim()
        .set_faults("fast", &json!({"stall_stream_after": 20}))
        .await
        .unwrap();
    let started = Instant::now();
    let s = stream(&c, long("continued")).await;
    let took = started.elapsed();
    eprintln!(
        "stall after 20 chunks: continued in {took:?}, trace {}",
        s.last["routing"]["attempts"]
    );
    assert!(s.last["error"].is_null(), "{}", s.last);
    assert_eq!(s.text, whole.text);
    let attempts = &s.last["routing"]["attempts"];
    assert_eq!(attempts[0]["endpoint"], "m@fast");
    assert_eq!(attempts[0]["outcome"], "timeout");
    assert_eq!(attempts[1]["endpoint"], "m@open");
    assert_eq!(attempts[1]["continuation"], "regenerate");
    // Idle limit 1 s: detected within it (plus the regeneration), not at the 20 s total.
    assert!(took < Duration::from_secs(4), "{took:?}");
    // Both attempts are billed: the usage counts the stalled part and the regeneration.
    let usage = s.chunks.iter().find(|c| c["usage"].is_object()).unwrap();
    assert!(
        usage["usage"]["completion_tokens"].as_u64() > Some(60),
        "{usage}"
    );
}

#[tokio::test]
async fn a_cut_stream_is_finished_by_prefill_or_ends_with_its_own_error() {
    let c = Cluster::start(twins()).await;
    let whole = stream(&c, long("continued_prefill")).await;
    c.sim()
        .set_faults("fast", &json!({"cut_stream_after": 40}))
        .await
        .unwrap();
    let s = stream(&c, long("continued_prefill")).await;
    eprintln!(
        "cut after 40 of 60 chunks: trace {}",
        s.last["routing"]["attempts"]
    );
    assert!(s.last["error"].is_null(), "{}", s.last);
    assert_eq!(s.text, whole.text);
    let attempts = &s.last["routing"]["attempts"];
    assert_eq!(attempts[1]["endpoint"], "m@claude");
    assert_eq!(attempts[1]["continuation"], "prefill");
    // One chunk id and one role throughout: one answer.
    let ids: std::collections::BTreeSet<&str> = s
        .chunks
        .iter()
        .filter_map(|c| c["id"].as_str())
        .filter(|id| !id.is_empty())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let roles = s
        .chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["role"].is_string())
        .count();
    assert_eq!(roles, 1);

    // The only fallback refuses the prefill: the client gets the cut, not the refusal.
    c.sim()
        .set_faults("claude", &json!({"refuse_prefill": true}))
        .await
        .unwrap();
    let s = stream(&c, long("continued_prefill")).await;
    let message = s.last["error"]["message"].as_str().unwrap_or_default();
    eprintln!("prefill refused: the client got `{message}`");
    assert!(message.contains("stream cut"), "{}", s.last);
    assert!(!message.contains("prefill"), "{message}");
    assert_eq!(outcomes(&s.last), ["unavailable", "invalid_request"]);
    assert_eq!(s.text, whole.text[..s.text.len()]);
}

#[tokio::test]
async fn a_hanging_upstream_costs_one_first_byte_timeout_before_the_fallback() {
    let c = Cluster::start(Spec::default()).await;
    c.sim()
        .set_faults("fast", &json!({"hang_rate": 1.0}))
        .await
        .unwrap();
    for streamed in [false, true] {
        let started = Instant::now();
        let body = hi(json!({"workflow": "hang_fallback"}));
        let (status, trace) = if streamed {
            let s = stream(&c, body).await;
            (s.status, s.last)
        } else {
            c.chat(0, &body).await
        };
        let took = started.elapsed();
        eprintln!("hanging upstream (stream: {streamed}): answered in {took:?}");
        assert_eq!(status, 200, "{trace}");
        assert_eq!(outcomes(&trace), ["timeout", "ok"], "{trace}");
        // One 1.5 s first-byte timeout, not three (the workflow allows 2 retries).
        assert!(took < Duration::from_millis(2800), "{took:?}");
    }
}

#[tokio::test]
async fn a_recovered_provider_gets_traffic_back_after_one_ejection_period_and_a_trial() {
    // No prober: the router's own outlier detection decides.
    let c = Cluster::start(Spec::default()).await;
    c.sim()
        .set_faults("fast", &json!({"errors": [{"status": 503, "rate": 1.0}]}))
        .await
        .unwrap();
    let body = hi(json!({"workflow": "short", "stream": false}));
    let ejected_at = loop {
        let (status, v) = c.chat(0, &body).await;
        assert_eq!((status, provider(&v)), (200, "open"), "{v}");
        let (_, next) = c.chat(0, &body).await;
        if outcomes(&next) == ["ok"] && provider(&next) == "open" {
            break Instant::now();
        }
    };
    c.sim().set_faults("fast", &json!({})).await.unwrap();
    let mut before = 0;
    let back = loop {
        let (status, v) = c.chat(0, &body).await;
        assert_eq!(status, 200, "{v}");
        if provider(&v) == "fast" {
            break ejected_at.elapsed();
        }
        before += 1;
        assert!(ejected_at.elapsed() < Duration::from_secs(20), "never back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("recovered provider back after {back:?} ({before} requests went elsewhere)");
    assert!(back < Duration::from_secs(12), "{back:?}");
    // And it stays: the trial restored it.
    for _ in 0..3 {
        let (_, v) = c.chat(0, &body).await;
        assert_eq!(provider(&v), "fast", "{v}");
    }
}
