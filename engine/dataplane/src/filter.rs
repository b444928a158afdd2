//! The receive filter: `ebpf/replies.bpf.c`, embedded in the binary, loaded
//! and attached with aya through a BPF link (it goes away with the process,
//! even after `kill -9`), and read through its ring buffer and counters.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::links::{FdLink, LinkError};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader, Pod};

use palisade_core::classify::{EchoReply, Reply};

use super::XdpError;
use crate::privilege::Step;

/// The compiled filter (built by `build.rs` with clang-19).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/replies.bpf.o"));

/// Mirrors `struct config` in replies.bpf.c.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct FilterConfig {
    src_ip4: u32,
    src_ip6: [u8; 16],
    port_lo: u16,
    port_hi: u16,
    enabled: u32,
    accept_vlan: u32,
}

const _: () = assert!(std::mem::size_of::<FilterConfig>() == 32);

// SAFETY: `FilterConfig` is `repr(C)`, made of integers and byte arrays with no
// padding (4 + 16 + 2 + 2 + 4 + 4 = 32 bytes, all fields naturally aligned), so
// every bit pattern is valid and it can be copied to and from the kernel.
#[allow(unsafe_code)]
unsafe impl Pod for FilterConfig {}

/// `ReplyRecord::kind` of a TCP reply (SYN-ACK or RST).
pub const RECORD_TCP: u8 = 0;
/// `ReplyRecord::kind` of an ICMP / ICMPv6 echo reply.
pub const RECORD_ECHO: u8 = 1;

/// One reply as the filter hands it over; mirrors `struct reply`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplyRecord {
    /// 4 or 6.
    pub family: u8,
    /// TCP: the flags byte.
    pub tcp_flags: u8,
    /// TTL or hop limit as received.
    pub ttl: u8,
    /// [`RECORD_TCP`] or [`RECORD_ECHO`].
    pub kind: u8,
    /// TCP: the target's port.
    pub src_port: u16,
    /// TCP: our source port.
    pub dst_port: u16,
    /// TCP: the sequence number.
    pub seq: u32,
    /// TCP: the acknowledgement number.
    pub ack: u32,
    /// The target's address, network order (IPv4 in the first 4 bytes).
    pub saddr: [u8; 16],
    /// Our address, network order.
    pub daddr: [u8; 16],
    /// Echo: the ICMP / ICMPv6 type.
    pub icmp_type: u8,
    /// Echo: the code.
    pub icmp_code: u8,
    /// Echo: the identifier.
    pub echo_id: u16,
    /// Echo: the sequence number.
    pub echo_seq: u16,
    _pad: u16,
}

/// Bytes of one record.
pub const RECORD_LEN: usize = std::mem::size_of::<ReplyRecord>();
const _: () = assert!(RECORD_LEN == 56);

impl ReplyRecord {
    /// Decodes a ring-buffer record; `None` if it is too short.
    fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; RECORD_LEN] = b.get(..RECORD_LEN)?.try_into().ok()?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut saddr = [0; 16];
        saddr.copy_from_slice(&b[16..32]);
        let mut daddr = [0; 16];
        daddr.copy_from_slice(&b[32..48]);
        Some(ReplyRecord {
            family: b[0],
            tcp_flags: b[1],
            ttl: b[2],
            kind: b[3],
            src_port: u16_at(4),
            dst_port: u16_at(6),
            seq: u32_at(8),
            ack: u32_at(12),
            saddr,
            daddr,
            icmp_type: b[48],
            icmp_code: b[49],
            echo_id: u16_at(50),
            echo_seq: u16_at(52),
            _pad: 0,
        })
    }

    /// The target's address.
    pub fn source(&self) -> IpAddr {
        addr(self.family, &self.saddr)
    }

    /// Our address.
    pub fn destination(&self) -> IpAddr {
        addr(self.family, &self.daddr)
    }

    /// The fields the core's classifier judges, for a TCP reply; `None`
    /// for an echo reply.
    pub fn reply(&self) -> Option<Reply> {
        (self.kind == RECORD_TCP).then(|| Reply {
            from: self.source(),
            from_port: self.src_port,
            to: self.destination(),
            to_port: self.dst_port,
            tcp_flags: self.tcp_flags,
            ack: self.ack,
        })
    }

    /// The fields the core's classifier judges, for an echo reply; `None`
    /// for a TCP reply.
    pub fn echo(&self) -> Option<EchoReply> {
        (self.kind == RECORD_ECHO).then(|| EchoReply {
            from: self.source(),
            to: self.destination(),
            icmp_type: self.icmp_type,
            code: self.icmp_code,
            id: self.echo_id,
            seq: self.echo_seq,
        })
    }
}

