//! The policy service: where each org's decisions live (keys, workflows, data classes, BYOK
//! keys, operator overrides) and how every router gets the same ones. It compiles the policy file
//! and the run-time documents into a versioned snapshot, publishes it to the state store (so
//! replicas agree on one version and routers can start while this service is down), and streams
//! it to routers over gRPC `Policy.Watch`.
//!
//! It never routes requests and never stores a key in clear: client keys only as SHA-256, BYOK
//! keys only sealed (decrypted only into the snapshot a router receives).

pub mod compile;
pub mod core;
pub mod grpc;
pub mod run;
mod scopes;
pub mod server;

// The policy's types live in a library that every reader of the policy shares.
pub use switchyard_policy_model::{budgets, catalog, config, crypto, keys, limits, snapshot};
