//! What `palisade doctor` reads of the host through system calls: the
//! kernel clock's synchronisation (`adjtimex(2)`, as `timedatectl` and
//! `chronyc` see it).

/// The kernel clock's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockState {
    /// An NTP daemon keeps the clock synchronised (not `TIME_ERROR`, no
    /// `STA_UNSYNC`).
    pub synchronised: bool,
    /// The kernel's maximum error estimate, in microseconds.
    pub max_error_us: i64,
}

/// Reads the clock's state without changing it (`adjtimex` with no modes).
pub fn clock_state() -> std::io::Result<ClockState> {
    // SAFETY: an all-zero timex is a valid value of this plain C struct.
    #[allow(unsafe_code)]
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = 0;
    // SAFETY: `tx` is a valid, writable timex that outlives the call; with
    // `modes` 0 the kernel only reads the clock's state into it.
    #[allow(unsafe_code)]
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ClockState {
        synchronised: state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0,
        max_error_us: tx.maxerror as i64,
    })
}
