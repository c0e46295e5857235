//! The catalog: which providers exist (wire format, base URL, key reference, region, data
//! policy), which models clients may ask for (context length, max output), and which provider
//! serves which model at what price and with which parameters (endpoints).
//!
//! ```yaml
//! providers:
//!   - id: openai
//!     format: openai                 # openai | anthropic
//!     base_url: https://api.openai.com/v1
//!     key: env:OPENAI_API_KEY        # env:NAME | file:/path | none
//!     region: us
//!     data_policy: { retains_prompts: true, trains_on_data: false, zero_retention: false }
//! models:
//!   - { id: gpt-4o-mini, context_length: 128000, max_output: 16384 }
//! endpoints:
//!   - model: gpt-4o-mini
//!     provider: openai
//!     upstream_model: gpt-4o-mini-2024-07-18
//!     price: { prompt: "0.15", completion: "0.60" }   # USD per 1M tokens; `request` per call
//!     supports: [tools, tool_choice, response_format, json_schema, stop, seed]
//!     quantization: fp16
//! ```
//! The full reference is `deploy/config/catalog.example.yaml`.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_norway::Value;
use switchyard_core::{
    EndpointId, ModelId, ModelKind, Money, Parameter, PricePerMtok, ProviderId, Quantization,
};

use crate::error::{ConfigError, FieldError};
use crate::load::{deserialize_at, read_value};
use crate::validate::{Validate, Validator};

/// The environment prefix of catalog overrides: `SWITCHYARD_CATALOG__PROVIDERS__0__BASE_URL=…`.
pub const ENV_PREFIX: &str = "SWITCHYARD_CATALOG";

/// Providers, models and the endpoints joining them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Upstream providers.
    pub providers: Vec<Provider>,
    /// Models as clients name them.
    pub models: Vec<Model>,
    /// Model × provider offerings.
    pub endpoints: Vec<Endpoint>,
}

/// The HTTP API dialect an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireFormat {
    /// OpenAI chat completions (also Together, Groq, Fireworks, vLLM, Ollama, …).
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// Google's Gemini API (`generateContent`, `x-goog-api-key`).
    Gemini,
    /// Gemini on Vertex AI (project / location URLs, OAuth2 service-account tokens).
    Vertex,
    /// Anthropic's models on Vertex AI (`rawPredict`, the Messages body).
    VertexAnthropic,
    /// AWS Bedrock Converse / ConverseStream (SigV4, the binary event stream).
    Bedrock,
    /// Azure OpenAI (deployment URLs with `api-version`, or the v1 path; `api-key`).
    Azure,
}

impl WireFormat {
    /// Whether a request using `p` can be expressed in this format at all. Where it cannot, the
    /// planner leaves the format's endpoints out of a request that uses it (`missing_parameter`)
    /// rather than drop the parameter on the way: the Messages API has no seed, log
    /// probabilities, frequency or presence penalties, or logit bias.
    pub fn carries(self, p: Parameter) -> bool {
        match self {
            WireFormat::Openai | WireFormat::Azure => true,
            WireFormat::Anthropic | WireFormat::VertexAnthropic => !matches!(
                p,
                Parameter::Seed
                    | Parameter::Logprobs
                    | Parameter::TopLogprobs
                    | Parameter::FrequencyPenalty
                    | Parameter::PresencePenalty
                    | Parameter::LogitBias
            ),
            // generationConfig has seed, penalties, topK and thinking; log probabilities come
            // back in a shape of their own and parallel calls cannot be turned off.
            WireFormat::Gemini | WireFormat::Vertex => !matches!(
                p,
                Parameter::Logprobs
                    | Parameter::TopLogprobs
                    | Parameter::LogitBias
                    | Parameter::ParallelToolCalls
            ),
            // Converse's inferenceConfig has max tokens, temperature, top_p and stop sequences;
            // the rest is model-specific (`additionalModelRequestFields`).
            WireFormat::Bedrock => !matches!(
                p,
                Parameter::Seed
                    | Parameter::Logprobs
                    | Parameter::TopLogprobs
                    | Parameter::FrequencyPenalty
                    | Parameter::PresencePenalty
                    | Parameter::LogitBias
                    | Parameter::TopK
                    | Parameter::Reasoning
                    | Parameter::ParallelToolCalls
            ),
        }
    }

