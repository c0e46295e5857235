//! Google's Gemini API as documented, and Gemini on Vertex AI: the model and the action in the
//! path (`models/{m}:generateContent`, `:streamGenerateContent?alt=sse`), `x-goog-api-key`
//! (Vertex: a bearer token from the token endpoint), `contents` / `systemInstruction` / `tools`
//! / `toolConfig` / `generationConfig`, replies with `candidates` and `usageMetadata`, streams of
//! such replies as SSE with no terminal event (the last carries `finishReason`), refusals as
//! `finishReason: SAFETY`, and the `{"error": {"code", "message", "status", "details"}}`
//! envelope (`RESOURCE_EXHAUSTED` with a `RetryInfo` delay).

use axum::body::Body;
use axum::http::{HeaderMap, Response, StatusCode};
use serde_json::{Value, json};
use switchyard_core::tokens::{PER_MESSAGE_OVERHEAD, estimate_text};

use crate::config::SimProvider;
use crate::dialect::{Dialect, Route, key_matches, model_action};
use crate::generate::{Finish, Parsed, REASONING, Reply};
use crate::tokens::PromptTokenizer;
use crate::wire::{Ctx, Event, Failure, json_response, retry_after_for, sse, with_retry_after};

/// The Gemini dialect.
#[derive(Debug)]
pub struct Gemini {
    /// On Vertex AI.
    pub vertex: bool,
}

fn text_of(parts: &Value) -> String {
    parts
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            if let Some(t) = p["text"].as_str() {
                t.to_string()
            } else if let Some(c) = p.get("functionCall") {
                c["args"].to_string()
            } else if let Some(r) = p.get("functionResponse") {
                r["response"].to_string()
            } else {
                String::new()
            }
        })
        .collect()
}

/// Parses a `generateContent` body.
pub fn parse(route: &Route, body: &[u8], tokenizer: PromptTokenizer) -> Result<Parsed, Failure> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Failure::BadRequest(format!("Invalid JSON payload received. {e}")))?;
    let Some(contents) = v["contents"].as_array().filter(|c| !c.is_empty()) else {
        return Err(Failure::BadRequest(
            "* GenerateContentRequest.contents: contents is not specified".into(),
        ));
    };
    for (i, c) in contents.iter().enumerate() {
        if !matches!(c["role"].as_str(), Some("user" | "model") | None) {
            return Err(Failure::BadRequest(format!(
                "* GenerateContentRequest.contents[{i}].role: must be user or model"
            )));
        }
    }
    if route.stream == Some(true) && !route.query.split('&').any(|p| p == "alt=sse") {
        return Err(Failure::BadRequest(
            "the simulator streams only as SSE: add alt=sse".into(),
        ));
    }
    let mut texts: Vec<String> = vec![text_of(&v["systemInstruction"]["parts"])];
    texts.extend(contents.iter().map(|c| text_of(&c["parts"])));
    let declarations: Vec<&Value> = v["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["functionDeclarations"].as_array().into_iter().flatten())
        .collect();
    let tools_text: String = declarations
        .iter()
        .map(|d| format!("{}{}", d["name"].as_str().unwrap_or(""), d["parameters"]))
        .collect();
    let prompt_tokens = match tokenizer {
        PromptTokenizer::Estimate => {
            let mut n = 3 + PER_MESSAGE_OVERHEAD * contents.len() as u32;
            for t in &texts {
                n = n.saturating_add(estimate_text(t));
            }
            n.saturating_add(estimate_text(&tools_text))
        }
        PromptTokenizer::O200k => {
            crate::tokens::chat_framed(texts.iter().map(|t| ("user", None, t.clone())), &tools_text)
        }
    };
    let calling = &v["toolConfig"]["functionCallingConfig"];
    let allowed = calling["allowedFunctionNames"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_str);
    let tool = match calling["mode"].as_str() {
        Some("NONE") => None,
        _ => match allowed {
            Some(name) => declarations.iter().find(|d| d["name"] == name).copied(),
            None => declarations.first().copied(),
        },
    }
    .map(|d| {
        (
            d["name"].as_str().unwrap_or("").to_string(),
            d["parameters"].clone(),
        )
    });
    let config = &v["generationConfig"];
    let json = (config["responseMimeType"] == "application/json")
        .then(|| config.get("responseSchema").cloned().unwrap_or(Value::Null));
    let thinking = &config["thinkingConfig"];
    Ok(Parsed {
        model: route.model.clone().unwrap_or_default(),
        stream: route.stream.unwrap_or(false),
        include_usage: true,
        max_tokens: config["maxOutputTokens"].as_u64().map(|n| n as u32),
        prompt_text: texts.join("\n"),
        prompt_tokens,
        tools: declarations.len(),
        tool,
        json,
        prefill: None,
        reasoning: thinking.is_object()
            && thinking["thinkingBudget"].as_u64() != Some(0)
            && thinking["includeThoughts"] != false,
    })
}

