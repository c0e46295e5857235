//! Why admission said no, and whether waiting may change its answer: every route out of
//! capacity until a reset, or a `queue` workflow's preferred route down. What a request needs to
//! wait for a route in the [`crate::queue`] comes with the refusal. Also whether a request whose
//! run failed goes back to wait ([`queue_again`]).

use std::time::Duration;

use switchyard_core::{EndpointId, Error};
use switchyard_policy_model::config::Priority;
use switchyard_policy_model::snapshot::CompiledWorkflow;
use switchyard_routing::{Degradation, ExclusionReason, PlanError};
use tokio::time::Instant;

use crate::edge::AdmitOptions;

/// How often a `queue` workflow whose preferred route is down looks again.
pub const QUEUE_POLL: Duration = Duration::from_millis(250);

/// Why a request has no route now, and whether waiting may give it one.
#[derive(Debug)]
pub struct RouteError {
    /// The answer if it does not wait.
    pub error: Error,
    /// When it is worth planning again, and the endpoints it waits for: every route is out of
    /// capacity until a reset, or a `queue` workflow's preferred route is down.
    pub wait: Option<(Duration, Vec<EndpointId>)>,
}

impl RouteError {
    pub(crate) fn of(e: &PlanError, degradation: Degradation) -> RouteError {
        let waits_for = |reason: &ExclusionReason| match reason {
            ExclusionReason::CapacityExhausted { .. } => true,
            ExclusionReason::Unhealthy => degradation == Degradation::Queue,
            _ => false,
        };
        let wait = match e {
            PlanError::NoCapacity {
                excluded,
                retry_after_ms,
            } => Some((Duration::from_millis(*retry_after_ms), excluded)),
            PlanError::NoEligibleRoute { excluded }
                if degradation == Degradation::Queue
                    && excluded.iter().any(|x| waits_for(&x.reason)) =>
            {
                Some((QUEUE_POLL, excluded))
            }
            _ => None,
        }
        .map(|(after, excluded)| {
            let blocked = excluded
                .iter()
                .filter(|x| waits_for(&x.reason))
                .map(|x| x.endpoint.clone())
                .collect();
            (after, blocked)
        });
        RouteError {
            error: e.to_error(),
            wait,
        }
    }
}

impl From<Error> for RouteError {
    fn from(error: Error) -> Self {
        RouteError { error, wait: None }
    }
}

impl From<RouteError> for Error {
    fn from(e: RouteError) -> Self {
        e.error
    }
}

/// A request not admitted.
#[derive(Debug)]
pub struct Refused {
    /// The answer, now or when waiting ends without admission.
    pub error: Error,
    /// What it needs to wait, when waiting may admit it.
    pub wait: Option<Box<Wait>>,
}

impl From<Error> for Refused {
    fn from(error: Error) -> Self {
        Refused { error, wait: None }
    }
}

/// What a request that may wait for a route needs to.
#[derive(Debug, Clone)]
pub struct Wait {
    /// When planning again may admit it.
    pub retry_after: Duration,
    /// Its deadline: it waits no longer.
    pub deadline: Instant,
    /// Its workflow's class.
    pub priority: Priority,
    /// Its org's weight.
    pub weight: u32,
    /// The endpoints it waits for.
    pub blocked: Vec<EndpointId>,
}

/// A request's deadline: its workflow's total time from when admission began, the caller's own
/// if sooner, and an earlier admission's if it waited.
pub(crate) fn deadline_of(
    workflow: &CompiledWorkflow,
    options: &AdmitOptions,
    received: Instant,
) -> Instant {
    let mut deadline = received + Duration::from_millis(workflow.timeouts.total_ms);
    if let Some(timeout) = options.timeout {
        deadline = deadline.min(received + timeout);
    }
    if let Some(earlier) = options.deadline {
        deadline = deadline.min(earlier);
    }
    deadline
}

/// Whether a request that failed before any byte reached the client goes back to wait for a
/// route, with time left for another try after a pause: a `queue` workflow's after an outage, a
/// timeout or a rate limit on its preferred route; any request throttled upstream by a key
/// whose capacity its provider reports (a burst sent before the router knew it), unless the
/// answer's Retry-After is past its deadline, which then waits for the reset in order instead
/// of getting the 429.
pub(crate) fn queue_again(
    a: &crate::admission::Admitted,
    error: &Error,
    capacity: &crate::capacity::CapacityView,
) -> bool {
    if tokio::time::Instant::now() + crate::admission::QUEUE_POLL * 2 >= a.settings.deadline {
        return false;
    }
    if a.workflow.routing.degradation == switchyard_routing::Degradation::Queue {
        return error.class.fallback() == switchyard_core::Fallback::Yes;
    }
    // Its provider reports the key's capacity: the throttled request waits for the window the
    // answer named (or, at a window's very edge, tries again after the pause).
    error.class == switchyard_core::ErrorClass::RateLimited
        && error
            .retry_after
            .is_none_or(|after| tokio::time::Instant::now() + after < a.settings.deadline)
        && a.plan.iter().all(|p| {
            capacity
                .left(p.attempt.endpoint.as_str(), p.target.owner.as_deref())
                .is_some()
        })
}
