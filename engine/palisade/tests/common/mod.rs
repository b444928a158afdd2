//! Helpers shared by the integration tests (running a child process bounded
//! in time is `palisade_sim::testbed::bounded`).

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A hosts file of a test's own: a command made by [`HostsFile::command`]
/// runs in a private mount namespace (`unshare --mount`) where the file is
/// bind-mounted over `/etc/hosts`, so that the names it lists resolve (for
/// that command and its children only) to the test's addresses, e.g. a
/// dual-stack name with one address from 198.18.0.0/15 and one from
/// 2001:2::/48. Needs root. The file is removed when this is dropped.
///
/// ```ignore
/// let hosts = with_hosts_file("198.18.0.7 dual.palisade.test\n2001:2::7 dual.palisade.test");
/// let output = hosts.command(BIN).args(["check-config", path]).output();
/// ```
///
/// It composes with `ip netns exec` (which keeps the bind mount unless
/// `/etc/netns/<ns>/hosts` exists): `hosts.command("ip").args(["netns",
/// "exec", ns, BIN, ...])`.
#[allow(dead_code)]
pub struct HostsFile {
    path: PathBuf,
}

/// A [`HostsFile`] with `entries` (hosts-file lines, `address name...`),
/// after a `127.0.0.1 localhost` line.
#[allow(dead_code)]
pub fn with_hosts_file(entries: &str) -> HostsFile {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "palisade-hosts-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, format!("127.0.0.1 localhost\n{entries}\n")).expect("write hosts file");
    HostsFile { path }
}

#[allow(dead_code)]
impl HostsFile {
    /// A command that runs `program` (add its arguments to the command)
    /// with this file as `/etc/hosts`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$1" /etc/hosts && shift && exec "$@""#)
            .arg("sh")
            .arg(&self.path)
            .arg(program);
        command
    }
}

impl Drop for HostsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Makes `127.0.0.1:<port>` of the host's loopback reachable as
/// `127.0.0.1:<port>` inside a testbed namespace, through a Unix socket
/// (file-system sockets are not per-namespace): a service the test runs on
/// the host's loopback (nats-server) can serve a daemon in the scanner
/// namespace. Nothing but loopback is involved. Dropped: both relays stop.
#[allow(dead_code)]
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
        return s
l.listen(128)
print("ready", flush=True)
while True:
    c, _ = l.accept()
    try:
        u = connect()
    except OSError:
        c.close()
        continue
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
"#;

#[allow(dead_code)]
impl LoopbackBridge {
    pub fn new(namespace: &str, port: u16) -> LoopbackBridge {
        let path = std::env::temp_dir().join(format!(
            "palisade-bridge-{}-{port}.sock",
            std::process::id()
        ));
        let ready = |child: &mut std::process::Child| {
            let mut line = String::new();
            let out = child.stdout.as_mut().expect("relay stdout");
            std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
                .expect("relay");
            assert_eq!(
                line.trim(),
                "ready",
                "the loopback relay did not start (needs python3)"
            );
        };
        let mut outer = Command::new("python3")
            .args([
                "-c",
                RELAY,
                "unix2tcp",
                path.to_str().unwrap(),
                &port.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 for the loopback relay");
        ready(&mut outer);
        let mut inner = Command::new("ip")
            .args([
                "netns",
                "exec",
                namespace,
                "python3",
                "-c",
                RELAY,
                "tcp2unix",
                &port.to_string(),
            ])
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("ip netns exec python3");
        ready(&mut inner);
        LoopbackBridge { inner, outer, path }
    }
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
