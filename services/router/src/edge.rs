//! The edge both transports share: what a request carries besides its body (the bearer key, the
//! route seed, the caller's deadline, an idempotency key), authentication against the current
//! policy, the hash that ties an idempotency key to one request, the name under which a replay
//! is marked, the in-flight gauge and the request span. HTTP reads these from headers and gRPC
//! from metadata, with the same names, through [`Incoming::read`]; nothing here knows which.

use std::sync::Arc;
use std::time::Duration;

use switchyard_core::{Error, ErrorClass};
use switchyard_policy_model::snapshot::KeyRecord;

use crate::policy_view::{PolicyView, PolicyWatcher};

/// The header (HTTP) and metadata key (gRPC) that marks a reply replayed from an earlier
/// request with the same idempotency key.
pub const REPLAYED: &str = "idempotent-replayed";

/// What the caller may set besides the request body.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitOptions {
    /// Plan with this seed (the same seed, health and policy give the same plan on every router).
    pub seed: Option<u64>,
    /// The caller's own deadline (a gRPC deadline), when shorter than the workflow's.
    pub timeout: Option<Duration>,
    /// The deadline an earlier admission of the same request gave it (it waited, and is
    /// admitted again): never extended.
    pub deadline: Option<tokio::time::Instant>,
    /// The request carries an idempotency key (so a request with tools may be hedged).
    pub idempotent: bool,
}

/// The API a request came in on; it namespaces idempotency keys (the stored reply is in that
/// API's encoding) and labels the request span, the request metrics and the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Api {
    /// OpenAI chat completions over HTTP (and the HTTP routes beside it).
    #[default]
    Chat,
    /// Anthropic's Messages API over HTTP.
    Messages,
    /// OpenAI's Responses API over HTTP.
    Responses,
    /// OpenAI-compatible embeddings over HTTP.
    Embeddings,
    /// gRPC `switchyard.v1.Router`.
    Grpc,
}

impl Api {
    /// The label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Api::Chat => "chat_completions",
            Api::Messages => "messages",
            Api::Responses => "responses",
            Api::Embeddings => "embeddings",
            Api::Grpc => "grpc",
        }
    }
}

/// What a request carries besides its body, read once at the edge.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    /// The API it came in on.
    pub api: Api,
    /// The key after `Bearer ` (the scheme in any case, RFC 9110), trimmed; for the Messages
    /// API, `x-api-key` when there is no `Authorization`.
    pub bearer: Option<String>,
    /// `x-switchyard-route-seed` (HTTP) / `switchyard-route-seed` (gRPC), as sent.
    seed: Option<String>,
    /// The caller's own deadline (gRPC `grpc-timeout`).
    pub timeout: Option<Duration>,
    /// `idempotency-key`, as sent.
    pub idempotency_key: Option<String>,
}

impl Incoming {
    /// Reads the request's headers or metadata through `get` (a lookup by lowercase name that
    /// answers only values that are text).
    pub fn read<'a>(api: Api, get: impl Fn(&str) -> Option<&'a str>) -> Incoming {
        let seed_name = match api {
            Api::Chat | Api::Messages | Api::Responses | Api::Embeddings => {
                "x-switchyard-route-seed"
            }
            Api::Grpc => "switchyard-route-seed",
        };
        let key = match get("authorization") {
            Some(value) => bearer(value),
            None if api == Api::Messages => get("x-api-key").map(str::trim),
            None => None,
        };
        Incoming {
            api,
            bearer: key.filter(|k| !k.is_empty()).map(str::to_string),
            seed: get(seed_name).map(str::to_string),
            timeout: match api {
                Api::Grpc => get("grpc-timeout").and_then(grpc_timeout),
                Api::Chat | Api::Messages | Api::Responses | Api::Embeddings => None,
            },
            idempotency_key: get("idempotency-key").map(str::to_string),
        }
    }

    /// The seed and deadline for admission; a seed that is not a decimal `u64` is refused.
    pub fn options(&self) -> Result<AdmitOptions, Error> {
        let seed = match &self.seed {
            None => None,
            Some(text) => Some(parse_seed(text)?),
        };
        Ok(AdmitOptions {
            seed,
            timeout: self.timeout,
            deadline: None,
            idempotent: self.idempotency_key.is_some(),
        })
    }
}

/// The key of an `Authorization` value: the `Bearer` scheme matched without regard to case.
pub fn bearer(value: &str) -> Option<&str> {
    let value = value.trim_start();
    let (scheme, key) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|k| !k.is_empty())
}

/// Reads a route seed as sent in a header or metadata value: a decimal `u64`.
pub fn parse_seed(text: &str) -> Result<u64, Error> {
    text.trim().parse().map_err(|_| {
        Error::invalid(format!(
            "route seed `{text}` is not a decimal number from 0 to 18446744073709551615"
        ))
    })
}

