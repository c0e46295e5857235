//! The billing service: org-wide budgets per scope and period (held atomically
//! in the shared store by routers, settled here from their usage reports), the ledger of every
//! settlement, usage queries, budget alerts, and the reconciler that settles holds a dead router
//! left behind at their held amount (never under-charging).
//!
//! It never routes requests.

pub mod declared;
pub mod run;
pub mod service;
pub mod wire;
