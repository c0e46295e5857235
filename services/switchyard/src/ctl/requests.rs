//! Request records through a router: `ctl requests` (the newest, filtered) and `ctl request ID`
//! (one, with every attempt). With an API key: its org's, any org's with the `admin` scope.

use serde_json::Value;
use switchyard_proto::v1 as pb;
use switchyard_state::RequestRecord;

use super::Out;
use super::client::Ctx;
use super::render::{ago, table, usd};

/// `request` with `key` as its bearer credentials.
pub(crate) fn with_key<T>(request: T, key: &str) -> Result<tonic::Request<T>, String> {
    let mut request = tonic::Request::new(request);
    let auth = format!("Bearer {key}")
        .parse()
        .map_err(|_| "error: the API key has characters a header cannot carry".to_string())?;
    request.metadata_mut().insert("authorization", auth);
    Ok(request)
}

/// `90s`, `15m`, `2h` or `1d`, in ms.
pub(crate) fn age_ms(text: &str) -> Result<u64, String> {
    let bad = || format!("error: `{text}` is not an age like 90s, 15m, 2h or 1d");
    let (n, unit) = text.split_at(text.len().saturating_sub(1));
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    Ok(secs * 1000)
}

fn parse(doc: &pb::RequestRecordDocument) -> Result<RequestRecord, String> {
    serde_json::from_str(&doc.json)
        .map_err(|e| format!("error: a router sent a record this ctl cannot read: {e}"))
}

fn client(ctx: &Ctx) -> Result<pb::router_client::RouterClient<tonic::transport::Channel>, String> {
    Ok(pb::router_client::RouterClient::new(
        ctx.router.channel(ctx.timeout)?,
    ))
}

/// What `ctl requests` selects.
pub(crate) struct Selection {
    pub org: Option<String>,
    pub outcome: Option<String>,
    pub endpoint: Option<String>,
    pub since: String,
    pub limit: u32,
}

pub(crate) async fn list(ctx: &Ctx, key: &str, s: Selection) -> Result<Out, String> {
    let since = switchyard_core::clock::now_ms().saturating_sub(age_ms(&s.since)?);
    let request = with_key(
        pb::ListRequestRecordsRequest {
            org_id: s.org.unwrap_or_default(),
            outcome: s.outcome.unwrap_or_default(),
            endpoint: s.endpoint.unwrap_or_default(),
            since_unix_ms: since,
            limit: s.limit,
        },
        key,
    )?;
    let reply = client(ctx)?
        .list_requests(request)
        .await
        .map_err(|st| ctx.router.fail("listing requests", &st))?
        .into_inner();
    let records = reply
        .records
        .iter()
        .map(parse)
        .collect::<Result<Vec<_>, _>>()?;
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                ago(r.created_ms as i64),
                r.org.clone(),
                r.workflow.clone(),
                r.endpoint.clone().unwrap_or_else(|| "-".into()),
                r.attempts.len().to_string(),
                r.fallbacks.to_string(),
                r.outcome.clone(),
                format!("{:.1}", r.latency_ms),
                usd(r.cost_nano_usd),
            ]
        })
        .collect();
    let text = if rows.is_empty() {
        "no requests recorded that match\n".to_string()
    } else {
        table(
            &[
                "ID",
                "WHEN",
                "ORG",
                "WORKFLOW",
                "SERVED BY",
                "ATTEMPTS",
                "FALLBACKS",
                "OUTCOME",
                "MS",
                "COST",
            ],
            &rows,
        )
    };
    let json = Value::Array(records.iter().map(|r| serde_json::json!(r)).collect());
    Ok(Out { json, text })
}

pub(crate) async fn one(
    ctx: &Ctx,
    key: &str,
    id: String,
    org: Option<String>,
) -> Result<Out, String> {
    let request = with_key(
        pb::GetRequestRecordRequest {
            id,
            org_id: org.unwrap_or_default(),
        },
        key,
    )?;
    let doc = client(ctx)?
        .get_request(request)
        .await
        .map_err(|st| ctx.router.fail("reading the request", &st))?
        .into_inner();
    let r = parse(&doc)?;
    let mut text = format!(
        "request {} ({}) of org {}, key {}, workflow {}: {}\n{} {} asked for {}{}; {} prompt + {} completion tokens, {} USD, {:.1} ms{}\nrouted with policy version {}, health version {}, catalog {}, seed {}\n",
        r.id,
        ago(r.created_ms as i64),
        r.org,
        r.key_id,
        r.workflow,
        r.outcome,
        r.api,
        if r.stream { "stream" } else { "request" },
        r.requested_model,
        match (&r.model, &r.provider) {
            (Some(m), Some(p)) => format!(", served by {m} at {p}"),
            _ => ", not served".into(),
        },
        r.prompt_tokens,
        r.completion_tokens,
        r.cost_usd,
        r.latency_ms,
        r.ttft_ms
            .map(|t| format!(" (first token {t:.1} ms)"))
            .unwrap_or_default(),
        r.policy_version,
        r.health_version,
        r.catalog_version,
        r.route_seed,
    );
    let rows: Vec<Vec<String>> = r
        .attempts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            vec![
                (i + 1).to_string(),
                a.endpoint.clone(),
                a.outcome.clone(),
                a.latency_ms.to_string(),
                if a.retry { "retry" } else { "" }.to_string(),
            ]
        })
        .collect();
    text.push_str("\nATTEMPTS\n");
    text.push_str(&table(&["#", "ENDPOINT", "OUTCOME", "MS", ""], &rows));
    Ok(Out {
        json: serde_json::json!(r),
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_people_write_them() {
        assert_eq!(age_ms("90s"), Ok(90_000));
        assert_eq!(age_ms("15m"), Ok(900_000));
        assert_eq!(age_ms("2h"), Ok(7_200_000));
        assert_eq!(age_ms("1d"), Ok(86_400_000));
        assert!(age_ms("1w").is_err());
        assert!(age_ms("").is_err());
        assert!(age_ms("h").is_err());
    }
}
