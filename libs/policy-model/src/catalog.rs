//! The catalog as the policy service publishes it inside its snapshot: the catalog file's
//! content (environment overrides applied) and a version derived from it, so the same catalog is
//! the same version on every process, whoever loaded it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use switchyard_config::{Catalog, ConfigError};

use crate::keys::hex;

/// A published catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedCatalog {
    /// The first 12 hex digits of `sha256`: what traces, explain, logs and `/readyz` show.
    pub version: String,
    /// Hex SHA-256 of the catalog as parsed (so formatting and comments do not make a version,
    /// and a process that loaded the same catalog from its own file knows it by the same one).
    pub sha256: String,
    /// Where it was loaded from (the file name), for messages.
    pub source: String,
    /// The catalog, as YAML.
    pub yaml: String,
}

impl PublishedCatalog {
    /// `catalog`, read from `source` as `yaml` (its canonical text, see [`Catalog::read`]).
    pub fn new(source: &str, yaml: String, catalog: &Catalog) -> Self {
        let sha256 = sha256_of(catalog);
        PublishedCatalog {
            version: sha256[..12].to_string(),
            sha256,
            source: source.to_string(),
            yaml,
        }
    }

    /// The version `catalog` is known by, wherever it was loaded.
    pub fn version_of(catalog: &Catalog) -> String {
        sha256_of(catalog)[..12].to_string()
    }

    /// The catalog itself.
    pub fn parse(&self) -> Result<Catalog, ConfigError> {
        Catalog::from_yaml(&self.source, &self.yaml)
    }
}

fn sha256_of(catalog: &Catalog) -> String {
    // A catalog serializes deterministically (lists in file order, no hash maps).
    let text = serde_norway::to_string(catalog).unwrap_or_default();
    hex(&Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const A: &str = "providers:\n  - { id: p, format: openai, base_url: \"http://127.0.0.1:9\", data_policy: { retains_prompts: false, trains_on_data: false, zero_retention: true } }\nmodels:\n  - { id: m, context_length: 8000, max_output: 500 }\nendpoints:\n  - { model: m, provider: p, upstream_model: x, price: { prompt: 1, completion: 2 } }\n";

    #[test]
    fn a_version_is_the_catalog_not_its_formatting() {
        let a = Catalog::from_yaml("a", A).unwrap();
        let reformatted = format!(
            "# a comment\n{}",
            A.replace("{ prompt: 1,", "{ prompt: 1.0,")
        );
        let b = Catalog::from_yaml("b", &reformatted).unwrap();
        assert_eq!(
            PublishedCatalog::version_of(&a),
            PublishedCatalog::version_of(&b)
        );
        let dearer = Catalog::from_yaml("c", &A.replace("prompt: 1,", "prompt: 4,")).unwrap();
        assert_ne!(
            PublishedCatalog::version_of(&a),
            PublishedCatalog::version_of(&dearer)
        );
        // What is published reads back as the same catalog, under the same version.
        let p = PublishedCatalog::new("a", serde_norway::to_string(&a).unwrap(), &a);
        assert_eq!(p.version, PublishedCatalog::version_of(&a));
        assert_eq!(p.parse().unwrap(), a);
    }
}