fn envelope(code: u16, status: &str, message: &str, details: Value) -> Value {
    json!({"error": {"code": code, "message": message, "status": status, "details": details}})
}

fn finish_reason(reply: &Reply) -> &'static str {
    match reply {
        Reply::Text {
            finish: Finish::Length,
            ..
        } => "MAX_TOKENS",
        Reply::Refusal => "SAFETY",
        _ => "STOP",
    }
}

fn parts(ctx: &Ctx<'_>, reply: &Reply) -> Vec<Value> {
    let mut parts = Vec::new();
    if ctx.parsed.reasoning {
        parts.push(json!({"text": REASONING, "thought": true}));
    }
    match reply {
        Reply::Text { pieces, .. } => parts.push(json!({"text": pieces.concat()})),
        Reply::Tool { name, input, .. } => {
            parts.push(json!({"functionCall": {"name": name, "args": input}}))
        }
        Reply::Refusal => {}
    }
    parts
}

fn usage(ctx: &Ctx<'_>, reply: &Reply) -> Value {
    let candidates = reply.completion_tokens();
    let thoughts = ctx.parsed.reasoning_tokens();
    let mut u = json!({
        "promptTokenCount": ctx.parsed.prompt_tokens,
        "candidatesTokenCount": candidates,
        "totalTokenCount": ctx.parsed.prompt_tokens + candidates + thoughts,
    });
    if thoughts > 0 {
        u["thoughtsTokenCount"] = json!(thoughts);
    }
    u
}

fn safety() -> Value {
    json!([{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}])
}

impl Dialect for Gemini {
    fn route(&self, path: &str, query: &str) -> Route {
        let mut route = Route {
            query: query.to_string(),
            ..Route::default()
        };
        if let Some((model, action)) = model_action(path) {
            route.stream = Some(action == "streamGenerateContent");
            route.model = Some(model);
        }
        route
    }

    fn authenticate(
        &self,
        provider: &SimProvider,
        headers: &HeaderMap,
        route: &Route,
        tokens: &crate::cloud::IssuedTokens,
    ) -> (Option<String>, bool) {
        if self.vertex {
            let token = crate::cloud::bearer(headers);
            let ok =
                provider.api_key.is_none() || token.as_deref().is_some_and(|t| tokens.valid(t));
            return (token, ok);
        }
        let key = headers
            .get("x-goog-api-key")
            .and_then(|v| v.to_str().ok())
            .map(|k| k.trim().to_string())
            .or_else(|| {
                route
                    .query
                    .split('&')
                    .find_map(|p| p.strip_prefix("key="))
                    .map(str::to_string)
            });
        let ok = key_matches(provider, key.as_deref());
        (key, ok)
    }

    fn parse(
        &self,
        route: &Route,
        _headers: &HeaderMap,
        body: &[u8],
        tokenizer: PromptTokenizer,
    ) -> Result<Parsed, Failure> {
        parse(route, body, tokenizer)
    }

