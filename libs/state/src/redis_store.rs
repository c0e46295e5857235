//! Redis policy store. Writes go through a reconnecting multiplexed connection; announcements
//! come from a pub/sub connection that a background task keeps subscribed.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::AsyncCommands;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::StateError;
use crate::policy::{PolicyStore, StoredSnapshot, snapshot_channel};
use crate::redis_conn::{RedisConn, RedisTarget};
use switchyard_core::clock::now_ms;

const SNAPSHOT_KEY: &str = "sy:policy:snapshot";
const AUDIT_KEY: &str = "sy:policy:audit";

/// Publish-if-changed, atomically: the version only moves when the content hash does.
const PUBLISH: &str = r"
local cur = redis.call('HGET', KEYS[1], 'sha')
if cur == ARGV[1] then
  return tonumber(redis.call('HGET', KEYS[1], 'version'))
end
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'sha', ARGV[1], 'body', ARGV[2], 'created_ms', ARGV[3])
redis.call('PUBLISH', ARGV[4], v)
return v
";

/// Opens a reconnecting connection to `url`: a standalone server, a cluster or a
/// Sentinel-managed primary (see [`crate::redis_conn`]).
pub async fn connect(url: &str) -> Result<(RedisTarget, RedisConn), StateError> {
    let target = RedisTarget::parse(url)?;
    let conn = target.connect().await?;
    Ok((target, conn))
}

/// The Redis [`PolicyStore`].
#[derive(Clone)]
pub struct RedisPolicyStore {
    conn: RedisConn,
    changes: broadcast::Sender<u64>,
    publish: redis::Script,
}

impl std::fmt::Debug for RedisPolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisPolicyStore")
    }
}

impl RedisPolicyStore {
    /// A store on `url`, with a background subscriber that lives until `shutdown`.
    pub async fn open(url: &str, shutdown: CancellationToken) -> Result<Self, StateError> {
        let (target, conn) = connect(url).await?;
        let changes = broadcast::channel(64).0;
        tokio::spawn(subscriber(
            target,
            snapshot_channel(),
            changes.clone(),
            shutdown,
        ));
        Ok(RedisPolicyStore {
            conn,
            changes,
            publish: redis::Script::new(PUBLISH),
        })
    }

    fn docs_key(collection: &str) -> String {
        format!("sy:policy:docs:{collection}")
    }
}

/// Keeps a pub/sub subscription to `channel` alive and forwards what is announced on it (a
/// version, or a payload that decodes as `T`); reconnects after any failure.
pub(crate) async fn subscriber<T: redis::FromRedisValue + Send + 'static>(
    target: RedisTarget,
    channel: &'static str,
    changes: broadcast::Sender<T>,
    shutdown: CancellationToken,
) {
    use futures::StreamExt;
    let mut attempts = 0usize;
    loop {
        attempts += 1;
        let attempt = async {
            let client = target.pubsub_client(attempts).await?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                if let Ok(v) = msg.get_payload::<T>() {
                    let _ = changes.send(v);
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = attempt => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, channel, "subscription lost; retrying");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

#[async_trait]
impl PolicyStore for RedisPolicyStore {
    async fn publish_snapshot(&self, sha256: &str, body: Bytes) -> Result<u64, StateError> {
        let mut conn = self.conn.clone();
        let v: u64 = self
            .publish
            .key(SNAPSHOT_KEY)
            .arg(sha256)
            .arg(body.as_ref())
            .arg(now_ms())
            .arg(snapshot_channel())
            .invoke_async(&mut conn)
            .await?;
        Ok(v)
    }

    async fn current_snapshot(&self) -> Result<Option<StoredSnapshot>, StateError> {
        let mut conn = self.conn.clone();
        let (version, sha, body, created): (
            Option<u64>,
            Option<String>,
            Option<Vec<u8>>,
            Option<u64>,
        ) = redis::cmd("HMGET")
            .arg(SNAPSHOT_KEY)
            .arg(&["version", "sha", "body", "created_ms"])
            .query_async(&mut conn)
            .await?;
        match (version, sha, body) {
            (Some(version), Some(sha256), Some(body)) => Ok(Some(StoredSnapshot {
                version,
                sha256,
                body: Bytes::from(body),
                created_ms: created.unwrap_or(0),
            })),
            (None, None, None) => Ok(None),
            _ => Err(StateError::Corrupt {
                key: SNAPSHOT_KEY.into(),
                detail: "incomplete snapshot record".into(),
            }),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn put_doc(&self, collection: &str, id: &str, json: &str) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: () = conn.hset(Self::docs_key(collection), id, json).await?;
        Ok(())
    }

    async fn remove_doc(&self, collection: &str, id: &str) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        let n: u64 = conn.hdel(Self::docs_key(collection), id).await?;
        Ok(n > 0)
    }

    async fn list_docs(&self, collection: &str) -> Result<Vec<(String, String)>, StateError> {
        let mut conn = self.conn.clone();
        let mut all: Vec<(String, String)> = conn.hgetall(Self::docs_key(collection)).await?;
        all.sort();
        Ok(all)
    }

    async fn append_audit(&self, json: &str) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("XADD")
            .arg(AUDIT_KEY)
            .arg("MAXLEN")
            .arg("~")
            .arg(100_000)
            .arg("*")
            .arg("record")
            .arg(json)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn audit_tail(&self, limit: usize) -> Result<Vec<String>, StateError> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(AUDIT_KEY)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        let mut out: Vec<String> = reply
            .ids
            .iter()
            .filter_map(|id| id.get::<String>("record"))
            .collect();
        out.reverse();
        Ok(out)
    }
}
