//! Provider capacity as routers share it: the latest figures a provider reported for a key on an
//! endpoint (one record per capacity scope, the newest observation wins), and per-minute use
//! counters for capacity a catalog declares, added to by every router.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Records announced at once (a key ran out), by scope.
pub type CapacityAnnouncement = Arc<Vec<(String, CapacityRecord)>>;

/// The pub/sub channel on which capacity records are announced, whole.
pub fn capacity_channel() -> &'static str {
    "sy:capacity:changed"
}

/// One limit as last reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityWindow {
    /// The limit, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// What was left.
    pub remaining: u64,
    /// When it is whole again, Unix ms.
    pub reset_ms: u64,
    /// How long it ran from the observation to its reset, ms: what the next one is taken to
    /// last until an answer tells.
    #[serde(default)]
    pub window_ms: u64,
}

impl CapacityWindow {
    /// Whether the window still applies at `now_ms` (after its reset it says nothing).
    pub fn live(&self, now_ms: u64) -> bool {
        self.reset_ms > now_ms
    }
}

/// What a provider last reported about a key's capacity on an endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityRecord {
    /// Requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<CapacityWindow>,
    /// Tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<CapacityWindow>,
    /// When the answer that reported it arrived, Unix ms: a newer observation replaces an older
    /// one, never the other way round.
    pub observed_ms: u64,
}

impl CapacityRecord {
    /// Whether it says the key has nothing left at `now_ms`: no request, or no token.
    pub fn exhausted(&self, now_ms: u64) -> bool {
        [self.requests, self.tokens]
            .into_iter()
            .flatten()
            .any(|w| w.remaining == 0 && w.live(now_ms))
    }

    /// Whether any of its windows still applies at `now_ms`.
    pub fn live(&self, now_ms: u64) -> bool {
        [self.requests, self.tokens]
            .into_iter()
            .flatten()
            .any(|w| w.live(now_ms))
    }
}

/// Requests and tokens counted against a declared capacity in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapacityUse {
    /// Requests sent.
    pub requests: u64,
    /// Tokens reserved by them.
    pub tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_exhausted_until_its_reset() {
        let w = |remaining, reset_ms| CapacityWindow {
            limit: Some(10),
            remaining,
            reset_ms,
            window_ms: 5_000,
        };
        let r = CapacityRecord {
            requests: Some(w(0, 5_000)),
            tokens: Some(w(900, 60_000)),
            observed_ms: 1_000,
        };
        assert!(r.exhausted(4_999));
        assert!(!r.exhausted(5_000));
        assert!(r.live(5_000) && !r.live(60_000));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<CapacityRecord>(&json).unwrap(), r);
    }
}
