//! The daemon's own metrics (`/metrics`, Prometheus text through the
//! `prometheus-client` crate).

/// The daemon's metrics registry.
#[derive(Debug, Default)]
pub struct Metrics {}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }
}
