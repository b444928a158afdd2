//! `cargo xtask dist` end to end: the .deb is built, installed with `dpkg -i`
//! into a fresh root, and what it installed is checked: the binaries run,
//! the man pages, completions, units and configuration are in place, the
//! `palisade` user and the state directory exist, `systemd-analyze verify`
//! passes on both units; then `dpkg --purge` takes it all away again.
//!
//! The fresh root is an overlay over `/` whose writable layer is a tmpfs,
//! mounted in a private mount namespace (`unshare --mount`) that only a
//! holder process keeps alive; every command runs in it through `nsenter`
//! and `chroot`. Killing the holder (on success, failure or panic) drops
//! the namespace and with it every change: the host's files, users and dpkg
//! database are never written (checked at the end). Needs root.
//!
//! Run: `cargo test -p xtask --test dist` (as root). It packages the
//! binaries of its own cargo profile, or `release` under `dev` (cargo-deb
//! does not package dev builds).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The cargo profile this test was built with (the directory of the xtask
/// binary), or `release` for `dev`.
fn profile() -> String {
    let exe = Path::new(env!("CARGO_BIN_EXE_xtask"));
    let dir = exe.parent().unwrap().file_name().unwrap().to_str().unwrap();
    match dir {
        "debug" => "release".to_string(),
        other => other.to_string(),
    }
}

/// Sets up the fresh root in a new mount namespace and keeps it until
/// dropped: the holder process is the namespace.
struct FreshRoot {
    holder: Child,
    /// The root's path, as seen inside the namespace.
    path: PathBuf,
}

/// The holder: the overlay (lower: `/`, upper and work: a tmpfs), its own
/// /proc, /run, /tmp and a /dev with only the usual character devices, a
/// policy-rc.d that forbids starting services; then it prints `ready` and
/// sleeps (at most 15 minutes, should the test be killed outright).
const HOLDER: &str = r#"
set -eu
dir=$1
mount -t tmpfs -o mode=0755 tmpfs "$dir/rw"
mkdir "$dir/rw/upper" "$dir/rw/work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$dir/rw/upper,workdir=$dir/rw/work" "$dir/root"
r=$dir/root
mount -t proc proc "$r/proc"
mount -t tmpfs -o mode=0755 tmpfs "$r/run"
mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
mount -t tmpfs -o mode=0755 tmpfs "$r/dev"
for d in null zero full random urandom tty; do
    touch "$r/dev/$d"
    mount --bind "/dev/$d" "$r/dev/$d"
done
ln -s /proc/self/fd "$r/dev/fd"
printf '#!/bin/sh\nexit 101\n' > "$r/usr/sbin/policy-rc.d"
chmod 755 "$r/usr/sbin/policy-rc.d"
echo ready
exec sleep 900
"#;

impl FreshRoot {
    fn new(dir: &Path) -> FreshRoot {
        for d in ["rw", "root"] {
            std::fs::create_dir(dir.join(d)).unwrap();
        }
        let mut holder = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                HOLDER,
                "holder",
            ])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start unshare (util-linux)");
        let stdout = holder.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let root = FreshRoot {
            holder,
            path: dir.join("root"),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.trim() == "ready" => root,
            other => {
                let mut root = root;
                let _ = root.holder.kill();
                let out = stderr_of(&mut root.holder);
                panic!("cannot set up the fresh root (needs root, overlayfs): {other:?}: {out}");
            }
        }
    }

    /// Runs `args` chrooted into the fresh root, inside its namespace.
    fn run(&self, args: &[&str]) -> Output {
        let pid = self.holder.id().to_string();
        let mut command = Command::new("timeout");
        command
            .args(["120", "nsenter", "--target", &pid, "--mount", "chroot"])
            .arg(&self.path)
            .args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C.UTF-8");
        command.output().expect("cannot start nsenter")
    }

    /// Runs a shell command in the fresh root; its stdout, or a panic
    /// naming the command, its status and its output.
    fn sh(&self, script: &str) -> String {
        let out = self.run(&["sh", "-c", script]);
        assert!(
            out.status.success(),
            "`{script}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether `path` exists in the fresh root.
    fn exists(&self, path: &str) -> bool {
        self.run(&["test", "-e", path]).status.success()
    }
}

/// What a child wrote to stderr, once it is gone.
fn stderr_of(child: &mut Child) -> String {
    let _ = child.wait();
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut text);
    }
    text
}

