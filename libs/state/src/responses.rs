//! Stored responses of the Responses API (`store: true`): the reply and the conversation it
//! continues, per org, with a time to live, so that `previous_response_id` and
//! `GET /v1/responses/{id}` find it from any router. Redis keys carry the org's hash tag.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::StateError;

/// Where stored responses live.
#[async_trait]
pub trait ResponseStore: Send + Sync + 'static {
    /// Stores `body` as `id` of `org` for `ttl` (replacing what was there).
    async fn put(&self, org: &str, id: &str, body: &str, ttl: Duration) -> Result<(), StateError>;
    /// The stored body, unless it is unknown, expired or another org's.
    async fn get(&self, org: &str, id: &str) -> Result<Option<String>, StateError>;
    /// Removes it; whether it was there.
    async fn delete(&self, org: &str, id: &str) -> Result<bool, StateError>;
}

fn key(org: &str, id: &str) -> String {
    format!("sy:{{org:{org}}}:resp:{id}")
}

/// The Redis [`ResponseStore`].
#[derive(Clone)]
pub struct RedisResponseStore {
    conn: crate::redis_conn::RedisConn,
}

impl std::fmt::Debug for RedisResponseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisResponseStore")
    }
}

impl RedisResponseStore {
    /// A store on `url`.
    pub async fn open(url: &str) -> Result<Self, StateError> {
        let (_, conn) = crate::redis_store::connect(url).await?;
        Ok(RedisResponseStore { conn })
    }
}

#[async_trait]
impl ResponseStore for RedisResponseStore {
    async fn put(&self, org: &str, id: &str, body: &str, ttl: Duration) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(key(org, id))
            .arg(body)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn get(&self, org: &str, id: &str) -> Result<Option<String>, StateError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("GET")
            .arg(key(org, id))
            .query_async(&mut conn)
            .await?)
    }

    async fn delete(&self, org: &str, id: &str) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        let n: i64 = redis::cmd("DEL")
            .arg(key(org, id))
            .query_async(&mut conn)
            .await?;
        Ok(n > 0)
    }
}

/// The in-memory [`ResponseStore`].
#[derive(Default)]
pub struct MemoryResponseStore {
    entries: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl std::fmt::Debug for MemoryResponseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryResponseStore")
    }
}

#[async_trait]
impl ResponseStore for MemoryResponseStore {
    async fn put(&self, org: &str, id: &str, body: &str, ttl: Duration) -> Result<(), StateError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        entries.retain(|_, (_, expires)| *expires > now);
        entries.insert(
            (org.to_string(), id.to_string()),
            (body.to_string(), now + ttl),
        );
        Ok(())
    }

    async fn get(&self, org: &str, id: &str) -> Result<Option<String>, StateError> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        Ok(entries
            .get(&(org.to_string(), id.to_string()))
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(body, _)| body.clone()))
    }

    async fn delete(&self, org: &str, id: &str) -> Result<bool, StateError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        Ok(entries
            .remove(&(org.to_string(), id.to_string()))
            .is_some_and(|(_, expires)| expires > Instant::now()))
    }
}
