//! Why a candidate is not in the plan: a closed set, each with a stable label, so that "why did
//! this request not go to X" has a precise answer in responses, logs and metrics.

use serde::Serialize;
use switchyard_core::{EndpointId, ModelId, ModelKind, Money, Parameter, ProviderId};

use crate::plan::KeySource;

/// The reason a candidate was left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum ExclusionReason {
    /// An operator disabled the provider or endpoint.
    Disabled,
    /// The org's policy or data class does not allow the provider.
    PolicyDenied,
    /// The provider processes requests outside the allowed regions.
    Region,
    /// The provider retains or trains on prompts and data collection is denied.
    DataPolicy,
    /// Zero data retention is required and the provider does not offer it.
    Zdr,
    /// Not in the request's `only` list.
    NotInOnly,
    /// In the request's `ignore` list.
    Ignored,
    /// Not in `order` while `allow_fallbacks` is false.
    FallbacksDisabled,
    /// The model is not one the workflow allows.
    ModelNotAllowed,
    /// `fail_safe` degradation: another model than the first is never substituted.
    NoSubstitution,
    /// `queue` degradation: only the preferred route (the first model, on the first provider
    /// of the workflow's `order`) serves; the request waits for it rather than fall back.
    NotPreferred,
    /// The endpoint's quantization is not acceptable.
    Quantization,
    /// A price is above the ceiling.
    OverMaxPrice {
        /// `prompt`, `completion` or `request`.
        which: &'static str,
        /// The endpoint's price.
        price: Money,
        /// The ceiling.
        max: Money,
    },
    /// The endpoint does not support a parameter the request uses.
    MissingParameter {
        /// The parameter.
        parameter: Parameter,
    },
    /// Prompt plus output do not fit the endpoint's context (or output cap).
    ContextTooSmall {
        /// Estimated prompt tokens plus requested output.
        needed: u32,
        /// What the endpoint holds.
        available: u32,
    },
    /// `byok: strict` and this is shared capacity.
    ByokRequired,
    /// `byok: off` and this is the org's own key.
    ByokDisabled,
    /// The endpoint is ejected by health checks.
    Unhealthy,
    /// The key has no capacity left on the endpoint for this request until the limit resets
    /// (the provider's rate-limit headers, or the declared limit counted across routers).
    CapacityExhausted {
        /// `requests` or `tokens`.
        which: &'static str,
        /// What is left of it.
        remaining: u64,
        /// When it is whole again, ms from planning.
        reset_in_ms: u64,
    },
    /// The request has tools and the endpoint's tool-call validity is below the minimum.
    LowToolValidity {
        /// Its measured share of valid tool calls, percent.
        percent: u32,
        /// The minimum, percent.
        min_percent: u32,
    },
    /// The plan already holds the maximum number of attempts.
    AttemptCap,
    /// A model of the request's `models` list that the catalog does not have (skipped, as
    /// OpenRouter does; the endpoint field names the model).
    UnknownModel,
    /// A model of the request's `models` list of another kind than the API serves (a chat
    /// model asked for embeddings, or the other way round); skipped like an unknown one.
    WrongKind {
        /// What the model is.
        kind: ModelKind,
    },
}

impl ExclusionReason {
    /// The low-cardinality label (metrics, logs).
    pub fn as_str(&self) -> &'static str {
        match self {
            ExclusionReason::Disabled => "disabled",
            ExclusionReason::PolicyDenied => "policy_denied",
            ExclusionReason::Region => "region",
            ExclusionReason::DataPolicy => "data_policy",
            ExclusionReason::Zdr => "zdr",
            ExclusionReason::NotInOnly => "not_in_only",
            ExclusionReason::Ignored => "ignored",
            ExclusionReason::FallbacksDisabled => "fallbacks_disabled",
            ExclusionReason::ModelNotAllowed => "model_not_allowed",
            ExclusionReason::NoSubstitution => "no_substitution",
            ExclusionReason::NotPreferred => "not_preferred",
            ExclusionReason::Quantization => "quantization",
            ExclusionReason::OverMaxPrice { .. } => "over_max_price",
            ExclusionReason::MissingParameter { .. } => "missing_parameter",
            ExclusionReason::ContextTooSmall { .. } => "context_too_small",
            ExclusionReason::ByokRequired => "byok_required",
            ExclusionReason::ByokDisabled => "byok_disabled",
            ExclusionReason::Unhealthy => "unhealthy",
            ExclusionReason::CapacityExhausted { .. } => "capacity_exhausted",
            ExclusionReason::LowToolValidity { .. } => "low_tool_validity",
            ExclusionReason::AttemptCap => "attempt_cap",
            ExclusionReason::UnknownModel => "unknown_model",
            ExclusionReason::WrongKind { .. } => "wrong_kind",
        }
    }
}

