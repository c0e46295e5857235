//! The closed set of error classes (DESIGN §3) and their one mapping to HTTP status, gRPC code,
//! retry and fallback behaviour. Every failure in the system is classified into exactly one
//! [`ErrorClass`]; the class's `as_str` is also its metric label, so labels stay low-cardinality.

use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Every way a request can fail, as seen by clients, metrics and the attempt engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The request failed our validation.
    InvalidRequest,
    /// The client's key is missing, unknown or revoked.
    Unauthenticated,
    /// A budget scope would go over its limit.
    BudgetExceeded,
    /// A client limit of the org, key or workflow (requests or tokens per minute, requests in
    /// flight) is reached: ours, not an upstream's.
    LimitExceeded,
    /// The org's policy forbids what was asked.
    ForbiddenByPolicy,
    /// Every candidate endpoint was excluded (the reasons are listed).
    NoEligibleRoute,
    /// The upstream rate-limited us.
    RateLimited,
    /// The upstream did not answer in time (connect, first byte or total).
    Timeout,
    /// The upstream is down, overloaded, answered 5xx or sent a malformed response.
    Unavailable,
    /// The upstream rejected our provider key or billing.
    UpstreamAuth,
    /// The prompt does not fit the model's context window.
    ContextLengthExceeded,
    /// The upstream refused the content.
    ContentPolicy,
    /// A defect or unexpected state inside Switchyard.
    Internal,
}

/// Whether a failed attempt may move on to the next endpoint of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Never: the failure is the caller's or final.
    No,
    /// Yes, to the next endpoint.
    Yes,
    /// Only to a model with a larger context window.
    LargerContext,
    /// Only if the workflow allows falling back on refusals.
    IfWorkflowAllows,
}

impl ErrorClass {
    /// Every class, in declaration order.
    pub const ALL: [ErrorClass; 13] = [
        ErrorClass::InvalidRequest,
        ErrorClass::Unauthenticated,
        ErrorClass::BudgetExceeded,
        ErrorClass::LimitExceeded,
        ErrorClass::ForbiddenByPolicy,
        ErrorClass::NoEligibleRoute,
        ErrorClass::RateLimited,
        ErrorClass::Timeout,
        ErrorClass::Unavailable,
        ErrorClass::UpstreamAuth,
        ErrorClass::ContextLengthExceeded,
        ErrorClass::ContentPolicy,
        ErrorClass::Internal,
    ];

