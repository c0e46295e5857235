//! The files in deploy/ stay true to the code: the alert rules and the dashboard parse, and
//! every Switchyard series they query is one the services export.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;

use switchyard_testkit::workspace_root;

/// Every `switchyard_…` series name in `text`, without histogram suffixes.
fn series(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("switchyard_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
            .collect();
        rest = &rest[i + name.len()..];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_string();
        out.insert(base);
    }
    out
}

/// Every series name the services export (`metrics::counter!("…"` and the like).
fn exported() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut stack = vec![
        workspace_root().join("services"),
        workspace_root().join("libs"),
    ];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("tests") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for kind in ["counter!(", "gauge!(", "histogram!("] {
                    for part in text.split(kind).skip(1) {
                        let part = part.trim_start().trim_start_matches('"');
                        let name: String = part
                            .chars()
                            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                            .collect();
                        if name.starts_with("switchyard_") {
                            names.insert(name);
                        }
                    }
                }
            }
        }
    }
    names
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn alert_rules_and_the_dashboard_query_series_that_exist() {
    let exported = exported();
    assert!(
        exported.contains("switchyard_requests_total"),
        "{exported:?}"
    );

    let alerts = read(&workspace_root().join("deploy/prometheus/alerts.yaml"));
    let rules: serde_json::Value = serde_norway::from_str(&alerts).unwrap();
    let rules = rules["groups"][0]["rules"].as_array().unwrap();
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    for wanted in [
        "SwitchyardFallbackRateRising",
        "SwitchyardEndpointEjected",
        "SwitchyardBudgetAt80Percent",
        "SwitchyardStateStale",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing: {names:?}");
    }
    for r in rules {
        assert!(
            r["expr"].is_string() && r["annotations"]["summary"].is_string(),
            "{r}"
        );
    }

    let dashboard: serde_json::Value = serde_json::from_str(&read(
        &workspace_root().join("deploy/grafana/switchyard.json"),
    ))
    .unwrap();
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for wanted in [
        "Success rate",
        "Fallback rate",
        "Upstream latency p99 by provider",
        "Cost by workflow (USD per hour)",
        "Endpoint states (prober)",
        "Budgets used",
    ] {
        assert!(titles.contains(&wanted), "{wanted} missing: {titles:?}");
    }

    let queried: BTreeSet<String> = series(&alerts)
        .union(&series(&dashboard.to_string()))
        .cloned()
        .collect();
    let unknown: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "queried but never exported: {unknown:?}"
    );
}
