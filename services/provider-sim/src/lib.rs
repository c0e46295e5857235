//! A real HTTP server that plays any number of simulated LLM providers, one port each, speaking
//! the OpenAI chat-completions (and Azure OpenAI), Anthropic Messages (direct and on Vertex AI),
//! Gemini (direct and on Vertex AI) and Bedrock Converse wire formats (JSON, SSE and AWS's binary
//! event stream), checking the authentication each expects, with a fault
//! profile per provider (latency, error statuses with Retry-After, hangs, TCP resets, malformed
//! bodies, cut streams, rate limits, context-length errors, refusals, invalid tool calls) that a
//! control API can change at run time, and counters of everything received.
//!
//! It is the upstream of the project's tests, demos and benchmarks; it never calls out.

pub mod anthropic;
pub mod bedrock;
pub mod cloud;
pub mod config;
pub mod conn;
pub mod control;
pub mod dialect;
pub mod embeddings;
pub mod gemini;
pub mod generate;
pub mod openai;
pub mod server;
pub mod state;
pub mod tokens;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use switchyard_config::catalog::WireFormat;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{ErrorRate, Faults, Latency, SimConfig, SimProvider};
pub use control::ProviderInfo;
pub use state::Stats;

/// A running simulator.
#[derive(Debug)]
pub struct SimHandle {
    /// Where the control API listens.
    pub control_addr: SocketAddr,
    /// Each provider's id, format and bound address, in config order.
    pub providers: Vec<(String, WireFormat, SocketAddr)>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// What the binary prints once every listener is bound.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Ready {
    /// Control API address.
    pub control: SocketAddr,
    /// Provider id → base URL.
    pub providers: BTreeMap<String, String>,
}

impl SimHandle {
    /// The bound address of provider `id`.
    pub fn addr(&self, id: &str) -> Option<SocketAddr> {
        self.providers
            .iter()
            .find(|(p, _, _)| p == id)
            .map(|(_, _, a)| *a)
    }

    /// The base URL of provider `id` (with `/v1` for the OpenAI format, as SDKs expect).
    pub fn base_url(&self, id: &str) -> Option<String> {
        self.providers
            .iter()
            .find(|(p, _, _)| p == id)
            .map(|(_, f, a)| control::base_url(*f, *a))
    }

    /// The control API's base URL.
    pub fn control_url(&self) -> String {
        format!("http://{}", self.control_addr)
    }

    /// The addresses, as the binary prints them.
    pub fn ready(&self) -> Ready {
        Ready {
            control: self.control_addr,
            providers: self
                .providers
                .iter()
                .map(|(id, f, a)| (id.clone(), control::base_url(*f, *a)))
                .collect(),
        }
    }

    /// Stops accepting, ends every connection (hanging ones included) and waits for the tasks.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            addr,
            what: what.to_string(),
            source,
        })
}

/// Starts the simulator, prints its [`Ready`] line on stdout, and serves until Ctrl-C or
/// SIGTERM. What both binaries that run the simulator do.
pub async fn run_until_signal(config: SimConfig) -> Result<(), String> {
    let sim = start(config).await.map_err(|e| e.to_string())?;
    let ready = serde_json::to_string(&sim.ready()).map_err(|e| e.to_string())?;
    // The ready line is how a parent process learns the ports; without it nobody can use us.
    switchyard_runtime::print_stdout(&format!("{ready}\n"))
        .map_err(|e| format!("cannot print the ready line: {e}"))?;
    switchyard_runtime::shutdown_signal().await;
    sim.shutdown().await;
    Ok(())
}

/// Binds every listener and starts serving; returns once all are bound.
pub async fn start(config: SimConfig) -> Result<SimHandle, StartError> {
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let base_seed = config.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let mut listeners = Vec::new();
    for p in &config.providers {
        listeners.push(bind(p.listen, &format!("provider `{}`", p.id)).await?);
    }
    let control_listener = bind(config.control, "the control API").await?;
    let control_addr = control_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: config.control,
            what: "the control API".into(),
            source,
        })?;

    let mut providers = Vec::new();
    let mut by_id = BTreeMap::new();
    for (i, (p, listener)) in config.providers.into_iter().zip(listeners).enumerate() {
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: p.listen,
            what: format!("provider `{}`", p.id),
            source,
        })?;
        let seed = base_seed.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let state = Arc::new(state::ProviderState::new(p, seed));
        providers.push((state.config.id.clone(), state.config.format, addr));
        by_id.insert(state.config.id.clone(), (state.clone(), addr));
        let router = server::router(server::App {
            state,
            shutdown: shutdown.clone(),
        });
        tracker.spawn(conn::serve(
            listener,
            router,
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    let control = control::router(control::Control {
        providers: Arc::new(by_id),
    });
    tracker.spawn(conn::serve(
        control_listener,
        control,
        shutdown.clone(),
        tracker.clone(),
    ));
    Ok(SimHandle {
        control_addr,
        providers,
        shutdown,
        tracker,
    })
}
