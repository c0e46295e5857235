//! Per-provider run-time state: current faults, what was received, the fault RNG and the
//! rate-limit window. Locks are held only for a few instructions and never across an await.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::config::{Faults, SimCapacity, SimProvider};

/// How many recent requests each provider remembers.
pub const RECENT: usize = 64;

/// Everything a provider counts, as served by the control API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Requests received (any path, any outcome).
    pub requests: u64,
    /// Requests that asked for a stream.
    pub streamed: u64,
    /// Requests by upstream model name.
    pub by_model: BTreeMap<String, u64>,
    /// Requests by outcome (`ok`, `status_429`, `hang`, `reset`, `malformed`, `cut`, …).
    pub by_outcome: BTreeMap<String, u64>,
    /// Requests being handled now.
    pub in_flight: u64,
    /// OAuth2 token exchanges served (Vertex formats).
    pub token_exchanges: u64,
    /// The latest requests, oldest first.
    pub recent: VecDeque<RecentRequest>,
}

/// What the simulator remembers of one request.
#[derive(Debug, Clone, Serialize)]
pub struct RecentRequest {
    /// Unix milliseconds when it arrived.
    pub at_unix_ms: u64,
    /// `chat` or `embeddings`.
    pub api: String,
    /// Upstream model asked for.
    pub model: String,
    /// Whether it asked for a stream.
    pub stream: bool,
    /// Last four characters of the key presented, if any (simulated keys only).
    pub key_hint: Option<String>,
    /// Prompt tokens as the simulator estimated them.
    pub prompt_tokens: u32,
    /// Number of tools offered.
    pub tools: usize,
    /// The outcome.
    pub outcome: String,
}

impl RecentRequest {
    /// A request to `api` that presented `key`, before it is parsed.
    pub fn new(api: &str, key: Option<&str>) -> Self {
        let hint = key.map(|k| {
            let chars: Vec<char> = k.chars().collect();
            chars[chars.len().saturating_sub(4)..].iter().collect()
        });
        RecentRequest {
            at_unix_ms: 0,
            api: api.to_string(),
            model: String::new(),
            stream: false,
            key_hint: hint,
            prompt_tokens: 0,
            tools: 0,
            outcome: "ok".into(),
        }
    }
}

/// One simulated provider's live state.
pub struct ProviderState {
    /// Its configuration.
    pub config: SimProvider,
    faults: RwLock<Arc<Faults>>,
    stats: Mutex<Stats>,
    rng: Mutex<SmallRng>,
    window: Mutex<(Instant, u32)>,
    capacity: Mutex<CapacityWindow>,
    ids: AtomicU64,
    /// Access tokens issued by the token endpoint (Vertex formats).
    pub tokens: crate::cloud::IssuedTokens,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short locks cannot leave the data half-written in a way
    // that matters to a simulator, so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ProviderState {
    /// State for `config`, drawing faults from `seed`.
    pub fn new(config: SimProvider, seed: u64) -> Self {
        ProviderState {
            faults: RwLock::new(Arc::new(config.faults.clone())),
            config,
            stats: Mutex::new(Stats::default()),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            window: Mutex::new((Instant::now(), 0)),
            capacity: Mutex::new(CapacityWindow::default()),
            ids: AtomicU64::new(1),
            tokens: crate::cloud::IssuedTokens,
        }
    }

    /// The faults in force.
    pub fn faults(&self) -> Arc<Faults> {
        self.faults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(faults);
    }

