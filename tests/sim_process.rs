//! The provider simulator as its own process: configured by file plus environment overrides,
//! steered through its control API, and gone when killed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_testkit::SimProcess;

const CONFIG: &str = r#"
providers:
  - id: up
    format: openai
  - id: down
    format: anthropic
"#;

#[tokio::test]
async fn env_overrides_faults_control_api_and_kill() {
    let mut sim = SimProcess::spawn(
        CONFIG,
        &[
            (
                "SWITCHYARD_SIM__PROVIDERS__1__FAULTS__ERRORS",
                "[{status: 529, rate: 1.0}]",
            ),
            ("SWITCHYARD_SIM__PROVIDERS__1__FAULTS__RETRY_AFTER_S", "4"),
        ],
    )
    .await
    .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let up = sim.base_url("up").unwrap().to_string();
    let down = sim.base_url("down").unwrap().to_string();

    let ok = http
        .post(format!("{up}/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    let anthropic_request = || {
        http.post(format!("{down}/v1/messages"))
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}))
    };
    let overloaded = anthropic_request().send().await.unwrap();
    assert_eq!(overloaded.status(), 529);
    assert_eq!(overloaded.headers()["retry-after"], "4");
    let body: Value = overloaded.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");

    // Heal it at run time.
    sim.control().heal("down").await.unwrap();
    assert_eq!(anthropic_request().send().await.unwrap().status(), 200);

    let stats = sim.control().stats("down").await.unwrap();
    assert_eq!(stats["requests"], 2);
    assert_eq!(stats["by_outcome"]["status_529"], 1);
    assert_eq!(stats["by_outcome"]["ok"], 1);

    sim.kill().await.unwrap();
    let err = http
        .post(format!("{up}/chat/completions"))
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn an_invalid_override_is_reported_and_the_process_exits() {
    let err = SimProcess::spawn(
        CONFIG,
        &[("SWITCHYARD_SIM__PROVIDERS__0__FAULTS__HANG_RATE", "2")],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("exited"), "{err}");
}
