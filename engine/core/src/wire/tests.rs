//! Tests of the emitters and the parser together: round trips, independent
//! vectors (etherparse and frames captured from the Linux kernel), property
//! tests and error paths.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use proptest::prelude::*;

use super::*;

const SRC_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
const DST_MAC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0xfe]);
const SRC_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 99, 1);
const DST_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 99, 2);
const SRC_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const DST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0xabcd, 0, 2);

fn template_v4() -> SynTemplate {
    SynTemplate::v4(SRC_MAC, DST_MAC, SRC_V4, 64, 1024, 1460)
}

fn template_v6() -> SynTemplate {
    SynTemplate::v6(SRC_MAC, DST_MAC, SRC_V6, 255, 65535, 1440)
}

fn syn_v4(dst: Ipv4Addr, src_port: u16, dst_port: u16, seq: u32) -> Vec<u8> {
    let mut buf = vec![0u8; SYN_V4_LEN];
    let n = template_v4()
        .write(&mut buf, IpAddr::V4(dst), src_port, dst_port, seq)
        .unwrap();
    assert_eq!(n, SYN_V4_LEN);
    buf
}

fn syn_v6(dst: Ipv6Addr, src_port: u16, dst_port: u16, seq: u32) -> Vec<u8> {
    let mut buf = vec![0u8; SYN_V6_LEN];
    let n = template_v6()
        .write(&mut buf, IpAddr::V6(dst), src_port, dst_port, seq)
        .unwrap();
    assert_eq!(n, SYN_V6_LEN);
    buf
}

fn rst(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16, seq: u32) -> Vec<u8> {
    let mut buf = vec![0u8; RST_V6_LEN];
    let n = write_rst(
        &mut buf, SRC_MAC, DST_MAC, src, dst, src_port, dst_port, seq, 64,
    )
    .unwrap();
    buf.truncate(n);
    buf
}

/// Recomputes the IPv4 header checksum of a frame whose IPv4 header starts at
/// `ip` (used after editing a header on purpose).
fn fix_ipv4_checksum(frame: &mut [u8], ip: usize) {
    let header_len = usize::from(frame[ip] & 0x0f) * 4;
    frame[ip + 10..ip + 12].fill(0);
    let sum = checksum::finish(checksum::sum(&frame[ip..ip + header_len]));
    frame[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
}

/// Parses `frame` with etherparse, asserts that etherparse's own IPv4 header
/// and TCP checksum computations agree with the checksum fields we wrote, and
/// returns etherparse's view for further checks.
fn assert_etherparse_agrees(frame: &[u8]) -> SlicedPacket<'_> {
    let packet = SlicedPacket::from_ethernet(frame).expect("etherparse rejects the frame");
    let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
        panic!("etherparse found no TCP: {packet:?}");
    };
    match &packet.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
            let theirs = tcp.calc_checksum_ipv4(h.source(), h.destination()).unwrap();
            assert_eq!(theirs, tcp.checksum());
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let theirs = tcp.calc_checksum_ipv6(h.source(), h.destination()).unwrap();
            assert_eq!(theirs, tcp.checksum());
        }
        other => panic!("etherparse found no IP: {other:?}"),
    }
    packet
}

fn etherparse_tcp<'a>(packet: &'a SlicedPacket<'_>) -> &'a etherparse::TcpSlice<'a> {
    match &packet.transport {
        Some(TransportSlice::Tcp(tcp)) => tcp,
        _ => panic!("no TCP"),
    }
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

#[test]
fn syn_v4_round_trip() {
    let frame = syn_v4(DST_V4, 40000, 443, 0xdead_beef);
    let info = parse_tcp_frame(&frame).unwrap();
    assert_eq!(
        info,
        TcpSegmentInfo {
            src_mac: SRC_MAC,
            dst_mac: DST_MAC,
            vlan: None,
            src: IpAddr::V4(SRC_V4),
            dst: IpAddr::V4(DST_V4),
            ttl: 64,
            src_port: 40000,
            dst_port: 443,
            seq: 0xdead_beef,
            ack: 0,
            flags: tcp_flags::SYN,
            window: 1024,
        }
    );
    // Fields the parser does not report.
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    assert_eq!(ip.total_len(), 44);
    assert_eq!(ip.ident(), 0xdead ^ 0xbeef);
    assert!(!ip.dont_fragment());
    assert_eq!(ip.tos(), 0);
    let tcp = TcpSegment::new_checked(ip.payload()).unwrap();
    assert_eq!(tcp.header_len(), 24);
    assert_eq!(tcp.options(), &[2, 4, 0x05, 0xb4]);
    assert_eq!(tcp.urgent(), 0);
    assert!(tcp.payload().is_empty());
}

#[test]
fn syn_v6_round_trip() {
    let frame = syn_v6(DST_V6, 1, 65535, 7);
    let info = parse_tcp_frame(&frame).unwrap();
    assert_eq!(
        info,
        TcpSegmentInfo {
            src_mac: SRC_MAC,
            dst_mac: DST_MAC,
            vlan: None,
            src: IpAddr::V6(SRC_V6),
            dst: IpAddr::V6(DST_V6),
            ttl: 255,
            src_port: 1,
            dst_port: 65535,
            seq: 7,
            ack: 0,
            flags: tcp_flags::SYN,
            window: 65535,
        }
    );
    let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
    assert_eq!(ip.payload_len(), 24);
    assert_eq!(ip.traffic_class(), 0);
    assert_eq!(ip.flow_label(), 0);
    let tcp = TcpSegment::new_checked(ip.payload()).unwrap();
    assert_eq!(tcp.options(), &[2, 4, 0x05, 0xa0]);
}

#[test]
fn rst_round_trip_both_families() {
    for (src, dst) in [
        (IpAddr::V4(SRC_V4), IpAddr::V4(DST_V4)),
        (IpAddr::V6(SRC_V6), IpAddr::V6(DST_V6)),
    ] {
        let frame = rst(src, dst, 40000, 80, 0x0102_0304);
        let want_len = if src.is_ipv4() {
            RST_V4_LEN
        } else {
            RST_V6_LEN
        };
        assert_eq!(frame.len(), want_len);
        let info = parse_tcp_frame(&frame).unwrap();
        assert_eq!(
            info,
            TcpSegmentInfo {
                src_mac: SRC_MAC,
                dst_mac: DST_MAC,
                vlan: None,
                src,
                dst,
                ttl: 64,
                src_port: 40000,
                dst_port: 80,
                seq: 0x0102_0304,
                ack: 0,
                flags: tcp_flags::RST,
                window: 0,
            }
        );
        // Fields the parser does not report.
        let (ip_len, segment) = match src {
            IpAddr::V4(_) => {
                let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
                assert_eq!((ip.ident(), ip.total_len(), ip.tos()), (0, 40, 0));
                assert!(!ip.dont_fragment() && !ip.is_fragment());
                (20, ip.payload())
            }
            IpAddr::V6(_) => {
                let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
                assert_eq!((ip.payload_len(), ip.flow_label()), (20, 0));
                (40, ip.payload())
            }
        };
        assert_eq!(segment.len(), frame.len() - 14 - ip_len);
        let tcp = TcpSegment::new_checked(segment).unwrap();
        assert_eq!((tcp.header_len(), tcp.urgent()), (20, 0));
    }
}

