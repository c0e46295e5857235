use std::path::Path;

use serde::de::DeserializeOwned;
use serde_norway::Value;

use crate::error::{ConfigError, FieldError};
use crate::overrides::{apply_overrides, overrides_from_env};
use crate::validate::{Validate, Validator};

/// A YAML document and the name it is reported under.
#[derive(Debug, Clone)]
pub struct SourceText {
    /// File path or a description such as `<inline>`.
    pub name: String,
    /// The parsed document with overrides applied.
    pub value: Value,
}

/// Reads `path`, parses it and applies the process environment's `<env_prefix>__…` overrides.
pub fn read_value(path: &Path, env_prefix: &str) -> Result<SourceText, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_text(&path.display().to_string(), &text, env_prefix)
}

/// Parses YAML text (a file's, or one built into a binary) and applies the process
/// environment's `<env_prefix>__…` overrides.
pub fn read_text(name: &str, text: &str, env_prefix: &str) -> Result<SourceText, ConfigError> {
    let mut value = parse_yaml(name, text)?;
    apply_overrides(
        &mut value,
        &overrides_from_env(env_prefix, std::env::vars()),
    )?;
    Ok(SourceText {
        name: name.to_string(),
        value,
    })
}

/// Loads, overrides, deserializes and validates a configuration file.
pub fn load_file<T: DeserializeOwned + Validate>(
    path: &Path,
    env_prefix: &str,
) -> Result<T, ConfigError> {
    let source = read_value(path, env_prefix)?;
    parse_value(&source.name, source.value)
}

/// Parses and validates YAML text (no environment overrides): for tests and inline config.
pub fn parse_str<T: DeserializeOwned + Validate>(name: &str, text: &str) -> Result<T, ConfigError> {
    parse_value(name, parse_yaml(name, text)?)
}

/// Deserializes and validates a parsed document. A type error stops deserialization, so it is
/// reported alone (with its path); semantic errors are all reported together.
pub fn parse_value<T: DeserializeOwned + Validate>(
    name: &str,
    value: Value,
) -> Result<T, ConfigError> {
    let parsed: T = deserialize_at(value, "").map_err(|e| ConfigError::Invalid {
        source_name: name.to_string(),
        errors: vec![e],
    })?;
    let mut v = Validator::new();
    parsed.validate(&mut v);
    if v.is_ok() {
        Ok(parsed)
    } else {
        Err(ConfigError::Invalid {
            source_name: name.to_string(),
            errors: v.into_errors(),
        })
    }
}

/// Deserializes `value`, reporting a failure at `base` + the path serde reached.
pub(crate) fn deserialize_at<T: DeserializeOwned>(
    value: Value,
    base: &str,
) -> Result<T, FieldError> {
    // An empty document (or one holding only comments) is an empty mapping, so that a config
    // whose fields all have defaults loads from an empty file.
    let value = if value.is_null() {
        Value::Mapping(Default::default())
    } else {
        value
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (base.is_empty(), inner == ".") {
            (true, true) => String::new(),
            (true, false) => inner,
            (false, true) => base.to_string(),
            (false, false) => format!("{base}.{inner}"),
        };
        FieldError {
            path,
            message: e.into_inner().to_string(),
        }
    })
}

fn parse_yaml(name: &str, text: &str) -> Result<Value, ConfigError> {
    serde_norway::from_str(text).map_err(|e| ConfigError::Syntax {
        source_name: name.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        listen: String,
        #[serde(default)]
        workers: u32,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        size: u32,
    }

    impl Validate for Demo {
        fn validate(&self, v: &mut Validator) {
            v.check(!self.listen.is_empty(), "listen", "must not be empty");
            v.check(self.workers <= 64, "workers", "must be at most 64");
        }
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_path() {
        let err = parse_str::<Demo>("demo.yaml", "listen: x\ninner:\n  size: 1\n  colour: red\n")
            .unwrap_err();
        let errs = err.field_errors();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "inner.colour");
        assert!(errs[0].message.contains("unknown field `colour`"), "{err}");
        assert!(err.to_string().starts_with("demo.yaml: 1 error:"), "{err}");
    }

    #[test]
    fn type_errors_carry_the_nested_path() {
        let err = parse_str::<Demo>("demo.yaml", "listen: x\ninner:\n  size: big\n").unwrap_err();
        assert_eq!(err.field_errors()[0].path, "inner.size");
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let err = parse_str::<Demo>("demo.yaml", "listen: ''\nworkers: 100\n").unwrap_err();
        let paths: Vec<_> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["listen", "workers"]);
    }

    #[test]
    fn syntax_errors_name_the_source() {
        let err = parse_str::<Demo>("demo.yaml", "listen: [unclosed\n").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }));
        assert!(
            err.to_string().starts_with("demo.yaml: not valid YAML"),
            "{err}"
        );
    }

    #[test]
    fn files_get_env_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.yaml");
        std::fs::write(&path, "listen: 127.0.0.1:1\n").unwrap();
        // Setting process variables is unsafe under edition 2024 (and races parallel tests), so
        // the overrides are applied by hand here; the `switchyard` binary's tests cover the
        // process environment end to end.
        let mut value = read_value(&path, "SWITCHYARD_TEST_NO_SUCH_PREFIX")
            .unwrap()
            .value;
        let o = overrides_from_env("SY", vec![("SY__WORKERS".to_string(), "8".to_string())]);
        apply_overrides(&mut value, &o).unwrap();
        let demo: Demo = parse_value("demo.yaml", value).unwrap();
        assert_eq!(demo.workers, 8);
        assert_eq!(demo.listen, "127.0.0.1:1");
        assert!(demo.inner.is_none());
        let nested: Demo = parse_str("demo.yaml", "listen: x\ninner: {size: 3}\n").unwrap();
        assert_eq!(nested.inner.map(|i| i.size), Some(3));
    }

    #[test]
    fn missing_file_is_an_io_error_with_the_path() {
        let err = load_file::<Demo>(Path::new("/nonexistent/demo.yaml"), "X").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/demo.yaml: cannot read"),
            "{err}"
        );
    }
}
