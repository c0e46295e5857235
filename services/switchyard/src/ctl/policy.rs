//! Commands of the policy service: overrides, keys, the policy version, the audit trail.

use serde_json::{Value, json};
use switchyard_proto::v1 as pb;

use super::Out;
use super::args::*;
use super::client::Ctx;
use super::render::*;

pub(crate) fn override_kind(k: i32) -> &'static str {
    match pb::OverrideKind::try_from(k) {
        Ok(pb::OverrideKind::DisableProvider) => "disable_provider",
        Ok(pb::OverrideKind::DisableEndpoint) => "disable_endpoint",
        Ok(pb::OverrideKind::ForceModel) => "force_model",
        _ => "?",
    }
}

pub(crate) fn override_json(o: &pb::Override) -> Value {
    json!({
        "id": o.id, "kind": override_kind(o.kind),
        "org": (!o.org_id.is_empty()).then_some(&o.org_id),
        "target": o.target, "model": (!o.model.is_empty()).then_some(&o.model),
        "reason": o.reason, "actor": o.actor, "created_unix_ms": o.created_unix_ms,
    })
}

pub(crate) fn overrides_table(list: &[pb::Override]) -> String {
    if list.is_empty() {
        return "no overrides\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|o| {
            vec![
                o.id.clone(),
                override_kind(o.kind).into(),
                if o.org_id.is_empty() {
                    "(all)".into()
                } else {
                    o.org_id.clone()
                },
                o.target.clone(),
                if o.model.is_empty() {
                    "-".into()
                } else {
                    o.model.clone()
                },
                o.actor.clone(),
                ago(o.created_unix_ms),
                o.reason.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "KIND", "ORG", "TARGET", "MODEL", "ACTOR", "CREATED", "REASON",
        ],
        &rows,
    )
}

pub(crate) async fn overrides(ctx: &Ctx, cmd: OverrideCmd) -> Result<Out, String> {
    let mut client = ctx.policy()?;
    let put =
        |kind: pb::OverrideKind, org: Option<String>, target, model: Option<String>, reason| {
            pb::PutOverrideRequest {
                r#override: Some(pb::Override {
                    kind: kind as i32,
                    org_id: org.unwrap_or_default(),
                    target,
                    model: model.unwrap_or_default(),
                    reason,
                    actor: ctx.actor.clone(),
                    ..Default::default()
                }),
            }
        };
    let request = match cmd {
        OverrideCmd::List => {
            let list = client
                .list_overrides(pb::ListOverridesRequest {})
                .await
                .map_err(|s| ctx.policy.fail("listing overrides", &s))?
                .into_inner()
                .overrides;
            return Ok(Out {
                json: json!({ "overrides": list.iter().map(override_json).collect::<Vec<_>>() }),
                text: overrides_table(&list),
            });
        }
        OverrideCmd::Remove { id, reason } => {
            let version = client
                .remove_override(pb::RemoveOverrideRequest {
                    id: id.clone(),
                    actor: ctx.actor.clone(),
                    reason,
                })
                .await
                .map_err(|s| ctx.policy.fail("removing the override", &s))?
                .into_inner()
                .version;
            return Ok(Out {
                json: json!({"removed": id, "policy_version": version}),
                text: format!("removed {id}; policy version {version}\n"),
            });
        }
        OverrideCmd::Disable {
            provider: Some(p),
            org,
            reason,
            ..
        } => put(pb::OverrideKind::DisableProvider, org, p, None, reason),
        OverrideCmd::Disable {
            endpoint: Some(e),
            org,
            reason,
            ..
        } => put(pb::OverrideKind::DisableEndpoint, org, e, None, reason),
        OverrideCmd::Disable { .. } => {
            return Err("error: `overrides disable` needs --provider or --endpoint".into());
        }
        OverrideCmd::Force {
            org,
            workflow,
            model,
            reason,
        } => put(
            pb::OverrideKind::ForceModel,
            Some(org),
            workflow,
            Some(model),
            reason,
        ),
    };
    let o = client
        .put_override(request)
        .await
        .map_err(|s| ctx.policy.fail("putting the override", &s))?
        .into_inner();
    let version = ctx.status().await?.version;
    let mut json = override_json(&o);
    json["policy_version"] = version.into();
    Ok(Out {
        json,
        text: format!("{}policy version {version}\n", overrides_table(&[o])),
    })
}

