//! `switchyard ctl`: the operator's command line over the services' gRPC APIs — endpoint health
//! and manual ejection (prober), budgets and usage (billing), overrides, keys, the policy version
//! and the audit trail (policy), and through a router explain (a dry run) and the request
//! records. Tables for people, `--json`
//! for scripts; a failure is one line naming the service, what failed and what to check.

pub(crate) mod args;
pub(crate) mod billing;
pub(crate) mod client;
pub(crate) mod limits;
pub(crate) mod policy;
pub(crate) mod prober;
pub(crate) mod render;
pub(crate) mod requests;
pub(crate) mod router;

use std::time::Duration;

use serde_json::Value;

pub use args::Args;
use args::{Cmd, PolicyCmd};
use billing::{budgets, change_budget, usage};
use client::{Ctx, Service};
use policy::{audit, keys, overrides, policy_version};
use prober::{eject, health, probe, restore};
use router::explain;

pub(crate) struct Out {
    pub(crate) json: Value,
    pub(crate) text: String,
}

/// The services at `addrs` (policy, billing, prober, a router), acting as `actor`.
pub(crate) fn context(addrs: [String; 4], timeout: Duration, actor: String) -> Ctx {
    let [policy, billing, prober, router] = addrs;
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
    Ctx {
        policy: service("policy", policy, "policy", "SWITCHYARD_POLICY_ADDR"),
        billing: service("billing", billing, "billing", "SWITCHYARD_BILLING_ADDR"),
        prober: service("prober", prober, "prober", "SWITCHYARD_PROBER_ADDR"),
        router: service("router", router, "router", "SWITCHYARD_ROUTER_ADDR"),
        timeout,
        actor,
    }
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
    let ctx = context(
        [args.policy, args.billing, args.prober, args.router],
        timeout,
        actor,
    );
    let out = match args.command {
        Cmd::Health => health(&ctx).await?,
        Cmd::Eject {
            endpoint,
            seconds,
            reason,
        } => eject(&ctx, endpoint, seconds, reason).await?,
        Cmd::Restore { endpoint, reason } => restore(&ctx, endpoint, reason).await?,
        Cmd::Probe { endpoint } => probe(&ctx, endpoint).await?,
        Cmd::Budgets { org, change: None } => budgets(&ctx, org).await?,
        Cmd::Budgets {
            change: Some(change),
            ..
        } => change_budget(&ctx, change).await?,
        Cmd::Limits { org, change: None } => limits::list(&ctx, org).await?,
        Cmd::Limits {
            change: Some(change),
            ..
        } => limits::change(&ctx, change).await?,
        Cmd::Usage { org, by, from, to } => usage(&ctx, org, by, from, to).await?,
        Cmd::Overrides(cmd) => overrides(&ctx, cmd).await?,
        Cmd::Keys(cmd) => keys(&ctx, cmd).await?,
        Cmd::Policy(PolicyCmd::Version) => policy_version(&ctx).await?,
        Cmd::Audit { limit } => audit(&ctx, limit).await?,
        Cmd::Explain { file, key, seed } => explain(&ctx, &file, &key, seed).await?,
        Cmd::Requests {
            org,
            outcome,
            endpoint,
            since,
            limit,
            key,
        } => {
            let selection = requests::Selection {
                org,
                outcome,
                endpoint,
                since,
                limit,
            };
            requests::list(&ctx, &key, selection).await?
        }
        Cmd::Request { id, org, key } => requests::one(&ctx, &key, id, org).await?,
    };
    let text = if args.json {
        format!("{:#}\n", out.json)
    } else {
        out.text
    };
    switchyard_runtime::print_stdout(&text).map_err(|e| format!("error: cannot print: {e}"))
}
