//! The AF_XDP transmit path: a UMEM frame pool and one TX-only socket per
//! queue, on top of the `xdp` crate (pure Rust, Apache-2.0/MIT).
//!
//! Frames are written in place in UMEM, queued on the TX ring a batch at a
//! time and sent with one `sendto` kick per batch; completed frames return to
//! the pool. The sockets ask for need_wakeup (`XDP_USE_NEED_WAKEUP`); the
//! `xdp` crate does not expose the ring's flag word, so we kick after every
//! batch -- which copy mode (veth, most VMs) needs anyway, because there the
//! kick is what transmits.

use std::os::fd::AsRawFd;

use xdp::slab::{HeapSlab, Slab};
use xdp::socket::{SocketError, XdpSocket, XdpSocketBuilder};
use xdp::umem::{FrameSize, UmemCfgBuilder};
use xdp::{CompletionRing, RingConfigBuilder, Umem, WakableFillRing, WakableRings, WakableTxRing};

use super::XdpError;
use crate::privilege::{self, Step};

/// `XDP_MAX_TX_SKB_BUDGET` (Linux 6.17+): frames one copy-mode `sendto`
/// may transmit (default 32).
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// UMEM frames (of 2 KiB) per socket: 8 MiB of locked memory per queue.
pub const FRAMES: u32 = 4096;

/// Bytes of one socket's UMEM.
pub const UMEM_BYTES: u64 = FRAMES as u64 * 2048;

/// The locked memory `queues` sockets may need at once without
/// `CAP_IPC_LOCK` (charged to the user's `RLIMIT_MEMLOCK`): each queue's
/// UMEM twice, because the kernel releases the UMEM of a failed zero-copy
/// attempt asynchronously while the copy-mode socket registers its own.
pub const fn memlock_need(queues: usize) -> u64 {
    2 * UMEM_BYTES * queues as u64
}

/// The largest frame `queue` writes (SYNs and RSTs are at most 78 bytes).
pub const MAX_FRAME: usize = 128;

/// Counters of one socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxCounters {
    /// Frames put on the TX ring.
    pub queued: u64,
    /// Frames the kernel reported complete.
    pub completed: u64,
    /// `sendto` kicks.
    pub kicks: u64,
    /// Kicks the kernel deferred (EAGAIN/EBUSY: ring or budget full).
    pub busy: u64,
}

/// A TX-only AF_XDP socket with its own UMEM.
pub struct TxSocket {
    // Field order is drop order: rings and socket go before the UMEM they use.
    tx: WakableTxRing,
    cq: CompletionRing,
    _fill: WakableFillRing,
    sock: XdpSocket,
    umem: Umem,
    in_flight: usize,
    counters: TxCounters,
    zero_copy: bool,
}

impl std::fmt::Debug for TxSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxSocket")
            .field("in_flight", &self.in_flight)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

fn sock_err(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> XdpError {
    move |e| XdpError::Socket {
        what,
        detail: e.to_string(),
    }
}

/// A sentence for the `xdp` crate's socket errors (whose `Display` is
/// their `Debug`), or the capability or limit the kernel found missing:
/// `CAP_NET_RAW` for the socket, `CAP_IPC_LOCK` or `RLIMIT_MEMLOCK` for
/// the UMEM, checked in the process's capabilities and
/// limits.
fn socket_error(what: &'static str, e: &SocketError) -> XdpError {
    use xdp::socket::OptName;
    let detail = match e {
        SocketError::SocketCreation(io) => {
            return crate::refused(Step::Socket, io.raw_os_error(), sock_err(what)(&io));
        }
        SocketError::SetSockOpt {
            inner,
            option: OptName::UmemRegion,
        } => {
            if inner.raw_os_error() == Some(libc::ENOBUFS) {
                let caps = privilege::CapSet::effective().unwrap_or_default();
                if let Ok(limit) = privilege::memlock_limit()
                    && !caps.contains(privilege::Capability::IpcLock)
                    && limit.is_some()
                {
                    return XdpError::Memlock { queues: 1, limit };
                }
            }
            format!("registering the UMEM (XDP_UMEM_REG): {inner}")
        }
        SocketError::SetSockOpt { inner, option } => format!("setting {option:?}: {inner}"),
        SocketError::GetSockOpt { inner, option } => format!("reading {option:?}: {inner}"),
        SocketError::RingMap { inner, ring } => format!("mapping the {ring:?} ring: {inner}"),
        SocketError::Bind(io) => io.to_string(),
    };
    XdpError::Socket { what, detail }
}

/// Opens one socket per transmit queue of `ifindex`: `queues` of them, or by
/// default one per queue of the interface, at most one per core.
pub fn open_queues(
    ifindex: u32,
    ifname: &str,
    queues: Option<usize>,
) -> Result<Vec<TxSocket>, XdpError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let queues = queues
        .unwrap_or_else(|| super::tx_queues(ifname).min(cores))
        .max(1);
    (0..queues)
        .map(|q| {
            TxSocket::open(ifindex, q as u32, FRAMES, 2048).map_err(|e| match e {
                XdpError::Memlock { limit, .. } => XdpError::Memlock { queues, limit },
                e => e,
            })
        })
        .collect()
}

