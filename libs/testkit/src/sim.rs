//! The provider simulator, in this process (fast, for most tests) or as its own binary (for
//! scenarios that kill and restart it).

use std::ffi::OsStr;
use std::io::Write;

use switchyard_provider_sim::{Ready, SimConfig, SimHandle};

use crate::{Result, SimControl, TestkitError, service::ServiceProcess};

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
    process: ServiceProcess,
    /// Its bound addresses, as it printed them.
    pub ready: Ready,
    _config: tempfile::NamedTempFile,
}

impl SimProcess {
    /// Builds (if needed) and spawns `switchyard-provider-sim` with YAML config text and extra
    /// environment, and waits for its ready line.
    pub async fn spawn(yaml: &str, env: &[(&str, &str)]) -> Result<Self> {
        let mut config = tempfile::Builder::new()
            .suffix(".yaml")
            .tempfile()
            .map_err(TestkitError::io("writing the sim config"))?;
        config
            .write_all(yaml.as_bytes())
            .map_err(TestkitError::io("writing the sim config"))?;
        let process = ServiceProcess::spawn(
            "provider simulator",
            "switchyard-provider-sim",
            "switchyard-provider-sim",
            [OsStr::new("--config"), config.path().as_os_str()],
            env,
        )
        .await?;
        let ready: Ready =
            serde_json::from_value(process.ready.clone()).map_err(|e| TestkitError::NotReady {
                what: "provider simulator".into(),
                detail: format!("unreadable ready line `{}`: {e}", process.ready),
            })?;
        Ok(SimProcess {
            process,
            ready,
            _config: config,
        })
    }

    /// The control API's base URL.
    pub fn control_url(&self) -> String {
        format!("http://{}", self.ready.control)
    }

    /// A client of its control API.
    pub fn control(&self) -> SimControl {
        SimControl::new(self.control_url())
    }

    /// A provider's base URL.
    pub fn base_url(&self, id: &str) -> Option<&str> {
        self.ready.providers.get(id).map(String::as_str)
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// SIGKILL.
    pub async fn kill(&mut self) -> Result<()> {
        self.process.kill().await
    }
}
