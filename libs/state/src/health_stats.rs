//! Live endpoint statistics: the routers' passive outcomes are also counted per minute (kept
//! 40 minutes) and per hour (kept 26 hours), bounded time buckets beside the short ones the
//! prober evaluates. From them: uptime over the last 5 minutes, 30 minutes and day (the share of
//! attempts that answered, among those that bear on the endpoint's health: a rate limit or a
//! refusal is no downtime), and latency, time-to-first-token and throughput percentiles over
//! 30 minutes, from log-scale histograms (8 bins per doubling, so a percentile is within ~5 %).

use std::collections::BTreeMap;

use serde::Serialize;
use switchyard_core::EndpointId;

use crate::StateError;
use crate::health::{BUCKET_SECS, HealthStore, Outcomes};

/// A granularity of the kept history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// One bucket per minute, every counter and histogram.
    Minute,
    /// One bucket per hour, answered and failed attempts only.
    Hour,
}

impl Tier {
    /// Seconds per bucket.
    pub fn secs(self) -> u64 {
        match self {
            Tier::Minute => 60,
            Tier::Hour => 3600,
        }
    }

    /// How long a bucket is kept, seconds.
    pub fn ttl_secs(self) -> u64 {
        match self {
            Tier::Minute => 40 * 60,
            Tier::Hour => 26 * 3600,
        }
    }

    /// The bucket of this tier a short outcome bucket falls in.
    pub fn of_bucket(self, bucket: u64) -> u64 {
        bucket * BUCKET_SECS / self.secs()
    }

    /// The bucket of this tier a Unix-ms time falls in.
    pub fn of_ms(self, ms: u64) -> u64 {
        ms / 1000 / self.secs()
    }

    /// What a bucket of this tier keeps of `o`.
    pub fn kept(self, o: &Outcomes) -> Outcomes {
        match self {
            Tier::Minute => o.clone(),
            Tier::Hour => Outcomes {
                ok: o.ok,
                failed: o.failed,
                ..Outcomes::default()
            },
        }
    }
}

/// The histogram bin of a value (ms or tokens per second): 8 bins per doubling.
pub fn bin_of(x: f64) -> u16 {
    if !x.is_finite() || x <= 0.0 {
        return 0;
    }
    (8.0 * (x + 1.0).log2()).floor().min(f64::from(u16::MAX)) as u16
}

/// A value representing bin `b` (its geometric middle).
pub fn bin_value(b: u16) -> f64 {
    2f64.powf((f64::from(b) + 0.5) / 8.0) - 1.0
}

/// Percentiles of a distribution, OpenRouter's four.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 75th.
    pub p75: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
}

/// Percentiles of `hist`, each value times `scale`; `None` when it is empty. With `slow_tail`
/// the higher percentiles are the lower values (for throughput: p99 is the slowest 1 %).
pub fn percentiles(hist: &BTreeMap<u16, u64>, scale: f64, slow_tail: bool) -> Option<Percentiles> {
    let total: u64 = hist.values().sum();
    if total == 0 {
        return None;
    }
    let at = |q: f64| {
        let q = if slow_tail { 1.0 - q } else { q };
        // The smallest bin whose cumulative count reaches q of the total.
        let rank = ((q * total as f64 - 1e-9).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, n) in hist {
            seen += n;
            if seen >= rank {
                return bin_value(*b) * scale;
            }
        }
        hist.keys()
            .next_back()
            .map_or(0.0, |b| bin_value(*b) * scale)
    };
    Some(Percentiles {
        p50: at(0.50),
        p75: at(0.75),
        p90: at(0.90),
        p99: at(0.99),
    })
}

/// One endpoint's live statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EndpointStats {
    /// Percent of attempts that answered over the last 5 minutes; `None` without attempts.
    pub uptime_5m: Option<f64>,
    /// Over the last 30 minutes.
    pub uptime_30m: Option<f64>,
    /// Over the last day.
    pub uptime_1d: Option<f64>,
    /// Attempt latency over 30 minutes, seconds.
    pub latency_30m: Option<Percentiles>,
    /// Time to first token of streamed attempts over 30 minutes, seconds.
    pub ttft_30m: Option<Percentiles>,
    /// Output tokens per second over 30 minutes (p99: the slowest 1 %).
    pub throughput_30m: Option<Percentiles>,
    /// Attempts counted over 30 minutes.
    pub attempts_30m: u64,
    /// The last 30 minutes one by one, oldest first (empty when the minutes' start is unknown).
    pub by_minute: Vec<MinuteStats>,
}

/// One minute of an endpoint's statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinuteStats {
    /// When the minute starts, Unix ms.
    pub start_ms: u64,
    /// Attempts counted in it.
    pub attempts: u64,
    /// Percent of those that bear on health that answered.
    pub uptime: Option<f64>,
    /// Attempt latency, seconds.
    pub latency: Option<Percentiles>,
}

