//! `exec-timed FD PROGRAM`: writes the time (`bench::exec_clock`) to descriptor `FD`, closes it,
//! and replaces itself with `PROGRAM` in the same environment.
//!
//! The benchmark starts each function through it, so that a function's init is timed from the
//! exec of its binary. Timed by the benchmark itself, the start would be either too late (the
//! parent, on two busy cores, may run again only after the function has polled) or too early
//! (an exec from a fork of the benchmark first tears down the copy of its address space, which
//! costs more than hello-world's whole init). This program is small, so its own exec is cheap,
//! and it costs the same before every binary.

use actiongate_local::bench::exec_clock;
use std::os::unix::process::CommandExt;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(fd), Some(program)) = (args.next(), args.next()) else {
        fail("usage: exec-timed FD PROGRAM");
    };
    let Some(fd) = fd.to_str().and_then(|f| f.parse::<i32>().ok()) else {
        fail("FD must be a descriptor number");
    };
    let bytes = exec_clock::encode(exec_clock::now());
    // SAFETY: writing a local buffer to, then closing, the descriptor the caller passed.
    let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    unsafe { libc::close(fd) };
    if written != bytes.len() as isize {
        fail(&format!("writing the time to descriptor {fd}: {}", std::io::Error::last_os_error()));
    }
    let error = std::process::Command::new(&program).exec();
    fail(&format!("exec {}: {error}", program.to_string_lossy()));
}

fn fail(message: &str) -> ! {
    eprintln!("exec-timed: {message}");
    std::process::exit(127)
}
