//! Upstream failures and their classification into [`ErrorClass`]. The table is in the crate
//! documentation; this module is its one implementation.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use serde_json::Value;
use switchyard_core::{Error, ErrorClass};

/// Where in an attempt a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Opening the connection (TCP, TLS).
    Connect,
    /// Waiting for the response head (or, for a stream, its first event).
    FirstByte,
    /// Reading a non-streamed body.
    Body,
    /// Reading a stream after its first event.
    Stream,
}

impl Phase {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::FirstByte => "first_byte",
            Phase::Body => "body",
            Phase::Stream => "stream",
        }
    }
}

/// A classified upstream failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{class} from upstream ({}): {message}", phase.as_str())]
pub struct UpstreamError {
    /// The class that decides retry and fallback.
    pub class: ErrorClass,
    /// Lowercase explanation; never contains a key.
    pub message: String,
    /// HTTP status, when the upstream answered.
    pub status: Option<u16>,
    /// The provider's own error code or type (`rate_limit_exceeded`, `overloaded_error`, …).
    pub provider_code: Option<String>,
    /// How long the upstream asked us to wait.
    pub retry_after: Option<Duration>,
    /// Where it happened.
    pub phase: Phase,
    /// The answer (a body, or one event of a stream) could not be understood.
    pub malformed: bool,
}

impl UpstreamError {
    /// A new error without status.
    pub fn new(class: ErrorClass, phase: Phase, message: impl Into<String>) -> Self {
        UpstreamError {
            class,
            message: message.into(),
            status: None,
            provider_code: None,
            retry_after: None,
            phase,
            malformed: false,
        }
    }

    /// A body or event that could not be understood.
    pub fn malformed(phase: Phase, what: impl std::fmt::Display) -> Self {
        UpstreamError {
            malformed: true,
            ..UpstreamError::new(
                ErrorClass::Unavailable,
                phase,
                format!("malformed response: {what}"),
            )
        }
    }

    /// The client-facing error.
    pub fn to_error(&self) -> Error {
        let mut e = Error::new(self.class, self.message.clone());
        e.retry_after = self.retry_after;
        if let Some(status) = self.status {
            e = e.with_metadata("upstream_status", status.into());
        }
        if let Some(code) = &self.provider_code {
            e = e.with_metadata("upstream_code", code.clone().into());
        }
        e
    }
}

/// Why a call ended without a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The caller's cancellation signal fired; the upstream request was dropped.
    #[error("cancelled")]
    Cancelled,
    /// The upstream failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// The error fields of both formats' envelopes: OpenAI `{"error": {"code", "type", "message"}}`,
/// Anthropic `{"type": "error", "error": {"type", "message"}}`.
pub(crate) struct Envelope {
    pub code: Option<String>,
    pub kind: Option<String>,
    pub message: Option<String>,
}

impl Envelope {
    pub fn parse(body: &[u8]) -> Envelope {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let e = &v["error"];
        let text = |x: &Value| x.as_str().map(str::to_string);
        Envelope {
            code: text(&e["code"]),
            kind: text(&e["type"]),
            message: text(&e["message"]),
        }
    }

    fn mentions(&self, needles: &[&str]) -> bool {
        [&self.code, &self.kind, &self.message]
            .into_iter()
            .flatten()
            .any(|t| {
                let t = t.to_ascii_lowercase();
                needles.iter().any(|n| t.contains(n))
            })
    }
}

/// Classifies an HTTP error answer. Codes and types decide before the status, because the same
/// status means different things: OpenAI's 429 `insufficient_quota` is a billing failure on our
/// key, not a rate limit; a 400 may be a context-length error or a refusal.
pub fn classify_status(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> UpstreamError {
    let env = Envelope::parse(body);
    let code = env.code.clone().or_else(|| env.kind.clone());
    let class = if env.mentions(&["insufficient_quota", "billing", "credit balance"]) {
        ErrorClass::UpstreamAuth
    } else if env.mentions(&[
        "context_length_exceeded",
        "maximum context length",
        "prompt is too long",
        "string_above_max_length",
        "request_too_large",
    ]) || status == StatusCode::PAYLOAD_TOO_LARGE
    {
        ErrorClass::ContextLengthExceeded
    } else if env.mentions(&["content_policy", "content_filter", "safety system"]) {
        ErrorClass::ContentPolicy
    } else {
        match status.as_u16() {
            401 | 403 => ErrorClass::UpstreamAuth,
            402 => ErrorClass::UpstreamAuth,
            408 | 504 => ErrorClass::Timeout,
            429 => ErrorClass::RateLimited,
            400 | 422 => ErrorClass::InvalidRequest,
            // 404 (model gone), 409, 5xx, 529 overloaded and anything unexpected: this endpoint
            // cannot serve now, another may.
            _ => ErrorClass::Unavailable,
        }
    };
    let detail = env
        .message
        .as_deref()
        .map(|m| truncate(m, 300))
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("no error message")
                .to_string()
        });
    UpstreamError {
        class,
        message: format!("upstream answered {}: {detail}", status.as_u16()),
        status: Some(status.as_u16()),
        provider_code: code,
        retry_after: retry_after(headers, SystemTime::now()),
        phase: Phase::FirstByte,
        malformed: false,
    }
}