#[test]
fn fast_paths_match_generic_write() {
    let t4 = template_v4();
    let mut a = [0u8; SYN_V4_LEN];
    let mut b = [0u8; SYN_V4_LEN];
    t4.write(&mut a, IpAddr::V4(DST_V4), 1, 2, 3).unwrap();
    t4.write_v4(&mut b, u32::from(DST_V4), 1, 2, 3).unwrap();
    assert_eq!(a, b);

    let t6 = template_v6();
    let mut a = [0u8; SYN_V6_LEN];
    let mut b = [0u8; SYN_V6_LEN];
    t6.write(&mut a, IpAddr::V6(DST_V6), 1, 2, 3).unwrap();
    t6.write_v6(&mut b, u128::from(DST_V6), 1, 2, 3).unwrap();
    assert_eq!(a, b);
}

#[test]
fn template_reuse_overwrites_fields_and_leaves_tail_alone() {
    let t = template_v4();
    let mut buf = [0xaau8; 100];
    t.write_v4(&mut buf, 0xffff_ffff, 65535, 65535, u32::MAX)
        .unwrap();
    t.write_v4(&mut buf, 0x0a00_0001, 1, 2, 3).unwrap();
    assert_eq!(
        buf[..SYN_V4_LEN],
        syn_v4(Ipv4Addr::new(10, 0, 0, 1), 1, 2, 3)[..]
    );
    assert!(buf[SYN_V4_LEN..].iter().all(|&b| b == 0xaa));
    assert_eq!(t.frame_len(), SYN_V4_LEN);
    assert_eq!(template_v6().frame_len(), SYN_V6_LEN);
    assert!(t.is_v4() && !template_v6().is_v4());
}

#[test]
fn incremental_checksums_equal_full_recomputation() {
    // Extreme values exercise the carries of the incremental sums.
    for (dst, sport, dport, seq) in [
        (0u32, 0u16, 0u16, 0u32),
        (u32::MAX, u16::MAX, u16::MAX, u32::MAX),
        (0x8000_0001, 0x8000, 0x7fff, 0x0001_ffff),
    ] {
        let frame = syn_v4(Ipv4Addr::from(dst), sport, dport, seq);
        let mut copy = frame.clone();
        fix_ipv4_checksum(&mut copy, 14);
        copy[50..52].fill(0);
        let pseudo = checksum::pseudo_header_v4(SRC_V4, Ipv4Addr::from(dst), 6, 24);
        let tcp = checksum::finish(checksum::add(pseudo, checksum::sum(&copy[34..58])));
        copy[50..52].copy_from_slice(&tcp.to_be_bytes());
        assert_eq!(frame, copy);
    }
}

// ---------------------------------------------------------------------------
// Independent vectors: etherparse
// ---------------------------------------------------------------------------

#[test]
fn etherparse_agrees_with_our_syn_v4() {
    let frame = syn_v4(Ipv4Addr::new(203, 0, 113, 77), 61000, 22, 0x8000_0000);
    let packet = assert_etherparse_agrees(&frame);
    let Some(NetSlice::Ipv4(ip)) = &packet.net else {
        panic!()
    };
    let h = ip.header();
    assert_eq!(h.source_addr(), SRC_V4);
    assert_eq!(h.destination_addr(), Ipv4Addr::new(203, 0, 113, 77));
    assert_eq!(h.ttl(), 64);
    assert!(!h.dont_fragment() && !h.more_fragments());
    let tcp = etherparse_tcp(&packet);
    assert_eq!((tcp.source_port(), tcp.destination_port()), (61000, 22));
    assert_eq!(tcp.sequence_number(), 0x8000_0000);
    assert!(tcp.syn() && !tcp.ack() && !tcp.rst() && !tcp.fin());
    assert_eq!(tcp.window_size(), 1024);
    assert_eq!(tcp.options(), &[2, 4, 0x05, 0xb4]);
}

#[test]
fn etherparse_agrees_with_our_syn_v6() {
    let frame = syn_v6(
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xffff),
        12345,
        8443,
        99,
    );
    let packet = assert_etherparse_agrees(&frame);
    let Some(NetSlice::Ipv6(ip)) = &packet.net else {
        panic!()
    };
    assert_eq!(ip.header().hop_limit(), 255);
    assert_eq!(ip.header().source_addr(), SRC_V6);
    let tcp = etherparse_tcp(&packet);
    assert_eq!((tcp.source_port(), tcp.destination_port()), (12345, 8443));
    assert!(tcp.syn());
}

#[test]
fn etherparse_agrees_with_our_rst() {
    for (src, dst) in [
        (IpAddr::V4(SRC_V4), IpAddr::V4(DST_V4)),
        (IpAddr::V6(SRC_V6), IpAddr::V6(DST_V6)),
    ] {
        let frame = rst(src, dst, 5000, 6000, 0xfeed_f00d);
        let packet = assert_etherparse_agrees(&frame);
        let tcp = etherparse_tcp(&packet);
        assert!(tcp.rst() && !tcp.syn() && !tcp.ack());
        assert_eq!(tcp.data_offset(), 5);
        assert_eq!(tcp.window_size(), 0);
        assert_eq!(tcp.sequence_number(), 0xfeed_f00d);
    }
}

