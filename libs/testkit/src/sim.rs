//! The provider simulator, in this process (fast, for most tests) or as its own binary (for
//! scenarios that kill and restart it).

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use switchyard_provider_sim::{Ready, SimConfig, SimHandle};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{Result, TestkitError, workspace_bin};

/// Starts the simulator in this process from YAML config text.
pub async fn start_sim(yaml: &str) -> Result<SimHandle> {
    let config: SimConfig =
        switchyard_config::parse_str("sim config", yaml).map_err(|e| TestkitError::NotReady {
            what: "provider simulator".into(),
            detail: e.to_string(),
        })?;
    switchyard_provider_sim::start(config)
        .await
        .map_err(|e| TestkitError::NotReady {
            what: "provider simulator".into(),
            detail: e.to_string(),
        })
}

/// The simulator binary running as a child process; killed when dropped.
#[derive(Debug)]
pub struct SimProcess {
    child: Child,
    /// Its bound addresses, as it printed them.
    pub ready: Ready,
    _config: tempfile::NamedTempFile,
}

impl SimProcess {
    /// Builds (if needed) and spawns `switchyard-provider-sim` with YAML config text and extra
    /// environment, and waits for its ready line.
    pub async fn spawn(yaml: &str, env: &[(&str, &str)]) -> Result<Self> {
        let bin = workspace_bin("switchyard-provider-sim", "switchyard-provider-sim")?;
        let mut config = tempfile::Builder::new()
            .suffix(".yaml")
            .tempfile()
            .map_err(TestkitError::io("writing the sim config"))?;
        config
            .write_all(yaml.as_bytes())
            .map_err(TestkitError::io("writing the sim config"))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(config.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| TestkitError::Spawn {
            program: bin.clone(),
            source,
        })?;
        let stdout = child.stdout.take().ok_or_else(|| TestkitError::NotReady {
            what: "provider simulator".into(),
            detail: "no stdout".into(),
        })?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| TestkitError::NotReady {
                what: "provider simulator".into(),
                detail: "no ready line within 30 s".into(),
            })?
            .map_err(TestkitError::io("reading the simulator's stdout"))?;
        let Some(line) = line else {
            let status = child.wait().await.ok();
            return Err(TestkitError::NotReady {
                what: "provider simulator".into(),
                detail: format!("exited ({status:?}) before printing its addresses"),
            });
        };
        let ready: Ready = serde_json::from_str(&line).map_err(|e| TestkitError::NotReady {
            what: "provider simulator".into(),
            detail: format!("unreadable ready line `{line}`: {e}"),
        })?;
        Ok(SimProcess {
            child,
            ready,
            _config: config,
        })
    }

    /// The control API's base URL.
    pub fn control_url(&self) -> String {
        format!("http://{}", self.ready.control)
    }

    /// A provider's base URL.
    pub fn base_url(&self, id: &str) -> Option<&str> {
        self.ready.providers.get(id).map(String::as_str)
    }

    /// SIGKILL.
    pub async fn kill(&mut self) -> Result<()> {
        self.child
            .kill()
            .await
            .map_err(TestkitError::io("killing the simulator"))
    }
}
