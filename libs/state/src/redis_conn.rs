//! Where Redis is and how to talk to it: a standalone server, a Redis Cluster, or a primary
//! managed by Sentinel, chosen by the URL.
//!
//! - `redis://[user:password@]host:port[/db]` (or `rediss://`): one server.
//! - `redis+cluster://[user:password@]host:port,host:port,...[?wait_replicas=N]`: a Redis
//!   Cluster, reached through any of these seed nodes; commands follow the slot map and its
//!   changes.
//! - `redis+sentinel://[user:password@]host:port,host:port,.../service[/db][?wait_replicas=N]`:
//!   the primary of `service` as the listed Sentinels report it; the credentials and db are the
//!   data nodes'. After a failover the next command re-asks the Sentinels.
//!
//! `wait_replicas` (default 1 under Sentinel, 0 for a cluster) is how many replicas must have a
//! settlement before it is acknowledged (`WAIT`, on the node that owns the org's slot), so a
//! failover cannot lose settled spend.
//!
//! Every multi-key script keeps its keys in one hash slot (`{org:…}`, `{health}` tags), so the
//! same scripts run unchanged on a cluster. A lost or demoted primary fails the commands in
//! flight, which callers treat as a Redis outage (their fail modes apply), and later commands
//! go to the new primary. A read that lost its connection is sent once more, on a new one.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value};

use crate::StateError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where Redis is, parsed from a URL.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server.
    Standalone(String),
    /// A cluster, by seed node URLs, and the replicas a settlement waits for.
    Cluster(Vec<String>, u32),
    /// A Sentinel-managed primary.
    Sentinel {
        /// Sentinel URLs.
        sentinels: Vec<String>,
        /// The monitored service (master name).
        service: String,
        /// `redis://[auth@]x/db`: the data nodes' credentials and database.
        node: String,
        /// The replicas a settlement waits for.
        wait_replicas: u32,
    },
}

impl std::fmt::Debug for RedisTarget {
    /// Without credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisTarget::Standalone(u) => write!(f, "redis {}", redact(u)),
            RedisTarget::Cluster(seeds, _) => {
                let seeds: Vec<String> = seeds.iter().map(|s| redact(s)).collect();
                write!(f, "redis cluster {}", seeds.join(","))
            }
            RedisTarget::Sentinel {
                sentinels, service, ..
            } => write!(
                f,
                "redis sentinel {} service {service}",
                sentinels.join(",")
            ),
        }
    }
}

/// A URL without its password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn invalid(url: &str, why: &str) -> StateError {
    StateError::Unavailable(format!("invalid Redis URL `{}`: {why}", redact(url)))
}

impl RedisTarget {
    /// Parses a URL of the forms in the module docs.
    pub fn parse(url: &str) -> Result<Self, StateError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            invalid(
                url,
                "no scheme (redis://, redis+cluster://, redis+sentinel://)",
            )
        })?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (format!("{auth}@"), rest),
            None => (String::new(), rest),
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut wait_replicas = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("wait_replicas", n)) if scheme != "redis" && scheme != "rediss" => {
                    wait_replicas =
                        Some(n.parse::<u32>().map_err(|_| {
                            invalid(url, "wait_replicas must be a number of replicas")
                        })?);
                }
                _ if scheme == "redis" || scheme == "rediss" => {}
                _ => return Err(invalid(url, &format!("unknown option `{pair}`"))),
            }
        }
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let hosts: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
        if hosts.is_empty() {
            return Err(invalid(url, "no host"));
        }
        match scheme {
            "redis" | "rediss" => {
                if hosts.len() > 1 {
                    return Err(invalid(
                        url,
                        "several hosts: use redis+cluster:// or redis+sentinel://",
                    ));
                }
                Ok(RedisTarget::Standalone(url.to_string()))
            }
            "redis+cluster" => {
                if !path.trim_matches('/').is_empty() {
                    return Err(invalid(url, "a cluster has only database 0"));
                }
                Ok(RedisTarget::Cluster(
                    hosts.iter().map(|h| format!("redis://{auth}{h}")).collect(),
                    wait_replicas.unwrap_or(0),
                ))
            }
            "redis+sentinel" => {
                let mut parts = path.split('/').filter(|p| !p.is_empty());
                let service = parts
                    .next()
                    .ok_or_else(|| invalid(url, "no service name after the hosts (…/mymaster)"))?;
                let db = parts.next().unwrap_or("0");
                Ok(RedisTarget::Sentinel {
                    sentinels: hosts.iter().map(|h| format!("redis://{h}")).collect(),
                    service: service.to_string(),
                    node: format!("redis://{auth}sentinel-node/{db}"),
                    wait_replicas: wait_replicas.unwrap_or(1),
                })
            }
            other => Err(invalid(url, &format!("unknown scheme `{other}`"))),
        }
    }

    /// A plain client for pub/sub: the server, the `attempt`-th seed node of a cluster (classic
    /// pub/sub messages reach every node), or the primary the Sentinels report now.
    pub async fn pubsub_client(&self, attempt: usize) -> Result<redis::Client, RedisError> {
        match self {
            RedisTarget::Standalone(url) => redis::Client::open(url.as_str()),
            RedisTarget::Cluster(seeds, _) => {
                redis::Client::open(seeds[attempt % seeds.len()].as_str())
            }
            RedisTarget::Sentinel { .. } => self.sentinel_client()?.async_get_client().await,
        }
    }

    fn sentinel_client(&self) -> Result<redis::sentinel::SentinelClient, RedisError> {
        let RedisTarget::Sentinel {
            sentinels,
            service,
            node,
            ..
        } = self
        else {
            return Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a Sentinel target",
            )));
        };
        let node = node
            .as_str()
            .into_connection_info()?
            .redis_settings()
            .clone();
        redis::sentinel::SentinelClient::build(
            sentinels.clone(),
            service.clone(),
            Some(
                redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(node),
            ),
            redis::sentinel::SentinelServerType::Master,
        )
    }

    /// Connects: a reconnecting connection for one server, a cluster connection, or a
    /// Sentinel-following connection.
    pub async fn connect(&self) -> Result<RedisConn, StateError> {
        Ok(match self {
            RedisTarget::Standalone(url) => {
                RedisConn::Single(manager(redis::Client::open(url.as_str())?).await?)
            }
            RedisTarget::Cluster(seeds, wait) => {
                let client = redis::cluster::ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(2)
                    .build()?;
                RedisConn::Cluster(client.get_async_connection().await?, *wait)
            }
            RedisTarget::Sentinel { .. } => {
                let s = Arc::new(SentinelConn {
                    target: self.clone(),
                    current: RwLock::new(None),
                    resolving: tokio::sync::Mutex::new(()),
                });
                s.primary().await?;
                RedisConn::Sentinel(s, None)
            }
        })
    }
}

