//! The per-endpoint state machine, a pure function: previous record + what was just observed →
//! next record. healthy ⇄ degraded → ejected (for a time that doubles with each ejection, capped)
//! → half-open (the next probe decides) → healthy. Operator disables win; a cap keeps too many of
//! one model's endpoints from being ejected at once.

use switchyard_core::{EndpointState, ErrorClass};
use switchyard_state::{HealthRecord, Outcomes};

use crate::config::Thresholds;

/// The result of one active probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeResult {
    /// It answered properly.
    pub ok: bool,
    /// How long it took, ms.
    pub latency_ms: f64,
    /// The failure's class.
    pub class: Option<ErrorClass>,
    /// When it started, Unix ms: the probe cadence runs from starts, not ends.
    pub started_ms: u64,
}

/// What the evaluation sees.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// Now, Unix ms.
    pub now_ms: u64,
    /// A probe that just ran.
    pub probe: Option<ProbeResult>,
    /// Passive outcomes since the window start (or since the endpoint last recovered).
    pub window: &'a Outcomes,
    /// An operator disabled it.
    pub disabled: bool,
    /// Endpoints of the same model.
    pub model_endpoints: usize,
    /// Other endpoints of the model ejected right now.
    pub model_ejected_others: usize,
}

fn ewma(prev: Option<f64>, sample: f64, alpha: f64) -> Option<f64> {
    Some(match prev {
        Some(p) => p + alpha * (sample - p),
        None => sample,
    })
}

/// Tool calls in the window before a validity rate is stated.
pub const MIN_TOOL_CALLS: u64 = 5;

/// The next record.
pub fn evaluate(prev: &HealthRecord, i: &Inputs<'_>, t: &Thresholds) -> HealthRecord {
    let mut r = prev.clone();
    r.updated_ms = i.now_ms;
    // A probe that was throttled or refused says nothing about the endpoint's health (the one
    // rule on `ErrorClass`): its start is noted so the cadence runs on, its result is not.
    if let Some(p) = i.probe {
        r.last_probe_ms = p.started_ms;
    }
    let probe = i
        .probe
        .filter(|p| p.ok || p.class.is_none_or(ErrorClass::counts_against_health));
    if i.disabled {
        r.state = EndpointState::Disabled;
        r.reason = "disabled by an operator override".into();
        return r;
    }
    if let Some(p) = probe {
        if p.ok {
            r.consecutive_failures = 0;
            r.latency_ms = ewma(r.latency_ms, p.latency_ms, t.ewma_alpha);
        } else {
            r.consecutive_failures += 1;
        }
    }
    let w = i.window;
    r.over_holds = w.over_hold;
    let n = w.total();
    let tools = w.tool_calls_valid + w.tool_calls_invalid;
    if tools >= MIN_TOOL_CALLS {
        r.tool_validity = Some(w.tool_calls_valid as f64 / tools as f64);
    }
    if n > 0 {
        r.error_rate = w.failed as f64 / n as f64;
        r.latency_ms = ewma(
            r.latency_ms,
            w.latency_ms_sum as f64 / n as f64,
            t.ewma_alpha,
        );
    } else if probe.is_some() {
        r.error_rate = if r.consecutive_failures > 0 { 1.0 } else { 0.0 };
    }
    if w.ttft_count > 0 {
        r.ttft_ms = ewma(
            r.ttft_ms,
            w.ttft_ms_sum as f64 / w.ttft_count as f64,
            t.ewma_alpha,
        );
    }
    if w.generation_ms > 0 {
        r.tokens_per_s = ewma(
            r.tokens_per_s,
            w.tokens_out as f64 * 1000.0 / w.generation_ms as f64,
            t.ewma_alpha,
        );
    }

    let mut why = None;
    if r.state == EndpointState::Ejected {
        if i.now_ms < r.ejected_until_ms {
            return r;
        }
        // Half-open: the next probe decides.
        match probe {
            None => {
                r.reason = "half-open: waiting for a probe".into();
                return r;
            }
            Some(p) if p.ok => {
                r.state = EndpointState::Healthy;
                r.ejected_until_ms = 0;
                r.healthy_since_ms = i.now_ms;
                r.recovered_ms = i.now_ms;
                r.error_rate = 0.0;
                r.reason = "recovered: probe succeeded after ejection".into();
                return r;
            }
            Some(_) => why = Some("probe failed while half-open".to_string()),
        }
    }

    let why = why.or_else(|| {
        if r.consecutive_failures >= t.eject_consecutive_failures {
            let last = i
                .probe
                .and_then(|p| p.class)
                .map(|c| c.as_str())
                .unwrap_or("failure");
            Some(format!(
                "{} failed probes in a row (last: {last})",
                r.consecutive_failures
            ))
        } else if n >= t.min_volume && r.error_rate >= t.eject_error_rate {
            Some(format!("error rate {:.2} over {n} requests", r.error_rate))
        } else {
            None
        }
    });
    if let Some(why) = why {
        let share = (i.model_ejected_others + 1) as f64 / i.model_endpoints.max(1) as f64;
        if i.model_ejected_others >= 1 && share > t.max_ejected_share {
            r.state = EndpointState::Degraded;
            r.ejected_until_ms = 0;
            r.reason = format!(
                "not ejected ({why}): ejection cap, {} of {} endpoints of the model already ejected",
                i.model_ejected_others, i.model_endpoints
            );
            return r;
        }
        return eject(r, i, t, why);
    }

    let was_healthy = r.state == EndpointState::Healthy;
    if n >= t.min_volume && r.error_rate >= t.degraded_error_rate {
        r.state = EndpointState::Degraded;
        r.reason = format!("error rate {:.2} over {n} requests", r.error_rate);
    } else if r.latency_ms.is_some_and(|l| l > t.degraded_latency_ms) {
        r.state = EndpointState::Degraded;
        r.reason = format!(
            "latency {:.0} ms above {:.0} ms",
            r.latency_ms.unwrap_or(0.0),
            t.degraded_latency_ms
        );
    } else if probe.is_some() || n > 0 || r.state != EndpointState::Unknown {
        r.state = EndpointState::Healthy;
        r.reason = "healthy".into();
        if !was_healthy {
            r.healthy_since_ms = i.now_ms;
        }
        if i.now_ms.saturating_sub(r.healthy_since_ms) > t.healthy_reset_ms {
            r.ejections = 0;
        }
    }
    r
}

