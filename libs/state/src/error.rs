/// A state operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The store could not be reached or answered with an error; the caller decides its fail mode.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded.
    #[error("corrupt state at {key}: {detail}")]
    Corrupt {
        /// The key.
        key: String,
        /// What was wrong.
        detail: String,
    },
}

impl From<redis::RedisError> for StateError {
    fn from(e: redis::RedisError) -> Self {
        StateError::Unavailable(e.to_string())
    }
}
