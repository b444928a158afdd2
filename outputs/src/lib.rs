//! Palisade's outputs: the event schema, sinks and alert consumers.
//!
//! The engine depends on this crate, never the reverse, so an alert consumer
//! builds without any BPF toolchain. The schema and sinks arrive with the
//! outputs issue; this crate is the home they will live in.
