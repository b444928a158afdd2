//! Where probes leave from: the interface, our addresses and the next hop's
//! MAC, from the kernel's routes and neighbours (rtnetlink) unless the scan's
//! configuration overrides them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use palisade_core::probe::Sweep;
use palisade_core::wire::MacAddr;

use super::{ScanConfig, ScanError};
use crate::XdpError;
use crate::netlink::Rtnl;
use crate::privilege::Step;

/// Where probes leave from: interface, addresses, MACs.
#[derive(Debug, Clone)]
pub(super) struct Path {
    pub ifindex: u32,
    pub ifname: String,
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

/// Resolves the path to the sweep's first targets (one of each family;
/// the first address of `cfg.ping` of a family the sweep lacks) from the
/// kernel's routes and neighbours, or from the overrides in `cfg`.
pub(super) fn resolve_path(sweep: &Sweep, cfg: &ScanConfig) -> Result<Path, ScanError> {
    let (mut first4, mut first6) = sweep.first_targets();
    for &a in &cfg.ping {
        match a {
            IpAddr::V4(_) if first4.is_none() => first4 = Some(a.into()),
            IpAddr::V6(_) if first6.is_none() => first6 = Some(a.into()),
            _ => {}
        }
    }
    let mut rtnl = Rtnl::new().map_err(ScanError::Netlink)?;
    let forced_if = match &cfg.interface {
        Some(name) => Some(crate::ifindex(name)?),
        None => None,
    };
    let mut ifindex = forced_if;
    let mut next_hop = None;
    let (mut v4, mut v6) = (cfg.source_v4, cfg.source_v6);
    let mut first_ip: Option<IpAddr> = None;
    for target in [first4, first6].into_iter().flatten() {
        let ip = IpAddr::from(target);
        let route = match rtnl.route(ip) {
            Ok(r) => Some(r),
            Err(_) if forced_if.is_some() => None,
            Err(_) => return Err(ScanError::NoRoute(ip)),
        };
        if let Some(route) = route {
            if route.local {
                return Err(ScanError::Local(ip));
            }
            match (ifindex, forced_if, first_ip) {
                (Some(i), None, Some(other)) if i != route.ifindex => {
                    return Err(ScanError::SplitInterfaces(other, ip));
                }
                (None, _, _) => ifindex = Some(route.ifindex),
                _ => {}
            }
            match route.source {
                Some(IpAddr::V4(s)) if v4.is_none() => v4 = Some(s),
                Some(IpAddr::V6(s)) if v6.is_none() => v6 = Some(s),
                _ => {}
            }
            next_hop.get_or_insert(route.gateway.unwrap_or(ip));
        } else {
            next_hop.get_or_insert(ip);
        }
        first_ip.get_or_insert(ip);
    }
    if first4.is_some() && v4.is_none() {
        return Err(ScanError::NoSource("IPv4"));
    }
    if first6.is_some() && v6.is_none() {
        return Err(ScanError::NoSource("IPv6"));
    }
    let ifindex = ifindex
        .ok_or_else(|| ScanError::NoRoute(first_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))))?;
    let ifname = crate::ifname(ifindex)?;
    let src_mac = crate::mac_of(&ifname)?;
    let dst_mac = match cfg.gateway_mac {
        Some(m) => m,
        None => {
            let hop = next_hop.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            MacAddr(
                rtnl.next_hop_mac(ifindex, hop, Duration::from_secs(3))
                    .map_err(|e| {
                        match crate::refused(
                            Step::Neighbour,
                            e.raw_os_error(),
                            XdpError::Io {
                                what: "resolve the next hop",
                                source: e,
                            },
                        ) {
                            refused @ XdpError::MissingCapability { .. } => refused.into(),
                            _ => ScanError::NoNeighbour(hop),
                        }
                    })?,
            )
        }
    };
    Ok(Path {
        ifindex,
        ifname,
        src_mac,
        dst_mac,
        v4,
        v6,
    })
}