    /// The snake_case name: error `code` in responses and the metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorClass::InvalidRequest => "invalid_request",
            ErrorClass::Unauthenticated => "unauthenticated",
            ErrorClass::BudgetExceeded => "budget_exceeded",
            ErrorClass::LimitExceeded => "limit_exceeded",
            ErrorClass::ForbiddenByPolicy => "forbidden_by_policy",
            ErrorClass::NoEligibleRoute => "no_eligible_route",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::UpstreamAuth => "upstream_auth",
            ErrorClass::ContextLengthExceeded => "context_length_exceeded",
            ErrorClass::ContentPolicy => "content_policy",
            ErrorClass::Internal => "internal",
        }
    }

    /// The HTTP status when this class is the request's final outcome.
    pub const fn http_status(self) -> StatusCode {
        match self {
            ErrorClass::InvalidRequest | ErrorClass::ContextLengthExceeded => {
                StatusCode::BAD_REQUEST
            }
            ErrorClass::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorClass::BudgetExceeded => StatusCode::PAYMENT_REQUIRED,
            ErrorClass::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            ErrorClass::ForbiddenByPolicy | ErrorClass::ContentPolicy => StatusCode::FORBIDDEN,
            ErrorClass::NoEligibleRoute => StatusCode::SERVICE_UNAVAILABLE,
            ErrorClass::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorClass::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorClass::Unavailable | ErrorClass::UpstreamAuth => StatusCode::BAD_GATEWAY,
            ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status code when this class is the request's final outcome. An upstream rate
    /// limit maps to UNAVAILABLE (retryable by standard gRPC retry policies); RESOURCE_EXHAUSTED
    /// is kept for our own budgets and client limits, so a client can tell the two apart by code
    /// alone.
    pub const fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorClass::InvalidRequest | ErrorClass::ContextLengthExceeded => {
                tonic::Code::InvalidArgument
            }
            ErrorClass::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorClass::BudgetExceeded | ErrorClass::LimitExceeded => {
                tonic::Code::ResourceExhausted
            }
            ErrorClass::ForbiddenByPolicy | ErrorClass::ContentPolicy => {
                tonic::Code::PermissionDenied
            }
            ErrorClass::NoEligibleRoute => tonic::Code::FailedPrecondition,
            ErrorClass::RateLimited | ErrorClass::Unavailable | ErrorClass::UpstreamAuth => {
                tonic::Code::Unavailable
            }
            ErrorClass::Timeout => tonic::Code::DeadlineExceeded,
            ErrorClass::Internal => tonic::Code::Internal,
        }
    }

    /// The `type` of the OpenAI error envelope, so SDKs raise their usual exception classes.
    pub const fn openai_type(self) -> &'static str {
        match self {
            ErrorClass::InvalidRequest | ErrorClass::ContextLengthExceeded => {
                "invalid_request_error"
            }
            ErrorClass::Unauthenticated => "authentication_error",
            ErrorClass::BudgetExceeded => "insufficient_quota",
            ErrorClass::ForbiddenByPolicy | ErrorClass::ContentPolicy => "permission_error",
            ErrorClass::RateLimited | ErrorClass::LimitExceeded => "rate_limit_error",
            ErrorClass::Timeout => "timeout_error",
            ErrorClass::NoEligibleRoute | ErrorClass::Unavailable | ErrorClass::UpstreamAuth => {
                "upstream_error"
            }
            ErrorClass::Internal => "server_error",
        }
    }

    /// Whether the same endpoint may be tried again (bounded, with backoff) after this failure.
    pub const fn retry_same_endpoint(self) -> bool {
        matches!(
            self,
            ErrorClass::RateLimited | ErrorClass::Timeout | ErrorClass::Unavailable
        )
    }

    /// Whether the next endpoint of the plan may be tried after this failure.
    pub const fn fallback(self) -> Fallback {
        match self {
            ErrorClass::RateLimited
            | ErrorClass::Timeout
            | ErrorClass::Unavailable
            | ErrorClass::UpstreamAuth => Fallback::Yes,
            ErrorClass::ContextLengthExceeded => Fallback::LargerContext,
            ErrorClass::ContentPolicy => Fallback::IfWorkflowAllows,
            ErrorClass::InvalidRequest
            | ErrorClass::Unauthenticated
            | ErrorClass::BudgetExceeded
            | ErrorClass::LimitExceeded
            | ErrorClass::ForbiddenByPolicy
            | ErrorClass::NoEligibleRoute
            | ErrorClass::Internal => Fallback::No,
        }
    }

    /// Whether an attempt that failed this way counts against its endpoint's health: the one
    /// rule behind the router's local penalty, the passive outcome counters and the prober's
    /// error rate. An outage, a timeout, a malformed reply or a rejected provider key say the
    /// endpoint cannot serve; a rate limit (the upstream said when to come back), a context-length
    /// error, a content-policy refusal and the client's own bad request say nothing about it.
    pub const fn counts_against_health(self) -> bool {
        matches!(
            self,
            ErrorClass::Timeout | ErrorClass::Unavailable | ErrorClass::UpstreamAuth
        )
    }

    /// True for failures that come from an upstream provider rather than from us or the client.
    pub const fn is_upstream(self) -> bool {
        matches!(
            self,
            ErrorClass::RateLimited
                | ErrorClass::Timeout
                | ErrorClass::Unavailable
                | ErrorClass::UpstreamAuth
                | ErrorClass::ContextLengthExceeded
                | ErrorClass::ContentPolicy
        )
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified failure with a message for the client. Messages never contain secrets: they are
/// built from our own text and identifiers, not from request headers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{class}: {message}")]
pub struct Error {
    /// The class, which decides status codes and retries.
    pub class: ErrorClass,
    /// A lowercase, human-readable explanation.
    pub message: String,
    /// When the upstream (or we) asked the client to wait before retrying.
    pub retry_after: Option<Duration>,
    /// Structured detail (exclusion reasons, budget scope, …) for the envelope's `metadata`.
    pub metadata: Map<String, Value>,
}

/// gRPC metadata key carrying the error class.
pub const GRPC_CLASS_KEY: &str = "switchyard-error-class";
/// gRPC metadata key carrying Retry-After in whole seconds.
pub const GRPC_RETRY_AFTER_KEY: &str = "retry-after";

impl Error {
    /// A new error of `class`.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Error {
            class,
            message: message.into(),
            retry_after: None,
            metadata: Map::new(),
        }
    }

    /// Shorthand for [`ErrorClass::InvalidRequest`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorClass::InvalidRequest, message)
    }

    /// Adds a Retry-After hint.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Adds a metadata entry.
    pub fn with_metadata(mut self, key: &str, value: Value) -> Self {
        self.metadata.insert(key.to_string(), value);
        self
    }

    /// The HTTP status for this error.
    pub fn http_status(&self) -> StatusCode {
        self.class.http_status()
    }

    /// The OpenAI error envelope: `{"error": {"message", "type", "code", "metadata"}}`.
    pub fn openai_body(&self) -> Value {
        let mut metadata = self.metadata.clone();
        if let Some(after) = self.retry_after {
            metadata.insert("retry_after_s".into(), json!(after.as_secs_f64().ceil()));
        }
        json!({
            "error": {
                "message": self.message,
                "type": self.class.openai_type(),
                "code": self.class.as_str(),
                "metadata": metadata,
            }
        })
    }

    /// The gRPC status: mapped code, the message, the class and Retry-After as metadata, and the
    /// envelope's metadata as JSON in the status details.
    pub fn to_status(&self) -> tonic::Status {
        let details = if self.metadata.is_empty() {
            Vec::new()
        } else {
            serde_json::to_vec(&self.metadata).unwrap_or_default()
        };
        let mut status = tonic::Status::with_details(
            self.class.grpc_code(),
            self.message.clone(),
            details.into(),
        );
        let md = status.metadata_mut();
        md.insert(
            GRPC_CLASS_KEY,
            tonic::metadata::MetadataValue::from_static(self.class.as_str()),
        );
        if let Some(after) = self.retry_after {
            let secs = after.as_secs_f64().ceil() as u64;
            md.insert(GRPC_RETRY_AFTER_KEY, secs.into());
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_matches_the_design_table() {
        use ErrorClass::*;
        let table: [(ErrorClass, u16, tonic::Code, bool, Fallback); 13] = [
            (
                InvalidRequest,
                400,
                tonic::Code::InvalidArgument,
                false,
                Fallback::No,
            ),
            (
                Unauthenticated,
                401,
                tonic::Code::Unauthenticated,
                false,
                Fallback::No,
            ),
            (
                BudgetExceeded,
                402,
                tonic::Code::ResourceExhausted,
                false,
                Fallback::No,
            ),
            (
                LimitExceeded,
                429,
                tonic::Code::ResourceExhausted,
                false,
                Fallback::No,
            ),
            (
                ForbiddenByPolicy,
                403,
                tonic::Code::PermissionDenied,
                false,
                Fallback::No,
            ),
            (
                NoEligibleRoute,
                503,
                tonic::Code::FailedPrecondition,
                false,
                Fallback::No,
            ),
            (
                RateLimited,
                429,
                tonic::Code::Unavailable,
                true,
                Fallback::Yes,
            ),
            (
                Timeout,
                504,
                tonic::Code::DeadlineExceeded,
                true,
                Fallback::Yes,
            ),
            (
                Unavailable,
                502,
                tonic::Code::Unavailable,
                true,
                Fallback::Yes,
            ),
            (
                UpstreamAuth,
                502,
                tonic::Code::Unavailable,
                false,
                Fallback::Yes,
            ),
            (
                ContextLengthExceeded,
                400,
                tonic::Code::InvalidArgument,
                false,
                Fallback::LargerContext,
            ),
            (
                ContentPolicy,
                403,
                tonic::Code::PermissionDenied,
                false,
                Fallback::IfWorkflowAllows,
            ),
            (Internal, 500, tonic::Code::Internal, false, Fallback::No),
        ];
        for (class, http, grpc, retry, fallback) in table {
            assert_eq!(class.http_status().as_u16(), http, "{class}");
            assert_eq!(class.grpc_code(), grpc, "{class}");
            assert_eq!(class.retry_same_endpoint(), retry, "{class}");
            assert_eq!(class.fallback(), fallback, "{class}");
        }
        // The table covers every class exactly once.
        let mut covered: Vec<ErrorClass> = table.iter().map(|r| r.0).collect();
        covered.sort();
        assert_eq!(covered, ErrorClass::ALL.to_vec());
    }

    #[test]
    fn labels_are_unique_and_match_serde() {
        let mut seen = std::collections::HashSet::new();
        for class in ErrorClass::ALL {
            assert!(seen.insert(class.as_str()));
            assert_eq!(
                serde_json::to_string(&class).unwrap(),
                format!("\"{}\"", class.as_str())
            );
        }
    }

    #[test]
    fn envelope_and_status_carry_class_and_retry_after() {
        let err = Error::new(ErrorClass::RateLimited, "upstream rate limited")
            .with_retry_after(Duration::from_millis(2500))
            .with_metadata("provider", json!("p1"));
        let body = err.openai_body();
        assert_eq!(body["error"]["code"], "rate_limited");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["metadata"]["retry_after_s"], 3.0);
        assert_eq!(body["error"]["metadata"]["provider"], "p1");
        let status = err.to_status();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.metadata().get(GRPC_CLASS_KEY).unwrap(),
            "rate_limited"
        );
        assert_eq!(status.metadata().get(GRPC_RETRY_AFTER_KEY).unwrap(), "3");
        let details: Value = serde_json::from_slice(status.details()).unwrap();
        assert_eq!(details["provider"], "p1");
    }
}
