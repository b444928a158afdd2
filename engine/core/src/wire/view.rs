//! Read-only typed views over received bytes.
//!
//! Each view is built with `new_checked`, which validates every length the
//! accessors depend on; after that, accessors cannot fail. The views do not
//! verify checksums on their own: call the `verify_*` methods.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::{
    ETH_HEADER_LEN, ETHERTYPE_VLAN, IP_PROTO_TCP, IPV4_HEADER_LEN, IPV6_HEADER_LEN, MacAddr,
    TCP_HEADER_LEN, VLAN_TAG_LEN, WireError,
};

/// Reads `N` bytes at `at`, or zeros if out of range (callers only use ranges
/// that `new_checked` has validated).
fn array_at<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = at.checked_add(N).and_then(|end| bytes.get(at..end)) {
        out.copy_from_slice(src);
    }
    out
}

/// Reads a big-endian `u16` at `at` (zero if out of range).
fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(array_at(bytes, at))
}

/// Reads a big-endian `u32` at `at` (zero if out of range).
fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(array_at(bytes, at))
}

/// An Ethernet II frame, with at most one IEEE 802.1Q VLAN tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<'a> {
    header: &'a [u8; ETH_HEADER_LEN],
    vlan_tci: Option<u16>,
    ethertype: u16,
    payload: &'a [u8],
}

impl<'a> EthernetFrame<'a> {
    /// Reads the Ethernet header and, if the EtherType is 802.1Q, one VLAN tag.
    ///
    /// A second stacked tag is not unwrapped: [`ethertype`](Self::ethertype)
    /// then returns [`ETHERTYPE_VLAN`] again.
    pub fn new_checked(frame: &'a [u8]) -> Result<Self, WireError> {
        let (header, rest) =
            frame
                .split_first_chunk::<ETH_HEADER_LEN>()
                .ok_or(WireError::Truncated {
                    layer: "ethernet",
                    need: ETH_HEADER_LEN,
                    have: frame.len(),
                })?;
        let outer = be16(header, 12);
        if outer != ETHERTYPE_VLAN {
            return Ok(EthernetFrame {
                header,
                vlan_tci: None,
                ethertype: outer,
                payload: rest,
            });
        }
        let (tag, payload) =
            rest.split_first_chunk::<VLAN_TAG_LEN>()
                .ok_or(WireError::Truncated {
                    layer: "vlan",
                    need: ETH_HEADER_LEN + VLAN_TAG_LEN,
                    have: frame.len(),
                })?;
        Ok(EthernetFrame {
            header,
            vlan_tci: Some(be16(tag, 0)),
            ethertype: be16(tag, 2),
            payload,
        })
    }

    /// Destination MAC address.
    pub fn dst(&self) -> MacAddr {
        MacAddr(array_at(self.header, 0))
    }

    /// Source MAC address.
    pub fn src(&self) -> MacAddr {
        MacAddr(array_at(self.header, 6))
    }

    /// The whole VLAN tag control information (priority, DEI, VLAN ID), if tagged.
    pub fn vlan_tci(&self) -> Option<u16> {
        self.vlan_tci
    }

    /// The 12-bit VLAN ID, if tagged.
    pub fn vlan_id(&self) -> Option<u16> {
        self.vlan_tci.map(|tci| tci & 0x0fff)
    }

    /// The EtherType of the payload (the inner one if VLAN-tagged).
    pub fn ethertype(&self) -> u16 {
        self.ethertype
    }

    /// Length of the Ethernet header including the VLAN tag, if any.
    pub fn header_len(&self) -> usize {
        if self.vlan_tci.is_some() {
            ETH_HEADER_LEN + VLAN_TAG_LEN
        } else {
            ETH_HEADER_LEN
        }
    }

    /// Everything after the header (including any Ethernet padding).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

/// An IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<'a> {
    header: &'a [u8; IPV4_HEADER_LEN],
    options: &'a [u8],
    payload: &'a [u8],
}

