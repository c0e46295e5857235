//! `switchyard ctl` and explain against a running cluster: every subcommand with `--json` output
//! parsed, an override that steers the next request and its removal, and explain's plan compared
//! with the plan the router then executes with the same seed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, KEY, Spec, hi, plan, provider};
use serde_json::{Value, json};
use switchyard_proto::v1 as pb;

/// The endpoints of an explanation's plan, in order.
fn planned(x: &Value) -> Vec<String> {
    x["plan"]
        .as_array()
        .unwrap_or_else(|| panic!("no plan in {x}"))
        .iter()
        .map(|p| p["endpoint"].as_str().unwrap().to_string())
        .collect()
}

/// The reason an explanation gives for leaving `endpoint` out, if it does.
fn exclusion<'a>(x: &'a Value, endpoint: &str) -> Option<&'a str> {
    x["excluded"]
        .as_array()?
        .iter()
        .find(|e| e["endpoint"] == endpoint)
        .and_then(|e| e["reason"].as_str())
}

/// Polls explain (seed 1) on router 0 until `done` holds.
async fn explain_until(c: &Cluster, body: &Value, what: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, x) = c.explain(0, body, 1).await;
        assert_eq!(status, 200, "{x}");
        if done(&x) {
            return;
        }
        assert!(Instant::now() < deadline, "never {what}: {x}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A failed command: exit 1 and one line on stderr, starting with `error: <service>`.
fn one_line_error(out: common::Ctl, service: &str, contains: &str) {
    assert_eq!(out.code, 1, "{out:?}");
    let line = out.stderr.trim_end();
    assert!(!line.contains('\n'), "more than one line: {line}");
    assert!(
        line.starts_with(&format!("error: {service} service at ")) && line.contains(contains),
        "{line}"
    );
}

#[tokio::test]
async fn health_eject_restore_probe_and_the_audit_trail() {
    let c = Cluster::start(Spec {
        prober: Some(common::QUIET_PROBER.into()),
        ..Spec::default()
    })
    .await;
    let h = c.ctl(&["health"]).await.ok();
    let endpoints = h["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 4, "{h}");
    assert!(h["version"].as_u64().is_some(), "{h}");
    for e in endpoints {
        assert!(e["state"].is_string() && e["error_rate"].is_number(), "{e}");
    }

    // Ejected: the prober says why, and the router leaves it out of the plan.
    let e = c
        .ctl(&["eject", "m@fast", "--for", "120", "--reason", "bad answers"])
        .await
        .ok();
    assert_eq!(e["state"], "ejected", "{e}");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("bad answers (e2e (ctl))"),
        "{e}"
    );
    let body = hi(json!({}));
    explain_until(&c, &body, "excluded the ejected endpoint", |x| {
        exclusion(x, "m@fast") == Some("unhealthy")
    })
    .await;
    let h = c.ctl(&["health"]).await.ok();
    let fast = h["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == "m@fast")
        .unwrap();
    assert_eq!(fast["state"], "ejected", "{h}");
    let (status, v) = c
        .chat_with(0, &body, &[("x-switchyard-route-seed", "1")])
        .await;
    assert_eq!(status, 200, "{v}");
    assert_ne!(provider(&v), "fast", "{v}");

    // Restored: planned again.
    let r = c
        .ctl(&["restore", "m@fast", "--reason", "fixed upstream"])
        .await
        .ok();
    assert_eq!(r["state"], "healthy", "{r}");
    explain_until(&c, &body, "planned the restored endpoint", |x| {
        planned(x).contains(&"m@fast".to_string())
    })
    .await;

    let p = c.ctl(&["probe", "m@open"]).await.ok();
    assert_eq!(p["endpoint"], "m@open", "{p}");
    assert_eq!(p["state"], "healthy", "{p}");

    // Both operator actions are in the audit trail, with actor and reason.
    let a = c.ctl(&["audit", "--limit", "10"]).await.ok();
    let records = a["records"].as_array().unwrap();
    let find = |action: &str| {
        records
            .iter()
            .find(|r| r["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {a}"))
    };
    assert_eq!(find("eject")["reason"], "bad answers");
    assert_eq!(find("eject")["actor"], "e2e (ctl)");
    assert_eq!(find("restore")["reason"], "fixed upstream");

    // Bad input: a clear line, exit 1 (or clap's usage error, exit 2).
    one_line_error(
        c.ctl(&["eject", "m@nowhere", "--reason", "x"]).await,
        "prober",
        "ejecting failed: not found: no endpoint `m@nowhere`",
    );
    assert_eq!(c.ctl(&["eject", "m@fast"]).await.code, 2);
}

#[tokio::test]
async fn an_override_steers_the_next_request_and_its_removal_restores_it() {
    let c = Cluster::start(Spec::default()).await;
    let sim = c.sim();
    let body = hi(json!({}));
    // A seed whose plan starts with m@fast (the plan is a pure function of it).
    let mut seed = None;
    for s in 1..200u64 {
        let (_, x) = c.explain(0, &body, s).await;
        if planned(&x).first().map(String::as_str) == Some("m@fast") {
            seed = Some(s);
            break;
        }
    }
    let seed = seed.expect("some seed plans m@fast first").to_string();
    let with_seed = [("x-switchyard-route-seed", seed.as_str())];
    let (status, v) = c.chat_with(0, &body, &with_seed).await;
    assert_eq!((status, provider(&v)), (200, "fast"), "{v}");

    // Disable the provider: the next request with the same seed avoids it.
    let o = c
        .ctl(&[
            "overrides",
            "disable",
            "--provider",
            "fast",
            "--reason",
            "incident 7: fast returns garbage",
        ])
        .await
        .ok();
    assert_eq!(o["kind"], "disable_provider", "{o}");
    let id = o["id"].as_str().unwrap().to_string();
    let version = o["policy_version"].as_u64().unwrap();
    c.wait_policy(version).await;
    let fast_before = sim.requests(&["fast"]).await.unwrap();
    let (status, v) = c.chat_with(0, &body, &with_seed).await;
    assert_eq!(status, 200, "{v}");
    assert_ne!(provider(&v), "fast", "{v}");
    assert!(!plan(&v).contains(&"m@fast".to_string()), "{v}");
    assert!(v["routing"]["policy_version"].as_u64().unwrap() >= version);
    assert_eq!(sim.requests(&["fast"]).await.unwrap(), fast_before);
    let (_, x) = c.explain(0, &body, 1).await;
    assert_eq!(exclusion(&x, "m@fast"), Some("disabled"), "{x}");
    let list = c.ctl(&["overrides", "list"]).await.ok();
    let listed = &list["overrides"].as_array().unwrap()[0];
    assert_eq!(listed["id"], id.as_str(), "{list}");
    assert_eq!(listed["target"], "fast");
    assert_eq!(listed["actor"], "e2e (ctl)");

    // Removed: the same seed goes back to fast.
    let r = c
        .ctl(&["overrides", "remove", &id, "--reason", "fixed"])
        .await
        .ok();
    c.wait_policy(r["policy_version"].as_u64().unwrap()).await;
    let (status, v) = c.chat_with(0, &body, &with_seed).await;
    assert_eq!((status, provider(&v)), (200, "fast"), "{v}");
    assert_eq!(
        c.ctl(&["overrides", "list"]).await.ok()["overrides"],
        json!([])
    );

    // Force a model for a workflow: `main` serves `big` until the override goes.
    let f = c
        .ctl(&[
            "overrides",
            "force",
            "--org",
            "acme",
            "--workflow",
            "main",
            "--model",
            "big",
            "--reason",
            "m is degraded everywhere",
        ])
        .await
        .ok();
    c.wait_policy(f["policy_version"].as_u64().unwrap()).await;
    let (_, x) = c.explain(0, &body, 1).await;
    assert_eq!(x["models"], json!(["big"]), "{x}");
    let (status, v) = c.chat(0, &body).await;
    assert_eq!((status, provider(&v)), (200, "claude"), "{v}");
    let r = c
        .ctl(&["overrides", "remove", f["id"].as_str().unwrap()])
        .await
        .ok();
    c.wait_policy(r["policy_version"].as_u64().unwrap()).await;
    let (_, x) = c.explain(0, &body, 1).await;
    assert_eq!(x["models"][0], "m", "{x}");

    let a = c.ctl(&["audit"]).await.ok();
    let actions: Vec<(&str, &str)> = a["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["action"].as_str().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("put_override", "incident 7: fast returns garbage"),
            ("remove_override", "fixed"),
            ("put_override", "m is degraded everywhere"),
            ("remove_override", ""),
        ]
    );

    // Bad input: a clear line naming the service, exit 1.
    one_line_error(
        c.ctl(&["overrides", "remove", &id]).await,
        "policy",
        &format!("removing the override failed: not found: override `{id}`"),
    );
    one_line_error(
        c.ctl(&[
            "overrides",
            "disable",
            "--provider",
            "fast",
            "--reason",
            " ",
        ])
        .await,
        "policy",
        "refused: an override needs a reason",
    );
}

#[tokio::test]
async fn budgets_usage_keys_and_the_policy_version() {
    let c = Cluster::start(Spec::default()).await;
    let mut billing = c.billing().await;
    for (kind, id) in [(pb::ScopeKind::Org, ""), (pb::ScopeKind::Workflow, "main")] {
        billing
            .set_budget(pb::SetBudgetRequest {
                scope: Some(pb::Scope {
                    kind: kind as i32,
                    org_id: "acme".into(),
                    id: id.into(),
                }),
                period: pb::Period::Day as i32,
                limit_nano_usd: 1_000_000_000,
                hard: true,
                alert_thresholds_percent: vec![80],
            })
            .await
            .unwrap();
    }
    for _ in 0..5 {
        let (status, v) = c.chat(0, &hi(json!({}))).await;
        assert_eq!(status, 200, "{v}");
    }
    let ledger = c.ledger_at_least(5, Duration::from_secs(10)).await;
    let spent: i64 = ledger
        .iter()
        .map(|e| e.record.as_ref().unwrap().cost_nano_usd)
        .sum();

    // Once the router's lease is idle, it gives its slice back: nothing is held.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let b = loop {
        let b = c.ctl(&["budgets", "--org", "acme"]).await.ok();
        if b["budgets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["held_nano_usd"] == 0)
        {
            break b;
        }
        assert!(std::time::Instant::now() < deadline, "still held: {b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let budgets = b["budgets"].as_array().unwrap();
    assert_eq!(budgets.len(), 2, "{b}");
    for x in budgets {
        assert_eq!(x["limit_usd"], "1", "{x}");
        assert_eq!(x["spent_nano_usd"], spent, "{x}");
        assert_eq!(x["held_nano_usd"], 0, "{x}");
        assert_eq!(x["remaining_nano_usd"], 1_000_000_000 - spent, "{x}");
    }
    // Without --org: every org of the policy (beta has no budgets).
    let all = c.ctl(&["budgets"]).await.ok();
    assert_eq!(all["budgets"].as_array().unwrap().len(), 2, "{all}");

    let by_model = c
        .ctl(&["usage", "--org", "acme", "--by", "model"])
        .await
        .ok();
    assert_eq!(by_model["rows"][0]["model"], "m", "{by_model}");
    assert_eq!(by_model["rows"][0]["requests"], 5, "{by_model}");
    assert_eq!(by_model["rows"][0]["cost_nano_usd"], spent, "{by_model}");
    let by_provider = c.ctl(&["usage", "--by", "provider"]).await.ok();
    let total: u64 = by_provider["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 5, "{by_provider}");
    let by_day = c.ctl(&["usage", "--org", "acme"]).await.ok();
    assert_eq!(by_day["rows"][0]["requests"], 5, "{by_day}");
    assert_eq!(by_day["rows"][0]["day"].as_str().unwrap().len(), 10);

    let p = c.ctl(&["policy", "version"]).await.ok();
    let (_, ready) = c.readyz(0).await;
    assert_eq!(p["version"], ready["policy_version"], "{p} {ready}");
    assert_eq!(p["orgs"], json!(["acme", "beta"]), "{p}");

    // An issued key serves once routers have the version holding it; revoked, it is refused.
    let k = c.ctl(&["keys", "issue", "--org", "acme"]).await.ok();
    let secret = k["secret"].as_str().unwrap().to_string();
    c.wait_policy(k["policy_version"].as_u64().unwrap()).await;
    let send = |key: String| {
        let url = format!("{}/v1/chat/completions", c.routers[0].url("http"));
        let http = c.http.clone();
        async move {
            http.post(url)
                .bearer_auth(key)
                .json(&hi(json!({})))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(send(secret.clone()).await, 200);
    let r = c
        .ctl(&[
            "keys",
            "revoke",
            k["id"].as_str().unwrap(),
            "--reason",
            "leaked",
        ])
        .await
        .ok();
    c.wait_policy(r["policy_version"].as_u64().unwrap()).await;
    assert_eq!(send(secret).await, 401);
    let p = c.ctl(&["policy", "version"]).await.ok();
    assert_eq!(p["revoked_api_keys"], 1, "{p}");

    one_line_error(
        c.ctl(&["keys", "issue", "--org", "nope"]).await,
        "policy",
        "not found: org `nope`",
    );
    one_line_error(
        c.ctl(&["usage", "--org", "acme", "--from", "2026-13-40"])
            .await,
        "billing",
        "refused: from_day and to_day are YYYY-MM-DD",
    );
    // A service that is not there: which one, and what to check.
    let out = tokio::process::Command::new(
        switchyard_testkit::workspace_bin("switchyard", "switchyard").unwrap(),
    )
    .args(["ctl", "--policy", "127.0.0.1:1", "policy", "version"])
    .output()
    .await
    .unwrap();
    let line = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{line}");
    assert!(
        line.trim_end().lines().count() == 1
            && line.starts_with("error: policy service at http://127.0.0.1:1: ")
            && line.contains("--policy / SWITCHYARD_POLICY_ADDR"),
        "{line}"
    );
}

#[tokio::test]
async fn explain_is_the_plan_the_router_then_executes() {
    let c = Cluster::start(Spec {
        routers: 2,
        ..Spec::default()
    })
    .await;
    let mut billing = c.billing().await;
    billing
        .set_budget(pb::SetBudgetRequest {
            scope: Some(pb::Scope {
                kind: pb::ScopeKind::Org as i32,
                org_id: "acme".into(),
                id: String::new(),
            }),
            period: pb::Period::Day as i32,
            limit_nano_usd: 1_000_000_000,
            hard: true,
            alert_thresholds_percent: vec![],
        })
        .await
        .unwrap();
    let bodies = [
        hi(json!({})),
        hi(json!({"provider": {"sort": "price"}})),
        hi(json!({"provider": {"max_price": {"prompt": 2}}})),
        hi(json!({"workflow": "short"})),
        hi(json!({"models": ["big", "m"], "provider": {"zdr": true}})),
    ];
    let sim = c.sim();
    let all = ["fast", "open", "premium", "claude"];
    let upstream_before = sim.requests(&all).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut explained = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        for seed in [3u64, 1_000_003, u64::MAX - i as u64] {
            let (status, x) = c.explain(0, body, seed).await;
            assert_eq!(status, 200, "{x}");
            assert_eq!(x["dry_run"], true);
            assert_eq!(x["seed"], seed.to_string());
            assert!(!planned(&x).is_empty(), "{x}");
            for p in x["plan"].as_array().unwrap() {
                assert!(p["price"]["prompt"].is_string(), "{p}");
            }
            assert!(x["policy"]["workflow"].is_object(), "{x}");
            // The gRPC form, through ctl, from the same request as a file.
            let file = dir.path().join(format!("req-{i}.json"));
            std::fs::write(&file, body.to_string()).unwrap();
            let g = c
                .ctl(&[
                    "explain",
                    file.to_str().unwrap(),
                    "--key",
                    KEY,
                    "--seed",
                    &seed.to_string(),
                ])
                .await
                .ok();
            for field in [
                "plan",
                "excluded",
                "models",
                "seed",
                "workflow",
                "max_cost_usd",
            ] {
                assert_eq!(g[field], x[field], "{field}: grpc {g} http {x}");
            }
            explained.push((body.clone(), seed, x));
        }
    }
    // Nothing went upstream, nothing was held.
    assert_eq!(sim.requests(&all).await.unwrap(), upstream_before);
    let b = c.ctl(&["budgets", "--org", "acme"]).await.ok();
    assert_eq!(b["budgets"][0]["held_nano_usd"], 0, "{b}");
    assert_eq!(b["budgets"][0]["spent_nano_usd"], 0, "{b}");

    // The router follows the explained plan: the other router, the same seed.
    for (body, seed, x) in &explained {
        let seed_text = seed.to_string();
        let (status, v) = c
            .chat_with(1, body, &[("x-switchyard-route-seed", seed_text.as_str())])
            .await;
        assert_eq!(status, 200, "{v}");
        let routing = &v["routing"];
        assert_eq!(plan(&v), planned(x), "{body}: executed {v} explained {x}");
        assert_eq!(routing["seed"], x["seed"]);
        assert_eq!(routing["policy_version"], x["policy_version"]);
        assert_eq!(routing["health_version"], x["health_version"]);
        assert_eq!(routing["attempts"][0]["endpoint"], x["plan"][0]["endpoint"]);
    }

    // Refusals are the chat API's.
    let resp = c
        .http
        .post(format!("{}/v1/routing/explain", c.routers[0].url("http")))
        .bearer_auth("sk-wrong")
        .json(&bodies[0])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let (status, x) = c.explain(0, &json!({"model": "m", "messages": 3}), 1).await;
    assert_eq!(status, 400, "{x}");
    assert!(
        x["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`messages`"),
        "{x}"
    );
    let (status, x) = c
        .explain(0, &hi(json!({"provider": {"only": ["nowhere"]}})), 1)
        .await;
    assert_eq!(status, 503, "{x}");
    let file = dir.path().join("req-0.json");
    one_line_error(
        c.ctl(&["explain", file.to_str().unwrap(), "--key", "sk-wrong"])
            .await,
        "router",
        "not allowed: invalid or revoked API key",
    );
}
