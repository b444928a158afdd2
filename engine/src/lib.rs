//! Palisade: an open-port monitoring engine.
//!
//! The crate is laid out as pure cores and thin shells:
//!
//! * [`wire`]: packet views and builders, checksums. No I/O, no `unsafe`.
//! * [`probe`]: targets, ports, excludes, the keyed permutation of the sweep
//!   index space, SYN cookies and pacing. No I/O, no clocks, no `unsafe`.

pub mod probe;
pub mod wire;
