//! Building the frames the scanner sends: SYN probes, RSTs and ICMP echo
//! requests.
//!
//! Frame layouts (byte offsets in the Ethernet frame):
//!
//! ```text
//! IPv4 SYN (58):  0 eth | 14 ipv4 (id 18, csum 24, dst 30) | 34 tcp (sport 34, dport 36,
//!                 seq 38, csum 50) | 54 MSS option
//! IPv6 SYN (78):  0 eth | 14 ipv6 (dst 38) | 54 tcp (sport 54, dport 56, seq 58, csum 70)
//!                 | 74 MSS option
//! IPv4 RST (54):  0 eth | 14 ipv4 | 34 tcp
//! IPv6 RST (74):  0 eth | 14 ipv6 | 54 tcp
//! IPv4 echo (42): 0 eth | 14 ipv4 | 34 icmp (type 8, code 0, csum 36, id 38, seq 40)
//! IPv6 echo (62): 0 eth | 14 ipv6 | 54 icmpv6 (type 128, code 0, csum 56, id 58, seq 60)
//! ```
//!
//! No frame sets IPv4 don't-fragment; the RST and the echo request use IPv4
//! id 0. An echo request carries no data.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::{
    ECHO_V4_LEN, ECHO_V6_LEN, ETH_HEADER_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ICMP_ECHO_REQUEST,
    ICMP_HEADER_LEN, ICMPV6_ECHO_REQUEST, IP_PROTO_ICMP, IP_PROTO_ICMPV6, IP_PROTO_TCP,
    IPV4_HEADER_LEN, IPV6_HEADER_LEN, MacAddr, RST_V4_LEN, RST_V6_LEN, SYN_V4_LEN, SYN_V6_LEN,
    TCP_HEADER_LEN, WireError, tcp_flags,
};

/// Length of the SYN's TCP header: 20 bytes plus the 4-byte MSS option.
const SYN_TCP_LEN: usize = TCP_HEADER_LEN + 4;

/// Offsets of the fields [`SynTemplate`] patches in an IPv4 SYN.
mod v4 {
    use super::{ETH_HEADER_LEN, IPV4_HEADER_LEN};
    pub const IP: usize = ETH_HEADER_LEN;
    pub const IP_ID: usize = IP + 4;
    pub const IP_CSUM: usize = IP + 10;
    pub const IP_DST: usize = IP + 16;
    pub const TCP: usize = IP + IPV4_HEADER_LEN;
}

/// Offsets of the fields [`SynTemplate`] patches in an IPv6 SYN.
mod v6 {
    use super::{ETH_HEADER_LEN, IPV6_HEADER_LEN};
    pub const IP: usize = ETH_HEADER_LEN;
    pub const IP_DST: usize = IP + 24;
    pub const TCP: usize = IP + IPV6_HEADER_LEN;
}

/// Offsets inside a TCP header.
mod tcp_off {
    pub const SPORT: usize = 0;
    pub const DPORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const CSUM: usize = 16;
}

/// The Ethernet II header.
fn ethernet_header(dst: MacAddr, src: MacAddr, ethertype: u16) -> [u8; ETH_HEADER_LEN] {
    let mut h = [0u8; ETH_HEADER_LEN];
    h[0..6].copy_from_slice(&dst.0);
    h[6..12].copy_from_slice(&src.0);
    h[12..14].copy_from_slice(&ethertype.to_be_bytes());
    h
}

/// An IPv4 header carrying TCP: IHL 5, TOS 0, no flags, checksum left zero.
fn ipv4_header(total_len: u16, id: u16, ttl: u8, src: Ipv4Addr, dst: Ipv4Addr) -> [u8; 20] {
    ipv4_header_proto(total_len, id, ttl, IP_PROTO_TCP, src, dst)
}

