//! Build script of every function binary (and of `bench/hello`, built the same way): links the
//! binary position-dependent (non-PIE) on Linux.
//!
//! A position-independent executable the size of these (13 MB, ~26,000 pointers in its data) is
//! relocated by the dynamic loader at every start, which copies and writes about 100 pages; with
//! the code it then faults in, that was a third of a function's cold start. Linked at a fixed
//! address, the loader has nothing to relocate: on the benchmark machine a function's init went
//! from 2.1 to 1.6 ms (BENCHMARKS.md). The cost is that the binary's own code and data are not at
//! a random address (the stack, heap, mmap areas and shared libraries still are; NX and full
//! RELRO are unchanged), as Go links its Linux binaries by default. `ACTIONGATE_PIE=1` at
//! build time keeps the default position-independent link, for a deployment that prefers it.

fn main() {
    println!("cargo:rerun-if-env-changed=ACTIONGATE_PIE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let keep_pie = std::env::var("ACTIONGATE_PIE").is_ok_and(|v| v == "1");
    if linux && !keep_pie {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
