//! Shared state behind traits, each with a Redis implementation (atomic Lua scripts, multiplexed
//! connections that reconnect by themselves) and an in-memory one (for `switchyard up` and unit
//! tests). Services never talk to Redis but through here, so the key layout, the scripts and the
//! failure semantics live in one place.
//!
//! Keys are namespaced `sy:`; multi-key scripts keep their keys in one hash slot.

mod budget;
mod budget_lease_redis;
mod budget_memory;
mod budget_redis;
mod capacity;
mod error;
mod health;
mod health_memory;
mod health_redis;
pub mod health_stats;
mod idempotency;
pub mod lease;
mod lease_memory;
mod memory;
mod policy;
pub mod rate_slice;
mod rate_slice_redis;
pub mod redis_conn;
mod redis_store;
pub mod request_log;
mod request_log_redis;
mod responses;

pub use budget::{
    BudgetDef, BudgetStore, BudgetView, DayUsage, HoldOutcome, HoldRequest, LedgerEntry,
    LimitCheck, LimitKind, Period, Scope, SettleOutcome, day_of, minute_of,
};
pub use budget_memory::MemoryBudgetStore;
pub use budget_redis::RedisBudgetStore;
pub use capacity::{
    CapacityAnnouncement, CapacityRecord, CapacityUse, CapacityWindow, capacity_channel,
};
pub use error::StateError;
pub use health::{
    BUCKET_SECS, HealthRecord, HealthStore, Outcomes, bucket_of, health_channel, snapshot,
};
pub use health_memory::MemoryHealthStore;
pub use health_redis::RedisHealthStore;
pub use health_stats::{EndpointStats, Percentiles, Tier, endpoint_stats};
pub use idempotency::{Begin, IdempotencyStore, MemoryIdempotencyStore, RedisIdempotencyStore};
pub use lease::{
    LEASE_PREFIX, LeaseGrant, LeaseOutcome, LeaseRenewal, LeaseStanding, LeasedReport,
    RenewOutcome, is_lease,
};
pub use memory::MemoryPolicyStore;
pub use policy::{AuditRecord, PolicyStore, StoredSnapshot, snapshot_channel};
pub use rate_slice::{RateAsk, RateGrant};
pub use redis_store::{RedisPolicyStore, connect};
pub use request_log::{
    Keep as KeepRecord, MemoryRequestLog, RecordQuery, RecordedAttempt, RequestLog, RequestRecord,
    Retention,
};
pub use request_log_redis::RedisRequestLog;
pub use responses::{MemoryResponseStore, RedisResponseStore, ResponseStore};