    /// Whether the format has an embeddings API the adapters speak.
    pub fn embeds(self) -> bool {
        matches!(
            self,
            WireFormat::Openai | WireFormat::Azure | WireFormat::Gemini
        )
    }
}

/// An upstream provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Unique id, lowercase letters, digits, `-`, `_`, `.`.
    pub id: ProviderId,
    /// Wire format.
    pub format: WireFormat,
    /// API base URL, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Where the shared provider key comes from.
    #[serde(default)]
    pub key: KeyRef,
    /// Where the provider processes requests (for data-residency policies).
    #[serde(default)]
    pub region: Option<String>,
    /// What the provider does with prompts.
    pub data_policy: DataPolicy,
    /// The preset this provider was written with (`groq`, `mistral`, …), which filled in the
    /// format, base URL, key and quirks it did not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// How the provider departs from its format.
    #[serde(default, skip_serializing_if = "Quirks::is_empty")]
    pub quirks: Quirks,
    /// Azure OpenAI: the `api-version` of deployment URLs; without it the v1 path is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Vertex AI: the Google Cloud project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Vertex AI: the location (`us-central1`, `europe-west4`, `global`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Bedrock: the region requests are signed for; by default the one in the base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_region: Option<String>,
    /// Bedrock: the profile of the shared credentials file when the environment has no
    /// credentials (`AWS_PROFILE`, else `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_profile: Option<String>,
}

impl Provider {
    /// Whether a request using `p` can be sent to this provider: its format carries it and the
    /// provider does not refuse it.
    pub fn carries(&self, p: Parameter) -> bool {
        self.format.carries(p) && !self.quirks.unsupported.contains(&p)
    }

    /// Bedrock's signing region: explicit, else read off `bedrock-runtime.REGION.amazonaws.com`.
    pub fn signing_region(&self) -> Option<String> {
        self.aws_region.clone().or_else(|| {
            let host = url::Url::parse(&self.base_url)
                .ok()?
                .host_str()?
                .to_string();
            let rest = host.strip_prefix("bedrock-runtime.")?;
            let region = rest.split('.').next()?;
            (!region.is_empty() && rest.ends_with(".amazonaws.com")).then(|| region.to_string())
        })
    }
}

pub use crate::presets::{MaxTokensField, Preset, Quirks, preset, preset_names, presets};

/// A reference to a secret, never the secret itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum KeyRef {
    /// No key (self-hosted upstreams, the simulator).
    #[default]
    None,
    /// The value of an environment variable.
    Env(String),
    /// The contents of a file (trailing newline trimmed).
    File(String),
}

impl TryFrom<String> for KeyRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s == "none" {
            return Ok(KeyRef::None);
        }
        if let Some(var) = s.strip_prefix("env:") {
            let valid = !var.is_empty()
                && var
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            return if valid {
                Ok(KeyRef::Env(var.to_string()))
            } else {
                Err(format!(
                    "`env:{var}` must name a variable of A-Z, 0-9 and _"
                ))
            };
        }
        if let Some(path) = s.strip_prefix("file:") {
            return if path.is_empty() {
                Err("`file:` needs a path".to_string())
            } else {
                Ok(KeyRef::File(path.to_string()))
            };
        }
        // Never echo the text: a key pasted here by mistake must not end up in an error log.
        Err("must be `env:NAME`, `file:/path` or `none` (a key itself does not belong in the catalog)".to_string())
    }
}

