//! Builds the XDP reply filter (`ebpf/replies.bpf.c`) that the scan attaches.

include!("../../ebpf/compile.rs");

fn main() {
    compile_bpf(&["replies"]);
}
