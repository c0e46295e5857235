//! The policy file: data classes and orgs, each org with its API keys (hashes only), BYOK keys
//! (sealed), provider lists, budget fail mode and workflows. Reference:
//! `deploy/config/policy.example.yaml`.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use switchyard_config::{Validate, Validator};
use switchyard_core::{
    ApiKeyId, DataCollection, MaxPrice, ModelId, Money, OrgId, ProviderId, ProviderPreferences,
    WorkflowId,
};
use switchyard_routing::{ByokMode, Degradation, PanicMode};

use crate::crypto::SealedSecret;

/// Environment prefix of overrides: `SWITCHYARD_POLICY__ORGS__0__BUDGET_FAIL_MODE=fail_open`.
pub const ENV_PREFIX: &str = "SWITCHYARD_POLICY";

/// The whole policy file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Named data-handling constraints workflows refer to.
    #[serde(default)]
    pub data_classes: Vec<DataClass>,
    /// Tenants.
    pub orgs: Vec<OrgConfig>,
}

/// What requests of a data class may do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataClass {
    /// `public`, `internal`, `regulated`, …
    pub id: String,
    /// Zero-retention endpoints only.
    #[serde(default)]
    pub zdr: bool,
    /// Deny providers that retain or train on prompts.
    #[serde(default)]
    pub data_collection: Option<DataCollection>,
    /// Only these providers.
    #[serde(default)]
    pub providers: Option<Vec<ProviderId>>,
    /// Only providers processing in these regions.
    #[serde(default)]
    pub regions: Option<Vec<String>>,
}

/// What a router does when the budget store cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Refuse requests that need a budget hold.
    #[default]
    FailClosed,
    /// Serve within `fail_open_allowance`, then refuse.
    FailOpen,
}

/// One tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgConfig {
    /// Unique id.
    pub id: OrgId,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Budget fail mode.
    #[serde(default)]
    pub budget_fail_mode: FailMode,
    /// USD each router may let this org spend while budgets are unreachable (fail_open only).
    #[serde(default)]
    pub fail_open_allowance: Money,
    /// Provider lists for every workflow of the org.
    #[serde(default)]
    pub providers: OrgProviders,
    /// API keys, by hash.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// The org's own provider keys, sealed (`switchyard seal-byok`).
    #[serde(default)]
    pub byok: Vec<ByokConfig>,
    /// The workflow of requests that name none.
    pub default_workflow: WorkflowId,
    /// Presets.
    pub workflows: Vec<WorkflowConfig>,
    /// Budgets of the org, its keys and its workflows (see [`crate::budgets`]).
    #[serde(default)]
    pub budgets: Vec<crate::budgets::BudgetConfig>,
    /// Request, token and concurrency limits of the org, its keys and its workflows (see
    /// [`crate::limits`]).
    #[serde(default)]
    pub limits: Vec<crate::limits::LimitConfig>,
    /// Its share, against other orgs' weights, of capacity a router's waiting requests are
    /// given when there is not enough for all (weighted fair queuing); 1 to 1000.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// Which waiting requests go first when capacity is short.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Someone is waiting for the answer: admitted before any batch request.
    #[default]
    Interactive,
    /// Work that can wait (its deadline may be minutes).
    Batch,
}

impl Priority {
    /// The label (metrics, logs).
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Batch => "batch",
        }
    }
}

/// Org-wide provider allow and deny lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgProviders {
    /// Only these.
    #[serde(default)]
    pub only: Option<Vec<ProviderId>>,
    /// Never these.
    #[serde(default)]
    pub deny: Vec<ProviderId>,
}

/// A configured API key: its hash, never the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Unique id.
    pub id: ApiKeyId,
    /// Lowercase hex SHA-256 of the key.
    pub sha256: String,
    /// Display prefix (at most 12 characters).
    pub prefix: String,
    /// What the key may do (`chat`, `models`, `explain`, …); empty means everything.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// An org's own key for one provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByokConfig {
    /// The provider.
    pub provider: ProviderId,
    /// The key, sealed for this org and provider.
    pub sealed: SealedSecret,
    /// The requests and tokens per minute the provider grants this key (on each of its
    /// endpoints, as providers count per model), counted across routers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<switchyard_config::catalog::Capacity>,
}

/// Per-attempt and overall time limits of a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowTimeouts {
    /// Connection set-up, per attempt.
    pub connect_ms: u64,
    /// The response head, per attempt (a non-streamed reply: usually the whole generation).
    pub first_byte_ms: u64,
    /// A stream's first content (text, reasoning, a tool call), per attempt; `first_byte_ms`
    /// when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<u64>,
    /// A stream's longest silence between chunks after its first content; a longer one is a
    /// stall, ended as a `timeout`.
    pub idle_ms: u64,
    /// The whole request, every attempt and retry included.
    pub total_ms: u64,
}

impl Default for WorkflowTimeouts {
    fn default() -> Self {
        WorkflowTimeouts {
            connect_ms: 5_000,
            first_byte_ms: 30_000,
            first_token_ms: None,
            idle_ms: 20_000,
            total_ms: 120_000,
        }
    }
}

