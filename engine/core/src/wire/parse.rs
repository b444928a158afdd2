//! Parsing a received Ethernet frame down to its TCP header or its ICMP
//! echo message.

use std::net::IpAddr;

use super::checksum;
use super::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, EthernetFrame, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST,
    ICMP_HEADER_LEN, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, IP_PROTO_ICMP, IP_PROTO_ICMPV6,
    IP_PROTO_TCP, Ipv4Packet, Ipv6Packet, MacAddr, TcpSegment, WireError,
};

/// The header fields of one TCP segment read from an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegmentInfo {
    /// Source MAC address.
    pub src_mac: MacAddr,
    /// Destination MAC address.
    pub dst_mac: MacAddr,
    /// The 12-bit VLAN ID, if the frame carried an 802.1Q tag.
    pub vlan: Option<u16>,
    /// Source IP address.
    pub src: IpAddr,
    /// Destination IP address.
    pub dst: IpAddr,
    /// IPv4 TTL, or IPv6 hop limit.
    pub ttl: u8,
    /// TCP source port.
    pub src_port: u16,
    /// TCP destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful when [`tcp_flags::ACK`](super::tcp_flags::ACK) is set).
    pub ack: u32,
    /// TCP flag byte (see [`tcp_flags`](super::tcp_flags)).
    pub flags: u8,
    /// Window size.
    pub window: u16,
}

/// Parses an Ethernet frame carrying TCP and verifies its checksums.
///
/// Accepted:
///
/// * Ethernet II with at most one 802.1Q VLAN tag; a second tag gives
///   [`WireError::UnsupportedEtherType`]`(0x8100)`.
/// * IPv4 with any IHL >= 5 (options are skipped but covered by the header
///   checksum, which must verify). Fragments (more-fragments set or nonzero
///   offset) give [`WireError::Fragment`].
/// * IPv6 with the fixed header only: the next header must be TCP directly.
///   Extension headers are **not** followed, so a packet with any of them
///   gives [`WireError::NotTcp`] with the extension's next-header value.
/// * TCP with data offset >= 5 within the IP payload. The checksum is verified
///   over the IP payload as delimited by the IP length field, not the frame
///   length, so Ethernet padding after the packet is ignored.
///
/// Returns an error, and never panics, on any other byte string.
pub fn parse_tcp_frame(frame: &[u8]) -> Result<TcpSegmentInfo, WireError> {
    let eth = EthernetFrame::new_checked(frame)?;
    let ip = ip_layer(&eth)?;
    if ip.protocol != IP_PROTO_TCP {
        return Err(WireError::NotTcp(ip.protocol));
    }
    let tcp = TcpSegment::new_checked(ip.payload)?;
    let valid = match (ip.src, ip.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => tcp.verify_checksum_v4(src, dst),
        (IpAddr::V6(src), IpAddr::V6(dst)) => tcp.verify_checksum_v6(src, dst),
        _ => false,
    };
    if !valid {
        return Err(WireError::BadChecksum { layer: "tcp" });
    }
    let Ip { src, dst, ttl, .. } = ip;
    Ok(TcpSegmentInfo {
        src_mac: eth.src(),
        dst_mac: eth.dst(),
        vlan: eth.vlan_id(),
        src,
        dst,
        ttl,
        src_port: tcp.src_port(),
        dst_port: tcp.dst_port(),
        seq: tcp.seq(),
        ack: tcp.ack(),
        flags: tcp.flags(),
        window: tcp.window(),
    })
}

/// The fields of one ICMP (IPv4) or ICMPv6 echo message read from an
/// Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoInfo {
    /// Source MAC address.
    pub src_mac: MacAddr,
    /// Destination MAC address.
    pub dst_mac: MacAddr,
    /// The 12-bit VLAN ID, if the frame carried an 802.1Q tag.
    pub vlan: Option<u16>,
    /// Source IP address.
    pub src: IpAddr,
    /// Destination IP address.
    pub dst: IpAddr,
    /// IPv4 TTL, or IPv6 hop limit.
    pub ttl: u8,
    /// The ICMP / ICMPv6 type: [`ICMP_ECHO_REQUEST`], [`ICMP_ECHO_REPLY`],
    /// [`ICMPV6_ECHO_REQUEST`] or [`ICMPV6_ECHO_REPLY`].
    pub icmp_type: u8,
    /// The code (0 for a well-formed echo message).
    pub code: u8,
    /// The identifier.
    pub id: u16,
    /// The sequence number.
    pub seq: u16,
}

