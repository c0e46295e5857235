//! The policy as data: the policy file's types (`config`), the compiled snapshot that the policy
//! service publishes and routers, the prober and billing read (`snapshot`), sealed BYOK secrets
//! (`crypto`) and client-key hashes (`keys`).
//!
//! Shared by every service that reads the policy, so none of them links the policy service. It
//! does no I/O and compiles nothing: turning a file into a snapshot is the policy service's job.

pub mod budgets;
pub mod catalog;
pub mod config;
pub mod crypto;
pub mod keys;
pub mod limits;
pub mod snapshot;
