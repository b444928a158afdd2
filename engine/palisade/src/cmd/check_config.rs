//! `palisade check-config`: check a configuration file; errors name file,
//! line and key (exit 2).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::load_config;

pub fn run(file: &Path) -> Result<ExitCode> {
    Ok(match load_config(file) {
        Ok(c) => {
            println!(
                "{}: ok: {} monitor(s), {} sink(s), store {}",
                file.display(),
                c.monitors.len(),
                c.sinks.len(),
                c.store.path.display()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    })
}
