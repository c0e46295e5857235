//! The capacity a provider reports left on the key with every answer, read from its documented
//! rate-limit headers, and the hook through which the client hands it to whoever keeps track.
//!
//! | format | requests | tokens | reset |
//! |---|---|---|---|
//! | OpenAI, Azure OpenAI, OpenAI-compatible | `x-ratelimit-{limit,remaining}-requests` | `x-ratelimit-{limit,remaining}-tokens` | `x-ratelimit-reset-requests` / `-tokens`: a duration (`1s`, `6m0s`, `20ms`) |
//! | Anthropic (direct, Vertex) | `anthropic-ratelimit-requests-{limit,remaining}` | `anthropic-ratelimit-tokens-*` (the most restrictive of input and output), else `-input-tokens-*` | `anthropic-ratelimit-*-reset`: an RFC 3339 time |
//!
//! A header that does not parse is ignored (the others still count); a reply without any reads
//! as `None`. Gemini and Bedrock send no such headers.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::error::parse_go_duration;
use crate::target::Target;

/// One limit as the provider reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The limit itself, when reported.
    pub limit: Option<u64>,
    /// What is left of it.
    pub remaining: u64,
    /// When it is whole again, from the reply's arrival; `None` when not reported.
    pub reset_in: Option<Duration>,
}

/// What one reply said about the key's capacity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests.
    pub requests: Option<Window>,
    /// Tokens.
    pub tokens: Option<Window>,
}

impl RateLimits {
    /// Reads the headers of either family; `None` when a reply carries neither.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Option<RateLimits> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let number = |name: &str| text(name).and_then(|v| v.trim().parse::<u64>().ok());
        // The names are spelled out whole: this runs on every answer.
        let openai = |[remaining, limit, reset]: [&str; 3]| {
            Some(Window {
                remaining: number(remaining)?,
                limit: number(limit),
                reset_in: text(reset).and_then(parse_go_duration),
            })
        };
        let anthropic = |[remaining, limit, reset]: [&str; 3]| {
            Some(Window {
                remaining: number(remaining)?,
                limit: number(limit),
                reset_in: text(reset).and_then(|t| until_rfc3339(t, now)),
            })
        };
        macro_rules! openai {
            ($kind:literal) => {
                openai([
                    concat!("x-ratelimit-remaining-", $kind),
                    concat!("x-ratelimit-limit-", $kind),
                    concat!("x-ratelimit-reset-", $kind),
                ])
            };
        }
        macro_rules! anthropic {
            ($kind:literal) => {
                anthropic([
                    concat!("anthropic-ratelimit-", $kind, "-remaining"),
                    concat!("anthropic-ratelimit-", $kind, "-limit"),
                    concat!("anthropic-ratelimit-", $kind, "-reset"),
                ])
            };
        }
        let limits = RateLimits {
            requests: openai!("requests").or_else(|| anthropic!("requests")),
            tokens: openai!("tokens")
                .or_else(|| anthropic!("tokens"))
                .or_else(|| anthropic!("input-tokens")),
        };
        (limits.requests.is_some() || limits.tokens.is_some()).then_some(limits)
    }
}

/// The time from `now` until an RFC 3339 instant (zero when it has passed).
fn until_rfc3339(text: &str, now: SystemTime) -> Option<Duration> {
    let at = aws_smithy_types::DateTime::from_str(
        text.trim(),
        aws_smithy_types::date_time::Format::DateTime,
    )
    .ok()?;
    let at = SystemTime::try_from(at).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// Work the client waits for, briefly, before it hands an answer on.
pub type Sharing = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// How long the client waits for an observer to share what an answer reported (a key that ran
/// out) before handing the answer on; the sharing itself goes on regardless.
pub const SHARE_WAIT: Duration = Duration::from_millis(25);

/// Told what every answer's head said about capacity. It runs on the request's task and must
/// not block.
pub trait CapacityObserver: Send + Sync + 'static {
    /// An answer from `target` (any status) reported `limits`. What it returns (the key ran
    /// out, and the others are being told) is awaited up to [`SHARE_WAIT`] before the answer
    /// goes on, so the caller's next request, wherever it lands, finds the key planned around.
    fn reported(&self, target: &Target, limits: &RateLimits) -> Option<Sharing>;
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::error::test_headers as headers;

    #[test]
    fn openai_headers_as_documented() {
        // The example of OpenAI's rate-limit guide.
        let h = headers(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-limit-tokens", "150000"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let l = RateLimits::from_headers(&h, SystemTime::now()).unwrap();
        assert_eq!(
            l.requests,
            Some(Window {
                limit: Some(60),
                remaining: 59,
                reset_in: Some(Duration::from_secs(1))
            })
        );
        assert_eq!(
            l.tokens,
            Some(Window {
                limit: Some(150_000),
                remaining: 149_984,
                reset_in: Some(Duration::from_secs(360))
            })
        );
    }

    #[test]
    fn anthropic_headers_as_documented() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_689_600); // 2025-01-01T00:00:00Z
        let h = headers(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2025-01-01T00:00:05Z"),
            ("anthropic-ratelimit-input-tokens-limit", "40000"),
            ("anthropic-ratelimit-input-tokens-remaining", "39000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2025-01-01T00:00:01.5Z",
            ),
        ]);
        let l = RateLimits::from_headers(&h, now).unwrap();
        let r = l.requests.unwrap();
        assert_eq!((r.limit, r.remaining), (Some(50), 0));
        assert_eq!(r.reset_in, Some(Duration::from_secs(5)));
        let t = l.tokens.unwrap();
        assert_eq!(t.remaining, 39_000);
        assert_eq!(t.reset_in, Some(Duration::from_millis(1500)));
        // The combined token limit wins over the input one when both are sent.
        let mut h = h;
        h.insert(
            "anthropic-ratelimit-tokens-remaining",
            HeaderValue::from_static("10"),
        );
        let l = RateLimits::from_headers(&h, now).unwrap();
        assert_eq!(l.tokens.unwrap().remaining, 10);
    }

    #[test]
    fn absent_or_broken_headers() {
        assert_eq!(
            RateLimits::from_headers(&HeaderMap::new(), SystemTime::now()),
            None
        );
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "many"),
            ("x-ratelimit-remaining-tokens", "5"),
            ("x-ratelimit-reset-tokens", "soon"),
        ]);
        let l = RateLimits::from_headers(&h, SystemTime::now()).unwrap();
        assert_eq!(l.requests, None);
        assert_eq!(
            l.tokens,
            Some(Window {
                limit: None,
                remaining: 5,
                reset_in: None
            })
        );
        // A reset in the past is a reset now.
        let h = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2000-01-01T00:00:00Z"),
        ]);
        let l = RateLimits::from_headers(&h, SystemTime::now()).unwrap();
        assert_eq!(l.requests.unwrap().reset_in, Some(Duration::ZERO));
    }
}
