//! Process plumbing shared by every Switchyard binary: how logs are set up, how a process
//! learns it should stop, and the ops endpoints (metrics, health, readiness). No service logic
//! lives here.

use std::io::IsTerminal;

pub mod grpc;
pub mod ops;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); one JSON object per line when
/// `SWITCHYARD_LOG_FORMAT=json`, colours only on a terminal.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var("SWITCHYARD_LOG_FORMAT").is_ok_and(|v| v == "json");
    // A second initialisation (tests, embedded use) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

/// Resolves on the first of Ctrl-C (SIGINT) and SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// Writes `text` to stdout and flushes; unlike `println!`, a closed stdout (a reader that went
/// away) is an error to handle, not a panic.
pub fn print_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}
