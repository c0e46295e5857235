//! The files in deploy/ stay true to the code: the alert rules and the dashboard parse, and
//! every Switchyard series they query is one the services export.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

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

/// Every document of a multi-document YAML file (empty ones skipped).
fn yaml_docs(path: &Path) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            serde_json::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// What `kustomize build` does with the features deploy/k8s uses: resources (files and
/// directories), `labels`, `namespace`, `images` and `replicas`.
fn kustomize(dir: &Path) -> Vec<serde_json::Value> {
    use serde_json::{Value, json};
    let k = &yaml_docs(&dir.join("kustomization.yaml"))[0];
    let mut docs = Vec::new();
    for r in k["resources"].as_array().unwrap() {
        let path = dir.join(r.as_str().unwrap());
        if path.is_dir() {
            docs.extend(kustomize(&path));
        } else {
            docs.extend(yaml_docs(&path));
        }
    }
    for set in k["labels"].as_array().into_iter().flatten() {
        for d in &mut docs {
            for (key, value) in set["pairs"].as_object().unwrap() {
                d["metadata"]["labels"][key] = value.clone();
            }
        }
    }
    if let Some(ns) = k["namespace"].as_str() {
        for d in docs.iter_mut().filter(|d| d["kind"] != "Namespace") {
            d["metadata"]["namespace"] = json!(ns);
        }
    }
    for image in k["images"].as_array().into_iter().flatten() {
        let new = format!(
            "{}:{}",
            image["newName"].as_str().unwrap(),
            image["newTag"].as_str().unwrap()
        );
        for d in &mut docs {
            let containers = d.pointer_mut("/spec/template/spec/containers");
            for c in containers
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if c["image"] == image["name"] {
                    c["image"] = Value::String(new.clone());
                }
            }
        }
    }
    for r in k["replicas"].as_array().into_iter().flatten() {
        for d in docs
            .iter_mut()
            .filter(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == r["name"])
        {
            d["spec"]["replicas"] = r["count"].clone();
        }
    }
    docs.sort_by_key(|d| (d["kind"].to_string(), d["metadata"]["name"].to_string()));
    docs
}

