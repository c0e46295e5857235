//! Where and how to call: one endpoint of the catalog, with the key to use and the limits.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use switchyard_config::catalog::{Capacity, Catalog, Endpoint, Provider, Quirks, WireFormat};
use switchyard_core::{EndpointId, ProviderId};
use tokio_util::sync::CancellationToken;

/// One upstream endpoint, resolved from the catalog.
#[derive(Debug, Clone)]
pub struct Target {
    /// Catalog endpoint id.
    pub endpoint: EndpointId,
    /// Catalog provider id.
    pub provider: ProviderId,
    /// Wire format.
    pub format: WireFormat,
    /// Base URL without a trailing slash.
    pub base_url: String,
    /// The model name the upstream expects.
    pub upstream_model: String,
    /// The key: shared or the org's own (BYOK). `Debug` prints `[REDACTED]`.
    pub key: Option<SecretString>,
    /// Output cap used when the request sets none (Anthropic requires one).
    pub max_output: u32,
    /// What the format needs beyond the base URL (Azure's API version, Vertex's project and
    /// location, Bedrock's signing region) and the provider's quirks.
    pub options: Arc<ProviderOptions>,
    /// Whose key this is, for capacity tracking: `None` for the shared key, the org for its own
    /// (a BYOK key has its own rate limits).
    pub owner: Option<Arc<str>>,
    /// The capacity the key is granted on this endpoint, when declared.
    pub capacity: Option<Capacity>,
}

/// A provider's format-specific settings, from its catalog entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderOptions {
    /// Azure: `api-version` of deployment URLs; `None` uses the v1 path.
    pub api_version: Option<String>,
    /// Vertex: project.
    pub project: Option<String>,
    /// Vertex: location.
    pub location: Option<String>,
    /// Bedrock: signing region.
    pub aws_region: Option<String>,
    /// Bedrock: the shared-credentials profile when the environment has no credentials.
    pub aws_profile: Option<String>,
    /// How the provider departs from its format.
    pub quirks: Quirks,
}

impl ProviderOptions {
    /// The options of a catalog provider.
    pub fn of(p: &Provider) -> Self {
        ProviderOptions {
            api_version: p.api_version.clone(),
            project: p.project.clone(),
            location: p.location.clone(),
            aws_region: p.signing_region(),
            aws_profile: p.aws_profile.clone(),
            quirks: p.quirks.clone(),
        }
    }
}

impl Target {
    /// The target for `endpoint` of `catalog`, with `key`. `None` if the endpoint's provider or
    /// model is missing (a validated catalog always has them).
    pub fn from_catalog(
        catalog: &Catalog,
        endpoint: &Endpoint,
        key: Option<SecretString>,
    ) -> Option<Target> {
        let provider = catalog.provider(endpoint.provider.as_str())?;
        let model = catalog.model(endpoint.model.as_str())?;
        Some(Target {
            endpoint: endpoint.id(),
            provider: provider.id.clone(),
            format: provider.format,
            base_url: provider.base_url.trim_end_matches('/').to_string(),
            upstream_model: endpoint.upstream_model.clone(),
            key,
            max_output: endpoint.max_output.unwrap_or(model.max_output),
            options: Arc::new(ProviderOptions::of(provider)),
            owner: None,
            capacity: endpoint.capacity,
        })
    }
}

/// Per-attempt time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP and TLS connection set-up (only when no pooled connection is free).
    pub connect: Duration,
    /// Until the response head. Most upstreams send nothing for a non-streamed completion until
    /// it is finished, so for those this bounds the whole generation.
    pub first_byte: Duration,
    /// A stream: from the request until its first content (text, reasoning, a tool call or the
    /// finish), not merely its first byte or a role-only chunk.
    pub first_token: Duration,
    /// A stream after its first content: the longest wait for the next chunk (keep-alive
    /// comments and pings do not count); a longer silence is a stall.
    pub idle: Duration,
    /// The whole attempt, body or stream included.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            first_token: Duration::from_secs(60),
            idle: Duration::from_secs(30),
            total: Duration::from_secs(300),
        }
    }
}

/// What a stream does with an event it cannot understand among ones it can.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MalformedEvents {
    /// Skip it and count it ([`crate::ChunkStream::skipped`]); the stream goes on.
    #[default]
    Skip,
    /// End the attempt with a malformed-response error.
    Fail,
}

/// One attempt: what to send where, within which limits, until when the caller still wants it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The endpoint.
    pub target: &'a Target,
    /// The normalized request (its `model`/`models`/`provider`/`workflow` routing fields are
    /// not sent upstream).
    pub request: &'a switchyard_core::ChatRequest,
    /// Time limits.
    pub timeouts: Timeouts,
    /// A stream's events that cannot be understood: skipped or fatal.
    pub malformed: MalformedEvents,
    /// Fires when the caller gives up (client disconnect, overall deadline).
    pub cancel: &'a CancellationToken,
}

/// One embeddings attempt.
#[derive(Debug, Clone, Copy)]
pub struct EmbedCall<'a> {
    /// The endpoint.
    pub target: &'a Target,
    /// The request (its routing fields are not sent upstream).
    pub request: &'a switchyard_core::EmbeddingRequest,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Fires when the caller gives up.
    pub cancel: &'a CancellationToken,
}

/// Reads the key a catalog provider refers to (`env:NAME`, `file:/path`, `none`). The error
/// names the reference, never a value.
pub fn resolve_key(
    key: &switchyard_config::catalog::KeyRef,
) -> Result<Option<SecretString>, String> {
    use switchyard_config::catalog::KeyRef;
    match key {
        KeyRef::None => Ok(None),
        KeyRef::Env(var) => std::env::var(var)
            .map(|k| Some(SecretString::from(k.trim().to_string())))
            .map_err(|_| format!("environment variable {var} is not set")),
        KeyRef::File(path) => std::fs::read_to_string(path)
            .map(|k| Some(SecretString::from(k.trim().to_string())))
            .map_err(|e| format!("cannot read key file {path}: {}", e.kind())),
    }
}
