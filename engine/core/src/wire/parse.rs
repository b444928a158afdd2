//! Parsing a received Ethernet frame down to its TCP header.

use std::net::IpAddr;

use super::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, EthernetFrame, IP_PROTO_TCP, Ipv4Packet, Ipv6Packet, MacAddr,
    TcpSegment, WireError,
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
    let (src, dst, ttl, tcp) = match eth.ethertype() {
        ETHERTYPE_IPV4 => {
            let ip = Ipv4Packet::new_checked(eth.payload())?;
            if !ip.verify_checksum() {
                return Err(WireError::BadChecksum { layer: "ipv4" });
            }
            if ip.is_fragment() {
                return Err(WireError::Fragment);
            }
            if ip.protocol() != IP_PROTO_TCP {
                return Err(WireError::NotTcp(ip.protocol()));
            }
            let tcp = TcpSegment::new_checked(ip.payload())?;
            if !tcp.verify_checksum_v4(ip.src_addr(), ip.dst_addr()) {
                return Err(WireError::BadChecksum { layer: "tcp" });
            }
            (
                IpAddr::V4(ip.src_addr()),
                IpAddr::V4(ip.dst_addr()),
                ip.ttl(),
                tcp,
            )
        }
        ETHERTYPE_IPV6 => {
            let ip = Ipv6Packet::new_checked(eth.payload())?;
            if ip.next_header() != IP_PROTO_TCP {
                return Err(WireError::NotTcp(ip.next_header()));
            }
            let tcp = TcpSegment::new_checked(ip.payload())?;
            if !tcp.verify_checksum_v6(ip.src_addr(), ip.dst_addr()) {
                return Err(WireError::BadChecksum { layer: "tcp" });
            }
            (
                IpAddr::V6(ip.src_addr()),
                IpAddr::V6(ip.dst_addr()),
                ip.hop_limit(),
                tcp,
            )
        }
        other => return Err(WireError::UnsupportedEtherType(other)),
    };
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