/// An IPv4 header carrying `protocol`: IHL 5, TOS 0, no flags, checksum left
/// zero.
fn ipv4_header_proto(
    total_len: u16,
    id: u16,
    ttl: u8,
    protocol: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
) -> [u8; 20] {
    let [len_hi, len_lo] = total_len.to_be_bytes();
    let [id_hi, id_lo] = id.to_be_bytes();
    let [s0, s1, s2, s3] = src.octets();
    let [d0, d1, d2, d3] = dst.octets();
    #[rustfmt::skip]
    let header = [
        0x45, 0, len_hi, len_lo,    // version 4, IHL 5 | TOS | total length
        id_hi, id_lo, 0, 0,         // identification | flags, fragment offset
        ttl, protocol, 0, 0,        // TTL | protocol | header checksum
        s0, s1, s2, s3,             // source
        d0, d1, d2, d3,             // destination
    ];
    header
}

/// An IPv6 header carrying TCP: traffic class 0, flow label 0.
fn ipv6_header(payload_len: u16, hop_limit: u8, src: Ipv6Addr, dst: Ipv6Addr) -> [u8; 40] {
    ipv6_header_next(payload_len, hop_limit, IP_PROTO_TCP, src, dst)
}

/// An IPv6 header with next header `next`: traffic class 0, flow label 0.
fn ipv6_header_next(
    payload_len: u16,
    hop_limit: u8,
    next: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
) -> [u8; 40] {
    let mut h = [0u8; IPV6_HEADER_LEN];
    h[0] = 0x60; // version 6
    h[4..6].copy_from_slice(&payload_len.to_be_bytes());
    h[6] = next;
    h[7] = hop_limit;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h
}

/// The fixed 20-byte TCP header: ack 0, urgent 0, checksum left zero.
fn tcp_header(
    src_port: u16,
    dst_port: u16,
    seq: u32,
    header_len: usize,
    flags: u8,
    window: u16,
) -> [u8; TCP_HEADER_LEN] {
    let mut h = [0u8; TCP_HEADER_LEN];
    h[0..2].copy_from_slice(&src_port.to_be_bytes());
    h[2..4].copy_from_slice(&dst_port.to_be_bytes());
    h[4..8].copy_from_slice(&seq.to_be_bytes());
    // Data offset in 32-bit words, in the high nibble (header_len <= 60).
    h[12] = ((header_len / 4) as u8) << 4;
    h[13] = flags;
    h[14..16].copy_from_slice(&window.to_be_bytes());
    h
}

/// The SYN's TCP header: [`tcp_header`] plus the MSS option.
fn syn_tcp_header(
    src_port: u16,
    dst_port: u16,
    seq: u32,
    window: u16,
    mss: u16,
) -> [u8; SYN_TCP_LEN] {
    let mut h = [0u8; SYN_TCP_LEN];
    h[..TCP_HEADER_LEN].copy_from_slice(&tcp_header(
        src_port,
        dst_port,
        seq,
        SYN_TCP_LEN,
        tcp_flags::SYN,
        window,
    ));
    let [mss_hi, mss_lo] = mss.to_be_bytes();
    h[TCP_HEADER_LEN..].copy_from_slice(&[2, 4, mss_hi, mss_lo]); // kind 2 (MSS), length 4
    h
}

