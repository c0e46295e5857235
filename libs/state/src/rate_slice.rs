//! Rate slices: a router reserves, in one step, a few requests and tokens of a scope's
//! per-minute client limits (`rpm`, `tpm`) for the current UTC minute, and admits requests
//! against them locally, with no round trip per request. A slice is counted in the minute's
//! window like that many requests holding on their own, so every other router's check sees it
//! and the limit is never exceeded; what a router does not use of it is lost when the minute
//! ends (the window starts again from zero), never lent twice. Requests in flight (`concurrent`)
//! are not sliced: they are held one by one, which a dead router's expiring holds give back.

use crate::budget::Scope;

/// A slice to reserve in one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateAsk {
    /// The scope.
    pub scope: Scope,
    /// Its requests-per-minute limit, if any.
    pub rpm: Option<u64>,
    /// Its tokens-per-minute limit, if any.
    pub tpm: Option<u64>,
    /// Requests to reserve.
    pub requests: u64,
    /// Tokens to reserve.
    pub tokens: u64,
}

/// The answer for one scope: all of the ask, or nothing when a limit would be exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateGrant {
    /// Granted.
    pub granted: bool,
    /// Requests left in the minute after the grant (`None` without a requests limit).
    pub requests_left: Option<u64>,
    /// Tokens left in the minute after the grant (`None` without a tokens limit).
    pub tokens_left: Option<u64>,
}

/// Grants `ask` against what the minute's window has counted for its scope (`requests`,
/// `tokens`), counting it when it fits: the rule both stores follow.
pub(crate) fn grant(ask: &RateAsk, counted: &mut (u64, i64)) -> RateGrant {
    let used_tokens = counted.1.max(0) as u64;
    let fits_requests = ask
        .rpm
        .is_none_or(|rpm| counted.0.saturating_add(ask.requests) <= rpm);
    let fits_tokens = ask
        .tpm
        .is_none_or(|tpm| used_tokens.saturating_add(ask.tokens) <= tpm);
    let granted = fits_requests && fits_tokens;
    if granted {
        counted.0 += ask.requests;
        counted.1 = counted.1.saturating_add(ask.tokens as i64);
    }
    RateGrant {
        granted,
        requests_left: ask.rpm.map(|rpm| rpm.saturating_sub(counted.0)),
        tokens_left: ask
            .tpm
            .map(|tpm| tpm.saturating_sub(counted.1.max(0) as u64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(rpm: Option<u64>, tpm: Option<u64>, requests: u64, tokens: u64) -> RateAsk {
        RateAsk {
            scope: Scope::org(),
            rpm,
            tpm,
            requests,
            tokens,
        }
    }

    #[test]
    fn a_slice_is_all_or_nothing_and_never_past_a_limit() {
        let mut counted = (90, 900);
        let g = grant(&ask(Some(100), Some(1000), 10, 100), &mut counted);
        assert!(g.granted);
        assert_eq!((g.requests_left, g.tokens_left), (Some(0), Some(0)));
        assert_eq!(counted, (100, 1000));
        // One more request would fit neither limit: nothing is counted.
        let g = grant(&ask(Some(100), Some(1000), 1, 1), &mut counted);
        assert!(!g.granted);
        assert_eq!(counted, (100, 1000));
        // Tokens given back by settled requests (negative counts) are room again.
        let mut counted = (5, -50);
        let g = grant(&ask(None, Some(100), 2, 100), &mut counted);
        assert!(g.granted);
        assert_eq!((g.requests_left, g.tokens_left), (None, Some(50)));
    }
}
