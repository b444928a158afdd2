//! Palisade's simulators: what only tests, benchmarks and the demo need.
//!
//! * [`testbed`]: throw-away network namespaces joined by veth pairs, with
//!   kernel listeners and nftables loss.
//! * [`fleet`]: the ground truth of a simulated fleet (pure), and
//!   [`responder`], the XDP program (`ebpf/responder.bpf.c`) that answers as
//!   that fleet would, for whole address blocks.
//! * [`fleet_process`]: `palisade-sim fleet` run in a testbed, for tests.
//! * [`bridge`]: loopback bridges into and out of a testbed namespace.
//! * [`txbench`]: a bare AF_XDP transmit loop, the ceiling a scan's rate is
//!   measured against.
//!
//! The XDP parts need the `fleet` feature (on by default; it needs clang-19).
//! The `palisade-sim` binary runs the fleet (`fleet`, `fleet-truth`) and the
//! transmit loop (`tx-bench`); the `palisade` binary ships none of this.

pub mod bridge;
pub mod fleet;
#[cfg(feature = "fleet")]
pub mod fleet_process;
#[cfg(feature = "fleet")]
pub mod responder;
pub mod testbed;
#[cfg(feature = "fleet")]
pub mod txbench;
