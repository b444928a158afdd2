//! Addresses that can never be monitored.
//!
//! A monitor's host is scanned from the scan host's interface: SYNs go out
//! to one unicast destination and its replies come back. Some addresses can
//! never be that destination. [`unmonitorable`] names them and says why; the
//! configuration refuses them as monitor hosts, and a host name's addresses
//! are filtered through it.

use std::net::IpAddr;

/// `0.0.0.0` and `::`.
const UNSPECIFIED: &str =
    "an unspecified address: it means \"any address\" and names no host to scan";
/// `255.255.255.255`.
const BROADCAST: &str =
    "the broadcast address: it reaches every host of a link at once, never one host";
/// `224.0.0.0/4` and `ff00::/8`.
const MULTICAST: &str =
    "a multicast address: it names a group of hosts, and TCP never connects to a group";
/// `127.0.0.0/8` and `::1`.
const LOOPBACK: &str = "a loopback address: it can never be scanned from the scan host's interface";

/// Why `ip` can never be a monitor's host, or `None` if it can be.
///
/// Refused: the unspecified addresses (`0.0.0.0`, `::`), the limited
/// broadcast address (`255.255.255.255`), multicast (`224.0.0.0/4`,
/// `ff00::/8`) and loopback (`127.0.0.0/8`, `::1`), and the IPv4-mapped IPv6
/// forms (`::ffff:a.b.c.d`) of the IPv4 ones. The reason reads after
/// "host X is", e.g. "a loopback address: it can never be scanned from the
/// scan host's interface".
pub fn unmonitorable(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) if v4.is_unspecified() => Some(UNSPECIFIED),
        IpAddr::V4(v4) if v4.is_broadcast() => Some(BROADCAST),
        IpAddr::V4(v4) if v4.is_multicast() => Some(MULTICAST),
        IpAddr::V4(v4) if v4.is_loopback() => Some(LOOPBACK),
        IpAddr::V6(v6) if v6.is_unspecified() => Some(UNSPECIFIED),
        IpAddr::V6(v6) if v6.is_multicast() => Some(MULTICAST),
        IpAddr::V6(v6) if v6.is_loopback() => Some(LOOPBACK),
        IpAddr::V4(_) | IpAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn reason(text: &str) -> Option<&'static str> {
        unmonitorable(text.parse().unwrap())
    }

    /// `text` and its IPv4-mapped IPv6 form.
    fn both_forms(text: &str) -> [String; 2] {
        [text.to_owned(), format!("::ffff:{text}")]
    }

    #[test]
    fn unspecified_addresses_are_refused() {
        for text in both_forms("0.0.0.0")
            .iter()
            .map(String::as_str)
            .chain(["::"])
        {
            assert_eq!(reason(text), Some(UNSPECIFIED), "{text}");
        }
    }

    #[test]
    fn the_broadcast_address_is_refused() {
        for text in both_forms("255.255.255.255") {
            assert_eq!(reason(&text), Some(BROADCAST), "{text}");
        }
        // Only the limited broadcast: a subnet's directed broadcast address
        // is an ordinary address without the subnet's mask.
        assert_eq!(reason("255.255.255.254"), None);
        assert_eq!(reason("198.18.0.255"), None);
    }

    #[test]
    fn multicast_is_refused_all_of_it() {
        for text in [
            "224.0.0.0",
            "224.0.0.1",
            "232.1.2.3",
            "239.255.255.255",
            "::ffff:224.0.0.1",
            "::ffff:239.255.255.255",
            "ff00::",
            "ff02::1",
            "ff05::1:3",
            "ff0e::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            assert_eq!(reason(text), Some(MULTICAST), "{text}");
        }
        // The edges of 224.0.0.0/4 and ff00::/8.
        for text in ["223.255.255.255", "240.0.0.0", "feff:ffff::1", "fe80::1"] {
            assert_eq!(reason(text), None, "{text}");
        }
    }

    #[test]
    fn loopback_is_refused_all_of_it() {
        for text in [
            "127.0.0.1",
            "127.0.0.0",
            "127.1.2.3",
            "127.255.255.255",
            "::ffff:127.0.0.1",
            "::ffff:127.255.255.255",
            "::1",
        ] {
            assert_eq!(reason(text), Some(LOOPBACK), "{text}");
        }
        // The edges of 127.0.0.0/8; ::2 is not loopback.
        for text in ["126.255.255.255", "128.0.0.0", "::2", "::ffff:128.0.0.0"] {
            assert_eq!(reason(text), None, "{text}");
        }
    }

    #[test]
    fn ordinary_addresses_are_monitorable() {
        for text in [
            "198.18.0.2",
            "198.19.255.254",
            "10.0.0.1",
            "192.168.1.1",
            "1.1.1.1",
            "0.0.0.1",
            "2001:2::10",
            "2001:db8::1",
            "fd00::1",
            "::ffff:198.18.0.2",
        ] {
            assert_eq!(reason(text), None, "{text}");
        }
    }

    #[test]
    fn the_constants_agree_with_std() {
        assert_eq!(
            unmonitorable(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            Some(UNSPECIFIED)
        );
        assert_eq!(
            unmonitorable(IpAddr::V4(Ipv4Addr::BROADCAST)),
            Some(BROADCAST)
        );
        assert_eq!(
            unmonitorable(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Some(LOOPBACK)
        );
        assert_eq!(
            unmonitorable(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            Some(UNSPECIFIED)
        );
        assert_eq!(
            unmonitorable(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            Some(LOOPBACK)
        );
        assert_eq!(
            unmonitorable(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())),
            Some(LOOPBACK)
        );
    }

    #[test]
    fn every_reason_reads_after_host_x_is() {
        for reason in [UNSPECIFIED, BROADCAST, MULTICAST, LOOPBACK] {
            assert!(
                ["a ", "an ", "the "].iter().any(|a| reason.starts_with(a)),
                "{reason}"
            );
            assert!(reason.contains(": "), "{reason}");
        }
    }

    proptest! {
        /// An IPv4 address and its IPv4-mapped IPv6 form are judged alike;
        /// an IPv4 address is refused exactly when it is in one of the
        /// refused blocks.
        #[test]
        fn mapped_forms_are_judged_like_ipv4(bits: u32) {
            let v4 = Ipv4Addr::from(bits);
            let refused = unmonitorable(IpAddr::V4(v4));
            prop_assert_eq!(unmonitorable(IpAddr::V6(v4.to_ipv6_mapped())), refused);
            let [first, ..] = v4.octets();
            let in_blocks = bits == 0 || bits == u32::MAX || first == 127 || (224..240).contains(&first);
            prop_assert_eq!(refused.is_some(), in_blocks);
        }

        /// An IPv6 address outside ::ffff:0:0/96 is refused exactly when it
        /// is ::, ::1 or in ff00::/8.
        #[test]
        fn ipv6_is_refused_only_in_its_blocks(bits: u128) {
            let v6 = Ipv6Addr::from(bits);
            prop_assume!(v6.to_ipv4_mapped().is_none());
            let in_blocks = bits <= 1 || bits >> 120 == 0xff;
            prop_assert_eq!(unmonitorable(IpAddr::V6(v6)).is_some(), in_blocks);
        }
    }
}
