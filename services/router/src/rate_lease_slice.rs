//! One router's slice of a scope's per-minute request and token limits, and how much of the
//! minute to ask for next (see [`crate::rate_lease`]).

use std::time::{Duration, Instant};

use switchyard_state::{LimitCheck, RateAsk, Scope};

/// A slice is at least this many requests.
pub(crate) const MIN_SLICE_REQUESTS: u64 = 2;
/// A slice is at most this fraction (1/n) of what the minute has left.
pub(crate) const HEADROOM_SHARE: u64 = 8;
/// How long requests are held one by one after a scope was found near its limit.
pub(crate) const NEAR_LIMIT_FOR: Duration = Duration::from_secs(1);
/// A slice unused this long is given back.
pub(crate) const IDLE: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(crate) struct Slice {
    /// The minute it belongs to.
    pub(crate) minute: u64,
    /// Requests and tokens reserved and not yet taken.
    pub(crate) requests: u64,
    pub(crate) tokens: u64,
    /// What the minute had left after the last grant, when the scope has that limit.
    pub(crate) requests_left: Option<u64>,
    pub(crate) tokens_left: Option<u64>,
    /// Per-request holds until then.
    pub(crate) near_until: Option<Instant>,
    /// Requests taken since the last grant, and when that was; requests a second (EWMA).
    pub(crate) taken: u64,
    pub(crate) since: Option<Instant>,
    pub(crate) rate: f64,
    /// The largest token reservation lately.
    pub(crate) token_cost: u64,
    /// When a request last took from it.
    pub(crate) used: Option<Instant>,
    /// The limits (`rpm`, `tpm`) it was granted under: when the policy changes them, what is
    /// left of it is given back and the next grant is checked against the new ones.
    pub(crate) limits: (Option<u64>, Option<u64>),
}

impl Slice {
    /// The slice as of `minute`: a new minute starts empty.
    pub(crate) fn at(&mut self, minute: u64) -> &mut Self {
        if self.minute != minute {
            *self = Slice {
                minute,
                rate: self.rate,
                token_cost: self.token_cost,
                limits: self.limits,
                ..Slice::default()
            };
        }
        self
    }

    pub(crate) fn has(&self, tokens: u64) -> bool {
        self.requests >= 1 && self.tokens >= tokens
    }

    /// Whether it was granted under `check`'s limits.
    pub(crate) fn under(&self, check: &LimitCheck) -> bool {
        self.limits == (check.rpm, check.tpm)
    }

    /// Takes on `check`'s limits; what was left under other ones, to give back.
    pub(crate) fn limit_to(&mut self, check: &LimitCheck) -> Option<RateAsk> {
        if self.under(check) {
            return None;
        }
        self.limits = (check.rpm, check.tpm);
        self.near_until = None;
        self.requests_left = None;
        self.tokens_left = None;
        self.drain(&check.scope)
    }

    /// Empties the slice; what it had, to give back.
    pub(crate) fn drain(&mut self, scope: &Scope) -> Option<RateAsk> {
        let (requests, tokens) = (self.requests, self.tokens);
        self.requests = 0;
        self.tokens = 0;
        (requests > 0 || tokens > 0).then(|| RateAsk {
            scope: scope.clone(),
            rpm: None,
            tpm: None,
            requests,
            tokens,
        })
    }

    /// What to ask for in a scope with `check`'s limits: about a second of requests, at least
    /// two, at most an eighth of what is left; `None` when that is under two (near the limit).
    pub(crate) fn ask(&mut self, check: &LimitCheck, tokens: u64) -> Option<RateAsk> {
        self.token_cost = self.token_cost.max(tokens);
        if let Some(since) = self.since {
            let secs = since.elapsed().as_secs_f64().max(0.05);
            let r = self.taken as f64 / secs;
            self.rate = if self.rate == 0.0 {
                r
            } else {
                0.7 * self.rate + 0.3 * r
            };
        }
        let mut requests = (self.rate.ceil() as u64).max(MIN_SLICE_REQUESTS);
        if let (Some(_), Some(left)) = (check.rpm, self.requests_left) {
            requests = requests.min(left / HEADROOM_SHARE);
        }
        if let (Some(_), Some(left)) = (check.tpm, self.tokens_left) {
            requests = requests.min(left / HEADROOM_SHARE / self.token_cost.max(1));
        }
        (requests >= MIN_SLICE_REQUESTS).then(|| RateAsk {
            scope: check.scope.clone(),
            rpm: check.rpm,
            tpm: check.tpm,
            requests,
            tokens: requests * self.token_cost,
        })
    }
}
