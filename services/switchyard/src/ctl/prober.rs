//! Commands of the health prober: health, eject, restore, probe.

use serde_json::{Value, json};
use switchyard_proto::v1 as pb;

use super::Out;
use super::client::Ctx;
use super::render::*;

fn percentiles_json(p: Option<&pb::Percentiles>) -> Value {
    p.map_or(
        Value::Null,
        |p| json!({"p50": p.p50, "p75": p.p75, "p90": p.p90, "p99": p.p99}),
    )
}

/// Percent, or `-` without attempts.
fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

pub(crate) fn endpoint_json(e: &pb::EndpointHealth) -> Value {
    json!({
        "uptime_last_5m": e.uptime_last_5m,
        "uptime_last_30m": e.uptime_last_30m,
        "uptime_last_1d": e.uptime_last_1d,
        "latency_last_30m": percentiles_json(e.latency_last_30m.as_ref()),
        "ttft_last_30m": percentiles_json(e.ttft_last_30m.as_ref()),
        "throughput_last_30m": percentiles_json(e.throughput_last_30m.as_ref()),
        "last_30m_by_minute": e.last_30m_by_minute.iter().map(|m| json!({
            "start_unix_ms": m.start_unix_ms, "attempts": m.attempts, "uptime": m.uptime,
            "latency": percentiles_json(m.latency.as_ref()),
        })).collect::<Vec<_>>(),
        "endpoint": e.endpoint,
        "state": state_name(e.state),
        "reason": e.reason,
        "error_rate": e.error_rate,
        "latency_ms": e.latency_ms_ewma,
        "ttft_ms": e.ttft_ms_ewma,
        "tokens_per_second": e.tokens_per_second_ewma,
        "tool_validity": e.tool_validity,
        "over_holds": e.over_holds,
        "consecutive_failures": e.consecutive_failures,
        "ejections": e.ejections,
        "ejected_until_unix_ms": e.ejected_until_unix_ms,
        "updated_unix_ms": e.updated_unix_ms,
    })
}

pub(crate) fn endpoints_out(version: Option<u64>, list: &[pb::EndpointHealth]) -> Out {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            vec![
                e.endpoint.clone(),
                state_name(e.state).into(),
                format!("{:.2}", e.error_rate),
                format!("{:.0}", e.latency_ms_ewma),
                format!("{:.0}", e.ttft_ms_ewma),
                e.tool_validity
                    .map_or("-".into(), |v| format!("{:.0}%", v * 100.0)),
                e.ejections.to_string(),
                if e.over_holds > 0 {
                    format!("{}!", e.over_holds)
                } else {
                    "0".into()
                },
                format!(
                    "{}/{}/{}",
                    pct(e.uptime_last_5m),
                    pct(e.uptime_last_30m),
                    pct(e.uptime_last_1d)
                ),
                e.latency_last_30m.as_ref().map_or("-".into(), |p| {
                    format!("{:.0}/{:.0}", p.p50 * 1e3, p.p99 * 1e3)
                }),
                ago(e.updated_unix_ms),
                e.reason.clone(),
            ]
        })
        .collect();
    let mut text = table(
        &[
            "ENDPOINT",
            "STATE",
            "ERRORS",
            "LAT_MS",
            "TTFT_MS",
            "TOOLS",
            "EJECTIONS",
            "OVER_HOLD",
            "UP_5M/30M/1D",
            "P50/P99_MS",
            "UPDATED",
            "REASON",
        ],
        &rows,
    );
    let endpoints: Vec<Value> = list.iter().map(endpoint_json).collect();
    let json = match version {
        Some(v) => {
            text = format!("health version {v}\n{text}");
            json!({"version": v, "endpoints": endpoints})
        }
        None => endpoints.into_iter().next().unwrap_or(Value::Null),
    };
    Out { json, text }
}

pub(crate) async fn health(ctx: &Ctx) -> Result<Out, String> {
    let r = ctx
        .health()?
        .list_endpoints(pb::ListEndpointsRequest {})
        .await
        .map_err(|s| ctx.prober.fail("listing endpoints", &s))?
        .into_inner();
    let mut out = endpoints_out(Some(r.version), &r.endpoints);
    if !r.catalog_version.is_empty() {
        out.json["catalog_version"] = json!(r.catalog_version);
        out.text = format!("catalog version {}, {}", r.catalog_version, out.text);
    }
    Ok(out)
}

pub(crate) async fn eject(
    ctx: &Ctx,
    endpoint: String,
    seconds: u32,
    reason: String,
) -> Result<Out, String> {
    let r = ctx
        .health()?
        .eject(pb::EjectRequest {
            endpoint,
            duration_s: seconds,
            reason,
            actor: ctx.actor.clone(),
        })
        .await
        .map_err(|s| ctx.prober.fail("ejecting", &s))?
        .into_inner();
    Ok(endpoints_out(None, &[r]))
}

pub(crate) async fn restore(ctx: &Ctx, endpoint: String, reason: String) -> Result<Out, String> {
    let r = ctx
        .health()?
        .restore(pb::RestoreRequest {
            endpoint,
            actor: ctx.actor.clone(),
            reason,
        })
        .await
        .map_err(|s| ctx.prober.fail("restoring", &s))?
        .into_inner();
    Ok(endpoints_out(None, &[r]))
}

pub(crate) async fn probe(ctx: &Ctx, endpoint: String) -> Result<Out, String> {
    let r = ctx
        .health()?
        .probe_now(pb::ProbeNowRequest { endpoint })
        .await
        .map_err(|s| ctx.prober.fail("probing", &s))?
        .into_inner();
    Ok(endpoints_out(None, &[r]))
}
