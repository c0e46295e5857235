//! Request records in Redis: a hash per org and minute (`sy:{org:O}:reqs:M`, id → JSON) filled
//! by one script per batch that keeps the minute's bound, and a set per minute of the orgs that
//! have records in it (`sy:reqs:orgs:M`), for listing every org. Both expire with the retention.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::StateError;
use crate::request_log::{
    Keep, RecordQuery, RequestLog, RequestRecord, Retention, gather, minutes,
};

/// KEYS: the org's minute. ARGV: bound, ttl ms, then id, record pairs. Returns how many were
/// dropped because the minute was full.
const RECORD: &str = r"
local room = tonumber(ARGV[1]) - redis.call('HLEN', KEYS[1])
local dropped = 0
for i = 3, #ARGV, 2 do
  if room > 0 then
    if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then room = room - 1 end
  else
    dropped = dropped + 1
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return dropped
";

fn org_minute(org: &str, minute: u64) -> String {
    format!("sy:{{org:{org}}}:reqs:{minute}")
}

fn orgs_of(minute: u64) -> String {
    format!("sy:reqs:orgs:{minute}")
}

/// The Redis [`RequestLog`].
#[derive(Clone)]
pub struct RedisRequestLog {
    conn: crate::redis_conn::RedisConn,
    retention: Retention,
    record: redis::Script,
}

impl std::fmt::Debug for RedisRequestLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisRequestLog")
    }
}

impl RedisRequestLog {
    /// A log on `url` keeping records for `retention`.
    pub async fn open(url: &str, retention: Retention) -> Result<Self, StateError> {
        let (_, conn) = crate::redis_store::connect(url).await?;
        Ok(RedisRequestLog {
            conn,
            retention,
            record: redis::Script::new(RECORD),
        })
    }

    /// How long a minute's keys live: the retention after the minute ends.
    fn ttl_ms(&self, minute: u64) -> u64 {
        let ends = (minute + 1) * 60_000;
        let now = switchyard_core::clock::now_ms();
        (ends + self.retention.ttl.as_millis() as u64)
            .saturating_sub(now)
            .max(1)
    }

    /// `org`, or every org with records in `minute`.
    async fn orgs(&self, org: Option<&str>, minute: u64) -> Result<Vec<String>, StateError> {
        Ok(match org {
            Some(org) => vec![org.to_string()],
            None => {
                redis::cmd("SMEMBERS")
                    .arg(orgs_of(minute))
                    .query_async(&mut self.conn.clone())
                    .await?
            }
        })
    }

    fn parse(key: &str, json: &str) -> Result<RequestRecord, StateError> {
        serde_json::from_str(json).map_err(|e| StateError::Corrupt {
            key: key.to_string(),
            detail: e.to_string(),
        })
    }
}

#[async_trait]
impl RequestLog for RedisRequestLog {
    async fn put(&self, records: &[RequestRecord]) -> Result<u64, StateError> {
        let mut groups: BTreeMap<(&str, u64), Vec<&RequestRecord>> = BTreeMap::new();
        for r in records {
            groups
                .entry((r.org.as_str(), crate::minute_of(r.created_ms)))
                .or_default()
                .push(r);
        }
        let mut conn = self.conn.clone();
        let mut dropped = 0;
        for ((org, minute), rs) in &groups {
            let mut inv = self.record.prepare_invoke();
            inv.key(org_minute(org, *minute))
                .arg(self.retention.per_minute)
                .arg(self.ttl_ms(*minute));
            for r in rs {
                let json = serde_json::to_string(r).map_err(|e| StateError::Corrupt {
                    key: r.id.clone(),
                    detail: e.to_string(),
                })?;
                inv.arg(&r.id).arg(json);
            }
            let n: u64 = inv.invoke_async(&mut conn).await?;
            dropped += n;
        }
        // Each minute's set of orgs in one pipeline (one key, so one slot on a cluster).
        let mut minutes: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
        for (org, minute) in groups.keys() {
            minutes.entry(*minute).or_default().push(org);
        }
        for (minute, orgs) in minutes {
            let _: () = redis::pipe()
                .cmd("SADD")
                .arg(orgs_of(minute))
                .arg(orgs)
                .ignore()
                .cmd("PEXPIRE")
                .arg(orgs_of(minute))
                .arg(self.ttl_ms(minute))
                .ignore()
                .query_async(&mut conn)
                .await?;
        }
        Ok(dropped)
    }

    async fn get(&self, org: Option<&str>, id: &str) -> Result<Option<RequestRecord>, StateError> {
        let Some(at) = crate::request_log::received_ms(id) else {
            return Ok(None);
        };
        let minute = crate::minute_of(at);
        let mut conn = self.conn.clone();
        for org in self.orgs(org, minute).await? {
            let key = org_minute(&org, minute);
            let json: Option<String> = redis::cmd("HGET")
                .arg(&key)
                .arg(id)
                .query_async(&mut conn)
                .await?;
            if let Some(json) = json {
                return Self::parse(&key, &json).map(Some);
            }
        }
        Ok(None)
    }

    async fn list(&self, q: &RecordQuery, keep: &Keep) -> Result<Vec<RequestRecord>, StateError> {
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        for minute in minutes(q, self.retention, switchyard_core::clock::now_ms()) {
            let mut found = Vec::new();
            for org in self.orgs(q.org.as_deref(), minute).await? {
                let key = org_minute(&org, minute);
                let all: Vec<String> = redis::cmd("HVALS").arg(&key).query_async(&mut conn).await?;
                for json in all {
                    let r = Self::parse(&key, &json)?;
                    if keep(&r) {
                        found.push(r);
                    }
                }
            }
            if gather(&mut out, found, q) {
                break;
            }
        }
        Ok(out)
    }

    fn retention(&self) -> Retention {
        self.retention
    }
}
