//! YAML configuration for every Switchyard process: loading a file, applying environment
//! overrides (`<PREFIX>__SECTION__KEY=value`), strict deserialization (`deny_unknown_fields`), and
//! semantic validation that reports every error at once, each with its path
//! (`endpoints[2].price.prompt: must not be negative`).
//!
//! This crate also owns the catalog format (providers, models, endpoints, prices). It reads files
//! and the environment but does nothing else: no network, no policy decisions.

pub mod catalog;
mod error;
mod load;
mod overrides;
mod presets;
mod validate;

pub use catalog::Catalog;
pub use error::{ConfigError, FieldError};
pub use load::{SourceText, load_file, parse_str, parse_value, read_text, read_value};
pub use overrides::{Override, apply_overrides, overrides_from_env};
pub use validate::{Validate, Validator};
