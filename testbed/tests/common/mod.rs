//! Helpers shared by the fleet tests: the testbed without kernel targets,
//! `palisade-sim fleet` in the target namespace, and the scanner under test.

#![allow(dead_code)]

use palisade_sim::testbed::{Testbed, TestbedConfig, workspace_binary};

/// The simulator (this package's binary).
pub const SIM: &str = env!("CARGO_BIN_EXE_palisade-sim");

/// The scanner under test.
pub fn palisade() -> String {
    workspace_binary("palisade").display().to_string()
}

/// A testbed with no kernel targets: the fleet answers for everything.
pub fn testbed() -> Testbed {
    Testbed::new(TestbedConfig {
        targets_v4: Vec::new(),
        targets_v6: Vec::new(),
        tx_queues: 1,
    })
    .unwrap_or_else(|e| {
        panic!("cannot build the testbed (needs root, iproute2, nftables, python3, procps): {e}")
    })
}

#[allow(unused_imports)]
pub use palisade_sim::fleet_process::{FleetProcess, counter};
