//! Compiles the eBPF programs in `../ebpf` with clang-19 and leaves the
//! objects in OUT_DIR, where `include_bytes!` embeds them in the binary.

use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: &[&str] = &["replies", "responder"];

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ebpf");
    let clang = std::env::var("PALISADE_CLANG").unwrap_or_else(|_| "clang-19".into());
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    println!("cargo:rerun-if-env-changed=PALISADE_CLANG");
    for header in ["common.h", "counters.h"] {
        println!("cargo:rerun-if-changed={}", src.join(header).display());
    }
    for name in PROGRAMS {
        let c = src.join(format!("{name}.bpf.c"));
        println!("cargo:rerun-if-changed={}", c.display());
        let obj = out.join(format!("{name}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-target", "bpf", "-g", "-O2", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{arch}"))
            .arg("-c")
            .arg(&c)
            .arg("-o")
            .arg(&obj)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("{clang} failed to compile {} ({s})", c.display()),
            Err(e) => panic!(
                "cannot run `{clang}` to build the eBPF programs ({e}): \
                 install clang-19 and libbpf-dev (`cargo xtask setup`)"
            ),
        }
    }
}
