//! Hedged requests against upstreams with a slow tail (p99 time to first token twelve times the
//! median): the client's p99 time to first token falls by more than half, and upstream traffic
//! grows by no more than the retry budget allows (20 % of the requests, plus a burst of 10).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cluster, KEY, Spec, hi};
use serde_json::json;

const REQUESTS: usize = 400;
const CONCURRENCY: usize = 16;

/// Streams `REQUESTS` requests of `workflow`, `CONCURRENCY` at a time; each one's time to its
/// first content, sorted.
async fn ttfts(c: &Cluster, workflow: &str) -> Vec<Duration> {
    let url = format!("{}/v1/chat/completions", c.routers[0].url("http"));
    let body = hi(json!({"workflow": workflow, "stream": true}));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (http, url, body, next) = (c.http.clone(), url.clone(), body.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < REQUESTS {
                let started = Instant::now();
                let mut resp = http
                    .post(&url)
                    .bearer_auth(KEY)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let mut seen = String::new();
                let mut first = None;
                while let Some(bytes) = resp.chunk().await.unwrap() {
                    seen.push_str(&String::from_utf8_lossy(&bytes));
                    if first.is_none() && seen.contains("Hello") {
                        first = Some(started.elapsed());
                    }
                }
                assert!(seen.contains("[DONE]"), "{seen}");
                out.push(first.expect("no content"));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

fn at(sorted: &[Duration], p: f64) -> Duration {
    sorted[((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::test]
async fn hedging_cuts_the_tail_within_the_retry_budget() {
    let c = Cluster::start(Spec::default()).await;
    let slow_tail = json!({"latency": {"ttft_ms": 40, "jitter_ms": 20, "tail_rate": 0.05, "tail_ttft_ms": 600}});
    for p in ["fast", "open"] {
        c.sim().set_faults(p, &slow_tail).await.unwrap();
    }
    let mut figures = Vec::new();
    for workflow in ["unhedged", "hedged"] {
        let before = c.sim().requests(&["fast", "open"]).await.unwrap();
        let t = ttfts(&c, workflow).await;
        let sent = c.sim().requests(&["fast", "open"]).await.unwrap() - before;
        eprintln!(
            "{workflow}: TTFT p50 {:?}, p90 {:?}, p99 {:?}; {sent} upstream requests for {REQUESTS}",
            at(&t, 50.0),
            at(&t, 90.0),
            at(&t, 99.0)
        );
        figures.push((at(&t, 99.0), sent));
    }
    let [(p99_plain, sent_plain), (p99_hedged, sent_hedged)] = figures[..] else {
        unreachable!()
    };
    assert_eq!(sent_plain, REQUESTS as u64);
    assert!(
        p99_hedged * 2 <= p99_plain,
        "p99 {p99_plain:?} unhedged, {p99_hedged:?} hedged"
    );
    assert!(
        sent_hedged <= (REQUESTS as f64 * 1.2) as u64 + 10,
        "{sent_hedged} upstream requests"
    );
    assert!(sent_hedged > REQUESTS as u64, "nothing was hedged");
    // Both attempts of a hedged request are billed: the loser at the prompt it was sent.
    let ledger = c
        .ledger_at_least(2 * REQUESTS, Duration::from_secs(20))
        .await;
    let prompt = |attempts: u32| {
        ledger
            .iter()
            .filter_map(|e| e.record.as_ref())
            .filter(|r| r.attempts == attempts)
            .map(|r| r.prompt_tokens)
            .max()
    };
    let (single, hedged) = (prompt(1).unwrap(), prompt(2).unwrap());
    eprintln!("prompt tokens billed: {single} for one attempt, {hedged} for a hedged pair");
    assert!(hedged >= 2 * single - 1, "{single} vs {hedged}");
}
