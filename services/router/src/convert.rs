//! Proto ↔ normalized conversions for the gRPC API. JSON-valued fields (schemas, tool
//! arguments) travel as JSON text and are parsed here, with a clear error when they are not JSON.

use serde_json::Value;
use switchyard_core::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, DataCollection, Error,
    FinishReason, ImageUrl, JsonSchemaSpec, MaxPrice, Message, Money, ProviderPreferences,
    Quantization, ResponseFormat, Role, Sort, Tool, ToolCall, ToolChoice, Usage,
};
use switchyard_proto::v1 as pb;

use crate::engine::AttemptTrace;

fn json_text(what: &str, text: &str) -> Result<Value, Error> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(text).map_err(|e| Error::invalid(format!("{what} is not valid JSON: {e}")))
}

fn role(r: i32) -> Result<Role, Error> {
    Ok(match pb::Role::try_from(r) {
        Ok(pb::Role::System) => Role::System,
        Ok(pb::Role::Developer) => Role::Developer,
        Ok(pb::Role::User) => Role::User,
        Ok(pb::Role::Assistant) => Role::Assistant,
        Ok(pb::Role::Tool) => Role::Tool,
        _ => return Err(Error::invalid("every message needs a role")),
    })
}

fn role_out(r: Role) -> i32 {
    (match r {
        Role::System => pb::Role::System,
        Role::Developer => pb::Role::Developer,
        Role::User => pb::Role::User,
        Role::Assistant => pb::Role::Assistant,
        Role::Tool => pb::Role::Tool,
    }) as i32
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A gRPC request as the normalized request.
pub fn request(p: pb::ChatRequest) -> Result<ChatRequest, Error> {
    let messages = p
        .messages
        .into_iter()
        .map(|m| {
            let parts: Vec<ContentPart> = m
                .content
                .into_iter()
                .filter_map(|c| match c.part {
                    Some(pb::content_part::Part::Text(text)) => Some(ContentPart::Text {
                        text,
                        cache_control: None,
                    }),
                    Some(pb::content_part::Part::ImageUrl(i)) => Some(ContentPart::ImageUrl {
                        image_url: ImageUrl {
                            url: i.url,
                            detail: opt(i.detail),
                        },
                    }),
                    None => None,
                })
                .collect();
            let content = match parts.as_slice() {
                [] => None,
                [
                    ContentPart::Text {
                        text,
                        cache_control: None,
                    },
                ] => Some(Content::Text(text.clone())),
                _ => Some(Content::Parts(parts)),
            };
            Ok(Message {
                role: role(m.role)?,
                content,
                name: opt(m.name),
                tool_calls: m
                    .tool_calls
                    .into_iter()
                    .map(|c| ToolCall {
                        id: c.id,
                        name: c.name,
                        arguments: c.arguments,
                    })
                    .collect(),
                tool_call_id: opt(m.tool_call_id),
                refusal: None,
                reasoning: None,
                reasoning_signature: None,
                extra: serde_json::Map::new(),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let tools = p
        .tools
        .into_iter()
        .map(|t| {
            Ok(Tool {
                parameters: json_text(
                    &format!("tool `{}` parameters_json", t.name),
                    &t.parameters_json,
                )?,
                name: t.name,
                description: opt(t.description),
                strict: t.strict.then_some(true),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let tool_choice = match p.tool_choice.and_then(|c| c.choice) {
        Some(pb::tool_choice::Choice::Function(name)) => Some(ToolChoice::Function(name)),
        Some(pb::tool_choice::Choice::Mode(m)) => match pb::ToolChoiceMode::try_from(m) {
            Ok(pb::ToolChoiceMode::None) => Some(ToolChoice::None),
            Ok(pb::ToolChoiceMode::Auto) => Some(ToolChoice::Auto),
            Ok(pb::ToolChoiceMode::Required) => Some(ToolChoice::Required),
            _ => None,
        },
        None => None,
    };
    let response_format = match p.response_format.and_then(|f| f.format) {
        Some(pb::response_format::Format::Text(_)) => Some(ResponseFormat::Text),
        Some(pb::response_format::Format::JsonObject(_)) => Some(ResponseFormat::JsonObject),
        Some(pb::response_format::Format::JsonSchema(s)) => Some(ResponseFormat::JsonSchema {
            json_schema: JsonSchemaSpec {
                schema: json_text("response_format.json_schema.schema_json", &s.schema_json)?,
                name: s.name,
                description: None,
                strict: s.strict.then_some(true),
            },
        }),
        None => None,
    };
    let provider = p.provider.map(preferences).transpose()?;
    Ok(ChatRequest {
        model: p.model,
        models: p.models,
        messages,
        tools,
        tool_choice,
        response_format,
        max_tokens: p.max_tokens,
        temperature: p.temperature,
        top_p: p.top_p,
        stop: p.stop,
        seed: p.seed,
        user: opt(p.user),
        provider,
        workflow: opt(p.workflow),
        ..Default::default()
    })
}

/// A gRPC embeddings request in the normalized form.
pub fn embed_request(p: pb::EmbedRequest) -> Result<switchyard_core::EmbeddingRequest, Error> {
    Ok(switchyard_core::EmbeddingRequest {
        model: p.model,
        models: p.models,
        input: switchyard_core::EmbeddingInput::Texts(p.input),
        dimensions: p.dimensions,
        encoding_format: None,
        user: opt(p.user),
        provider: p.provider.map(preferences).transpose()?,
        workflow: opt(p.workflow),
    })
}

/// An embeddings reply as gRPC sends it.
pub fn embed_response(
    r: &switchyard_core::EmbeddingResponse,
    trace: pb::RoutingTrace,
) -> pb::EmbedResponse {
    pb::EmbedResponse {
        model: r.model.clone(),
        provider: r.provider.clone().unwrap_or_default(),
        data: r
            .data
            .iter()
            .map(|v| pb::Embedding { values: v.clone() })
            .collect(),
        usage: Some(usage(&r.usage)),
        trace: Some(trace),
    }
}

fn preferences(p: pb::ProviderPreferences) -> Result<ProviderPreferences, Error> {
    let quantizations = p
        .quantizations
        .iter()
        .map(|q| {
            serde_json::from_value::<Quantization>(Value::String(q.clone()))
                .map_err(|_| Error::invalid(format!("unknown quantization `{q}`")))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let money = |n: Option<i64>| n.map(Money::from_nanos);
    Ok(ProviderPreferences {
        order: p.order,
        only: p.only,
        ignore: p.ignore,
        allow_fallbacks: p.allow_fallbacks,
        require_parameters: p.require_parameters.then_some(true),
        data_collection: match pb::DataCollection::try_from(p.data_collection) {
            Ok(pb::DataCollection::Deny) => Some(DataCollection::Deny),
            Ok(pb::DataCollection::Allow) => Some(DataCollection::Allow),
            _ => None,
        },
        zdr: p.zdr.then_some(true),
        sort: match pb::Sort::try_from(p.sort) {
            Ok(pb::Sort::Price) => Some(Sort::Price),
            Ok(pb::Sort::Latency) => Some(Sort::Latency),
            Ok(pb::Sort::Throughput) => Some(Sort::Throughput),
            _ => None,
        },
        max_price: p.max_price.map(|m| MaxPrice {
            prompt: money(m.prompt_per_mtok_nano_usd),
            completion: money(m.completion_per_mtok_nano_usd),
            request: money(m.request_nano_usd),
        }),
        quantizations,
    })
}

fn finish(f: Option<FinishReason>) -> i32 {
    (match f {
        Some(FinishReason::Stop) => pb::FinishReason::Stop,
        Some(FinishReason::Length) => pb::FinishReason::Length,
        Some(FinishReason::ToolCalls) => pb::FinishReason::ToolCalls,
        Some(FinishReason::ContentFilter) => pb::FinishReason::ContentFilter,
        None => pb::FinishReason::Unspecified,
    }) as i32
}

fn message_out(m: &Message) -> pb::Message {
    let text = m.text_content();
    pb::Message {
        role: role_out(m.role),
        content: if text.is_empty() {
            Vec::new()
        } else {
            vec![pb::ContentPart {
                part: Some(pb::content_part::Part::Text(text)),
            }]
        },
        name: m.name.clone().unwrap_or_default(),
        tool_calls: m
            .tool_calls
            .iter()
            .map(|c| pb::ToolCall {
                id: c.id.clone(),
                name: c.name.clone(),
                arguments: c.arguments.clone(),
            })
            .collect(),
        tool_call_id: m.tool_call_id.clone().unwrap_or_default(),
    }
}

/// Usage on the wire.
pub fn usage(u: &Usage) -> pb::Usage {
    pb::Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        cached_prompt_tokens: u.cached_prompt_tokens,
        cost_nano_usd: u.cost.map(Money::nanos).unwrap_or(0),
    }
}

/// Which key a candidate uses, as a label.
pub fn key_source(k: switchyard_routing::KeySource) -> String {
    match k {
        switchyard_routing::KeySource::Byok => "byok".to_string(),
        switchyard_routing::KeySource::Shared => "shared".to_string(),
    }
}

/// A candidate left out of the plan, on the wire.
pub fn excluded(e: &switchyard_routing::Exclusion) -> pb::ExcludedEndpoint {
    pb::ExcludedEndpoint {
        endpoint: e.endpoint.to_string(),
        provider: e.provider.to_string(),
        model: e.model.to_string(),
        key: key_source(e.key),
        reason: e.reason.as_str().to_string(),
        detail: e.reason.to_string(),
    }
}

/// The routing trace on the wire.
pub fn trace(attempts: &[AttemptTrace], a: &crate::admission::Admitted) -> pb::RoutingTrace {
    pb::RoutingTrace {
        attempts: attempts
            .iter()
            .map(|t| pb::Attempt {
                endpoint: t.endpoint.to_string(),
                provider: t.provider.to_string(),
                model: t.model.to_string(),
                outcome: t.outcome.to_string(),
                latency_ms: t.latency_ms as u32,
                retry: t.retry,
            })
            .collect(),
        policy_version: a.policy_version,
        health_version: a.health_version,
        seed: a.seed,
        validation: crate::engine::served_validity(attempts).map(validation),
        plan: a
            .plan
            .iter()
            .map(|p| p.attempt.endpoint.to_string())
            .collect(),
        excluded: a.excluded.iter().map(excluded).collect(),
        catalog_version: a.catalog.version.clone(),
    }
}

/// A response on the wire.
pub fn response(r: &ChatResponse, trace: pb::RoutingTrace) -> pb::ChatResponse {
    pb::ChatResponse {
        id: r.id.clone(),
        model: r.model.clone(),
        provider: r.provider.clone().unwrap_or_default(),
        created_unix: r.created,
        choices: r
            .choices
            .iter()
            .map(|c| pb::Choice {
                index: c.index,
                message: Some(message_out(&c.message)),
                finish_reason: finish(c.finish_reason),
            })
            .collect(),
        usage: r.usage.as_ref().map(usage),
        trace: Some(trace),
    }
}

/// A stream chunk on the wire (first choice).
pub fn chunk(c: &ChatChunk) -> Option<pb::ChatStreamEvent> {
    let choice = c.choices.first()?;
    Some(pb::ChatStreamEvent {
        event: Some(pb::chat_stream_event::Event::Chunk(pb::ChatChunk {
            id: c.id.clone(),
            model: c.model.clone(),
            provider: c.provider.clone().unwrap_or_default(),
            index: choice.index,
            role: choice.delta.role.map(role_out).unwrap_or(0),
            content: choice.delta.content.clone().unwrap_or_default(),
            tool_calls: choice
                .delta
                .tool_calls
                .iter()
                .map(|t| pb::ToolCallDelta {
                    index: t.index,
                    id: t.id.clone().unwrap_or_default(),
                    name: t.function.name.clone().unwrap_or_default(),
                    arguments: t.function.arguments.clone().unwrap_or_default(),
                })
                .collect(),
            finish_reason: finish(choice.finish_reason),
        })),
    })
}

/// What validation found, on the wire.
pub fn validation(v: &crate::validate::Validity) -> pb::Validation {
    pb::Validation {
        tool_calls: v.tool_calls,
        structured_output: v.structured_output,
        valid: v.valid,
        problems: v.problems.clone(),
    }
}
