//! Builds the simulated fleet's XDP program (`ebpf/responder.bpf.c`).

include!("../ebpf/compile.rs");

fn main() {
    if std::env::var_os("CARGO_FEATURE_FLEET").is_none() {
        return;
    }
    compile_bpf(&["responder"]);
}
