//! Route and neighbour lookups over rtnetlink (blocking): which interface,
//! which source address and which next-hop MAC reach a target -- what
//! `ip route get` and `ip neigh get` say.

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// What the kernel's routing table says about a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Output interface index.
    pub ifindex: u32,
    /// Preferred source address, if the route has one.
    pub source: Option<IpAddr>,
    /// Gateway; `None` when the destination is on-link.
    pub gateway: Option<IpAddr>,
    /// The route is local (the destination is this host).
    pub local: bool,
}

/// A blocking rtnetlink connection.
#[derive(Debug)]
pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v) => NeighbourAddress::Inet(v),
        IpAddr::V6(v) => NeighbourAddress::Inet6(v),
    }
}

impl Rtnl {
    /// Opens a NETLINK_ROUTE socket.
    pub fn new() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { sock, seq: 1 })
    }

    /// Sends one request and collects the replies up to the ACK or DONE.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq += 1;
        let mut nl =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(msg));
        nl.header.flags = flags | NLM_F_REQUEST | NLM_F_ACK;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock.send(&buf, 0)?;

        let mut out = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full()?;
            let mut off = 0;
            while off < data.len() {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = m.header.length as usize;
                if m.header.sequence_number == self.seq {
                    match m.payload {
                        NetlinkPayload::InnerMessage(inner) => out.push(inner),
                        NetlinkPayload::Error(e) if e.code.is_none() => return Ok(out),
                        NetlinkPayload::Error(e) => return Err(e.to_io()),
                        NetlinkPayload::Done(_) => return Ok(out),
                        _ => {}
                    }
                }
                if len == 0 {
                    return Ok(out);
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// `ip route get DST`.
    pub fn route(&mut self, dst: IpAddr) -> io::Result<Route> {
        let mut m = RouteMessage::default();
        m.header.address_family = family(dst);
        m.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        m.attributes.push(RouteAttribute::Destination(dst.into()));
        for reply in self.request(RouteNetlinkMessage::GetRoute(m), 0)? {
            if let RouteNetlinkMessage::NewRoute(r) = reply {
                let mut route = Route {
                    ifindex: 0,
                    source: None,
                    gateway: None,
                    local: r.header.kind == RouteType::Local,
                };
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Oif(i) => route.ifindex = *i,
                        RouteAttribute::PrefSource(s) => route.source = route_ip(s),
                        RouteAttribute::Gateway(g) => route.gateway = route_ip(g),
                        _ => {}
                    }
                }
                return Ok(route);
            }
        }
        Err(io::Error::new(io::ErrorKind::NotFound, "no route in reply"))
    }

    /// `ip neigh get IP dev IFINDEX`: the MAC, when the entry is usable.
    fn neighbour(&mut self, ifindex: u32, ip: IpAddr) -> io::Result<Option<[u8; 6]>> {
        let mut m = NeighbourMessage::default();
        m.header.family = family(ip);
        m.header.ifindex = ifindex;
        m.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(ip)));
        for reply in self.request(RouteNetlinkMessage::GetNeighbour(m), 0)? {
            if let RouteNetlinkMessage::NewNeighbour(n) = reply {
                if matches!(
                    n.header.state,
                    NeighbourState::Failed | NeighbourState::Incomplete
                ) {
                    return Ok(None);
                }
                return Ok(n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(ll) => ll.as_slice().try_into().ok(),
                    _ => None,
                }));
            }
        }
        Ok(None)
    }

    /// Asks the kernel to resolve `ip` (RTM_NEWNEIGH with NTF_USE): it sends
    /// ARP or a neighbour solicitation, nothing to the target's ports.
    fn resolve(&mut self, ifindex: u32, ip: IpAddr) -> io::Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = family(ip);
        m.header.ifindex = ifindex;
        m.header.flags = NeighbourFlags::Use;
        m.header.state = NeighbourState::Delay;
        m.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(ip)));
        self.request(RouteNetlinkMessage::NewNeighbour(m), NLM_F_CREATE)
            .map(|_| ())
    }

    /// The MAC of `next_hop` on `ifindex`, resolving it if needed.
    pub fn next_hop_mac(
        &mut self,
        ifindex: u32,
        next_hop: IpAddr,
        timeout: Duration,
    ) -> io::Result<[u8; 6]> {
        let deadline = Instant::now() + timeout;
        let mut asked = false;
        loop {
            match self.neighbour(ifindex, next_hop) {
                Ok(Some(mac)) => return Ok(mac),
                Ok(None) | Err(_) if !asked => {
                    self.resolve(ifindex, next_hop)?;
                    asked = true;
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("next hop {next_hop} did not answer ARP/NDP"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
