//! The command line of `switchyard ctl`: global settings and every subcommand.

use std::path::PathBuf;

/// Arguments of `ctl`.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON document instead of a table.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// The policy service's gRPC address.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_POLICY_ADDR",
        default_value = "http://127.0.0.1:50052"
    )]
    pub(crate) policy: String,
    /// The billing service's gRPC address.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_BILLING_ADDR",
        default_value = "http://127.0.0.1:50053"
    )]
    pub(crate) billing: String,
    /// The health prober's gRPC address.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_PROBER_ADDR",
        default_value = "http://127.0.0.1:50054"
    )]
    pub(crate) prober: String,
    /// A router's gRPC address (for `explain`, `requests` and `request`).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_ROUTER_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub(crate) router: String,
    /// Seconds to wait for a service.
    #[arg(long, global = true, default_value_t = 5.0)]
    pub(crate) timeout: f64,
    /// Who is acting, for the audit trail (default: $USER).
    #[arg(long, global = true, env = "SWITCHYARD_ACTOR")]
    pub(crate) actor: Option<String>,
    /// Client certificate for mutual TLS (PEM; with --tls-key and --tls-ca).
    #[arg(long, global = true, env = "SWITCHYARD_TLS_CERT")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_TLS_KEY",
        hide_env_values = true
    )]
    pub(crate) tls_key: Option<PathBuf>,
    /// The CA the services' certificates are signed by (PEM).
    #[arg(long, global = true, env = "SWITCHYARD_TLS_CA")]
    pub(crate) tls_ca: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(clap::Subcommand)]
pub(crate) enum Cmd {
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
    /// Budgets per org, key and workflow: limit, spent, held, remaining; `set` and `remove`
    /// change them (audited, over the policy file's).
    Budgets {
        /// Only this org (default: every org of the policy).
        #[arg(long)]
        org: Option<String>,
        /// Set or remove one.
        #[command(subcommand)]
        change: Option<BudgetCmd>,
    },
    /// Client limits in force per org, key and workflow (requests and tokens per minute,
    /// requests in flight); `set` and `remove` change them (audited, over the policy file's).
    Limits {
        /// Only this org (default: every org).
        #[arg(long)]
        org: Option<String>,
        /// Set or remove a scope's limits.
        #[command(subcommand)]
        change: Option<LimitCmd>,
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
    /// The newest requests routers recorded (read through a router): when, org, workflow,
    /// serving endpoint, attempts, fallbacks, outcome, latency and cost.
    Requests {
        /// Only this org (a key without the `admin` scope reads its own org only).
        #[arg(long)]
        org: Option<String>,
        /// Only this outcome: `ok`, `cancelled` or an error class (`rate_limited`, …).
        #[arg(long)]
        outcome: Option<String>,
        /// Only requests with an attempt on this endpoint (`model@provider`).
        #[arg(long)]
        endpoint: Option<String>,
        /// How far back: `90s`, `15m`, `2h`, `1d`.
        #[arg(long, default_value = "1h")]
        since: String,
        /// At most this many (up to 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// An API key: its org's requests, or any org's with the `admin` scope.
        #[arg(long, env = "SWITCHYARD_API_KEY", hide_env_values = true)]
        key: String,
    },
    /// One request's record: its route, every attempt, tokens, cost, and the versions and seed
    /// it was routed with.
    Request {
        /// The request id (`x-switchyard-request-id`).
        id: String,
        /// The org, for a key with the `admin` scope (default: any org).
        #[arg(long)]
        org: Option<String>,
        /// An API key: its org's requests, or any org's with the `admin` scope.
        #[arg(long, env = "SWITCHYARD_API_KEY", hide_env_values = true)]
        key: String,
    },
}

/// Whose budget or limits: the org's, one key's or one workflow's, and why it changes.
#[derive(clap::Args)]
pub(crate) struct ScopeArgs {
    /// The org.
    pub org: String,
    /// One API key of the org (its id).
    #[arg(long, conflicts_with = "workflow")]
    pub key: Option<String>,
    /// One workflow of the org.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Why (recorded in the audit).
    #[arg(long)]
    pub reason: String,
}

impl ScopeArgs {
    /// On the wire.
    pub fn to_proto(&self) -> switchyard_proto::v1::Scope {
        use switchyard_proto::v1::ScopeKind;
        let (kind, id) = match (&self.key, &self.workflow) {
            (Some(k), _) => (ScopeKind::ApiKey, k.clone()),
            (None, Some(w)) => (ScopeKind::Workflow, w.clone()),
            (None, None) => (ScopeKind::Org, String::new()),
        };
        switchyard_proto::v1::Scope {
            kind: kind as i32,
            org_id: self.org.clone(),
            id,
        }
    }

    /// For people: `org acme`, `key k1 of acme`, `workflow batch of acme`.
    pub fn name(&self) -> String {
        match (&self.key, &self.workflow) {
            (Some(k), _) => format!("key {k} of {}", self.org),
            (None, Some(w)) => format!("workflow {w} of {}", self.org),
            (None, None) => format!("org {}", self.org),
        }
    }
}

/// Which budget: a scope and a period.
#[derive(clap::Args)]
pub(crate) struct BudgetScope {
    #[command(flatten)]
    pub who: ScopeArgs,
    /// day, month or total.
    #[arg(long)]
    pub period: String,
}

#[derive(clap::Subcommand)]
pub(crate) enum BudgetCmd {
    /// Sets a budget (the period's spend is kept).
    Set {
        #[command(flatten)]
        scope: BudgetScope,
        /// The limit, USD.
        #[arg(long)]
        limit: String,
        /// Alert only, never refuse.
        #[arg(long)]
        soft: bool,
        /// Alert thresholds, percent of the limit (e.g. 50,80,100).
        #[arg(long, value_delimiter = ',')]
        alerts: Vec<u32>,
    },
    /// Removes a budget (the policy file's too, until set again).
    Remove {
        #[command(flatten)]
        scope: BudgetScope,
    },
}

#[derive(clap::Subcommand)]
pub(crate) enum LimitCmd {
    /// Sets a scope's limits (those not given are none).
    Set {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u64>,
        /// Tokens per minute (each request's prompt bound and maximum output, reconciled to
        /// what it used).
        #[arg(long)]
        tpm: Option<u64>,
        /// Requests in flight at once.
        #[arg(long)]
        concurrent: Option<u64>,
    },
    /// Removes a scope's limits (the policy file's too, until set again).
    Remove {
        #[command(flatten)]
        scope: ScopeArgs,
    },
}

#[derive(clap::Subcommand)]
pub(crate) enum OverrideCmd {
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
pub(crate) enum KeyCmd {
    /// Issue a key for an org; the secret is printed once.
    Issue {
        /// Org.
        #[arg(long)]
        org: String,
        /// Scopes (repeat); none means every scope but `admin` (which reads and changes every
        /// org's records through routers and the console).
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
pub(crate) enum PolicyCmd {
    /// The version in force, its hash, and what it holds.
    Version,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum GroupBy {
    Day,
    Model,
    Provider,
    Key,
    Workflow,
}
