//! Palisade: an open-port monitoring engine.
//!
//! The crate is laid out as pure cores and thin shells:
//!
//! * [`wire`]: packet views and builders, checksums. No I/O, no `unsafe`.
//! * [`probe`]: targets, ports, excludes, the keyed permutation of the sweep
//!   index space, SYN cookies and pacing. No I/O, no clocks, no `unsafe`.
//! * [`xdp`]: the data path and all of the crate's `unsafe`: AF_XDP sockets,
//!   the eBPF receive filter (aya), route and neighbour lookups.
//! * [`scan`]: wires `probe` and `xdp` into a scan that streams findings.
//! * [`config`]: the daemon's TOML configuration, with file:line errors.
//! * [`monitor`]: the per-port monitor state machine. Pure and deterministic.
//! * [`store`]: SQLite history and the event outbox.
//! * [`daemon`]: scheduler, sweeps, re-checks, delivery to the sinks.

pub mod config;
pub mod daemon;
pub mod fleet;
pub mod monitor;
pub mod probe;
pub mod scan;
pub mod store;
pub mod wire;
pub mod xdp;
