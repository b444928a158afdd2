//! SYN cookies: the sequence number of each SYN is a keyed hash of its
//! (source ip, source port, target ip, target port), so a reply proves it
//! answers a probe of this scan by acknowledging `cookie + 1`. The key is
//! random per scan, so replies to an earlier scan (stale) or forged ones
//! (a guess has a 2^-32 chance) are told apart from real ones.
//!
//! The hash is SipHash-1-3 (the variant Rust's standard library uses for
//! `HashMap`), specialised here to inputs of whole 64-bit words because this
//! is on the per-probe hot path: a generic `Hasher` buffers bytes and costs
//! several times more. The tests check it against the `siphasher` crate.

use super::sweep::Target;

/// A 128-bit per-scan key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CookieKey {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

impl CookieKey {
    /// A key from 16 bytes; the caller draws them from a CSPRNG per scan.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        let (a, b) = bytes.split_at(8);
        CookieKey {
            k0: u64::from_le_bytes(a.try_into().unwrap_or_default()),
            k1: u64::from_le_bytes(b.try_into().unwrap_or_default()),
        }
    }
}

#[inline(always)]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

const SIP_INIT: [u64; 4] = [
    0x736f_6d65_7073_6575,
    0x646f_7261_6e64_6f6d,
    0x6c79_6765_6e65_7261,
    0x7465_6462_7974_6573,
];

#[inline(always)]
fn sip_init(key: &CookieKey) -> [u64; 4] {
    [
        key.k0 ^ SIP_INIT[0],
        key.k1 ^ SIP_INIT[1],
        key.k0 ^ SIP_INIT[2],
        key.k1 ^ SIP_INIT[3],
    ]
}

#[inline(always)]
fn sip_absorb(v: &mut [u64; 4], m: u64) {
    v[3] ^= m;
    sip_round(v);
    v[0] ^= m;
}

/// Finishes a SipHash-1-3 state that absorbed `words` whole words.
#[inline(always)]
fn sip_finish(mut v: [u64; 4], words: usize) -> u64 {
    // Final block: no tail bytes, the length (bytes, mod 256) in the top byte.
    let b = ((words as u64 * 8) & 0xff) << 56;
    sip_absorb(&mut v, b);
    v[2] ^= 0xff;
    sip_round(&mut v);
    sip_round(&mut v);
    sip_round(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// SipHash-1-3 of the little-endian bytes of `words`.
pub fn siphash13_words(key: &CookieKey, words: &[u64]) -> u64 {
    let mut v = sip_init(key);
    for &m in words {
        sip_absorb(&mut v, m);
    }
    sip_finish(v, words.len())
}

/// The words a source address contributes to the hash.
fn source_words(src: Target) -> ([u64; 2], usize) {
    match src {
        Target::V4(a) => ([u64::from(a), 0], 1),
        Target::V6(a) => ([(a >> 64) as u64, a as u64], 2),
    }
}

/// Cookies for probes from one source address.
///
/// The cookie of a probe `src:sport -> dst:dport` is the low 32 bits of
/// SipHash-1-3 over the words `src` (one word for IPv4, two for IPv6), then
/// `dst << 32 | sport << 16 | dport` for IPv4 or `dst_hi, dst_lo,
/// sport << 16 | dport` for IPv6. The source is the same for a whole scan, so
/// its words are absorbed once here and each probe pays only for the rest.
#[derive(Clone, Copy)]
pub struct Cookies {
    midstate: [u64; 4],
    src_words: usize,
    src: Target,
}

impl std::fmt::Debug for Cookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cookies")
            .field("src", &self.src)
            .finish_non_exhaustive()
    }
}

impl Cookies {
    /// Cookies under `key` for probes sent from `src`.
    pub fn new(key: &CookieKey, src: Target) -> Self {
        let mut midstate = sip_init(key);
        let (words, src_words) = source_words(src);
        for &w in &words[..src_words] {
            sip_absorb(&mut midstate, w);
        }
        Cookies {
            midstate,
            src_words,
            src,
        }
    }

    /// The source address these cookies are for.
    pub fn source(&self) -> Target {
        self.src
    }

    /// The SYN sequence number for a probe from our `sport` to `dst:dport`.
    #[inline(always)]
    pub fn seq(&self, sport: u16, dst: Target, dport: u16) -> u32 {
        let ports = u64::from(sport) << 16 | u64::from(dport);
        let mut v = self.midstate;
        let h = match dst {
            Target::V4(d) => {
                sip_absorb(&mut v, u64::from(d) << 32 | ports);
                sip_finish(v, self.src_words + 1)
            }
            Target::V6(d) => {
                sip_absorb(&mut v, (d >> 64) as u64);
                sip_absorb(&mut v, d as u64);
                sip_absorb(&mut v, ports);
                sip_finish(v, self.src_words + 3)
            }
        };
        h as u32
    }

