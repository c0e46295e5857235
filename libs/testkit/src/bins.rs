//! The workspace's own binaries for process-level tests. Cargo only builds a package's binaries
//! for that package's integration tests, so a cross-package scenario asks cargo to build the one
//! it needs (a no-op when fresh), in the same profile and target directory as the test itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{Result, TestkitError};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

/// The path of binary `bin` of package `package`, built first if this test process has not
/// built it yet.
pub fn workspace_bin(package: &str, bin: &str) -> Result<PathBuf> {
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(bin) {
        return Ok(path.clone());
    }
    // The test executable lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe().map_err(TestkitError::io("locating the test binary"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| TestkitError::Build {
            bin: bin.to_string(),
            detail: format!("unexpected test binary location {}", exe.display()),
        })?
        .to_path_buf();
    let target_dir = profile_dir.parent().unwrap_or(&profile_dir).to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = std::process::Command::new(&cargo);
    cmd.current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            package,
            "--bin",
            bin,
            "--target-dir",
        ])
        .arg(&target_dir);
    if release {
        cmd.arg("--release");
    }
    let out = cmd.output().map_err(|source| TestkitError::Spawn {
        program: PathBuf::from(&cargo),
        source,
    })?;
    if !out.status.success() {
        return Err(TestkitError::Build {
            bin: bin.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let path = profile_dir.join(bin);
    if !path.exists() {
        return Err(TestkitError::Build {
            bin: bin.to_string(),
            detail: format!("{} missing after the build", path.display()),
        });
    }
    built.insert(bin.to_string(), path.clone());
    Ok(path)
}