/// The IPv4 identification of a SYN probe: the two halves of the sequence
/// number XORed together. The sequence number is already per-probe (a cookie),
/// so this costs one instruction and still varies between probes.
#[inline]
fn ipv4_id(seq: u32) -> u16 {
    ((seq >> 16) as u16) ^ (seq as u16)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Template {
    V4([u8; SYN_V4_LEN]),
    V6([u8; SYN_V6_LEN]),
}

/// A SYN frame template.
///
/// Everything that does not change between probes is precomputed once: the
/// Ethernet header, the IP header constants, the TCP header constants with
/// the MSS option, and the checksum partial sums over those constants.
/// Writing one probe copies the template and patches the destination address,
/// the ports, the sequence number, the IPv4 identification and the two
/// checksums, which are finished from the partial sums plus the patched
/// fields.
///
/// The frame: IPv4 (version 4, IHL 5, TOS 0, total length 44, id from
/// the sequence number (the XOR of its two 16-bit halves), no flags (DF
/// clear), the TTL, protocol 6) or IPv6 (traffic class 0, flow label 0,
/// payload length 24, next header 6, the hop limit); then TCP (ack 0, data
/// offset 6, flags SYN, the window, urgent 0, option MSS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynTemplate {
    frame: Template,
    /// IPv4 only: folded sum of the IPv4 header with id, checksum and
    /// destination zero.
    ip_partial: u32,
    /// Folded sum of the pseudo-header and the TCP header with destination
    /// address, ports, sequence number and checksum zero.
    tcp_partial: u32,
}

impl SynTemplate {
    /// A template for IPv4 probes from `src_ip`.
    pub fn v4(
        src_mac: MacAddr,
        dst_mac: MacAddr,
        src_ip: Ipv4Addr,
        ttl: u8,
        window: u16,
        mss: u16,
    ) -> Self {
        let total_len = (IPV4_HEADER_LEN + SYN_TCP_LEN) as u16;
        let eth = ethernet_header(dst_mac, src_mac, ETHERTYPE_IPV4);
        let ip = ipv4_header(total_len, 0, ttl, src_ip, Ipv4Addr::UNSPECIFIED);
        let tcp = syn_tcp_header(0, 0, 0, window, mss);

        let mut frame = [0u8; SYN_V4_LEN];
        frame[..v4::IP].copy_from_slice(&eth);
        frame[v4::IP..v4::TCP].copy_from_slice(&ip);
        frame[v4::TCP..].copy_from_slice(&tcp);

        let pseudo = checksum::pseudo_header_v4(
            src_ip,
            Ipv4Addr::UNSPECIFIED,
            IP_PROTO_TCP,
            SYN_TCP_LEN as u16,
        );
        SynTemplate {
            frame: Template::V4(frame),
            ip_partial: u32::from(checksum::fold(checksum::sum(&ip))),
            tcp_partial: u32::from(checksum::fold(checksum::add(pseudo, checksum::sum(&tcp)))),
        }
    }

    /// A template for IPv6 probes from `src_ip`.
    pub fn v6(
        src_mac: MacAddr,
        dst_mac: MacAddr,
        src_ip: Ipv6Addr,
        hop_limit: u8,
        window: u16,
        mss: u16,
    ) -> Self {
        let eth = ethernet_header(dst_mac, src_mac, ETHERTYPE_IPV6);
        let ip = ipv6_header(SYN_TCP_LEN as u16, hop_limit, src_ip, Ipv6Addr::UNSPECIFIED);
        let tcp = syn_tcp_header(0, 0, 0, window, mss);

        let mut frame = [0u8; SYN_V6_LEN];
        frame[..v6::IP].copy_from_slice(&eth);
        frame[v6::IP..v6::TCP].copy_from_slice(&ip);
        frame[v6::TCP..].copy_from_slice(&tcp);

        let pseudo = checksum::pseudo_header_v6(
            src_ip,
            Ipv6Addr::UNSPECIFIED,
            IP_PROTO_TCP,
            SYN_TCP_LEN as u32,
        );
        SynTemplate {
            frame: Template::V6(frame),
            ip_partial: 0,
            tcp_partial: u32::from(checksum::fold(checksum::add(pseudo, checksum::sum(&tcp)))),
        }
    }

    /// Length of the frames this template writes: [`SYN_V4_LEN`] or
    /// [`SYN_V6_LEN`].
    pub fn frame_len(&self) -> usize {
        match self.frame {
            Template::V4(_) => SYN_V4_LEN,
            Template::V6(_) => SYN_V6_LEN,
        }
    }

