//! Redis health store. Records and their version share the `{health}` hash tag, so the write
//! script stays in one Cluster slot; outcome buckets are tagged per endpoint.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use switchyard_core::EndpointId;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::StateError;
use crate::capacity::{CapacityAnnouncement, CapacityRecord, CapacityUse, capacity_channel};
use crate::health::{BUCKET_SECS, HealthRecord, HealthStore, Outcomes, health_channel};
use crate::health_stats::Tier;
use crate::redis_store::{connect, subscriber};

const RECORDS: &str = "sy:{health}:records";
const VERSION: &str = "sy:{health}:version";
const COOLDOWNS: &str = "sy:{health}:cooldowns";
const CAPACITY: &str = "sy:{health}:capacity";

/// Capacity records, each written only over an older observation; the hash outlives the longest
/// reset a provider reports by far, and is refreshed by every write. Announced records are
/// published whole, so subscribers need no read.
const PUT_CAPACITY: &str = r"
for i = 1, #ARGV - 3, 3 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  local seen = 0
  if cur then
    seen = tonumber(cjson.decode(cur).observed_ms) or 0
  end
  if tonumber(ARGV[i + 1]) > seen then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
  end
end
redis.call('PEXPIRE', KEYS[1], 3600000)
if ARGV[#ARGV - 2] == '1' then
  redis.call('PUBLISH', ARGV[#ARGV - 1], ARGV[#ARGV])
end
return 1
";
/// Forwards announced capacity records, decoded; an undecodable message is dropped (the next
/// read of the hash has the records anyway).
async fn decode_announcements(
    mut raw: broadcast::Receiver<String>,
    out: broadcast::Sender<CapacityAnnouncement>,
) {
    loop {
        match raw.recv().await {
            Ok(text) => match serde_json::from_str::<Vec<(String, CapacityRecord)>>(&text) {
                Ok(records) => {
                    let _ = out.send(std::sync::Arc::new(records));
                }
                Err(e) => tracing::debug!(error = %e, "undecodable capacity announcement"),
            },
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Per-minute use counters of declared capacity outlive their minute by one.
const CAPACITY_USE_TTL_SECS: i64 = 120;

fn capacity_use_key(minute: u64) -> String {
    format!("sy:{{health}}:capuse:{minute}")
}

/// Keep the later end, drop ended ones, bump the version and announce it.
const COOLDOWN: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) <= tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
redis.call('PEXPIRE', KEYS[1], 600000)
local v = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[4], v)
return v
";
/// Outcome buckets outlive the longest evaluation window.
const OUTCOME_TTL_SECS: u64 = 30 * BUCKET_SECS;

const PUT: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local v = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[3], v)
return v
";

/// PUT, only while the stored record's `updated_ms` is the one the writer read (0: none).
const REPLACE: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local seen = 0
if cur then
  seen = tonumber(cjson.decode(cur).updated_ms) or 0
end
if seen ~= tonumber(ARGV[4]) then
  return -1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local v = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[3], v)
return v
";

/// Delete-if-owner: only the holder gives a lease back.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

const LEASE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// The Redis [`HealthStore`].
#[derive(Clone)]
pub struct RedisHealthStore {
    conn: crate::redis_conn::RedisConn,
    changes: broadcast::Sender<u64>,
    capacity_changes: broadcast::Sender<CapacityAnnouncement>,
    put: redis::Script,
    replace: redis::Script,
    lease: redis::Script,
    release: redis::Script,
    cooldown: redis::Script,
    put_capacity: redis::Script,
}

impl std::fmt::Debug for RedisHealthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisHealthStore")
    }
}

fn bucket_key(endpoint: &str, bucket: u64) -> String {
    format!("sy:{{health}}:out:{endpoint}:{bucket}")
}

fn tier_key(endpoint: &str, tier: Tier, bucket: u64) -> String {
    let t = match tier {
        Tier::Minute => "min",
        Tier::Hour => "hour",
    };
    format!("sy:{{health}}:{t}:{endpoint}:{bucket}")
}

