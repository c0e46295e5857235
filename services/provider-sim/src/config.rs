//! Simulator configuration: the providers to play, one listener each, and their fault profiles.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use switchyard_config::catalog::WireFormat;
use switchyard_config::{Validate, Validator};

/// Environment prefix of overrides: `SWITCHYARD_SIM__PROVIDERS__0__FAULTS__HANG_RATE=1`.
pub const ENV_PREFIX: &str = "SWITCHYARD_SIM";

/// Statuses the simulator can answer with as an injected error.
pub const ERROR_STATUSES: [u16; 8] = [400, 401, 429, 500, 502, 503, 504, 529];

/// The whole simulator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Where the control API listens.
    #[serde(default = "loopback_any_port")]
    pub control: SocketAddr,
    /// Seed of the fault draws (each provider derives its own); random when absent.
    #[serde(default)]
    pub seed: Option<u64>,
    /// The simulated providers.
    pub providers: Vec<SimProvider>,
}

/// One simulated provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimProvider {
    /// Name used by the control API.
    pub id: String,
    /// Wire format it speaks.
    pub format: WireFormat,
    /// Where it listens; port 0 picks a free one.
    #[serde(default = "loopback_any_port")]
    pub listen: SocketAddr,
    /// When set, requests must carry this key, as the format presents it: `Authorization:
    /// Bearer`, `x-api-key` (Anthropic), `x-goog-api-key` (Gemini), `api-key` (Azure), the SigV4
    /// access key id or a Bedrock API key (Bedrock); for the Vertex formats, the service
    /// account's email, which the token endpoint checks before issuing the bearer tokens chat
    /// requests must then carry.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Bedrock: the region SigV4 signatures must be scoped to; any when absent.
    #[serde(default)]
    pub aws_region: Option<String>,
    /// Upstream model names it accepts; empty accepts any.
    #[serde(default)]
    pub models: Vec<String>,
    /// Completion tokens it generates when `max_tokens` does not cap them.
    #[serde(default = "default_output_tokens")]
    pub output_tokens: u32,
    /// The name its replies greet with ("Hello from …"), when not its id: providers given the
    /// same voice serve the same weights and answer the same prompt with the same text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// How it counts prompt tokens in `usage`: `estimate` (default) or `o200k` (a real
    /// tokenizer with OpenAI's chat framing).
    #[serde(default)]
    pub prompt_tokenizer: crate::tokens::PromptTokenizer,
    /// Length of the vectors `/v1/embeddings` returns when the request sets no `dimensions`.
    #[serde(default = "default_embedding_dimensions")]
    pub embedding_dimensions: usize,
    /// Faults at start; the control API can replace them.
    #[serde(default)]
    pub faults: Faults,
}

fn default_embedding_dimensions() -> usize {
    64
}

/// How a simulated provider misbehaves. Per request, one uniform draw picks at most one of the
/// rate-based faults, in this order: reset, hang, each error status, malformed; so the rates add
/// up and must not exceed 1.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Delays.
    pub latency: Latency,
    /// Error answers by status, each with its rate.
    pub errors: Vec<ErrorRate>,
    /// Retry-After seconds sent with 429, 503 and 529 answers.
    pub retry_after_s: Option<u32>,
    /// Share of requests never answered.
    pub hang_rate: f64,
    /// Share of requests whose connection is reset (TCP RST) instead of answered.
    pub reset_rate: f64,
    /// Share of requests answered 200 with a body that is not valid JSON (or a broken SSE event).
    pub malformed_rate: f64,
    /// Streams end abruptly (no terminal event, connection aborted) after this many content chunks.
    pub cut_stream_after: Option<u32>,
    /// Streams never end: once the content is out, the last content event repeats forever (at
    /// the per-token pace, at least every 10 ms) and no terminal event comes.
    pub endless_stream: bool,
    /// Streams go silent after this many content events, with the connection left open (until
    /// the client gives up).
    pub stall_stream_after: Option<u32>,
    /// Streams end after their finish (and usage) without the event that only marks the end
    /// (OpenAI's `data: [DONE]`, Anthropic's `message_stop`, Bedrock's `metadata`); the body
    /// then closes cleanly, as several OpenAI-compatible providers do.
    pub omit_terminal_event: bool,
    /// One event whose data is not valid JSON is sent after this many content events; the
    /// stream is otherwise whole.
    pub malformed_event_after: Option<u32>,
    /// The first content event of a stream carries this many bytes of text in one SSE line.
    pub huge_chunk_bytes: Option<u32>,
    /// Requests per second above which the provider answers 429.
    pub rate_limit_rps: Option<u32>,
    /// The key's capacity per window, reported on every answer in the format's rate-limit
    /// headers (OpenAI's `x-ratelimit-*`, Anthropic's `anthropic-ratelimit-*`); a request over
    /// it gets a 429 with Retry-After until the window ends.
    pub capacity: Option<SimCapacity>,
    /// Prompts estimated above this many tokens get a context-length error.
    pub context_limit: Option<u32>,
    /// Prompts containing this word (case-insensitive) are refused.
    pub refuse_on: Option<String>,
    /// A request ending in an assistant prefill is refused (400) instead of continued.
    pub refuse_prefill: bool,
    /// Share of tool calls whose arguments are broken (invalid JSON, or schema-invalid input for
    /// Anthropic's non-streamed `tool_use`, whose `input` is an object on the wire).
    pub invalid_tool_call_rate: f64,
    /// Generates its full `output_tokens` whatever `max_tokens` says (a provider that ignores
    /// the cap, so a reply can cost more than its budget hold).
    pub ignore_max_tokens: bool,
}

