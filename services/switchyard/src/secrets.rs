//! `switchyard seal-byok` and `switchyard new-master-key`.

use std::io::Read;

use switchyard_policy::crypto::{MasterKey, seal as seal_secret};

/// Arguments of `seal-byok`.
#[derive(clap::Args)]
pub struct SealArgs {
    /// The org the key belongs to.
    #[arg(long)]
    org: String,
    /// The catalog provider id the key is for.
    #[arg(long)]
    provider: String,
}

/// Reads the key from stdin, seals it under the master key from the environment and prints the
/// `byok` entry for the org in the policy file. The key is never echoed.
pub fn seal(args: SealArgs) -> Result<(), String> {
    let master = MasterKey::from_env()
        .map_err(|e| e.to_string())?
        .ok_or("set SWITCHYARD_MASTER_KEY or SWITCHYARD_MASTER_KEY_FILE first")?;
    let mut key = String::new();
    std::io::stdin()
        .read_to_string(&mut key)
        .map_err(|e| format!("cannot read the key from stdin: {e}"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err("no key on stdin".into());
    }
    let sealed = seal_secret(&master, &args.org, &args.provider, key).map_err(|e| e.to_string())?;
    let sealed = serde_json::to_string(&sealed).map_err(|e| e.to_string())?;
    switchyard_runtime::print_stdout(&format!(
        "# byok entry for org `{}` (add under its `byok:` list)\n- {{ provider: {}, sealed: {sealed} }}\n",
        args.org, args.provider
    ))
    .map_err(|e| e.to_string())
}

/// Prints a fresh master key.
pub fn new_master_key() -> Result<(), String> {
    switchyard_runtime::print_stdout(&format!("{}\n", MasterKey::generate_base64()))
        .map_err(|e| e.to_string())
}