impl WorkflowTimeouts {
    /// The first-token limit in effect.
    pub fn first_token_ms(&self) -> u64 {
        self.first_token_ms.unwrap_or(self.first_byte_ms)
    }
}

/// Retries of the same endpoint (for retryable classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Retries per endpoint after the first try.
    pub max_retries: u32,
    /// Of those, how many may follow a timeout (no answer, no first token, a stall); by
    /// default none: a timeout moves on to the next endpoint at once.
    pub timeout_retries: u32,
    /// First backoff; doubles each retry, with jitter.
    pub base_backoff_ms: u64,
    /// Backoff cap (Retry-After may ask for more, within the deadline).
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 1,
            timeout_retries: 0,
            base_backoff_ms: 100,
            max_backoff_ms: 2_000,
        }
    }
}

fn default_attempt_cap() -> usize {
    switchyard_routing::DEFAULT_ATTEMPT_CAP
}

/// A preset: what continuity, cost, privacy and determinism mean for one use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    /// Unique within the org.
    pub id: WorkflowId,
    /// Models, in fallback order; also the only models requests may ask for when non-empty.
    #[serde(default)]
    pub models: Vec<ModelId>,
    /// Provider controls (the planner's).
    #[serde(default)]
    pub provider: ProviderPreferences,
    /// Time limits.
    #[serde(default)]
    pub timeouts: WorkflowTimeouts,
    /// Retries.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// `fallback`, `fail_safe` (same model only) or `queue` (the preferred route only, waiting
    /// for it; `batch` workflows).
    #[serde(default)]
    pub degradation: Degradation,
    /// `interactive` (default) or `batch`: which waiting requests go first when capacity is
    /// short.
    #[serde(default)]
    pub priority: Priority,
    /// A data class id.
    #[serde(default)]
    pub data_class: Option<String>,
    /// BYOK mode.
    #[serde(default)]
    pub byok: ByokMode,
    /// Price ceilings (combined with `provider.max_price`, the stricter wins).
    #[serde(default)]
    pub max_price: Option<MaxPrice>,
    /// When every endpoint is ejected.
    #[serde(default)]
    pub panic: PanicMode,
    /// Most attempts per request.
    #[serde(default = "default_attempt_cap")]
    pub attempt_cap: usize,
    /// Whether a content-policy refusal may fall back to another endpoint.
    #[serde(default)]
    pub fallback_on_refusal: bool,
    /// What to do when a tool call or a structured output fails its JSON Schema.
    #[serde(default)]
    pub on_invalid_output: OnInvalidOutput,
    /// What a stream does with an event it cannot parse among ones it can: `skip` (counted,
    /// and named in the final chunk's `routing.anomalies`) or `fail`.
    #[serde(default)]
    pub on_malformed_event: OnMalformedEvent,
    /// When a stream already under way is cut or stalls: `off` (default: it ends with the
    /// error) or `auto` (the next eligible endpoint finishes the answer, see the failure modes).
    #[serde(default)]
    pub continuation: Continuation,
    /// Hedged requests: when the first attempt has no first token this long, a second one
    /// starts on the next endpoint and the first to answer wins (requests without tools, or
    /// with an idempotency key; each hedge spends from the retry budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge: Option<Hedge>,
    /// For requests with tools, leave out endpoints whose measured tool-call validity (0 to 1)
    /// is below this.
    #[serde(default)]
    pub min_tool_validity: Option<f64>,
}

/// When a request is hedged: after a fixed time, or after the first endpoint's observed time to
/// first token at a percentile (this router's last 256 answers from it), with `after_ms` until
/// 20 are known.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hedge {
    /// Milliseconds without a first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<u64>,
    /// A percentile (50 to 99.9) of the first endpoint's time to first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_percentile: Option<f64>,
}

/// Whether a cut or stalled stream is finished elsewhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Continuation {
    /// The stream ends with the error.
    #[default]
    Off,
    /// The next eligible endpoint continues the answer: given what was sent as an assistant
    /// prefill where the endpoint supports `prefill`, or regenerated on the same model and
    /// spliced only when it begins with exactly what was sent.
    Auto,
}

/// What a stream does with an event it cannot parse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMalformedEvent {
    /// Skip it, count it per endpoint and name it in the trace; the stream goes on.
    #[default]
    Skip,
    /// End the attempt as a malformed answer (before the first chunk it falls back).
    Fail,
}