impl From<KeyRef> for String {
    fn from(k: KeyRef) -> String {
        match k {
            KeyRef::None => "none".into(),
            KeyRef::Env(v) => format!("env:{v}"),
            KeyRef::File(p) => format!("file:{p}"),
        }
    }
}

/// What a provider does with the prompts it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPolicy {
    /// Keeps prompts after the request (logging, abuse monitoring).
    pub retains_prompts: bool,
    /// Trains models on prompts.
    pub trains_on_data: bool,
    /// Contractually keeps nothing (zero data retention).
    pub zero_retention: bool,
}

impl DataPolicy {
    /// True when the provider neither retains nor trains on prompts (`data_collection: deny`).
    pub fn no_collection(&self) -> bool {
        !self.retains_prompts && !self.trains_on_data
    }
}

/// A model as clients ask for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Unique id.
    pub id: ModelId,
    /// Context window in tokens (prompt plus output).
    pub context_length: u32,
    /// Output cap in tokens (chat models; an embedding model produces none).
    #[serde(default)]
    pub max_output: u32,
    /// `chat` (the default) or `embedding`: which APIs the model serves.
    #[serde(default, skip_serializing_if = "is_chat")]
    pub kind: ModelKind,
}

fn is_chat(k: &ModelKind) -> bool {
    *k == ModelKind::Chat
}

/// Prices in USD: per 1M prompt tokens, per 1M completion tokens, per 1M cached prompt tokens
/// (defaults to the prompt price) and per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per 1M prompt tokens.
    pub prompt: Money,
    /// USD per 1M completion tokens.
    pub completion: Money,
    /// USD per 1M cached prompt tokens; the prompt price when absent.
    #[serde(default)]
    pub cached_prompt: Option<Money>,
    /// USD per request.
    #[serde(default)]
    pub request: Money,
}

impl Price {
    /// Prompt price per 1M tokens.
    pub fn prompt_per_mtok(&self) -> PricePerMtok {
        PricePerMtok(self.prompt)
    }

    /// Completion price per 1M tokens.
    pub fn completion_per_mtok(&self) -> PricePerMtok {
        PricePerMtok(self.completion)
    }

    /// Cached prompt price per 1M tokens.
    pub fn cached_prompt_per_mtok(&self) -> PricePerMtok {
        PricePerMtok(self.cached_prompt.unwrap_or(self.prompt))
    }
}

/// One model served by one provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Unique id; `model@provider` when absent.
    #[serde(default)]
    pub id: Option<EndpointId>,
    /// The catalog model served.
    pub model: ModelId,
    /// The provider serving it.
    pub provider: ProviderId,
    /// The model name the provider's API expects.
    pub upstream_model: String,
    /// Prices.
    pub price: Price,
    /// Parameters this endpoint honours.
    #[serde(default)]
    pub supports: Vec<Parameter>,
    /// Weight precision, when disclosed.
    #[serde(default)]
    pub quantization: Option<Quantization>,
    /// A smaller context window than the model's, if the provider limits it.
    #[serde(default)]
    pub context_length: Option<u32>,
    /// A smaller output cap than the model's, if the provider limits it.
    #[serde(default)]
    pub max_output: Option<u32>,
    /// The capacity of the shared key on this endpoint, as the provider grants it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
}

/// Requests and tokens per minute a provider grants a key (counted across every router).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens per minute (a request counts its prompt estimate plus the output it may produce,
    /// as providers count it).
    #[serde(default)]
    pub tpm: Option<u64>,
}

impl Capacity {
    /// Checks that each limit set is positive and that one is set.
    pub fn check(&self, v: &mut Validator) {
        if self.rpm.is_none() && self.tpm.is_none() {
            v.error("sets neither rpm nor tpm");
        }
        for (name, n) in [("rpm", self.rpm), ("tpm", self.tpm)] {
            if n == Some(0) {
                v.error_at(name, "must be positive");
            }
        }
    }
}

