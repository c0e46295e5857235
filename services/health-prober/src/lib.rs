//! The health prober: turns active probes and the routers' passive outcomes into one health
//! record per endpoint in the shared store, so every router ejects and restores the same
//! endpoints at the same time. Several replicas split the endpoints through leases. What counts
//! against an endpoint is asked of `ErrorClass::counts_against_health`, as the routers do: a
//! throttled or refused probe or attempt counts for nothing.
//!
//! It decides health; it never routes requests.

pub mod config;
pub mod grpc;
pub mod machine;
pub mod probe;
pub mod prober;
pub mod run;
pub mod targets;
