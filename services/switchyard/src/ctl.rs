//! `switchyard ctl`: the operator's command line over the services' gRPC APIs — endpoint health
//! and manual ejection (prober), budgets and usage (billing), overrides, keys, the policy version
//! and the audit trail (policy), and explain (a router's dry run). Tables for people, `--json`
//! for scripts; a failure is one line naming the service, what failed and what to check.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_core::Money;
use switchyard_proto::v1 as pb;
use tonic::transport::Channel;

/// Arguments of `ctl`.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON document instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// The policy service's gRPC address.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_POLICY_ADDR",
        default_value = "http://127.0.0.1:50052"
    )]
    policy: String,
    /// The billing service's gRPC address.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_BILLING_ADDR",
        default_value = "http://127.0.0.1:50053"
    )]
    billing: String,
    /// The health prober's gRPC address.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_PROBER_ADDR",
        default_value = "http://127.0.0.1:50054"
    )]
    prober: String,
    /// A router's gRPC address (for `explain`).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_ROUTER_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    router: String,
    /// Seconds to wait for a service.
    #[arg(long, global = true, default_value_t = 5.0)]
    timeout: f64,
    /// Who is acting, for the audit trail (default: $USER).
    #[arg(long, global = true, env = "SWITCHYARD_ACTOR")]
    actor: Option<String>,
    /// Client certificate for mutual TLS (PEM; with --tls-key and --tls-ca).
    #[arg(long, global = true, env = "SWITCHYARD_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_TLS_KEY",
        hide_env_values = true
    )]
    tls_key: Option<PathBuf>,
    /// The CA the services' certificates are signed by (PEM).
    #[arg(long, global = true, env = "SWITCHYARD_TLS_CA")]
    tls_ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Endpoint states, statistics and reasons, as the prober records them.
    Health,
    /// Eject an endpoint: no router plans it until the time is up or it is restored.
    Eject {
        /// Endpoint id (`model@provider`).
        endpoint: String,
        /// Seconds.
        #[arg(long = "for", default_value_t = 300)]
        seconds: u32,
        /// Why (recorded in the audit trail and shown by `health`).
        #[arg(long)]
        reason: String,
    },
    /// Restore an ejected endpoint.
    Restore {
        /// Endpoint id.
        endpoint: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Probe an endpoint now and show its record.
    Probe {
        /// Endpoint id.
        endpoint: String,
    },
    /// Budgets per org, key and workflow: limit, spent, held, remaining.
    Budgets {
        /// Only this org (default: every org of the policy).
        #[arg(long)]
        org: Option<String>,
    },
    /// Usage: requests, tokens and cost, grouped.
    Usage {
        /// Only this org (default: every org of the policy).
        #[arg(long)]
        org: Option<String>,
        /// Group by.
        #[arg(long, value_enum, default_value_t = GroupBy::Day)]
        by: GroupBy,
        /// First UTC day, YYYY-MM-DD (default: `--to`).
        #[arg(long)]
        from: Option<String>,
        /// Last UTC day, YYYY-MM-DD (default: today).
        #[arg(long)]
        to: Option<String>,
    },
    /// Operator overrides: disable a provider or endpoint, force a model.
    #[command(subcommand)]
    Overrides(OverrideCmd),
    /// API keys.
    #[command(subcommand)]
    Keys(KeyCmd),
    /// The policy in force.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// The latest audit records: keys, overrides, ejections and restores.
    Audit {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Dry run: the plan a router would follow for a chat request (a JSON file as the HTTP API
    /// takes it; `-` for stdin) and why every other candidate is left out. Nothing is sent
    /// upstream and no budget is held.
    Explain {
        /// The request file.
        file: PathBuf,
        /// An API key of the org to explain for.
        #[arg(long, env = "SWITCHYARD_API_KEY", hide_env_values = true)]
        key: String,
        /// Route seed: the same seed gives the plan a request sent with it follows.
        #[arg(long)]
        seed: Option<u64>,
    },
}

#[derive(clap::Subcommand)]
enum OverrideCmd {
    /// The overrides in force.
    List,
    /// Disable a provider or an endpoint, for every org or one.
    Disable {
        /// Provider id.
        #[arg(
            long,
            conflicts_with = "endpoint",
            required_unless_present = "endpoint"
        )]
        provider: Option<String>,
        /// Endpoint id (`model@provider`).
        #[arg(long)]
        endpoint: Option<String>,
        /// Only this org.
        #[arg(long)]
        org: Option<String>,
        /// Why (required; recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Force a model for one org's workflow.
    Force {
        /// Org.
        #[arg(long)]
        org: String,
        /// Workflow.
        #[arg(long)]
        workflow: String,
        /// Model to force.
        #[arg(long)]
        model: String,
        /// Why (required; recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Remove an override.
    Remove {
        /// Override id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(clap::Subcommand)]
enum KeyCmd {
    /// Issue a key for an org; the secret is printed once.
    Issue {
        /// Org.
        #[arg(long)]
        org: String,
        /// Scopes (repeat); none means all.
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// Revoke a key.
    Revoke {
        /// Key id.
        id: String,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
}

#[derive(clap::Subcommand)]
enum PolicyCmd {
    /// The version in force, its hash, and what it holds.
    Version,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum GroupBy {
    Day,
    Model,
    Provider,
    Key,
    Workflow,
}

/// A service `ctl` talks to, for connecting and for error lines.
struct Service {
    name: &'static str,
    addr: String,
    flag: &'static str,
    env: &'static str,
}

impl Service {
    fn channel(&self, timeout: Duration) -> Result<Channel, String> {
        switchyard_runtime::tls::endpoint(&self.addr)
            .map(|e| e.connect_timeout(timeout).timeout(timeout).connect_lazy())
            .map_err(|e| {
                format!(
                    "error: {} service at {}: {e}; check --{} / {} and the --tls-* settings",
                    self.name, self.addr, self.flag, self.env
                )
            })
    }

    /// One line: which service, what failed, what to check.
    fn fail(&self, what: &str, s: &tonic::Status) -> String {
        let message = s.message().replace(['\n', '\r'], " ");
        let message = if message.is_empty() {
            s.code().description().to_string()
        } else {
            message
        };
        let hint = match s.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown => format!(
                "unreachable or not ready ({message}); check that it runs and that --{} / {} is its gRPC address{}",
                self.flag,
                self.env,
                if matches!(switchyard_runtime::tls::current(), Ok(Some(_))) {
                    ", and that its certificate is signed by --tls-ca"
                } else {
                    " (and, if the services use mutual TLS, set --tls-cert, --tls-key and --tls-ca)"
                }
            ),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => format!(
                "no answer in time ({message}); check its logs and load, or raise --timeout"
            ),
            tonic::Code::NotFound => format!("not found: {message}"),
            tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::OutOfRange
            | tonic::Code::AlreadyExists => format!("refused: {message}"),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                format!("not allowed: {message}; check --key / SWITCHYARD_API_KEY")
            }
            tonic::Code::Unimplemented => format!(
                "not supported there ({message}); check that --{} points at the {} service",
                self.flag, self.name
            ),
            code => format!("{code:?}: {message}"),
        };
        format!(
            "error: {} service at {}: {what} failed: {hint}",
            self.name, self.addr
        )
    }
}

struct Ctx {
    policy: Service,
    billing: Service,
    prober: Service,
    router: Service,
    timeout: Duration,
    actor: String,
}

impl Ctx {
    fn policy(&self) -> Result<pb::policy_client::PolicyClient<Channel>, String> {
        Ok(pb::policy_client::PolicyClient::new(
            self.policy.channel(self.timeout)?,
        ))
    }

    fn billing(&self) -> Result<pb::billing_client::BillingClient<Channel>, String> {
        Ok(pb::billing_client::BillingClient::new(
            self.billing.channel(self.timeout)?,
        ))
    }

    fn health(&self) -> Result<pb::health_client::HealthClient<Channel>, String> {
        Ok(pb::health_client::HealthClient::new(
            self.prober.channel(self.timeout)?,
        ))
    }

    async fn status(&self) -> Result<pb::PolicyStatus, String> {
        self.policy()?
            .get_status(pb::GetStatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.policy.fail("reading the policy status", &s))
    }

    /// `org`, or every org of the policy.
    async fn orgs(&self, org: Option<String>) -> Result<Vec<String>, String> {
        match org {
            Some(o) => Ok(vec![o]),
            None => Ok(self.status().await?.org_ids),
        }
    }
}

/// What a command prints: a JSON document and the same as a table.
struct Out {
    json: Value,
    text: String,
}

/// Runs `ctl`.
pub async fn run(args: Args) -> Result<(), String> {
    switchyard_runtime::tls::init(
        switchyard_runtime::tls::TlsFiles::from_parts(args.tls_cert, args.tls_key, args.tls_ca)
            .map_err(|e| format!("error: {e}"))?,
    )
    .map_err(|e| format!("error: {e}"))?;
    let timeout = Duration::from_secs_f64(args.timeout.clamp(0.1, 3600.0));
    // Named actors are marked as acting through ctl; without a name, "ctl" alone.
    let actor = args
        .actor
        .or_else(|| std::env::var("USER").ok())
        .filter(|a| !a.trim().is_empty())
        .map_or_else(|| "ctl".to_string(), |a| format!("{} (ctl)", a.trim()));
    // `host:port` is taken as plain-text HTTP/2.
    let service = |name, addr: String, flag, env| Service {
        name,
        addr: if addr.contains("://") {
            addr
        } else {
            format!("http://{addr}")
        },
        flag,
        env,
    };
    let ctx = Ctx {
        policy: service("policy", args.policy, "policy", "SWITCHYARD_POLICY_ADDR"),
        billing: service(
            "billing",
            args.billing,
            "billing",
            "SWITCHYARD_BILLING_ADDR",
        ),
        prober: service("prober", args.prober, "prober", "SWITCHYARD_PROBER_ADDR"),
        router: service("router", args.router, "router", "SWITCHYARD_ROUTER_ADDR"),
        timeout,
        actor,
    };
    let out = match args.command {
        Cmd::Health => health(&ctx).await?,
        Cmd::Eject {
            endpoint,
            seconds,
            reason,
        } => eject(&ctx, endpoint, seconds, reason).await?,
        Cmd::Restore { endpoint, reason } => restore(&ctx, endpoint, reason).await?,
        Cmd::Probe { endpoint } => probe(&ctx, endpoint).await?,
        Cmd::Budgets { org } => budgets(&ctx, org).await?,
        Cmd::Usage { org, by, from, to } => usage(&ctx, org, by, from, to).await?,
        Cmd::Overrides(cmd) => overrides(&ctx, cmd).await?,
        Cmd::Keys(cmd) => keys(&ctx, cmd).await?,
        Cmd::Policy(PolicyCmd::Version) => policy_version(&ctx).await?,
        Cmd::Audit { limit } => audit(&ctx, limit).await?,
        Cmd::Explain { file, key, seed } => explain(&ctx, &file, &key, seed).await?,
    };
    let text = if args.json {
        format!("{:#}\n", out.json)
    } else {
        out.text
    };
    switchyard_runtime::print_stdout(&text).map_err(|e| format!("error: cannot print: {e}"))
}

/// Columns padded to their widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut text = line(headers.to_vec());
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

fn usd(nanos: i64) -> String {
    Money::from_nanos(nanos).to_string()
}

fn ago(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "never".into();
    }
    let now = switchyard_billing::service::now_ms() as i64;
    let s = (now - unix_ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

fn state_name(s: i32) -> &'static str {
    match pb::EndpointState::try_from(s) {
        Ok(pb::EndpointState::Healthy) => "healthy",
        Ok(pb::EndpointState::Degraded) => "degraded",
        Ok(pb::EndpointState::Ejected) => "ejected",
        Ok(pb::EndpointState::Disabled) => "disabled",
        _ => "unknown",
    }
}

fn endpoint_json(e: &pb::EndpointHealth) -> Value {
    json!({
        "endpoint": e.endpoint,
        "state": state_name(e.state),
        "reason": e.reason,
        "error_rate": e.error_rate,
        "latency_ms": e.latency_ms_ewma,
        "ttft_ms": e.ttft_ms_ewma,
        "tokens_per_second": e.tokens_per_second_ewma,
        "tool_validity": e.tool_validity,
        "consecutive_failures": e.consecutive_failures,
        "ejections": e.ejections,
        "ejected_until_unix_ms": e.ejected_until_unix_ms,
        "updated_unix_ms": e.updated_unix_ms,
    })
}

fn endpoints_out(version: Option<u64>, list: &[pb::EndpointHealth]) -> Out {
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

async fn health(ctx: &Ctx) -> Result<Out, String> {
    let r = ctx
        .health()?
        .list_endpoints(pb::ListEndpointsRequest {})
        .await
        .map_err(|s| ctx.prober.fail("listing endpoints", &s))?
        .into_inner();
    Ok(endpoints_out(Some(r.version), &r.endpoints))
}

async fn eject(ctx: &Ctx, endpoint: String, seconds: u32, reason: String) -> Result<Out, String> {
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

async fn restore(ctx: &Ctx, endpoint: String, reason: String) -> Result<Out, String> {
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

async fn probe(ctx: &Ctx, endpoint: String) -> Result<Out, String> {
    let r = ctx
        .health()?
        .probe_now(pb::ProbeNowRequest { endpoint })
        .await
        .map_err(|s| ctx.prober.fail("probing", &s))?
        .into_inner();
    Ok(endpoints_out(None, &[r]))
}

fn scope_name(s: Option<&pb::Scope>) -> (String, String) {
    let Some(s) = s else {
        return ("?".into(), String::new());
    };
    let kind = match pb::ScopeKind::try_from(s.kind) {
        Ok(pb::ScopeKind::Org) => "org",
        Ok(pb::ScopeKind::ApiKey) => "key",
        Ok(pb::ScopeKind::Workflow) => "workflow",
        _ => "?",
    };
    (kind.into(), s.id.clone())
}

fn period_name(p: i32) -> &'static str {
    match pb::Period::try_from(p) {
        Ok(pb::Period::Day) => "day",
        Ok(pb::Period::Month) => "month",
        Ok(pb::Period::Total) => "total",
        _ => "?",
    }
}

async fn budgets(ctx: &Ctx, org: Option<String>) -> Result<Out, String> {
    let mut client = ctx.billing()?;
    let mut list = Vec::new();
    let mut rows = Vec::new();
    for org in ctx.orgs(org).await? {
        let r = client
            .list_budgets(pb::ListBudgetsRequest {
                org_id: org.clone(),
            })
            .await
            .map_err(|s| {
                ctx.billing
                    .fail(&format!("listing the budgets of `{org}`"), &s)
            })?
            .into_inner();
        for b in r.budgets {
            let (kind, id) = scope_name(b.scope.as_ref());
            let remaining = b
                .limit_nano_usd
                .saturating_sub(b.spent_nano_usd)
                .saturating_sub(b.held_nano_usd);
            let used = if b.limit_nano_usd > 0 {
                (b.spent_nano_usd + b.held_nano_usd) as f64 * 100.0 / b.limit_nano_usd as f64
            } else {
                0.0
            };
            rows.push(vec![
                org.clone(),
                kind.clone(),
                if id.is_empty() {
                    "-".into()
                } else {
                    id.clone()
                },
                period_name(b.period).into(),
                b.period_key.clone(),
                usd(b.limit_nano_usd),
                usd(b.spent_nano_usd),
                usd(b.held_nano_usd),
                usd(remaining),
                format!("{used:.0}%"),
                if b.hard { "hard" } else { "soft" }.into(),
            ]);
            list.push(json!({
                "org": org, "scope": kind, "id": id, "period": period_name(b.period),
                "period_key": b.period_key, "hard": b.hard,
                "limit_usd": usd(b.limit_nano_usd), "spent_usd": usd(b.spent_nano_usd),
                "held_usd": usd(b.held_nano_usd), "remaining_usd": usd(remaining),
                "limit_nano_usd": b.limit_nano_usd, "spent_nano_usd": b.spent_nano_usd,
                "held_nano_usd": b.held_nano_usd, "remaining_nano_usd": remaining,
            }));
        }
    }
    let text = if rows.is_empty() {
        "no budgets\n".to_string()
    } else {
        table(
            &[
                "ORG",
                "SCOPE",
                "ID",
                "PERIOD",
                "OF",
                "LIMIT",
                "SPENT",
                "HELD",
                "REMAINING",
                "USED",
                "KIND",
            ],
            &rows,
        )
    };
    Ok(Out {
        json: json!({ "budgets": list }),
        text,
    })
}

async fn usage(
    ctx: &Ctx,
    org: Option<String>,
    by: GroupBy,
    from: Option<String>,
    to: Option<String>,
) -> Result<Out, String> {
    let (group_by, name) = match by {
        GroupBy::Day => (pb::UsageGroupBy::Day, "day"),
        GroupBy::Model => (pb::UsageGroupBy::Model, "model"),
        GroupBy::Provider => (pb::UsageGroupBy::Provider, "provider"),
        GroupBy::Key => (pb::UsageGroupBy::ApiKey, "key"),
        GroupBy::Workflow => (pb::UsageGroupBy::Workflow, "workflow"),
    };
    let mut client = ctx.billing()?;
    let (mut list, mut rows) = (Vec::new(), Vec::new());
    for org in ctx.orgs(org).await? {
        let r = client
            .get_usage(pb::GetUsageRequest {
                org_id: org.clone(),
                group_by: group_by as i32,
                from_day: from.clone().unwrap_or_default(),
                to_day: to.clone().unwrap_or_default(),
            })
            .await
            .map_err(|s| {
                ctx.billing
                    .fail(&format!("reading the usage of `{org}`"), &s)
            })?
            .into_inner();
        for u in r.rows {
            rows.push(vec![
                org.clone(),
                u.key.clone(),
                u.requests.to_string(),
                u.prompt_tokens.to_string(),
                u.completion_tokens.to_string(),
                usd(u.cost_nano_usd),
            ]);
            list.push(json!({
                "org": org, name: u.key, "requests": u.requests,
                "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                "cost_usd": usd(u.cost_nano_usd), "cost_nano_usd": u.cost_nano_usd,
            }));
        }
    }
    let header = name.to_uppercase();
    Ok(Out {
        json: json!({ "group_by": name, "rows": list }),
        text: table(
            &[
                "ORG",
                &header,
                "REQUESTS",
                "PROMPT",
                "COMPLETION",
                "COST_USD",
            ],
            &rows,
        ),
    })
}

fn override_kind(k: i32) -> &'static str {
    match pb::OverrideKind::try_from(k) {
        Ok(pb::OverrideKind::DisableProvider) => "disable_provider",
        Ok(pb::OverrideKind::DisableEndpoint) => "disable_endpoint",
        Ok(pb::OverrideKind::ForceModel) => "force_model",
        _ => "?",
    }
}

fn override_json(o: &pb::Override) -> Value {
    json!({
        "id": o.id, "kind": override_kind(o.kind),
        "org": (!o.org_id.is_empty()).then_some(&o.org_id),
        "target": o.target, "model": (!o.model.is_empty()).then_some(&o.model),
        "reason": o.reason, "actor": o.actor, "created_unix_ms": o.created_unix_ms,
    })
}

fn overrides_table(list: &[pb::Override]) -> String {
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

async fn overrides(ctx: &Ctx, cmd: OverrideCmd) -> Result<Out, String> {
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

async fn keys(ctx: &Ctx, cmd: KeyCmd) -> Result<Out, String> {
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

async fn policy_version(ctx: &Ctx) -> Result<Out, String> {
    let s = ctx.status().await?;
    Ok(Out {
        json: json!({
            "version": s.version, "sha256": s.sha256, "created_unix_ms": s.created_unix_ms,
            "orgs": s.org_ids, "api_keys": s.api_keys, "revoked_api_keys": s.revoked_api_keys,
            "overrides": s.overrides,
        }),
        text: format!(
            "policy version {} (sha256 {}, published {})\n  orgs {}; {} api keys ({} revoked); {} overrides\n",
            s.version,
            s.sha256.get(..12).unwrap_or(&s.sha256),
            ago(s.created_unix_ms),
            s.org_ids.join(", "),
            s.api_keys,
            s.revoked_api_keys,
            s.overrides
        ),
    })
}

async fn audit(ctx: &Ctx, limit: u32) -> Result<Out, String> {
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

async fn explain(ctx: &Ctx, file: &PathBuf, key: &str, seed: Option<u64>) -> Result<Out, String> {
    let body = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
    .map_err(|e| format!("error: cannot read {}: {e}", file.display()))?;
    let mut request = tonic::Request::new(pb::ExplainRequest {
        request: None,
        openai_json: body,
    });
    let auth = format!("Bearer {key}")
        .parse()
        .map_err(|_| "error: the API key has characters a header cannot carry".to_string())?;
    request.metadata_mut().insert("authorization", auth);
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
            ]
        })
        .collect();
    text.push_str(&table(
        &["#", "ENDPOINT", "KEY", "STATE", "PROMPT/M", "COMPLETION/M"],
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
