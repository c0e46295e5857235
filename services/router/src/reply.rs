//! What the handler answers with, whichever API asked: a served reply (chat or embeddings),
//! an idempotent request's stored text, or a failure with its routing trace.

use std::sync::Arc;

use switchyard_core::{ChatResponse, EmbeddingResponse, Error};

use crate::admission::Admitted;
use crate::engine::AttemptTrace;

/// A reply served now.
pub struct Served {
    /// The response, with the served model, provider and cost.
    pub response: ChatResponse,
    /// Every attempt.
    pub trace: Vec<AttemptTrace>,
    /// The request as admitted (for the routing trace).
    pub admitted: Arc<Admitted>,
}

/// An embeddings reply served now.
pub struct Embedded {
    /// The vectors, with the served model, provider and cost.
    pub response: EmbeddingResponse,
    /// Every attempt.
    pub trace: Vec<AttemptTrace>,
    /// The request as admitted (for the routing trace).
    pub admitted: Arc<Admitted>,
}

/// What a non-streamed request is answered with.
pub enum Reply<T = Served> {
    /// Served now, without an idempotency key.
    Served(T),
    /// The stored text of an idempotent request: just produced, or `replayed` from an earlier
    /// request with the same key.
    Stored {
        /// The reply in the API's own encoding.
        text: String,
        /// Produced by an earlier request.
        replayed: bool,
    },
}

/// Why a request was not served, with its routing trace when it got as far as attempts.
#[derive(Debug)]
pub struct Failure {
    /// The error.
    pub error: Error,
    /// The request and its attempts, when it was admitted.
    pub routing: Option<(Arc<Admitted>, Vec<AttemptTrace>)>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            error,
            routing: None,
        }
    }
}
