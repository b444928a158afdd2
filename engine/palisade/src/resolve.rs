//! Every address of a monitor's host.
//!
//! A host is an address literal or a name. A name stands for *all* its A and
//! AAAA records: a dual-stack server is two addresses, each scanned, and
//! either may expose what the other does not. [`resolve_host`] asks the
//! system resolver (getaddrinfo, both families) and keeps the addresses that
//! can be monitored (see [`palisade_core::address::unmonitorable`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, ToSocketAddrs};

use palisade_core::address::unmonitorable;

/// Why a host has no address to scan.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The resolver failed (no such name, no DNS server, ...): this may
    /// pass, so the daemon tries again at each sweep.
    #[error("cannot resolve {host}: {cause}")]
    Lookup { host: String, cause: std::io::Error },
    /// The resolver answered with no address.
    #[error("{host} has no address")]
    NoAddress { host: String },
    /// An address literal that can never be monitored.
    #[error("host {host} is {reason}")]
    Refused { host: String, reason: &'static str },
    /// A name whose every address can never be monitored.
    #[error(
        "host {host} resolves only to addresses that can never be monitored: {}",
        refusals(.refused)
    )]
    OnlyUnmonitorable {
        host: String,
        /// Each address, with why it cannot be monitored.
        refused: Vec<(IpAddr, &'static str)>,
    },
}

impl ResolveError {
    /// The host can never be monitored as it is (as opposed to a lookup
    /// that failed now and may succeed later).
    pub fn is_unmonitorable(&self) -> bool {
        matches!(
            self,
            ResolveError::Refused { .. } | ResolveError::OnlyUnmonitorable { .. }
        )
    }
}

fn refusals(refused: &[(IpAddr, &'static str)]) -> String {
    let each: Vec<String> = refused
        .iter()
        .map(|(ip, reason)| format!("{ip} is {reason}"))
        .collect();
    each.join("; ")
}

/// The addresses to scan for `host`: an address literal is itself; a name
/// is all its A and AAAA records, deduplicated and sorted (IPv4 first, then
/// IPv6), less those that can never be monitored. An error says why nothing
/// is left. A name is looked up with the system resolver (blocking).
pub fn resolve_host(host: &str) -> Result<Vec<IpAddr>, ResolveError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return literal(host, ip);
    }
    let found = (host, 0)
        .to_socket_addrs()
        .map_err(|cause| ResolveError::Lookup {
            host: host.to_owned(),
            cause,
        })?;
    monitorable(host, found.map(|address| address.ip()))
}

/// An address literal `host` (= `ip`): itself, if it can be monitored.
pub fn literal(host: &str, ip: IpAddr) -> Result<Vec<IpAddr>, ResolveError> {
    match unmonitorable(ip) {
        None => Ok(vec![ip]),
        Some(reason) => Err(ResolveError::Refused {
            host: host.to_owned(),
            reason,
        }),
    }
}