impl Endpoint {
    /// The endpoint's id, explicit or derived.
    pub fn id(&self) -> EndpointId {
        self.id
            .clone()
            .unwrap_or_else(|| EndpointId::of(&self.model, &self.provider))
    }

    /// Whether the endpoint honours `p`.
    pub fn supports(&self, p: Parameter) -> bool {
        self.supports.contains(&p)
    }
}

impl Catalog {
    /// Loads a catalog file, with `SWITCHYARD_CATALOG__…` overrides, reporting every problem.
    pub fn load(path: &Path) -> Result<Catalog, ConfigError> {
        let source = read_value(path, ENV_PREFIX)?;
        Catalog::from_value(&source.name, source.value)
    }

    /// Loads a catalog file as [`Catalog::load`] does, and returns with it its canonical text:
    /// the file's content with the environment's overrides applied, as YAML, which
    /// [`Catalog::from_yaml`] reads back into the same catalog. This is what gets published.
    pub fn read(path: &Path) -> Result<(Catalog, String), ConfigError> {
        let source = read_value(path, ENV_PREFIX)?;
        let text = serde_norway::to_string(&source.value).map_err(|e| ConfigError::Syntax {
            source_name: source.name.clone(),
            message: e.to_string(),
        })?;
        Ok((Catalog::from_value(&source.name, source.value)?, text))
    }

    /// Parses catalog YAML text (no environment overrides).
    pub fn from_yaml(name: &str, text: &str) -> Result<Catalog, ConfigError> {
        let value = serde_norway::from_str(text).map_err(|e| ConfigError::Syntax {
            source_name: name.to_string(),
            message: e.to_string(),
        })?;
        Catalog::from_value(name, value)
    }

    /// Deserializes each list item on its own, so that a type error in one provider does not hide
    /// the errors of the others, then validates the whole.
    pub fn from_value(name: &str, value: Value) -> Result<Catalog, ConfigError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            providers: Vec<Value>,
            #[serde(default)]
            models: Vec<Value>,
            #[serde(default)]
            endpoints: Vec<Value>,
        }
        let invalid = |errors| ConfigError::Invalid {
            source_name: name.to_string(),
            errors,
        };
        let raw: Raw = deserialize_at(value, "").map_err(|e| invalid(vec![e]))?;
        let mut errors = Vec::new();
        let (providers, provider_at) = items(
            crate::presets::expand(raw.providers, &mut errors),
            "providers",
            &mut errors,
        );
        let (models, model_at) = items(raw.models, "models", &mut errors);
        let (endpoints, endpoint_at) = items(raw.endpoints, "endpoints", &mut errors);
        let catalog = Catalog {
            providers,
            models,
            endpoints,
        };
        let mut v = Validator::new();
        catalog.validate(&mut v);
        if v.is_ok() && errors.is_empty() {
            return Ok(catalog);
        }
        // Semantic errors index the items that deserialized; report them at the file's indices.
        let at = [
            ("providers", provider_at),
            ("models", model_at),
            ("endpoints", endpoint_at),
        ];
        errors.extend(v.into_errors().into_iter().map(|mut e| {
            e.path = file_index(&e.path, &at);
            e
        }));
        errors.sort_by(|a, b| natural_path_order(&a.path, &b.path));
        Err(invalid(errors))
    }

    /// The provider with `id`.
    pub fn provider(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.id.as_str() == id)
    }

    /// The model with `id`.
    pub fn model(&self, id: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.id.as_str() == id)
    }

    /// The endpoints serving `model`, in catalog order.
    pub fn endpoints_of<'a>(&'a self, model: &'a str) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints
            .iter()
            .filter(move |e| e.model.as_str() == model)
    }
}

