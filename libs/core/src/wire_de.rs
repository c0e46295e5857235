//! Deserializers of the wire objects that keep the fields Switchyard does not know (`extra`).
//! serde's `flatten` would buffer every field of such an object into an intermediate tree and
//! read it again; these read each known field straight into its type and only the unknown ones
//! into `extra`, with the same results and errors (`missing field`, the field's own type errors).
//! A reply and every stream event is read through them, and a request's messages.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::chat::{Content, Message, Role, ToolCall};
use crate::response::{ChatChunk, ChatResponse, Choice, ChunkChoice, Delta, FinishReason, Usage};

/// The fields of one object being read.
trait Fields<'de>: Default {
    /// What is read.
    type Out;
    /// What the object is, for errors.
    const WHAT: &'static str;
    /// Reads the value of `key` if it is a known field; `false` keeps it in `extra`.
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;
    /// The object from its fields and the unknown ones.
    fn finish<E: de::Error>(self, extra: Map<String, Value>) -> Result<Self::Out, E>;
}

/// A key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

fn object<'de, D: Deserializer<'de>, F: Fields<'de>>(d: D) -> Result<F::Out, D::Error> {
    struct ObjectVisitor<F>(std::marker::PhantomData<F>);
    impl<'de, F: Fields<'de>> Visitor<'de> for ObjectVisitor<F> {
        type Value = F::Out;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(F::WHAT)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<F::Out, A::Error> {
            let mut fields = F::default();
            let mut extra = Map::new();
            while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                if !fields.field(&key, &mut map)? {
                    extra.insert(key.into_owned(), map.next_value()?);
                }
            }
            fields.finish(extra)
        }
    }
    d.deserialize_map(ObjectVisitor::<F>(std::marker::PhantomData))
}

fn required<T, E: de::Error>(v: Option<T>, name: &'static str) -> Result<T, E> {
    v.ok_or_else(|| E::missing_field(name))
}

/// Declares the fields of an object and reads them: `name: Type` fields are required,
/// `name: Type = default` ones take the default when absent; `"other" => name` reads a field
/// under another name too.
macro_rules! wire_object {
    ($out:ident, $what:literal, $fields:ident {
        $($name:ident : $ty:ty $(= $default:expr)? $(, alias $alias:literal)?;)*
    }) => {
        #[derive(Default)]
        struct $fields {
            $($name: Option<$ty>,)*
        }

        impl<'de> Fields<'de> for $fields {
            type Out = $out;
            const WHAT: &'static str = $what;
            fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
                match key {
                    $(stringify!($name) $(| $alias)? => self.$name = Some(map.next_value()?),)*
                    _ => return Ok(false),
                }
                Ok(true)
            }
            fn finish<E: de::Error>(self, extra: Map<String, Value>) -> Result<$out, E> {
                Ok($out {
                    $($name: wire_object!(@get self.$name, stringify!($name) $(, $default)?),)*
                    extra,
                })
            }
        }

        impl<'de> Deserialize<'de> for $out {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                object::<D, $fields>(d)
            }
        }
    };
    (@get $v:expr, $name:expr) => { required($v, $name)? };
    (@get $v:expr, $name:expr, $default:expr) => { $v.unwrap_or_else(|| $default) };
}

wire_object!(Message, "a message", MessageFields {
    role: Role;
    content: Option<Content> = None;
    name: Option<String> = None;
    tool_calls: Vec<ToolCall> = Vec::new();
    tool_call_id: Option<String> = None;
    refusal: Option<String> = None;
    reasoning: Option<String> = None, alias "reasoning_content";
    reasoning_signature: Option<String> = None;
});

wire_object!(Choice, "a choice", ChoiceFields {
    index: u32;
    message: Message;
    finish_reason: Option<FinishReason> = None;
});

wire_object!(ChatResponse, "a chat completion", ChatResponseFields {
    id: String;
    object: String = crate::response::chat_completion();
    created: i64;
    model: String;
    provider: Option<String> = None;
    choices: Vec<Choice>;
    usage: Option<Usage> = None;
});

wire_object!(ChunkChoice, "a chunk choice", ChunkChoiceFields {
    index: u32;
    delta: Delta;
    finish_reason: Option<FinishReason> = None;
});

wire_object!(ChatChunk, "a chat completion chunk", ChatChunkFields {
    id: String;
    object: String = crate::response::chat_completion_chunk();
    created: i64;
    model: String;
    provider: Option<String> = None;
    choices: Vec<ChunkChoice>;
    usage: Option<Usage> = None;
});

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn known_fields_are_typed_and_unknown_ones_kept() {
        let text = r#"{"id":"c1","created":7,"model":"m","system_fingerprint":"fp","choices":[
            {"index":0,"message":{"role":"assistant","content":"hi","reasoning_content":"r","audio":null},
             "finish_reason":"stop","logprobs":{"content":[]}}],
            "usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5},"service_tier":"default"}"#;
        let r: ChatResponse = serde_json::from_str(text).unwrap();
        assert_eq!(r.object, "chat.completion");
        assert_eq!(r.provider, None);
        assert_eq!(r.usage.unwrap().completion_tokens, 2);
        assert_eq!(
            Value::Object(r.extra.clone()),
            json!({"system_fingerprint": "fp", "service_tier": "default"})
        );
        let c = &r.choices[0];
        assert_eq!(c.finish_reason, Some(FinishReason::Stop));
        assert_eq!(
            Value::Object(c.extra.clone()),
            json!({"logprobs": {"content": []}})
        );
        assert_eq!(c.message.reasoning.as_deref(), Some("r"));
        assert_eq!(
            Value::Object(c.message.extra.clone()),
            json!({"audio": null})
        );
        // Written back, it is what was read (Switchyard's own fields aside).
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["system_fingerprint"], "fp");
        assert_eq!(back["choices"][0]["logprobs"], json!({"content": []}));
    }

    #[test]
    fn missing_and_mistyped_fields_are_errors_naming_them() {
        let missing =
            serde_json::from_str::<ChatResponse>(r#"{"id":"c","created":1,"choices":[]}"#);
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("missing field `model`")
        );
        let mistyped =
            serde_json::from_str::<Choice>(r#"{"index":"zero","message":{"role":"assistant"}}"#);
        assert!(mistyped.unwrap_err().to_string().contains("invalid type"));
        assert!(serde_json::from_str::<Message>(r#"{"content":"x"}"#).is_err());
        assert!(serde_json::from_str::<ChatChunk>("[1]").is_err());
    }

    #[test]
    fn escaped_keys_and_nulls_read_as_the_derive_did() {
        let m: Message =
            serde_json::from_str(r#"{"r\u006fle":"user","content":null,"tool_calls":[]}"#).unwrap();
        assert_eq!(m.role, Role::User);
        assert!(m.content.is_none() && m.extra.is_empty());
        let chunk: ChatChunk = serde_json::from_str(
            r#"{"id":"c","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}"#,
        )
        .unwrap();
        assert_eq!(chunk.object, "chat.completion.chunk");
        assert_eq!(chunk.choices[0].finish_reason, None);
    }
}
