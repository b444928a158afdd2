//! Palisade's outputs: the event schema, sinks and alert consumers.
//!
//! The engine depends on this crate, never the reverse, so an alert consumer
//! builds without any BPF toolchain.
//!
//! * [`schema`]: the versioned event envelope and its encodings.
//! * [`nats`]: NATS connection options, their checks, and the one connect
//!   used by the sink and the alert consumer.
//! * [`sink`]: where events go (NATS JetStream, JSON lines, webhook).
//! * [`alert`]: the subscriber side behind `palisade-alert`.
//! * [`logging`]: the log setup of `palisade` and `palisade-alert`
//!   (`--log-format text|json|journald`).
//! * [`cli_assets`]: the man pages and shell completions of both binaries.
//! * `testing` (tests, or the `testing` feature): a throwaway `nats-server`.

pub mod alert;
pub mod cli_assets;
pub mod logging;
pub mod nats;
pub mod schema;
pub mod sink;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
