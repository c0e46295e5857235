//! Python tools for tests (an SDK example, an offline schema validator): `python3` itself when
//! it already has the package, otherwise a virtualenv under the target directory, created once
//! with `pip install` from the package registry.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Result, TestkitError};

fn imports(python: &Path, module: &str) -> bool {
    Command::new(python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A Python interpreter that can `import module`, installing `package` into a virtualenv
/// (`target/python-<package>`) when `python3` cannot.
pub fn python_with(module: &str, package: &str) -> Result<PathBuf> {
    let system = PathBuf::from("python3");
    if imports(&system, module) {
        return Ok(system);
    }
    let exe = std::env::current_exe().map_err(|source| TestkitError::Io {
        context: "finding the test binary".into(),
        source,
    })?;
    // target/<profile>/deps/<test binary>
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let venv = target.join(format!("python-{package}"));
    let python = venv.join("bin/python");
    if imports(&python, module) {
        return Ok(python);
    }
    let missing = |what: &str| TestkitError::Missing {
        program: "python3".into(),
        hint: format!("{what}; Debian: apt-get install -y python3 python3-venv"),
    };
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .map_err(|_| missing("python3 is needed"))?;
    if !made.success() {
        return Err(missing("python3 -m venv failed"));
    }
    let installed = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", package])
        .status()
        .map_err(|source| TestkitError::Io {
            context: format!("running pip install {package}"),
            source,
        })?;
    if !installed.success() || !imports(&python, module) {
        return Err(TestkitError::NotReady {
            what: format!("the Python package {package}"),
            detail: "pip install failed (the package registry must be reachable)".into(),
        });
    }
    Ok(python)
}