/// Parses an Ethernet frame carrying an ICMP echo request or reply (IPv4) or
/// an ICMPv6 echo request or reply (IPv6), and verifies its checksums.
///
/// The same frames as [`parse_tcp_frame`] are accepted below the transport
/// (one VLAN tag, IPv4 options, no IPv6 extension headers, no fragments);
/// the ICMP checksum (ICMPv6: with its pseudo-header) must verify over the
/// whole message as delimited by the IP length field. Any other ICMP type
/// gives [`WireError::NotEcho`], another protocol [`WireError::NotIcmp`].
pub fn parse_echo_frame(frame: &[u8]) -> Result<EchoInfo, WireError> {
    let eth = EthernetFrame::new_checked(frame)?;
    let ip = ip_layer(&eth)?;
    let msg = ip.payload;
    let valid = match (ip.src, ip.dst) {
        (IpAddr::V4(_), _) => {
            if ip.protocol != IP_PROTO_ICMP {
                return Err(WireError::NotIcmp(ip.protocol));
            }
            echo_type(msg, "icmp", &[ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY])?;
            checksum::is_valid(checksum::sum(msg))
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            if ip.protocol != IP_PROTO_ICMPV6 {
                return Err(WireError::NotIcmp(ip.protocol));
            }
            echo_type(msg, "icmpv6", &[ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY])?;
            let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
            let pseudo = checksum::pseudo_header_v6(src, dst, IP_PROTO_ICMPV6, len);
            checksum::is_valid(checksum::add(pseudo, checksum::sum(msg)))
        }
        (IpAddr::V6(_), IpAddr::V4(_)) => false,
    };
    if !valid {
        let layer = if ip.src.is_ipv4() { "icmp" } else { "icmpv6" };
        return Err(WireError::BadChecksum { layer });
    }
    let Ip { src, dst, ttl, .. } = ip;
    let byte = |i: usize| msg.get(i).copied().unwrap_or(0);
    Ok(EchoInfo {
        src_mac: eth.src(),
        dst_mac: eth.dst(),
        vlan: eth.vlan_id(),
        src,
        dst,
        ttl,
        icmp_type: byte(0),
        code: byte(1),
        id: u16::from_be_bytes([byte(4), byte(5)]),
        seq: u16::from_be_bytes([byte(6), byte(7)]),
    })
}

/// The network layer of a frame, checked, and what it carries.
struct Ip<'a> {
    src: IpAddr,
    dst: IpAddr,
    /// IPv4 TTL, or IPv6 hop limit.
    ttl: u8,
    /// IPv4 protocol, or IPv6 next header.
    protocol: u8,
    /// The transport, as delimited by the IP length field.
    payload: &'a [u8],
}

/// The IP layer both parsers accept: IPv4 (any IHL >= 5) whose header
/// checksum verifies and that is not a fragment, or IPv6 with the fixed
/// header only; anything else is an error.
fn ip_layer<'a>(eth: &EthernetFrame<'a>) -> Result<Ip<'a>, WireError> {
    match eth.ethertype() {
        ETHERTYPE_IPV4 => {
            let ip = Ipv4Packet::new_checked(eth.payload())?;
            if !ip.verify_checksum() {
                return Err(WireError::BadChecksum { layer: "ipv4" });
            }
            if ip.is_fragment() {
                return Err(WireError::Fragment);
            }
            Ok(Ip {
                src: IpAddr::V4(ip.src_addr()),
                dst: IpAddr::V4(ip.dst_addr()),
                ttl: ip.ttl(),
                protocol: ip.protocol(),
                payload: ip.payload(),
            })
        }
        ETHERTYPE_IPV6 => {
            let ip = Ipv6Packet::new_checked(eth.payload())?;
            Ok(Ip {
                src: IpAddr::V6(ip.src_addr()),
                dst: IpAddr::V6(ip.dst_addr()),
                ttl: ip.hop_limit(),
                protocol: ip.next_header(),
                payload: ip.payload(),
            })
        }
        other => Err(WireError::UnsupportedEtherType(other)),
    }
}

/// Checks that `msg` holds a whole echo header of one of `types`.
fn echo_type(msg: &[u8], layer: &'static str, types: &[u8]) -> Result<(), WireError> {
    if msg.len() < ICMP_HEADER_LEN {
        return Err(WireError::Truncated {
            layer,
            need: ICMP_HEADER_LEN,
            have: msg.len(),
        });
    }
    let kind = msg.first().copied().unwrap_or(0);
    if types.contains(&kind) {
        Ok(())
    } else {
        Err(WireError::NotEcho(kind))
    }
}
