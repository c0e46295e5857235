//! What the cluster knows about an endpoint's health: written by the prober, read by every router
//! and fed to the planner. Health older than its TTL reads as `unknown`, never as unhealthy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::EndpointId;

/// The state of one endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointState {
    /// Serving normally.
    Healthy,
    /// Serving, but slow or erroring above thresholds: tried after healthy endpoints.
    Degraded,
    /// Failing: not tried until it recovers (or the panic rule applies).
    Ejected,
    /// Switched off by an operator: never tried.
    Disabled,
    /// No fresh record: treated like healthy, listed apart.
    #[default]
    Unknown,
}

impl EndpointState {
    /// Every state.
    pub const ALL: [EndpointState; 5] = [
        EndpointState::Healthy,
        EndpointState::Degraded,
        EndpointState::Ejected,
        EndpointState::Disabled,
        EndpointState::Unknown,
    ];

    /// Metric label and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::Healthy => "healthy",
            EndpointState::Degraded => "degraded",
            EndpointState::Ejected => "ejected",
            EndpointState::Disabled => "disabled",
            EndpointState::Unknown => "unknown",
        }
    }
}

/// One endpoint's record as routers see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointHealth {
    /// State.
    pub state: EndpointState,
    /// Latency EWMA of whole requests, milliseconds; absent until measured.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// Time-to-first-token EWMA, milliseconds.
    #[serde(default)]
    pub ttft_ms: Option<f64>,
    /// Output tokens per second EWMA.
    #[serde(default)]
    pub tokens_per_s: Option<f64>,
    /// Error rate over the recent window, 0 to 1.
    #[serde(default)]
    pub error_rate: f64,
    /// Share of tool calls with schema-valid arguments, once enough were seen.
    #[serde(default)]
    pub tool_validity: Option<f64>,
}

/// Every endpoint's health at one version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthSnapshot {
    /// Increases with every change written.
    pub version: u64,
    /// Records by endpoint; an endpoint without one is `unknown`.
    pub endpoints: BTreeMap<EndpointId, EndpointHealth>,
}

impl HealthSnapshot {
    /// The record of `endpoint`, `unknown` when there is none.
    pub fn get(&self, endpoint: &str) -> EndpointHealth {
        self.endpoints.get(endpoint).copied().unwrap_or_default()
    }
}