/// The items of a list that deserialize, each error recorded at its path, and the file index of
/// each item kept.
fn items<T: serde::de::DeserializeOwned>(
    values: Vec<Value>,
    key: &str,
    errors: &mut Vec<FieldError>,
) -> (Vec<T>, Vec<usize>) {
    let mut kept = Vec::new();
    let mut at = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        match deserialize_at(v, &format!("{key}[{i}]")) {
            Ok(item) => {
                kept.push(item);
                at.push(i);
            }
            Err(e) => errors.push(e),
        }
    }
    (kept, at)
}

/// `list[k]…` with `k` an index among the kept items rewritten to the item's index in the file.
fn file_index(path: &str, at: &[(&str, Vec<usize>)]) -> String {
    for (list, indices) in at {
        let Some(rest) = path.strip_prefix(list).and_then(|r| r.strip_prefix('[')) else {
            continue;
        };
        let Some((k, tail)) = rest.split_once(']') else {
            continue;
        };
        if let Some(i) = k.parse::<usize>().ok().and_then(|k| indices.get(k)) {
            return format!("{list}[{i}]{tail}");
        }
    }
    path.to_string()
}

/// Orders `endpoints[10]` after `endpoints[9]` (plain string order would not).
fn natural_path_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(p: &str) -> Vec<Result<u64, &str>> {
        p.split(['[', ']', '.'])
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u64>().map_err(|_| s))
            .collect()
    }
    let order = |p: &str| match p.split(['[', '.']).next() {
        Some("providers") => 0,
        Some("models") => 1,
        Some("endpoints") => 2,
        _ => 3,
    };
    order(a).cmp(&order(b)).then_with(|| key(a).cmp(&key(b)))
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_./:".contains(&b))
}