    fn error(&self, failure: &Failure, retry_after_s: Option<u32>) -> Response<Body> {
        let retry = retry_after_for(failure, retry_after_s);
        let (code, status, message, details) = match failure {
            Failure::BadRequest(msg) => (400, "INVALID_ARGUMENT", msg.clone(), json!([])),
            Failure::Unauthorized | Failure::Injected(401) if self.vertex => (
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token.".into(),
                json!([]),
            ),
            Failure::Unauthorized | Failure::Injected(401) => (
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.".into(),
                json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]),
            ),
            Failure::ModelNotFound(m) => (
                404,
                "NOT_FOUND",
                format!("models/{m} is not found for API version v1beta, or is not supported for generateContent."),
                json!([]),
            ),
            Failure::RateLimited(_) | Failure::Injected(429) => (
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.".into(),
                json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{}s", retry.unwrap_or(1))}]),
            ),
            Failure::ContextLength { tokens, limit } => (
                400,
                "INVALID_ARGUMENT",
                format!("The input token count ({tokens}) exceeds the maximum number of tokens allowed ({limit})."),
                json!([]),
            ),
            Failure::Refused | Failure::Injected(400) => {
                (400, "INVALID_ARGUMENT", "Request contains an invalid argument.".into(), json!([]))
            }
            Failure::Injected(503 | 529) => (
                503,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.".into(),
                json!([]),
            ),
            Failure::Injected(504) => (504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete.".into(), json!([])),
            Failure::Injected(s) => (*s, "INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting".into(), json!([])),
        };
        let http = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        with_retry_after(
            json_response(http, &envelope(code, status, &message, details)),
            retry,
        )
    }

    fn reply(&self, ctx: &Ctx<'_>, reply: &Reply) -> Value {
        let mut candidate = json!({
            "content": {"parts": parts(ctx, reply), "role": "model"},
            "finishReason": finish_reason(reply),
            "index": 0,
        });
        if matches!(reply, Reply::Refusal) {
            candidate["safetyRatings"] = safety();
            candidate.as_object_mut().map(|c| c.remove("content"));
        }
        json!({
            "candidates": [candidate],
            "usageMetadata": usage(ctx, reply),
            "modelVersion": ctx.parsed.model,
            "responseId": format!("sim{}", ctx.id),
        })
    }

    fn events(&self, ctx: &Ctx<'_>, reply: &Reply, malformed: bool) -> Vec<Event> {
        let chunk = |parts: Value, finish: Option<&str>, usage: Option<Value>| {
            let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
            if let Some(f) = finish {
                candidate["finishReason"] = json!(f);
                if f == "SAFETY" {
                    candidate["safetyRatings"] = safety();
                }
            }
            let mut c = json!({"candidates": [candidate], "modelVersion": ctx.parsed.model, "responseId": format!("sim{}", ctx.id)});
            if let Some(u) = usage {
                c["usageMetadata"] = u;
            }
            sse(None, &c.to_string(), finish.is_none())
        };
        let mut out = Vec::new();
        if ctx.parsed.reasoning {
            out.push(chunk(
                json!([{"text": REASONING, "thought": true}]),
                None,
                None,
            ));
        }
        match reply {
            Reply::Text { pieces, .. } => {
                for piece in pieces {
                    out.push(chunk(json!([{ "text": piece }]), None, None));
                }
            }
            Reply::Tool { name, input, .. } => out.push(chunk(
                json!([{"functionCall": {"name": name, "args": input}}]),
                None,
                None,
            )),
            Reply::Refusal => {}
        }
        out.push(chunk(
            json!([{"text": ""}]),
            Some(finish_reason(reply)),
            Some(usage(ctx, reply)),
        ));
        if malformed && out.len() > 1 {
            out[0] = sse(
                None,
                r#"{"candidates": [{"content": {"parts": [{"text": "br"#,
                true,
            );
        }
        out
    }

    fn terminal_events(&self) -> usize {
        0
    }

    fn huge_event(&self, n: usize) -> Event {
        let text = "x".repeat(n);
        sse(
            None,
            &json!({"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}]}).to_string(),
            true,
        )
    }
}
