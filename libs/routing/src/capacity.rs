//! What a key has left on an endpoint: the planner's view of provider capacity. The router keeps
//! the figures (the providers' rate-limit headers, declared limits counted across routers); the
//! planner only reads them, so it stays a pure function of its inputs.

use serde::Serialize;
use switchyard_core::EndpointId;

use crate::plan::KeySource;

/// One limit's state when planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Left {
    /// What is left.
    pub remaining: u64,
    /// The limit, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// When it is whole again, ms from now.
    pub reset_in_ms: u64,
}

/// What a key has left on an endpoint: requests and tokens, each when known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CapacityLeft {
    /// Requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<Left>,
    /// Tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Left>,
}

impl CapacityLeft {
    /// Why a request reserving `tokens` cannot go now, if it cannot: the limit that is short,
    /// what is left of it and when it resets.
    pub fn short_for(&self, tokens: u64) -> Option<(&'static str, Left)> {
        if let Some(r) = self.requests
            && r.remaining == 0
        {
            return Some(("requests", r));
        }
        if let Some(t) = self.tokens
            && t.remaining < tokens
        {
            return Some(("tokens", t));
        }
        None
    }
}

/// Where the planner reads capacity from.
pub trait CapacityTable: std::fmt::Debug + Sync {
    /// What `key` has left on `endpoint`; `None` when nothing is known (never limited).
    fn left(&self, endpoint: &EndpointId, key: KeySource) -> Option<CapacityLeft>;
}

/// A table that knows nothing: nothing is ever out of capacity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unlimited;

impl CapacityTable for Unlimited {
    fn left(&self, _: &EndpointId, _: KeySource) -> Option<CapacityLeft> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_for_names_the_limit_that_is_short() {
        let left = |remaining| Left {
            remaining,
            limit: Some(10),
            reset_in_ms: 500,
        };
        let c = CapacityLeft {
            requests: Some(left(1)),
            tokens: Some(left(100)),
        };
        assert_eq!(c.short_for(100), None);
        assert_eq!(c.short_for(101), Some(("tokens", left(100))));
        let c = CapacityLeft {
            requests: Some(left(0)),
            tokens: None,
        };
        assert_eq!(c.short_for(0), Some(("requests", left(0))));
        assert_eq!(CapacityLeft::default().short_for(u64::MAX), None);
    }
}
