//! A router's HTTP edge against clients that do not behave: partial requests are closed at their
//! deadlines while normal requests are served, connections past the limit get a 503 and are
//! closed, every status the listener produces is in the OpenAI envelope, a refused request
//! leaves its log line without the key, and a router serves the same on threads of its own as
//! on its process's shared runtime.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Spec, hi};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PARTIAL: usize = 100;

/// Reads until the server closes; what it sent and when it closed.
async fn until_closed(mut s: TcpStream) -> (String, Instant) {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    (String::from_utf8_lossy(&buf).into_owned(), Instant::now())
}

fn envelope(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not a JSON body: {response:?}"))
}

#[tokio::test]
async fn partial_requests_are_closed_at_their_deadlines_and_others_are_served() {
    let c = Cluster::start(Spec {
        router_args: ["--header-timeout-ms", "1000", "--body-timeout-ms", "1000"]
            .map(String::from)
            .to_vec(),
        ..Spec::default()
    })
    .await;
    let addr = c.routers[0].addr("http").unwrap().to_string();
    let opened = Instant::now();
    let mut held = tokio::task::JoinSet::new();
    for i in 0..2 * PARTIAL {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 0 {
            // Headers that never end.
            s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ")
                .await
                .unwrap();
        } else {
            // A body shorter than its Content-Length.
            s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":")
                .await
                .unwrap();
        }
        held.spawn(async move { (i % 2 == 0, until_closed(s).await) });
    }
    // Meanwhile, a normal request is served.
    let (status, v) = c.chat(0, &hi(serde_json::json!({}))).await;
    assert_eq!(status, 200, "{v}");
    let served = opened.elapsed();

    let mut latest = Duration::ZERO;
    let mut timed_out_bodies = 0;
    while let Some(r) = held.join_next().await {
        let (headers_partial, (response, closed)) = r.unwrap();
        let after = closed.duration_since(opened);
        latest = latest.max(after);
        assert!(after < Duration::from_secs(4), "closed after {after:?}");
        if !headers_partial {
            assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
            assert_eq!(envelope(&response)["error"]["code"], "request_timeout");
            timed_out_bodies += 1;
        }
    }
    eprintln!(
        "{} partial requests all closed by {latest:?} (1 s deadlines); a normal request served after {served:?}",
        2 * PARTIAL
    );
    assert_eq!(timed_out_bodies, PARTIAL);
}

#[tokio::test]
async fn connections_past_the_limit_get_a_503_and_are_closed() {
    let c = Cluster::start(Spec {
        router_args: ["--max-connections", "20"].map(String::from).to_vec(),
        ..Spec::default()
    })
    .await;
    let addr = c.routers[0].addr("http").unwrap().to_string();
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (response, _) = until_closed(TcpStream::connect(&addr).await.unwrap()).await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response:?}");
    assert_eq!(envelope(&response)["error"]["code"], "unavailable");
    // Once connections close, new ones are served again.
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, v) = c.chat(0, &hi(serde_json::json!({}))).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn every_listener_status_is_an_openai_envelope_and_refusals_are_logged() {
    let c = Cluster::start(Spec::default()).await;
    let url = c.routers[0].url("http");
    let http = reqwest::Client::new();
    let check = |status: u16, body: &Value, code: &str| {
        assert_eq!(body["error"]["code"], code, "{status}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(body["error"]["type"].is_string());
    };
    let resp = http.get(format!("{url}/v1/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    check(404, &resp.json().await.unwrap(), "not_found");
    let resp = http
        .get(format!("{url}/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    check(405, &resp.json().await.unwrap(), "method_not_allowed");
    let resp = http
        .post(format!("{url}/v1/chat/completions"))
        .header("x-padding", "a".repeat(70_000))
        .json(&hi(serde_json::json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    check(
        431,
        &resp.json().await.unwrap(),
        "request_header_fields_too_large",
    );
    let resp = http
        .post(format!("{url}/v1/chat/completions"))
        .body(vec![b' '; 9 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    check(413, &resp.json().await.unwrap(), "request_too_large");

    // A bad key: 401, and the request's log line, never the key.
    let bad_key = "sk-e2e-not-a-real-key-0123456789";
    let resp = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(bad_key)
        .json(&hi(serde_json::json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    check(401, &resp.json().await.unwrap(), "unauthenticated");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = c.routers[0].log();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v["target"] == "switchyard::request")
        .collect();
    let refused = |outcome: &str| {
        lines
            .iter()
            .any(|l| l["fields"]["outcome"] == outcome && l["fields"]["refused"] == true)
    };
    assert!(refused("unauthenticated"), "{log}");
    assert!(refused("not_found") && refused("request_header_fields_too_large"));
    assert!(!log.contains(bad_key), "the key is never logged");
}

/// Clients at once per router, each making `ROUNDS` replies and streams on its connection.
const CLIENTS: usize = 24;
const ROUNDS: usize = 2;

/// A client's replies and streams on one keep-alive connection to `base`: how many were whole
/// (200, a reply with content, a stream ending in `[DONE]`).
async fn whole_answers(base: String) -> usize {
    let http = reqwest::Client::new();
    let mut whole = 0;
    for _ in 0..ROUNDS {
        for stream in [false, true] {
            let resp = http
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(common::KEY)
                .json(&hi(serde_json::json!({"stream": stream})))
                .send()
                .await
                .unwrap();
            let ok = resp.status() == 200;
            let text = resp.text().await.unwrap_or_default();
            let complete = if stream {
                text.lines().any(|l| l.trim() == "data: [DONE]")
            } else {
                serde_json::from_str::<Value>(&text)
                    .is_ok_and(|v| v["choices"][0]["message"]["content"].is_string())
            };
            whole += usize::from(ok && complete);
        }
    }
    whole
}

#[tokio::test]
async fn routers_on_their_own_threads_and_on_the_shared_runtime_serve_and_bill_alike() {
    let mut c = Cluster::start(Spec {
        routers: 0,
        ..Spec::default()
    })
    .await;
    // Three serving threads, each with its own upstream pool; and none (the shared runtime).
    let own = c.add_router_with(&["--http-threads", "3"]).await;
    let shared = c.add_router_with(&["--http-threads", "0"]).await;
    let mut clients = tokio::task::JoinSet::new();
    for n in [own, shared] {
        for _ in 0..CLIENTS {
            clients.spawn(whole_answers(c.routers[n].url("http")));
        }
    }
    let mut whole = 0;
    while let Some(w) = clients.join_next().await {
        whole += w.unwrap();
    }
    let asked = 2 * CLIENTS * ROUNDS * 2;
    assert_eq!(whole, asked, "every reply and stream whole");
    let ledger = c.ledger_at_least(asked, Duration::from_secs(20)).await;
    assert_eq!(ledger.len(), asked, "each billed once");
    for n in [own, shared] {
        let log = c.routers[n].log();
        assert!(!log.contains("panicked"), "{log}");
    }
}
