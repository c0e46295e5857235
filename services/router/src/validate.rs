//! Output validation: every tool call's arguments against its tool's JSON Schema, and a
//! `response_format: json_schema` reply against its schema. Schemas are compiled once per
//! request; a schema that does not compile is the caller's error (400) before anything is sent.

use std::collections::HashMap;

use serde::Serialize;
use switchyard_core::{ChatRequest, ChatResponse, Content, ContentPart, Error, ResponseFormat};

/// The compiled schemas of one request.
pub struct Validator {
    tools: HashMap<String, jsonschema::Validator>,
    output: Option<jsonschema::Validator>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("tools", &self.tools.len())
            .field("output", &self.output.is_some())
            .finish()
    }
}

/// What validation found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Validity {
    /// Tool calls checked.
    pub tool_calls: u32,
    /// A structured output was checked.
    pub structured_output: bool,
    /// Everything checked passed.
    pub valid: bool,
    /// What failed, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

fn compile(what: &str, schema: &serde_json::Value) -> Result<jsonschema::Validator, Error> {
    jsonschema::validator_for(schema)
        .map_err(|e| Error::invalid(format!("the JSON Schema of {what} is not valid: {e}")))
}

fn problems(v: &jsonschema::Validator, value: &serde_json::Value, what: &str) -> Vec<String> {
    v.iter_errors(value)
        .take(5)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                format!("{what}: {e}")
            } else {
                format!("{what} at {at}: {e}")
            }
        })
        .collect()
}

impl Validator {
    /// The validator for `req`, or `None` when it has no tools and no JSON Schema output.
    pub fn for_request(req: &ChatRequest) -> Result<Option<Validator>, Error> {
        let mut tools = HashMap::new();
        for t in &req.tools {
            let v = compile(&format!("tool `{}`", t.name), &t.parameters)?;
            tools.insert(t.name.clone(), v);
        }
        let output = match &req.response_format {
            Some(ResponseFormat::JsonSchema { json_schema }) => Some(compile(
                &format!("response format `{}`", json_schema.name),
                &json_schema.schema,
            )?),
            _ => None,
        };
        if tools.is_empty() && output.is_none() {
            return Ok(None);
        }
        Ok(Some(Validator { tools, output }))
    }

    /// Checks a complete reply (its first choice: one is served per request).
    pub fn check(&self, resp: &ChatResponse) -> Validity {
        let Some(choice) = resp.choices.first() else {
            return self.check_parts("", &[]);
        };
        let text = match &choice.message.content {
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect(),
            None => String::new(),
        };
        let calls: Vec<(&str, &str)> = choice
            .message
            .tool_calls
            .iter()
            .map(|c| (c.name.as_str(), c.arguments.as_str()))
            .collect();
        self.check_parts(&text, &calls)
    }

    /// Checks a streamed reply, assembled from its chunks.
    pub fn check_stream(&self, a: &Assembly) -> Validity {
        let calls: Vec<(&str, &str)> = a
            .calls
            .values()
            .map(|(n, args)| (n.as_str(), args.as_str()))
            .collect();
        self.check_parts(&a.text, &calls)
    }

    /// Tool calls (name, argument text) and, when there are none, the text as the structured
    /// output.
    fn check_parts(&self, text: &str, calls: &[(&str, &str)]) -> Validity {
        let mut v = Validity::default();
        for (name, arguments) in calls {
            v.tool_calls += 1;
            v.problems.extend(self.check_call(name, arguments));
        }
        if let Some(schema) = &self.output
            && calls.is_empty()
        {
            v.structured_output = true;
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(value) => v.problems.extend(problems(schema, &value, "output")),
                Err(e) => v.problems.push(format!("output is not JSON: {e}")),
            }
        }
        v.valid = v.problems.is_empty();
        v
    }

    /// Problems with one tool call (none when it is valid).
    pub fn check_call(&self, name: &str, arguments: &str) -> Vec<String> {
        let what = format!("tool call `{name}`");
        let Some(schema) = self.tools.get(name) else {
            return vec![format!("{what}: no such tool in the request")];
        };
        match serde_json::from_str::<serde_json::Value>(arguments) {
            Ok(value) => problems(schema, &value, &what),
            Err(e) => vec![format!("{what}: arguments are not JSON: {e}")],
        }
    }

    /// Counts a checked reply for `endpoint` in the validity series and, with `outcomes`, in
    /// the endpoint's passive outcomes.
    pub fn count(
        endpoint: &switchyard_core::EndpointId,
        validity: &Validity,
        outcomes: Option<&crate::outcomes::OutcomeWriter>,
    ) {
        if let Some(w) = outcomes {
            let n = u64::from(validity.tool_calls);
            let (valid, invalid) = if validity.valid { (n, 0) } else { (0, n) };
            w.record_tool_calls(endpoint, valid, invalid);
        }
        let valid = if validity.valid { "true" } else { "false" };
        if validity.tool_calls > 0 {
            metrics::counter!("switchyard_output_validations_total", "endpoint" => endpoint.to_string(), "kind" => "tool_call", "valid" => valid).increment(u64::from(validity.tool_calls));
        }
        if validity.structured_output {
            metrics::counter!("switchyard_output_validations_total", "endpoint" => endpoint.to_string(), "kind" => "structured_output", "valid" => valid).increment(1);
        }
    }
}

/// A streamed reply put back together from its chunks: the text, and each tool call's name and
/// argument text.
#[derive(Debug, Default)]
pub struct Assembly {
    text: String,
    calls: std::collections::BTreeMap<u32, (String, String)>,
}

impl Assembly {
    /// Adds a chunk (its first choice).
    pub fn add(&mut self, chunk: &switchyard_core::ChatChunk) {
        let Some(choice) = chunk.choices.first() else {
            return;
        };
        if let Some(t) = &choice.delta.content {
            self.text.push_str(t);
        }
        for d in &choice.delta.tool_calls {
            let call = self.calls.entry(d.index).or_default();
            if let Some(n) = &d.function.name {
                call.0.push_str(n);
            }
            if let Some(a) = &d.function.arguments {
                call.1.push_str(a);
            }
        }
    }
}
