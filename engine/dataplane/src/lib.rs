//! Palisade's data path: everything that touches the kernel's fast path, and
//! all of the workspace's `unsafe` code (each block carries a `SAFETY:` note).
//!
//! * [`xsk`]: AF_XDP transmit sockets and their UMEM, one per TX queue.
//! * [`filter`]: the eBPF reply filter (`ebpf/replies.bpf.c`, loaded with aya)
//!   and the ring buffer it fills.
//! * [`host`]: the clock's synchronisation (`adjtimex`), for `palisade doctor`.
//! * [`netlink`]: route and neighbour lookups over rtnetlink.
//! * [`privilege`]: the capabilities and memlock limit the data path needs,
//!   read from the kernel, and the sentence that names what is missing.
//! * [`scan`]: the scan loop over them, in send, receive and retry-window
//!   parts; what it decides comes from `palisade_core`.

pub mod filter;
pub mod host;
pub mod netlink;
pub mod privilege;
pub mod scan;
pub mod xsk;

use thiserror::Error;

pub use privilege::{CapSet, Capability};

pub use filter::{AttachMode, FilterCounters, ReplyFilter, ReplyRecord, attach_program, bpf_err};
pub use xsk::{TxCounters, TxSocket, open_queues};

/// What can go wrong on the data path.
#[derive(Debug, Error)]
pub enum XdpError {
    #[error("no such interface: {0}")]
    NoInterface(String),
    #[error("cannot {what}: {detail}")]
    Bpf { what: &'static str, detail: String },
    #[error(
        "cannot attach the XDP filter ({detail}); is another XDP program attached? (`ip link show`)"
    )]
    Attach { detail: String },
    #[error("cannot {what}: {detail}")]
    Socket { what: &'static str, detail: String },
    #[error(
        "transmit queue {queue} is in use by another AF_XDP socket (another scan on this interface?)"
    )]
    QueueBusy { queue: u32 },
    /// The kernel refused a step for want of a capability the process
    /// does not hold (checked in its effective set).
    #[error("{}", privilege::missing_sentence(*step, missing))]
    MissingCapability {
        step: privilege::Step,
        missing: Vec<privilege::Capability>,
    },
    /// The UMEM's locked memory exceeds `RLIMIT_MEMLOCK` and the process
    /// lacks `CAP_IPC_LOCK`.
    #[error(
        "registering the AF_XDP UMEM ({} for each of {queues} transmit queue(s)) needs CAP_IPC_LOCK \
         or RLIMIT_MEMLOCK ≥ {}, now {} (AmbientCapabilities=CAP_IPC_LOCK, or LimitMEMLOCK=infinity, in palisade.service)",
        privilege::human_bytes(xsk::UMEM_BYTES), privilege::human_bytes(xsk::memlock_need(*queues)), privilege::human_limit(*limit)
    )]
    Memlock {
        /// Transmit queues, one UMEM each.
        queues: usize,
        /// The soft limit; `None`: unlimited.
        limit: Option<u64>,
    },
    #[error("cannot {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The index of interface `name`.
pub fn ifindex(name: &str) -> Result<u32, XdpError> {
    let c = std::ffi::CString::new(name).map_err(|_| XdpError::NoInterface(name.into()))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    #[allow(unsafe_code)]
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(XdpError::NoInterface(name.into()))
    } else {
        Ok(i)
    }
}

/// The name of interface `index`.
pub fn ifname(index: u32) -> Result<String, XdpError> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes as if_indextoname requires.
    #[allow(unsafe_code)]
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return Err(XdpError::NoInterface(format!("index {index}")));
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    #[allow(unsafe_code)]
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// Number of TX queues of interface `name` (from sysfs).
pub fn tx_queues(name: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("tx-"))
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

/// The MAC address of interface `name` (from sysfs).
pub fn mac_of(name: &str) -> Result<palisade_core::wire::MacAddr, XdpError> {
    let path = format!("/sys/class/net/{name}/address");
    let text = std::fs::read_to_string(&path).map_err(|e| XdpError::Io {
        what: "read the interface's MAC address",
        source: e,
    })?;
    text.trim()
        .parse()
        .map_err(|_| XdpError::NoInterface(format!("{name} has no Ethernet address")))
}

/// The OS error number somewhere in `e`'s chain of causes, if any.
pub(crate) fn os_error(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        cause = c.source();
    }
    None
}

/// `err`, or [`XdpError::MissingCapability`] when the kernel refused `step`
/// (`errno` EPERM or EACCES) and the process lacks a capability it needs.
pub(crate) fn refused(step: privilege::Step, errno: Option<i32>, err: XdpError) -> XdpError {
    if !matches!(errno, Some(libc::EPERM | libc::EACCES)) {
        return err;
    }
    match privilege::lacking(step) {
        Some(missing) => XdpError::MissingCapability { step, missing },
        None => err,
    }
}

/// What the data path gets on an interface: how the filter attaches and
/// how the sockets run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPathTrial {
    /// Native (driver) or generic XDP.
    pub mode: AttachMode,
    /// AF_XDP sockets opened, one per transmit queue used.
    pub queues: usize,
    /// Whether every socket runs zero-copy (else copy mode).
    pub zero_copy: bool,
}

/// Starts the data path on `ifname` as a scan would (the reply filter
/// attached, matching nothing; one AF_XDP socket per queue) and stops it
/// again, sending nothing: the proof that this process may scan there.
pub fn try_data_path(ifname: &str, queues: Option<usize>) -> Result<DataPathTrial, XdpError> {
    let index = ifindex(ifname)?;
    let filter = ReplyFilter::attach(index, None, None, (0, 0), 1 << 22, false)?;
    let sockets = open_queues(index, ifname, queues)?;
    Ok(DataPathTrial {
        mode: filter.mode(),
        queues: sockets.len(),
        zero_copy: sockets.iter().all(TxSocket::zero_copy),
    })
}