/// What to do with output that fails its JSON Schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalidOutput {
    /// Pass it through, marked invalid in the routing trace.
    #[default]
    Return,
    /// Ask the same endpoint once more; then pass it through, marked.
    Retry,
    /// Move on to the next endpoint in the plan (non-streamed requests); the last invalid
    /// reply is returned, marked, when no endpoint gives a valid one.
    Fallback,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Validate for PolicyConfig {
    fn validate(&self, v: &mut Validator) {
        let mut classes = HashSet::new();
        v.each("data_classes", &self.data_classes, |v, _, c| {
            if c.id.is_empty() || !classes.insert(c.id.as_str()) {
                v.error_at("id", format!("empty or duplicate data class `{}`", c.id));
            }
        });
        let mut orgs = HashSet::new();
        let mut key_ids = HashSet::new();
        let mut hashes = HashSet::new();
        v.each("orgs", &self.orgs, |v, _, o| {
            if o.id.as_str().is_empty() || !orgs.insert(o.id.as_str()) {
                v.error_at("id", format!("empty or duplicate org `{}`", o.id));
            }
            v.check(
                !o.fail_open_allowance.is_negative(),
                "fail_open_allowance",
                "must not be negative",
            );
            v.each("api_keys", &o.api_keys, |v, _, k| {
                if !key_ids.insert(k.id.as_str()) {
                    v.error_at("id", format!("duplicate key id `{}`", k.id));
                }
                if !is_hex64(&k.sha256) {
                    v.error_at(
                        "sha256",
                        "must be 64 lowercase hex characters (the key's SHA-256, never the key)",
                    );
                } else if !hashes.insert(k.sha256.as_str()) {
                    v.error_at("sha256", "the same key is configured twice");
                }
                v.check(
                    !k.prefix.is_empty() && k.prefix.chars().count() <= 12,
                    "prefix",
                    "must be 1 to 12 characters (a display prefix, not the key)",
                );
            });
            let mut byok = HashSet::new();
            v.each("byok", &o.byok, |v, _, b| {
                if !byok.insert(b.provider.as_str()) {
                    v.error_at(
                        "provider",
                        format!("two keys for provider `{}`", b.provider),
                    );
                }
                if let Some(c) = &b.capacity {
                    v.field("capacity", |v| c.check(v));
                }
            });
            let key_list: Vec<&str> = o.api_keys.iter().map(|k| k.id.as_str()).collect();
            let workflow_list: Vec<&str> = o.workflows.iter().map(|w| w.id.as_str()).collect();
            crate::budgets::validate(&o.budgets, &key_list, &workflow_list, v);
            crate::limits::validate(&o.limits, &key_list, &workflow_list, v);
            let mut workflows = HashSet::new();
            v.each("workflows", &o.workflows, |v, _, w| {
                if w.id.as_str().is_empty() || !workflows.insert(w.id.as_str()) {
                    v.error_at("id", format!("empty or duplicate workflow `{}`", w.id));
                }
                if let Some(class) = &w.data_class
                    && !classes.contains(class.as_str())
                {
                    v.error_at("data_class", format!("unknown data class `{class}`"));
                }
                let t = w.timeouts;
                v.field("timeouts", |v| {
                    v.check(t.connect_ms > 0, "connect_ms", "must be positive");
                    v.check(t.first_byte_ms > 0, "first_byte_ms", "must be positive");
                    v.check(
                        t.total_ms >= t.first_byte_ms,
                        "total_ms",
                        "must be at least first_byte_ms",
                    );
                    v.check(
                        t.first_token_ms.is_none_or(|f| f >= t.first_byte_ms),
                        "first_token_ms",
                        "must be at least first_byte_ms (the first content comes after the answer's head)",
                    );
                    v.check(t.idle_ms > 0, "idle_ms", "must be positive");
                });
                v.field("retry", |v| {
                    v.check(
                        w.retry.max_retries <= 10,
                        "max_retries",
                        "must be at most 10",
                    );
                    v.check(
                        w.retry.timeout_retries <= w.retry.max_retries,
                        "timeout_retries",
                        "must not exceed max_retries",
                    );
                    v.check(
                        w.retry.base_backoff_ms <= w.retry.max_backoff_ms,
                        "base_backoff_ms",
                        "must not exceed max_backoff_ms",
                    );
                });
                if let Some(h) = &w.hedge {
                    v.field("hedge", |v| {
                        v.check(
                            h.after_ms.is_some() || h.after_percentile.is_some(),
                            "after_ms",
                            "a hedge needs after_ms, after_percentile or both",
                        );
                        v.check(
                            h.after_ms.is_none_or(|ms| ms > 0),
                            "after_ms",
                            "must be positive",
                        );
                        v.check(
                            h.after_percentile.is_none_or(|p| (50.0..=99.9).contains(&p)),
                            "after_percentile",
                            "must be between 50 and 99.9",
                        );
                    });
                }
                v.check(
                    (1..=20).contains(&w.attempt_cap),
                    "attempt_cap",
                    "must be between 1 and 20",
                );
                v.check(
                    w.min_tool_validity.is_none_or(|m| (0.0..=1.0).contains(&m)),
                    "min_tool_validity",
                    "must be between 0 and 1",
                );
                v.check(
                    w.degradation != Degradation::Queue || w.priority == Priority::Batch,
                    "degradation",
                    "`queue` waits for the preferred route for as long as the deadline allows: it needs `priority: batch`",
                );
            });
            v.check(
                (1..=1000).contains(&o.weight),
                "weight",
                "must be between 1 and 1000",
            );
            if !workflows.contains(o.default_workflow.as_str()) {
                v.error_at(
                    "default_workflow",
                    format!("unknown workflow `{}`", o.default_workflow),
                );
            }
        });
    }
}