async fn manager(client: redis::Client) -> Result<ConnectionManager, RedisError> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client, config).await
}

/// A connection that follows the primary the Sentinels report.
pub struct SentinelConn {
    target: RedisTarget,
    current: RwLock<Option<ConnectionManager>>,
    resolving: tokio::sync::Mutex<()>,
}

impl SentinelConn {
    /// The connection to the primary, asking the Sentinels when there is none.
    async fn primary(&self) -> Result<ConnectionManager, RedisError> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        // One resolution at a time; whoever waited finds the new connection.
        let _one = self.resolving.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let client = self.target.sentinel_client()?.async_get_client().await?;
        tracing::info!(primary = ?client.get_connection_info().addr(), "redis primary from sentinel");
        let c = manager(client).await?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    fn wait_replicas(&self) -> u32 {
        match &self.target {
            RedisTarget::Sentinel { wait_replicas, .. } => *wait_replicas,
            _ => 0,
        }
    }

    fn cached(&self) -> Option<ConnectionManager> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The pinned connection, or the current primary's.
    async fn connection(
        &self,
        pinned: &Option<ConnectionManager>,
    ) -> Result<ConnectionManager, RedisError> {
        match pinned {
            Some(c) => Ok(c.clone()),
            None => self.primary().await,
        }
    }