    /// Whether this is an IPv4 template.
    pub fn is_v4(&self) -> bool {
        matches!(self.frame, Template::V4(_))
    }

    /// Writes a whole SYN frame to `buf[..frame_len()]` and returns its length.
    ///
    /// Errors: [`WireError::FamilyMismatch`] if `dst` is not of the template's
    /// family, [`WireError::BufferTooSmall`] if `buf` is shorter than
    /// [`frame_len`](Self::frame_len). `buf` is untouched on error.
    pub fn write(
        &self,
        buf: &mut [u8],
        dst: IpAddr,
        src_port: u16,
        dst_port: u16,
        seq: u32,
    ) -> Result<usize, WireError> {
        match dst {
            IpAddr::V4(dst) => self.write_v4(buf, u32::from(dst), src_port, dst_port, seq),
            IpAddr::V6(dst) => self.write_v6(buf, u128::from(dst), src_port, dst_port, seq),
        }
    }

    /// [`write`](Self::write) for an IPv4 destination given as a host-order
    /// `u32` (`u32::from(Ipv4Addr)`).
    #[inline]
    pub fn write_v4(
        &self,
        buf: &mut [u8],
        dst: u32,
        src_port: u16,
        dst_port: u16,
        seq: u32,
    ) -> Result<usize, WireError> {
        let Template::V4(template) = &self.frame else {
            return Err(WireError::FamilyMismatch);
        };
        let have = buf.len();
        let out = buf
            .first_chunk_mut::<SYN_V4_LEN>()
            .ok_or(WireError::BufferTooSmall {
                need: SYN_V4_LEN,
                have,
            })?;
        *out = *template;

        let id = ipv4_id(seq);
        let dst_sum = checksum::sum_u32(dst);
        // Each term is at most 0x1fffe: no overflow.
        let ip_sum = self.ip_partial + u32::from(id) + dst_sum;
        let tcp_sum = self.tcp_partial
            + dst_sum
            + u32::from(src_port)
            + u32::from(dst_port)
            + checksum::sum_u32(seq);

        out[v4::IP_ID..v4::IP_ID + 2].copy_from_slice(&id.to_be_bytes());
        out[v4::IP_CSUM..v4::IP_CSUM + 2].copy_from_slice(&checksum::finish(ip_sum).to_be_bytes());
        out[v4::IP_DST..v4::IP_DST + 4].copy_from_slice(&dst.to_be_bytes());
        let t = v4::TCP;
        out[t + tcp_off::SPORT..t + tcp_off::SPORT + 2].copy_from_slice(&src_port.to_be_bytes());
        out[t + tcp_off::DPORT..t + tcp_off::DPORT + 2].copy_from_slice(&dst_port.to_be_bytes());
        out[t + tcp_off::SEQ..t + tcp_off::SEQ + 4].copy_from_slice(&seq.to_be_bytes());
        out[t + tcp_off::CSUM..t + tcp_off::CSUM + 2]
            .copy_from_slice(&checksum::finish(tcp_sum).to_be_bytes());
        Ok(SYN_V4_LEN)
    }

