//! Budgets an operator sets, through real processes (policy, billing, a router, Redis): one
//! declared in the policy file refuses at its limit; `ctl budgets set` replaces it without a
//! restart and keeps the period's spend when the limit changes; `ctl budgets remove` lifts it;
//! an org budget set from `ctl` refuses every workflow; each change is audited with its actor
//! and reason and visible in `ctl budgets`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Spec};
use serde_json::{Value, json};

fn body(workflow: &str) -> Value {
    json!({"model": "m", "workflow": workflow, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5})
}

/// Sends until the answer's status is `want` (billing applies a change within a second).
async fn until_status(c: &Cluster, workflow: &str, want: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, v) = c.chat(0, &body(workflow)).await;
        if status == want {
            return v;
        }
        assert!(Instant::now() < deadline, "never {want}: {status} {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `ctl budgets --org acme` entry of `scope` (`org`, `workflow`, `key`) and `id`.
async fn listed(c: &Cluster, kind: &str, id: &str) -> Option<Value> {
    let out = c.ctl(&["budgets", "--org", "acme"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    out.json["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["scope"] == kind && b["id"].as_str().unwrap_or("") == id)
        .cloned()
}

#[tokio::test]
async fn budgets_from_the_policy_file_and_from_ctl_are_enforced_and_keep_their_spend() {
    let c = Cluster::start(Spec {
        acme_budgets: Some(
            "[{ workflow: strict, period: day, limit: \"0.000001\", alerts: [80] }]".into(),
        ),
        ..Spec::default()
    })
    .await;

    // The file's budget, applied by billing: the first request of `strict` would exceed it.
    let refused = until_status(&c, "strict", 402).await;
    assert!(refused.to_string().contains("budget"), "{refused}");
    let declared = listed(&c, "workflow", "strict").await.unwrap();
    assert_eq!(declared["limit_usd"], "0.000001", "{declared}");
    // Other workflows are not limited by it.
    assert_eq!(c.chat(0, &body("main")).await.0, 200);

    // Raised from ctl, without a restart: served.
    let out = c
        .ctl(&[
            "budgets",
            "set",
            "acme",
            "--workflow",
            "strict",
            "--period",
            "day",
            "--limit",
            "1",
            "--reason",
            "quarter end",
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    until_status(&c, "strict", 200).await;
    for _ in 0..3 {
        assert_eq!(c.chat(0, &body("strict")).await.0, 200);
    }
    c.ledger_at_least(5, Duration::from_secs(5)).await;
    let before = listed(&c, "workflow", "strict").await.unwrap();
    assert_eq!(before["limit_usd"], "1", "{before}");
    let spent = before["spent_usd"].clone();
    assert_ne!(spent, "0", "{before}");

    // A new limit keeps what was spent.
    let out = c
        .ctl(&[
            "budgets",
            "set",
            "acme",
            "--workflow",
            "strict",
            "--period",
            "day",
            "--limit",
            "2",
            "--soft",
            "--reason",
            "more room",
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let b = listed(&c, "workflow", "strict").await.unwrap();
        if b["limit_usd"] == "2" {
            break b;
        }
        assert!(Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(after["spent_usd"], spent, "{after}");
    assert_eq!(after["hard"], false, "{after}");

    // An org budget from ctl refuses every workflow; removed, it is gone.
    let out = c
        .ctl(&[
            "budgets", "set", "acme", "--period", "day", "--limit", "0.000001", "--reason",
            "freeze",
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    until_status(&c, "main", 402).await;
    let out = c
        .ctl(&[
            "budgets", "remove", "acme", "--period", "day", "--reason", "thaw",
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    until_status(&c, "main", 200).await;
    assert!(listed(&c, "org", "").await.is_none());

    // Removing what does not exist is an error naming it.
    let out = c
        .ctl(&[
            "budgets", "remove", "acme", "--key", "nope", "--period", "month", "--reason", "x",
        ])
        .await;
    assert_eq!(out.code, 1, "{out:?}");

    // Every change is in the audit with its actor and reason.
    let audit = c.ctl(&["audit"]).await;
    let records = audit.json["records"].as_array().unwrap();
    for (action, reason) in [
        ("set_budget", "quarter end"),
        ("set_budget", "more room"),
        ("set_budget", "freeze"),
        ("remove_budget", "thaw"),
    ] {
        assert!(
            records.iter().any(|r| r["action"] == action
                && r["reason"] == reason
                && r["actor"].as_str().unwrap_or("").starts_with("e2e")),
            "{action} {reason} not in {audit:?}"
        );
    }
}