impl Drop for FreshRoot {
    fn drop(&mut self) {
        // The namespace and every mount in it go with its last process.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// What the test must not change on the host: its users, groups and dpkg
/// database, and whether the package's files are there.
fn host_state() -> Vec<(String, String)> {
    let mut state = Vec::new();
    for file in [
        "/etc/passwd",
        "/etc/group",
        "/etc/shadow",
        "/etc/gshadow",
        "/var/lib/dpkg/status",
        "/var/lib/dpkg/statoverride",
    ] {
        let text = std::fs::read(file).map(|b| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            b.hash(&mut h);
            format!("{} bytes, hash {:x}", b.len(), h.finish())
        });
        state.push((file.to_string(), format!("{text:?}")));
    }
    for path in [
        "/usr/bin/palisade",
        "/usr/lib/systemd/system/palisade.service",
        "/etc/palisade",
        "/var/lib/palisade",
        "/usr/sbin/policy-rc.d",
    ] {
        state.push((path.to_string(), Path::new(path).exists().to_string()));
    }
    state
}

#[test]
fn the_package_installs_into_a_fresh_root_and_purges_cleanly() {
    let before = host_state();

    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["dist", "--profile", &profile()])
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .expect("cannot run cargo xtask dist");
    assert!(out.status.success(), "cargo xtask dist failed");
    let deb = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(deb.is_file(), "no package at {}", deb.display());

    let dir = tempfile::tempdir().unwrap();
    let fresh = FreshRoot::new(dir.path());
    // Into the overlay's tmpfs layer (visible only inside the namespace).
    let copy = Command::new("nsenter")
        .args(["--target", &fresh.holder.id().to_string(), "--mount", "cp"])
        .arg(&deb)
        .arg(fresh.path.join("tmp/palisade.deb"))
        .status()
        .unwrap();
    assert!(
        copy.success(),
        "cannot copy the package into the fresh root"
    );

    // Fresh: no palisade package, user or state from an earlier install on
    // this host (removed in the overlay only).
    fresh.sh(
        "if dpkg -s palisade >/dev/null 2>&1; then dpkg --purge palisade >/dev/null; fi; \
         if getent passwd palisade >/dev/null; then userdel palisade; fi; \
         if getent group palisade >/dev/null; then groupdel palisade; fi; \
         rm -rf /var/lib/palisade /etc/palisade",
    );
    assert!(
        !fresh
            .run(&["getent", "passwd", "palisade"])
            .status
            .success()
    );

    let install = fresh.sh("dpkg -i /tmp/palisade.deb 2>&1");
    eprintln!("{install}");

    // The binaries run.
    let version = env!("CARGO_PKG_VERSION");
    for bin in ["palisade", "palisade-alert"] {
        let out = fresh.sh(&format!("/usr/bin/{bin} --version"));
        assert_eq!(out.trim(), format!("{bin} {version}"));
    }

