//! How one upstream attempt ended, as the attempt engine, the routing trace, the passive outcome
//! counters and the metrics see it. Whether it counts against the endpoint's health is asked of
//! [`ErrorClass::counts_against_health`], never decided by the caller.

use serde::{Serialize, Serializer};

use crate::ErrorClass;

/// The end of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// The endpoint answered and the reply was served (or could have been).
    Ok,
    /// The endpoint answered, but the reply failed the request's JSON Schema. Availability was
    /// fine: validity is counted apart (an endpoint can be good for chat and bad for tools).
    InvalidOutput,
    /// The attempt failed with this class.
    Failed(ErrorClass),
    /// The attempt was cancelled before it answered because another one of the same request
    /// answered first (a hedge): it says nothing about the endpoint.
    Cancelled,
}

impl AttemptOutcome {
    /// The label in traces, logs and metrics: `ok`, `invalid_output` or the error class.
    pub const fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::InvalidOutput => "invalid_output",
            AttemptOutcome::Failed(class) => class.as_str(),
            AttemptOutcome::Cancelled => "cancelled",
        }
    }

    /// The endpoint produced a reply.
    pub const fn answered(self) -> bool {
        matches!(self, AttemptOutcome::Ok | AttemptOutcome::InvalidOutput)
    }

    /// Whether this attempt counts against the endpoint's health.
    pub const fn counts_against_health(self) -> bool {
        match self {
            AttemptOutcome::Failed(class) => class.counts_against_health(),
            AttemptOutcome::Ok | AttemptOutcome::InvalidOutput | AttemptOutcome::Cancelled => false,
        }
    }

    /// Whether this attempt says anything about the endpoint's health at all: answers and
    /// failures that count do; a rate limit or a refusal neither helps nor hurts.
    pub const fn bears_on_health(self) -> bool {
        self.answered() || self.counts_against_health()
    }
}

impl std::fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for AttemptOutcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_outages_timeouts_and_bad_keys_count_against_health() {
        let counting: Vec<ErrorClass> = ErrorClass::ALL
            .into_iter()
            .filter(|c| c.counts_against_health())
            .collect();
        assert_eq!(
            counting,
            [
                ErrorClass::Timeout,
                ErrorClass::Unavailable,
                ErrorClass::UpstreamAuth
            ]
        );
        for c in [
            ErrorClass::RateLimited,
            ErrorClass::ContextLengthExceeded,
            ErrorClass::ContentPolicy,
            ErrorClass::InvalidRequest,
        ] {
            assert!(!AttemptOutcome::Failed(c).counts_against_health(), "{c}");
            assert!(!AttemptOutcome::Failed(c).bears_on_health(), "{c}");
        }
        assert!(!AttemptOutcome::InvalidOutput.counts_against_health());
        assert!(AttemptOutcome::InvalidOutput.bears_on_health());
        assert_eq!(
            serde_json::to_value(AttemptOutcome::Failed(ErrorClass::Timeout)).ok(),
            Some(serde_json::json!("timeout"))
        );
    }
}