/// The addresses that name `host` resolved to, deduplicated and sorted
/// (IPv4 first), less those that can never be monitored.
pub fn monitorable(
    host: &str,
    found: impl IntoIterator<Item = IpAddr>,
) -> Result<Vec<IpAddr>, ResolveError> {
    let found: BTreeSet<IpAddr> = found.into_iter().collect();
    if found.is_empty() {
        return Err(ResolveError::NoAddress {
            host: host.to_owned(),
        });
    }
    let mut kept = Vec::with_capacity(found.len());
    let mut refused = Vec::new();
    for ip in found {
        match unmonitorable(ip) {
            None => kept.push(ip),
            Some(reason) => refused.push((ip, reason)),
        }
    }
    if kept.is_empty() {
        return Err(ResolveError::OnlyUnmonitorable {
            host: host.to_owned(),
            refused,
        });
    }
    for (ip, reason) in refused {
        tracing::debug!("{host}: not scanning {ip}, {reason}");
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(texts: &[&str]) -> Vec<IpAddr> {
        texts.iter().map(|text| text.parse().unwrap()).collect()
    }

    #[test]
    fn a_literal_is_itself() {
        for text in ["198.18.0.2", "2001:2::10", "::ffff:198.18.0.2"] {
            assert_eq!(resolve_host(text).unwrap(), ips(&[text]), "{text}");
        }
    }

    #[test]
    fn unmonitorable_literals_are_refused_with_the_reason() {
        let err = resolve_host("127.0.0.1").unwrap_err();
        assert!(err.is_unmonitorable());
        assert_eq!(
            err.to_string(),
            "host 127.0.0.1 is a loopback address: it can never be scanned from the scan \
             host's interface"
        );
        for (text, kind) in [
            ("0.0.0.0", "an unspecified address"),
            ("::", "an unspecified address"),
            ("255.255.255.255", "the broadcast address"),
            ("224.0.0.251", "a multicast address"),
            ("ff02::1", "a multicast address"),
            ("::1", "a loopback address"),
            ("127.3.2.1", "a loopback address"),
            ("::ffff:127.0.0.1", "a loopback address"),
        ] {
            let err = resolve_host(text).unwrap_err();
            assert!(
                matches!(&err, ResolveError::Refused { host, .. } if host == text),
                "{text}: {err:?}"
            );
            assert!(
                err.to_string()
                    .starts_with(&format!("host {text} is {kind}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn localhost_is_refused_as_a_name_of_loopback_only() {
        let err = resolve_host("localhost").unwrap_err();
        let ResolveError::OnlyUnmonitorable { host, refused } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(host, "localhost");
        assert!(!refused.is_empty());
        assert!(
            refused.iter().all(|(ip, _)| ip.is_loopback()),
            "{refused:?}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with(
                "host localhost resolves only to addresses that can never be monitored: "
            ),
            "{message}"
        );
        assert!(message.contains(" is a loopback address: "), "{message}");
        assert!(err.is_unmonitorable());
    }

    #[test]
    fn every_address_of_a_name_deduplicated_ipv4_first() {
        let found = ips(&[
            "2001:2::7",
            "198.18.0.9",
            "2001:2::5",
            "198.18.0.7",
            "198.18.0.9",
            "2001:2::7",
        ]);
        assert_eq!(
            monitorable("dual.example.com", found).unwrap(),
            ips(&["198.18.0.7", "198.18.0.9", "2001:2::5", "2001:2::7"])
        );
    }

    #[test]
    fn unmonitorable_addresses_of_a_name_are_left_out() {
        let found = ips(&["127.0.1.1", "2001:2::7", "::1", "198.18.0.7", "ff02::1"]);
        assert_eq!(
            monitorable("mixed.example.com", found).unwrap(),
            ips(&["198.18.0.7", "2001:2::7"])
        );
    }

    #[test]
    fn a_name_with_only_unmonitorable_addresses_says_why_for_each() {
        let found = ips(&["::1", "127.0.0.1", "224.0.0.1"]);
        let err = monitorable("odd.example.com", found).unwrap_err();
        assert_eq!(
            err.to_string(),
            "host odd.example.com resolves only to addresses that can never be monitored: \
             127.0.0.1 is a loopback address: it can never be scanned from the scan host's \
             interface; 224.0.0.1 is a multicast address: it names a group of hosts, and TCP \
             never connects to a group; ::1 is a loopback address: it can never be scanned \
             from the scan host's interface"
        );
    }

    #[test]
    fn no_address_is_an_error_that_may_pass() {
        let err = monitorable("empty.example.com", []).unwrap_err();
        assert_eq!(err.to_string(), "empty.example.com has no address");
        assert!(!err.is_unmonitorable());
    }

    #[test]
    fn a_failed_lookup_is_an_error_that_may_pass() {
        // `.invalid` never resolves (RFC 6761): DNS says so at once, or
        // fails at once where there is none.
        let err = resolve_host("no-such-host.invalid").unwrap_err();
        assert!(
            matches!(&err, ResolveError::Lookup { host, .. } if host == "no-such-host.invalid"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("cannot resolve no-such-host.invalid: "),
            "{err}"
        );
        assert!(!err.is_unmonitorable());
    }
}
