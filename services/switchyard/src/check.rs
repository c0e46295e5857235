//! `switchyard check-catalog FILE`.

use std::path::PathBuf;

use switchyard_config::Catalog;

/// Arguments of `check-catalog`.
#[derive(clap::Args)]
pub struct Args {
    /// The catalog file; overrides: SWITCHYARD_CATALOG__SECTION__KEY=value.
    path: PathBuf,
}

/// Prints a summary of a valid catalog, or every error.
pub fn run(args: Args) -> Result<(), String> {
    let catalog = Catalog::load(&args.path).map_err(|e| e.to_string())?;
    switchyard_runtime::print_stdout(&format!(
        "{}: ok ({} providers, {} models, {} endpoints)\n",
        args.path.display(),
        catalog.providers.len(),
        catalog.models.len(),
        catalog.endpoints.len()
    ))
    .map_err(|e| format!("cannot print the result: {e}"))?;
    Ok(())
}