    // The user and group, a system account without a login, and the state
    // directory it owns.
    let user = fresh.sh("getent passwd palisade");
    let fields: Vec<&str> = user.trim().split(':').collect();
    assert_eq!(fields.len(), 7, "{user}");
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "not a system user: {user}");
    assert_eq!(fields[5], "/var/lib/palisade", "{user}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "{user}");
    assert!(fresh.run(&["getent", "group", "palisade"]).status.success());
    assert_eq!(
        fresh.sh("stat -c '%U:%G %a' /var/lib/palisade").trim(),
        "palisade:palisade 700"
    );

    // The man pages (the main page and the subcommands') and completions.
    for page in [
        "palisade",
        "palisade-scan",
        "palisade-run",
        "palisade-status",
        "palisade-alert",
        "palisade-alert-run",
        "palisade-alert-tail",
    ] {
        let text = fresh.sh(&format!("zcat /usr/share/man/man1/{page}.1.gz"));
        assert!(
            text.contains(&format!(".TH {page} 1")),
            "{page}.1.gz is no man page:\n{text}"
        );
        assert!(
            !text.contains("dist-assets"),
            "{page}.1 shows the hidden subcommand"
        );
    }
    assert!(
        fresh
            .sh("zcat /usr/share/man/man1/palisade-scan.1.gz")
            .contains("\\-\\-rate")
    );
    for bin in ["palisade", "palisade-alert"] {
        // bash loads the completion and knows the subcommands.
        let complete = fresh.sh(&format!(
            "bash -c '. /usr/share/bash-completion/completions/{bin} && complete -p {bin}'"
        ));
        assert!(complete.contains(&format!(" {bin}")), "{complete}");
        for file in [
            format!("/usr/share/zsh/vendor-completions/_{bin}"),
            format!("/usr/share/fish/vendor_completions.d/{bin}.fish"),
        ] {
            let text = fresh.sh(&format!("cat {file}"));
            assert!(text.contains(bin), "{file}:\n{text}");
            assert!(
                !text.contains("dist-assets"),
                "{file} offers the hidden subcommand"
            );
        }
    }
    let bash = fresh.sh("cat /usr/share/bash-completion/completions/palisade");
    for sub in ["scan", "run", "status", "history", "check-config"] {
        assert!(bash.contains(sub), "the bash completion lacks {sub}");
    }

    // The units are the repository's; the configuration too, a conffile
    // that root writes and the daemon's group reads.
    for unit in [
        "palisade.service",
        "palisade-alert.service",
        "palisade-agent.service",
    ] {
        let installed = fresh.sh(&format!("cat /usr/lib/systemd/system/{unit}"));
        let ours = std::fs::read_to_string(root().join("dist/systemd").join(unit)).unwrap();
        assert_eq!(installed, ours, "{unit} differs from dist/systemd/{unit}");
    }
    let config = fresh.sh("cat /etc/palisade/palisade.toml");
    let example = std::fs::read_to_string(root().join("config/palisade.example.toml")).unwrap();
    assert_eq!(config, example);
    assert_eq!(
        fresh
            .sh("stat -c '%U:%G %a' /etc/palisade/palisade.toml")
            .trim(),
        "root:palisade 640"
    );
    assert!(config.contains("path = \"/var/lib/palisade/palisade.db\""));
    // The daemon's user reads it, and it is a valid configuration.
    let check = fresh.sh("setpriv --reuid palisade --regid palisade --init-groups \
         palisade check-config /etc/palisade/palisade.toml");
    assert!(check.contains(": ok: 3 monitor(s)"), "{check}");
    assert_eq!(
        fresh
            .sh("stat -c '%U:%G %a' /etc/default/palisade-alert")
            .trim(),
        "root:root 600"
    );
    assert!(
        fresh
            .sh("cat /etc/default/palisade-alert")
            .contains("PALISADE_ALERT_ARGS=")
    );
    assert_eq!(
        fresh
            .sh("stat -c '%U:%G %a' /etc/default/palisade-agent")
            .trim(),
        "root:root 600"
    );
    let conffiles = fresh.sh("dpkg-query -W -f '${Conffiles}' palisade");
    for file in [
        "/etc/palisade/palisade.toml",
        "/etc/default/palisade-alert",
        "/etc/default/palisade-agent",
    ] {
        assert!(
            conffiles.contains(file),
            "{file} is no conffile:\n{conffiles}"
        );
    }
    assert!(fresh.exists("/usr/share/doc/palisade/copyright"));
    assert!(
        fresh
            .sh("cat /usr/share/doc/palisade/copyright")
            .contains("Apache License")
    );

    // Installed, not enabled or started (the configuration comes first).
    assert!(!fresh.exists("/etc/systemd/system/multi-user.target.wants/palisade.service"));

    // systemd-analyze verify: the units' syntax, their binaries, the man
    // pages their Documentation= names.
    let verify = fresh.run(&[
        "systemd-analyze",
        "verify",
        "/usr/lib/systemd/system/palisade.service",
        "/usr/lib/systemd/system/palisade-alert.service",
        "/usr/lib/systemd/system/palisade-agent.service",
    ]);
    let verify_text = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success(),
        "systemd-analyze verify failed:\n{verify_text}"
    );
    assert!(
        !verify_text.contains("palisade"),
        "systemd-analyze verify complains about a unit:\n{verify_text}"
    );

    // The hardening holds: systemd's exposure level (0 best, 10 worst) of
    // each unit, offline, at most a bound (--threshold counts tenths);
    // palisade.service keeps the capabilities of its data path, hence its
    // higher bound.
    for (unit, threshold) in [
        ("palisade-alert.service", "20"),
        ("palisade.service", "40"),
        ("palisade-agent.service", "40"),
    ] {
        let security = fresh.run(&[
            "systemd-analyze",
            "security",
            "--offline=true",
            &format!("--threshold={threshold}"),
            &format!("/usr/lib/systemd/system/{unit}"),
        ]);
        let text = String::from_utf8_lossy(&security.stdout);
        assert!(
            security.status.success(),
            "{unit} is more exposed than {threshold} tenths:\n{}",
            text.lines().last().unwrap_or_default()
        );
    }

    // Purge takes everything but the user away.
    fresh.sh("dpkg --purge palisade 2>&1");
    for path in [
        "/usr/bin/palisade",
        "/usr/bin/palisade-alert",
        "/usr/lib/systemd/system/palisade.service",
        "/usr/lib/systemd/system/palisade-agent.service",
        "/etc/palisade/palisade.toml",
        "/etc/default/palisade-alert",
        "/etc/default/palisade-agent",
        "/var/lib/palisade",
        "/usr/share/man/man1/palisade.1.gz",
    ] {
        assert!(!fresh.exists(path), "{path} survived the purge");
    }
    assert!(!fresh.sh("dpkg-statoverride --list").contains("palisade"));

    drop(fresh);
    assert_eq!(host_state(), before, "the test changed the host");
}
