//! Commands of a router: explain (a dry run).

use std::path::PathBuf;

use switchyard_proto::v1 as pb;

use super::Out;
use super::client::Ctx;
use super::render::*;

pub(crate) async fn explain(
    ctx: &Ctx,
    file: &PathBuf,
    key: &str,
    seed: Option<u64>,
) -> Result<Out, String> {
    let body = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
    .map_err(|e| format!("error: cannot read {}: {e}", file.display()))?;
    explain_body(ctx, body, key, seed).await
}

/// Explains the OpenAI-format chat request `body` for `key`'s org.
pub(crate) async fn explain_body(
    ctx: &Ctx,
    body: String,
    key: &str,
    seed: Option<u64>,
) -> Result<Out, String> {
    let mut request = super::requests::with_key(
        pb::ExplainRequest {
            request: None,
            openai_json: body,
        },
        key,
    )?;
    if let Some(seed) = seed
        && let Ok(v) = seed.to_string().parse()
    {
        request.metadata_mut().insert("switchyard-route-seed", v);
    }
    let x = pb::router_client::RouterClient::new(ctx.router.channel(ctx.timeout)?)
        .explain(request)
        .await
        .map_err(|s| ctx.router.fail("explaining the request", &s))?
        .into_inner();
    let json = switchyard_router::explain::json(&x);
    let mut text = format!(
        "dry run for org {} workflow {}: seed {}, policy version {}, health version {}\nmodels {}{}; a budget hold would reserve {} USD ({} prompt tokens estimated)\n\nPLAN\n",
        x.org_id,
        x.workflow,
        x.seed,
        x.policy_version,
        x.health_version,
        x.models.join(", "),
        if x.panic {
            " (panic: every candidate ejected)"
        } else {
            ""
        },
        usd(x.max_cost_nano_usd),
        x.estimated_prompt_tokens
    );
    let rows: Vec<Vec<String>> = x
        .plan
        .iter()
        .enumerate()
        .map(|(i, p)| {
            vec![
                (i + 1).to_string(),
                p.endpoint.clone(),
                p.key.clone(),
                p.state.clone(),
                usd(p.prompt_nano_usd_per_mtok),
                usd(p.completion_nano_usd_per_mtok),
                capacity(&p.capacity_json),
            ]
        })
        .collect();
    text.push_str(&table(
        &[
            "#",
            "ENDPOINT",
            "KEY",
            "STATE",
            "PROMPT/M",
            "COMPLETION/M",
            "CAPACITY LEFT",
        ],
        &rows,
    ));
    if !x.excluded.is_empty() {
        let rows: Vec<Vec<String>> = x
            .excluded
            .iter()
            .map(|e| vec![e.endpoint.clone(), e.reason.clone(), e.detail.clone()])
            .collect();
        text.push_str("\nEXCLUDED\n");
        text.push_str(&table(&["ENDPOINT", "REASON", "DETAIL"], &rows));
    }
    Ok(Out { json, text })
}

/// A planned key's capacity left, as `12 req, 9000 tok (resets in 4.2 s)`; `-` when unknown.
fn capacity(json: &str) -> String {
    let Ok(c) = serde_json::from_str::<serde_json::Value>(json) else {
        return "-".into();
    };
    let mut parts = Vec::new();
    let mut reset: Option<u64> = None;
    for (kind, unit) in [("requests", "req"), ("tokens", "tok")] {
        if let Some(l) = c.get(kind) {
            parts.push(format!("{} {unit}", l["remaining"]));
            let r = l["reset_in_ms"].as_u64().unwrap_or(0);
            reset = Some(reset.map_or(r, |x| x.min(r)));
        }
    }
    match reset {
        None => "-".into(),
        Some(ms) => format!(
            "{} (resets in {:.1} s)",
            parts.join(", "),
            ms as f64 / 1000.0
        ),
    }
}
