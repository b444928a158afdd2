//! What the HTTP server may see of the daemon and ask of it. The daemon
//! owns the schedule and the monitor states; the server reads the store on
//! its own connections and, for anything live (the sweep under way, how
//! the last one ended), this snapshot, and when each monitor is due from
//! the daemon's schedule itself, shared behind a lock (never copied: a
//! million monitors' due times are not cloned on every change or every
//! request). It asks through a channel that the daemon's loop reads
//! between sweeps: never on the scan's hot path.

use std::collections::HashSet;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::Serialize;

use palisade_core::monitor::Millis;
use palisade_core::plan::SweepSchedule;

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Monitors changed in the store (API, settings page): reload them.
    MonitorsChanged,
    /// Sweep this monitor now (a full scan of it alone, or with whatever
    /// else is due).
    ScanNow(String),
}

/// The sweep under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SweepUnderWay {
    pub started_ms: Millis,
    /// `full` or `recheck`.
    pub kind: String,
    /// How many monitors it scans.
    pub monitors: usize,
    /// Their names (shared, not copied with the snapshot).
    #[serde(skip)]
    pub names: Arc<HashSet<Arc<str>>>,
}

impl SweepUnderWay {
    /// Whether the sweep scans the monitor `name`.
    pub fn includes(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

/// How the last sweep ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastSweep {
    pub started_ms: Millis,
    pub finished_ms: Millis,
    pub kind: String,
    pub monitors: usize,
    /// Why it was inconclusive (the data path could not start, replies
    /// were lost, it was interrupted), if it was.
    pub failure: Option<String>,
}

/// The daemon's schedule, shared by the daemon (which changes it) and the
/// server (which reads it).
#[derive(Debug, Clone, Default)]
pub struct SharedSchedule(Arc<RwLock<SweepSchedule>>);

impl SharedSchedule {
    fn read(&self) -> RwLockReadGuard<'_, SweepSchedule> {
        // A panic while the lock was held leaves a schedule that is still
        // whole (every change is one call): read it anyway.
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, SweepSchedule> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The daemon as the server sees it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Live {
    pub started_ms: Millis,
    pub sweeping: Option<SweepUnderWay>,
    pub last_sweep: Option<LastSweep>,
    /// The daemon is stopping.
    pub stopping: bool,
    /// When each enabled monitor is due (looked up, never copied).
    #[serde(skip)]
    pub schedule: SharedSchedule,
}

impl Live {
    /// When the monitor's next full sweep is due, if it is scheduled
    /// (enabled).
    pub fn next_due(&self, name: &str) -> Option<Millis> {
        self.schedule.read().due_at(name)
    }

    /// How many monitors the daemon schedules (the enabled ones).
    pub fn scheduled(&self) -> usize {
        self.schedule.read().len()
    }

    /// When the soonest full sweep is due.
    pub fn next_full_sweep(&self) -> Option<Millis> {
        self.schedule.read().next_full_sweep()
    }
}

/// The server's side: read [`Live`], send [`Command`]s.
#[derive(Debug, Clone)]
pub struct DaemonHandle {
    commands: Sender<Command>,
    live: Arc<RwLock<Live>>,
}

impl DaemonHandle {
    /// Asks the daemon; `false` if it is gone.
    pub fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }

    /// A copy of the live snapshot (small: the schedule and the names of
    /// the sweep under way are shared, not copied).
    pub fn live(&self) -> Live {
        self.live.read().map(|l| l.clone()).unwrap_or_default()
    }
}

/// The daemon's side.
#[derive(Debug)]
pub struct Control {
    commands: Receiver<Command>,
    handle: DaemonHandle,
    schedule: SharedSchedule,
}

impl Control {
    /// The daemon's side, with its `schedule` shared with the server.
    pub fn new(started_ms: Millis, schedule: SweepSchedule) -> Control {
        let (tx, rx) = channel();
        let schedule = SharedSchedule(Arc::new(RwLock::new(schedule)));
        Control {
            commands: rx,
            handle: DaemonHandle {
                commands: tx,
                live: Arc::new(RwLock::new(Live {
                    started_ms,
                    schedule: schedule.clone(),
                    ..Live::default()
                })),
            },
            schedule,
        }
    }

    /// The schedule, to change it (the server waits meanwhile: hold it
    /// briefly, and never while asking for it again).
    pub fn schedule(&self) -> RwLockWriteGuard<'_, SweepSchedule> {
        self.schedule.write()
    }

    pub fn handle(&self) -> DaemonHandle {
        self.handle.clone()
    }

    /// The next command, waiting at most `timeout` for one.
    pub fn next(&self, timeout: std::time::Duration) -> Option<Command> {
        self.commands.recv_timeout(timeout).ok()
    }

    /// Changes the live snapshot.
    pub fn update(&self, change: impl FnOnce(&mut Live)) {
        if let Ok(mut live) = self.handle.live.write() {
            change(&mut live);
        }
    }
}