    /// [`write`](Self::write) for an IPv6 destination given as a host-order
    /// `u128` (`u128::from(Ipv6Addr)`).
    #[inline]
    pub fn write_v6(
        &self,
        buf: &mut [u8],
        dst: u128,
        src_port: u16,
        dst_port: u16,
        seq: u32,
    ) -> Result<usize, WireError> {
        let Template::V6(template) = &self.frame else {
            return Err(WireError::FamilyMismatch);
        };
        let have = buf.len();
        let out = buf
            .first_chunk_mut::<SYN_V6_LEN>()
            .ok_or(WireError::BufferTooSmall {
                need: SYN_V6_LEN,
                have,
            })?;
        *out = *template;

        // At most 0xffff + 8 * 0xffff + 2 * 0xffff + 0x1fffe: no overflow.
        let tcp_sum = self.tcp_partial
            + checksum::sum_u128(dst)
            + u32::from(src_port)
            + u32::from(dst_port)
            + checksum::sum_u32(seq);

        out[v6::IP_DST..v6::IP_DST + 16].copy_from_slice(&dst.to_be_bytes());
        let t = v6::TCP;
        out[t + tcp_off::SPORT..t + tcp_off::SPORT + 2].copy_from_slice(&src_port.to_be_bytes());
        out[t + tcp_off::DPORT..t + tcp_off::DPORT + 2].copy_from_slice(&dst_port.to_be_bytes());
        out[t + tcp_off::SEQ..t + tcp_off::SEQ + 4].copy_from_slice(&seq.to_be_bytes());
        out[t + tcp_off::CSUM..t + tcp_off::CSUM + 2]
            .copy_from_slice(&checksum::finish(tcp_sum).to_be_bytes());
        Ok(SYN_V6_LEN)
    }
}

/// Writes an RST to `buf` and returns its length ([`RST_V4_LEN`] or
/// [`RST_V6_LEN`]).
///
/// Used to answer a SYN-ACK so that the target drops its half-open
/// connection: `seq` is the SYN-ACK's acknowledgment number. The segment has
/// flags RST only, ack 0, window 0, data offset 5; the IPv4 header has id 0
/// and no flags; `ttl` is the IPv4 TTL or the IPv6 hop limit.
///
/// Errors: [`WireError::FamilyMismatch`] if `src` and `dst` are of different
/// families, [`WireError::BufferTooSmall`] if `buf` is too short. `buf` is
/// untouched on error.
#[allow(clippy::too_many_arguments)] // The signature mirrors the frame's fields.
pub fn write_rst(
    buf: &mut [u8],
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ttl: u8,
) -> Result<usize, WireError> {
    let have = buf.len();
    let tcp = tcp_header(src_port, dst_port, seq, TCP_HEADER_LEN, tcp_flags::RST, 0);
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let out = buf
                .first_chunk_mut::<RST_V4_LEN>()
                .ok_or(WireError::BufferTooSmall {
                    need: RST_V4_LEN,
                    have,
                })?;
            let total_len = (IPV4_HEADER_LEN + TCP_HEADER_LEN) as u16;
            let mut ip = ipv4_header(total_len, 0, ttl, src, dst);
            let ip_sum = checksum::finish(checksum::sum(&ip));
            ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
            let pseudo = checksum::pseudo_header_v4(src, dst, IP_PROTO_TCP, TCP_HEADER_LEN as u16);
            let mut tcp = tcp;
            let tcp_sum = checksum::add(pseudo, checksum::sum(&tcp));
            tcp[tcp_off::CSUM..tcp_off::CSUM + 2]
                .copy_from_slice(&checksum::finish(tcp_sum).to_be_bytes());

            out[..v4::IP].copy_from_slice(&ethernet_header(dst_mac, src_mac, ETHERTYPE_IPV4));
            out[v4::IP..v4::TCP].copy_from_slice(&ip);
            out[v4::TCP..].copy_from_slice(&tcp);
            Ok(RST_V4_LEN)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let out = buf
                .first_chunk_mut::<RST_V6_LEN>()
                .ok_or(WireError::BufferTooSmall {
                    need: RST_V6_LEN,
                    have,
                })?;
            let ip = ipv6_header(TCP_HEADER_LEN as u16, ttl, src, dst);
            let pseudo = checksum::pseudo_header_v6(src, dst, IP_PROTO_TCP, TCP_HEADER_LEN as u32);
            let mut tcp = tcp;
            let tcp_sum = checksum::add(pseudo, checksum::sum(&tcp));
            tcp[tcp_off::CSUM..tcp_off::CSUM + 2]
                .copy_from_slice(&checksum::finish(tcp_sum).to_be_bytes());

            out[..v6::IP].copy_from_slice(&ethernet_header(dst_mac, src_mac, ETHERTYPE_IPV6));
            out[v6::IP..v6::TCP].copy_from_slice(&ip);
            out[v6::TCP..].copy_from_slice(&tcp);
            Ok(RST_V6_LEN)
        }
        _ => Err(WireError::FamilyMismatch),
    }
}

