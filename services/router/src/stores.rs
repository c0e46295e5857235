//! The shared state a router reads and writes: on Redis (a router process) or in memory
//! (`switchyard up` without Redis).

use std::sync::Arc;

use switchyard_state::{
    BudgetStore, HealthStore, PolicyStore, RedisBudgetStore, RedisHealthStore, RedisPolicyStore,
    Retention,
};
use tokio_util::sync::CancellationToken;

/// The shared state a router reads and writes.
pub struct Stores {
    /// Health records.
    pub health: Arc<dyn HealthStore>,
    /// Budgets.
    pub budgets: Arc<dyn BudgetStore>,
    /// Published policy snapshots (fallback when the policy service is down).
    pub policy: Option<Arc<dyn PolicyStore>>,
    /// Idempotency keys.
    pub idempotency: Arc<dyn switchyard_state::IdempotencyStore>,
    /// Stored Responses API responses.
    pub responses: Arc<dyn switchyard_state::ResponseStore>,
    /// Request records, unless requests leave none.
    pub records: Option<Arc<dyn switchyard_state::RequestLog>>,
}

impl Stores {
    /// Every store on the Redis at `url`, request records kept for `records` (none without);
    /// connections end when `stop` is cancelled.
    pub async fn redis(
        url: &str,
        records: Option<Retention>,
        stop: &CancellationToken,
    ) -> Result<Stores, String> {
        let context = |e: switchyard_state::StateError| format!("redis at {url}: {e}");
        Ok(Stores {
            health: Arc::new(
                RedisHealthStore::open(url, stop.clone())
                    .await
                    .map_err(context)?,
            ),
            budgets: Arc::new(RedisBudgetStore::open(url).await.map_err(context)?),
            policy: Some(Arc::new(
                RedisPolicyStore::open(url, stop.clone())
                    .await
                    .map_err(context)?,
            )),
            idempotency: Arc::new(
                switchyard_state::RedisIdempotencyStore::open(url)
                    .await
                    .map_err(context)?,
            ),
            responses: Arc::new(
                switchyard_state::RedisResponseStore::open(url)
                    .await
                    .map_err(context)?,
            ),
            records: match records {
                Some(r) => Some(Arc::new(
                    switchyard_state::RedisRequestLog::open(url, r)
                        .await
                        .map_err(context)?,
                )),
                None => None,
            },
        })
    }

    /// Every store in this process's memory (`switchyard up` without Redis).
    pub fn memory() -> Stores {
        Stores {
            health: Arc::new(switchyard_state::MemoryHealthStore::default()),
            budgets: Arc::new(switchyard_state::MemoryBudgetStore::default()),
            policy: Some(Arc::new(switchyard_state::MemoryPolicyStore::default())),
            idempotency: Arc::new(switchyard_state::MemoryIdempotencyStore::default()),
            responses: Arc::new(switchyard_state::MemoryResponseStore::default()),
            records: Some(Arc::new(switchyard_state::MemoryRequestLog::new(
                Retention::default(),
            ))),
        }
    }
}