#[test]
fn parses_frames_built_by_etherparse() {
    let payload = b"hello, world";
    let src = [10, 1, 2, 3];
    let dst = [10, 4, 5, 6];

    // IPv4, SYN-ACK with data, no VLAN, then with a VLAN tag, then padded.
    let builder = PacketBuilder::ethernet2(SRC_MAC.0, DST_MAC.0)
        .ipv4(src, dst, 42)
        .tcp(443, 50000, 1000, 29200)
        .syn()
        .ack(0x1234_5678);
    let mut frame = Vec::new();
    builder.write(&mut frame, payload).unwrap();
    let info = parse_tcp_frame(&frame).unwrap();
    assert_eq!(
        info,
        TcpSegmentInfo {
            src_mac: SRC_MAC,
            dst_mac: DST_MAC,
            vlan: None,
            src: IpAddr::V4(src.into()),
            dst: IpAddr::V4(dst.into()),
            ttl: 42,
            src_port: 443,
            dst_port: 50000,
            seq: 1000,
            ack: 0x1234_5678,
            flags: tcp_flags::SYN | tcp_flags::ACK,
            window: 29200,
        }
    );
    frame.extend_from_slice(&[0u8; 20]);
    assert_eq!(parse_tcp_frame(&frame), Ok(info), "Ethernet padding");

    let builder = PacketBuilder::ethernet2(SRC_MAC.0, DST_MAC.0)
        .single_vlan(etherparse::VlanId::try_new(0x123).unwrap())
        .ipv4(src, dst, 42)
        .tcp(443, 50000, 1000, 29200)
        .rst()
        .ack(5);
    let mut frame = Vec::new();
    builder.write(&mut frame, &[]).unwrap();
    let info = parse_tcp_frame(&frame).unwrap();
    assert_eq!(info.vlan, Some(0x123));
    assert_eq!(info.flags, tcp_flags::RST | tcp_flags::ACK);
    assert_eq!(info.ack, 5);

    // IPv6 with a VLAN tag and payload.
    let builder = PacketBuilder::ethernet2(SRC_MAC.0, DST_MAC.0)
        .single_vlan(etherparse::VlanId::try_new(4094).unwrap())
        .ipv6(SRC_V6.octets(), DST_V6.octets(), 3)
        .tcp(22, 33000, u32::MAX, 1)
        .fin()
        .psh()
        .ack(u32::MAX);
    let mut frame = Vec::new();
    builder.write(&mut frame, payload).unwrap();
    frame.extend_from_slice(&[0xee; 3]);
    let info = parse_tcp_frame(&frame).unwrap();
    assert_eq!(
        info,
        TcpSegmentInfo {
            src_mac: SRC_MAC,
            dst_mac: DST_MAC,
            vlan: Some(4094),
            src: IpAddr::V6(SRC_V6),
            dst: IpAddr::V6(DST_V6),
            ttl: 3,
            src_port: 22,
            dst_port: 33000,
            seq: u32::MAX,
            ack: u32::MAX,
            flags: tcp_flags::FIN | tcp_flags::PSH | tcp_flags::ACK,
            window: 1,
        }
    );
}

#[test]
fn parses_ipv4_with_options_built_by_etherparse() {
    let mut header =
        etherparse::Ipv4Header::new(0, 9, etherparse::IpNumber::TCP, [1, 2, 3, 4], [5, 6, 7, 8])
            .unwrap();
    // Two NOPs, then a 6-byte record-route-like option and end-of-list.
    header.options =
        etherparse::Ipv4Options::try_from(&[1u8, 1, 7, 7, 4, 0, 0, 0, 0, 0, 0, 0][..]).unwrap();
    let builder = PacketBuilder::ethernet2(SRC_MAC.0, DST_MAC.0)
        .ip(etherparse::IpHeaders::Ipv4(header, Default::default()))
        .tcp(1, 2, 3, 4)
        .syn();
    let mut frame = Vec::new();
    builder.write(&mut frame, &[]).unwrap();
    assert_eq!(frame[14] & 0x0f, 8, "IHL with 12 option bytes");
    let info = parse_tcp_frame(&frame).unwrap();
    assert_eq!(info.src, IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)));
    assert_eq!(info.ttl, 9);
    assert_eq!((info.src_port, info.dst_port, info.seq), (1, 2, 3));

    // The options are covered by the header checksum.
    frame[14 + 21] ^= 0x10;
    assert_eq!(
        parse_tcp_frame(&frame),
        Err(WireError::BadChecksum { layer: "ipv4" })
    );
}

// ---------------------------------------------------------------------------
// Independent vectors: frames from the Linux kernel's own TCP stack
// ---------------------------------------------------------------------------
//
// Captured on this machine (Linux, veth) as follows: a network namespace `a`
// and a veth pair `va` (host side, 198.18.99.1/30) <-> `vb` (in `a`,
// 198.18.99.2/30), with transmit checksum offload turned off on both ends
// (`ethtool -K va tx off`, `ethtool -K vb tx off`) so the kernel fills in
// every checksum in software; `tcpdump -i va -w cap.pcap tcp` on the host
// side; then, from the host, a Python `socket.create_connection` to a
// listener on 198.18.99.2:5998 (giving a SYN and a SYN-ACK), and a connect to
// the closed port 198.18.99.2:5999 (giving a SYN and the kernel's RST|ACK).
// tcpdump reported every checksum "correct". The namespace and veth pair
// were deleted afterwards. Bytes copied from the pcap records unchanged.

const KERNEL_MAC_HOST: MacAddr = MacAddr([0x3a, 0xa1, 0xb7, 0xe8, 0x2f, 0x90]);
const KERNEL_MAC_NS: MacAddr = MacAddr([0xf6, 0x12, 0xba, 0xba, 0x87, 0x37]);
const KERNEL_IP_HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 99, 1);
const KERNEL_IP_NS: Ipv4Addr = Ipv4Addr::new(198, 18, 99, 2);

/// 198.18.99.1:60006 > 198.18.99.2:5998 [S] seq 2386553720 win 64240
/// options [mss 1460,sackOK,TS val 2646281660 ecr 0,nop,wscale 10], DF, id 53440.
const KERNEL_SYN: [u8; 74] = [
    0xf6, 0x12, 0xba, 0xba, 0x87, 0x37, 0x3a, 0xa1, 0xb7, 0xe8, 0x2f, 0x90, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x3c, 0xd0, 0xc0, 0x40, 0x00, 0x40, 0x06, 0x17, 0xd3, 0xc6, 0x12, 0x63, 0x01, 0xc6, 0x12,
    0x63, 0x02, 0xea, 0x66, 0x17, 0x6e, 0x8e, 0x3f, 0xeb, 0x78, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02,
    0xfa, 0xf0, 0xd3, 0xde, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x9d, 0xbb,
    0x0d, 0xbc, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
];

/// 198.18.99.2:5998 > 198.18.99.1:60006 [S.] seq 2055505906 ack 2386553721
/// win 65160, options [mss 1460,sackOK,TS,nop,wscale 10], DF, id 0.
const KERNEL_SYN_ACK: [u8; 74] = [
    0x3a, 0xa1, 0xb7, 0xe8, 0x2f, 0x90, 0xf6, 0x12, 0xba, 0xba, 0x87, 0x37, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x3c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0xe8, 0x93, 0xc6, 0x12, 0x63, 0x02, 0xc6, 0x12,
    0x63, 0x01, 0x17, 0x6e, 0xea, 0x66, 0x7a, 0x84, 0x87, 0xf2, 0x8e, 0x3f, 0xeb, 0x79, 0xa0, 0x12,
    0xfe, 0x88, 0xd3, 0x11, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0xd3, 0xd5,
    0x26, 0xd7, 0x9d, 0xbb, 0x0d, 0xbc, 0x01, 0x03, 0x03, 0x0a,
];