    /// The identifier and sequence number of our ICMP / ICMPv6 echo request
    /// to `dst` (as zmap's icmp_echo module: a genuine reply echoes both
    /// back, and only our key produces them for that target).
    ///
    /// They are the high and low halves of SipHash-1-3 over the source
    /// words, then `dst << 32` and [`ECHO_DOMAIN`] for IPv4, or `dst_hi,
    /// dst_lo`, [`ECHO_DOMAIN`] and [`ECHO_DOMAIN`] again for IPv6: one word
    /// more than a SYN's cookie of the same family, so the two never share
    /// an input (the length is hashed).
    #[inline]
    pub fn echo(&self, dst: Target) -> (u16, u16) {
        let mut v = self.midstate;
        let h = match dst {
            Target::V4(d) => {
                sip_absorb(&mut v, u64::from(d) << 32);
                sip_absorb(&mut v, ECHO_DOMAIN);
                sip_finish(v, self.src_words + 2)
            }
            Target::V6(d) => {
                sip_absorb(&mut v, (d >> 64) as u64);
                sip_absorb(&mut v, d as u64);
                sip_absorb(&mut v, ECHO_DOMAIN);
                sip_absorb(&mut v, ECHO_DOMAIN);
                sip_finish(v, self.src_words + 4)
            }
        };
        ((h >> 16) as u16, h as u16)
    }

    /// Judges a reply by its TCP flags and acknowledgement number. It comes
    /// *from* the target (`target:tport`) *to* our source port `lport`.
    #[inline]
    pub fn validate(&self, target: Target, tport: u16, lport: u16, flags: u8, ack: u32) -> Verdict {
        const SYN: u8 = 0x02;
        const RST: u8 = 0x04;
        const ACK: u8 = 0x10;
        let expected = self.seq(lport, target, tport).wrapping_add(1);
        if ack != expected || flags & ACK == 0 {
            return Verdict::Invalid;
        }
        match (flags & SYN != 0, flags & RST != 0) {
            (true, false) => Verdict::Open,
            (false, true) => Verdict::Closed,
            _ => Verdict::Invalid,
        }
    }
}

/// The word that sets the echo cookies apart ("ECHO", twice).
pub const ECHO_DOMAIN: u64 = 0x4543_484f_4543_484f;