impl TxSocket {
    /// Opens a socket on `queue` of `ifindex` with `frames` UMEM frames of
    /// 2 KiB and a TX ring of `ring` slots (both powers of two). Tries
    /// zero-copy first and falls back to copy mode.
    ///
    /// A queue still held by a socket that was just closed (the kernel
    /// releases it asynchronously) is retried for up to a second.
    pub fn open(ifindex: u32, queue: u32, frames: u32, ring: u32) -> Result<Self, XdpError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            let result = match Self::open_mode(ifindex, queue, frames, ring, true) {
                Ok(s) => Ok(s),
                Err(_) => Self::open_mode(ifindex, queue, frames, ring, false),
            };
            match result {
                Err(XdpError::QueueBusy { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn open_mode(
        ifindex: u32,
        queue: u32,
        frames: u32,
        ring: u32,
        zero_copy: bool,
    ) -> Result<Self, XdpError> {
        let umem = Umem::map(
            UmemCfgBuilder {
                frame_size: FrameSize::TwoK,
                frame_count: frames,
                head_room: 0,
                ..Default::default()
            }
            .build()
            .map_err(|e| sock_err("configure the UMEM")(&e))?,
        )
        .map_err(|e| XdpError::Io {
            what: "map the UMEM",
            source: e,
        })?;
        let mut builder =
            XdpSocketBuilder::new().map_err(|e| socket_error("open an AF_XDP socket", &e))?;
        let config = RingConfigBuilder {
            rx_count: 0,
            tx_count: ring,
            fill_count: 1,
            completion_count: ring,
        }
        .build()
        .map_err(|e| sock_err("configure the rings")(&e))?;
        let (rings, mut flags) = builder
            .build_wakable_rings(&umem, config)
            .map_err(|e| socket_error("create the rings", &e))?;
        if zero_copy {
            flags.force_zerocopy();
        } else {
            flags.force_copy();
        }
        let sock = match builder.bind(xdp::nic::NicIndex(ifindex), queue, flags) {
            Ok(sock) => sock,
            Err(xdp::socket::SocketError::Bind(e)) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(XdpError::QueueBusy { queue });
            }
            Err(e) => return Err(socket_error("bind the AF_XDP socket", &e)),
        };
        let budget = ring;
        // SAFETY: a valid socket fd, a pointer to a live u32 and its exact
        // size. Kernels before 6.17 reject the option; we ignore that and
        // live with the default budget.
        #[allow(unsafe_code)]
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_XDP,
                XDP_MAX_TX_SKB_BUDGET,
                (&budget as *const u32).cast(),
                std::mem::size_of::<u32>() as libc::socklen_t,
            );
        }
        let WakableRings {
            fill_ring,
            completion_ring,
            tx_ring,
            ..
        } = rings;
        let tx = tx_ring.ok_or_else(|| sock_err("create the TX ring")(&"missing"))?;
        Ok(TxSocket {
            tx,
            cq: completion_ring,
            _fill: fill_ring,
            sock,
            umem,
            in_flight: 0,
            counters: TxCounters::default(),
            zero_copy,
        })
    }

    /// Whether the socket runs in zero-copy mode (else copy mode).
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Frames free for writing now.
    pub fn free_frames(&self) -> usize {
        self.umem.allocatable()
    }

    /// Frames queued and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Counters so far.
    pub fn counters(&self) -> TxCounters {
        self.counters
    }

    /// Queues up to `n` frames, each written in place by `write(i, frame)`,
    /// which returns the frame's length (or `None` to stop early). Returns how
    /// many were queued; fewer than `n` when frames or ring slots ran out.
    pub fn queue(
        &mut self,
        n: usize,
        mut write: impl FnMut(usize, &mut [u8]) -> Option<usize>,
    ) -> usize {
        // A fresh slab per batch keeps the socket `Send` (a slab holds raw
        // packet pointers); one small allocation per batch.
        let mut slab = HeapSlab::with_capacity(n);
        for i in 0..n {
            // SAFETY: the packet is handed to the TX ring or freed below; the
            // UMEM lives in this struct and outlives both.
            #[allow(unsafe_code)]
            let Some(mut packet) = (unsafe { self.umem.alloc() }) else {
                break;
            };
            let grown = packet.adjust_tail(MAX_FRAME as i32).is_ok();
            let len = if grown {
                write(i, &mut packet[..])
            } else {
                None
            };
            let fits = len.is_some_and(|len| {
                len <= MAX_FRAME && packet.adjust_tail(len as i32 - MAX_FRAME as i32).is_ok()
            });
            if !fits {
                self.umem.free_packet(packet);
                break;
            }
            if let Some(packet) = slab.push_front(packet) {
                self.umem.free_packet(packet);
                break;
            }
        }
        // SAFETY: the packets came from this socket's UMEM, which outlives
        // the socket (field order). `false`: we kick ourselves, see `kick`.
        #[allow(unsafe_code)]
        let sent = unsafe { self.tx.send(&mut slab, false) }.unwrap_or(0);
        // Whatever did not fit on the ring goes back to the pool.
        while let Some(p) = slab.pop_back() {
            self.umem.free_packet(p);
        }
        self.in_flight += sent;
        self.counters.queued += sent as u64;
        sent
    }

    /// Asks the kernel to transmit what is queued. EAGAIN/EBUSY (budget or
    /// completion ring full) are not errors: reclaim and kick again.
    pub fn kick(&mut self) -> Result<(), XdpError> {
        if self.in_flight == 0 {
            return Ok(());
        }
        self.counters.kicks += 1;
        // SAFETY: sendto on a valid socket fd with a null, zero-length buffer
        // and no address, as AF_XDP defines the TX wakeup.
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::sendto(
                self.sock.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EBUSY | libc::EINTR | libc::ENOBUFS) => {
                    self.counters.busy += 1
                }
                _ => {
                    return Err(XdpError::Io {
                        what: "transmit (AF_XDP sendto)",
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }

    /// Returns completed frames to the pool; how many.
    pub fn reclaim(&mut self) -> usize {
        let n = self.cq.dequeue(&mut self.umem, 4096);
        self.in_flight -= n.min(self.in_flight);
        self.counters.completed += n as u64;
        n
    }
}