impl<'a> Ipv4Packet<'a> {
    /// Checks the version, the IHL and the total length against `data`.
    ///
    /// `data` may be longer than the total length (Ethernet padding); the
    /// excess is ignored. The header checksum is not checked here, see
    /// [`verify_checksum`](Self::verify_checksum).
    pub fn new_checked(data: &'a [u8]) -> Result<Self, WireError> {
        let have = data.len();
        let (header, _) =
            data.split_first_chunk::<IPV4_HEADER_LEN>()
                .ok_or(WireError::Truncated {
                    layer: "ipv4",
                    need: IPV4_HEADER_LEN,
                    have,
                })?;
        let version = header[0] >> 4;
        if version != 4 {
            return Err(WireError::BadIpVersion(version));
        }
        let ihl = usize::from(header[0] & 0x0f);
        if ihl < 5 {
            return Err(WireError::BadHeaderLength {
                layer: "ipv4",
                value: ihl,
            });
        }
        let header_len = ihl * 4;
        if have < header_len {
            return Err(WireError::Truncated {
                layer: "ipv4",
                need: header_len,
                have,
            });
        }
        let total_len = usize::from(be16(header, 2));
        if total_len < header_len {
            return Err(WireError::BadLength {
                layer: "ipv4",
                value: total_len,
            });
        }
        let truncated = WireError::Truncated {
            layer: "ipv4",
            need: total_len,
            have,
        };
        let options = data
            .get(IPV4_HEADER_LEN..header_len)
            .ok_or(truncated.clone())?;
        let payload = data.get(header_len..total_len).ok_or(truncated)?;
        Ok(Ipv4Packet {
            header,
            options,
            payload,
        })
    }

    /// Header length in bytes (IHL * 4).
    pub fn header_len(&self) -> usize {
        IPV4_HEADER_LEN + self.options.len()
    }

    /// The type-of-service byte (DSCP and ECN).
    pub fn tos(&self) -> u8 {
        self.header[1]
    }

    /// The total-length field.
    pub fn total_len(&self) -> u16 {
        be16(self.header, 2)
    }

    /// The identification field.
    pub fn ident(&self) -> u16 {
        be16(self.header, 4)
    }

    /// The don't-fragment flag.
    pub fn dont_fragment(&self) -> bool {
        self.header[6] & 0x40 != 0
    }

    /// The more-fragments flag.
    pub fn more_fragments(&self) -> bool {
        self.header[6] & 0x20 != 0
    }

    /// The fragment offset, in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        be16(self.header, 6) & 0x1fff
    }

    /// Whether this packet is a fragment (more-fragments set or nonzero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_fragments() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.header[8]
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.header[9]
    }

    /// The header-checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.header, 10)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.header, 12))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.header, 16))
    }

    /// The header options (empty when IHL is 5).
    pub fn options(&self) -> &'a [u8] {
        self.options
    }

    /// The payload, as delimited by the total-length field.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Whether the header checksum (covering the options) verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::is_valid(checksum::add(
            checksum::sum(self.header),
            checksum::sum(self.options),
        ))
    }
}

/// An IPv6 packet (fixed header only; extension headers are payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<'a> {
    header: &'a [u8; IPV6_HEADER_LEN],
    payload: &'a [u8],
}

impl<'a> Ipv6Packet<'a> {
    /// Checks the version and the payload length against `data`.
    ///
    /// `data` may be longer than the header plus payload length (Ethernet
    /// padding); the excess is ignored. Jumbograms (payload length 0 with a
    /// hop-by-hop jumbo option) are not supported: they read as empty.
    pub fn new_checked(data: &'a [u8]) -> Result<Self, WireError> {
        let have = data.len();
        let (header, rest) =
            data.split_first_chunk::<IPV6_HEADER_LEN>()
                .ok_or(WireError::Truncated {
                    layer: "ipv6",
                    need: IPV6_HEADER_LEN,
                    have,
                })?;
        let version = header[0] >> 4;
        if version != 6 {
            return Err(WireError::BadIpVersion(version));
        }
        let payload_len = usize::from(be16(header, 4));
        let payload = rest.get(..payload_len).ok_or(WireError::Truncated {
            layer: "ipv6",
            need: IPV6_HEADER_LEN + payload_len,
            have,
        })?;
        Ok(Ipv6Packet { header, payload })
    }

