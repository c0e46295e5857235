use crate::error::FieldError;

/// Semantic checks of a deserialized configuration. Implementations push every problem they find
/// into the validator instead of stopping at the first.
pub trait Validate {
    /// Reports every problem of `self` into `v`, at `v`'s current path.
    fn validate(&self, v: &mut Validator);
}

/// Collects [`FieldError`]s while walking a configuration, tracking the current path.
#[derive(Debug, Default)]
pub struct Validator {
    path: Vec<Segment>,
    errors: Vec<FieldError>,
}

#[derive(Debug, Clone)]
enum Segment {
    Key(String),
    Index(usize),
}

impl Validator {
    /// An empty validator at the root.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current path as text.
    pub fn path(&self) -> String {
        render(&self.path)
    }

    /// Runs `f` with `key` appended to the path.
    pub fn field(&mut self, key: &str, f: impl FnOnce(&mut Self)) {
        self.path.push(Segment::Key(key.to_string()));
        f(self);
        self.path.pop();
    }

    /// Runs `f` for each item of a list, with `key[i]` appended to the path.
    pub fn each<'a, T>(
        &mut self,
        key: &str,
        items: &'a [T],
        mut f: impl FnMut(&mut Self, usize, &'a T),
    ) {
        self.path.push(Segment::Key(key.to_string()));
        for (i, item) in items.iter().enumerate() {
            self.path.push(Segment::Index(i));
            f(self, i, item);
            self.path.pop();
        }
        self.path.pop();
    }

    /// Records a problem at the current path.
    pub fn error(&mut self, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: self.path(),
            message: message.into(),
        });
    }

    /// Records a problem at `key` below the current path.
    pub fn error_at(&mut self, key: &str, message: impl Into<String>) {
        self.field(key, |v| v.error(message));
    }

    /// Records `message` at `key` when `ok` is false.
    pub fn check(&mut self, ok: bool, key: &str, message: impl Into<String>) {
        if !ok {
            self.error_at(key, message);
        }
    }

    /// Validates a nested value at `key`.
    pub fn nested<T: Validate>(&mut self, key: &str, value: &T) {
        self.field(key, |v| value.validate(v));
    }

    /// Adds errors found elsewhere (already carrying their full paths).
    pub fn extend(&mut self, errors: impl IntoIterator<Item = FieldError>) {
        self.errors.extend(errors);
    }

    /// True when nothing was reported.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// The problems found.
    pub fn into_errors(self) -> Vec<FieldError> {
        self.errors
    }
}

fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_with_keys_and_indices() {
        let mut v = Validator::new();
        v.each("endpoints", &[1, 2], |v, i, _| {
            v.field("price", |v| v.error_at("prompt", format!("bad {i}")));
        });
        v.error("root problem");
        let errs = v.into_errors();
        assert_eq!(errs[0].to_string(), "endpoints[0].price.prompt: bad 0");
        assert_eq!(errs[1].to_string(), "endpoints[1].price.prompt: bad 1");
        assert_eq!(errs[2].to_string(), "root problem");
    }
}
