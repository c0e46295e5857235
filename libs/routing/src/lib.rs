//! The routing planner, the heart of the product: given the catalog, the org's policy and
//! workflow, the request's needs and preferences, the health snapshot, the org's BYOK keys and a
//! seed, [`plan`] returns the ordered attempts and, for every candidate it left out, why.
//!
//! It is a pure function — no I/O, no clock, no global randomness — so two router nodes with the
//! same inputs make the same plan, and every decision can be replayed and property-tested.
//!
//! Rules, in the order a candidate is judged (the first that fails is its reason): operator
//! disable → workflow model list → `fail_safe` (no model substitution) → `queue` (the preferred
//! route only: the first model, on the first provider of the workflow's `order`) → org provider allow/deny
//! lists → regions → data collection → zero retention → request `only` → `ignore` →
//! `allow_fallbacks: false` outside `order` → quantization → `max_price` → parameters (tools,
//! tool_choice, response_format and json_schema always; every used one with
//! `require_parameters`) → context and output fit → BYOK mode → capacity (the key has no
//! request, or fewer tokens than the request reserves, left on the endpoint until its reset) →
//! health (ejected). If every candidate is out only for health, the workflow's `panic` rule may admit them
//! anyway; if none is left and some are out of capacity, the answer is a 429 with the earliest
//! reset as Retry-After.
//!
//! Order within a model: providers named in `order` first, in that order; then healthy and
//! unknown endpoints, then degraded ones, each group sorted by `sort` (price, latency,
//! throughput) or, by default, a seeded random order weighted by 1 / price² of this request.
//! The org's own key for an endpoint comes right before shared capacity on it. Models follow the
//! request's `models` order (or the workflow's); the plan holds at most `attempt_cap` attempts.

mod capacity;
mod index;
mod order;
mod plan;
mod policy;
mod reason;

pub use capacity::{CapacityLeft, CapacityTable, Left, Unlimited};
pub use index::{Candidate, RoutingCatalog};
pub use order::{ASSUMED_OUTPUT_TOKENS, SplitMix, estimated_cost, inverse_square};
pub use plan::{Attempt, KeySource, Plan, PlanError, PlanInput, plan};
pub use policy::{ByokMode, DEFAULT_ATTEMPT_CAP, Degradation, PanicMode, Policy};
pub use reason::{Exclusion, ExclusionReason};
