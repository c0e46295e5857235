//! A workspace service binary running as a child process, for scenarios that kill, stop and
//! restart services. Every Switchyard service prints one JSON line with its bound addresses on
//! stdout when it is ready, and logs to stderr; the log goes to a file the test can read.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{Result, TestkitError, workspace_bin};

/// A service process; killed when dropped.
#[derive(Debug)]
pub struct ServiceProcess {
    name: String,
    child: Child,
    /// The ready line it printed (`{"grpc": "127.0.0.1:…", "http": "127.0.0.1:…"}` and the like).
    pub ready: Value,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServiceProcess {
    /// Builds (if needed) binary `bin` of `package`, spawns it with `args` and `env`, and waits
    /// up to 30 s for its ready line. `name` identifies it in errors.
    pub async fn spawn<I, S>(
        name: &str,
        package: &str,
        bin: &str,
        args: I,
        env: &[(&str, &str)],
    ) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::spawn_wrapped(name, &[], package, bin, args, env).await
    }

    /// As [`ServiceProcess::spawn`], run through `wrapper` (a command and its arguments that
    /// execute the rest, such as `ip netns exec NAME`).
    pub async fn spawn_wrapped<I, S>(
        name: &str,
        wrapper: &[&str],
        package: &str,
        bin: &str,
        args: I,
        env: &[(&str, &str)],
    ) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = workspace_bin(package, bin)?;
        let dir = tempfile::tempdir().map_err(TestkitError::io("creating a log directory"))?;
        let log = dir.path().join(format!("{name}.log"));
        let log_file =
            std::fs::File::create(&log).map_err(TestkitError::io("creating a log file"))?;
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let mut child = command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| TestkitError::Spawn {
                program: program.clone(),
                source,
            })?;
        let not_ready = |detail: String| TestkitError::NotReady {
            what: name.to_string(),
            detail,
        };
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| not_ready("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| not_ready("no ready line within 30 s".into()))?
            .map_err(TestkitError::io("reading a service's stdout"))?;
        let Some(line) = line else {
            let status = child.wait().await.ok();
            let tail = tail(&std::fs::read_to_string(&log).unwrap_or_default());
            return Err(not_ready(format!(
                "exited ({status:?}) before printing its addresses; log:\n{tail}"
            )));
        };
        let ready: Value = serde_json::from_str(&line)
            .map_err(|e| not_ready(format!("unreadable ready line `{line}`: {e}")))?;
        Ok(ServiceProcess {
            name: name.to_string(),
            child,
            ready,
            log,
            _dir: dir,
        })
    }

    /// The address under `key` in the ready line, e.g. `addr("grpc")`.
    pub fn addr(&self, key: &str) -> Option<&str> {
        self.ready.get(key).and_then(Value::as_str)
    }

    /// `http://` + the address under `key`.
    pub fn url(&self, key: &str) -> String {
        format!("http://{}", self.addr(key).unwrap_or("missing-address"))
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL, and waits for the exit.
    pub async fn kill(&mut self) -> Result<()> {
        self.child
            .kill()
            .await
            .map_err(TestkitError::io(format!("killing {}", self.name)))
    }

    /// SIGTERM, then waits up to `grace` for a clean exit; returns whether it exited with 0.
    pub async fn terminate(&mut self, grace: Duration) -> Result<bool> {
        let Some(pid) = self.child.id() else {
            return Ok(false);
        };
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .map_err(TestkitError::io(format!("signalling {}", self.name)))?;
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok(status
                .map_err(TestkitError::io(format!("waiting for {}", self.name)))?
                .success()),
            Err(_) => {
                self.kill().await?;
                Err(TestkitError::NotReady {
                    what: format!("{} to exit after SIGTERM", self.name),
                    detail: format!("still running after {grace:?}; killed"),
                })
            }
        }
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
