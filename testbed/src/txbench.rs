//! A bare AF_XDP transmit loop: the ceiling that `palisade scan`'s rate is
//! measured against. It cycles through 4096 prebuilt SYNs (one target, 4096
//! ports, so its flows spread over the queues the way a scan's do), on one
//! socket and thread per queue, with no scanning logic; with `replies` it
//! also takes the answers through the same reply filter a scan attaches, and
//! only counts them.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use palisade_core::wire::{MacAddr, SYN_V4_LEN, SynTemplate};
use palisade_dataplane::{self as xdp, ReplyFilter, TxSocket, XdpError};
use serde::Serialize;

/// Frames in the loop's cycle.
const FRAMES: usize = 4096;
/// The one source port of the frames.
const SOURCE_PORT: u16 = 61_000;

/// What to send.
#[derive(Debug, Clone)]
pub struct TxBenchOptions {
    pub interface: String,
    pub gateway_mac: MacAddr,
    pub source_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
    /// Frames to send, over all queues.
    pub count: u64,
    /// Queues to send on (`None`: as `palisade scan` would).
    pub queues: Option<usize>,
    /// Attach the reply filter and count what it hands up.
    pub replies: bool,
}

/// What the loop did (printed as one JSON line by `palisade-sim tx-bench`).
#[derive(Debug, Clone, Serialize)]
pub struct TxBenchReport {
    pub frames: u64,
    pub seconds: f64,
    pub pps: f64,
    pub queues: usize,
    pub zero_copy: bool,
    pub answers: u64,
}

/// Why the loop could not run.
#[derive(Debug, thiserror::Error)]
pub enum TxBenchError {
    #[error(transparent)]
    Xdp(#[from] XdpError),
    #[error("cannot build the frames: {0}")]
    Frame(String),
    #[error("a sender thread panicked")]
    Panicked,
}

/// Runs the loop to the end.
pub fn run(opts: &TxBenchOptions) -> Result<TxBenchReport, TxBenchError> {
    let ifindex = xdp::ifindex(&opts.interface)?;
    let src_mac = xdp::mac_of(&opts.interface)?;
    let template = SynTemplate::v4(src_mac, opts.gateway_mac, opts.source_ip, 64, 65_535, 1460);
    let filter = if opts.replies {
        Some(ReplyFilter::attach(
            ifindex,
            Some(opts.source_ip),
            None,
            (SOURCE_PORT, SOURCE_PORT),
            1 << 23,
            false,
        )?)
    } else {
        None
    };
    let mut frames = vec![[0u8; SYN_V4_LEN]; FRAMES];
    for (i, frame) in frames.iter_mut().enumerate() {
        let port = 1024 + i as u16;
        template
            .write_v4(frame, opts.target_ip.into(), SOURCE_PORT, port, 1)
            .map_err(|e| TxBenchError::Frame(e.to_string()))?;
    }
    let mut sockets = xdp::open_queues(ifindex, &opts.interface, opts.queues)?;
    let queues = sockets.len();
    let zero_copy = sockets.iter().all(TxSocket::zero_copy);
    let done = AtomicBool::new(false);
    let (frames_sent, seconds, answers) = std::thread::scope(|s| {
        let reader = filter.map(|mut f| {
            let done = &done;
            s.spawn(move || {
                let mut n = 0u64;
                loop {
                    n += f.drain(|_| {}) as u64;
                    if done.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(200));
                        return n + f.drain(|_| {}) as u64;
                    }
                    let _ = f.wait(Duration::from_millis(2));
                }
            })
        });
        let start = Instant::now();
        let senders: Vec<_> = sockets
            .iter_mut()
            .enumerate()
            .map(|(q, sock)| {
                let count =
                    opts.count / queues as u64 + u64::from((q as u64) < opts.count % queues as u64);
                let frames = &frames;
                s.spawn(move || send(sock, frames, q * FRAMES / queues, count))
            })
            .collect();
        let mut sent = 0;
        let mut failure = None;
        for h in senders {
            match h.join() {
                Ok(Ok(n)) => sent += n,
                Ok(Err(e)) => failure = Some(TxBenchError::Xdp(e)),
                Err(_) => failure = Some(TxBenchError::Panicked),
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        done.store(true, Ordering::Release);
        let answers = reader.map_or(0, |r| r.join().unwrap_or(0));
        match failure {
            Some(e) => Err(e),
            None => Ok((sent, seconds, answers)),
        }
    })?;
    Ok(TxBenchReport {
        frames: frames_sent,
        seconds,
        pps: frames_sent as f64 / seconds,
        queues,
        zero_copy,
        answers,
    })
}

/// One queue's loop: `count` frames from the cycle, starting at `next`.
fn send(
    sock: &mut TxSocket,
    frames: &[[u8; SYN_V4_LEN]],
    mut next: usize,
    count: u64,
) -> Result<u64, XdpError> {
    let mut sent = 0u64;
    while sent < count {
        sock.reclaim();
        let want = (count - sent).min(64) as usize;
        let queued = sock.queue(want, |i, buf| {
            let frame = &frames[(next + i) % FRAMES];
            buf.get_mut(..frame.len())?.copy_from_slice(frame);
            Some(frame.len())
        });
        next = (next + queued) % FRAMES;
        sent += queued as u64;
        sock.kick()?;
    }
    while sock.in_flight() > 0 {
        sock.kick()?;
        sock.reclaim();
    }
    Ok(sent)
}
