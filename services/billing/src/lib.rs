//! The billing service: org-wide budgets per scope and period (held atomically
//! in the shared store by routers, settled here from their usage reports), the ledger of every
//! settlement, usage queries, budget alerts, and the reconciler that settles holds and budget leases a
//! dead router left behind (never under-charging).
//!
//! It never routes requests.

pub mod declared;
pub mod reconcile;
pub mod run;
pub mod service;
pub mod wire;
