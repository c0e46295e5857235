//! Provider presets and quirks. A preset is a catalog shorthand: `preset: groq` fills in the
//! format, base URL, key reference and quirks of a well-known provider, each of which the entry
//! may still set itself (a self-hosted vLLM on another host sets `base_url`). What a provider does
//! with prompts is a matter of the operator's contract, so `data_policy` is never filled in.
//!
//! | preset | format | base URL | key | quirks |
//! |---|---|---|---|---|
//! | `openai` | openai | `https://api.openai.com/v1` | `env:OPENAI_API_KEY` | output cap as `max_completion_tokens` |
//! | `anthropic` | anthropic | `https://api.anthropic.com` | `env:ANTHROPIC_API_KEY` | |
//! | `gemini` | gemini | `https://generativelanguage.googleapis.com` | `env:GEMINI_API_KEY` | |
//! | `groq` | openai | `https://api.groq.com/openai/v1` | `env:GROQ_API_KEY` | no logprobs, top_logprobs, logit_bias |
//! | `together` | openai | `https://api.together.xyz/v1` | `env:TOGETHER_API_KEY` | |
//! | `fireworks` | openai | `https://api.fireworks.ai/inference/v1` | `env:FIREWORKS_API_KEY` | |
//! | `mistral` | openai | `https://api.mistral.ai/v1` | `env:MISTRAL_API_KEY` | `seed` sent as `random_seed`; no logprobs, top_logprobs, logit_bias |
//! | `deepseek` | openai | `https://api.deepseek.com/v1` | `env:DEEPSEEK_API_KEY` | no logit_bias |
//! | `xai` | openai | `https://api.x.ai/v1` | `env:XAI_API_KEY` | no logit_bias |
//! | `cerebras` | openai | `https://api.cerebras.ai/v1` | `env:CEREBRAS_API_KEY` | output cap as `max_completion_tokens`; no frequency/presence penalty, logit_bias |
//! | `openrouter` | openai | `https://openrouter.ai/api/v1` | `env:OPENROUTER_API_KEY` | |
//! | `vllm` | openai | `http://localhost:8000/v1` | none | |
//! | `ollama` | openai | `http://localhost:11434/v1` | none | no logit_bias, logprobs, top_logprobs |
//! | `lmstudio` | openai | `http://localhost:1234/v1` | none | no logit_bias |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_norway::{Mapping, Value};
use switchyard_core::Parameter;

use crate::catalog::{Provider, WireFormat};
use crate::error::FieldError;
use crate::validate::Validator;

/// How a provider departs from its wire format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quirks {
    /// The request field the output cap goes in (`max_tokens` or `max_completion_tokens`);
    /// by default the one the client used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens_field: Option<MaxTokensField>,
    /// Request fields sent under another name (`seed: random_seed`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub renames: BTreeMap<String, String>,
    /// Parameters the provider refuses: requests using them are planned elsewhere
    /// (`missing_parameter`) instead of being refused upstream.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unsupported: Vec<Parameter>,
}

impl Quirks {
    /// No quirk at all.
    pub fn is_empty(&self) -> bool {
        self == &Quirks::default()
    }
}

/// Where an OpenAI-format provider wants the output cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxTokensField {
    /// `max_tokens` (most compatible servers).
    MaxTokens,
    /// `max_completion_tokens` (OpenAI's current name; its reasoning models refuse the other).
    MaxCompletionTokens,
}

/// Request fields a rename may name (top-level fields of the chat-completions body).
const RENAMEABLE: [&str; 12] = [
    "seed",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "user",
    "temperature",
    "top_p",
    "top_k",
    "frequency_penalty",
    "presence_penalty",
    "parallel_tool_calls",
    "response_format",
];

/// A preset's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    /// Name used in the catalog.
    pub name: &'static str,
    /// Wire format.
    pub format: WireFormat,
    /// Documented base URL.
    pub base_url: &'static str,
    /// Key reference (`env:…` or `none`).
    pub key: &'static str,
    /// Quirks.
    pub quirks: Quirks,
}

fn quirks(
    max_tokens_field: Option<MaxTokensField>,
    renames: &[(&str, &str)],
    unsupported: &[Parameter],
) -> Quirks {
    Quirks {
        max_tokens_field,
        renames: renames
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        unsupported: unsupported.to_vec(),
    }
}