/// 198.18.99.1:51072 > 198.18.99.2:5999 [S] seq 2957888401 (to a closed port).
const KERNEL_SYN_CLOSED: [u8; 74] = [
    0xf6, 0x12, 0xba, 0xba, 0x87, 0x37, 0x3a, 0xa1, 0xb7, 0xe8, 0x2f, 0x90, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x3c, 0xc5, 0x6d, 0x40, 0x00, 0x40, 0x06, 0x23, 0x26, 0xc6, 0x12, 0x63, 0x01, 0xc6, 0x12,
    0x63, 0x02, 0xc7, 0x80, 0x17, 0x6f, 0xb0, 0x4d, 0xcb, 0x91, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02,
    0xfa, 0xf0, 0xe2, 0x29, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x93, 0xcf,
    0x2a, 0x1b, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
];

/// 198.18.99.2:5999 > 198.18.99.1:51072 [R.] seq 0 ack 2957888402 win 0, the
/// kernel's answer to KERNEL_SYN_CLOSED (54 bytes: veth does not pad).
const KERNEL_RST_ACK: [u8; 54] = [
    0x3a, 0xa1, 0xb7, 0xe8, 0x2f, 0x90, 0xf6, 0x12, 0xba, 0xba, 0x87, 0x37, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x28, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0xe8, 0xa7, 0xc6, 0x12, 0x63, 0x02, 0xc6, 0x12,
    0x63, 0x01, 0x17, 0x6f, 0xc7, 0x80, 0x00, 0x00, 0x00, 0x00, 0xb0, 0x4d, 0xcb, 0x92, 0x50, 0x14,
    0x00, 0x00, 0x02, 0xd8, 0x00, 0x00,
];

/// The four kernel frames with what parse_tcp_frame must report.
fn kernel_vectors() -> [(&'static [u8], TcpSegmentInfo); 4] {
    let out = |seq, src_port, dst_port| TcpSegmentInfo {
        src_mac: KERNEL_MAC_HOST,
        dst_mac: KERNEL_MAC_NS,
        vlan: None,
        src: IpAddr::V4(KERNEL_IP_HOST),
        dst: IpAddr::V4(KERNEL_IP_NS),
        ttl: 64,
        src_port,
        dst_port,
        seq,
        ack: 0,
        flags: tcp_flags::SYN,
        window: 64240,
    };
    let back = |seq, ack, flags, window, src_port, dst_port| TcpSegmentInfo {
        src_mac: KERNEL_MAC_NS,
        dst_mac: KERNEL_MAC_HOST,
        vlan: None,
        src: IpAddr::V4(KERNEL_IP_NS),
        dst: IpAddr::V4(KERNEL_IP_HOST),
        ttl: 64,
        src_port,
        dst_port,
        seq,
        ack,
        flags,
        window,
    };
    [
        (&KERNEL_SYN, out(2386553720, 60006, 5998)),
        (
            &KERNEL_SYN_ACK,
            back(
                2055505906,
                2386553721,
                tcp_flags::SYN | tcp_flags::ACK,
                65160,
                5998,
                60006,
            ),
        ),
        (&KERNEL_SYN_CLOSED, out(2957888401, 51072, 5999)),
        (
            &KERNEL_RST_ACK,
            back(
                0,
                2957888402,
                tcp_flags::RST | tcp_flags::ACK,
                0,
                5999,
                51072,
            ),
        ),
    ]
}

#[test]
fn kernel_frames_parse_with_the_right_fields() {
    for (frame, want) in kernel_vectors() {
        assert_eq!(parse_tcp_frame(frame), Ok(want));
    }
}

#[test]
fn our_checksum_reproduces_the_kernels_bytes() {
    for (frame, _) in kernel_vectors() {
        let mut copy = frame.to_vec();
        // IPv4 header checksum.
        copy[24..26].fill(0);
        let ip = checksum::finish(checksum::sum(&copy[14..34]));
        assert_eq!(ip.to_be_bytes(), frame[24..26]);
        // TCP checksum over the pseudo-header and the segment.
        copy[50..52].fill(0);
        let segment = &copy[34..];
        let pseudo = checksum::pseudo_header_v4(
            Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]),
            Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]),
            6,
            segment.len() as u16,
        );
        let tcp = checksum::finish(checksum::add(pseudo, checksum::sum(segment)));
        assert_eq!(tcp.to_be_bytes(), frame[50..52]);
    }
}

#[test]
fn kernel_rst_with_ethernet_padding_parses() {
    // A NIC pads the 54-byte frame to the 60-byte Ethernet minimum.
    let mut frame = KERNEL_RST_ACK.to_vec();
    frame.resize(60, 0);
    assert_eq!(parse_tcp_frame(&frame), Ok(kernel_vectors()[3].1));
    // Nonzero padding too.
    frame[54..].fill(0x5a);
    assert_eq!(parse_tcp_frame(&frame), Ok(kernel_vectors()[3].1));
}

#[test]
fn our_rst_answers_the_kernels_syn_ack() {
    // What the scanner does on a SYN-ACK: RST with seq = the SYN-ACK's ack.
    let synack = parse_tcp_frame(&KERNEL_SYN_ACK).unwrap();
    let mut buf = [0u8; RST_V4_LEN];
    write_rst(
        &mut buf,
        synack.dst_mac,
        synack.src_mac,
        synack.dst,
        synack.src,
        synack.dst_port,
        synack.src_port,
        synack.ack,
        64,
    )
    .unwrap();
    let info = parse_tcp_frame(&buf).unwrap();
    assert_eq!((info.src, info.dst), (synack.dst, synack.src));
    assert_eq!((info.src_port, info.dst_port), (60006, 5998));
    assert_eq!(info.seq, 2386553721);
    assert_eq!(info.flags, tcp_flags::RST);
    assert_etherparse_agrees(&buf);
}

