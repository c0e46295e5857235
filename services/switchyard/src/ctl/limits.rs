//! `ctl limits`: the client limits in force (from the policy snapshot), and `set` / `remove`
//! through the policy service (audited).

use serde_json::{Value, json};
use switchyard_proto::v1 as pb;

use super::Out;
use super::args::LimitCmd;
use super::client::Ctx;
use super::render::table;

pub(crate) async fn change(ctx: &Ctx, cmd: LimitCmd) -> Result<Out, String> {
    let mut client = ctx.policy()?;
    let (what, s, result) = match cmd {
        LimitCmd::Set {
            scope: s,
            rpm,
            tpm,
            concurrent,
        } => {
            let r = client
                .put_limits(pb::PutLimitsRequest {
                    scope: Some(s.to_proto()),
                    requests_per_minute: rpm,
                    tokens_per_minute: tpm,
                    concurrent_requests: concurrent,
                    actor: ctx.actor.clone(),
                    reason: s.reason.clone(),
                })
                .await;
            ("set", s, r)
        }
        LimitCmd::Remove { scope: s } => {
            let r = client
                .remove_limits(pb::RemoveLimitsRequest {
                    scope: Some(s.to_proto()),
                    actor: ctx.actor.clone(),
                    reason: s.reason.clone(),
                })
                .await;
            ("removed", s, r)
        }
    };
    let version = result
        .map_err(|st| ctx.policy.fail("changing the limits", &st))?
        .into_inner()
        .version;
    let name = s.name();
    Ok(Out {
        json: json!({"limits": what, "org": s.org, "key": s.key, "workflow": s.workflow, "policy_version": version}),
        text: format!(
            "limits of {name} {what} (policy version {version}; routers enforce it once they have it)\n"
        ),
    })
}

pub(crate) async fn list(ctx: &Ctx, org: Option<String>) -> Result<Out, String> {
    let status = ctx.status().await?;
    let all: Value = serde_json::from_str(&status.limits_json).unwrap_or(Value::Null);
    let limits: Vec<Value> = all
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|l| org.as_deref().is_none_or(|o| l["org"] == o))
        .collect();
    let cell = |v: &Value| v.as_u64().map_or("-".to_string(), |n| n.to_string());
    let rows: Vec<Vec<String>> = limits
        .iter()
        .map(|l| {
            let (kind, id) = match (l["key"].as_str(), l["workflow"].as_str()) {
                (Some(k), _) => ("key", k),
                (None, Some(w)) => ("workflow", w),
                (None, None) => ("org", "-"),
            };
            vec![
                l["org"].as_str().unwrap_or_default().to_string(),
                kind.into(),
                id.into(),
                cell(&l["set"]["rpm"]),
                cell(&l["set"]["tpm"]),
                cell(&l["set"]["concurrent"]),
                l["source"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    Ok(Out {
        json: json!({"policy_version": status.version, "limits": limits}),
        text: table(
            &["ORG", "SCOPE", "ID", "RPM", "TPM", "CONCURRENT", "SOURCE"],
            &rows,
        ),
    })
}
