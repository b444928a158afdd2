//! The reply classifier: a reply and the scan's cookie key → open, closed,
//! echo or invalid, and which probe it answers.
//!
//! Every SYN of a scan carries a keyed cookie in its sequence number
//! ([`Cookies::seq`]), so a genuine reply acknowledges `cookie + 1`: a SYN-ACK
//! says the port is open, an RST|ACK that it is closed. Anything else — a
//! forged or stale reply, one from an earlier scan (another key), one to an
//! address family we did not send from — is invalid and must never be
//! reported.
//!
//! Every ICMP / ICMPv6 echo request carries an identifier and a sequence
//! number derived from the keyed cookie of its target ([`Cookies::echo`]), so
//! a genuine echo reply comes from that target and echoes both back: the
//! host is reachable. An echo reply with any other identifier or sequence
//! number, from a host we did not ping (its cookie differs), under another
//! key, or of the wrong ICMP type or code, is invalid.
//!
//! The data path hands replies over as records of header fields ([`Reply`],
//! [`EchoReply`]); [`ReplyClassifier::classify_frame`] takes a whole Ethernet
//! frame instead, checksums verified.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::probe::{CookieKey, Cookies, Probe, Target, Verdict};
use crate::wire::{
    EchoInfo, ICMP_ECHO_REPLY, ICMPV6_ECHO_REPLY, TcpSegmentInfo, parse_echo_frame, parse_tcp_frame,
};

/// The header fields of a reply that decide what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The target's address (the reply's source).
    pub from: IpAddr,
    /// The target's port (the reply's source port).
    pub from_port: u16,
    /// Our address (the reply's destination).
    pub to: IpAddr,
    /// Our source port (the reply's destination port).
    pub to_port: u16,
    /// The TCP flag byte.
    pub tcp_flags: u8,
    /// The acknowledgement number.
    pub ack: u32,
}

impl From<&TcpSegmentInfo> for Reply {
    fn from(s: &TcpSegmentInfo) -> Reply {
        Reply {
            from: s.src,
            from_port: s.src_port,
            to: s.dst,
            to_port: s.dst_port,
            tcp_flags: s.flags,
            ack: s.ack,
        }
    }
}

/// The header fields of an ICMP / ICMPv6 echo reply that decide what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoReply {
    /// The target's address (the reply's source).
    pub from: IpAddr,
    /// Our address (the reply's destination).
    pub to: IpAddr,
    /// The ICMP (IPv4) or ICMPv6 (IPv6) type.
    pub icmp_type: u8,
    /// The ICMP code.
    pub code: u8,
    /// The identifier.
    pub id: u16,
    /// The sequence number.
    pub seq: u16,
}

impl From<&EchoInfo> for EchoReply {
    fn from(e: &EchoInfo) -> EchoReply {
        EchoReply {
            from: e.src,
            to: e.dst,
            icmp_type: e.icmp_type,
            code: e.code,
            id: e.id,
            seq: e.seq,
        }
    }
}

/// What a reply says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyClass {
    /// A SYN-ACK to our probe: the port is open.
    Open(Probe),
    /// An RST to our probe: the port is closed (and the host is up).
    Closed(Probe),
    /// An echo reply to our echo request: the host is reachable.
    Echo(Target),
    /// Not an answer to a probe of this scan.
    Invalid,
}

/// Judges replies for one scan: its key and its source addresses.
#[derive(Debug, Clone)]
pub struct ReplyClassifier {
    v4: Option<(Ipv4Addr, Cookies)>,
    v6: Option<(Ipv6Addr, Cookies)>,
}

impl ReplyClassifier {
    /// A classifier for a scan that sends from `source_v4` and/or
    /// `source_v6` with cookies keyed by `key`.
    pub fn new(
        key: &CookieKey,
        source_v4: Option<Ipv4Addr>,
        source_v6: Option<Ipv6Addr>,
    ) -> ReplyClassifier {
        ReplyClassifier {
            v4: source_v4.map(|a| (a, Cookies::new(key, Target::V4(a.into())))),
            v6: source_v6.map(|a| (a, Cookies::new(key, Target::V6(a.into())))),
        }
    }