impl Validate for Catalog {
    fn validate(&self, v: &mut Validator) {
        let mut provider_ids = HashSet::new();
        let formats: HashMap<&str, WireFormat> = self
            .providers
            .iter()
            .map(|p| (p.id.as_str(), p.format))
            .collect();
        v.each("providers", &self.providers, |v, _, p| {
            if !valid_id(p.id.as_str()) {
                v.error_at("id", "must be 1-128 of a-z, 0-9, `-`, `_`, `.`, `/`, `:`");
            } else if !provider_ids.insert(p.id.as_str()) {
                v.error_at("id", format!("duplicate provider id `{}`", p.id));
            }
            match url::Url::parse(&p.base_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                Ok(_) => v.error_at("base_url", "must be an http or https URL with a host"),
                Err(e) => v.error_at("base_url", format!("not a URL: {e}")),
            }
            if let Some(region) = &p.region {
                v.check(!region.trim().is_empty(), "region", "must not be empty");
            }
            crate::presets::validate_provider(p, v);
            v.check(
                !(p.data_policy.zero_retention && p.data_policy.retains_prompts),
                "data_policy",
                "zero_retention contradicts retains_prompts",
            );
        });

        let mut models: HashMap<&str, &Model> = HashMap::new();
        v.each("models", &self.models, |v, _, m| {
            if !valid_id(m.id.as_str()) {
                v.error_at("id", "must be 1-128 of a-z, 0-9, `-`, `_`, `.`, `/`, `:`");
            } else if models.insert(m.id.as_str(), m).is_some() {
                v.error_at("id", format!("duplicate model id `{}`", m.id));
            }
            v.check(m.context_length > 0, "context_length", "must be positive");
            v.check(
                m.max_output > 0 || m.kind == ModelKind::Embedding,
                "max_output",
                "must be positive",
            );
            v.check(
                m.max_output <= m.context_length,
                "max_output",
                format!(
                    "{} exceeds context_length {}",
                    m.max_output, m.context_length
                ),
            );
        });

        let mut endpoint_ids = HashSet::new();
        let mut served = HashSet::new();
        v.each("endpoints", &self.endpoints, |v, _, e| {
            let id = e.id();
            if !endpoint_ids.insert(id.clone()) {
                v.error_at("id", format!("duplicate endpoint id `{id}`"));
            }
            if !provider_ids.contains(e.provider.as_str()) {
                v.error_at("provider", format!("unknown provider `{}`", e.provider));
            }
            let model = models.get(e.model.as_str());
            match model {
                None => v.error_at("model", format!("unknown model `{}`", e.model)),
                Some(m) => {
                    served.insert(m.id.as_str());
                    if m.kind == ModelKind::Embedding
                        && let Some(format) = formats.get(e.provider.as_str())
                        && !format.embeds()
                    {
                        v.error_at(
                            "provider",
                            format!(
                                "`{}` speaks a format without an embeddings API here (openai, azure and gemini have one)",
                                e.provider
                            ),
                        );
                    }
                    if let Some(ctx) = e.context_length {
                        v.check(
                            ctx > 0 && ctx <= m.context_length,
                            "context_length",
                            format!("must be between 1 and the model's {}", m.context_length),
                        );
                    }
                    if let Some(out) = e.max_output {
                        v.check(
                            out > 0 && out <= m.max_output,
                            "max_output",
                            format!("must be between 1 and the model's {}", m.max_output),
                        );
                    }
                }
            }
            v.check(
                !e.upstream_model.trim().is_empty(),
                "upstream_model",
                "must not be empty",
            );
            v.field("price", |v| {
                let p = &e.price;
                for (key, amount) in [
                    ("prompt", Some(p.prompt)),
                    ("completion", Some(p.completion)),
                    ("cached_prompt", p.cached_prompt),
                    ("request", Some(p.request)),
                ] {
                    if amount.is_some_and(Money::is_negative) {
                        v.error_at(key, "must not be negative");
                    }
                }
            });
            let mut seen = HashSet::new();
            for p in &e.supports {
                if !seen.insert(*p) {
                    v.error_at("supports", format!("`{p}` listed twice"));
                }
            }
            if let Some(c) = &e.capacity {
                v.field("capacity", |v| c.check(v));
            }
        });

        v.each("models", &self.models, |v, _, m| {
            if !served.contains(m.id.as_str()) {
                v.error(format!("model `{}` has no endpoint", m.id));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
providers:
  - id: alpha
    format: openai
    base_url: http://127.0.0.1:9001/v1
    key: env:ALPHA_KEY
    region: eu
    data_policy: { retains_prompts: false, trains_on_data: false, zero_retention: true }
  - id: beta
    format: anthropic
    base_url: https://api.example.com
    data_policy: { retains_prompts: true, trains_on_data: true, zero_retention: false }
models:
  - { id: small, context_length: 8192, max_output: 1024 }
  - { id: large, context_length: 200000, max_output: 8192 }
endpoints:
  - { model: small, provider: alpha, upstream_model: s-1, price: { prompt: 0.15, completion: "0.6" }, supports: [tools, stop] }
  - { model: small, provider: beta, upstream_model: s-2, price: { prompt: 1, completion: 2, request: "0.001" }, quantization: fp8 }
  - { id: large-beta, model: large, provider: beta, upstream_model: l-1, price: { prompt: 3, completion: 15, cached_prompt: "0.3" }, context_length: 100000 }
"#;

    #[test]
    fn a_good_catalog_loads() {
        let c = Catalog::from_yaml("catalog.yaml", GOOD).unwrap();
        assert_eq!(c.providers.len(), 2);
        assert_eq!(
            c.provider("alpha").unwrap().key,
            KeyRef::Env("ALPHA_KEY".into())
        );
        assert!(c.provider("alpha").unwrap().data_policy.no_collection());
        let small: Vec<_> = c
            .endpoints_of("small")
            .map(|e| e.id().to_string())
            .collect();
        assert_eq!(small, vec!["small@alpha", "small@beta"]);
        let e = &c.endpoints[0];
        assert_eq!(e.price.prompt.nanos(), 150_000_000);
        assert!(e.supports(Parameter::Tools));
        assert_eq!(
            c.endpoints[2].price.cached_prompt_per_mtok().0.nanos(),
            300_000_000
        );
        assert_eq!(
            c.endpoints[1].price.cached_prompt_per_mtok().0.nanos(),
            1_000_000_000
        );
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let bad = r#"
providers:
  - id: alpha
    format: openai
    base_url: not a url
    data_policy: { retains_prompts: true, trains_on_data: false, zero_retention: true }
  - id: alpha
    format: grpc
    base_url: http://x
    data_policy: { retains_prompts: false, trains_on_data: false, zero_retention: false }
  - id: gamma
    format: openai
    base_url: http://x
    key: sk-live-123456
    data_policy: { retains_prompts: false, trains_on_data: false, zero_retention: false }
models:
  - { id: small, context_length: 100, max_output: 200 }
  - { id: small, context_length: 100, max_output: 10 }
  - { id: orphan, context_length: 100, max_output: 10 }
endpoints:
  - { model: small, provider: alpha, upstream_model: s, price: { prompt: -1, completion: 1 } }
  - { model: nope, provider: ghost, upstream_model: "", price: { prompt: 1, completion: 1 } }
  - { model: small, provider: alpha, upstream_model: s, price: { prompt: 1, completion: 1 } }
"#;
        let err = Catalog::from_yaml("catalog.yaml", bad).unwrap_err();
        let found: Vec<String> = err.field_errors().iter().map(|e| e.to_string()).collect();
        let expect = [
            "providers[0].base_url: not a URL",
            "providers[0].data_policy: zero_retention contradicts retains_prompts",
            "providers[1].format: unknown variant `grpc`",
            "providers[2].key: must be `env:NAME`",
            "models[0].max_output: 200 exceeds context_length 100",
            "models[1].id: duplicate model id `small`",
            "models[2]: model `orphan` has no endpoint",
            "endpoints[0].price.prompt: must not be negative",
            "endpoints[1].provider: unknown provider `ghost`",
            "endpoints[1].model: unknown model `nope`",
            "endpoints[1].upstream_model: must not be empty",
            "endpoints[2].id: duplicate endpoint id `small@alpha`",
        ];
        for e in expect {
            assert!(
                found.iter().any(|f| f.starts_with(e)),
                "missing `{e}` in {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
        // The pasted key is never echoed.
        assert!(!err.to_string().contains("sk-live"), "{err}");
    }

    #[test]
    fn errors_after_a_broken_item_keep_the_file_s_indices() {
        let text = r#"
providers:
  - { id: a, format: grpc, base_url: "http://x", data_policy: { retains_prompts: false, trains_on_data: false, zero_retention: false } }
  - { id: b, format: openai, base_url: "not a url", data_policy: { retains_prompts: false, trains_on_data: false, zero_retention: false } }
models:
  - { id: m, context_length: 10, max_output: 5 }
endpoints:
  - { model: m, provider: b, upstream_model: u, price: { prompt: 1, completion: 1 }, quantization: fp3 }
  - { model: m, provider: b, upstream_model: "", price: { prompt: 1, completion: 1 } }
"#;
        let err = Catalog::from_yaml("c.yaml", text).unwrap_err();
        let found: Vec<String> = err.field_errors().iter().map(|e| e.to_string()).collect();
        for expect in [
            "providers[0].format: unknown variant `grpc`",
            "providers[1].base_url: not a URL",
            "endpoints[0].quantization",
            "endpoints[1].upstream_model: must not be empty",
        ] {
            assert!(
                found.iter().any(|f| f.starts_with(expect)),
                "missing `{expect}` in {found:#?}"
            );
        }
    }

    #[test]
    fn unknown_top_level_field_is_rejected() {
        let err = Catalog::from_yaml(
            "c.yaml",
            "providers: []\nmodels: []\nendpoints: []\nextra: 1\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
    }
}