/// Every preset, in the order of the table above.
pub fn presets() -> Vec<Preset> {
    use Parameter as P;
    use WireFormat::{Anthropic, Gemini, Openai};
    let p = |name, format, base_url, key, quirks| Preset {
        name,
        format,
        base_url,
        key,
        quirks,
    };
    let none = Quirks::default;
    let completion = Some(MaxTokensField::MaxCompletionTokens);
    vec![
        p(
            "openai",
            Openai,
            "https://api.openai.com/v1",
            "env:OPENAI_API_KEY",
            quirks(completion, &[], &[]),
        ),
        p(
            "anthropic",
            Anthropic,
            "https://api.anthropic.com",
            "env:ANTHROPIC_API_KEY",
            none(),
        ),
        p(
            "gemini",
            Gemini,
            "https://generativelanguage.googleapis.com",
            "env:GEMINI_API_KEY",
            none(),
        ),
        p(
            "groq",
            Openai,
            "https://api.groq.com/openai/v1",
            "env:GROQ_API_KEY",
            quirks(None, &[], &[P::Logprobs, P::TopLogprobs, P::LogitBias]),
        ),
        p(
            "together",
            Openai,
            "https://api.together.xyz/v1",
            "env:TOGETHER_API_KEY",
            none(),
        ),
        p(
            "fireworks",
            Openai,
            "https://api.fireworks.ai/inference/v1",
            "env:FIREWORKS_API_KEY",
            none(),
        ),
        p(
            "mistral",
            Openai,
            "https://api.mistral.ai/v1",
            "env:MISTRAL_API_KEY",
            quirks(
                None,
                &[("seed", "random_seed")],
                &[P::Logprobs, P::TopLogprobs, P::LogitBias],
            ),
        ),
        p(
            "deepseek",
            Openai,
            "https://api.deepseek.com/v1",
            "env:DEEPSEEK_API_KEY",
            quirks(None, &[], &[P::LogitBias]),
        ),
        p(
            "xai",
            Openai,
            "https://api.x.ai/v1",
            "env:XAI_API_KEY",
            quirks(None, &[], &[P::LogitBias]),
        ),
        p(
            "cerebras",
            Openai,
            "https://api.cerebras.ai/v1",
            "env:CEREBRAS_API_KEY",
            quirks(
                completion,
                &[],
                &[P::FrequencyPenalty, P::PresencePenalty, P::LogitBias],
            ),
        ),
        p(
            "openrouter",
            Openai,
            "https://openrouter.ai/api/v1",
            "env:OPENROUTER_API_KEY",
            none(),
        ),
        p("vllm", Openai, "http://localhost:8000/v1", "none", none()),
        p(
            "ollama",
            Openai,
            "http://localhost:11434/v1",
            "none",
            quirks(None, &[], &[P::LogitBias, P::Logprobs, P::TopLogprobs]),
        ),
        p(
            "lmstudio",
            Openai,
            "http://localhost:1234/v1",
            "none",
            quirks(None, &[], &[P::LogitBias]),
        ),
    ]
}

/// The preset called `name`.
pub fn preset(name: &str) -> Option<Preset> {
    presets().into_iter().find(|p| p.name == name)
}

/// The names of every preset.
pub fn preset_names() -> Vec<&'static str> {
    presets().into_iter().map(|p| p.name).collect()
}

/// Fills each provider entry that names a preset with the preset's defaults for the fields it
/// does not set. An unknown preset is reported at its path.
pub(crate) fn expand(values: Vec<Value>, errors: &mut Vec<FieldError>) -> Vec<Value> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let Value::Mapping(mut map) = v else {
                return v;
            };
            let Some(name) = map.get("preset").map(|p| p.as_str().map(str::to_string)) else {
                return Value::Mapping(map);
            };
            let Some(preset) = name.as_deref().and_then(preset) else {
                errors.push(FieldError {
                    path: format!("providers[{i}].preset"),
                    message: format!(
                        "unknown preset {}; known: {}",
                        name.map_or("(not a string)".to_string(), |n| format!("`{n}`")),
                        preset_names().join(", ")
                    ),
                });
                return Value::Mapping(map);
            };
            fill(&mut map, &preset);
            Value::Mapping(map)
        })
        .collect()
}

fn fill(map: &mut Mapping, preset: &Preset) {
    let mut set = |key: &str, value: Value| {
        if !map.contains_key(key) {
            map.insert(Value::from(key), value);
        }
    };
    let format = match serde_norway::to_value(preset.format) {
        Ok(v) => v,
        Err(_) => return,
    };
    set("format", format);
    set("base_url", Value::from(preset.base_url));
    set("key", Value::from(preset.key));
    if !preset.quirks.is_empty()
        && let Ok(q) = serde_norway::to_value(&preset.quirks)
    {
        set("quirks", q);
    }
}

