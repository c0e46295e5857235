//! The routing trace as every HTTP API shows it (`routing` in a reply, on a stream's last event,
//! in an error's metadata): the plan, every attempt, what was left out and why, the seed and the
//! versions the decision was made with. It serializes straight from the request's own records,
//! so a reply is written once, with no JSON tree built in between.

use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_json::{Value, json};

use crate::admission::Admitted;
use crate::engine::AttemptTrace;

/// A request's routing trace, ready to serialize.
#[derive(serde::Serialize)]
pub(crate) struct Routing<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    anomalies: Option<Vec<Value>>,
    attempts: &'a [AttemptTrace],
    catalog_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    excluded: Option<Vec<Value>>,
    health_version: u64,
    plan: Plan<'a>,
    policy_version: u64,
    request_id: &'a str,
    // As text: JSON numbers lose u64 precision in most clients.
    #[serde(serialize_with = "as_text")]
    seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    validation: Option<&'a crate::validate::Validity>,
    workflow: &'a str,
}

impl<'a> Routing<'a> {
    /// The trace of `a` after `trace`.
    pub(crate) fn of(a: &'a Admitted, trace: &'a [AttemptTrace]) -> Self {
        let anomalies: Vec<Value> = trace
            .iter()
            .filter(|t| t.malformed_events > 0)
            .map(|t| json!({"endpoint": t.endpoint, "kind": "malformed_event", "count": t.malformed_events}))
            .collect();
        Routing {
            anomalies: (!anomalies.is_empty()).then_some(anomalies),
            attempts: trace,
            catalog_version: &a.catalog.version,
            excluded: (!a.excluded.is_empty()).then(|| {
                a.excluded
                    .iter()
                    .map(|e| crate::explain::excluded_json(&crate::convert::excluded(e)))
                    .collect()
            }),
            health_version: a.health_version,
            plan: Plan(a),
            policy_version: a.policy_version,
            request_id: &a.id,
            seed: a.seed,
            validation: crate::engine::served_validity(trace),
            workflow: a.workflow.id.as_str(),
        }
    }

    /// As a JSON value, for the envelopes built as values (errors, other APIs).
    pub(crate) fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The planned endpoints, in order.
struct Plan<'a>(&'a Admitted);

impl Serialize for Plan<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.plan.len()))?;
        for p in &self.0.plan {
            seq.serialize_element(p.attempt.endpoint.as_str())?;
        }
        seq.end()
    }
}

fn as_text<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(n)
}

/// `body` (a JSON object) with `routing` added, serialized once.
pub(crate) struct WithRouting<'a, T: Serialize> {
    pub(crate) body: &'a T,
    pub(crate) routing: Routing<'a>,
}

impl<T: Serialize> WithRouting<'_, T> {
    /// The JSON text: the body's object with `routing` written in before its closing brace
    /// (serde's `flatten` would take the body apart field by field into a map).
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        object_with(self.body, "routing", &self.routing)
    }
}

/// `body` (a JSON object) with `name: value` added; empty when `body` is not an object.
fn object_with(body: &impl Serialize, name: &str, value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    if serde_json::to_writer(&mut out, body).is_err() || out.pop() != Some(b'}') {
        return Vec::new();
    }
    if out.len() > 1 {
        out.push(b',');
    }
    if serde_json::to_writer(&mut out, name).is_err() {
        return Vec::new();
    }
    out.push(b':');
    if serde_json::to_writer(&mut out, value).is_err() {
        return Vec::new();
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_added_to_the_object_as_its_last() {
        let value = json!({"plan": ["a@p"], "seed": "7"});
        let with = |body: Value| object_with(&body, "routing", &value);
        let added: Value =
            serde_json::from_slice(&with(json!({"id": "x", "n": [1, {"k": "}"}]}))).unwrap();
        assert_eq!(
            added,
            json!({"id": "x", "n": [1, {"k": "}"}], "routing": {"plan": ["a@p"], "seed": "7"}})
        );
        assert_eq!(
            with(json!({})),
            br#"{"routing":{"plan":["a@p"],"seed":"7"}}"#.to_vec()
        );
        assert!(with(json!([1])).is_empty());
        assert!(with(json!("text")).is_empty());
    }
}