/// A simulated key's rate limits: a fixed window that starts with the first request in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimCapacity {
    /// Requests per window.
    pub requests: u32,
    /// Prompt tokens per window, when limited.
    #[serde(default)]
    pub tokens: Option<u64>,
    /// The window, ms.
    pub window_ms: u64,
}

/// Delays of a simulated provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Latency {
    /// Before the first byte of the body.
    pub ttft_ms: u64,
    /// Between generated tokens.
    pub per_token_ms: u64,
    /// Up to this much is added to the time to first token, uniformly.
    pub jitter_ms: u64,
    /// Share of requests in the slow tail: their time to first token is `tail_ttft_ms`.
    pub tail_rate: f64,
    /// The slow tail's time to first token.
    pub tail_ttft_ms: u64,
}

/// An injected error status and the share of requests that get it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRate {
    /// One of [`ERROR_STATUSES`].
    pub status: u16,
    /// 0 to 1.
    pub rate: f64,
}

fn loopback_any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn default_output_tokens() -> u32 {
    16
}

fn check_rate(v: &mut Validator, key: &str, rate: f64) {
    v.check(
        (0.0..=1.0).contains(&rate),
        key,
        format!("{rate} is not a rate between 0 and 1"),
    );
}

impl Validate for Faults {
    fn validate(&self, v: &mut Validator) {
        check_rate(v, "hang_rate", self.hang_rate);
        check_rate(v, "reset_rate", self.reset_rate);
        check_rate(v, "malformed_rate", self.malformed_rate);
        check_rate(v, "invalid_tool_call_rate", self.invalid_tool_call_rate);
        check_rate(v, "tail_rate", self.latency.tail_rate);
        v.each("errors", &self.errors, |v, _, e| {
            v.check(
                ERROR_STATUSES.contains(&e.status),
                "status",
                format!("{} is not one of {ERROR_STATUSES:?}", e.status),
            );
            check_rate(v, "rate", e.rate);
        });
        let total = self.hang_rate
            + self.reset_rate
            + self.malformed_rate
            + self.errors.iter().map(|e| e.rate).sum::<f64>();
        if total > 1.0 + 1e-9 {
            v.error(format!(
                "reset, hang, error and malformed rates add up to {total}, more than 1"
            ));
        }
        if let Some(n) = self.huge_chunk_bytes {
            v.check(
                n <= 64 << 20,
                "huge_chunk_bytes",
                format!("{n} is more than 64 MiB"),
            );
        }
        if let Some(rps) = self.rate_limit_rps {
            v.check(rps > 0, "rate_limit_rps", "must be positive");
        }
        if let Some(c) = &self.capacity {
            v.field("capacity", |v| {
                v.check(c.window_ms > 0, "window_ms", "must be positive");
                v.check(c.tokens != Some(0), "tokens", "must be positive");
            });
        }
        if let Some(word) = &self.refuse_on {
            v.check(!word.trim().is_empty(), "refuse_on", "must not be empty");
        }
    }
}

impl Validate for SimConfig {
    fn validate(&self, v: &mut Validator) {
        let mut ids = std::collections::HashSet::new();
        v.check(
            !self.providers.is_empty(),
            "providers",
            "at least one provider is needed",
        );
        v.each("providers", &self.providers, |v, _, p| {
            if p.id.is_empty() {
                v.error_at("id", "must not be empty");
            } else if !ids.insert(p.id.as_str()) {
                v.error_at("id", format!("duplicate provider id `{}`", p.id));
            }
            v.check(p.output_tokens > 0, "output_tokens", "must be positive");
            v.nested("faults", &p.faults);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_and_demo_configs_are_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config");
        for file in ["provider-sim.example.yaml", "provider-sim.demo.yaml"] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let config: SimConfig =
                switchyard_config::parse_str(file, &text).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(!config.providers.is_empty(), "{file}");
        }
    }

    #[test]
    fn validation_reports_every_bad_fault() {
        let err = switchyard_config::parse_str::<SimConfig>(
            "sim.yaml",
            r#"
providers:
  - id: a
    format: openai
    faults:
      hang_rate: 1.5
      errors: [{ status: 418, rate: 0.5 }]
  - id: a
    format: anthropic
    output_tokens: 0
"#,
        )
        .unwrap_err();
        let paths: Vec<_> = err.field_errors().iter().map(|e| e.path.clone()).collect();
        assert_eq!(
            paths,
            vec![
                "providers[0].faults.hang_rate",
                "providers[0].faults.errors[0].status",
                "providers[0].faults",
                "providers[1].id",
                "providers[1].output_tokens",
            ]
        );
    }
}