/// Writes an ICMP echo request (IPv4) or ICMPv6 echo request (IPv6) to
/// `buf` and returns its length ([`ECHO_V4_LEN`] or [`ECHO_V6_LEN`]).
///
/// `id` and `seq` are the identifier and sequence number the reply must
/// echo back (the scanner derives them from its keyed cookie of `dst`, see
/// `Cookies::echo`). The message carries no data; the IPv4 header has id 0
/// and no flags; `ttl` is the IPv4 TTL or the IPv6 hop limit. Both
/// checksums (IPv4 header, ICMP / ICMPv6 with its pseudo-header) are
/// filled in.
///
/// Errors: [`WireError::FamilyMismatch`] if `src` and `dst` are of different
/// families, [`WireError::BufferTooSmall`] if `buf` is too short. `buf` is
/// untouched on error.
#[allow(clippy::too_many_arguments)] // The signature mirrors the frame's fields.
pub fn write_echo_request(
    buf: &mut [u8],
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: IpAddr,
    dst: IpAddr,
    id: u16,
    seq: u16,
    ttl: u8,
) -> Result<usize, WireError> {
    let have = buf.len();
    let icmp = |kind: u8| -> [u8; ICMP_HEADER_LEN] {
        let [id_hi, id_lo] = id.to_be_bytes();
        let [seq_hi, seq_lo] = seq.to_be_bytes();
        [kind, 0, 0, 0, id_hi, id_lo, seq_hi, seq_lo]
    };
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let out = buf
                .first_chunk_mut::<ECHO_V4_LEN>()
                .ok_or(WireError::BufferTooSmall {
                    need: ECHO_V4_LEN,
                    have,
                })?;
            let total_len = (IPV4_HEADER_LEN + ICMP_HEADER_LEN) as u16;
            let mut ip = ipv4_header_proto(total_len, 0, ttl, IP_PROTO_ICMP, src, dst);
            let ip_sum = checksum::finish(checksum::sum(&ip));
            ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
            let mut msg = icmp(ICMP_ECHO_REQUEST);
            let sum = checksum::finish(checksum::sum(&msg));
            msg[2..4].copy_from_slice(&sum.to_be_bytes());

            out[..v4::IP].copy_from_slice(&ethernet_header(dst_mac, src_mac, ETHERTYPE_IPV4));
            out[v4::IP..v4::TCP].copy_from_slice(&ip);
            out[v4::TCP..].copy_from_slice(&msg);
            Ok(ECHO_V4_LEN)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let out = buf
                .first_chunk_mut::<ECHO_V6_LEN>()
                .ok_or(WireError::BufferTooSmall {
                    need: ECHO_V6_LEN,
                    have,
                })?;
            let ip = ipv6_header_next(ICMP_HEADER_LEN as u16, ttl, IP_PROTO_ICMPV6, src, dst);
            let mut msg = icmp(ICMPV6_ECHO_REQUEST);
            let pseudo =
                checksum::pseudo_header_v6(src, dst, IP_PROTO_ICMPV6, ICMP_HEADER_LEN as u32);
            let sum = checksum::finish(checksum::add(pseudo, checksum::sum(&msg)));
            msg[2..4].copy_from_slice(&sum.to_be_bytes());

            out[..v6::IP].copy_from_slice(&ethernet_header(dst_mac, src_mac, ETHERTYPE_IPV6));
            out[v6::IP..v6::TCP].copy_from_slice(&ip);
            out[v6::TCP..].copy_from_slice(&msg);
            Ok(ECHO_V6_LEN)
        }
        _ => Err(WireError::FamilyMismatch),
    }
}