impl std::fmt::Display for ExclusionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExclusionReason::OverMaxPrice { which, price, max } => {
                write!(f, "{which} price {price} is over the ceiling {max}")
            }
            ExclusionReason::MissingParameter { parameter } => {
                write!(f, "does not support `{parameter}`")
            }
            ExclusionReason::LowToolValidity {
                percent,
                min_percent,
            } => write!(
                f,
                "{percent} % of its tool calls were valid, below the minimum of {min_percent} %"
            ),
            ExclusionReason::ContextTooSmall { needed, available } => {
                write!(f, "needs {needed} tokens, holds {available}")
            }
            ExclusionReason::Disabled => f.write_str("disabled by an operator override"),
            ExclusionReason::PolicyDenied => {
                f.write_str("the org's policy or data class does not allow this provider")
            }
            ExclusionReason::Region => f.write_str("the provider is outside the allowed regions"),
            ExclusionReason::DataPolicy => f.write_str(
                "data collection is denied and the provider retains or trains on prompts",
            ),
            ExclusionReason::Zdr => {
                f.write_str("zero data retention is required and the provider does not offer it")
            }
            ExclusionReason::NotInOnly => f.write_str("not in `provider.only`"),
            ExclusionReason::UnknownModel => {
                f.write_str("no such model in the catalog; skipped for the next in `models`")
            }
            ExclusionReason::WrongKind { kind } => write!(
                f,
                "{} model, not served by this API; skipped for the next in `models`",
                match kind {
                    ModelKind::Chat => "a chat",
                    ModelKind::Embedding => "an embedding",
                }
            ),
            ExclusionReason::Ignored => f.write_str("in `provider.ignore`"),
            ExclusionReason::FallbacksDisabled => {
                f.write_str("not in `provider.order` and fallbacks are off")
            }
            ExclusionReason::ModelNotAllowed => {
                f.write_str("the workflow does not allow this model")
            }
            ExclusionReason::NoSubstitution => {
                f.write_str("the workflow's fail_safe degradation never substitutes another model")
            }
            ExclusionReason::NotPreferred => f.write_str(
                "the workflow's queue degradation waits for its preferred route instead of falling back",
            ),
            ExclusionReason::Quantization => f.write_str("quantization not accepted"),
            ExclusionReason::ByokRequired => {
                f.write_str("the workflow requires the org's own key and this is shared capacity")
            }
            ExclusionReason::ByokDisabled => {
                f.write_str("the workflow does not use the org's own keys")
            }
            ExclusionReason::Unhealthy => f.write_str("ejected by health checks"),
            ExclusionReason::CapacityExhausted {
                which,
                remaining,
                reset_in_ms,
            } => write!(
                f,
                "the key has {remaining} {which} left here until the limit resets in {:.1} s",
                *reset_in_ms as f64 / 1000.0
            ),
            ExclusionReason::AttemptCap => f.write_str("the plan holds the most attempts allowed"),
        }
    }
}

/// A candidate left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exclusion {
    /// The endpoint.
    pub endpoint: EndpointId,
    /// Its model.
    pub model: ModelId,
    /// Its provider.
    pub provider: ProviderId,
    /// Which key the candidate would have used.
    pub key: KeySource,
    /// Why.
    #[serde(flatten)]
    pub reason: ExclusionReason,
}
