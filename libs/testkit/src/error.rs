use std::path::PathBuf;

/// Why a test fixture could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A program the fixture needs is not installed.
    #[error("{program} not found on PATH: {hint}")]
    Missing {
        /// The program.
        program: String,
        /// How to install it.
        hint: String,
    },
    /// A process could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A process exited or never became ready.
    #[error("{what} did not become ready: {detail}")]
    NotReady {
        /// What was awaited.
        what: String,
        /// What was seen (exit status, last log lines).
        detail: String,
    },
    /// Building a workspace binary failed.
    #[error("building {bin} failed: {detail}")]
    Build {
        /// The binary.
        bin: String,
        /// Cargo's output.
        detail: String,
    },
    /// Any other I/O failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A control or readiness request over HTTP failed.
    #[error("{what}: {detail}")]
    Http {
        /// The request.
        what: String,
        /// Status and body, or the transport error.
        detail: String,
    },
    /// A Redis command failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl TestkitError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| TestkitError::Io { context, source }
    }
}
