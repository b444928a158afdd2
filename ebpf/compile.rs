// Compiles eBPF C programs of this folder with clang-19 into OUT_DIR, where
// `include_bytes!` embeds them in the binary. Shared by the build scripts of
// palisade-dataplane (replies.bpf.c) and palisade-sim (responder.bpf.c):
// each `include!`s this file and calls `compile_bpf`.

/// Compiles `ebpf/<name>.bpf.c` to `$OUT_DIR/<name>.bpf.o` for each name.
fn compile_bpf(names: &[&str]) {
    use std::path::PathBuf;
    use std::process::Command;

    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let src = PathBuf::from(manifest)
        .ancestors()
        .map(|dir| dir.join("ebpf"))
        .find(|dir| dir.join("common.h").exists())
        .expect("the ebpf/ folder of the workspace");
    let clang = std::env::var("PALISADE_CLANG").unwrap_or_else(|_| "clang-19".into());
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    println!("cargo:rerun-if-env-changed=PALISADE_CLANG");
    for header in ["common.h", "counters.h"] {
        println!("cargo:rerun-if-changed={}", src.join(header).display());
    }
    for name in names {
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