fn uptime(buckets: &[Outcomes]) -> Option<f64> {
    let (ok, failed) = buckets
        .iter()
        .fold((0u64, 0u64), |(a, b), o| (a + o.ok, b + o.failed));
    (ok + failed > 0).then(|| 100.0 * ok as f64 / (ok + failed) as f64)
}

/// The statistics of `minutes` (the last 30, oldest first) and `hours` (the last 24).
pub fn stats(minutes: &[Outcomes], hours: &[Outcomes]) -> EndpointStats {
    let mut window = Outcomes::default();
    for m in minutes {
        window.add(m);
    }
    let last5 = &minutes[minutes.len().saturating_sub(5)..];
    EndpointStats {
        uptime_5m: uptime(last5),
        uptime_30m: uptime(minutes),
        uptime_1d: uptime(hours),
        latency_30m: percentiles(&window.latency_hist, 0.001, false),
        ttft_30m: percentiles(&window.ttft_hist, 0.001, false),
        throughput_30m: percentiles(&window.tps_hist, 1.0, true),
        attempts_30m: window.total(),
        by_minute: Vec::new(),
    }
}

/// `minutes` (as [`stats`] takes them) one by one, the first starting at minute `first`.
pub fn by_minute(minutes: &[Outcomes], first: u64) -> Vec<MinuteStats> {
    minutes
        .iter()
        .enumerate()
        .map(|(i, m)| MinuteStats {
            start_ms: (first + i as u64) * Tier::Minute.secs() * 1000,
            attempts: m.total(),
            uptime: uptime(std::slice::from_ref(m)),
            latency: percentiles(&m.latency_hist, 0.001, false),
        })
        .collect()
}

/// `endpoint`'s statistics at `now_ms`, read from `store` (two round trips).
pub async fn endpoint_stats(
    store: &dyn HealthStore,
    endpoint: &EndpointId,
    now_ms: u64,
) -> Result<EndpointStats, StateError> {
    let minute = Tier::Minute.of_ms(now_ms);
    let hour = Tier::Hour.of_ms(now_ms);
    let first = minute.saturating_sub(29);
    let minutes = store
        .tier_outcomes(endpoint, Tier::Minute, first, minute)
        .await?;
    let hours = store
        .tier_outcomes(endpoint, Tier::Hour, hour.saturating_sub(23), hour)
        .await?;
    Ok(EndpointStats {
        by_minute: by_minute(&minutes, first),
        ..stats(&minutes, &hours)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bins_are_within_a_tenth_of_their_values() {
        for x in [7.0, 120.0, 950.0, 30_000.0] {
            let v = bin_value(bin_of(x));
            assert!((v - x).abs() / x < 0.1, "{x} → {v}");
        }
        assert_eq!(bin_of(0.0), 0);
        assert_eq!(bin_of(f64::NAN), 0);
    }

    #[test]
    fn percentiles_follow_the_counts() {
        let mut h = BTreeMap::new();
        // 90 fast (100 ms), 9 slower (400 ms), 1 slow (3 s).
        h.insert(bin_of(100.0), 90);
        h.insert(bin_of(400.0), 9);
        h.insert(bin_of(3000.0), 1);
        let p = percentiles(&h, 0.001, false).unwrap();
        assert!(
            (p.p50 - 0.1).abs() < 0.01 && (p.p90 - 0.1).abs() < 0.01,
            "{p:?}"
        );
        assert!((p.p99 - 0.4).abs() < 0.04, "{p:?}");
        // Throughput: 99 attempts at 100 tokens/s, one at 10: p99 is the slow one.
        let tps = BTreeMap::from([(bin_of(10.0), 1), (bin_of(100.0), 99)]);
        let t = percentiles(&tps, 1.0, true).unwrap();
        assert!(t.p99 < 12.0 && t.p50 > 90.0, "{t:?}");
        assert_eq!(percentiles(&BTreeMap::new(), 1.0, false), None);
    }

    #[test]
    fn uptime_counts_only_what_bears_on_health() {
        let ok = Outcomes {
            ok: 9,
            failed: 1,
            ..Outcomes::default()
        };
        let mut throttled = Outcomes::default();
        throttled.by_class.insert("rate_limited".into(), 50);
        let s = stats(&[ok.clone(), throttled], &[ok]);
        assert_eq!(s.uptime_30m, Some(90.0));
        assert_eq!(s.uptime_5m, Some(90.0));
        assert_eq!(s.uptime_1d, Some(90.0));
        assert_eq!(stats(&[], &[]).uptime_1d, None);
    }
}
