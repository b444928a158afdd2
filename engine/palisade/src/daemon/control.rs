//! What the HTTP server may see of the daemon and ask of it. The daemon
//! owns the schedule and the monitor states; the server reads the store on
//! its own connections and, for anything live (when each monitor is due,
//! the sweep under way), this snapshot. It asks through a channel that the
//! daemon's loop reads between sweeps: never on the scan's hot path.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use palisade_core::monitor::Millis;

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
    pub monitors: Vec<String>,
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

/// The daemon as the server sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Live {
    pub started_ms: Millis,
    /// When each enabled monitor's next full sweep is due.
    pub next_due: BTreeMap<String, Millis>,
    pub sweeping: Option<SweepUnderWay>,
    pub last_sweep: Option<LastSweep>,
    /// The daemon is stopping.
    pub stopping: bool,
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

    /// A copy of the live snapshot.
    pub fn live(&self) -> Live {
        self.live.read().map(|l| l.clone()).unwrap_or_default()
    }
}

/// The daemon's side.
#[derive(Debug)]
pub struct Control {
    commands: Receiver<Command>,
    handle: DaemonHandle,
}

impl Control {
    pub fn new(started_ms: Millis) -> Control {
        let (tx, rx) = channel();
        Control {
            commands: rx,
            handle: DaemonHandle {
                commands: tx,
                live: Arc::new(RwLock::new(Live {
                    started_ms,
                    ..Live::default()
                })),
            },
        }
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