fn addr(family: u8, b: &[u8; 16]) -> IpAddr {
    if family == 4 {
        IpAddr::from([b[0], b[1], b[2], b[3]])
    } else {
        IpAddr::from(*b)
    }
}

/// How the filter is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) XDP.
    Driver,
    /// Generic (skb) XDP, for devices without native support.
    Generic,
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachMode::Driver => "driver",
            AttachMode::Generic => "generic",
        })
    }
}

/// Counters of the filter, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterCounters {
    /// Replies handed to user space.
    pub matched: u64,
    /// Packets passed to the kernel untouched.
    pub passed: u64,
    /// Replies lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Would-be replies the kernel would not accept (bad checksum, fragment,
    /// truncated, VLAN-tagged on an untagged link), dropped unrecorded.
    pub invalid: u64,
}

/// The attached filter. Dropping it detaches the program.
pub struct ReplyFilter {
    // Field order is drop order: the link goes first.
    _link: FdLink,
    ring: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    _ebpf: Ebpf,
    mode: AttachMode,
}

impl std::fmt::Debug for ReplyFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyFilter")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// An [`XdpError::Bpf`] for a failed step `what`.
pub fn bpf_err(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> XdpError {
    move |e| XdpError::Bpf {
        what,
        detail: e.to_string(),
    }
}

/// Loads the XDP program `name` of `ebpf` and attaches it to `ifindex`
/// through a BPF link (gone with the process, even after `kill -9`): in
/// `mode`, or native mode with a fallback to generic when `mode` is `None`.
pub fn attach_program(
    ebpf: &mut Ebpf,
    name: &'static str,
    ifindex: u32,
    mode: Option<AttachMode>,
) -> Result<(FdLink, AttachMode), XdpError> {
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| bpf_err("find program")(&name))?
        .try_into()
        .map_err(|e| bpf_err("open the XDP program")(&e))?;
    program.load().map_err(|e| {
        crate::refused(
            Step::Load,
            crate::os_error(&e),
            bpf_err("load the XDP program (verifier)")(&e),
        )
    })?;
    let attempt = |program: &mut Xdp, mode: AttachMode| {
        let flags = match mode {
            AttachMode::Driver => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        };
        program.attach_to_if_index(ifindex, flags)
    };
    let (id, mode) = match mode {
        Some(mode) => match attempt(program, mode) {
            Ok(id) => (id, mode),
            Err(e) => {
                return Err(crate::refused(
                    Step::Attach,
                    crate::os_error(&e),
                    XdpError::Attach {
                        detail: format!("{mode}: {e}"),
                    },
                ));
            }
        },
        None => match attempt(program, AttachMode::Driver) {
            Ok(id) => (id, AttachMode::Driver),
            Err(native) => match attempt(program, AttachMode::Generic) {
                Ok(id) => (id, AttachMode::Generic),
                Err(generic) => {
                    return Err(crate::refused(
                        Step::Attach,
                        crate::os_error(&generic),
                        XdpError::Attach {
                            detail: format!("native: {native}; generic: {generic}"),
                        },
                    ));
                }
            },
        },
    };
    let link = program
        .take_link(id)
        .map_err(|e| bpf_err("take the XDP link")(&e))?;
    match FdLink::try_from(link) {
        Ok(link) => Ok((link, mode)),
        Err(LinkError::InvalidLink) => Err(XdpError::Attach {
            detail: "the kernel has no BPF links for XDP (Linux 5.9 or newer is needed)".into(),
        }),
        Err(e) => Err(bpf_err("keep the XDP link")(&e)),
    }
}

