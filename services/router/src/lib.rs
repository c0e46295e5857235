//! The router: the request path from a client to upstream providers. This first part is the
//! attempt engine and the retry budget; the APIs, auth, budgets and reporting build on them.

pub mod convert;
pub mod engine;
pub mod explain;
pub mod grpc;
pub mod health_view;
pub mod http;
pub mod observe;
pub mod outcomes;
pub mod pipeline;
pub mod policy_view;
pub mod reporter;
pub mod retry_budget;
pub mod run;
pub mod validate;
