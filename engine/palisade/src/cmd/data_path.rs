//! The data path's flags, shared by `palisade scan` and `palisade agent`:
//! how fast, how often, through which interface and from which addresses
//! the probes go.

use std::net::IpAddr;

use clap::Args;
use palisade_core::probe::TargetRecall;
use palisade_core::wire::MacAddr;
use palisade_dataplane::scan::ScanConfig;

use super::UsageError;

#[derive(Debug, Clone, Args)]
pub struct DataPathArgs {
    /// Probes per second (first probes; retries ride along).
    #[arg(long, value_name = "PPS", default_value_t = palisade_dataplane::scan::DEFAULT_RATE,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub rate: u64,
    /// Extra probes for a port that did not answer, 0.5 s apart.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(0..=10))]
    retries: u32,
    /// Adaptive retries: find PCT percent of the open ports (above 0 and
    /// below 100, such as 99.99). The scan estimates the reply loss from the
    /// ports that answer (SYN-ACK or RST) and gives the silent ports of
    /// hosts that answered anything as many more retries, 0.5 s apart, as
    /// that loss needs: at most 8 rounds, extra retries at most a quarter of
    /// the first probes. A host that answers nothing keeps --retries;
    /// without loss nothing extra is sent. Needs --retries 1 or more (the
    /// first retry measures the loss). Default: off (--retries for every
    /// port; the loss is still estimated and reported).
    #[arg(long, value_name = "PCT")]
    target_recall: Option<String>,
    /// Seconds to wait for late replies after the last probe.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    wait: f64,
    /// Interface to send on (default: the route's to the first target).
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,
    /// Source address (repeat for one IPv4 and one IPv6; default: the route's).
    #[arg(long, value_name = "IP")]
    source_ip: Vec<IpAddr>,
    /// Source port or range for the probes (replies to them never reach the kernel).
    #[arg(long, value_name = "P|A-B", default_value = "61000-61063")]
    source_port: String,
    /// MAC address of the next hop (default: from the kernel's neighbour table).
    #[arg(long, value_name = "MAC")]
    gateway_mac: Option<MacAddr>,
    /// TX queues to use, one socket and thread each (default: all, up to the core count).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    queues: Option<u32>,
}

impl DataPathArgs {
    /// The data path's settings these flags give (every other setting its
    /// default), checked.
    pub fn scan_config(&self) -> Result<ScanConfig, UsageError> {
        if !(self.wait.is_finite() && (0.0..=3600.0).contains(&self.wait)) {
            return Err(UsageError(format!(
                "--wait: bad value `{}`: give seconds from 0 to 3600",
                self.wait
            )));
        }
        let mut cfg = ScanConfig {
            rate: self.rate,
            retries: self.retries,
            target_recall: self.target_recall()?,
            wait: std::time::Duration::from_secs_f64(self.wait),
            interface: self.interface.clone(),
            source_ports: parse_source_ports(&self.source_port)?,
            gateway_mac: self.gateway_mac,
            queues: self.queues.map(|q| q as usize),
            ..ScanConfig::default()
        };
        for ip in &self.source_ip {
            match ip {
                IpAddr::V4(a) if cfg.source_v4.is_none() => cfg.source_v4 = Some(*a),
                IpAddr::V6(a) if cfg.source_v6.is_none() => cfg.source_v6 = Some(*a),
                _ => {
                    return Err(UsageError(format!(
                        "--source-ip: `{ip}` is a second address of its family; give at most one IPv4 and one IPv6"
                    )));
                }
            }
        }
        Ok(cfg)
    }

    /// `--target-recall`, checked: a percentage, and a retry to measure with.
    fn target_recall(&self) -> Result<Option<TargetRecall>, UsageError> {
        let Some(text) = &self.target_recall else {
            return Ok(None);
        };
        let recall = text
            .parse::<TargetRecall>()
            .map_err(|e| UsageError(format!("--target-recall: {e}")))?;
        if self.retries == 0 {
            return Err(UsageError(
                "--target-recall needs --retries 1 or more: the first retry measures the loss"
                    .into(),
            ));
        }
        Ok(Some(recall))
    }
}

fn parse_source_ports(text: &str) -> Result<(u16, u16), UsageError> {
    let bad = || {
        UsageError(format!(
            "--source-port: bad value `{text}`: give a port (61000) or a range (61000-61063) within 1-65535"
        ))
    };
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}