impl RedisHealthStore {
    /// A store on `url`, with a subscriber that lives until `shutdown`.
    pub async fn open(url: &str, shutdown: CancellationToken) -> Result<Self, StateError> {
        let (target, conn) = connect(url).await?;
        let changes = broadcast::channel(256).0;
        tokio::spawn(subscriber(
            target.clone(),
            health_channel(),
            changes.clone(),
            shutdown.clone(),
        ));
        let capacity_changes = broadcast::channel(256).0;
        let raw = broadcast::channel::<String>(256).0;
        tokio::spawn(subscriber(
            target,
            capacity_channel(),
            raw.clone(),
            shutdown,
        ));
        tokio::spawn(decode_announcements(
            raw.subscribe(),
            capacity_changes.clone(),
        ));
        Ok(RedisHealthStore {
            conn,
            changes,
            capacity_changes,
            put: redis::Script::new(PUT),
            replace: redis::Script::new(REPLACE),
            lease: redis::Script::new(LEASE),
            release: redis::Script::new(RELEASE),
            cooldown: redis::Script::new(COOLDOWN),
            put_capacity: redis::Script::new(PUT_CAPACITY),
        })
    }
}

#[async_trait]
impl HealthStore for RedisHealthStore {
    async fn records(&self) -> Result<(u64, BTreeMap<EndpointId, HealthRecord>), StateError> {
        let mut conn = self.conn.clone();
        let (version, all): (Option<u64>, Vec<(String, String)>) = redis::pipe()
            .get(VERSION)
            .hgetall(RECORDS)
            .query_async(&mut conn)
            .await?;
        let mut records = BTreeMap::new();
        for (ep, json) in all {
            let r: HealthRecord = serde_json::from_str(&json).map_err(|e| StateError::Corrupt {
                key: format!("{RECORDS}/{ep}"),
                detail: e.to_string(),
            })?;
            records.insert(EndpointId::from(ep), r);
        }
        Ok((version.unwrap_or(0), records))
    }

    async fn put_record(
        &self,
        endpoint: &EndpointId,
        record: &HealthRecord,
    ) -> Result<u64, StateError> {
        let json = serde_json::to_string(record).map_err(|e| StateError::Corrupt {
            key: endpoint.to_string(),
            detail: e.to_string(),
        })?;
        let mut conn = self.conn.clone();
        let v: u64 = self
            .put
            .key(RECORDS)
            .key(VERSION)
            .arg(endpoint.as_str())
            .arg(json)
            .arg(health_channel())
            .invoke_async(&mut conn)
            .await?;
        Ok(v)
    }

