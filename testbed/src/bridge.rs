//! Loopback bridges between the host and a testbed namespace: a service on
//! one side's `127.0.0.1:<port>` reachable on the other side's, through a
//! Unix socket (file-system sockets are not per-namespace). Nothing but
//! loopback is involved. Used by tests (a daemon inside the testbed talks
//! to nats-server on the host; a browser on the host reaches the daemon's
//! dashboard) and by `cargo xtask demo --serve`.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Makes `127.0.0.1:<port>` of the host's loopback reachable as
/// `127.0.0.1:<port>` inside a testbed namespace, through a Unix socket
/// (file-system sockets are not per-namespace): a service the test runs on
/// the host's loopback (nats-server) can serve a daemon in the scanner
/// namespace. Nothing but loopback is involved. Dropped: both relays stop.
///
/// The relays' TCP sockets send at once (`TCP_NODELAY`): a message a
/// client writes in two pieces (a NATS publish's header line, then its
/// payload) would otherwise wait for the first piece's delayed ACK, about
/// 40 ms, on every round trip that does so.
pub struct LoopbackBridge {
    inner: std::process::Child,
    outer: std::process::Child,
    path: std::path::PathBuf,
}

const RELAY: &str = r#"
import os, socket, sys, threading
mode, a, b = sys.argv[1], sys.argv[2], sys.argv[3]
def pipe(src, dst):
    try:
        while True:
            d = src.recv(65536)
            if not d:
                break
            dst.sendall(d)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
if mode == "tcp2unix":
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", int(a)))
    def connect():
        s = socket.socket(socket.AF_UNIX)
        s.connect(b)
        return s
else:
    if os.path.exists(a):
        os.unlink(a)
    l = socket.socket(socket.AF_UNIX)
    l.bind(a)
    def connect():
        # The timeout bounds the connect only: an idle connection must stay.
        s = socket.create_connection(("127.0.0.1", int(b)), 2)
        s.settimeout(None)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s
l.listen(128)
print("ready", flush=True)
while True:
    c, _ = l.accept()
    if c.family == socket.AF_INET:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        u = connect()
    except OSError:
        c.close()
        continue
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
"#;

impl LoopbackBridge {
    /// `127.0.0.1:<port>` of the host reachable inside `namespace`; panics
    /// if the relays cannot start (a test's convenience: [`Self::start`]).
    pub fn new(namespace: &str, port: u16) -> LoopbackBridge {
        Self::start(namespace, port, true).expect("the loopback relay (needs python3)")
    }

    /// The reverse: `127.0.0.1:<port>` inside `namespace` (a daemon's HTTP
    /// server) reachable as `127.0.0.1:<port>` of the host (the test, a
    /// browser, Prometheus); panics if the relays cannot start. Pick the
    /// port with [`free_port`].
    pub fn out_of(namespace: &str, port: u16) -> LoopbackBridge {
        Self::start(namespace, port, false).expect("the loopback relay (needs python3)")
    }

    /// Two relays joined by a Unix socket, the listening one on the side
    /// connections come from: the host's side if `into_namespace`, else the
    /// namespace's.
    pub fn start(
        namespace: &str,
        port: u16,
        into_namespace: bool,
    ) -> std::io::Result<LoopbackBridge> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "palisade-bridge-{}-{port}-{}.sock",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let ready = |child: &mut std::process::Child| -> std::io::Result<()> {
            let mut line = String::new();
            if let Some(out) = child.stdout.as_mut() {
                std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)?;
            }
            if line.trim() == "ready" {
                Ok(())
            } else {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::io::Error::other(
                    "the loopback relay did not start (needs python3)",
                ))
            }
        };
        let port = port.to_string();
        let path_text = path.to_string_lossy().into_owned();
        let relay = |in_namespace: bool, args: [&str; 3]| {
            let mut command = if in_namespace {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", namespace, "python3"]);
                c
            } else {
                Command::new("python3")
            };
            command
                .args(["-c", RELAY])
                .args(args)
                .stdout(Stdio::piped())
                .spawn()
        };
        // The Unix side first: it must exist before the TCP side connects.
        let mut unix_side = relay(!into_namespace, ["unix2tcp", &path_text, &port])?;
        ready(&mut unix_side)?;
        let mut tcp_side = match relay(into_namespace, ["tcp2unix", &port, &path_text]) {
            Ok(child) => child,
            Err(e) => {
                let _ = unix_side.kill();
                let _ = unix_side.wait();
                return Err(e);
            }
        };
        if let Err(e) = ready(&mut tcp_side) {
            let _ = unix_side.kill();
            let _ = unix_side.wait();
            return Err(e);
        }
        let (inner, outer) = if into_namespace {
            (tcp_side, unix_side)
        } else {
            (unix_side, tcp_side)
        };
        Ok(LoopbackBridge { inner, outer, path })
    }
}

impl std::fmt::Debug for LoopbackBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopbackBridge")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A TCP port free on the host's loopback now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Drop for LoopbackBridge {
    fn drop(&mut self) {
        for c in [&mut self.inner, &mut self.outer] {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
