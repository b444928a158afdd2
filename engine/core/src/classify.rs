//! The reply classifier: a reply and the scan's cookie key → open, closed or
//! invalid, and which probe it answers.
//!
//! Every SYN of a scan carries a keyed cookie in its sequence number
//! ([`Cookies::seq`]), so a genuine reply acknowledges `cookie + 1`: a SYN-ACK
//! says the port is open, an RST|ACK that it is closed. Anything else — a
//! forged or stale reply, one from an earlier scan (another key), one to an
//! address family we did not send from — is invalid and must never be
//! reported. The data path hands replies over as records of header fields
//! ([`Reply`]); [`ReplyClassifier::classify_frame`] takes a whole Ethernet
//! frame instead, checksums verified.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::probe::{CookieKey, Cookies, Probe, Target, Verdict};
use crate::wire::{TcpSegmentInfo, parse_tcp_frame};

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

/// What a reply says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyClass {
    /// A SYN-ACK to our probe: the port is open.
    Open(Probe),
    /// An RST to our probe: the port is closed (and the host is up).
    Closed(Probe),
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

    /// What an Ethernet frame says: a frame that is not a well-formed TCP
    /// segment with good checksums is invalid.
    pub fn classify_frame(&self, frame: &[u8]) -> ReplyClass {
        match parse_tcp_frame(frame) {
            Ok(segment) => self.classify(&Reply::from(&segment)),
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
