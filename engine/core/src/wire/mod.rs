//! Packet views, builders and Internet checksums.
//!
//! This module is pure: it does no I/O and never panics on any input. Every function that reads a byte string checks its
//! length first and reports problems as a [`WireError`].
//!
//! The layout follows smoltcp's `wire` module in spirit:
//!
//! * [`checksum`]: the RFC 1071 ones'-complement sum, usable incrementally.
//! * Read-only typed views, each built with a `new_checked` constructor that
//!   validates lengths once so that its accessors cannot fail:
//!   [`EthernetFrame`], [`Ipv4Packet`], [`Ipv6Packet`], [`TcpSegment`].
//! * Emitters for the frames the scanner sends: [`SynTemplate`] (the hot
//!   path, one SYN probe per call), [`write_rst`] and [`write_echo_request`]
//!   (ICMP / ICMPv6 echo, for host reachability).
//! * [`parse_tcp_frame`] and [`parse_echo_frame`], which turn a received
//!   Ethernet frame into a [`TcpSegmentInfo`] or an [`EchoInfo`] after
//!   verifying every checksum.
//!
//! All multi-byte fields on the wire are big-endian (network order). Integer
//! parameters named "host-order" are plain Rust integers, for example
//! `u32::from(Ipv4Addr)`.

use std::fmt;
use std::str::FromStr;

pub mod checksum;
mod emit;
mod parse;
mod view;

#[cfg(test)]
mod tests;

pub use emit::{SynTemplate, write_echo_request, write_rst};
pub use parse::{EchoInfo, TcpSegmentInfo, parse_echo_frame, parse_tcp_frame};
pub use view::{EthernetFrame, Ipv4Packet, Ipv6Packet, TcpSegment};

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType (TPID) of an IEEE 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;

/// IP protocol number (IPv4) / next-header value (IPv6) of TCP.
pub const IP_PROTO_TCP: u8 = 6;
/// IP protocol number of ICMP (IPv4).
pub const IP_PROTO_ICMP: u8 = 1;
/// Next-header value of ICMPv6.
pub const IP_PROTO_ICMPV6: u8 = 58;

/// ICMP type of an echo reply (IPv4).
pub const ICMP_ECHO_REPLY: u8 = 0;
/// ICMP type of an echo request (IPv4).
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMPv6 type of an echo request.
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 type of an echo reply.
pub const ICMPV6_ECHO_REPLY: u8 = 129;
/// Length of an ICMP / ICMPv6 echo header: type, code, checksum, identifier,
/// sequence number.
pub const ICMP_HEADER_LEN: usize = 8;

/// Length of an Ethernet II header without VLAN tag.
pub const ETH_HEADER_LEN: usize = 14;
/// Length of one 802.1Q VLAN tag.
pub const VLAN_TAG_LEN: usize = 4;
/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// Length of a TCP header without options.
pub const TCP_HEADER_LEN: usize = 20;

/// Length of a SYN probe over IPv4: 14 Ethernet + 20 IPv4 + 24 TCP
/// (20 + the 4-byte MSS option).
pub const SYN_V4_LEN: usize = 58;
/// Length of a SYN probe over IPv6: 14 Ethernet + 40 IPv6 + 24 TCP.
pub const SYN_V6_LEN: usize = 78;
/// Length of an RST over IPv4: 14 Ethernet + 20 IPv4 + 20 TCP.
pub const RST_V4_LEN: usize = 54;
/// Length of an RST over IPv6: 14 Ethernet + 40 IPv6 + 20 TCP.
pub const RST_V6_LEN: usize = 74;
/// Length of an ICMP echo request: 14 Ethernet + 20 IPv4 + 8 ICMP (no data).
pub const ECHO_V4_LEN: usize = 42;
/// Length of an ICMPv6 echo request: 14 Ethernet + 40 IPv6 + 8 ICMPv6.
pub const ECHO_V6_LEN: usize = 62;

