//! Idempotency keys: the first request with a key marks it in flight; a repeat while it runs is
//! refused; a repeat after it completed gets the stored response, with no second upstream call
//! and no second charge; a failed request frees the key for a retry. Keys are per org and carry
//! the request's hash, so a key reused for a different request is refused. Redis keys carry the
//! org's hash tag.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::StateError;

/// What a new request with an idempotency key finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First of its key: run it.
    New,
    /// Another request with this key is running.
    InFlight,
    /// Done before: here is the stored response.
    Done(String),
    /// The key was used for a different request.
    Mismatch,
}

/// Where idempotency state lives.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for a request with `hash`, or reports what holds it.
    async fn begin(
        &self,
        org: &str,
        key: &str,
        hash: &str,
        ttl: Duration,
    ) -> Result<Begin, StateError>;
    /// Stores the response of a completed request.
    async fn complete(
        &self,
        org: &str,
        key: &str,
        response: &str,
        ttl: Duration,
    ) -> Result<(), StateError>;
    /// Frees the key (the request failed; a retry may run).
    async fn abandon(&self, org: &str, key: &str) -> Result<(), StateError>;
}

const BEGIN: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'state', 'inflight', 'hash', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1}
end
if redis.call('HGET', KEYS[1], 'hash') ~= ARGV[1] then return {4} end
if state == 'inflight' then return {2} end
return {3, redis.call('HGET', KEYS[1], 'body')}
";

fn key(org: &str, k: &str) -> String {
    format!("sy:{{org:{org}}}:idem:{k}")
}

/// The Redis [`IdempotencyStore`].
#[derive(Clone)]
pub struct RedisIdempotencyStore {
    conn: crate::redis_conn::RedisConn,
    begin: redis::Script,
}

impl std::fmt::Debug for RedisIdempotencyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisIdempotencyStore")
    }
}

impl RedisIdempotencyStore {
    /// A store on `url`.
    pub async fn open(url: &str) -> Result<Self, StateError> {
        let (_, conn) = crate::redis_store::connect(url).await?;
        Ok(RedisIdempotencyStore {
            conn,
            begin: redis::Script::new(BEGIN),
        })
    }
}

#[async_trait]
impl IdempotencyStore for RedisIdempotencyStore {
    async fn begin(
        &self,
        org: &str,
        k: &str,
        hash: &str,
        ttl: Duration,
    ) -> Result<Begin, StateError> {
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = self
            .begin
            .key(key(org, k))
            .arg(hash)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(match reply.first() {
            Some(redis::Value::Int(1)) => Begin::New,
            Some(redis::Value::Int(2)) => Begin::InFlight,
            Some(redis::Value::Int(4)) => Begin::Mismatch,
            _ => match reply.get(1) {
                Some(redis::Value::BulkString(b)) => {
                    Begin::Done(String::from_utf8_lossy(b).into_owned())
                }
                _ => Begin::InFlight,
            },
        })
    }

    async fn complete(
        &self,
        org: &str,
        k: &str,
        response: &str,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: () = redis::pipe()
            .hset_multiple(key(org, k), &[("state", "done"), ("body", response)])
            .ignore()
            .pexpire(key(org, k), ttl.as_millis() as i64)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn abandon(&self, org: &str, k: &str) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("DEL")
            .arg(key(org, k))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}

struct Entry {
    hash: String,
    body: Option<String>,
    expires: Instant,
}

/// The in-memory [`IdempotencyStore`].
#[derive(Default)]
pub struct MemoryIdempotencyStore {
    entries: Mutex<HashMap<(String, String), Entry>>,
}

impl std::fmt::Debug for MemoryIdempotencyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryIdempotencyStore")
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn begin(
        &self,
        org: &str,
        k: &str,
        hash: &str,
        ttl: Duration,
    ) -> Result<Begin, StateError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        entries.retain(|_, e| e.expires > now);
        let id = (org.to_string(), k.to_string());
        Ok(match entries.get(&id) {
            None => {
                entries.insert(
                    id,
                    Entry {
                        hash: hash.to_string(),
                        body: None,
                        expires: now + ttl,
                    },
                );
                Begin::New
            }
            Some(e) if e.hash != hash => Begin::Mismatch,
            Some(Entry { body: None, .. }) => Begin::InFlight,
            Some(Entry { body: Some(b), .. }) => Begin::Done(b.clone()),
        })
    }

    async fn complete(
        &self,
        org: &str,
        k: &str,
        response: &str,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get_mut(&(org.to_string(), k.to_string())) {
            e.body = Some(response.to_string());
            e.expires = Instant::now() + ttl;
        }
        Ok(())
    }

    async fn abandon(&self, org: &str, k: &str) -> Result<(), StateError> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(org.to_string(), k.to_string()));
        Ok(())
    }
}
