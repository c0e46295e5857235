//! The normalized domain every Switchyard crate speaks: chat requests and responses (in the OpenAI
//! chat-completions shape, which is the lingua franca of the providers and SDKs), stream chunks,
//! usage, money in integer nano-USD, ids, and the closed [`ErrorClass`] with its one mapping to
//! HTTP and gRPC.
//!
//! This crate does no I/O and holds no policy: it defines values and their invariants only.

pub mod chat;
pub mod clock;
pub mod embedding;
pub mod error;
pub mod health;
pub mod ids;
pub mod money;
pub mod outcome;
pub mod params;
pub mod response;
pub mod tokens;
mod wire_de;

pub use chat::{
    ChatRequest, Content, ContentPart, DataCollection, ImageUrl, JsonSchemaSpec, MaxPrice, Message,
    ProviderPreferences, Quantization, Reasoning, ReasoningEffort, ResponseFormat, Role, Sort,
    StreamOptions, Tool, ToolCall, ToolChoice,
};
pub use embedding::{
    EmbeddingInput, EmbeddingRequest, EmbeddingResponse, EncodingFormat, ModelKind,
};
pub use error::{Error, ErrorClass, Fallback};
pub use health::{EndpointHealth, EndpointState, HealthSnapshot};
/// A hash map for the per-request lookups of ids the catalog names (endpoints, providers,
/// models): foldhash, seeded per process, cheaper than the standard SipHash on short keys.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub use ids::{ApiKeyId, EndpointId, ModelId, OrgId, ProviderId, RequestId, WorkflowId};
pub use money::{Money, MoneyParseError, PricePerMtok};
pub use outcome::AttemptOutcome;
pub use params::Parameter;
pub use response::{
    ChatChunk, ChatResponse, Choice, ChunkChoice, Delta, FinishReason, ToolCallDelta, Usage,
};
