//! The router's only way to reach upstream providers: one pooled HTTP client, one adapter per
//! wire format (OpenAI chat completions and Azure OpenAI, Anthropic Messages direct and on
//! Vertex AI, Gemini direct and on Vertex AI, Bedrock Converse), an SSE parser robust to any
//! split of bytes and a decoder of AWS's binary event stream, the providers' authentication
//! (keys, Vertex service-account tokens, SigV4), and the classification of every failure into
//! [`switchyard_core::ErrorClass`]. Each format's own classification table is in its module.
//!
//! This crate does not decide anything about routing: it makes one attempt at one endpoint and
//! reports precisely how it went. Retries, fallback and budgets belong to the router.
//!
//! # Failure classification
//!
//! | what happened | class | phase |
//! |---|---|---|
//! | connection refused, DNS, TLS failure | `unavailable` | connect |
//! | connect timeout (per attempt) | `timeout` | connect |
//! | no response head within `first_byte` | `timeout` | first_byte |
//! | stream: no first content within `first_token` | `timeout` | first_byte |
//! | stream: no chunk for `idle` after the first content (a stall) | `timeout` | stream |
//! | attempt exceeds `total` | `timeout` | where it was |
//! | connection reset / closed before the answer | `unavailable` | first_byte |
//! | 401, 403; OpenAI `invalid_api_key` | `upstream_auth` | first_byte |
//! | 402; OpenAI 429 `insufficient_quota`; Anthropic `billing_error`, "credit balance" | `upstream_auth` | first_byte |
//! | 429 (`rate_limit_exceeded`, `rate_limit_error`) | `rate_limited` + Retry-After | first_byte |
//! | OpenAI `context_length_exceeded`, "maximum context length"; Anthropic "prompt is too long"; 413 | `context_length_exceeded` | first_byte |
//! | OpenAI `content_policy_violation` / `content_filter`; `finish_reason: content_filter`; `message.refusal`; Anthropic `stop_reason: refusal` | `content_policy` | body / stream |
//! | other 400, 422 | `invalid_request` | first_byte |
//! | 408, 504 | `timeout` | first_byte |
//! | 404, 409, 500, 502, 503, 529 (`overloaded_error`), other statuses, HTML bodies | `unavailable` | first_byte |
//! | 2xx with a body that does not parse or has no choices | `unavailable` (malformed) | body |
//! | stream: an `error` event / `{"error": …}` data | by its type: `rate_limited`, `upstream_auth`, `timeout`, `context_length_exceeded`, else `unavailable` | stream |
//! | stream: a line over 4 MiB; a broken event with [`MalformedEvents::Fail`] (by default a broken event among good ones is skipped and counted) | `unavailable` (malformed) | stream |
//! | stream: ends or is cut before its answer is finished (no `[DONE]` / `message_stop`, and no `finish_reason` / stop reason on every choice) | `unavailable` | stream |
//!
//! Retry-After comes from `retry-after-ms`, `Retry-After` (seconds or HTTP date), or OpenAI's
//! `x-ratelimit-reset-requests` / `-tokens` durations. The capacity left that every answer
//! reports (OpenAI's and Anthropic's rate-limit headers) goes to the client's
//! [`CapacityObserver`], see [`ratelimit`].

pub mod adapter;
pub mod anthropic;
pub mod auth;
pub mod bedrock;
mod client;
pub mod error;
pub mod eventstream;
pub mod gemini;
pub mod openai;
pub mod own_pools;
pub mod ratelimit;
pub mod sse;
mod target;

pub use adapter::{Flow, Framing, StreamDecoder, WireAdapter, adapter_for};
pub use client::{ChunkStream, ClientBuildError, ClientOptions, MAX_BODY, ProviderClient};
pub use error::{CallError, Phase, UpstreamError};
pub use ratelimit::{CapacityObserver, RateLimits, SHARE_WAIT, Sharing, Window};
pub use target::{
    Call, EmbedCall, MalformedEvents, ProviderOptions, Target, Timeouts, resolve_key,
};