    /// A copy of the counters.
    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }

    /// Zeroes the counters (in-flight requests stay counted).
    pub fn reset_stats(&self) {
        let mut s = lock(&self.stats);
        let in_flight = s.in_flight;
        *s = Stats {
            in_flight,
            ..Stats::default()
        };
    }

    /// A fresh id suffix for responses and tool calls.
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// A uniform draw in [0, 1).
    pub fn draw(&self) -> f64 {
        lock(&self.rng).random::<f64>()
    }

    /// A request's time to first token under `latency`: the base plus jitter, or the slow
    /// tail's.
    pub fn ttft(&self, latency: &crate::config::Latency) -> std::time::Duration {
        let ms = if latency.tail_rate > 0.0 && self.draw() < latency.tail_rate {
            latency.tail_ttft_ms
        } else {
            latency.ttft_ms + self.draw_ms(latency.jitter_ms)
        };
        std::time::Duration::from_millis(ms)
    }

    /// A uniform draw in [0, max].
    pub fn draw_ms(&self, max: u64) -> u64 {
        if max == 0 {
            0
        } else {
            lock(&self.rng).random_range(0..=max)
        }
    }

    /// Counts a request against the per-second limit; `Some(wait)` when over it.
    pub fn over_rate_limit(&self, rps: u32) -> Option<Duration> {
        let mut w = lock(&self.window);
        let now = Instant::now();
        if now.duration_since(w.0) >= Duration::from_secs(1) {
            *w = (now, 0);
        }
        w.1 += 1;
        (w.1 > rps).then(|| Duration::from_secs(1).saturating_sub(now.duration_since(w.0)))
    }

    /// Counts a request reserving `tokens` against the key's capacity: `Err(wait)` when the
    /// window has no room for it (nothing counted), until the window ends.
    pub fn take_capacity(&self, cap: &SimCapacity, tokens: u64) -> Result<(), Duration> {
        let mut w = lock(&self.capacity);
        let now = Instant::now();
        w.roll(cap, now);
        let start = *w.start.get_or_insert(now);
        let full =
            w.requests >= cap.requests || cap.tokens.is_some_and(|limit| w.tokens + tokens > limit);
        if full {
            return Err(Duration::from_millis(cap.window_ms).saturating_sub(now - start));
        }
        w.requests += 1;
        w.tokens += tokens;
        Ok(())
    }

    /// What the key has left now, for the rate-limit headers.
    pub fn capacity_reading(&self, cap: &SimCapacity) -> CapacityReading {
        let mut w = lock(&self.capacity);
        let now = Instant::now();
        w.roll(cap, now);
        let window = Duration::from_millis(cap.window_ms);
        CapacityReading {
            requests_limit: u64::from(cap.requests),
            requests_remaining: u64::from(cap.requests.saturating_sub(w.requests)),
            tokens: cap
                .tokens
                .map(|limit| (limit, limit.saturating_sub(w.tokens))),
            reset_in: w.start.map_or(window, |s| window.saturating_sub(now - s)),
        }
    }

    /// Marks a request as started; the guard marks it finished when dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        let mut s = lock(&self.stats);
        s.requests += 1;
        s.in_flight += 1;
        InFlight {
            state: self.clone(),
        }
    }

    /// Records what a request was and how it ended.
    pub fn record(&self, mut req: RecentRequest) {
        req.at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut s = lock(&self.stats);
        if req.stream {
            s.streamed += 1;
        }
        if !req.model.is_empty() {
            *s.by_model.entry(req.model.clone()).or_default() += 1;
        }
        *s.by_outcome.entry(req.outcome.clone()).or_default() += 1;
        if s.recent.len() == RECENT {
            s.recent.pop_front();
        }
        s.recent.push_back(req);
    }

    /// Counts a token exchange.
    pub fn count_token_exchange(&self) {
        lock(&self.stats).token_exchanges += 1;
    }

    /// Re-labels the most recent request's outcome (a stream learns its fate after the headers).
    pub fn relabel_outcome(&self, from: &str, to: &str) {
        let mut s = lock(&self.stats);
        if let Some(n) = s.by_outcome.get_mut(from) {
            *n = n.saturating_sub(1);
        }
        *s.by_outcome.entry(to.to_string()).or_default() += 1;
    }
}

/// The capacity window in progress.
#[derive(Debug, Default)]
struct CapacityWindow {
    /// When it began (with its first request); `None` before any.
    start: Option<Instant>,
    requests: u32,
    tokens: u64,
}

impl CapacityWindow {
    fn roll(&mut self, cap: &SimCapacity, now: Instant) {
        if self
            .start
            .is_some_and(|s| now - s >= Duration::from_millis(cap.window_ms))
        {
            *self = CapacityWindow::default();
        }
    }
}

/// What a simulated key has left, as its answers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityReading {
    /// Requests per window.
    pub requests_limit: u64,
    /// Requests left in this one.
    pub requests_remaining: u64,
    /// Tokens per window and left, when limited.
    pub tokens: Option<(u64, u64)>,
    /// Until the window ends (a whole window before the first request).
    pub reset_in: Duration,
}

/// Decrements the in-flight count when a request ends, however it ends.
pub struct InFlight {
    state: Arc<ProviderState>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = lock(&self.state.stats);
        s.in_flight = s.in_flight.saturating_sub(1);
    }
}
