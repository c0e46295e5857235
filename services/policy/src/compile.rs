//! Config file + dynamic documents (issued keys, revocations, overrides) → [`CompiledPolicy`].
//! Pure and deterministic: the same inputs give the same bytes on every replica.

use std::collections::BTreeSet;

use switchyard_config::FieldError;
use switchyard_core::{DataCollection, MaxPrice, Money, ProviderId};
use switchyard_routing::Policy;

use crate::config::{DataClass, OrgConfig, PolicyConfig, WorkflowConfig};
use crate::crypto::{MasterKey, open};
use crate::snapshot::{
    CompiledOrg, CompiledPolicy, CompiledWorkflow, KeyOrigin, KeyRecord, Override, OverrideKind,
    SealedByok,
};

/// The documents that change at run time, read from the state store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dynamic {
    /// Keys issued over gRPC.
    pub issued: Vec<KeyRecord>,
    /// Ids of revoked keys.
    pub revoked: BTreeSet<String>,
    /// Overrides in force.
    pub overrides: Vec<Override>,
    /// Operators' budget changes.
    pub budgets: Vec<switchyard_policy_model::budgets::BudgetDoc>,
    /// Operators' limit changes.
    pub limits: Vec<switchyard_policy_model::limits::LimitDoc>,
}

fn min_price(a: Option<MaxPrice>, b: Option<MaxPrice>) -> Option<MaxPrice> {
    let m = |x: Option<Money>, y: Option<Money>| match (x, y) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    match (a, b) {
        (Some(a), Some(b)) => Some(MaxPrice {
            prompt: m(a.prompt, b.prompt),
            completion: m(a.completion, b.completion),
            request: m(a.request, b.request),
        }),
        (a, b) => a.or(b),
    }
}

fn intersect(a: Option<&Vec<ProviderId>>, b: Option<&Vec<ProviderId>>) -> Option<Vec<ProviderId>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.iter().filter(|p| b.contains(p)).cloned().collect()),
        (a, b) => a.or(b).cloned(),
    }
}

fn workflow_policy(
    org: &OrgConfig,
    w: &WorkflowConfig,
    class: Option<&DataClass>,
    overrides: &[Override],
) -> Policy {
    let mut prefs = w.provider.clone();
    if class.is_some_and(|c| c.zdr) {
        prefs.zdr = Some(true);
    }
    if class.is_some_and(|c| c.data_collection == Some(DataCollection::Deny)) {
        prefs.data_collection = Some(DataCollection::Deny);
    }
    prefs.max_price = min_price(prefs.max_price, w.max_price);
    let applies = |o: &&Override| o.org.as_ref().is_none_or(|id| *id == org.id);
    let targets = |kind: OverrideKind| -> Vec<String> {
        overrides
            .iter()
            .filter(applies)
            .filter(|o| o.kind == kind)
            .map(|o| o.target.clone())
            .collect()
    };
    Policy {
        models: w.models.clone(),
        forced_model: overrides
            .iter()
            .filter(applies)
            .filter(|o| o.kind == OverrideKind::ForceModel && o.target == w.id.as_str())
            .filter_map(|o| o.model.clone())
            .next_back(),
        providers_only: intersect(
            org.providers.only.as_ref(),
            class.and_then(|c| c.providers.as_ref()),
        ),
        providers_deny: org.providers.deny.clone(),
        disabled_providers: targets(OverrideKind::DisableProvider)
            .into_iter()
            .map(Into::into)
            .collect(),
        disabled_endpoints: targets(OverrideKind::DisableEndpoint)
            .into_iter()
            .map(Into::into)
            .collect(),
        regions: class.and_then(|c| c.regions.clone()),
        preferences: prefs,
        byok: w.byok,
        degradation: w.degradation,
        panic: w.panic,
        attempt_cap: w.attempt_cap,
        min_tool_validity: w.min_tool_validity,
    }
}