/// Classifies an error object found inside a stream (Anthropic `error` event, or an OpenAI-style
/// `{"error": …}` data line).
pub fn classify_stream_error(data: &[u8]) -> UpstreamError {
    let env = Envelope::parse(data);
    let class = match env.kind.as_deref().or(env.code.as_deref()) {
        Some("rate_limit_error" | "rate_limit_exceeded") => ErrorClass::RateLimited,
        Some("authentication_error" | "permission_error" | "invalid_api_key") => {
            ErrorClass::UpstreamAuth
        }
        Some("timeout_error") => ErrorClass::Timeout,
        _ if env.mentions(&["context_length_exceeded", "prompt is too long"]) => {
            ErrorClass::ContextLengthExceeded
        }
        _ => ErrorClass::Unavailable,
    };
    UpstreamError {
        class,
        message: format!(
            "upstream stream error: {}",
            env.message
                .as_deref()
                .map(|m| truncate(m, 300))
                .unwrap_or_else(|| "no message".into())
        ),
        status: None,
        provider_code: env.kind.or(env.code),
        retry_after: None,
        phase: Phase::Stream,
        malformed: false,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// How long the upstream asks us to wait: `retry-after-ms`, then `Retry-After` (seconds or an
/// HTTP date), then the rate-limit reset headers (OpenAI `x-ratelimit-reset-requests` /
/// `-tokens` durations such as `1s` or `6m0s`; Anthropic `anthropic-ratelimit-*-reset` RFC 3339
/// times are covered by the `retry-after` Anthropic sends with them).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    if let Some(v) = text("retry-after") {
        if let Ok(secs) = v.parse::<f64>()
            && secs.is_finite()
            && secs >= 0.0
        {
            return Some(Duration::from_secs_f64(secs));
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(at.duration_since(now).unwrap_or(Duration::ZERO));
        }
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .into_iter()
        .filter_map(|h| text(h).and_then(parse_go_duration))
        .max()
}

/// Parses durations in the form OpenAI sends them: `1s`, `20ms`, `6m0s`, `1h2m3.5s`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let value: f64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            'h' => 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0.001
            }
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
        total += value * unit;
        any = true;
    }
    (any && num.is_empty() && total.is_finite()).then(|| Duration::from_secs_f64(total))
}

/// Headers from name and value pairs, for tests.
#[cfg(test)]
pub(crate) fn test_headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            *k,
            http::HeaderValue::from_str(v).unwrap_or_else(|_| http::HeaderValue::from_static("")),
        );
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_headers as headers;

    #[test]
    fn retry_after_in_every_form() {
        let now = SystemTime::now();
        assert_eq!(
            retry_after(&headers(&[("retry-after", "3")]), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after-ms", "250"), ("retry-after", "3")]),
                now
            ),
            Some(Duration::from_millis(250))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(10));
        let d = retry_after(&headers(&[("retry-after", &later)]), now).unwrap();
        assert!(
            d <= Duration::from_secs(10) && d >= Duration::from_secs(9),
            "{d:?}"
        );
        assert_eq!(
            retry_after(
                &headers(&[
                    ("x-ratelimit-reset-requests", "6m0s"),
                    ("x-ratelimit-reset-tokens", "20ms")
                ]),
                now
            ),
            Some(Duration::from_secs(360))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(
            parse_go_duration("1h2m3.5s"),
            Some(Duration::from_secs_f64(3723.5))
        );
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("x"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn codes_decide_before_statuses() {
        let h = HeaderMap::new();
        let c = |status: u16, body: &str| {
            classify_status(StatusCode::from_u16(status).unwrap(), &h, body.as_bytes()).class
        };
        assert_eq!(
            c(
                429,
                r#"{"error":{"code":"insufficient_quota","type":"insufficient_quota","message":"You exceeded your current quota"}}"#
            ),
            ErrorClass::UpstreamAuth
        );
        assert_eq!(
            c(429, r#"{"error":{"code":"rate_limit_exceeded"}}"#),
            ErrorClass::RateLimited
        );
        assert_eq!(
            c(400, r#"{"error":{"code":"context_length_exceeded"}}"#),
            ErrorClass::ContextLengthExceeded
        );
        assert_eq!(
            c(
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 9 tokens > 5 maximum"}}"#
            ),
            ErrorClass::ContextLengthExceeded
        );
        assert_eq!(
            c(400, r#"{"error":{"code":"content_policy_violation"}}"#),
            ErrorClass::ContentPolicy
        );
        assert_eq!(
            c(400, r#"{"error":{"code":null,"message":"bad"}}"#),
            ErrorClass::InvalidRequest
        );
        assert_eq!(c(401, ""), ErrorClass::UpstreamAuth);
        assert_eq!(
            c(
                400,
                r#"{"type":"error","error":{"type":"billing_error","message":"credit balance too low"}}"#
            ),
            ErrorClass::UpstreamAuth
        );
        assert_eq!(c(413, ""), ErrorClass::ContextLengthExceeded);
        assert_eq!(c(504, ""), ErrorClass::Timeout);
        assert_eq!(
            c(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error"}}"#
            ),
            ErrorClass::Unavailable
        );
        assert_eq!(
            c(502, "<html>502 Bad Gateway</html>"),
            ErrorClass::Unavailable
        );
        assert_eq!(
            c(404, r#"{"error":{"code":"model_not_found"}}"#),
            ErrorClass::Unavailable
        );
    }

    #[test]
    fn messages_are_bounded_and_codes_kept() {
        let long = format!(
            r#"{{"error":{{"code":"x","message":"{}"}}}}"#,
            "a".repeat(1000)
        );
        let e = classify_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            &HeaderMap::new(),
            long.as_bytes(),
        );
        assert!(e.message.chars().count() < 400);
        assert_eq!(e.provider_code.as_deref(), Some("x"));
        assert_eq!(e.status, Some(500));
    }
}
