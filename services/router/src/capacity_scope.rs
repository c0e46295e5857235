//! One capacity scope's arithmetic, for [`crate::capacity`]: what a reported window says at a
//! given time (past its reset, whole again when its limit is known), how a new report joins
//! what was known, and what a declared per-minute capacity has left given every router's use.

use switchyard_config::catalog::Capacity;
use switchyard_providers::Window;
use switchyard_routing::{CapacityLeft, Left};
use switchyard_state::{CapacityRecord, CapacityUse, CapacityWindow, minute_of};

use crate::capacity::DEFAULT_RESET;

#[derive(Debug, Default)]
pub(crate) struct ScopeState {
    pub(crate) reported: Option<CapacityRecord>,
    /// The newest observation heard back as an announcement (its `observed_ms`).
    pub(crate) announced_ms: u64,
    /// `reported` is this router's own and not yet shared.
    pub(crate) dirty: bool,
    pub(crate) declared: Option<Capacity>,
    /// The minute `counted` and `pending` belong to.
    pub(crate) minute: u64,
    /// Every router's use in `minute`, as last read.
    pub(crate) counted: CapacityUse,
    /// Sent here in `minute` and being added to the shared counters now.
    pub(crate) counting: CapacityUse,
    /// Sent here in `minute` and not yet added.
    pub(crate) pending: CapacityUse,
}

/// Whether a limit is near: a quarter or less left, or 8 or fewer.
pub(crate) fn near(l: &Left) -> bool {
    l.remaining <= (l.limit.unwrap_or(0) / 4).max(8)
}

pub(crate) fn plus(a: CapacityUse, b: CapacityUse) -> CapacityUse {
    CapacityUse {
        requests: a.requests + b.requests,
        tokens: a.tokens + b.tokens,
    }
}

pub(crate) fn minus(a: CapacityUse, b: CapacityUse) -> CapacityUse {
    CapacityUse {
        requests: a.requests.saturating_sub(b.requests),
        tokens: a.tokens.saturating_sub(b.tokens),
    }
}

pub(crate) fn window(w: &Window, now: u64) -> CapacityWindow {
    let window_ms = w.reset_in.unwrap_or(DEFAULT_RESET).as_millis() as u64;
    CapacityWindow {
        limit: w.limit,
        remaining: w.remaining,
        reset_ms: now + window_ms,
        window_ms,
    }
}

/// A window as it stands at `now`: past its reset, one with a known limit starts again whole
/// (for as long as the last one ran, until an answer tells), one without says nothing.
pub(crate) fn current(w: CapacityWindow, now: u64) -> Option<CapacityWindow> {
    if w.live(now) {
        return Some(w);
    }
    let limit = w.limit?;
    Some(CapacityWindow {
        remaining: limit,
        reset_ms: now + w.window_ms.max(DEFAULT_RESET.as_millis() as u64),
        ..w
    })
}

pub(crate) fn left_of(w: Option<CapacityWindow>, now: u64) -> Option<Left> {
    let w = current(w?, now)?;
    Some(Left {
        remaining: w.remaining,
        limit: w.limit,
        reset_in_ms: w.reset_ms - now,
    })
}

/// Where two windows are taken to be the same one: resets this close (a reply that overtook
/// another, or routers' clocks).
const SAME_WINDOW_MS: u64 = 1_000;

/// What is known after `new` arrives where `old` was: within the same window, the least left
/// (what was sent here after the provider counted is not in its figure yet) until the
/// provider's reset; a later window, as reported; a window already over, nothing.
pub(crate) fn absorb(old: Option<CapacityRecord>, new: CapacityRecord, now: u64) -> CapacityRecord {
    let Some(old) = old else {
        return new;
    };
    if new.observed_ms < old.observed_ms {
        return old;
    }
    let same = |o: Option<CapacityWindow>, n: Option<CapacityWindow>| match (o, n) {
        // A reply about a window already over (it took long to arrive) says nothing new.
        (Some(o), Some(n)) if !n.live(now) => Some(o),
        (Some(o), Some(n)) if o.live(now) && n.reset_ms <= o.reset_ms + SAME_WINDOW_MS => {
            Some(CapacityWindow {
                remaining: n.remaining.min(o.remaining),
                window_ms: n.window_ms.max(o.window_ms),
                ..n
            })
        }
        (o, None) => o,
        // The first answer of a window tells its whole length; later ones less of it.
        (o, Some(n)) => Some(CapacityWindow {
            window_ms: n.window_ms.max(o.map_or(0, |o| o.window_ms)),
            ..n
        }),
    };
    CapacityRecord {
        requests: same(old.requests, new.requests),
        tokens: same(old.tokens, new.tokens),
        observed_ms: new.observed_ms,
    }
}

/// The tighter of two limits.
pub(crate) fn tighter(a: Option<Left>, b: Option<Left>) -> Option<Left> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.remaining < a.remaining { b } else { a }),
        (a, b) => a.or(b),
    }
}

impl ScopeState {
    pub(crate) fn roll(&mut self, minute: u64) {
        if self.minute != minute {
            self.minute = minute;
            self.counted = CapacityUse::default();
            self.counting = CapacityUse::default();
            self.pending = CapacityUse::default();
        }
    }

    /// What is to be added to the shared counters now (it stays counted here meanwhile).
    pub(crate) fn take_pending(&mut self) -> CapacityUse {
        let sent = std::mem::take(&mut self.pending);
        self.counting = plus(self.counting, sent);
        sent
    }

    /// `sent` was added; `total` is every router's use since (totals only grow in a minute,
    /// so an answer overtaken by a later one changes nothing).
    pub(crate) fn counted(&mut self, sent: CapacityUse, total: CapacityUse) {
        self.counting = minus(self.counting, sent);
        self.counted = CapacityUse {
            requests: self.counted.requests.max(total.requests),
            tokens: self.counted.tokens.max(total.tokens),
        };
    }

    /// `sent` could not be added: it is added at the next flush.
    pub(crate) fn not_counted(&mut self, sent: CapacityUse) {
        self.counting = minus(self.counting, sent);
        self.pending = plus(self.pending, sent);
    }

    pub(crate) fn left(&self, now: u64) -> CapacityLeft {
        let reported = self.reported.unwrap_or_default();
        let mut left = CapacityLeft {
            requests: left_of(reported.requests, now),
            tokens: left_of(reported.tokens, now),
        };
        if let Some(d) = self.declared {
            let minute = minute_of(now);
            let used = if self.minute == minute {
                plus(plus(self.counted, self.counting), self.pending)
            } else {
                CapacityUse::default()
            };
            let reset_in_ms = (minute + 1) * 60_000 - now;
            let declared = |limit: Option<u64>, used: u64| {
                limit.map(|l| Left {
                    remaining: l.saturating_sub(used),
                    limit: Some(l),
                    reset_in_ms,
                })
            };
            left.requests = tighter(left.requests, declared(d.rpm, used.requests));
            left.tokens = tighter(left.tokens, declared(d.tpm, used.tokens));
        }
        left
    }
}