/// Compiles the policy. BYOK keys are opened once here to prove they belong to their org and
/// provider under the current master key; the plaintext is dropped immediately.
pub fn compile(
    cfg: &PolicyConfig,
    dynamic: &Dynamic,
    master: Option<&MasterKey>,
) -> Result<CompiledPolicy, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut overrides = dynamic.overrides.clone();
    overrides.sort_by(|a, b| a.id.cmp(&b.id));
    let mut orgs = Vec::new();
    let mut keys = Vec::new();
    let mut byok = Vec::new();
    for (i, org) in cfg.orgs.iter().enumerate() {
        let workflows = org
            .workflows
            .iter()
            .map(|w| {
                let class = w
                    .data_class
                    .as_ref()
                    .and_then(|id| cfg.data_classes.iter().find(|c| &c.id == id));
                CompiledWorkflow::new(w, workflow_policy(org, w, class, &overrides))
            })
            .collect();
        orgs.push(CompiledOrg {
            id: org.id.clone(),
            name: org.name.clone(),
            fail_mode: org.budget_fail_mode,
            fail_open_allowance: org.fail_open_allowance,
            default_workflow: org.default_workflow.clone(),
            workflows,
            weight: org.weight,
        });
        for k in &org.api_keys {
            keys.push(KeyRecord {
                id: k.id.clone(),
                org: org.id.clone(),
                sha256: k.sha256.clone(),
                prefix: k.prefix.clone(),
                scopes: k.scopes.clone(),
                revoked: dynamic.revoked.contains(k.id.as_str()),
                origin: KeyOrigin::Config,
            });
        }
        for (j, b) in org.byok.iter().enumerate() {
            let path = format!("orgs[{i}].byok[{j}]");
            match master {
                None => errors.push(FieldError {
                    path,
                    message: "a master key is needed to use BYOK keys (SWITCHYARD_MASTER_KEY or SWITCHYARD_MASTER_KEY_FILE)".into(),
                }),
                Some(m) => match open(m, org.id.as_str(), b.provider.as_str(), &b.sealed) {
                    Ok(_) => byok.push(SealedByok { org: org.id.clone(), provider: b.provider.clone(), sealed: b.sealed.clone(), capacity: b.capacity }),
                    Err(e) => errors.push(FieldError { path, message: e.to_string() }),
                },
            }
        }
    }
    for k in &dynamic.issued {
        let mut k = k.clone();
        k.revoked = dynamic.revoked.contains(k.id.as_str());
        keys.push(k);
    }
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    if errors.is_empty() {
        let file: Vec<_> = cfg
            .orgs
            .iter()
            .map(|o| (o.id.clone(), o.budgets.clone()))
            .collect();
        let budgets = switchyard_policy_model::budgets::in_force(&file, &dynamic.budgets);
        let limit_file: Vec<_> = cfg
            .orgs
            .iter()
            .map(|o| (o.id.clone(), o.limits.clone()))
            .collect();
        let limits = switchyard_policy_model::limits::in_force(&limit_file, &dynamic.limits);
        Ok(CompiledPolicy::new(orgs, keys, byok, overrides)
            .with_budgets(budgets)
            .with_limits(limits))
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::seal;

    const YAML: &str = r#"
data_classes:
  - { id: regulated, zdr: true, providers: [b, c], regions: [eu] }
  - { id: internal, data_collection: deny }
orgs:
  - id: acme
    budget_fail_mode: fail_open
    fail_open_allowance: "2.5"
    providers: { only: [a, b, c], deny: [d] }
    api_keys:
      - { id: acme-1, sha256: "0000000000000000000000000000000000000000000000000000000000000001", prefix: sk-sy-aaaa }
    default_workflow: support
    workflows:
      - id: support
        models: [small, large]
        provider: { sort: price, max_price: { prompt: 5 } }
        max_price: { prompt: 3, completion: 10 }
      - { id: vault, data_class: regulated, degradation: fail_safe, byok: strict, panic: fail, attempt_cap: 2 }
"#;

    fn config() -> PolicyConfig {
        switchyard_config::parse_str("policy.yaml", YAML).unwrap()
    }

    fn ovr(
        id: &str,
        kind: OverrideKind,
        org: Option<&str>,
        target: &str,
        model: Option<&str>,
    ) -> Override {
        Override {
            id: id.into(),
            kind,
            org: org.map(Into::into),
            target: target.into(),
            model: model.map(Into::into),
            reason: "test".into(),
            actor: "ops".into(),
            created_ms: 1,
        }
    }

    #[test]
    fn workflows_become_planner_bounds() {
        let p = compile(&config(), &Dynamic::default(), None).unwrap();
        let support = &p.workflow("acme", None).unwrap().routing;
        assert_eq!(support.models.len(), 2);
        assert_eq!(support.providers_deny, vec![ProviderId::from("d")]);
        let mp = support.preferences.max_price.unwrap();
        assert_eq!(
            (mp.prompt, mp.completion),
            (Some(Money::from_usd(3)), Some(Money::from_usd(10))),
            "the stricter ceiling"
        );
        let vault = &p.workflow("acme", Some("vault")).unwrap().routing;
        assert_eq!(vault.preferences.zdr, Some(true));
        assert_eq!(
            vault.providers_only,
            Some(vec!["b".into(), "c".into()]),
            "org list ∩ class list"
        );
        assert_eq!(vault.regions, Some(vec!["eu".to_string()]));
        assert_eq!(
            (
                vault.degradation,
                vault.byok,
                vault.panic,
                vault.attempt_cap
            ),
            (
                switchyard_routing::Degradation::FailSafe,
                switchyard_routing::ByokMode::Strict,
                switchyard_routing::PanicMode::Fail,
                2
            )
        );
        assert_eq!(
            p.org("acme").unwrap().fail_open_allowance,
            Money::parse_usd("2.5").unwrap()
        );
        assert!(p.workflow("acme", Some("nope")).is_none());
    }

    #[test]
    fn overrides_apply_globally_or_per_org() {
        let dynamic = Dynamic {
            overrides: vec![
                ovr("o1", OverrideKind::DisableProvider, None, "a", None),
                ovr(
                    "o2",
                    OverrideKind::DisableEndpoint,
                    Some("acme"),
                    "small@b",
                    None,
                ),
                ovr(
                    "o3",
                    OverrideKind::DisableProvider,
                    Some("globex"),
                    "c",
                    None,
                ),
                ovr(
                    "o4",
                    OverrideKind::ForceModel,
                    Some("acme"),
                    "support",
                    Some("large"),
                ),
            ],
            ..Default::default()
        };
        let p = compile(&config(), &dynamic, None).unwrap();
        let support = &p.workflow("acme", Some("support")).unwrap().routing;
        assert_eq!(support.disabled_providers, vec![ProviderId::from("a")]);
        assert_eq!(support.disabled_endpoints, vec!["small@b".into()]);
        assert_eq!(support.forced_model, Some("large".into()));
        assert_eq!(
            p.workflow("acme", Some("vault"))
                .unwrap()
                .routing
                .forced_model,
            None
        );
    }

    #[test]
    fn keys_authenticate_until_revoked() {
        let (secret, sha, prefix) = crate::keys::issue();
        let issued = KeyRecord {
            id: "key_1".into(),
            org: "acme".into(),
            sha256: sha,
            prefix,
            scopes: vec![],
            revoked: false,
            origin: KeyOrigin::Issued,
        };
        let mut dynamic = Dynamic {
            issued: vec![issued],
            ..Default::default()
        };
        let key = secrecy::ExposeSecret::expose_secret(&secret).to_string();
        let p = compile(&config(), &dynamic, None).unwrap();
        assert_eq!(p.authenticate(&key).unwrap().org.as_str(), "acme");
        assert!(p.authenticate("sk-sy-wrong").is_none());
        dynamic.revoked.insert("key_1".into());
        let p = compile(&config(), &dynamic, None).unwrap();
        assert!(p.authenticate(&key).is_none());
        assert!(p.keys.iter().any(|k| k.id.as_str() == "key_1" && k.revoked));
    }

    #[test]
    fn byok_keys_must_open_for_their_org() {
        let master = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let mut cfg = config();
        cfg.orgs[0].byok.push(crate::config::ByokConfig {
            provider: "a".into(),
            sealed: seal(&master, "acme", "a", "sk-own").unwrap(),
            capacity: None,
        });
        let p = compile(&cfg, &Dynamic::default(), Some(&master)).unwrap();
        assert_eq!(p.byok_providers("acme"), vec![ProviderId::from("a")]);
        // The same ciphertext claimed by another provider (or org) does not open.
        cfg.orgs[0].byok[0].provider = "b".into();
        let errors = compile(&cfg, &Dynamic::default(), Some(&master)).unwrap_err();
        assert_eq!(errors[0].path, "orgs[0].byok[0]");
        assert!(errors[0].message.contains("cannot be opened"));
        let errors = compile(&cfg, &Dynamic::default(), None).unwrap_err();
        assert!(errors[0].message.contains("master key"));
    }

    #[test]
    fn compilation_is_deterministic() {
        let a =
            serde_json::to_vec(&compile(&config(), &Dynamic::default(), None).unwrap()).unwrap();
        let b =
            serde_json::to_vec(&compile(&config(), &Dynamic::default(), None).unwrap()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn config_errors_are_all_reported() {
        let bad = r#"
orgs:
  - id: acme
    api_keys:
      - { id: k, sha256: "sk-sy-notahash", prefix: "sk-sy-this-is-far-too-long" }
      - { id: k, sha256: "0000000000000000000000000000000000000000000000000000000000000001", prefix: p }
    default_workflow: missing
    workflows:
      - { id: w, data_class: secret, timeouts: { first_byte_ms: 10, total_ms: 5 }, attempt_cap: 0 }
"#;
        let err = switchyard_config::parse_str::<PolicyConfig>("policy.yaml", bad).unwrap_err();
        let paths: Vec<_> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "orgs[0].api_keys[0].sha256",
                "orgs[0].api_keys[0].prefix",
                "orgs[0].api_keys[1].id",
                "orgs[0].workflows[0].data_class",
                "orgs[0].workflows[0].timeouts.total_ms",
                "orgs[0].workflows[0].attempt_cap",
                "orgs[0].default_workflow",
            ]
        );
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    #[test]
    fn the_shipped_policies_load() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config");
        for file in ["policy.example.yaml", "policy.demo.yaml"] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let cfg: crate::config::PolicyConfig =
                switchyard_config::parse_str(file, &text).unwrap_or_else(|e| panic!("{e}"));
            let compiled = compile(&cfg, &Default::default(), None).unwrap();
            assert!(
                compiled.authenticate("sk-switchyard-demo").is_some(),
                "{file}: the demo key"
            );
        }
    }

    #[test]
    fn declared_budgets_are_checked_with_their_paths_and_compiled() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config");
        let text = std::fs::read_to_string(root.join("policy.example.yaml")).unwrap();
        let cfg: crate::config::PolicyConfig =
            switchyard_config::parse_str("p.yaml", &text).unwrap();
        let compiled = compile(&cfg, &Default::default(), None).unwrap();
        let ids: Vec<String> = compiled.budgets.iter().map(|b| b.id()).collect();
        assert_eq!(ids, ["acme/key:acme-demo/day", "acme/org/month"]);

        let bad = text.replacen(
            "      - { period: month, limit: \"500\", alerts: [50, 80, 100] }",
            "      - { period: month, limit: \"-1\", alerts: [0] }\n      - { key: ghost, workflow: support, period: month, limit: \"1\" }\n      - { period: month, limit: \"2\" }",
            1,
        );
        let err = switchyard_config::parse_str::<crate::config::PolicyConfig>("p.yaml", &bad)
            .unwrap_err()
            .to_string();
        for expected in [
            "orgs[0].budgets[0]: the limit must not be negative",
            "orgs[0].budgets[1]: a budget is for the org, one key or one workflow",
            "orgs[0].budgets[1].key: unknown key id `ghost`",
            "orgs[0].budgets[2]: two budgets for the same scope and period `month`",
        ] {
            assert!(err.contains(expected), "missing `{expected}` in {err}");
        }
    }

    #[test]
    fn declared_limits_are_checked_with_their_paths_and_compiled() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config");
        let text = std::fs::read_to_string(root.join("policy.example.yaml")).unwrap();
        let cfg: crate::config::PolicyConfig =
            switchyard_config::parse_str("p.yaml", &text).unwrap();
        let compiled = compile(&cfg, &Default::default(), None).unwrap();
        let ids: Vec<String> = compiled.limits.iter().map(|l| l.id()).collect();
        assert_eq!(ids, ["acme/key:acme-demo", "acme/org"]);
        let applying: Vec<String> = compiled
            .limits_for("acme", "acme-demo", "support")
            .map(|l| l.id())
            .collect();
        assert_eq!(applying.len(), 2);
        assert_eq!(compiled.limits_for("acme", "other", "support").count(), 1);

        let bad = text.replacen(
            "      - { rpm: 600, tpm: 2000000 }",
            "      - { rpm: 0 }\n      - { key: ghost, workflow: support, rpm: 1 }\n      - { tpm: 5 }\n      - { workflow: support }",
            1,
        );
        let err = switchyard_config::parse_str::<crate::config::PolicyConfig>("p.yaml", &bad)
            .unwrap_err()
            .to_string();
        for expected in [
            "orgs[0].limits[0]: a limit of 0 refuses everything",
            "orgs[0].limits[1]: limits are for the org, one key or one workflow",
            "orgs[0].limits[1].key: unknown key id `ghost`",
            "orgs[0].limits[2]: two limits for the same scope",
            "orgs[0].limits[3]: set at least one of rpm, tpm, concurrent",
        ] {
            assert!(err.contains(expected), "missing `{expected}` in {err}");
        }
    }
}