#[test]
fn any_single_byte_change_below_ethernet_is_rejected_in_kernel_frames() {
    // Every byte from the IPv4 header on is covered by a checksum or a
    // structural check (the ones'-complement sum detects every single-byte
    // change).
    for (frame, _) in kernel_vectors() {
        for at in 14..frame.len() {
            for xor in [0x01u8, 0x80, 0xff] {
                let mut bad = frame.to_vec();
                bad[at] ^= xor;
                assert!(
                    parse_tcp_frame(&bad).is_err(),
                    "byte {at} ^ {xor:#x} accepted"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Error paths
// ---------------------------------------------------------------------------

#[test]
fn short_buffers_are_rejected_and_left_untouched() {
    let t4 = template_v4();
    let t6 = template_v6();
    for have in 0..SYN_V6_LEN {
        let mut buf = vec![0x77u8; have];
        if have < SYN_V4_LEN {
            assert_eq!(
                t4.write(&mut buf, IpAddr::V4(DST_V4), 1, 2, 3),
                Err(WireError::BufferTooSmall {
                    need: SYN_V4_LEN,
                    have
                })
            );
            assert_eq!(
                t4.write_v4(&mut buf, 1, 1, 2, 3),
                Err(WireError::BufferTooSmall {
                    need: SYN_V4_LEN,
                    have
                })
            );
        }
        assert_eq!(
            t6.write_v6(&mut buf, 1, 1, 2, 3),
            Err(WireError::BufferTooSmall {
                need: SYN_V6_LEN,
                have
            })
        );
        if have < RST_V4_LEN {
            let v4 = (IpAddr::V4(SRC_V4), IpAddr::V4(DST_V4));
            assert_eq!(
                write_rst(&mut buf, SRC_MAC, DST_MAC, v4.0, v4.1, 1, 2, 3, 64),
                Err(WireError::BufferTooSmall {
                    need: RST_V4_LEN,
                    have
                })
            );
        }
        if have < RST_V6_LEN {
            let v6 = (IpAddr::V6(SRC_V6), IpAddr::V6(DST_V6));
            assert_eq!(
                write_rst(&mut buf, SRC_MAC, DST_MAC, v6.0, v6.1, 1, 2, 3, 64),
                Err(WireError::BufferTooSmall {
                    need: RST_V6_LEN,
                    have
                })
            );
        }
        assert!(buf.iter().all(|&b| b == 0x77));
    }
}

#[test]
fn family_mismatch_is_rejected() {
    let mut buf = [0u8; 128];
    let t4 = template_v4();
    let t6 = template_v6();
    assert_eq!(
        t4.write(&mut buf, IpAddr::V6(DST_V6), 1, 2, 3),
        Err(WireError::FamilyMismatch)
    );
    assert_eq!(
        t4.write_v6(&mut buf, 1, 1, 2, 3),
        Err(WireError::FamilyMismatch)
    );
    assert_eq!(
        t6.write(&mut buf, IpAddr::V4(DST_V4), 1, 2, 3),
        Err(WireError::FamilyMismatch)
    );
    assert_eq!(
        t6.write_v4(&mut buf, 1, 1, 2, 3),
        Err(WireError::FamilyMismatch)
    );
    for (src, dst) in [
        (IpAddr::V4(SRC_V4), IpAddr::V6(DST_V6)),
        (IpAddr::V6(SRC_V6), IpAddr::V4(DST_V4)),
    ] {
        assert_eq!(
            write_rst(&mut buf, SRC_MAC, DST_MAC, src, dst, 1, 2, 3, 64),
            Err(WireError::FamilyMismatch)
        );
    }
    assert!(buf.iter().all(|&b| b == 0));
}

#[test]
fn parse_errors_are_specific() {
    let good = syn_v4(DST_V4, 1000, 80, 42);

    assert_eq!(
        parse_tcp_frame(&good[..13]),
        Err(WireError::Truncated {
            layer: "ethernet",
            need: 14,
            have: 13
        })
    );

    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    assert_eq!(
        parse_tcp_frame(&arp),
        Err(WireError::UnsupportedEtherType(ETHERTYPE_ARP))
    );

    // A VLAN tag cut short, and two stacked tags.
    let mut vlan = good[..12].to_vec();
    vlan.extend_from_slice(&[0x81, 0x00, 0x00]);
    assert_eq!(
        parse_tcp_frame(&vlan),
        Err(WireError::Truncated {
            layer: "vlan",
            need: 18,
            have: 15
        })
    );
    let mut qinq = good[..12].to_vec();
    qinq.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x81, 0x00, 0x00, 0x06]);
    qinq.extend_from_slice(&good[12..]);
    assert_eq!(
        parse_tcp_frame(&qinq),
        Err(WireError::UnsupportedEtherType(ETHERTYPE_VLAN))
    );

    assert_eq!(
        parse_tcp_frame(&good[..14 + 19]),
        Err(WireError::Truncated {
            layer: "ipv4",
            need: 20,
            have: 19
        })
    );

    let mut v6_in_v4 = good.clone();
    v6_in_v4[14] = 0x65;
    assert_eq!(parse_tcp_frame(&v6_in_v4), Err(WireError::BadIpVersion(6)));

    let mut ihl = good.clone();
    ihl[14] = 0x44;
    assert_eq!(
        parse_tcp_frame(&ihl),
        Err(WireError::BadHeaderLength {
            layer: "ipv4",
            value: 4
        })
    );
    ihl[14] = 0x4f;
    assert_eq!(
        parse_tcp_frame(&ihl),
        Err(WireError::Truncated {
            layer: "ipv4",
            need: 60,
            have: 44
        })
    );

    let mut total = good.clone();
    total[16..18].copy_from_slice(&19u16.to_be_bytes());
    assert_eq!(
        parse_tcp_frame(&total),
        Err(WireError::BadLength {
            layer: "ipv4",
            value: 19
        })
    );
    total[16..18].copy_from_slice(&45u16.to_be_bytes());
    assert_eq!(
        parse_tcp_frame(&total),
        Err(WireError::Truncated {
            layer: "ipv4",
            need: 45,
            have: 44
        })
    );

    let mut ip_sum = good.clone();
    ip_sum[22] ^= 1; // TTL
    assert_eq!(
        parse_tcp_frame(&ip_sum),
        Err(WireError::BadChecksum { layer: "ipv4" })
    );

    for flags_and_offset in [0x2000u16, 0x0001, 0x3fff, 0x6000] {
        let mut frag = good.clone();
        frag[20..22].copy_from_slice(&flags_and_offset.to_be_bytes());
        fix_ipv4_checksum(&mut frag, 14);
        assert_eq!(parse_tcp_frame(&frag), Err(WireError::Fragment));
    }
    // DF alone is not a fragment (the kernel's frames have it).
    let mut df = good.clone();
    df[20] = 0x40;
    fix_ipv4_checksum(&mut df, 14);
    assert!(parse_tcp_frame(&df).is_ok());

    let mut udp = good.clone();
    udp[23] = 17;
    fix_ipv4_checksum(&mut udp, 14);
    assert_eq!(parse_tcp_frame(&udp), Err(WireError::NotTcp(17)));

    // TCP data offset below 5, and beyond the IP payload.
    let mut off = good.clone();
    off[46] = 0x40;
    assert_eq!(
        parse_tcp_frame(&off),
        Err(WireError::BadHeaderLength {
            layer: "tcp",
            value: 4
        })
    );
    off[46] = 0x70;
    assert_eq!(
        parse_tcp_frame(&off),
        Err(WireError::Truncated {
            layer: "tcp",
            need: 28,
            have: 24
        })
    );
    // A TCP header cut by the IPv4 total length (not by the frame).
    let mut short = good.clone();
    short[16..18].copy_from_slice(&(20u16 + 19).to_be_bytes());
    fix_ipv4_checksum(&mut short, 14);
    assert_eq!(
        parse_tcp_frame(&short),
        Err(WireError::Truncated {
            layer: "tcp",
            need: 20,
            have: 19
        })
    );

    let mut tcp_sum = good.clone();
    tcp_sum[40] ^= 0x80; // seq
    assert_eq!(
        parse_tcp_frame(&tcp_sum),
        Err(WireError::BadChecksum { layer: "tcp" })
    );
}

#[test]
fn parse_errors_ipv6() {
    let good = syn_v6(DST_V6, 1000, 80, 42);
    assert_eq!(
        parse_tcp_frame(&good[..14 + 39]),
        Err(WireError::Truncated {
            layer: "ipv6",
            need: 40,
            have: 39
        })
    );
    assert_eq!(
        parse_tcp_frame(&good[..SYN_V6_LEN - 1]),
        Err(WireError::Truncated {
            layer: "ipv6",
            need: 64,
            have: 63
        })
    );
    let mut v4_in_v6 = good.clone();
    v4_in_v6[14] = 0x40;
    assert_eq!(parse_tcp_frame(&v4_in_v6), Err(WireError::BadIpVersion(4)));

    // Extension headers are not followed: hop-by-hop (0), fragment (44).
    for next_header in [0u8, 44, 17, 58] {
        let mut ext = good.clone();
        ext[20] = next_header;
        assert_eq!(parse_tcp_frame(&ext), Err(WireError::NotTcp(next_header)));
    }

    let mut tcp_sum = good.clone();
    tcp_sum[38] ^= 0x01; // destination address, covered by the pseudo-header
    assert_eq!(
        parse_tcp_frame(&tcp_sum),
        Err(WireError::BadChecksum { layer: "tcp" })
    );
}

#[test]
fn parse_accepts_ipv4_options_skipping_them() {
    // Insert 4 NOP option bytes into our SYN by hand.
    let syn = syn_v4(DST_V4, 1000, 80, 42);
    let mut frame = syn[..34].to_vec();
    frame.extend_from_slice(&[1, 1, 1, 1]);
    frame.extend_from_slice(&syn[34..]);
    frame[14] = 0x46;
    frame[16..18].copy_from_slice(&48u16.to_be_bytes());
    fix_ipv4_checksum(&mut frame, 14);
    assert_eq!(parse_tcp_frame(&frame), parse_tcp_frame(&syn));
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    assert_eq!(ip.header_len(), 24);
    assert_eq!(ip.options(), &[1, 1, 1, 1]);
}

#[test]
fn error_messages_are_descriptive() {
    let e = WireError::Truncated {
        layer: "tcp",
        need: 20,
        have: 3,
    };
    assert_eq!(e.to_string(), "tcp: truncated, need 20 bytes but have 3");
    assert_eq!(
        WireError::UnsupportedEtherType(0x0806).to_string(),
        "unsupported EtherType 0x0806"
    );
    assert_eq!(
        WireError::BadChecksum { layer: "ipv4" }.to_string(),
        "ipv4: bad checksum"
    );
}

// ---------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------

/// Valid frames of every kind this module reads.
fn valid_frames() -> Vec<Vec<u8>> {
    let mut frames = vec![
        syn_v4(DST_V4, 1, 2, 3),
        syn_v6(DST_V6, 1, 2, 3),
        rst(IpAddr::V4(SRC_V4), IpAddr::V4(DST_V4), 1, 2, 3),
        rst(IpAddr::V6(SRC_V6), IpAddr::V6(DST_V6), 1, 2, 3),
    ];
    frames.extend(kernel_vectors().iter().map(|(f, _)| f.to_vec()));
    let mut tagged = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC.0, DST_MAC.0)
        .single_vlan(etherparse::VlanId::try_new(7).unwrap())
        .ipv6(SRC_V6.octets(), DST_V6.octets(), 1)
        .tcp(1, 2, 3, 4)
        .write(&mut tagged, b"data")
        .unwrap();
    frames.push(tagged);
    frames
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_tcp_frame(&bytes);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_ip_after_ethernet(
        ethertype in prop::sample::select(vec![ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN]),
        rest in prop::collection::vec(any::<u8>(), 0..120),
    ) {
        // Random bytes rarely get past the EtherType; start them after it.
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(&rest);
        let _ = parse_tcp_frame(&frame);
    }

    #[test]
    fn parse_never_panics_on_mutated_valid_frames(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let frames = valid_frames();
        let mut frame = which.get(&frames).clone();
        for (at, value) in &edits {
            let i = at.index(frame.len());
            frame[i] = *value;
        }
        let _ = parse_tcp_frame(&frame);
        frame.extend_from_slice(&extra);
        let _ = parse_tcp_frame(&frame);
        frame.truncate(cut.index(frame.len() + 1));
        let _ = parse_tcp_frame(&frame);
    }

    #[test]
    fn single_byte_changes_to_checked_fields_are_detected(
        dst in any::<u32>(),
        dst6 in any::<u128>(),
        ports in any::<(u16, u16)>(),
        seq in any::<u32>(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        // IPv4: everything from the IP header on is checked.
        let mut v4 = syn_v4(Ipv4Addr::from(dst), ports.0, ports.1, seq);
        let i = 14 + at.index(SYN_V4_LEN - 14);
        v4[i] ^= xor;
        prop_assert!(parse_tcp_frame(&v4).is_err(), "v4 byte {} accepted", i);

        // IPv6: the traffic class, flow label and hop limit are in no
        // checksum; the payload length, next header, addresses and the whole
        // TCP segment are checked.
        let mut v6 = syn_v6(Ipv6Addr::from(dst6), ports.0, ports.1, seq);
        let checked: Vec<usize> = (18..21).chain(22..SYN_V6_LEN).collect();
        let i = *at.get(&checked);
        v6[i] ^= xor;
        prop_assert!(parse_tcp_frame(&v6).is_err(), "v6 byte {} accepted", i);
    }

    #[test]
    fn syn_template_frames_parse_and_etherparse_agrees(
        dst4 in any::<u32>(),
        dst6 in any::<u128>(),
        src_port in any::<u16>(),
        dst_port in any::<u16>(),
        seq in any::<u32>(),
        ttl in any::<u8>(),
        window in any::<u16>(),
        mss in any::<u16>(),
        src4 in any::<u32>(),
        src6 in any::<u128>(),
    ) {
        let t4 = SynTemplate::v4(SRC_MAC, DST_MAC, Ipv4Addr::from(src4), ttl, window, mss);
        let mut buf = [0u8; SYN_V4_LEN];
        prop_assert_eq!(t4.write_v4(&mut buf, dst4, src_port, dst_port, seq), Ok(SYN_V4_LEN));
        let info = parse_tcp_frame(&buf).unwrap();
        prop_assert_eq!(info, TcpSegmentInfo {
            src_mac: SRC_MAC,
            dst_mac: DST_MAC,
            vlan: None,
            src: IpAddr::V4(Ipv4Addr::from(src4)),
            dst: IpAddr::V4(Ipv4Addr::from(dst4)),
            ttl,
            src_port,
            dst_port,
            seq,
            ack: 0,
            flags: tcp_flags::SYN,
            window,
        });
        let packet = assert_etherparse_agrees(&buf);
        prop_assert_eq!(etherparse_tcp(&packet).options(), &[2, 4, (mss >> 8) as u8, mss as u8]);

        let t6 = SynTemplate::v6(SRC_MAC, DST_MAC, Ipv6Addr::from(src6), ttl, window, mss);
        let mut buf = [0u8; SYN_V6_LEN];
        let dst = IpAddr::V6(Ipv6Addr::from(dst6));
        prop_assert_eq!(t6.write(&mut buf, dst, src_port, dst_port, seq), Ok(SYN_V6_LEN));
        let info = parse_tcp_frame(&buf).unwrap();
        prop_assert_eq!(info.src, IpAddr::V6(Ipv6Addr::from(src6)));
        prop_assert_eq!(info.dst, dst);
        prop_assert_eq!((info.ttl, info.src_port, info.dst_port, info.seq), (ttl, src_port, dst_port, seq));
        prop_assert_eq!((info.flags, info.window, info.ack), (tcp_flags::SYN, window, 0));
        assert_etherparse_agrees(&buf);
    }

    #[test]
    fn rst_frames_parse_and_etherparse_agrees(
        v6 in any::<bool>(),
        src in any::<u128>(),
        dst in any::<u128>(),
        src_port in any::<u16>(),
        dst_port in any::<u16>(),
        seq in any::<u32>(),
        ttl in any::<u8>(),
        src_mac in any::<[u8; 6]>(),
        dst_mac in any::<[u8; 6]>(),
    ) {
        let (src, dst) = if v6 {
            (IpAddr::V6(Ipv6Addr::from(src)), IpAddr::V6(Ipv6Addr::from(dst)))
        } else {
            (IpAddr::V4(Ipv4Addr::from(src as u32)), IpAddr::V4(Ipv4Addr::from(dst as u32)))
        };
        let mut buf = [0u8; RST_V6_LEN];
        let n = write_rst(&mut buf, MacAddr(src_mac), MacAddr(dst_mac), src, dst, src_port, dst_port, seq, ttl).unwrap();
        prop_assert_eq!(n, if v6 { RST_V6_LEN } else { RST_V4_LEN });
        let info = parse_tcp_frame(&buf[..n]).unwrap();
        prop_assert_eq!(info, TcpSegmentInfo {
            src_mac: MacAddr(src_mac),
            dst_mac: MacAddr(dst_mac),
            vlan: None,
            src,
            dst,
            ttl,
            src_port,
            dst_port,
            seq,
            ack: 0,
            flags: tcp_flags::RST,
            window: 0,
        });
        assert_etherparse_agrees(&buf[..n]);
    }

    #[test]
    fn checksum_partial_sums_combine(
        data in prop::collection::vec(any::<u8>(), 0..300),
        cut in any::<prop::sample::Index>(),
    ) {
        let cut = cut.index(data.len() / 2 + 1) * 2; // an even offset
        let (a, b) = data.split_at(cut);
        prop_assert_eq!(
            checksum::fold(checksum::add(checksum::sum(a), checksum::sum(b))),
            checksum::fold(checksum::sum(&data))
        );
        // A correct checksum appended (at an even offset) verifies.
        let mut padded = data.clone();
        if padded.len() % 2 == 1 {
            padded.push(0);
        }
        let ck = checksum::finish(checksum::sum(&padded));
        padded.extend_from_slice(&ck.to_be_bytes());
        prop_assert!(checksum::is_valid(checksum::sum(&padded)));
    }

    #[test]
    fn mac_display_parse_round_trip(octets in any::<[u8; 6]>()) {
        let mac = MacAddr(octets);
        prop_assert_eq!(mac.to_string().parse::<MacAddr>(), Ok(mac));
        prop_assert_eq!(mac.to_string().to_uppercase().parse::<MacAddr>(), Ok(mac));
    }
}

// ---------------------------------------------------------------------------
// ICMP echo
// ---------------------------------------------------------------------------

/// Our echo request, as bytes.
fn echo(src: IpAddr, dst: IpAddr, id: u16, seq: u16) -> Vec<u8> {
    let mut buf = vec![0u8; ECHO_V6_LEN];
    let n = write_echo_request(&mut buf, SRC_MAC, DST_MAC, src, dst, id, seq, 64).unwrap();
    buf.truncate(n);
    buf
}

/// An echo reply built by etherparse.
fn etherparse_echo_reply(src: IpAddr, dst: IpAddr, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(DST_MAC.0, SRC_MAC.0);
    let mut out = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth
            .ipv4(s.octets(), d.octets(), 60)
            .icmpv4_echo_reply(id, seq)
            .write(&mut out, data)
            .unwrap(),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth
            .ipv6(s.octets(), d.octets(), 60)
            .icmpv6_echo_reply(id, seq)
            .write(&mut out, data)
            .unwrap(),
        _ => unreachable!("one family"),
    }
    out
}

#[test]
fn echo_requests_round_trip_and_etherparse_agrees() {
    for (src, dst, len, kind) in [
        (
            IpAddr::V4(SRC_V4),
            IpAddr::V4(DST_V4),
            ECHO_V4_LEN,
            ICMP_ECHO_REQUEST,
        ),
        (
            IpAddr::V6(SRC_V6),
            IpAddr::V6(DST_V6),
            ECHO_V6_LEN,
            ICMPV6_ECHO_REQUEST,
        ),
    ] {
        let frame = echo(src, dst, 0xbeef, 0x1234);
        assert_eq!(frame.len(), len);
        let info = parse_echo_frame(&frame).unwrap();
        assert_eq!(
            info,
            EchoInfo {
                src_mac: SRC_MAC,
                dst_mac: DST_MAC,
                vlan: None,
                src,
                dst,
                ttl: 64,
                icmp_type: kind,
                code: 0,
                id: 0xbeef,
                seq: 0x1234,
            }
        );
        // etherparse reads the same message and its checksum agrees with ours.
        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        match (&packet.net, &packet.transport) {
            (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Icmpv4(icmp))) => {
                let h = ip.header();
                assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
                assert_eq!(
                    icmp.icmp_type(),
                    etherparse::Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader {
                        id: 0xbeef,
                        seq: 0x1234
                    })
                );
                let header = icmp.header();
                assert_eq!(
                    header.icmp_type.calc_checksum(icmp.payload()),
                    header.checksum
                );
            }
            (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Icmpv6(icmp))) => {
                let h = ip.header();
                let header = icmp.header();
                assert_eq!(
                    header
                        .icmp_type
                        .calc_checksum(h.source(), h.destination(), icmp.payload())
                        .unwrap(),
                    header.checksum
                );
                assert_eq!(
                    icmp.icmp_type(),
                    etherparse::Icmpv6Type::EchoRequest(etherparse::IcmpEchoHeader {
                        id: 0xbeef,
                        seq: 0x1234
                    })
                );
            }
            other => panic!("etherparse sees {other:?}"),
        }
        // Not a TCP frame.
        assert!(parse_tcp_frame(&frame).is_err());
    }
}