/// TCP flag bits, as found in byte 13 of the TCP header.
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field is significant.
    pub const URG: u8 = 0x20;
    /// ECN-Echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// Everything that can go wrong while reading or writing a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ends before a header (or the length a header announces) does.
    #[error("{layer}: truncated, need {need} bytes but have {have}")]
    Truncated {
        /// The layer being read ("ethernet", "ipv4", "ipv6", "tcp", ...).
        layer: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The frame carries an EtherType this module does not handle
    /// (also returned for a second, stacked VLAN tag).
    #[error("unsupported EtherType {0:#06x}")]
    UnsupportedEtherType(u16),
    /// The IP version nibble does not match the EtherType.
    #[error("bad IP version {0}")]
    BadIpVersion(u8),
    /// A header-length field (IPv4 IHL, TCP data offset) is below its minimum.
    /// `value` is the raw field, in 32-bit words.
    #[error("{layer}: bad header length field {value} (32-bit words)")]
    BadHeaderLength {
        /// The layer being read.
        layer: &'static str,
        /// The raw field value.
        value: usize,
    },
    /// A total-length field is smaller than the header it belongs to.
    #[error("{layer}: length field {value} is smaller than the header")]
    BadLength {
        /// The layer being read.
        layer: &'static str,
        /// The raw field value, in bytes.
        value: usize,
    },
    /// The IP payload is not TCP; carries the IPv4 protocol or IPv6 next header.
    #[error("not TCP: IP protocol / next header {0}")]
    NotTcp(u8),
    /// The IP payload is not ICMP (IPv4) / ICMPv6 (IPv6); carries the IPv4
    /// protocol or IPv6 next header.
    #[error("not ICMP: IP protocol / next header {0}")]
    NotIcmp(u8),
    /// The ICMP message is not an echo request or reply; carries its type.
    #[error("not an ICMP echo message: type {0}")]
    NotEcho(u8),
    /// The IPv4 packet is a fragment (MF set or nonzero fragment offset).
    #[error("IPv4 fragment (more-fragments set or nonzero offset)")]
    Fragment,
    /// A checksum does not verify.
    #[error("{layer}: bad checksum")]
    BadChecksum {
        /// The layer whose checksum failed ("ipv4", "tcp", "icmp" or "icmpv6").
        layer: &'static str,
    },
    /// The output buffer cannot hold the frame.
    #[error("output buffer too small: need {need} bytes but have {have}")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// An IPv4 address was given where IPv6 was expected, or the reverse.
    #[error("address family mismatch (IPv4 and IPv6 mixed)")]
    FamilyMismatch,
    /// A MAC address string could not be parsed.
    #[error("invalid MAC address {0:?}, expected six hex octets like aa:bb:cc:dd:ee:ff")]
    BadMac(String),
}

/// A 48-bit Ethernet MAC address.
///
/// Displays as lowercase `aa:bb:cc:dd:ee:ff`; parses from six colon-separated
/// groups of one or two hex digits (either case).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The all-zero address.
    pub const ZERO: MacAddr = MacAddr([0; 6]);
    /// The broadcast address `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// The six octets.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl FromStr for MacAddr {
    type Err = WireError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || WireError::BadMac(s.to_owned());
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            // `from_str_radix` alone would accept a leading '+'.
            if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(octets))
    }
}

#[cfg(test)]
mod mac_tests {
    use super::*;

    #[test]
    fn mac_display_and_parse_round_trip() {
        let mac = MacAddr([0x00, 0x1b, 0xaa, 0xBC, 0x0f, 0xff]);
        assert_eq!(mac.to_string(), "00:1b:aa:bc:0f:ff");
        assert_eq!("00:1b:aa:bc:0f:ff".parse::<MacAddr>(), Ok(mac));
        assert_eq!("00:1B:AA:BC:0F:FF".parse::<MacAddr>(), Ok(mac));
        assert_eq!("0:1b:aa:bc:f:ff".parse::<MacAddr>(), Ok(mac));
        assert_eq!(format!("{mac:?}"), "MacAddr(00:1b:aa:bc:0f:ff)");
    }

    #[test]
    fn mac_parse_rejects_garbage() {
        for s in [
            "",
            "00:11:22:33:44",
            "00:11:22:33:44:55:66",
            "00:11:22:33:44:5g",
            "00:11:22:33:44:555",
            "00:11:22:33::55",
            "+0:11:22:33:44:55",
            "00-11-22-33-44-55",
            "00:11:22:33:44:55:",
            " 00:11:22:33:44:55",
        ] {
            assert_eq!(
                s.parse::<MacAddr>(),
                Err(WireError::BadMac(s.to_owned())),
                "{s:?}"
            );
        }
    }
}
