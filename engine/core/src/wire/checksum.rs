//! The Internet checksum (RFC 1071), usable incrementally.
//!
//! A checksum is computed in three steps:
//!
//! 1. [`sum`] the bytes (and [`pseudo_header_v4`] / [`pseudo_header_v6`] for
//!    TCP and UDP) into an unfolded 32-bit accumulator; accumulators are
//!    combined with [`add`] (or plain `+` while the values are small);
//! 2. [`fold`] the carries back into 16 bits;
//! 3. complement: [`finish`] does steps 2 and 3 and gives the value to write
//!    into the checksum field (in big-endian order).
//!
//! To verify, sum everything including the transmitted checksum field:
//! the data is intact exactly when [`is_valid`] holds (the folded sum is
//! `0xffff`).
//!
//! Partial sums combine correctly only when each part starts at an even
//! offset of the checksummed data (an odd-length part must be the last one).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Sums `data` as big-endian 16-bit words; an odd trailing byte is padded with
/// a zero byte on the right.
///
/// The result is an unfolded accumulator: it is congruent (modulo `0xffff`)
/// to the ones'-complement sum and is zero only if every word is zero. It
/// never overflows, whatever the length of `data`.
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(2);
    for word in &mut words {
        if let &[hi, lo] = word {
            acc += u64::from(u16::from_be_bytes([hi, lo]));
        }
    }
    if let &[last] = words.remainder() {
        acc += u64::from(u16::from_be_bytes([last, 0]));
    }
    // A slice holds fewer than 2^48 words, so `acc` did not overflow; fold it
    // into 32 bits with end-around carry (2^32 is 1 modulo 0xffff).
    while acc > u64::from(u32::MAX) {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    // The loop guarantees the value fits; the fallback is unreachable.
    u32::try_from(acc).unwrap_or(u32::MAX)
}

/// Adds two accumulators with end-around carry (the result stays congruent
/// modulo `0xffff`, even when `a + b` overflows 32 bits).
pub const fn add(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    // On overflow `s <= u32::MAX - 1`, so adding the carry cannot overflow.
    s + carry as u32
}

/// Sums a host-order 32-bit value as its two big-endian 16-bit words.
#[inline]
pub const fn sum_u32(value: u32) -> u32 {
    (value >> 16) + (value & 0xffff)
}

/// Sums a host-order 128-bit value (an IPv6 address) as its eight big-endian
/// 16-bit words.
#[inline]
pub const fn sum_u128(value: u128) -> u32 {
    let mut acc = 0u32;
    let mut i = 0;
    while i < 8 {
        acc += ((value >> (16 * i)) & 0xffff) as u32;
        i += 1;
    }
    acc
}

/// Folds the carries of an accumulator into 16 bits, without complementing.
///
/// The result is the ones'-complement sum itself: `0xffff` for a correct
/// checksum when the checksum field was included in the sum.
#[inline]
pub const fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16); // <= 0x1_fffe
    let s = (s & 0xffff) + (s >> 16); // <= 0xffff
    s as u16
}

/// Folds and complements an accumulator: the value to store in a checksum
/// field (whose bytes were zero when summing).
#[inline]
pub const fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// Whether an accumulator that includes the transmitted checksum field
/// verifies.
#[inline]
pub const fn is_valid(sum: u32) -> bool {
    fold(sum) == 0xffff
}

/// Sum of the IPv4 pseudo-header (RFC 793): source, destination, zero,
/// protocol and the upper-layer length (header plus payload, in bytes).
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u32 {
    sum_u32(u32::from(src)) + sum_u32(u32::from(dst)) + u32::from(protocol) + u32::from(length)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 section 8.1): source, destination,
/// the 32-bit upper-layer length and the next-header value.
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u32 {
    sum_u128(u128::from(src)) + sum_u128(u128::from(dst)) + sum_u32(length) + u32::from(next_header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0x2_ddf0);
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(finish(sum(&data)), 0x220d);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12]), 0x1200);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn known_ipv4_header() {
        // Classic example header (Wikipedia, "IPv4 header checksum").
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(finish(sum(&header)), 0xb861);
        header[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(is_valid(sum(&header)));
        header[8] ^= 1;
        assert!(!is_valid(sum(&header)));
    }

    #[test]
    fn add_wraps_with_end_around_carry() {
        assert_eq!(add(u32::MAX, 1), 1);
        assert_eq!(add(u32::MAX, u32::MAX), u32::MAX);
        assert_eq!(fold(add(0xffff_0000, 0x0002_0000)), fold(0x1_0001));
    }

    #[test]
    fn partial_sums_combine() {
        let data: Vec<u8> = (0u8..=250).collect();
        let whole = fold(sum(&data));
        for cut in (0..data.len()).step_by(2) {
            let (a, b) = data.split_at(cut);
            assert_eq!(fold(add(sum(a), sum(b))), whole, "cut at {cut}");
        }
    }

    #[test]
    fn integer_sums_match_byte_sums() {
        let v4 = 0xc612_6301u32;
        assert_eq!(fold(sum_u32(v4)), fold(sum(&v4.to_be_bytes())));
        let v6 = 0x2001_0db8_ffff_0000_1234_5678_9abc_def0u128;
        assert_eq!(fold(sum_u128(v6)), fold(sum(&v6.to_be_bytes())));
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&70000u32.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 6]);
        assert_eq!(
            fold(pseudo_header_v6(src, dst, 6, 70000)),
            fold(sum(&pseudo))
        );
    }

    #[test]
    fn large_input_does_not_overflow() {
        let data = vec![0xffu8; 1 << 20];
        assert_eq!(fold(sum(&data)), 0xffff);
    }
}