/// The object of `kind` named `name`.
fn object<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn kubernetes_manifests_render_and_validate_offline() {
    use serde_json::json;
    let overlay = workspace_root().join("deploy/k8s/overlays/example");
    let docs = kustomize(&overlay);

    // Where kubectl is installed, its kustomize renders exactly this.
    let kubectl = std::process::Command::new("kubectl")
        .args(["kustomize"])
        .arg(&overlay)
        .output();
    match kubectl {
        Ok(out) if out.status.success() => {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("rendered.yaml");
            std::fs::write(&file, &out.stdout).unwrap();
            let mut theirs = yaml_docs(&file);
            theirs.sort_by_key(|d| (d["kind"].to_string(), d["metadata"]["name"].to_string()));
            assert_eq!(theirs, docs, "kubectl kustomize renders something else");
        }
        _ => eprintln!("kubectl not installed: rendered with the test's own kustomize subset only"),
    }

    // The topology: a Deployment and a Service per service, a PDB and an HPA for the router,
    // NetworkPolicies that let only routers (and operators) reach policy and billing.
    for name in ["router", "policy", "billing", "prober"] {
        let d = object(&docs, "Deployment", &format!("switchyard-{name}"));
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["image"], "registry.example.com/switchyard:0.1.0",
            "{name}"
        );
        assert_eq!(c["args"][0], name);
        assert!(
            c["readinessProbe"].is_object() && c["livenessProbe"].is_object(),
            "{name}"
        );
        assert!(c["resources"]["requests"]["cpu"].is_string(), "{name}");
        // Mutual TLS between the services, from a Secret per service.
        let env = c["env"].as_array().unwrap();
        for var in [
            "SWITCHYARD_TLS_CERT",
            "SWITCHYARD_TLS_KEY",
            "SWITCHYARD_TLS_CA",
        ] {
            assert!(env.iter().any(|e| e["name"] == var), "{name}: no {var}");
        }
        let volumes = d["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| v["secret"]["secretName"] == format!("switchyard-{name}-tls")),
            "{name}"
        );
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"],
            "true"
        );
        assert_eq!(d["metadata"]["namespace"], "switchyard");
        object(&docs, "Service", &format!("switchyard-{name}"));
    }
    assert_eq!(
        object(&docs, "Deployment", "switchyard-router")["spec"]["replicas"],
        3
    );
    object(&docs, "PodDisruptionBudget", "switchyard-router");
    let hpa = object(&docs, "HorizontalPodAutoscaler", "switchyard-router");
    let in_flight = &hpa["spec"]["metrics"][1]["pods"]["metric"]["name"];
    assert!(
        exported().contains(in_flight.as_str().unwrap()),
        "the HPA follows a series no router exports: {in_flight}"
    );
    for guarded in ["policy", "billing"] {
        let np = object(&docs, "NetworkPolicy", &format!("switchyard-{guarded}"));
        let from = &np["spec"]["ingress"][0]["from"];
        assert_eq!(
            from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"], "router",
            "{np}"
        );
    }

    // The configuration in the ConfigMaps is what the services accept.
    let data = |name: &str, key: &str| {
        object(&docs, "ConfigMap", name)["data"][key]
            .as_str()
            .unwrap()
            .to_string()
    };
    switchyard_config::Catalog::from_yaml(
        "switchyard-catalog",
        &data("switchyard-catalog", "catalog.yaml"),
    )
    .unwrap();
    switchyard_config::parse_str::<switchyard_policy::config::PolicyConfig>(
        "switchyard-policy",
        &data("switchyard-policy", "policy.yaml"),
    )
    .unwrap();
    switchyard_config::parse_str::<switchyard_health_prober::config::ProberConfig>(
        "switchyard-prober",
        &data("switchyard-prober", "prober.yaml"),
    )
    .unwrap();

    // Offline validation against the Kubernetes schemas, strict (unknown fields fail), and a
    // broken manifest to show the validator does reject.
    let python =
        switchyard_testkit::python_with("kubernetes_validate", "kubernetes-validate").unwrap();
    let validate = |docs: &[serde_json::Value]| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("manifests.yaml");
        let text: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
        std::fs::write(&file, text.join("\n---\n")).unwrap();
        std::process::Command::new(&python)
            .args([
                "-m",
                "kubernetes_validate",
                "--strict",
                "--quiet",
                "-k",
                "1.33.0",
            ])
            .arg(&file)
            .output()
            .unwrap()
    };
    let out = validate(&docs);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut broken = object(&docs, "Deployment", "switchyard-router").clone();
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] =
        json!("/readyz");
    assert!(!validate(&[broken]).status.success());
}

#[test]
fn compose_runs_the_same_topology() {
    let compose: serde_json::Value =
        serde_norway::from_str(&read(&workspace_root().join("deploy/compose/compose.yaml")))
            .unwrap();
    let services = compose["services"].as_object().unwrap();
    let mut names: Vec<&str> = services.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "billing", "policy", "prober", "redis", "router-1", "router-2"
        ]
    );
    for (name, s) in services.iter().filter(|(n, _)| *n != "redis") {
        let command = s["command"].as_array().unwrap();
        let role = command[0].as_str().unwrap();
        assert!(name.starts_with(role), "{name} runs {role}");
        assert!(s["healthcheck"].is_object(), "{name}");
        assert!(
            s["depends_on"]["redis"]["condition"] == "service_healthy",
            "{name}"
        );
    }
    // Each config file the services mount exists and is accepted.
    for (mount, check) in [
        ("../config/catalog.example.yaml", "catalog"),
        ("../config/policy.example.yaml", "policy"),
    ] {
        let path = workspace_root().join("deploy/compose").join(mount);
        assert!(path.exists(), "{check}: {}", path.display());
        assert!(
            compose.to_string().contains(mount),
            "compose does not mount {mount}"
        );
    }
}
