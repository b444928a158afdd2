//! The command line as a user meets it: exit codes and messages.

use std::process::{Command, Output};

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .output()
        .expect("run palisade")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn plan_lists_every_probe_of_a_small_sweep_once() {
    let o = palisade(&[
        "plan",
        "198.18.0.1-198.18.0.2",
        "-p",
        "22,80,443",
        "--limit",
        "100",
        "--format",
        "jsonl",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let mut lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6);
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), 6);
    assert!(out.contains(r#""ip":"198.18.0.2","port":443"#));
}

#[test]
fn plan_shards_and_resume() {
    let all = palisade(&[
        "plan",
        "198.18.0.0/28",
        "-p",
        "1-100",
        "--shard",
        "2/3",
        "--limit",
        "50",
        "--seed",
        "7",
    ]);
    let rest = palisade(&[
        "plan",
        "198.18.0.0/28",
        "-p",
        "1-100",
        "--shard",
        "2/3",
        "--limit",
        "40",
        "--seed",
        "7",
        "--resume-index",
        "10",
    ]);
    let all = String::from_utf8(all.stdout).unwrap();
    let rest = String::from_utf8(rest.stdout).unwrap();
    let all: Vec<&str> = all.lines().skip(1).collect();
    let rest: Vec<&str> = rest.lines().skip(1).collect();
    assert_eq!(&all[10..], &rest[..]);
}

#[test]
fn bad_arguments_exit_2_naming_them() {
    for (args, needle) in [
        (vec!["plan", "198.18.0.1", "-p", "0"], "bad port `0`"),
        (
            vec!["plan", "198.18.0.1", "-p", "70000"],
            "bad port `70000`",
        ),
        (vec!["plan", "198.18.0.1", "-p", "90-80"], "reversed"),
        (
            vec!["plan", "198.18.0.0/40", "-p", "80"],
            "bad target `198.18.0.0/40`",
        ),
        (
            vec!["plan", "198.18.0.1", "-p", "80", "--shard", "5/4"],
            "bad shard `5/4`",
        ),
        (
            vec![
                "plan",
                "198.18.0.1",
                "-p",
                "80",
                "--exclude",
                "198.18.0.0/24",
            ],
            "no targets left",
        ),
        (
            vec!["plan", "-p", "80", "-iL", "/nonexistent/targets.txt"],
            "/nonexistent/targets.txt",
        ),
        (vec!["plan", "198.18.0.1", "-p", "80", "--bogus"], "--bogus"),
    ] {
        let o = palisade(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn target_files_report_file_and_line() {
    let dir = std::env::temp_dir().join(format!("palisade-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fleet.txt");
    std::fs::write(&path, "# fleet\n198.18.0.1\n198.18.0.x\n").unwrap();
    let p = path.to_str().unwrap();
    let o = palisade(&["plan", "-p", "80", "-iL", p]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!("{p}:3: bad target `198.18.0.x`")),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