/// What a reply to one of our SYNs says about the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// SYN-ACK acknowledging our cookie: the port is open.
    Open,
    /// RST acknowledging our cookie: the port is closed.
    Closed,
    /// Not an answer to a probe of this scan (forged, stale, or unrelated).
    Invalid,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use siphasher::sip::SipHasher13;
    use std::hash::Hasher;

    fn reference(key: [u8; 16], words: &[u64]) -> u64 {
        let mut h = SipHasher13::new_with_key(&key);
        for w in words {
            h.write(&w.to_le_bytes());
        }
        h.finish()
    }

    fn words_of(src: Target, sport: u16, dst: Target, dport: u16) -> Vec<u64> {
        let (w, n) = source_words(src);
        let mut words = w[..n].to_vec();
        let ports = u64::from(sport) << 16 | u64::from(dport);
        match dst {
            Target::V4(d) => words.push(u64::from(d) << 32 | ports),
            Target::V6(d) => words.extend([(d >> 64) as u64, d as u64, ports]),
        }
        words
    }

    proptest! {
        #[test]
        fn matches_reference_siphash13(key: [u8; 16], words in proptest::collection::vec(any::<u64>(), 0..8)) {
            prop_assert_eq!(siphash13_words(&CookieKey::from_bytes(key), &words), reference(key, &words));
        }

        /// The precomputed midstate gives exactly SipHash-1-3 of the documented words.
        #[test]
        fn cookies_are_siphash13_of_the_tuple(key: [u8; 16], s4: u32, d4: u32, s6: u128, d6: u128, sp: u16, dp: u16) {
            for (src, dst) in [(Target::V4(s4), Target::V4(d4)), (Target::V6(s6), Target::V6(d6)),
                               (Target::V4(s4), Target::V6(d6)), (Target::V6(s6), Target::V4(d4))] {
                let c = Cookies::new(&CookieKey::from_bytes(key), src);
                prop_assert_eq!(c.seq(sp, dst, dp), reference(key, &words_of(src, sp, dst, dp)) as u32);
            }
        }

        #[test]
        fn replies_validate_only_with_the_right_ack(key: [u8; 16], s: u32, d: u32, sp: u16, dp: u16, wrong: u32) {
            let c = Cookies::new(&CookieKey::from_bytes(key), Target::V4(s));
            let them = Target::V4(d);
            let seq = c.seq(sp, them, dp);
            prop_assert_eq!(c.validate(them, dp, sp, 0x12, seq.wrapping_add(1)), Verdict::Open);
            prop_assert_eq!(c.validate(them, dp, sp, 0x14, seq.wrapping_add(1)), Verdict::Closed);
            prop_assume!(wrong != seq.wrapping_add(1));
            prop_assert_eq!(c.validate(them, dp, sp, 0x12, wrong), Verdict::Invalid);
            prop_assert_eq!(c.validate(them, dp, sp, 0x14, wrong), Verdict::Invalid);
        }

        #[test]
        fn ipv6_cookies_validate(key: [u8; 16], s: u128, d: u128, sp: u16, dp: u16) {
            let c = Cookies::new(&CookieKey::from_bytes(key), Target::V6(s));
            let seq = c.seq(sp, Target::V6(d), dp);
            prop_assert_eq!(c.validate(Target::V6(d), dp, sp, 0x12, seq.wrapping_add(1)), Verdict::Open);
        }
    }

    proptest! {
        /// The echo cookie is SipHash-1-3 of the documented words, and
        /// differs from every SYN cookie's input.
        #[test]
        fn echo_cookies_are_siphash13_of_the_target(key: [u8; 16], s4: u32, d4: u32, s6: u128, d6: u128) {
            for (src, dst) in [(Target::V4(s4), Target::V4(d4)), (Target::V6(s6), Target::V6(d6))] {
                let c = Cookies::new(&CookieKey::from_bytes(key), src);
                let (w, n) = source_words(src);
                let mut words = w[..n].to_vec();
                match dst {
                    Target::V4(d) => words.extend([u64::from(d) << 32, ECHO_DOMAIN]),
                    Target::V6(d) => words.extend([(d >> 64) as u64, d as u64, ECHO_DOMAIN, ECHO_DOMAIN]),
                }
                let h = reference(key, &words) as u32;
                prop_assert_eq!(c.echo(dst), ((h >> 16) as u16, h as u16));
            }
        }
    }

    #[test]
    fn echo_cookies_depend_on_key_source_and_target() {
        let us = Target::V4(0xc612_0001);
        let c = Cookies::new(&CookieKey::from_bytes([7; 16]), us);
        let them = Target::V4(0xc612_0002);
        assert_ne!(
            c.echo(them),
            Cookies::new(&CookieKey::from_bytes([8; 16]), us).echo(them)
        );
        assert_ne!(
            c.echo(them),
            Cookies::new(&CookieKey::from_bytes([7; 16]), Target::V4(0xc612_0009)).echo(them)
        );
        assert_ne!(c.echo(them), c.echo(Target::V4(0xc612_0003)));
        assert_eq!(c.echo(them), c.echo(them));
    }

    #[test]
    fn a_reply_to_another_probe_or_scan_is_invalid() {
        let us = Target::V4(0xc612_0001);
        let c = Cookies::new(&CookieKey::from_bytes([7; 16]), us);
        let earlier = Cookies::new(&CookieKey::from_bytes([8; 16]), us);
        let them = Target::V4(0xc612_0002);
        let seq = c.seq(40000, them, 80);
        // Same ack, but it claims to come from another port or host, or to another port of ours.
        assert_eq!(c.validate(them, 81, 40000, 0x12, seq + 1), Verdict::Invalid);
        assert_eq!(
            c.validate(Target::V4(0xc612_0003), 80, 40000, 0x12, seq + 1),
            Verdict::Invalid
        );
        assert_eq!(c.validate(them, 80, 40001, 0x12, seq + 1), Verdict::Invalid);
        // Stale: the right tuple under an earlier scan's key.
        let stale = earlier.seq(40000, them, 80);
        assert_eq!(
            c.validate(them, 80, 40000, 0x12, stale.wrapping_add(1)),
            Verdict::Invalid
        );
        // Flags that answer nothing: bare SYN, bare ACK, SYN+RST, RST without ACK.
        for flags in [0x02, 0x10, 0x16, 0x04] {
            assert_eq!(
                c.validate(them, 80, 40000, flags, seq.wrapping_add(1)),
                Verdict::Invalid
            );
        }
    }
}