fn eject(mut r: HealthRecord, i: &Inputs<'_>, t: &Thresholds, why: String) -> HealthRecord {
    let factor = 1u64.checked_shl(r.ejections.min(20)).unwrap_or(u64::MAX);
    let duration = t
        .base_ejection_ms
        .saturating_mul(factor)
        .min(t.max_ejection_ms);
    r.ejections += 1;
    r.state = EndpointState::Ejected;
    r.ejected_until_ms = i.now_ms + duration;
    r.reason = format!("ejected for {} ms: {why}", duration);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Thresholds {
        Thresholds {
            base_ejection_ms: 1_000,
            max_ejection_ms: 3_000,
            degraded_latency_ms: 500.0,
            ..Thresholds::default()
        }
    }

    fn step(
        prev: &HealthRecord,
        now: u64,
        probe: Option<(bool, u64)>,
        window: &Outcomes,
        others: usize,
    ) -> HealthRecord {
        let probe = probe.map(|(ok, latency_ms)| ProbeResult {
            ok,
            latency_ms: latency_ms as f64,
            class: (!ok).then_some(ErrorClass::Unavailable),
            started_ms: now,
        });
        evaluate(
            prev,
            &Inputs {
                now_ms: now,
                probe,
                window,
                disabled: false,
                model_endpoints: 2,
                model_ejected_others: others,
            },
            &t(),
        )
    }

    #[test]
    fn failed_probes_eject_with_growing_capped_times_then_half_open_recovers() {
        let none = Outcomes::default();
        let r = step(&HealthRecord::default(), 1, Some((true, 50)), &none, 0);
        assert_eq!(r.state, EndpointState::Healthy);
        let r = step(&r, 2, Some((false, 50)), &none, 0);
        assert_eq!(r.state, EndpointState::Healthy);
        let r = step(&r, 3, Some((false, 50)), &none, 0);
        assert_eq!(
            (r.state, r.ejected_until_ms, r.ejections),
            (EndpointState::Ejected, 1_003, 1)
        );
        assert!(r.reason.contains("2 failed probes"), "{}", r.reason);
        // Still ejected before the time is up, whatever happens.
        assert_eq!(
            step(&r, 500, Some((true, 50)), &none, 0).state,
            EndpointState::Ejected
        );
        // Half-open without a probe waits; a failed probe ejects for twice as long.
        let r = step(&r, 1_100, None, &none, 0);
        assert_eq!(r.state, EndpointState::Ejected);
        let r = step(&r, 1_200, Some((false, 50)), &none, 0);
        assert_eq!((r.ejected_until_ms, r.ejections), (3_200, 2));
        let r = step(&r, 3_300, Some((false, 50)), &none, 0);
        assert_eq!(r.ejected_until_ms, 6_300, "capped at max_ejection_ms");
        let r = step(&r, 6_400, Some((true, 40)), &none, 0);
        assert_eq!(
            (r.state, r.consecutive_failures),
            (EndpointState::Healthy, 0)
        );
        assert!(r.reason.starts_with("recovered"));
    }

    #[test]
    fn throttled_probes_and_passive_rate_limits_say_nothing_about_health() {
        let throttled = |now| ProbeResult {
            ok: false,
            latency_ms: 5.0,
            class: Some(ErrorClass::RateLimited),
            started_ms: now,
        };
        let mut window = Outcomes::default();
        for _ in 0..40 {
            window.count(
                switchyard_core::AttemptOutcome::Failed(ErrorClass::RateLimited),
                5,
                0,
                None,
            );
        }
        window.count(switchyard_core::AttemptOutcome::Ok, 50, 3, Some(20));
        let mut r = step(&HealthRecord::default(), 1, Some((true, 50)), &none(), 0);
        for now in 2..10 {
            r = evaluate(
                &r,
                &Inputs {
                    now_ms: now,
                    probe: Some(throttled(now)),
                    window: &window,
                    disabled: false,
                    model_endpoints: 2,
                    model_ejected_others: 0,
                },
                &t(),
            );
        }
        assert_eq!(r.state, EndpointState::Healthy, "{}", r.reason);
        assert_eq!((r.consecutive_failures, r.error_rate), (0, 0.0));
        assert_eq!(
            r.last_probe_ms, 9,
            "the cadence still runs on throttled probes"
        );
        assert_eq!(window.by_class.get("rate_limited"), Some(&40));
        assert_eq!(r.ttft_ms, Some(20.0), "ttft from passive streamed attempts");
    }

    fn none() -> Outcomes {
        Outcomes::default()
    }

    #[test]
    fn passive_error_rate_degrades_then_ejects_with_volume() {
        let mut w = Outcomes {
            ok: 7,
            failed: 3,
            ..Default::default()
        };
        let r = step(&HealthRecord::default(), 1, None, &w, 0);
        assert_eq!(r.state, EndpointState::Degraded, "{}", r.reason);
        w = Outcomes {
            ok: 4,
            failed: 6,
            ..Default::default()
        };
        let r = step(&r, 2, None, &w, 0);
        assert_eq!(r.state, EndpointState::Ejected, "{}", r.reason);
        // Below the minimum volume nothing counts.
        let few = Outcomes {
            ok: 0,
            failed: 3,
            ..Default::default()
        };
        assert_ne!(
            step(&HealthRecord::default(), 1, None, &few, 0).state,
            EndpointState::Ejected
        );
    }

    #[test]
    fn latency_degrades_and_ewma_and_throughput_follow() {
        let none = Outcomes::default();
        let mut r = step(&HealthRecord::default(), 1, Some((true, 100)), &none, 0);
        assert_eq!(r.state, EndpointState::Healthy);
        for n in 2..10 {
            r = step(&r, n, Some((true, 900)), &none, 0);
        }
        assert_eq!(r.state, EndpointState::Degraded);
        assert!(r.reason.starts_with("latency"));
        let w = Outcomes {
            ok: 10,
            latency_ms_sum: 1_000,
            ttft_ms_sum: 500,
            ttft_count: 10,
            tokens_out: 400,
            generation_ms: 2_000,
            ..Default::default()
        };
        let r = step(&HealthRecord::default(), 1, None, &w, 0);
        assert_eq!((r.ttft_ms, r.tokens_per_s), (Some(50.0), Some(200.0)));
    }

    #[test]
    fn the_ejection_cap_and_operator_disable() {
        let none = Outcomes::default();
        let failing = HealthRecord {
            consecutive_failures: 1,
            ..Default::default()
        };
        let r = step(&failing, 1, Some((false, 10)), &none, 1);
        assert_eq!(r.state, EndpointState::Degraded);
        assert!(r.reason.contains("ejection cap"), "{}", r.reason);
        assert_eq!(
            step(&failing, 1, Some((false, 10)), &none, 0).state,
            EndpointState::Ejected,
            "the first may go"
        );
        let r = evaluate(
            &failing,
            &Inputs {
                now_ms: 1,
                probe: None,
                window: &none,
                disabled: true,
                model_endpoints: 2,
                model_ejected_others: 0,
            },
            &t(),
        );
        assert_eq!(r.state, EndpointState::Disabled);
    }
}
