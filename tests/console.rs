//! The operator console in headless Chromium against `switchyard up`: a provider broken in the
//! simulator shows ejected on the endpoints page, the requests page opens a request that fell
//! back with its trace, an ejection made from the page is in `ctl audit` with the console's
//! actor, client limits set there are the policy's, a budget set there refuses the next request,
//! and every page's screenshot is written and not blank. A key without the admin scope reads but
//! changes nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::time::{Duration, Instant};

use common::up::{field, up};
use serde_json::{Value, json};

const DEMO_KEY: &str = "sk-switchyard-demo";
const ADMIN_KEY: &str = "sk-switchyard-admin";
const BROKEN: &str = "demo-fast@sim-budget";
const TO_EJECT: &str = "demo-smart@sim-openai";

/// The control API's address from `switchyard up`'s banner.
fn control_api(printed: &[String]) -> String {
    let line = printed
        .iter()
        .find(|l| l.contains("control API"))
        .unwrap_or_else(|| panic!("no control API in {printed:?}"));
    let start = line.find("http://").unwrap();
    line[start..].trim_end_matches("):").to_string()
}

async fn chat(http: &reqwest::Client, router: &str, body: &Value) -> (u16, Value) {
    let resp = http
        .post(format!("{router}/v1/chat/completions"))
        .bearer_auth(DEMO_KEY)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn console_get(http: &reqwest::Client, console: &str, path: &str, key: &str) -> (u16, Value) {
    let resp = http
        .get(format!("{console}/api/{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_console_shows_an_outage_and_its_changes_take_effect() {
    let (mut child, printed) = up(&[]).await;
    let console = field(&printed, "console");
    let router = field(&printed, "router");
    let policy = format!(
        "http://{}",
        printed
            .iter()
            .find(|l| l.starts_with("policy"))
            .unwrap()
            .split_whitespace()
            .nth(2)
            .unwrap()
    );
    let http = reqwest::Client::new();

    // Reads with any key, changes only with the admin scope.
    let (status, me) = console_get(&http, &console, "me", DEMO_KEY).await;
    assert_eq!((status, me["admin"].clone()), (200, json!(false)), "{me}");
    let (status, _) = console_get(&http, &console, "me", "sk-wrong").await;
    assert_eq!(status, 401);
    let (status, body) = console_get(&http, &console, "audit", DEMO_KEY).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = console_get(&http, &console, "usage?by=week", DEMO_KEY).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = console_get(&http, &console, "usage?by=model", DEMO_KEY).await;
    assert_eq!(
        (status, body["group_by"].clone()),
        (200, json!("model")),
        "{body}"
    );
    let resp = http
        .post(format!("{console}/api/endpoints/eject"))
        .bearer_auth(DEMO_KEY)
        .json(&json!({"endpoint": TO_EJECT, "seconds": 60, "reason": "not allowed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let (status, page) = (
        http.get(&console).send().await.unwrap().status(),
        http.get(&console)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(status, 200);
    assert!(
        !page.contains("https://") && !page.contains("http://"),
        "the page loads nothing from elsewhere"
    );

    // A provider broken in the simulator, and traffic that starts on it and falls back, until
    // the prober has ejected it.
    http.put(format!(
        "{}/providers/sim-budget/faults",
        control_api(&printed)
    ))
    .body(r#"{"errors": [{"status": 503, "rate": 1.0}]}"#)
    .send()
    .await
    .unwrap();
    let body = json!({
        "model": "demo-fast",
        "messages": [{"role": "user", "content": "hello"}],
        "provider": {"order": ["sim-budget", "sim-openai"]},
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, reply) = chat(&http, &router, &body).await;
        assert_eq!(status, 200, "{reply}");
        let (_, health) = console_get(&http, &console, "endpoints", ADMIN_KEY).await;
        let ejected = health["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["endpoint"] == BROKEN && e["state"] == "ejected");
        if ejected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{BROKEN} never ejected: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The browser.
    let python = switchyard_testkit::python_with("selenium", "selenium").unwrap();
    let root = switchyard_testkit::workspace_root();
    let shots = root.join("target/console-screenshots");
    let out = tokio::process::Command::new(python)
        .arg(root.join("tests/console/drive.py"))
        .args([console.as_str(), ADMIN_KEY])
        .arg(&shots)
        .args([BROKEN, TO_EJECT, "demo"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the console drive failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("console: {seen}");
    assert_eq!(seen["broken_state"], "ejected");
    assert_eq!(seen["ejected_state"], "ejected");
    let trace = seen["trace"].as_str().unwrap();
    assert!(
        trace.contains(BROKEN) && trace.contains("demo-fast@sim-openai"),
        "{trace}"
    );
    for page in [
        "overview",
        "endpoints",
        "requests",
        "budgets",
        "usage",
        "explain",
        "overrides",
    ] {
        assert!(
            seen["shots"][page]["colours"].as_u64().unwrap() >= 20,
            "{page}: {seen}"
        );
        assert!(shots.join(format!("{page}.png")).is_file(), "{page}");
    }

    // The ejection made on the page is in the audit trail with the console's actor.
    let bin = switchyard_testkit::workspace_bin("switchyard", "switchyard").unwrap();
    let audit = tokio::process::Command::new(bin)
        .args(["ctl", "--json", "--policy", &policy, "audit"])
        .output()
        .await
        .unwrap();
    let audit: Value = serde_json::from_slice(&audit.stdout).unwrap();
    let eject = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["target"].as_str().unwrap_or_default().contains(TO_EJECT))
        .unwrap_or_else(|| panic!("no ejection of {TO_EJECT} audited: {audit}"));
    assert_eq!(
        eject["actor"], "key demo-admin of demo (console)",
        "{eject}"
    );
    assert_eq!(eject["reason"], "ejected from the console e2e", "{eject}");

    // The client limits set on the page are the policy's.
    let bin = switchyard_testkit::workspace_bin("switchyard", "switchyard").unwrap();
    let limits = tokio::process::Command::new(bin)
        .args([
            "ctl", "--json", "--policy", &policy, "limits", "--org", "demo",
        ])
        .output()
        .await
        .unwrap();
    let limits: Value = serde_json::from_slice(&limits.stdout).unwrap();
    assert_eq!(limits["limits"][0]["set"]["rpm"], 600, "{limits}");

    // The budget set on the page refuses the next request.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, reply) = chat(
            &http,
            &router,
            &json!({"model": "demo-fast", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        if status == 402 {
            break;
        }
        assert!(Instant::now() < deadline, "never refused: {status} {reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill().await;
}