    async fn replace_record(
        &self,
        endpoint: &EndpointId,
        read_updated_ms: u64,
        record: &HealthRecord,
    ) -> Result<Option<u64>, StateError> {
        let json = serde_json::to_string(record).map_err(|e| StateError::Corrupt {
            key: endpoint.to_string(),
            detail: e.to_string(),
        })?;
        let mut conn = self.conn.clone();
        let v: i64 = self
            .replace
            .key(RECORDS)
            .key(VERSION)
            .arg(endpoint.as_str())
            .arg(json)
            .arg(health_channel())
            .arg(read_updated_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(u64::try_from(v).ok())
    }

    fn subscribe(&self) -> broadcast::Receiver<u64> {
        self.changes.subscribe()
    }

    fn subscribe_capacity(&self) -> broadcast::Receiver<CapacityAnnouncement> {
        self.capacity_changes.subscribe()
    }

    async fn add_outcomes(&self, batch: &[(EndpointId, u64, Outcomes)]) -> Result<(), StateError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (ep, bucket, o) in batch {
            let key = bucket_key(ep.as_str(), *bucket);
            for (field, n) in o.without_histograms().fields() {
                pipe.hincr(&key, field, n).ignore();
            }
            pipe.expire(&key, OUTCOME_TTL_SECS as i64).ignore();
            for tier in [Tier::Minute, Tier::Hour] {
                let key = tier_key(ep.as_str(), tier, tier.of_bucket(*bucket));
                for (field, n) in tier.kept(o).fields() {
                    pipe.hincr(&key, field, n).ignore();
                }
                pipe.expire(&key, tier.ttl_secs() as i64).ignore();
            }
        }
        let mut conn = self.conn.clone();
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    async fn tier_outcomes(
        &self,
        endpoint: &EndpointId,
        tier: Tier,
        from: u64,
        to: u64,
    ) -> Result<Vec<Outcomes>, StateError> {
        if from > to {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for b in from..=to {
            pipe.hgetall(tier_key(endpoint.as_str(), tier, b));
        }
        let mut conn = self.conn.clone();
        let buckets: Vec<Vec<(String, u64)>> = pipe.query_async(&mut conn).await?;
        Ok(buckets.into_iter().map(Outcomes::from_fields).collect())
    }

    async fn outcomes(
        &self,
        endpoint: &EndpointId,
        from: u64,
        to: u64,
    ) -> Result<Outcomes, StateError> {
        if from > to {
            return Ok(Outcomes::default());
        }
        let mut pipe = redis::pipe();
        for b in from..=to {
            pipe.hgetall(bucket_key(endpoint.as_str(), b));
        }
        let mut conn = self.conn.clone();
        let buckets: Vec<Vec<(String, u64)>> = pipe.query_async(&mut conn).await?;
        let mut sum = Outcomes::default();
        for fields in buckets {
            sum.add(&Outcomes::from_fields(fields));
        }
        Ok(sum)
    }

    async fn put_cooldown(&self, endpoint: &EndpointId, until_ms: u64) -> Result<u64, StateError> {
        let mut conn = self.conn.clone();
        let v: u64 = self
            .cooldown
            .key(COOLDOWNS)
            .key(VERSION)
            .arg(endpoint.as_str())
            .arg(until_ms)
            .arg(switchyard_core::clock::now_ms())
            .arg(health_channel())
            .invoke_async(&mut conn)
            .await?;
        Ok(v)
    }

    async fn cooldowns(&self, now_ms: u64) -> Result<BTreeMap<EndpointId, u64>, StateError> {
        let mut conn = self.conn.clone();
        let all: Vec<(String, u64)> = redis::cmd("HGETALL")
            .arg(COOLDOWNS)
            .query_async(&mut conn)
            .await?;
        Ok(all
            .into_iter()
            .filter(|(_, until)| *until > now_ms)
            .map(|(ep, until)| (EndpointId::from(ep), until))
            .collect())
    }

    async fn put_capacity(
        &self,
        batch: &[(String, CapacityRecord)],
        announce: bool,
    ) -> Result<(), StateError> {
        if batch.is_empty() && !announce {
            return Ok(());
        }
        let mut invocation = self.put_capacity.key(CAPACITY);
        for (scope, r) in batch {
            let json = serde_json::to_string(r).map_err(|e| StateError::Corrupt {
                key: scope.clone(),
                detail: e.to_string(),
            })?;
            invocation.arg(scope).arg(r.observed_ms).arg(json);
        }
        let payload = if announce {
            serde_json::to_string(batch).map_err(|e| StateError::Corrupt {
                key: CAPACITY.into(),
                detail: e.to_string(),
            })?
        } else {
            String::new()
        };
        invocation
            .arg(if announce { "1" } else { "0" })
            .arg(capacity_channel())
            .arg(payload);
        let mut conn = self.conn.clone();
        let _: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(())
    }

    async fn capacity(&self) -> Result<BTreeMap<String, CapacityRecord>, StateError> {
        let mut conn = self.conn.clone();
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(CAPACITY)
            .query_async(&mut conn)
            .await?;
        let mut out = BTreeMap::new();
        for (scope, json) in all {
            let r = serde_json::from_str(&json).map_err(|e| StateError::Corrupt {
                key: format!("{CAPACITY}/{scope}"),
                detail: e.to_string(),
            })?;
            out.insert(scope, r);
        }
        Ok(out)
    }

    async fn count_capacity(
        &self,
        minute: u64,
        batch: &[(String, CapacityUse)],
    ) -> Result<Vec<CapacityUse>, StateError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let key = capacity_use_key(minute);
        let mut pipe = redis::pipe();
        for (scope, add) in batch {
            pipe.hincr(&key, format!("{scope}|r"), add.requests).hincr(
                &key,
                format!("{scope}|t"),
                add.tokens,
            );
        }
        pipe.expire(&key, CAPACITY_USE_TTL_SECS).ignore();
        let mut conn = self.conn.clone();
        let totals: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(totals
            .chunks(2)
            .map(|c| CapacityUse {
                requests: c[0],
                tokens: c.get(1).copied().unwrap_or(0),
            })
            .collect())
    }

    async fn release(&self, name: &str, owner: &str) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .release
            .key(format!("sy:lease:{{{name}}}"))
            .arg(owner)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        let got: i64 = self
            .lease
            .key(format!("sy:lease:{{{name}}}"))
            .arg(owner)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(got == 1)
    }
}