    /// Notes a command's result: after an error that means the primary is gone or no longer
    /// primary, the next command asks the Sentinels again.
    fn check<T>(&self, r: &Result<T, RedisError>) {
        let Err(e) = r else { return };
        let demoted = e
            .code()
            .is_some_and(|c| c == "READONLY" || c == "MASTERDOWN");
        if demoted
            || e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
        {
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

/// Whether `e` means the connection was lost (closed by a failover, a Sentinel
/// reconfiguring its clients or a restart) rather than a command refused or slow.
fn dropped(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// Whether `cmd` only reads, so that sending it again after a lost connection cannot apply
/// anything twice. Such a command is retried once (on a new connection, under Sentinel to the
/// primary as the Sentinels report it now); writes and scripts never are: their callers' fail
/// modes apply.
fn read_only(cmd: &Cmd) -> bool {
    const READS: &str = "GET MGET HGET HMGET HGETALL HLEN HSCAN EXISTS TTL PTTL XRANGE XREVRANGE \
                         XLEN SMEMBERS SSCAN SCAN ZRANGE ZSCORE ZCARD";
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) => READS
            .split_whitespace()
            .any(|r| name.eq_ignore_ascii_case(r.as_bytes())),
        _ => false,
    }
}

/// A connection to whichever Redis deployment the URL named; cheap to clone.
#[derive(Clone)]
pub enum RedisConn {
    /// One server.
    Single(ConnectionManager),
    /// A cluster, and the replicas a settlement waits for.
    Cluster(ClusterConnection, u32),
    /// A Sentinel-managed primary: the current one for each command, or one kept (pinned) for
    /// a write and the wait for its replica.
    Sentinel(Arc<SentinelConn>, Option<ConnectionManager>),
}

impl RedisConn {
    /// For a write that must survive a failover: the connection to use (pinned to the current
    /// primary under Sentinel) and how many replicas to wait for after it (`wait_replicas`).
    /// A standalone server's writes are as durable as its AOF.
    pub async fn durable(&self) -> Result<(RedisConn, u32), StateError> {
        match self {
            RedisConn::Sentinel(s, _) => Ok((
                RedisConn::Sentinel(s.clone(), Some(s.primary().await?)),
                s.wait_replicas(),
            )),
            RedisConn::Cluster(c, wait) => Ok((RedisConn::Cluster(c.clone(), *wait), *wait)),
            RedisConn::Single(c) => Ok((RedisConn::Single(c.clone()), 0)),
        }
    }

    /// Waits (up to 1 s) until `replicas` replicas have every write made so far on the
    /// connection to the node that owns `key`; an error otherwise, so the caller does not
    /// acknowledge what a failover could lose.
    pub async fn wait_for_replicas(&mut self, key: &str, replicas: u32) -> Result<(), StateError> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(1000);
        let acked: i64 = match self {
            RedisConn::Cluster(c, _) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(key, SlotAddr::Master);
                let v = c
                    .route_command(
                        wait,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                redis::from_redis_value(v)
                    .map_err(|e| StateError::Unavailable(format!("WAIT reply: {e}")))?
            }
            other => wait.query_async(other).await?,
        };
        if acked < i64::from(replicas) {
            return Err(StateError::Unavailable(format!(
                "{acked} of {replicas} replicas acknowledged the write within 1 s"
            )));
        }
        Ok(())
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => Box::pin(async move {
                match c.req_packed_command(cmd).await {
                    Err(e) if dropped(&e) && read_only(cmd) => c.req_packed_command(cmd).await,
                    r => r,
                }
            }),
            RedisConn::Cluster(c, _) => c.req_packed_command(cmd),
            RedisConn::Sentinel(s, pinned) => Box::pin(async move {
                let mut c = s.connection(pinned).await?;
                let r = c.req_packed_command(cmd).await;
                s.check(&r);
                match r {
                    // The check above dropped the cached primary: this asks the Sentinels again.
                    Err(e) if pinned.is_none() && dropped(&e) && read_only(cmd) => {
                        let mut c = s.primary().await?;
                        let r = c.req_packed_command(cmd).await;
                        s.check(&r);
                        r
                    }
                    r => r,
                }
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c, _) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Sentinel(s, pinned) => Box::pin(async move {
                let mut c = s.connection(pinned).await?;
                let r = c.req_packed_commands(pipeline, offset, count).await;
                s.check(&r);
                r
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c, _) => c.get_db(),
            RedisConn::Sentinel(_, pinned) => pinned.as_ref().map_or(0, ConnectionLike::get_db),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_reads_are_sent_again_after_a_lost_connection() {
        assert!(read_only(redis::cmd("XRANGE").arg("k").arg("-").arg("+")));
        assert!(read_only(redis::cmd("hgetall").arg("k")));
        for write in ["SET", "EVALSHA", "XADD", "HINCRBY", "DEL", "PUBLISH"] {
            assert!(!read_only(redis::cmd(write).arg("k")), "{write}");
        }
    }

    #[test]
    fn urls_name_the_deployment() {
        assert_eq!(
            RedisTarget::parse("redis://:pw@127.0.0.1:6379/2").unwrap(),
            RedisTarget::Standalone("redis://:pw@127.0.0.1:6379/2".into())
        );
        assert_eq!(
            RedisTarget::parse("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000").unwrap(),
            RedisTarget::Cluster(
                vec![
                    "redis://:pw@10.0.0.1:7000".into(),
                    "redis://:pw@10.0.0.2:7000".into()
                ],
                0
            )
        );
        assert_eq!(
            RedisTarget::parse("redis+sentinel://:pw@s1:26379,s2:26379/mymaster/3").unwrap(),
            RedisTarget::Sentinel {
                sentinels: vec!["redis://s1:26379".into(), "redis://s2:26379".into()],
                service: "mymaster".into(),
                node: "redis://:pw@sentinel-node/3".into(),
                wait_replicas: 1,
            }
        );
        assert!(matches!(
            RedisTarget::parse("redis+cluster://a:1,b:2?wait_replicas=1").unwrap(),
            RedisTarget::Cluster(_, 1)
        ));
        assert!(matches!(
            RedisTarget::parse("redis+sentinel://s:1/m?wait_replicas=0").unwrap(),
            RedisTarget::Sentinel {
                wait_replicas: 0,
                ..
            }
        ));
        for (bad, why) in [
            ("127.0.0.1:6379", "no scheme"),
            ("redis://a:1,b:2", "several hosts"),
            ("redis+sentinel://s1:26379", "no service name"),
            ("redis+cluster://a:1/3", "only database 0"),
            ("memcached://a:1", "unknown scheme"),
            ("redis+cluster://a:1?wait_replicas=x", "must be a number"),
            ("redis+cluster://a:1?color=red", "unknown option"),
        ] {
            let e = RedisTarget::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        // Passwords never show.
        let shown = format!(
            "{:?}",
            RedisTarget::parse("redis+cluster://:secret@a:1").unwrap()
        );
        assert!(!shown.contains("secret"), "{shown}");
    }
}