impl ReplyFilter {
    /// Loads the filter, tells it our addresses and source ports, and
    /// attaches it to `ifindex` (native mode if the device has it).
    /// `accept_vlan`: the link is VLAN-tagged, so tagged replies count;
    /// otherwise a tagged reply is invalid.
    pub fn attach(
        ifindex: u32,
        src_v4: Option<std::net::Ipv4Addr>,
        src_v6: Option<std::net::Ipv6Addr>,
        ports: (u16, u16),
        ring_bytes: u32,
        accept_vlan: bool,
    ) -> Result<Self, XdpError> {
        if ifindex == 0 {
            return Err(XdpError::NoInterface("interface index 0".into()));
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("replies", ring_bytes.next_power_of_two().max(4096))
            .load(OBJECT)
            .map_err(|e| {
                crate::refused(
                    Step::Maps,
                    crate::os_error(&e),
                    bpf_err("load the eBPF object")(&e),
                )
            })?;
        let mut config: Array<MapData, FilterConfig> = Array::try_from(
            ebpf.take_map("config")
                .ok_or_else(|| bpf_err("find map")(&"config"))?,
        )
        .map_err(|e| bpf_err("open map config")(&e))?;
        config
            .set(
                0,
                FilterConfig {
                    src_ip4: src_v4.map_or(0, |a| u32::from_ne_bytes(a.octets())),
                    src_ip6: src_v6.map_or([0; 16], |a| a.octets()),
                    port_lo: ports.0,
                    port_hi: ports.1,
                    enabled: 1,
                    accept_vlan: u32::from(accept_vlan),
                },
                0,
            )
            .map_err(|e| bpf_err("configure the filter")(&e))?;
        let ring = RingBuf::try_from(
            ebpf.take_map("replies")
                .ok_or_else(|| bpf_err("find map")(&"replies"))?,
        )
        .map_err(|e| bpf_err("open the ring buffer")(&e))?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map("counters")
                .ok_or_else(|| bpf_err("find map")(&"counters"))?,
        )
        .map_err(|e| bpf_err("open the counters")(&e))?;

        let (link, mode) = attach_program(&mut ebpf, "palisade_replies", ifindex, None)?;
        Ok(ReplyFilter {
            _link: link,
            ring,
            counters,
            _ebpf: ebpf,
            mode,
        })
    }

    /// How the filter is attached.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Hands every queued reply to `each`; returns how many there were.
    pub fn drain(&mut self, mut each: impl FnMut(ReplyRecord)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            if let Some(r) = ReplyRecord::from_bytes(&item) {
                each(r);
                n += 1;
            }
        }
        n
    }

    /// Waits up to `timeout` for replies to arrive (drain first: the kernel
    /// only wakes a reader that has caught up).
    pub fn wait(&self, timeout: Duration) -> Result<(), XdpError> {
        let mut pfd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `pfd` is a valid, initialised pollfd that lives across the
        // call, and we pass a count of exactly one.
        #[allow(unsafe_code)]
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(XdpError::Io {
                    what: "poll the ring buffer",
                    source: e,
                });
            }
        }
        Ok(())
    }

    /// The filter's counters, summed over CPUs.
    pub fn counters(&self) -> Result<FilterCounters, XdpError> {
        let get = |i: u32| -> Result<u64, XdpError> {
            Ok(self
                .counters
                .get(&i, 0)
                .map_err(|e| bpf_err("read the counters")(&e))?
                .iter()
                .sum())
        };
        Ok(FilterCounters {
            matched: get(0)?,
            passed: get(1)?,
            ringbuf_full: get(2)?,
            invalid: get(3)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_decoding_matches_the_c_layout() {
        let mut b = [0u8; RECORD_LEN];
        b[0] = 4;
        b[1] = 0x12;
        b[2] = 64;
        b[4..6].copy_from_slice(&443u16.to_ne_bytes());
        b[6..8].copy_from_slice(&61000u16.to_ne_bytes());
        b[8..12].copy_from_slice(&7u32.to_ne_bytes());
        b[12..16].copy_from_slice(&9u32.to_ne_bytes());
        b[16..20].copy_from_slice(&[198, 18, 0, 2]);
        b[32..36].copy_from_slice(&[198, 18, 0, 1]);
        let r = ReplyRecord::from_bytes(&b).unwrap();
        assert_eq!((r.family, r.tcp_flags, r.ttl), (4, 0x12, 64));
        assert_eq!((r.src_port, r.dst_port, r.seq, r.ack), (443, 61000, 7, 9));
        assert_eq!(r.source().to_string(), "198.18.0.2");
        assert_eq!(r.destination().to_string(), "198.18.0.1");
        assert!(r.reply().is_some() && r.echo().is_none());
        assert_eq!(ReplyRecord::from_bytes(&b[..RECORD_LEN - 1]), None);
        // An echo reply.
        b[3] = RECORD_ECHO;
        b[48] = 0;
        b[49] = 0;
        b[50..52].copy_from_slice(&0xbeefu16.to_ne_bytes());
        b[52..54].copy_from_slice(&0x1234u16.to_ne_bytes());
        let r = ReplyRecord::from_bytes(&b).unwrap();
        assert!(r.reply().is_none());
        let e = r.echo().unwrap();
        assert_eq!((e.icmp_type, e.code, e.id, e.seq), (0, 0, 0xbeef, 0x1234));
        assert_eq!(e.from.to_string(), "198.18.0.2");
    }
}
