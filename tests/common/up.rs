//! `switchyard up` as a user starts it, and the official SDK scripts of `tests/sdk/` run
//! against it.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use switchyard_testkit::workspace_bin;
use tokio::io::{AsyncBufReadExt, BufReader};

/// `switchyard up --ephemeral` plus `extra`, started and read until it says it is ready: the
/// child and every line it printed (trimmed).
pub async fn up(extra: &[&str]) -> (tokio::process::Child, Vec<String>) {
    let bin = workspace_bin("switchyard", "switchyard").unwrap();
    let mut child = tokio::process::Command::new(&bin)
        .args(["up", "--ephemeral"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await
    {
        let line = line.trim_start().to_string();
        let ready = line.starts_with("ready;");
        printed.push(line);
        if ready {
            break;
        }
    }
    (child, printed)
}

/// The second word of the printed line starting with `label`.
pub fn field(printed: &[String], label: &str) -> String {
    printed
        .iter()
        .find(|l| l.starts_with(label))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no `{label}` line in {printed:?}"))
        .to_string()
}

/// Runs `tests/sdk/<script>` with the Python package `sdk` (installed into a virtualenv under
/// the target directory when missing) against the demo router at `router`, with the demo key
/// and `models` as its arguments: what it printed.
pub async fn run_sdk(script: &str, sdk: &str, router: &str, models: &[&str]) -> Value {
    let python = switchyard_testkit::python_with(sdk, sdk).unwrap();
    let path = switchyard_testkit::workspace_root()
        .join("tests/sdk")
        .join(script);
    let out = tokio::process::Command::new(python)
        .arg(path)
        .args([router, "sk-switchyard-demo"])
        .args(models)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `tests/sdk/<script>` (see [`run_sdk`]) against a fresh `switchyard up`, which is
/// stopped afterwards; what the script printed, also shown on stderr.
pub async fn sdk_against_up(script: &str, sdk: &str, models: &[&str]) -> Value {
    let (mut child, printed) = up(&[]).await;
    let seen = run_sdk(script, sdk, &field(&printed, "router"), models).await;
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{script} ({sdk} SDK): {seen}");
    }
    let _ = child.kill().await;
    seen
}
