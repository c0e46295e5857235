//! Prober settings (YAML, every field optional): probe cadence and cost cap, state-machine
//! thresholds, record TTL and lease TTL. Reference: `deploy/config/prober.example.yaml`.

use serde::{Deserialize, Serialize};
use switchyard_config::{Validate, Validator};
use switchyard_core::Money;

/// Environment prefix of overrides: `SWITCHYARD_PROBER__PROBE__INTERVAL_MS=2000`.
pub const ENV_PREFIX: &str = "SWITCHYARD_PROBER";

/// Everything configurable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProberConfig {
    /// Active probes.
    pub probe: ProbeConfig,
    /// When an endpoint degrades, is ejected, recovers.
    pub thresholds: Thresholds,
    /// How often each owned endpoint is evaluated (passive outcomes, expiry of ejections).
    pub evaluate_ms: u64,
    /// Routers read records older than this as unknown; the prober rewrites them well before.
    pub record_ttl_ms: u64,
    /// A prober's hold on an endpoint; a dead prober's endpoints are taken over after it.
    pub lease_ttl_ms: u64,
}

/// Active probes: a one-token chat completion per endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Between probes of one endpoint.
    pub interval_ms: u64,
    /// A probe slower than this failed (timeout).
    pub timeout_ms: u64,
    /// Up to this much random delay before each probe, so probes do not align.
    pub jitter_ms: u64,
    /// USD all probes of this prober may cost per hour; further probes are skipped.
    pub max_spend_per_hour: Money,
}

/// State-machine thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Passive error rate above which an endpoint is degraded.
    pub degraded_error_rate: f64,
    /// Latency EWMA above which an endpoint is degraded, ms.
    pub degraded_latency_ms: f64,
    /// Failed probes in a row that eject.
    pub eject_consecutive_failures: u32,
    /// Passive error rate that ejects (with at least `min_volume` requests in the window).
    pub eject_error_rate: f64,
    /// Requests in the window before error rates count.
    pub min_volume: u64,
    /// The window of passive outcomes, ms.
    pub window_ms: u64,
    /// First ejection; each further one doubles, up to `max_ejection_ms`.
    pub base_ejection_ms: u64,
    /// Longest ejection.
    pub max_ejection_ms: u64,
    /// Most of a model's endpoints ejected at once (the first one always may be).
    pub max_ejected_share: f64,
    /// Healthy this long, the ejection count starts over.
    pub healthy_reset_ms: u64,
    /// Weight of a new sample in the latency/TTFT/throughput EWMAs.
    pub ewma_alpha: f64,
}

impl Default for ProberConfig {
    fn default() -> Self {
        ProberConfig {
            probe: ProbeConfig::default(),
            thresholds: Thresholds::default(),
            evaluate_ms: 1_000,
            record_ttl_ms: 30_000,
            lease_ttl_ms: 15_000,
        }
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            interval_ms: 5_000,
            timeout_ms: 3_000,
            jitter_ms: 250,
            max_spend_per_hour: Money::from_nanos(100_000_000),
        }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            degraded_error_rate: 0.2,
            degraded_latency_ms: 10_000.0,
            eject_consecutive_failures: 2,
            eject_error_rate: 0.5,
            min_volume: 10,
            window_ms: 60_000,
            base_ejection_ms: 10_000,
            max_ejection_ms: 300_000,
            max_ejected_share: 0.5,
            healthy_reset_ms: 600_000,
            ewma_alpha: 0.3,
        }
    }
}

impl Validate for ProberConfig {
    fn validate(&self, v: &mut Validator) {
        v.field("probe", |v| {
            v.check(
                self.probe.interval_ms >= 50,
                "interval_ms",
                "must be at least 50",
            );
            v.check(self.probe.timeout_ms > 0, "timeout_ms", "must be positive");
            v.check(
                !self.probe.max_spend_per_hour.is_negative(),
                "max_spend_per_hour",
                "must not be negative",
            );
        });
        let t = &self.thresholds;
        v.field("thresholds", |v| {
            for (key, rate) in [
                ("degraded_error_rate", t.degraded_error_rate),
                ("eject_error_rate", t.eject_error_rate),
                ("max_ejected_share", t.max_ejected_share),
            ] {
                v.check((0.0..=1.0).contains(&rate), key, "must be between 0 and 1");
            }
            v.check(
                t.ewma_alpha > 0.0 && t.ewma_alpha <= 1.0,
                "ewma_alpha",
                "must be in (0, 1]",
            );
            v.check(
                t.eject_consecutive_failures > 0,
                "eject_consecutive_failures",
                "must be positive",
            );
            v.check(
                t.base_ejection_ms <= t.max_ejection_ms,
                "base_ejection_ms",
                "must not exceed max_ejection_ms",
            );
        });
        v.check(
            self.lease_ttl_ms > self.probe.interval_ms,
            "lease_ttl_ms",
            "must exceed probe.interval_ms",
        );
        v.check(
            self.record_ttl_ms > self.evaluate_ms,
            "record_ttl_ms",
            "must exceed evaluate_ms",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/config/prober.example.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let parsed: ProberConfig =
            switchyard_config::parse_str("prober.example.yaml", &text).unwrap();
        assert_eq!(parsed, ProberConfig::default());
        let err = switchyard_config::parse_str::<ProberConfig>(
            "p",
            "probe: { interval_ms: 10 }
lease_ttl_ms: 5
",
        )
        .unwrap_err();
        assert_eq!(err.field_errors().len(), 2);
    }
}
