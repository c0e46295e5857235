//! Identifier newtypes. Each wraps an `Arc<str>` so that cloning one on the request path is a
//! reference-count bump, and the type keeps a provider id from being passed where a model id is due.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// A new id from any string.
            pub fn new(id: impl Into<Arc<str>>) -> Self {
                Self(id.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.into())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s.into())
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(Self::from)
            }
        }
    };
}

string_id!(
    /// A provider in the catalog (`openai`, `together`, …).
    ProviderId
);
string_id!(
    /// A model in the catalog, as clients name it.
    ModelId
);
string_id!(
    /// One model served by one provider; by default `model@provider`.
    EndpointId
);
string_id!(
    /// An organization (tenant).
    OrgId
);
string_id!(
    /// An API key's id (never the key itself).
    ApiKeyId
);
string_id!(
    /// A workflow (preset) of an org.
    WorkflowId
);
string_id!(
    /// One client request, end to end.
    RequestId
);

impl EndpointId {
    /// The default id of `model` served by `provider`.
    pub fn of(model: &ModelId, provider: &ProviderId) -> Self {
        Self::new(format!("{model}@{provider}"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn ids_serialize_as_plain_strings_and_look_up_by_str() {
        let id = EndpointId::of(&ModelId::from("m"), &ProviderId::from("p"));
        assert_eq!(id.as_str(), "m@p");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"m@p\"");
        let back: EndpointId = serde_json::from_str("\"m@p\"").unwrap();
        assert_eq!(back, id);
        let map: HashMap<EndpointId, u32> = [(id, 1)].into();
        assert_eq!(map.get("m@p"), Some(&1));
    }
}