/// The checks of one provider's format-specific fields.
pub(crate) fn validate_provider(p: &Provider, v: &mut Validator) {
    use WireFormat as F;
    let only = |v: &mut Validator, set: bool, key: &str, formats: &str| {
        v.check(!set, key, format!("only applies to format {formats}"));
    };
    let vertex = matches!(p.format, F::Vertex | F::VertexAnthropic);
    only(
        v,
        p.api_version.is_some() && p.format != F::Azure,
        "api_version",
        "azure",
    );
    for (key, set) in [("project", &p.project), ("location", &p.location)] {
        match set {
            Some(s) if vertex => v.check(!s.trim().is_empty(), key, "must not be empty"),
            Some(_) => only(v, true, key, "vertex or vertex_anthropic"),
            None if vertex => v.error_at(key, "is required for Vertex AI"),
            None => {}
        }
    }
    if p.format == F::Bedrock {
        v.check(
            p.signing_region().is_some(),
            "aws_region",
            "is required unless base_url is https://bedrock-runtime.REGION.amazonaws.com",
        );
    } else {
        only(v, p.aws_region.is_some(), "aws_region", "bedrock");
        only(v, p.aws_profile.is_some(), "aws_profile", "bedrock");
    }
    let openai_like = matches!(p.format, F::Openai | F::Azure);
    v.field("quirks", |v| {
        if !openai_like {
            only(
                v,
                p.quirks.max_tokens_field.is_some(),
                "max_tokens_field",
                "openai or azure",
            );
            only(
                v,
                !p.quirks.renames.is_empty(),
                "renames",
                "openai or azure",
            );
        }
        for (from, to) in &p.quirks.renames {
            if !RENAMEABLE.contains(&from.as_str()) {
                v.error_at(
                    "renames",
                    format!(
                        "`{from}` is not a request field that can be renamed ({})",
                        RENAMEABLE.join(", ")
                    ),
                );
            }
            let valid = !to.is_empty()
                && to
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            v.check(
                valid,
                "renames",
                format!("`{to}` must be a field name of a-z, 0-9 and _"),
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Catalog;

    fn catalog(providers: &str) -> Result<Catalog, crate::ConfigError> {
        Catalog::from_yaml(
            "c.yaml",
            &format!(
                "providers:\n{providers}\nmodels:\n  - {{ id: m, context_length: 1000, max_output: 100 }}\nendpoints:\n  - {{ model: m, provider: p, upstream_model: u, price: {{ prompt: 1, completion: 1 }} }}\n"
            ),
        )
    }

    const OPEN: &str = "{ retains_prompts: false, trains_on_data: false, zero_retention: false }";

    #[test]
    fn a_preset_fills_what_the_entry_leaves_out() {
        let c = catalog(&format!(
            "  - {{ id: p, preset: mistral, data_policy: {OPEN} }}"
        ))
        .unwrap();
        let p = c.provider("p").unwrap();
        assert_eq!(p.format, WireFormat::Openai);
        assert_eq!(p.base_url, "https://api.mistral.ai/v1");
        assert_eq!(p.key, crate::catalog::KeyRef::Env("MISTRAL_API_KEY".into()));
        assert_eq!(p.quirks.renames["seed"], "random_seed");
        assert!(!p.carries(Parameter::LogitBias));
        assert!(p.carries(Parameter::Seed));

        let own = catalog(&format!(
            "  - {{ id: p, preset: vllm, base_url: 'http://gpu-7:8000/v1', data_policy: {OPEN} }}"
        ))
        .unwrap();
        assert_eq!(own.provider("p").unwrap().base_url, "http://gpu-7:8000/v1");
    }

    #[test]
    fn every_preset_expands_to_a_valid_provider() {
        for preset in presets() {
            let c = catalog(&format!(
                "  - {{ id: p, preset: {}, data_policy: {OPEN} }}",
                preset.name
            ));
            assert!(c.is_ok(), "{}: {c:?}", preset.name);
        }
    }

    #[test]
    fn format_fields_are_checked_with_their_paths() {
        let err = catalog(&format!(
            "  - {{ id: v, format: vertex, base_url: 'https://us-central1-aiplatform.googleapis.com', data_policy: {OPEN}, api_version: x }}\n  - {{ id: b, format: bedrock, base_url: 'http://127.0.0.1:1', data_policy: {OPEN}, quirks: {{ renames: {{ nonsense: x }} }} }}\n  - {{ id: p, preset: grok, data_policy: {OPEN} }}"
        ))
        .unwrap_err();
        let text = err.to_string();
        for expect in [
            "providers[0].api_version: only applies to format azure",
            "providers[0].project: is required for Vertex AI",
            "providers[0].location: is required for Vertex AI",
            "providers[1].aws_region: is required",
            "providers[1].quirks.renames: only applies",
            "providers[1].quirks.renames: `nonsense` is not a request field",
            "providers[2].preset: unknown preset `grok`",
        ] {
            assert!(text.contains(expect), "missing `{expect}` in {text}");
        }
    }

    #[test]
    fn embedding_models_need_a_format_that_embeds() {
        let err = Catalog::from_yaml(
            "c.yaml",
            &format!(
                "providers:\n  - {{ id: b, format: bedrock, base_url: 'https://bedrock-runtime.us-east-1.amazonaws.com', data_policy: {OPEN} }}\nmodels:\n  - {{ id: e, kind: embedding, context_length: 100 }}\nendpoints:\n  - {{ model: e, provider: b, upstream_model: u, price: {{ prompt: 1, completion: 0 }} }}\n"
            ),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("endpoints[0].provider: `b` speaks a format without an embeddings API"),
            "{err}"
        );
    }

    #[test]
    fn bedrock_reads_its_region_off_the_base_url() {
        let c = catalog(&format!(
            "  - {{ id: p, format: bedrock, base_url: 'https://bedrock-runtime.eu-west-1.amazonaws.com', data_policy: {OPEN} }}"
        ))
        .unwrap();
        assert_eq!(
            c.provider("p").unwrap().signing_region().as_deref(),
            Some("eu-west-1")
        );
    }
}