/// `grpc-timeout` ("100m", "5S", …) as a duration.
fn grpc_timeout(v: &str) -> Option<Duration> {
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The SHA-256 of what identifies a request, in hex: the same idempotency key with other
/// content is refused.
pub fn request_hash(content: &[u8]) -> String {
    use sha2::Digest;
    switchyard_policy_model::keys::hex(&sha2::Sha256::digest(content))
}

/// An authenticated caller: the policy version it was authenticated under and its key.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The policy.
    pub policy: Arc<PolicyView>,
    /// The key's record (never the key).
    pub key: Arc<KeyRecord>,
}

/// Authenticates a bearer key against the current policy.
pub fn authenticate(policy: &PolicyWatcher, bearer: Option<&str>) -> Result<Caller, Error> {
    let policy = policy.current().ok_or_else(|| {
        Error::new(
            ErrorClass::Unavailable,
            "no policy loaded yet; the policy service has not answered",
        )
    })?;
    let key = bearer.ok_or_else(|| {
        Error::new(
            ErrorClass::Unauthenticated,
            "missing API key: send `Authorization: Bearer <key>`",
        )
    })?;
    let record = policy
        .authenticate(key)
        .ok_or_else(|| Error::new(ErrorClass::Unauthenticated, "invalid or revoked API key"))?;
    Ok(Caller {
        policy,
        key: record,
    })
}

/// One request in the `switchyard_requests_in_flight` gauge (what a router's autoscaler can
/// follow), from the edge until its last byte and report.
#[derive(Debug)]
pub struct InFlight(());

impl InFlight {
    /// Counts a request in.
    pub fn new() -> Self {
        metrics::gauge!("switchyard_requests_in_flight").increment(1.0);
        InFlight(())
    }
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight::new()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("switchyard_requests_in_flight").decrement(1.0);
    }
}

/// The span of one request (its attempts are its children); the request id and workflow are
/// recorded on it as they become known.
pub fn request_span(api: Api) -> tracing::Span {
    tracing::info_span!(
        "request",
        api = api.as_str(),
        request_id = tracing::field::Empty,
        workflow = tracing::field::Empty,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        for v in [
            "Bearer sk-1",
            "bearer sk-1",
            "BEARER  sk-1 ",
            " Bearer sk-1",
        ] {
            assert_eq!(bearer(v), Some("sk-1"), "{v:?}");
        }
        for v in ["Basic sk-1", "Bearer", "Bearer   ", "sk-1", "Bearersk-1"] {
            assert_eq!(bearer(v), None, "{v:?}");
        }
    }

    #[test]
    fn both_transports_read_the_same_things() {
        let headers = [
            ("authorization", "bearer sk-x"),
            ("x-switchyard-route-seed", "42"),
            ("switchyard-route-seed", "7"),
            ("grpc-timeout", "250m"),
            ("idempotency-key", "k-1"),
        ];
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        let http = Incoming::read(Api::Chat, get);
        let grpc = Incoming::read(Api::Grpc, get);
        assert_eq!(http.bearer.as_deref(), Some("sk-x"));
        assert_eq!(grpc.bearer.as_deref(), Some("sk-x"));
        assert_eq!(http.options().ok().and_then(|o| o.seed), Some(42));
        assert_eq!(grpc.options().ok().and_then(|o| o.seed), Some(7));
        assert_eq!(http.timeout, None);
        assert_eq!(grpc.timeout, Some(Duration::from_millis(250)));
        assert_eq!(grpc.idempotency_key.as_deref(), Some("k-1"));
        let bad = Incoming::read(Api::Chat, |n| {
            (n == "x-switchyard-route-seed").then_some("x")
        });
        assert!(bad.options().is_err());
        assert_eq!(request_hash(b"a"), request_hash(b"a"));
        assert_ne!(request_hash(b"a"), request_hash(b"b"));
    }

    #[test]
    fn the_messages_api_also_takes_x_api_key() {
        let only_x = |n: &str| (n == "x-api-key").then_some(" sk-a ");
        assert_eq!(
            Incoming::read(Api::Messages, only_x).bearer.as_deref(),
            Some("sk-a")
        );
        assert_eq!(Incoming::read(Api::Chat, only_x).bearer, None);
        // Authorization wins when both are sent.
        let both = |n: &str| match n {
            "authorization" => Some("Bearer sk-b"),
            "x-api-key" => Some("sk-a"),
            _ => None,
        };
        assert_eq!(
            Incoming::read(Api::Messages, both).bearer.as_deref(),
            Some("sk-b")
        );
    }
}
