//! Environment overrides: `<PREFIX>__A__B__C=value` sets `a.b.c` (segments lowercased; a numeric
//! segment indexes a list). The value is read as a YAML scalar or flow collection, so `true`, `5`
//! and `[a, b]` keep their types; anything else is a string.

use serde_norway::{Mapping, Value};

use crate::error::ConfigError;

/// One override taken from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The variable it came from (for error messages; its value is never echoed).
    pub var: String,
    /// Lowercased path segments.
    pub path: Vec<String>,
    /// The parsed value.
    pub value: Value,
}

/// Overrides for `prefix` from `vars` (usually `std::env::vars()`), sorted by variable name so the
/// result does not depend on environment order.
pub fn overrides_from_env(
    prefix: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<Override> {
    let marker = format!("{prefix}__");
    let mut out: Vec<Override> = vars
        .into_iter()
        .filter_map(|(var, raw)| {
            let rest = var.strip_prefix(&marker)?;
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            let value = match serde_norway::from_str::<Value>(&raw) {
                Ok(Value::Null)
                    if !raw.trim().is_empty() && raw.trim() != "null" && raw.trim() != "~" =>
                {
                    Value::String(raw)
                }
                Ok(v @ (Value::Mapping(_) | Value::Tagged(_)))
                    if !raw.trim_start().starts_with('{') =>
                {
                    // `a: b` parses as a mapping; an override value is a scalar unless written in
                    // flow style.
                    let _ = v;
                    Value::String(raw)
                }
                Ok(v) => v,
                Err(_) => Value::String(raw),
            };
            Some(Override { var, path, value })
        })
        .collect();
    out.sort_by(|a, b| a.var.cmp(&b.var));
    out
}

/// Applies overrides to a parsed document, creating missing mappings on the way.
pub fn apply_overrides(doc: &mut Value, overrides: &[Override]) -> Result<(), ConfigError> {
    for o in overrides {
        if o.path.iter().any(String::is_empty) {
            return Err(ConfigError::Override {
                var: o.var.clone(),
                message: "empty path segment".into(),
            });
        }
        set(doc, &o.path, o.value.clone()).map_err(|message| ConfigError::Override {
            var: o.var.clone(),
            message,
        })?;
    }
    Ok(())
}

fn set(node: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((head, rest)) = path.split_first() else {
        *node = value;
        return Ok(());
    };
    if node.is_null() {
        *node = Value::Mapping(Mapping::new());
    }
    match node {
        Value::Mapping(map) => {
            let key = Value::String(head.clone());
            if !map.contains_key(&key) {
                map.insert(key.clone(), Value::Null);
            }
            match map.get_mut(&key) {
                Some(child) => set(child, rest, value),
                None => Err(format!("cannot set `{head}`")),
            }
        }
        Value::Sequence(seq) => {
            let index: usize = head
                .parse()
                .map_err(|_| format!("`{head}` is not a list index"))?;
            let len = seq.len();
            match seq.get_mut(index) {
                Some(child) => set(child, rest, value),
                None => Err(format!("index {index} is past the end of a list of {len}")),
            }
        }
        _ => Err(format!("`{head}` is below a plain value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sets_nested_keys_indices_and_typed_values() {
        let mut doc: Value = serde_norway::from_str(
            "router:\n  listen: 127.0.0.1:8080\nproviders:\n  - id: a\n  - id: b\n",
        )
        .unwrap();
        let o = overrides_from_env(
            "SWITCHYARD",
            env(&[
                ("SWITCHYARD__ROUTER__LISTEN", "0.0.0.0:9000"),
                ("SWITCHYARD__ROUTER__WORKERS", "4"),
                ("SWITCHYARD__PROVIDERS__1__ID", "c"),
                ("SWITCHYARD__NEW__FLAG", "true"),
                ("SWITCHYARD__NEW__NAME", "a: b"),
                ("OTHER__ROUTER__LISTEN", "x"),
            ]),
        );
        assert_eq!(o.len(), 5);
        apply_overrides(&mut doc, &o).unwrap();
        assert_eq!(doc["router"]["listen"], Value::from("0.0.0.0:9000"));
        assert_eq!(doc["router"]["workers"], Value::from(4));
        assert_eq!(doc["providers"][1]["id"], Value::from("c"));
        assert_eq!(doc["new"]["flag"], Value::from(true));
        assert_eq!(doc["new"]["name"], Value::from("a: b"));
    }

    #[test]
    fn reports_impossible_paths_by_variable() {
        let mut doc: Value = serde_norway::from_str("providers:\n  - id: a\nname: x\n").unwrap();
        for (var, needle) in [
            ("P__PROVIDERS__5__ID", "past the end"),
            ("P__PROVIDERS__X__ID", "not a list index"),
            ("P__NAME__INNER", "below a plain value"),
        ] {
            let o = overrides_from_env("P", env(&[(var, "v")]));
            let err = apply_overrides(&mut doc, &o).unwrap_err().to_string();
            assert!(err.contains(var) && err.contains(needle), "{err}");
        }
    }
}
