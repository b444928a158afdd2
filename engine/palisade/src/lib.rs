//! The `palisade` command's library: the shells around the pure core.
//!
//! * [`config`]: the daemon's TOML configuration, with `file:line: key` errors.
//! * [`resolve`]: every address of a monitor's host (all A and AAAA records).
//! * [`store`]: SQLite history and the event outbox.
//! * [`doctor`]: the verdicts of `palisade doctor` (is this machine ready?).
//! * [`daemon`]: the scheduler, sweeps and re-checks, and delivery to the sinks.
//! * [`http`]: the dashboard, the JSON API, `/metrics` (`[http]`).
//! * [`metrics`]: the daemon's own metrics.
//! * [`scan_output`]: the files `palisade scan` writes for other tools (nmap
//!   XML, masscan list, nmap grepable).
//!
//! Packets, permutations, cookies and the monitor state machine live in
//! `palisade_core`; AF_XDP and eBPF in `palisade_dataplane`; the event schema
//! and the sinks in `palisade_outputs`.

pub mod cluster;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod http;
pub mod metrics;
pub mod resolve;
pub mod scan_output;
pub mod store;
