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

pub mod probe;
pub mod scan;
pub mod wire;
pub mod xdp;