#[test]
fn echo_replies_built_by_etherparse_parse() {
    for (src, dst, kind) in [
        (IpAddr::V4(DST_V4), IpAddr::V4(SRC_V4), ICMP_ECHO_REPLY),
        (IpAddr::V6(DST_V6), IpAddr::V6(SRC_V6), ICMPV6_ECHO_REPLY),
    ] {
        for data in [&b""[..], b"abc", b"0123456789abcdef0123"] {
            let frame = etherparse_echo_reply(src, dst, 7, 9, data);
            let info = parse_echo_frame(&frame).unwrap();
            assert_eq!((info.src, info.dst), (src, dst));
            assert_eq!(
                (info.icmp_type, info.code, info.id, info.seq),
                (kind, 0, 7, 9)
            );
            // Every byte of the IP header fields and the message is covered.
            for i in 14..frame.len() {
                let mut bad = frame.clone();
                bad[i] ^= 0x10;
                // The IPv6 traffic class / flow label and hop limit are not
                // covered by any checksum; neither is the IPv4 TTL once the
                // header checksum is fixed (it is not fixed here).
                let uncovered = matches!(src, IpAddr::V6(_)) && (i < 18 || i == 21);
                if !uncovered {
                    assert!(parse_echo_frame(&bad).is_err(), "byte {i} of {src}");
                }
            }
        }
    }
}