pub(crate) async fn keys(ctx: &Ctx, cmd: KeyCmd) -> Result<Out, String> {
    let mut client = ctx.policy()?;
    match cmd {
        KeyCmd::Issue { org, scopes } => {
            let r = client
                .issue_api_key(pb::IssueApiKeyRequest {
                    org_id: org,
                    scopes,
                    actor: ctx.actor.clone(),
                })
                .await
                .map_err(|s| ctx.policy.fail("issuing a key", &s))?
                .into_inner();
            let k = r.key.unwrap_or_default();
            Ok(Out {
                json: json!({
                    "id": k.id, "org": k.org_id, "prefix": k.prefix, "scopes": k.scopes,
                    "secret": r.secret, "policy_version": r.version,
                }),
                text: format!(
                    "issued {} for org {} (prefix {}); policy version {}\nsecret (shown once): {}\n",
                    k.id, k.org_id, k.prefix, r.version, r.secret
                ),
            })
        }
        KeyCmd::Revoke { id, reason } => {
            let version = client
                .revoke_api_key(pb::RevokeApiKeyRequest {
                    key_id: id.clone(),
                    actor: ctx.actor.clone(),
                    reason,
                })
                .await
                .map_err(|s| ctx.policy.fail("revoking the key", &s))?
                .into_inner()
                .version;
            Ok(Out {
                json: json!({"revoked": id, "policy_version": version}),
                text: format!("revoked {id}; policy version {version}\n"),
            })
        }
    }
}

pub(crate) async fn policy_version(ctx: &Ctx) -> Result<Out, String> {
    let s = ctx.status().await?;
    Ok(Out {
        json: json!({
            "version": s.version, "sha256": s.sha256, "created_unix_ms": s.created_unix_ms,
            "orgs": s.org_ids, "api_keys": s.api_keys, "revoked_api_keys": s.revoked_api_keys,
            "overrides": s.overrides,
            "catalog_version": (!s.catalog_version.is_empty()).then_some(&s.catalog_version),
            "catalog_error": (!s.catalog_error.is_empty()).then_some(&s.catalog_error),
        }),
        text: format!(
            "policy version {} (sha256 {}, published {})\n  orgs {}; {} api keys ({} revoked); {} overrides\n  catalog {}\n{}",
            s.version,
            s.sha256.get(..12).unwrap_or(&s.sha256),
            ago(s.created_unix_ms),
            s.org_ids.join(", "),
            s.api_keys,
            s.revoked_api_keys,
            s.overrides,
            if s.catalog_version.is_empty() {
                "not published (each process uses its own file)"
            } else {
                &s.catalog_version
            },
            if s.catalog_error.is_empty() {
                String::new()
            } else {
                format!("  catalog change rejected: {}\n", s.catalog_error)
            }
        ),
    })
}

pub(crate) async fn audit(ctx: &Ctx, limit: u32) -> Result<Out, String> {
    let records = ctx
        .policy()?
        .list_audit(pb::ListAuditRequest { limit })
        .await
        .map_err(|s| ctx.policy.fail("reading the audit trail", &s))?
        .into_inner()
        .records;
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                ago(r.at_unix_ms),
                r.actor.clone(),
                r.action.clone(),
                r.target.clone(),
                r.reason.clone(),
            ]
        })
        .collect();
    let list: Vec<Value> = records
        .iter()
        .map(|r| json!({"at_unix_ms": r.at_unix_ms, "actor": r.actor, "action": r.action, "target": r.target, "reason": r.reason}))
        .collect();
    Ok(Out {
        json: json!({ "records": list }),
        text: table(&["WHEN", "ACTOR", "ACTION", "TARGET", "REASON"], &rows),
    })
}
