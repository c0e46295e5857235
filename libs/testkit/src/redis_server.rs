//! A real `redis-server` for a test: ephemeral port, private data directory, killable with
//! SIGKILL and restartable on the same port and directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::{Result, TestkitError, free_port};

/// How to run the server.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Append-only file with `appendfsync always`: every acknowledged write survives `kill -9`.
    /// Without it nothing is persisted and a restart starts empty.
    pub aof: bool,
    /// The binary; `SWITCHYARD_REDIS_SERVER` or `redis-server` on PATH when absent.
    pub binary: Option<PathBuf>,
    /// More arguments (cluster mode, `--replicaof`, …).
    pub extra_args: Vec<String>,
}

/// A running (or killed) redis-server owned by a test. Killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    aof: bool,
    extra_args: Vec<String>,
    child: Option<Child>,
}

const INSTALL_HINT: &str = "install Debian's `redis-server` package (apt-get install -y redis-server) or set SWITCHYARD_REDIS_SERVER";

/// The `redis-server` binary: `explicit`, else `SWITCHYARD_REDIS_SERVER`, else on `PATH`.
pub(crate) fn find_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    let missing = |program: &str| TestkitError::Missing {
        program: program.to_string(),
        hint: INSTALL_HINT.to_string(),
    };
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(missing(&path.display().to_string()))
        };
    }
    if let Some(path) = std::env::var_os("SWITCHYARD_REDIS_SERVER") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(missing(&path.display().to_string()))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| missing("redis-server"))
}

impl RedisServer {
    /// Starts a server without persistence.
    pub async fn start() -> Result<Self> {
        Self::start_with(RedisOptions::default()).await
    }

    /// Starts a server with `options`.
    pub async fn start_with(options: RedisOptions) -> Result<Self> {
        let binary = find_binary(options.binary.as_deref())?;
        let mut last = None;
        // The port is only reserved until redis binds it; another process may take it in
        // between, so a failed start is retried on a new port.
        for _ in 0..5 {
            let mut server = RedisServer {
                binary: binary.clone(),
                port: free_port()?,
                dir: tempfile::Builder::new()
                    .prefix("switchyard-redis-")
                    .tempdir()
                    .map_err(TestkitError::io("creating the redis data directory"))?,
                aof: options.aof,
                extra_args: options.extra_args.clone(),
                child: None,
            };
            match server.spawn().await {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| TestkitError::NotReady {
            what: "redis-server".into(),
            detail: "no attempt made".into(),
        }))
    }

    async fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args([
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
            ])
            .args(["--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path());
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.args(&self.extra_args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| TestkitError::Spawn {
            program: self.binary.clone(),
            source,
        })?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(10)).await
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(TestkitError::NotReady {
                    what: format!("redis-server on port {}", self.port),
                    detail: format!("exited with {status}: {}", self.log_tail()),
                });
            }
            if self.ping().await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::NotReady {
                    what: format!("redis-server on port {}", self.port),
                    detail: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self) -> Result<()> {
        let mut conn = self.connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether AOF persistence is on.
    pub fn aof(&self) -> bool {
        self.aof
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new multiplexed connection.
    pub async fn connection(&self) -> Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url())?;
        Ok(client.get_multiplexed_async_connection().await?)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, as a crash would: no shutdown, no final save.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .await
                .map_err(TestkitError::io("killing redis-server"))?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and data directory (killing it first if it
    /// still runs). With AOF the data comes back; without, it is gone.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        // The kernel may need a moment to release the port after the kill.
        loop {
            match self.spawn().await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
