//! Real highly available Redis topologies on loopback for tests: a Redis Cluster of several
//! primaries (optionally with replicas, so it fails over), and a primary with replicas watched by three Sentinels (which can fail over).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::{RedisOptions, RedisServer, Result, TestkitError, free_port};

async fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Result<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    Ok(cmd.query_async(&mut conn).await?)
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut ready: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let seen = ready().await;
        match seen {
            None => return Ok(()),
            Some(detail) if Instant::now() >= deadline => {
                return Err(TestkitError::NotReady {
                    what: what.to_string(),
                    detail,
                });
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until the replica on `port` is linked to its primary and in sync.
async fn wait_in_sync(port: u16) -> Result<()> {
    wait_until("replica in sync", Duration::from_secs(20), || async move {
        let info: String = query(port, redis::cmd("INFO").arg("replication"))
            .await
            .unwrap_or_default();
        (!info.contains("master_link_status:up")).then_some(info)
    })
    .await
}

/// A Redis Cluster: `n` primaries with the slots split evenly, and their replicas if asked for.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `primaries` cluster-mode servers, assigns the slots and joins them.
    pub async fn start(primaries: usize) -> Result<Self> {
        Self::start_with_replicas(primaries, 0).await
    }

    /// As [`RedisCluster::start`], with `replicas` replicas for each primary (so the cluster
    /// fails over when a primary dies).
    pub async fn start_with_replicas(primaries: usize, replicas: usize) -> Result<Self> {
        let mut nodes = Vec::new();
        for _ in 0..primaries * (1 + replicas) {
            nodes.push(
                RedisServer::start_with(RedisOptions {
                    extra_args: [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ]
                    .map(String::from)
                    .to_vec(),
                    ..Default::default()
                })
                .await?,
            );
        }
        let per = 16384 / primaries;
        for (i, node) in nodes.iter().take(primaries).enumerate() {
            let start = i * per;
            let end = if i + 1 == primaries {
                16383
            } else {
                start + per - 1
            };
            let _: String = query(
                node.port(),
                redis::cmd("CLUSTER")
                    .arg("ADDSLOTSRANGE")
                    .arg(start)
                    .arg(end),
            )
            .await?;
        }
        for node in &nodes[1..] {
            let _: String = query(
                nodes[0].port(),
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(node.port()),
            )
            .await?;
        }
        let total = nodes.len();
        // Replica j of primary i is node primaries + i * replicas + j; it can follow its
        // primary once the handshake told it about the primary.
        for i in 0..primaries {
            let id: String = query(nodes[i].port(), redis::cmd("CLUSTER").arg("MYID")).await?;
            for j in 0..replicas {
                let port = nodes[primaries + i * replicas + j].port();
                let id = id.clone();
                wait_until("cluster replica", Duration::from_secs(20), || {
                    let id = id.clone();
                    async move {
                        query::<String>(port, redis::cmd("CLUSTER").arg("REPLICATE").arg(&id))
                            .await
                            .err()
                            .map(|e| e.to_string())
                    }
                })
                .await?;
            }
        }
        let ports: Vec<u16> = nodes.iter().map(RedisServer::port).collect();
        wait_until("redis cluster state ok", Duration::from_secs(30), || {
            let ports = ports.clone();
            async move {
                for p in ports {
                    let info: String = query(p, redis::cmd("CLUSTER").arg("INFO"))
                        .await
                        .unwrap_or_default();
                    if !info.contains("cluster_state:ok")
                        || !info.contains(&format!("cluster_known_nodes:{total}"))
                    {
                        return Some(format!("node {p}: {}", info.lines().next().unwrap_or("")));
                    }
                }
                None
            }
        })
        .await?;
        for r in &nodes[primaries..] {
            wait_in_sync(r.port()).await?;
        }
        Ok(RedisCluster { nodes })
    }

    /// The port of the primary that owns `key`'s slot, as any live node reports it.
    pub async fn primary_for(&self, key: &str) -> Result<u16> {
        let mut last = None;
        for n in &self.nodes {
            let r: Result<u16> = async {
                let slot: u16 =
                    query(n.port(), redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).await?;
                let slots: Vec<(u16, u16, (String, u16))> = {
                    let raw: Vec<redis::Value> =
                        query(n.port(), redis::cmd("CLUSTER").arg("SLOTS")).await?;
                    raw.into_iter()
                        .filter_map(|v| match v {
                            redis::Value::Array(items) if items.len() >= 3 => {
                                let num = |v: &redis::Value| match v {
                                    redis::Value::Int(i) => Some(*i as u16),
                                    _ => None,
                                };
                                let host = match &items[2] {
                                    redis::Value::Array(h) if h.len() >= 2 => {
                                        num(&h[1]).map(|p| (String::new(), p))
                                    }
                                    _ => None,
                                };
                                Some((num(&items[0])?, num(&items[1])?, host?))
                            }
                            _ => None,
                        })
                        .collect()
                };
                slots
                    .into_iter()
                    .find(|(a, b, _)| (*a..=*b).contains(&slot))
                    .map(|(_, _, (_, port))| port)
                    .ok_or_else(|| TestkitError::NotReady {
                        what: "cluster slot owner".into(),
                        detail: format!("slot {slot} unassigned"),
                    })
            }
            .await;
            match r {
                Ok(p) => return Ok(p),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| TestkitError::NotReady {
            what: "cluster".into(),
            detail: "no node".into(),
        }))
    }

    /// The node listening on `port`.
    pub fn server(&mut self, port: u16) -> Option<&mut RedisServer> {
        self.nodes.iter_mut().find(|s| s.port() == port)
    }

    /// Waits until a node other than `old` owns `key`'s slot, and returns its port.
    pub async fn wait_for_failover(&self, key: &str, old: u16, timeout: Duration) -> Result<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(port) = self.primary_for(key).await
                && port != old
            {
                return Ok(port);
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::NotReady {
                    what: "cluster failover".into(),
                    detail: format!("slot of {key} still on {old}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,…` (every node, replicas included).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}

/// A Sentinel process.
#[derive(Debug)]
struct Sentinel {
    port: u16,
    _dir: tempfile::TempDir,
    _child: Child,
}

/// A primary with replicas, watched by three Sentinels (quorum 2, down after 1 s).
#[derive(Debug)]
pub struct RedisSentinels {
    /// The data nodes: the first started as primary.
    pub servers: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
}

/// The name the Sentinels monitor.
pub const SENTINEL_SERVICE: &str = "switchyard";

impl RedisSentinels {
    /// Starts a primary, `replicas` replicas and three Sentinels, and waits until the Sentinels
    /// know every replica and each other.
    pub async fn start(replicas: usize) -> Result<Self> {
        let primary = RedisServer::start().await?;
        let mut servers = vec![primary];
        for _ in 0..replicas {
            let replica = RedisServer::start_with(RedisOptions {
                extra_args: vec![
                    "--replicaof".into(),
                    "127.0.0.1".into(),
                    servers[0].port().to_string(),
                ],
                ..Default::default()
            })
            .await?;
            servers.push(replica);
        }
        for r in &servers[1..] {
            wait_in_sync(r.port()).await?;
        }
        let binary = crate::redis_server::find_binary(None)?;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(Sentinel::spawn(&binary, servers[0].port()).await?);
        }
        let me = RedisSentinels { servers, sentinels };
        for s in &me.sentinels {
            let port = s.port;
            wait_until(
                "sentinel discovery",
                Duration::from_secs(30),
                || async move {
                    let r: redis::RedisResult<Vec<redis::Value>> = async {
                        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
                        let mut c = client.get_multiplexed_async_connection().await?;
                        let peers: Vec<redis::Value> = redis::cmd("SENTINEL")
                            .arg("SENTINELS")
                            .arg(SENTINEL_SERVICE)
                            .query_async(&mut c)
                            .await?;
                        let reps: Vec<redis::Value> = redis::cmd("SENTINEL")
                            .arg("REPLICAS")
                            .arg(SENTINEL_SERVICE)
                            .query_async(&mut c)
                            .await?;
                        Ok(vec![
                            redis::Value::Int(peers.len() as i64),
                            redis::Value::Int(reps.len() as i64),
                        ])
                    }
                    .await;
                    match r.as_deref() {
                        Ok([redis::Value::Int(2), redis::Value::Int(n)])
                            if *n as usize == replicas =>
                        {
                            None
                        }
                        other => Some(format!("{other:?}")),
                    }
                },
            )
            .await?;
        }
        Ok(me)
    }

    /// `redis+sentinel://127.0.0.1:s1,…/switchyard`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{SENTINEL_SERVICE}", hosts.join(","))
    }

    /// The primary's port as the first reachable Sentinel reports it.
    pub async fn primary_port(&self) -> Result<u16> {
        let mut last = None;
        for s in &self.sentinels {
            let r: Result<(String, u16)> = query(
                s.port,
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(SENTINEL_SERVICE),
            )
            .await;
            match r {
                Ok((_, port)) => return Ok(port),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| TestkitError::NotReady {
            what: "sentinel".into(),
            detail: "none".into(),
        }))
    }

    /// The data node listening on `port`.
    pub fn server(&mut self, port: u16) -> Option<&mut RedisServer> {
        self.servers.iter_mut().find(|s| s.port() == port)
    }

    /// Waits until the Sentinels report a primary other than `old`, and returns its port.
    pub async fn wait_for_failover(&self, old: u16, timeout: Duration) -> Result<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(port) = self.primary_port().await
                && port != old
            {
                return Ok(port);
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::NotReady {
                    what: "sentinel failover".into(),
                    detail: format!("primary still {old}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Sentinel {
    async fn spawn(binary: &PathBuf, primary: u16) -> Result<Sentinel> {
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let dir = tempfile::Builder::new()
                .prefix("switchyard-sentinel-")
                .tempdir()
                .map_err(TestkitError::io("creating the sentinel directory"))?;
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {dir}\nlogfile {dir}/sentinel.log\nsentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary} 2\nsentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\nsentinel failover-timeout {SENTINEL_SERVICE} 10000\nsentinel parallel-syncs {SENTINEL_SERVICE} 1\n",
                    dir = dir.path().display()
                ),
            )
            .map_err(TestkitError::io("writing sentinel.conf"))?;
            let child = Command::new(binary)
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| TestkitError::Spawn {
                    program: binary.clone(),
                    source,
                })?;
            let sentinel = Sentinel {
                port,
                _dir: dir,
                _child: child,
            };
            let ok = wait_until("sentinel", Duration::from_secs(5), || async move {
                query::<String>(port, &redis::cmd("PING"))
                    .await
                    .is_err()
                    .then(|| "no PONG".to_string())
            })
            .await;
            match ok {
                Ok(()) => return Ok(sentinel),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| TestkitError::NotReady {
            what: "sentinel".into(),
            detail: "no attempt".into(),
        }))
    }
}
