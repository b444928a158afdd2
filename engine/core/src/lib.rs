//! Palisade's pure core: everything that decides, and nothing that does I/O.
//!
//! * [`address`]: addresses that can never be a monitor's host, and why.
//! * [`wire`]: packet views and builders, checksums.
//! * [`probe`]: targets, ports, excludes, the keyed permutation of the sweep
//!   index space, SYN cookies and pacing.
//! * [`classify`]: the reply classifier: a reply record and the scan's key →
//!   open, closed or invalid, and which probe it answers.
//! * [`monitor`]: the monitor state machine (per address and port).
//! * [`health`]: self-monitoring: failing sweeps and stale monitors.
//! * [`plan`]: the sweep planner: which monitors are due, which ports a scan
//!   must keep, which ports to re-check, when a scan counts as conclusive.
//! * [`cluster`]: scan agents fed by a work queue: a slice cut into shards,
//!   the job and result messages, and the coordinator's exactly-once merge.
//!
//! No module here reads a clock or touches a socket or a file: callers bring
//! the time and the bytes. Everything builds and tests on any OS, and the
//! lint below keeps the whole crate memory-safe Rust.

#![forbid(unsafe_code)]

pub mod address;
pub mod classify;
pub mod cluster;
pub mod health;
pub mod monitor;
pub mod plan;
pub mod probe;
pub mod wire;