#[test]
fn echo_parse_errors_are_specific() {
    let v4 = echo(IpAddr::V4(SRC_V4), IpAddr::V4(DST_V4), 1, 2);
    // Another ICMP type (destination unreachable), checksum fixed.
    let mut unreach = v4.clone();
    unreach[34] = 3;
    unreach[36..38].fill(0);
    let sum = checksum::finish(checksum::sum(&unreach[34..]));
    unreach[36..38].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(parse_echo_frame(&unreach), Err(WireError::NotEcho(3)));
    // A TCP frame.
    let syn = syn_v4(DST_V4, 1, 2, 3);
    assert_eq!(parse_echo_frame(&syn), Err(WireError::NotIcmp(6)));
    // A fragment (more-fragments set), header checksum fixed.
    let mut frag = v4.clone();
    frag[20] |= 0x20;
    fix_ipv4_checksum(&mut frag, 14);
    assert_eq!(parse_echo_frame(&frag), Err(WireError::Fragment));
    // Bad ICMP checksum.
    let mut bad = v4.clone();
    bad[41] ^= 1;
    assert_eq!(
        parse_echo_frame(&bad),
        Err(WireError::BadChecksum { layer: "icmp" })
    );
    let mut bad6 = echo(IpAddr::V6(SRC_V6), IpAddr::V6(DST_V6), 1, 2);
    bad6[61] ^= 1;
    assert_eq!(
        parse_echo_frame(&bad6),
        Err(WireError::BadChecksum { layer: "icmpv6" })
    );
    // A message shorter than the echo header (IP length says 4 bytes).
    let mut short = v4.clone();
    short[16..18].copy_from_slice(&24u16.to_be_bytes());
    fix_ipv4_checksum(&mut short, 14);
    assert!(matches!(
        parse_echo_frame(&short),
        Err(WireError::Truncated { layer: "icmp", .. })
    ));
    // Short buffers and mixed families.
    let mut buf = [0u8; ECHO_V4_LEN - 1];
    let src = IpAddr::V4(SRC_V4);
    assert!(matches!(
        write_echo_request(&mut buf, SRC_MAC, DST_MAC, src, src, 1, 2, 64),
        Err(WireError::BufferTooSmall { .. })
    ));
    assert_eq!(buf, [0u8; ECHO_V4_LEN - 1]);
    let mut buf = [0u8; ECHO_V6_LEN];
    assert_eq!(
        write_echo_request(
            &mut buf,
            SRC_MAC,
            DST_MAC,
            src,
            IpAddr::V6(DST_V6),
            1,
            2,
            64
        ),
        Err(WireError::FamilyMismatch)
    );
}

proptest! {
    #[test]
    fn echo_requests_round_trip(
        v6 in any::<bool>(),
        src in any::<u128>(),
        dst in any::<u128>(),
        id in any::<u16>(),
        seq in any::<u16>(),
        ttl in any::<u8>(),
    ) {
        let (src, dst) = if v6 {
            (IpAddr::V6(Ipv6Addr::from(src)), IpAddr::V6(Ipv6Addr::from(dst)))
        } else {
            (IpAddr::V4(Ipv4Addr::from(src as u32)), IpAddr::V4(Ipv4Addr::from(dst as u32)))
        };
        let mut buf = [0u8; ECHO_V6_LEN];
        let n = write_echo_request(&mut buf, SRC_MAC, DST_MAC, src, dst, id, seq, ttl).unwrap();
        let info = parse_echo_frame(&buf[..n]).unwrap();
        prop_assert_eq!((info.src, info.dst, info.ttl, info.id, info.seq, info.code), (src, dst, ttl, id, seq, 0));
    }

    #[test]
    fn echo_parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
        let _ = parse_echo_frame(&bytes);
    }
}
