//! `palisade check-config`: check a configuration file as the daemon loads
//! it (host names resolved); errors name file, line and key (exit 2);
//! warnings (a name that does not resolve now, an address two monitors
//! share) leave the file valid (exit 0).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use palisade::config;

pub fn run(file: &Path) -> Result<ExitCode> {
    let loaded = match config::load_with_warnings(file) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::from(2));
        }
    };
    for warning in &loaded.warnings {
        eprintln!("{warning}");
    }
    let c = &loaded.config;
    writeln!(
        super::stdout(),
        "{}: ok: {} monitor(s), {} sink(s), store {}, {} warning(s)",
        file.display(),
        c.monitors.len(),
        c.sinks.len(),
        c.store.path.display(),
        loaded.warnings.len()
    )?;
    Ok(ExitCode::SUCCESS)
}