    /// The cookies of the family of `target` (what the senders sign
    /// probes with); `None` if the scan has no source of that family.
    pub fn cookies(&self, target: Target) -> Option<&Cookies> {
        match target {
            Target::V4(_) => self.v4.as_ref().map(|(_, c)| c),
            Target::V6(_) => self.v6.as_ref().map(|(_, c)| c),
        }
    }

    /// What `reply` says. It must be addressed to our source address of its
    /// family and acknowledge the cookie of the probe it answers.
    pub fn classify(&self, reply: &Reply) -> ReplyClass {
        let ours = match reply.to {
            IpAddr::V4(a) => self.v4.as_ref().is_some_and(|(s, _)| *s == a),
            IpAddr::V6(a) => self.v6.as_ref().is_some_and(|(s, _)| *s == a),
        };
        let target = Target::from(reply.from);
        let Some(cookies) = self.cookies(target).filter(|_| ours) else {
            return ReplyClass::Invalid;
        };
        let probe = Probe {
            target,
            port: reply.from_port,
        };
        match cookies.validate(
            target,
            reply.from_port,
            reply.to_port,
            reply.tcp_flags,
            reply.ack,
        ) {
            Verdict::Open => ReplyClass::Open(probe),
            Verdict::Closed => ReplyClass::Closed(probe),
            Verdict::Invalid => ReplyClass::Invalid,
        }
    }

    /// What an echo reply says. It must be addressed to our source address
    /// of its family, be an echo reply of that family (ICMP type 0 or
    /// ICMPv6 type 129, code 0) and echo the identifier and sequence number
    /// of our request to its source.
    pub fn classify_echo(&self, reply: &EchoReply) -> ReplyClass {
        let (ours, want_type) = match reply.to {
            IpAddr::V4(a) => (
                self.v4.as_ref().is_some_and(|(s, _)| *s == a),
                ICMP_ECHO_REPLY,
            ),
            IpAddr::V6(a) => (
                self.v6.as_ref().is_some_and(|(s, _)| *s == a),
                ICMPV6_ECHO_REPLY,
            ),
        };
        let target = Target::from(reply.from);
        let same_family = reply.from.is_ipv4() == reply.to.is_ipv4();
        let Some(cookies) = self.cookies(target).filter(|_| ours && same_family) else {
            return ReplyClass::Invalid;
        };
        if reply.icmp_type != want_type || reply.code != 0 {
            return ReplyClass::Invalid;
        }
        if cookies.echo(target) == (reply.id, reply.seq) {
            ReplyClass::Echo(target)
        } else {
            ReplyClass::Invalid
        }
    }

