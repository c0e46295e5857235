//! The router: the request path from a client to upstream providers, as stages in one direction.
//!
//! - [`edge`]: what both transports share before the body: bearer key, route seed, deadline,
//!   idempotency key, authentication, the in-flight gauge and the request span.
//! - [`admission`]: validation, workflow, plan and maximum cost ([`explain`] stops here); a
//!   request with no route for now waits in the [`queue`] (the waiting room) for one.
//! - [`budget_gate`]: the budget hold, the fail-open allowance, the release.
//! - [`budget_lease`]: budget leases, admitting requests with no round trip far from a limit.
//! - [`engine`]: the attempts along the plan (retries, fallbacks, deadline, retry budget).
//! - [`settlement`]: the usage report, passive outcomes, local penalties, metrics and log line.
//! - [`stream`]: a committed stream carried to its settled end.
//! - [`handler`]: the stages composed, transport-neutral, with [`idempotency`] keys around the
//!   non-streamed path; [`http`] (chat completions), [`messages`] (Anthropic's Messages API),
//!   [`responses`] (OpenAI's Responses API), [`embeddings`] and [`grpc`] only decode into it
//!   and encode what it returns.
//!
//! In front of them: the HTTP [`listener`] (connection limit, header deadline) and
//! [`http_guard`] (head size, body deadline, 404 / 405, each in its API's envelope).
//!
//! Around them: the policy and health views the stages read, the usage reporter, the outcome
//! writer, output validation and the process entry ([`run`]). The router links no other
//! service: prices, the policy's types and the clock come from `libs/`.

pub mod admission;
pub mod attempt;
pub mod budget_gate;
pub mod budget_lease;
pub mod capacity;
mod capacity_scope;
pub mod catalog_view;
pub mod continuation;
pub mod convert;
pub mod edge;
pub mod embeddings;
pub mod engine;
pub mod explain;
pub mod generations;
pub mod grpc;
pub mod handler;
pub mod health_view;
pub mod hedge;
pub mod http;
pub mod http_guard;
pub mod idempotency;
mod lease_grant;
mod lease_upkeep;
pub mod listener;
pub mod messages;
pub mod model_endpoints;
pub mod models;
pub mod observe;
pub mod outcomes;
mod parts;
pub mod policy_view;
pub mod queue;
pub mod rate_lease;
mod rate_lease_slice;
pub mod records;
pub mod refusal;
pub mod reply;
pub mod reporter;
pub mod responses;
pub mod retry_budget;
pub mod run;
pub mod settlement;
pub mod shards;
pub mod stores;
pub mod stream;
mod trace;
pub mod validate;
