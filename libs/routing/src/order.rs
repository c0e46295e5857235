//! Ordering the eligible endpoints of one model: an explicit `order` first, then health groups
//! (healthy and unknown, then degraded, then ejected ones admitted by the panic rule), each sorted
//! by `sort` or, by default, shuffled with weights proportional to 1 / price² from the seed.

use switchyard_core::{EndpointState, HealthSnapshot, Sort};

use crate::index::Candidate;

/// A small, fixed PRNG (SplitMix64): the same seed gives the same plan on every node and every
/// build, which a library generator does not promise.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Output tokens assumed when pricing a request that sets no `max_tokens`.
pub const ASSUMED_OUTPUT_TOKENS: u32 = 256;

/// The request's estimated cost at `c`, in nano-USD: the price key of `sort: price` and of the
/// default weighting.
pub fn estimated_cost(c: &Candidate, prompt_tokens: u32, output_tokens: u32) -> i64 {
    let p = c.price.prompt_per_mtok().cost_of(u64::from(prompt_tokens));
    let o = c
        .price
        .completion_per_mtok()
        .cost_of(u64::from(output_tokens));
    p.saturating_add(o).saturating_add(c.price.request).nanos()
}

fn health_rank(state: EndpointState) -> u8 {
    match state {
        EndpointState::Healthy | EndpointState::Unknown => 0,
        EndpointState::Degraded => 1,
        EndpointState::Ejected | EndpointState::Disabled => 2,
    }
}

/// Orders `endpoints` (indices into `cands`) in place. `sort: latency` orders a streamed
/// request by time to first token where the endpoint has one, others by whole-reply latency.
#[allow(clippy::too_many_arguments)]
pub(crate) fn order(
    endpoints: &mut Vec<usize>,
    cands: &[&Candidate],
    order: &[String],
    sort: Option<Sort>,
    health: &HealthSnapshot,
    tokens: (u32, u32),
    stream: bool,
    rng: &mut SplitMix,
) {
    let position = |i: usize| {
        order
            .iter()
            .position(|p| p.as_str() == cands[i].provider.as_str())
    };
    let (mut first, rest): (Vec<usize>, Vec<usize>) =
        endpoints.iter().partition(|i| position(**i).is_some());
    first.sort_by_key(|i| (position(*i), cands[*i].endpoint.clone()));

    let mut groups: [Vec<usize>; 3] = Default::default();
    for i in rest {
        groups[usize::from(health_rank(health.get(cands[i].endpoint.as_str()).state))].push(i);
    }
    let cost = |i: usize| estimated_cost(cands[i], tokens.0, tokens.1);
    for group in &mut groups {
        // A stable starting order, so the outcome depends on the seed alone.
        group.sort_by(|a, b| cands[*a].endpoint.cmp(&cands[*b].endpoint));
        match sort {
            Some(Sort::Price) => group.sort_by_key(|i| cost(*i)),
            Some(Sort::Latency) => {
                let key = |i: usize| {
                    let h = health.get(cands[i].endpoint.as_str());
                    stream
                        .then_some(h.ttft_ms)
                        .flatten()
                        .or(h.latency_ms)
                        .unwrap_or(f64::INFINITY)
                };
                group.sort_by(|a, b| key(*a).total_cmp(&key(*b)));
            }
            Some(Sort::Throughput) => {
                let key = |i: usize| {
                    health
                        .get(cands[i].endpoint.as_str())
                        .tokens_per_s
                        .unwrap_or(f64::NEG_INFINITY)
                };
                group.sort_by(|a, b| key(*b).total_cmp(&key(*a)));
            }
            None => weighted_shuffle(group, |i| inverse_square(cost(i)), rng),
        }
    }
    endpoints.clear();
    endpoints.extend(first);
    for group in groups {
        endpoints.extend(group);
    }
}

/// The default weight: 1 / price², with a 1 nano-USD floor so a free endpoint is very likely
/// first but the weights stay finite.
pub fn inverse_square(cost_nanos: i64) -> f64 {
    let c = cost_nanos.max(1) as f64;
    1.0 / (c * c)
}

/// Weighted random order without replacement.
fn weighted_shuffle(items: &mut Vec<usize>, weight: impl Fn(usize) -> f64, rng: &mut SplitMix) {
    let mut pool: Vec<(usize, f64)> = items.iter().map(|i| (*i, weight(*i))).collect();
    items.clear();
    while !pool.is_empty() {
        let total: f64 = pool.iter().map(|(_, w)| w).sum();
        let mut target = rng.next_f64() * total;
        let mut pick = pool.len() - 1;
        for (k, (_, w)) in pool.iter().enumerate() {
            if target < *w {
                pick = k;
                break;
            }
            target -= w;
        }
        items.push(pool.remove(pick).0);
    }
}
