//! A retry budget per upstream provider, so a failing upstream never multiplies traffic: every
//! first attempt deposits a fraction of a token, every retry spends a whole one, and the bucket
//! holds at most a small burst. With the defaults, retries add at most 20 % to an upstream's
//! traffic (plus a burst of 10), however many requests fail.

use std::sync::Mutex;

use switchyard_core::{FastMap, ProviderId};

/// Settings of the budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Tokens a first attempt deposits.
    pub ratio: f64,
    /// Most tokens a bucket holds (and its starting balance).
    pub burst: f64,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: 0.2,
            burst: 10.0,
        }
    }
}

/// The budgets of every upstream, shared by all requests of a router.
#[derive(Debug, Default)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    buckets: Mutex<FastMap<ProviderId, f64>>,
}

impl RetryBudget {
    /// Budgets with `config`.
    pub fn new(config: RetryBudgetConfig) -> Self {
        RetryBudget {
            config,
            buckets: Mutex::new(FastMap::default()),
        }
    }

    fn with<T>(
        &self,
        provider: &ProviderId,
        f: impl FnOnce(&mut f64, &RetryBudgetConfig) -> T,
    ) -> T {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let tokens = buckets.entry(provider.clone()).or_insert(self.config.burst);
        f(tokens, &self.config)
    }

    /// Records a first attempt at `provider`.
    pub fn deposit(&self, provider: &ProviderId) {
        self.with(provider, |t, c| *t = (*t + c.ratio).min(c.burst));
    }

    /// Takes a token for a retry at `provider`; `false` when the budget is spent.
    pub fn try_spend(&self, provider: &ProviderId) -> bool {
        self.with(provider, |t, _| {
            if *t >= 1.0 {
                *t -= 1.0;
                true
            } else {
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_by_the_ratio_and_burst() {
        let b = RetryBudget::new(RetryBudgetConfig {
            ratio: 0.2,
            burst: 2.0,
        });
        let p = ProviderId::from("p");
        let mut retries = 0;
        for _ in 0..100 {
            b.deposit(&p);
            if b.try_spend(&p) {
                retries += 1;
            }
        }
        // 2 from the burst plus 0.2 per request.
        assert!((20..=22).contains(&retries), "{retries}");
        assert!(
            b.try_spend(&ProviderId::from("other")),
            "budgets are per upstream"
        );
    }
}