    /// The traffic class.
    pub fn traffic_class(&self) -> u8 {
        // Version(4) | traffic class(8) | flow label(20).
        ((be16(self.header, 0) >> 4) & 0xff) as u8
    }

    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        be32(self.header, 0) & 0x000f_ffff
    }

    /// The payload-length field.
    pub fn payload_len(&self) -> u16 {
        be16(self.header, 4)
    }

    /// The next-header field.
    pub fn next_header(&self) -> u8 {
        self.header[6]
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.header[7]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array_at::<16>(self.header, 8))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array_at::<16>(self.header, 24))
    }

    /// The payload, as delimited by the payload-length field.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

/// A TCP segment (header, options and payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    segment: &'a [u8],
    header: &'a [u8; TCP_HEADER_LEN],
    options: &'a [u8],
    payload: &'a [u8],
}

impl<'a> TcpSegment<'a> {
    /// Checks the data offset against `segment`, which must be exactly the IP
    /// payload (the checksum covers all of it).
    pub fn new_checked(segment: &'a [u8]) -> Result<Self, WireError> {
        let have = segment.len();
        let (header, _) =
            segment
                .split_first_chunk::<TCP_HEADER_LEN>()
                .ok_or(WireError::Truncated {
                    layer: "tcp",
                    need: TCP_HEADER_LEN,
                    have,
                })?;
        let data_offset = usize::from(header[12] >> 4);
        if data_offset < 5 {
            return Err(WireError::BadHeaderLength {
                layer: "tcp",
                value: data_offset,
            });
        }
        let header_len = data_offset * 4;
        let truncated = WireError::Truncated {
            layer: "tcp",
            need: header_len,
            have,
        };
        let options = segment
            .get(TCP_HEADER_LEN..header_len)
            .ok_or(truncated.clone())?;
        let payload = segment.get(header_len..).ok_or(truncated)?;
        Ok(TcpSegment {
            segment,
            header,
            options,
            payload,
        })
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.header, 0)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.header, 2)
    }

    /// Sequence number.
    pub fn seq(&self) -> u32 {
        be32(self.header, 4)
    }

    /// Acknowledgment number.
    pub fn ack(&self) -> u32 {
        be32(self.header, 8)
    }

    /// Header length in bytes (data offset * 4).
    pub fn header_len(&self) -> usize {
        TCP_HEADER_LEN + self.options.len()
    }

    /// The flag byte (see [`tcp_flags`](super::tcp_flags)); the NS bit of the
    /// previous byte is not included.
    pub fn flags(&self) -> u8 {
        self.header[13]
    }

    /// Window size.
    pub fn window(&self) -> u16 {
        be16(self.header, 14)
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.header, 16)
    }

    /// The urgent pointer.
    pub fn urgent(&self) -> u16 {
        be16(self.header, 18)
    }

    /// The options bytes (empty when the data offset is 5).
    pub fn options(&self) -> &'a [u8] {
        self.options
    }

    /// The segment data after the header.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The whole segment.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.segment
    }

    /// Whether the checksum verifies for a segment carried over IPv4.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let Ok(len) = u16::try_from(self.segment.len()) else {
            return false;
        };
        let pseudo = checksum::pseudo_header_v4(src, dst, IP_PROTO_TCP, len);
        checksum::is_valid(checksum::add(pseudo, checksum::sum(self.segment)))
    }

    /// Whether the checksum verifies for a segment carried over IPv6.
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let Ok(len) = u32::try_from(self.segment.len()) else {
            return false;
        };
        let pseudo = checksum::pseudo_header_v6(src, dst, IP_PROTO_TCP, len);
        checksum::is_valid(checksum::add(pseudo, checksum::sum(self.segment)))
    }
}
