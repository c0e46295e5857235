use std::fmt;
use std::path::PathBuf;

/// One problem in a configuration, located by its path (`providers[1].base_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path with `[i]` for list items; empty for the document root.
    pub path: String,
    /// What is wrong, lowercase.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The text is not YAML.
    #[error("{source_name}: not valid YAML: {message}")]
    Syntax {
        /// File name or description of the text.
        source_name: String,
        /// Parser message with line and column.
        message: String,
    },
    /// An environment override could not be applied.
    #[error("environment override {var}: {message}")]
    Override {
        /// The variable name.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// The document does not describe a valid configuration.
    #[error("{source_name}: {} error{}:\n{}", errors.len(), if errors.len() == 1 { "" } else { "s" }, list(errors))]
    Invalid {
        /// File name or description of the text.
        source_name: String,
        /// Every problem found, in document order.
        errors: Vec<FieldError>,
    },
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// The located problems, if this is a validation failure.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }
}