    /// What an Ethernet frame says: a frame that is neither a well-formed
    /// TCP segment nor a well-formed echo message, with good checksums, is
    /// invalid.
    pub fn classify_frame(&self, frame: &[u8]) -> ReplyClass {
        if let Ok(segment) = parse_tcp_frame(frame) {
            return self.classify(&Reply::from(&segment));
        }
        match parse_echo_frame(frame) {
            Ok(echo) => self.classify_echo(&EchoReply::from(&echo)),
            Err(_) => ReplyClass::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{MacAddr, SYN_V4_LEN, SynTemplate, tcp_flags};
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    const US4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const THEM4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const US6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
    const THEM6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
    const LPORT: u16 = 61_000;

    fn key(n: u8) -> CookieKey {
        CookieKey::from_bytes([n; 16])
    }

    fn classifier() -> ReplyClassifier {
        ReplyClassifier::new(&key(7), Some(US4), Some(US6))
    }

    /// The sequence number of our SYN to `to:port` (from LPORT).
    fn cookie(c: &ReplyClassifier, to: IpAddr, port: u16) -> u32 {
        let t = Target::from(to);
        c.cookies(t).unwrap().seq(LPORT, t, port)
    }

    /// A reply frame from `from:port` to `to:LPORT`, built by etherparse.
    fn frame(from: IpAddr, to: IpAddr, port: u16, flags: u8, ack: u32) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]);
        let ip = match (from, to) {
            (IpAddr::V4(f), IpAddr::V4(t)) => eth.ipv4(f.octets(), t.octets(), 64),
            (IpAddr::V6(f), IpAddr::V6(t)) => eth.ipv6(f.octets(), t.octets(), 64),
            _ => unreachable!("one family per frame"),
        };
        let mut tcp = ip.tcp(port, LPORT, 0x1234_5678, 65_535);
        if flags & tcp_flags::SYN != 0 {
            tcp = tcp.syn();
        }
        if flags & tcp_flags::RST != 0 {
            tcp = tcp.rst();
        }
        if flags & tcp_flags::ACK != 0 {
            tcp = tcp.ack(ack);
        }
        let mut out = Vec::new();
        tcp.write(&mut out, &[]).unwrap();
        out
    }

    const SYN_ACK: u8 = tcp_flags::SYN | tcp_flags::ACK;
    const RST_ACK: u8 = tcp_flags::RST | tcp_flags::ACK;

    #[test]
    fn answers_to_our_probes_are_open_or_closed() {
        let c = classifier();
        for (them, us) in [(THEM4.into(), US4.into()), (THEM6.into(), US6.into())] {
            let ack = cookie(&c, them, 443).wrapping_add(1);
            let probe = Probe {
                target: Target::from(them),
                port: 443,
            };
            assert_eq!(
                c.classify_frame(&frame(them, us, 443, SYN_ACK, ack)),
                ReplyClass::Open(probe)
            );
            assert_eq!(
                c.classify_frame(&frame(them, us, 443, RST_ACK, ack)),
                ReplyClass::Closed(probe)
            );
        }
    }

    #[test]
    fn everything_else_is_invalid() {
        let c = classifier();
        let (them, us): (IpAddr, IpAddr) = (THEM4.into(), US4.into());
        let ack = cookie(&c, them, 443).wrapping_add(1);
        let cases = [
            (
                "the cookie itself, not cookie + 1",
                frame(them, us, 443, SYN_ACK, ack - 1),
            ),
            ("another port's cookie", frame(them, us, 444, SYN_ACK, ack)),
            ("a SYN without ACK", frame(them, us, 443, tcp_flags::SYN, 0)),
            (
                "an RST without ACK",
                frame(them, us, 443, tcp_flags::RST, 0),
            ),
            (
                "SYN and RST together",
                frame(them, us, 443, SYN_ACK | tcp_flags::RST, ack),
            ),
            ("a bare ACK", frame(them, us, 443, tcp_flags::ACK, ack)),
            (
                "addressed to another host",
                frame(them, Ipv4Addr::new(198, 18, 0, 9).into(), 443, SYN_ACK, ack),
            ),
        ];
        for (what, f) in cases {
            assert_eq!(c.classify_frame(&f), ReplyClass::Invalid, "{what}");
        }
        // Another scan's key.
        let other = ReplyClassifier::new(&key(8), Some(US4), Some(US6));
        assert_eq!(
            other.classify_frame(&frame(them, us, 443, SYN_ACK, ack)),
            ReplyClass::Invalid
        );
        // A family the scan does not send from.
        let v4_only = ReplyClassifier::new(&key(7), Some(US4), None);
        let ack6 = cookie(&c, THEM6.into(), 443).wrapping_add(1);
        assert_eq!(
            v4_only.classify_frame(&frame(THEM6.into(), US6.into(), 443, SYN_ACK, ack6)),
            ReplyClass::Invalid
        );
        // A corrupted frame (bad TCP checksum) and a truncated one.
        let mut f = frame(them, us, 443, SYN_ACK, ack);
        let last = f.len() - 1;
        f[last] ^= 0xff;
        assert_eq!(c.classify_frame(&f), ReplyClass::Invalid);
        assert_eq!(c.classify_frame(&f[..20]), ReplyClass::Invalid);
    }

    #[test]
    fn the_senders_cookie_is_the_one_acknowledged() {
        // The SYN a sender writes carries the classifier's cookie.
        let c = classifier();
        let template = SynTemplate::v4(MacAddr::ZERO, MacAddr::ZERO, US4, 64, 65_535, 1460);
        let target = Target::from(IpAddr::from(THEM4));
        let seq = c.cookies(target).unwrap().seq(LPORT, target, 22);
        let mut syn = [0u8; SYN_V4_LEN];
        template
            .write_v4(&mut syn, u32::from(THEM4), LPORT, 22, seq)
            .unwrap();
        let sent = parse_tcp_frame(&syn).unwrap();
        let reply = Reply {
            from: sent.dst,
            from_port: sent.dst_port,
            to: sent.src,
            to_port: sent.src_port,
            tcp_flags: SYN_ACK,
            ack: sent.seq.wrapping_add(1),
        };
        assert_eq!(
            c.classify(&reply),
            ReplyClass::Open(Probe { target, port: 22 })
        );
    }

    /// An echo reply frame from `from` to `to`, built by etherparse.
    fn echo_frame(from: IpAddr, to: IpAddr, id: u16, seq: u16) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]);
        let mut out = Vec::new();
        match (from, to) {
            (IpAddr::V4(f), IpAddr::V4(t)) => eth
                .ipv4(f.octets(), t.octets(), 64)
                .icmpv4_echo_reply(id, seq)
                .write(&mut out, b"")
                .unwrap(),
            (IpAddr::V6(f), IpAddr::V6(t)) => eth
                .ipv6(f.octets(), t.octets(), 64)
                .icmpv6_echo_reply(id, seq)
                .write(&mut out, b"")
                .unwrap(),
            _ => unreachable!("one family per frame"),
        }
        out
    }

    #[test]
    fn echo_replies_to_our_requests_are_echo() {
        let c = classifier();
        for (them, us) in [
            (IpAddr::from(THEM4), IpAddr::from(US4)),
            (IpAddr::from(THEM6), IpAddr::from(US6)),
        ] {
            let target = Target::from(them);
            let (id, seq) = c.cookies(target).unwrap().echo(target);
            assert_eq!(
                c.classify_frame(&echo_frame(them, us, id, seq)),
                ReplyClass::Echo(target)
            );
            // The request we send, answered as the kernel does (same id and
            // seq, source and destination swapped), is an echo.
            let mut req = [0u8; crate::wire::ECHO_V6_LEN];
            let n = crate::wire::write_echo_request(
                &mut req,
                MacAddr::ZERO,
                MacAddr::ZERO,
                us,
                them,
                id,
                seq,
                64,
            )
            .unwrap();
            let sent = parse_echo_frame(&req[..n]).unwrap();
            let answer = EchoReply {
                from: sent.dst,
                to: sent.src,
                icmp_type: if them.is_ipv4() { 0 } else { 129 },
                code: 0,
                id: sent.id,
                seq: sent.seq,
            };
            assert_eq!(c.classify_echo(&answer), ReplyClass::Echo(target));
        }
    }

    #[test]
    fn forged_echo_replies_are_invalid() {
        let c = classifier();
        let (them, us): (IpAddr, IpAddr) = (THEM4.into(), US4.into());
        let target = Target::from(them);
        let (id, seq) = c.cookies(target).unwrap().echo(target);
        let third: IpAddr = Ipv4Addr::new(198, 18, 0, 50).into();
        let cases = [
            ("wrong id", echo_frame(them, us, id ^ 1, seq)),
            ("wrong seq", echo_frame(them, us, id, seq.wrapping_add(1))),
            ("id and seq swapped", echo_frame(them, us, seq, id)),
            (
                "from a third party, with the target's id and seq",
                echo_frame(third, us, id, seq),
            ),
            (
                "addressed to another host",
                echo_frame(them, Ipv4Addr::new(198, 18, 0, 9).into(), id, seq),
            ),
        ];
        for (what, f) in cases {
            assert_eq!(c.classify_frame(&f), ReplyClass::Invalid, "{what}");
        }
        // Another scan's key.
        let other = ReplyClassifier::new(&key(8), Some(US4), Some(US6));
        assert_eq!(
            other.classify_frame(&echo_frame(them, us, id, seq)),
            ReplyClass::Invalid
        );
        // An echo *request* with the right id and seq, wrong type or code.
        let reply = EchoReply {
            from: them,
            to: us,
            icmp_type: 0,
            code: 0,
            id,
            seq,
        };
        assert_eq!(c.classify_echo(&reply), ReplyClass::Echo(target));
        for (icmp_type, code) in [(8, 0), (129, 0), (0, 1), (3, 0)] {
            let r = EchoReply {
                icmp_type,
                code,
                ..reply
            };
            assert_eq!(
                c.classify_echo(&r),
                ReplyClass::Invalid,
                "{icmp_type}/{code}"
            );
        }
        // Mixed families.
        let r = EchoReply {
            to: US6.into(),
            icmp_type: 129,
            ..reply
        };
        assert_eq!(c.classify_echo(&r), ReplyClass::Invalid);
        // A corrupted frame (bad ICMP checksum).
        let mut f = echo_frame(them, us, id, seq);
        let last = f.len() - 1;
        f[last] ^= 0xff;
        assert_eq!(c.classify_frame(&f), ReplyClass::Invalid);
    }

    proptest! {
        /// For any key, source and target: the reply that echoes the cookie's
        /// id and seq is an echo of that target; any other id or seq, or the
        /// same reply under another key, is invalid.
        #[test]
        fn echo_cookie_round_trip(
            k in any::<[u8; 16]>(),
            k2 in any::<[u8; 16]>(),
            us in any::<u32>(),
            host in any::<u32>(),
            host6 in any::<u128>(),
            wrong in 1u32..,
        ) {
            let us4 = Ipv4Addr::from(us);
            let c = ReplyClassifier::new(&CookieKey::from_bytes(k), Some(us4), Some(US6));
            for (from, to, t) in [
                (IpAddr::from(Ipv4Addr::from(host)), IpAddr::from(us4), 0u8),
                (IpAddr::from(Ipv6Addr::from(host6)), IpAddr::from(US6), 129u8),
            ] {
                let target = Target::from(from);
                let (id, seq) = c.cookies(target).unwrap().echo(target);
                let reply = EchoReply { from, to, icmp_type: t, code: 0, id, seq };
                prop_assert_eq!(c.classify_echo(&reply), ReplyClass::Echo(target));
                let both = (u32::from(id) << 16 | u32::from(seq)).wrapping_add(wrong);
                let forged = EchoReply { id: (both >> 16) as u16, seq: both as u16, ..reply };
                prop_assert_eq!(c.classify_echo(&forged), ReplyClass::Invalid);
                if k2 != k {
                    let other = ReplyClassifier::new(&CookieKey::from_bytes(k2), Some(us4), Some(US6));
                    let (id2, seq2) = other.cookies(target).unwrap().echo(target);
                    prop_assume!((id2, seq2) != (id, seq));
                    prop_assert_eq!(other.classify_echo(&reply), ReplyClass::Invalid);
                }
            }
        }
    }

    proptest! {
        /// For any key, target and ports: acknowledging the cookie + 1 is an
        /// answer, any other acknowledgement number is invalid.
        #[test]
        fn only_the_cookie_plus_one_counts(
            k in any::<[u8; 16]>(),
            host in any::<u32>(),
            port in 1u16..,
            lport in 1u16..,
            wrong in 1u32..,
            rst in any::<bool>(),
        ) {
            let c = ReplyClassifier::new(&CookieKey::from_bytes(k), Some(US4), None);
            let target = Target::V4(host);
            let seq = c.cookies(target).unwrap().seq(lport, target, port);
            let mut reply = Reply {
                from: IpAddr::from(Ipv4Addr::from(host)),
                from_port: port,
                to: US4.into(),
                to_port: lport,
                tcp_flags: if rst { RST_ACK } else { SYN_ACK },
                ack: seq.wrapping_add(1),
            };
            let probe = Probe { target, port };
            let want = if rst { ReplyClass::Closed(probe) } else { ReplyClass::Open(probe) };
            prop_assert_eq!(c.classify(&reply), want);
            reply.ack = seq.wrapping_add(1).wrapping_add(wrong);
            prop_assert_eq!(c.classify(&reply), ReplyClass::Invalid);
        }
    }
}
